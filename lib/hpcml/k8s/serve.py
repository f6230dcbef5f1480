"""Serving definitions: Deployment, Service, Ingress (ALB), HPA, PDB, VPA, KServe
InferenceService, and the SageMaker endpoint requests — all from one :class:`ServeSpec`.

Pure builders (dict in, dict out); ``render()`` maps paths under ``manifests/`` to them.
The container is the same everywhere: ``python -m hpcml.serve.server`` answering the
Open Inference Protocol v2 on port 8080 (and SageMaker's ``/ping`` + ``/invocations``).
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "hpcml"
APP = "hpcml-serve"
PORT = 8080

CRD_REQUIRED = {
    ("autoscaling.k8s.io/v1", "VerticalPodAutoscaler"): ["spec.targetRef.name", "spec.updatePolicy.updateMode"],
    ("serving.kserve.io/v1beta1", "InferenceService"): ["spec.predictor.containers"],
}


@dataclass(frozen=True)
class ServeSpec:
    """Everything the serving manifests depend on.

    Args:
        image: the serving image (built from docker/Dockerfile.serve).
        model_name: the name in the v2 routes.
        workers: server worker processes per pod.
        cpu_request / cpu_limit / memory_request / memory_limit: container resources.
        min_replicas / max_replicas: HPA bounds.
        target_cpu_utilisation: HPA CPU target (percent of the request).
        target_inflight: HPA Pods-metric target, average in-flight requests per pod.
        max_batch_size / max_wait_ms: dynamic batching.
        account_id: AWS account for IRSA and SageMaker ARNs (111122223333 is a documented placeholder).
        region: AWS region.
        sagemaker_instance_type: the managed endpoint's instance type.
        model_s3_uri: model tarball for SageMaker.
        host: public hostname on the ALB.
    """

    image: str = "ghcr.io/example/hpcml-serve:0.1.0"
    model_name: str = "mnist"
    workers: int = 2
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    min_replicas: int = 2
    max_replicas: int = 20
    target_cpu_utilisation: int = 70
    target_inflight: int = 8
    max_batch_size: int = 32
    max_wait_ms: float = 0.0  # 0 = adaptive: run as soon as the model is free (measured best in 04)
    account_id: str = "111122223333"
    region: str = "us-east-1"
    sagemaker_instance_type: str = "ml.c6i.xlarge"
    model_s3_uri: str = "s3://hpcml-models-111122223333/best/model.tar.gz"
    host: str = "inference.hpcml.example.com"

    def __post_init__(self):
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"ServeSpec: need 1 <= min_replicas <= max_replicas, got {self.min_replicas}, "
                             f"{self.max_replicas}")
        if not 1 <= self.target_cpu_utilisation <= 100:
            raise ValueError(f"ServeSpec.target_cpu_utilisation must be 1..100 percent, got {self.target_cpu_utilisation}")
        if self.target_inflight < 1 or self.workers < 1 or self.max_batch_size < 1:
            raise ValueError("ServeSpec: target_inflight, workers and max_batch_size must be >= 1")
        if not (self.account_id.isdigit() and len(self.account_id) == 12):
            raise ValueError(f"ServeSpec.account_id must be 12 digits, got {self.account_id!r}")
        if ":latest" in self.image or ":" not in self.image.rsplit("/", 1)[-1]:
            raise ValueError(f"ServeSpec.image must be pinned to a tag other than latest, got {self.image!r}")
        if not self.model_s3_uri.startswith("s3://"):
            raise ValueError(f"ServeSpec.model_s3_uri must start with s3://, got {self.model_s3_uri!r}")


def labels(spec: ServeSpec) -> dict:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": "hpcml", "hpcml.io/stage": "serve"}


def _meta(name: str, spec: ServeSpec, **extra) -> dict:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(spec), **extra}


def _args(spec: ServeSpec) -> list[str]:
    cfg = f'{{"model_name":"{spec.model_name}","max_batch_size":{spec.max_batch_size},"max_wait_ms":{spec.max_wait_ms}}}'
    return ["-m", "hpcml.serve.server", "--model", "/opt/hpcml/model/model.onnx", "--host", "0.0.0.0",
            "--port", str(PORT), "--workers", str(spec.workers), "--state-dir", "/tmp/hpcml-serve", "--config", cfg]


def container(spec: ServeSpec, name: str = "server") -> dict:
    """The serving container: probes on the v2 health routes, restricted security context."""
    def probe(path, period, failures):
        return {"httpGet": {"path": path, "port": PORT}, "periodSeconds": period, "failureThreshold": failures,
                "timeoutSeconds": 2}
    return {
        "name": name, "image": spec.image, "imagePullPolicy": "Always",
        "command": ["python"], "args": _args(spec),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "resources": {"requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
                      "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit}},
        "startupProbe": probe("/v2/health/ready", 2, 30),
        "readinessProbe": probe("/v2/health/ready", 5, 2),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(spec: ServeSpec) -> dict:
    sel = {"app.kubernetes.io/name": APP}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(APP, spec),
        "spec": {
            "replicas": spec.min_replicas,
            "selector": {"matchLabels": sel},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(spec), "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": "inference", "priorityClassName": "hpcml-serving",
                    "terminationGracePeriodSeconds": 30, "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(spec)],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": sel}},
                        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": sel}},
                    ],
                },
            },
        },
    }


def service(spec: ServeSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(APP, spec),
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": APP},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def ingress(spec: ServeSpec) -> dict:
    ann = {
        "alb.ingress.kubernetes.io/scheme": "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/listen-ports": '[{"HTTPS": 443}]',
        "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
        "alb.ingress.kubernetes.io/healthcheck-path": "/v2/health/ready",
        "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "10",
        "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=30",
        "alb.ingress.kubernetes.io/group.name": "hpcml",
    }
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": _meta(APP, spec, annotations=ann),
            "spec": {"ingressClassName": "alb", "rules": [{"host": spec.host, "http": {"paths": [
                {"path": "/v2", "pathType": "Prefix",
                 "backend": {"service": {"name": APP, "port": {"name": "http"}}}}]}}]}}


def hpa(spec: ServeSpec) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(APP, spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": spec.target_cpu_utilisation}}},
                {"type": "Pods", "pods": {"metric": {"name": "hpcml_serve_inflight_requests"},
                                          "target": {"type": "AverageValue", "averageValue": str(spec.target_inflight)}}},
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Percent", "value": 100, "periodSeconds": 15},
                    {"type": "Pods", "value": 4, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min", "policies": [
                    {"type": "Percent", "value": 50, "periodSeconds": 60}]},
            },
        },
    }


def pdb(spec: ServeSpec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(APP, spec),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": APP}}}}


def vpa(spec: ServeSpec) -> dict:
    return {"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler", "metadata": _meta(APP, spec),
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                     "updatePolicy": {"updateMode": "Off"},
                     "resourcePolicy": {"containerPolicies": [{
                         "containerName": "server", "controlledResources": ["memory"],
                         "minAllowed": {"memory": "512Mi"}, "maxAllowed": {"memory": "8Gi"}}]}}}


def inference_service(spec: ServeSpec) -> dict:
    """The same container as a KServe predictor (it already speaks the v2 protocol)."""
    c = container(spec, name="kserve-container")
    c.pop("lifecycle")
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": _meta(spec.model_name, spec, annotations={
                "serving.kserve.io/deploymentMode": "RawDeployment", "serving.kserve.io/autoscalerClass": "hpa"}),
            "spec": {"predictor": {"serviceAccountName": "inference", "priorityClassName": "hpcml-serving",
                                   "minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas,
                                   "scaleMetric": "cpu", "scaleTarget": spec.target_cpu_utilisation,
                                   "containers": [c],
                                   "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]}}}


def prometheus_adapter_rules() -> str:
    """prometheus-adapter rule exposing the in-flight gauge as a Pods custom metric for the HPA."""
    return """# prometheus-adapter rules (values.yaml `rules.custom`) for the serve HPA's Pods metric.
# Generated by hpcml.k8s.serve; the HPA asks custom.metrics.k8s.io for hpcml_serve_inflight_requests.
- seriesQuery: 'hpcml_serve_inflight_requests{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      pod: {resource: "pod"}
  name:
    matches: "hpcml_serve_inflight_requests"
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"""


# ----------------------------- SageMaker -----------------------------

def sagemaker_requests(spec: ServeSpec) -> dict[str, dict]:
    """CreateModel / CreateEndpointConfig / CreateEndpoint requests (boto3 shapes)."""
    name = f"hpcml-{spec.model_name}"
    ecr = f"{spec.account_id}.dkr.ecr.{spec.region}.amazonaws.com/hpcml-serve:0.1.0"
    return {
        "CreateModel": {
            "ModelName": name,
            "ExecutionRoleArn": f"arn:aws:iam::{spec.account_id}:role/hpcml-sagemaker",
            "PrimaryContainer": {"Image": ecr, "ModelDataUrl": spec.model_s3_uri, "Mode": "SingleModel",
                                 "Environment": {"HPCML_MODEL_NAME": spec.model_name, "OMP_NUM_THREADS": "1"}},
            "Tags": [{"Key": "project", "Value": "hpcml"}],
        },
        "CreateEndpointConfig": {
            "EndpointConfigName": f"{name}-config",
            "ProductionVariants": [{"VariantName": "primary", "ModelName": name, "InitialInstanceCount": spec.min_replicas,
                                    "InstanceType": spec.sagemaker_instance_type, "InitialVariantWeight": 1.0}],
            "Tags": [{"Key": "project", "Value": "hpcml"}],
        },
        "CreateEndpoint": {"EndpointName": name, "EndpointConfigName": f"{name}-config",
                           "Tags": [{"Key": "project", "Value": "hpcml"}]},
    }


def deploy_sagemaker(spec: ServeSpec | None = None, dry_run: bool | None = None) -> list[dict]:
    """Validate each request against botocore's model; send them only with credentials."""
    from hpcml.aws import send as aws_send
    return [aws_send.submit("sagemaker", op, req, dry_run=dry_run, region=(spec or ServeSpec()).region)
            for op, req in sagemaker_requests(spec or ServeSpec()).items()]


def render(spec: ServeSpec | None = None) -> dict:
    spec = spec or ServeSpec()
    out = {
        "serve/deployment.yaml": [deployment(spec)],
        "serve/service.yaml": [service(spec)],
        "serve/ingress.yaml": [ingress(spec)],
        "serve/hpa.yaml": [hpa(spec)],
        "serve/pdb.yaml": [pdb(spec)],
        "serve/vpa.yaml": [vpa(spec)],
        "serve/inferenceservice.yaml": [inference_service(spec)],
        "serve/prometheus-adapter-rules.yaml": prometheus_adapter_rules(),
    }
    for op, req in sagemaker_requests(spec).items():
        slug = "".join("-" + ch.lower() if ch.isupper() else ch for ch in op).lstrip("-")
        out[f"serve/sagemaker-{slug}.json"] = req
    return out
