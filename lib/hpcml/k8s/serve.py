"""Serving definitions: Deployment, Service, Ingress (ALB), HPA, PDB, VPA, KServe
InferenceService, and the SageMaker endpoint requests — all from one
:class:`~hpcml.serve.spec.ServeSpec`.

Pure builders (dict in, dict out); ``render()`` maps paths under ``manifests/`` to them.
The container is the same everywhere: ``python -m hpcml.serve.server`` answering the
Open Inference Protocol v2 on port 8080 (and SageMaker's ``/ping`` + ``/invocations``),
its arguments written by the spec's :class:`~hpcml.serve.spec.ServeConfig`. Sending the
SageMaker requests is :func:`hpcml.serve.sagemaker.deploy`'s job.
"""

from __future__ import annotations

from hpcml.aws.account import ecr_image, role_arn
from hpcml.k8s.common import NAMESPACE, SERVING_PRIORITY_CLASS, labels, meta, restricted_container, restricted_pod
from hpcml.serve.spec import METRIC_INFLIGHT, SPEC_CONFIG_FIELDS, ServeSpec

APP = "hpcml-serve"
PORT = 8080
#: The fewest availability zones the serving replicas spread over (the HPA's minimum is 2).
ZONES_MIN = 2
#: The spec the checked-in manifests and the SageMaker requests are rendered from; its
#: model sits in the data bucket's ``models/`` prefix (the layout of
#: :data:`hpcml.aws.account.S3_PREFIXES`), which the SageMaker execution role may read.
PRODUCTION_SPEC = ServeSpec()
MODEL_S3_URI = PRODUCTION_SPEC.model_s3_uri

CRD_REQUIRED = {
    ("autoscaling.k8s.io/v1", "VerticalPodAutoscaler"): ["spec.targetRef.name", "spec.updatePolicy.updateMode"],
    ("serving.kserve.io/v1beta1", "InferenceService"): ["spec.predictor.containers"],
}


def _labels() -> dict:
    return labels(APP, stage="serve")


def _meta(name: str, **extra) -> dict:
    return meta(name, NAMESPACE, _labels(), **extra)


def _args(spec: ServeSpec) -> list[str]:
    """The server's command line, written by the spec's (validated) :class:`~hpcml.serve.spec.ServeConfig`."""
    return ["-m", "hpcml.serve.server",
            *spec.server_config().to_args("0.0.0.0", PORT, spec.workers, config_fields=SPEC_CONFIG_FIELDS)]


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
        "securityContext": restricted_container(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(spec: ServeSpec) -> dict:
    sel = {"app.kubernetes.io/name": APP}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(APP),
        "spec": {
            "replicas": spec.min_replicas,
            "selector": {"matchLabels": sel},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _labels(), "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": "inference", "priorityClassName": SERVING_PRIORITY_CLASS,
                    "terminationGracePeriodSeconds": 30, "automountServiceAccountToken": False,
                    "securityContext": restricted_pod(),
                    "containers": [container(spec)],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
                    # Zones: a hard spread over at least two (an AZ outage leaves replicas; minDomains
                    # makes the autoscaler open a second zone instead of stacking one). Nodes: soft.
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "minDomains": ZONES_MIN,
                         "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": sel}},
                        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": sel}},
                    ],
                },
            },
        },
    }


def service(spec: ServeSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(APP),
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
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": _meta(APP, annotations=ann),
            "spec": {"ingressClassName": "alb", "rules": [{"host": spec.host, "http": {"paths": [
                {"path": "/v2", "pathType": "Prefix",
                 "backend": {"service": {"name": APP, "port": {"name": "http"}}}}]}}]}}


def hpa(spec: ServeSpec) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(APP),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": spec.target_cpu_utilisation}}},
                # in-flight target: target_cpu_utilisation of the pod's concurrency at the latency
                # objective (ServeSpec.concurrency_at_slo), so it is reached below that capacity
                {"type": "Pods", "pods": {"metric": {"name": METRIC_INFLIGHT},
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
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(APP),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": APP}}}}


def vpa(spec: ServeSpec) -> dict:
    return {"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler", "metadata": _meta(APP),
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
            "metadata": _meta(spec.model_name, annotations={
                "serving.kserve.io/deploymentMode": "RawDeployment", "serving.kserve.io/autoscalerClass": "hpa"}),
            "spec": {"predictor": {"serviceAccountName": "inference", "priorityClassName": SERVING_PRIORITY_CLASS,
                                   "minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas,
                                   "scaleMetric": "cpu", "scaleTarget": spec.target_cpu_utilisation,
                                   "containers": [c],
                                   "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]}}}


def prometheus_adapter_rules() -> str:
    """prometheus-adapter rule exposing the in-flight gauge as a Pods custom metric for the HPA."""
    return f"""# prometheus-adapter rules (values.yaml `rules.custom`) for the serve HPA's Pods metric.
# Generated by hpcml.k8s.serve; the HPA asks custom.metrics.k8s.io for {METRIC_INFLIGHT}.
- seriesQuery: '{METRIC_INFLIGHT}{{namespace!="",pod!=""}}'
  resources:
    overrides:
      namespace: {{resource: "namespace"}}
      pod: {{resource: "pod"}}
  name:
    matches: "{METRIC_INFLIGHT}"
  metricsQuery: 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"""


# ----------------------------- SageMaker -----------------------------

def sagemaker_requests(spec: ServeSpec) -> dict[str, dict]:
    """CreateModel / CreateEndpointConfig / CreateEndpoint requests (boto3 shapes)."""
    name = f"hpcml-{spec.model_name}"
    ecr = ecr_image("hpcml-serve", "0.1.0", spec.account_id, spec.region)
    return {
        "CreateModel": {
            "ModelName": name,
            "ExecutionRoleArn": role_arn("hpcml-sagemaker", spec.account_id),
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


def render(spec: ServeSpec | None = None) -> dict:
    spec = spec or PRODUCTION_SPEC
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
