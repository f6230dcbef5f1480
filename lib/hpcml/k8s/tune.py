"""Tuning on Kubernetes: an indexed Job of Optuna workers against PostgreSQL, and Katib.

Pure builders (spec -> dict), rendered into ``manifests/tune/`` for :data:`PRODUCTION_SPEC`:

* ``postgresql.yaml`` — the study database: a headless Service and a one-replica
  StatefulSet with a ``volumeClaimTemplate`` (gp3), non-root and PSA-restricted. The
  NetworkPolicies in ``manifests/cluster/`` already allow only ``hpcml.io/stage: tune`` pods
  to reach it on 5432.
* ``optuna-workers.yaml`` — the spec ConfigMap, a shared volume for the shards, and a Job
  with ``completionMode: Indexed``, ``parallelism = completions = P``: pod ``i`` gets
  ``JOB_COMPLETION_INDEX=i`` and runs worker ``i`` of P (the same program as the local
  processes and the Slurm array). The storage URL comes from the Secret
  ``hpcml-tune-db`` (key ``url``), mounted as a read-only file; no Secret is committed:
  ``create-db-secret.sh`` creates it with a random password.
* ``katib-experiment.yaml`` — the alternative: a Katib Experiment (kubeflow.org/v1beta1) with
  the same search space, TPE suggestions and median-stop early stopping; each Katib trial
  runs ``python -m hpcml.tune.workers trial`` and prints ``val_accuracy=…`` per epoch.
"""

from __future__ import annotations

import json

from hpcml.k8s.common import NAMESPACE, labels, meta, restricted_container, restricted_pod
from hpcml.paths import SHARED_MOUNT, shared_dataset_dir
from hpcml.train.spec import TRAIN_IMAGE
from hpcml.tune.space import default_space
from hpcml.tune.spec import TuneSpec

SERVICE_ACCOUNT = "tuner"
PRIORITY_CLASS = "hpcml-training"
IMAGE = TRAIN_IMAGE  # the CPU training image (hpcml.train.spec): the tuning workers train on CPUs
PG_IMAGE = "docker.io/library/postgres:16.4-bookworm"
PG_UID = 999  # the postgres user of the Debian-based image
SECRET = "hpcml-tune-db"
SPEC_DIR = "/etc/hpcml/tune"
WORKERS = 4
CPUS_PER_WORKER = 4
CRD_REQUIRED = {
    ("kubeflow.org/v1beta1", "Experiment"): [
        "spec.objective.type", "spec.objective.objectiveMetricName", "spec.algorithm.algorithmName",
        "spec.earlyStopping.algorithmName", "spec.parallelTrialCount", "spec.maxTrialCount",
        "spec.maxFailedTrialCount", "spec.parameters", "spec.trialTemplate.primaryContainerName",
        "spec.trialTemplate.trialParameters", "spec.trialTemplate.trialSpec", "spec.metricsCollectorSpec",
    ],
}

#: The production-sized study the checked-in manifests are rendered from (the URL is a
#: placeholder: workers read the real one from the Secret).
PRODUCTION_SPEC = TuneSpec(
    study_name="mnist-cnn", storage="postgresql://optuna@postgresql-0.postgresql.hpcml.svc:5432/optuna",
    n_trials=128, epochs=27, sampler="tpe", pruner="hyperband", space=default_space(),
    dataset_dir=shared_dataset_dir(),
)


def _labels(name: str, component: str | None = None) -> dict[str, str]:
    return labels(name, "tune", component)


def _meta(name: str, app: str | None = None, component: str | None = None) -> dict:
    return meta(name, NAMESPACE, _labels(app or name, component))


# --- PostgreSQL ---------------------------------------------------------------------------
def _secret_volume(key: str) -> dict:
    """The DB Secret's ``key`` as a read-only file (secrets as files, not environment variables)."""
    return {"name": "db-secret", "secret": {"secretName": SECRET, "defaultMode": 0o440,
                                            "items": [{"key": key, "path": key}]}}


def postgres_service() -> dict:
    """Headless Service: stable DNS ``postgresql-0.postgresql.hpcml.svc`` for the StatefulSet pod."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta("postgresql", component="database"),
            "spec": {"clusterIP": "None", "selector": {"app.kubernetes.io/name": "postgresql"},
                     "ports": [{"name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP"}]}}


def postgres_statefulset(storage: str = "20Gi", storage_class: str = "gp3") -> dict:
    """One PostgreSQL replica with its data on a per-pod volume claim (survives rescheduling)."""
    res = {"cpu": "1", "memory": "2Gi"}
    env = [{"name": "POSTGRES_USER", "value": "optuna"}, {"name": "POSTGRES_DB", "value": "optuna"},
           {"name": "POSTGRES_PASSWORD_FILE", "value": "/etc/hpcml/db/password"},
           {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}]
    probe = {"exec": {"command": ["pg_isready", "-U", "optuna", "-d", "optuna", "-h", "127.0.0.1"]},
             "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "postgres", "image": PG_IMAGE, "imagePullPolicy": "Always",
        "ports": [{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}], "env": env,
        "securityContext": restricted_container(uid=None), "resources": {"requests": res, "limits": dict(res)},
        "readinessProbe": probe, "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 6},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                         {"name": "db-secret", "mountPath": "/etc/hpcml/db", "readOnly": True},
                         {"name": "run", "mountPath": "/var/run/postgresql"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta("postgresql", component="database"),
            "spec": {
                "serviceName": "postgresql", "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}},
                "template": {"metadata": {"labels": _labels("postgresql", "database")}, "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": False,
                    "enableServiceLinks": False, "securityContext": restricted_pod(PG_UID),
                    "containers": [container],
                    "volumes": [{"name": "run", "emptyDir": {}}, {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                                _secret_volume("password")]}},
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data", "labels": _labels("postgresql", "database")},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                             "resources": {"requests": {"storage": storage}}}}],
            }}


def create_secret_script() -> str:
    """Shell script that creates the DB Secret with a random password (nothing committed)."""
    return """#!/bin/sh
# Creates the Secret the PostgreSQL StatefulSet and the Optuna workers read (never commit it).
# Rendered by hpcml.k8s.tune. Usage: sh manifests/tune/create-db-secret.sh [namespace]
# With External Secrets Operator, map the same two keys (password, url) from AWS Secrets Manager instead.
set -eu
NS="${1:-hpcml}"
PW="$(openssl rand -hex 24)"
kubectl -n "$NS" create secret generic hpcml-tune-db \\
  --from-literal=password="$PW" \\
  --from-literal=url="postgresql://optuna:${PW}@postgresql-0.postgresql.${NS}.svc:5432/optuna" \\
  --dry-run=client -o yaml | kubectl apply -f -
"""


# --- Optuna workers -----------------------------------------------------------------------
def spec_configmap(spec: TuneSpec) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{spec.study_name}-tune-spec", "optuna-worker"),
            "data": {"spec.json": spec.to_json() + "\n"}}


def shared_pvc(spec: TuneSpec, size: str = "50Gi", storage_class: str = "efs-sc") -> dict:
    """ReadWriteMany volume (EFS): the shards (staged by the data stage) and the tuned model."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(f"{spec.study_name}-tune-shared", "optuna-worker"),
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}


def worker_job(spec: TuneSpec, workers: int = WORKERS, cpus: int = CPUS_PER_WORKER) -> dict:
    """Indexed Job: P pods, pod i = Optuna worker i of P, all on one PostgreSQL study."""
    if workers < 1 or cpus < 1:
        raise ValueError(f"workers and cpus must be >= 1, got workers={workers}, cpus={cpus}")
    res = {"cpu": str(cpus), "memory": f"{2 * cpus}Gi"}
    container = {
        "name": "optuna-worker", "image": IMAGE, "imagePullPolicy": "Always",
        "command": ["python", "-m", "hpcml.tune.workers", "--spec", f"{SPEC_DIR}/spec.json", "--of", str(workers),
                    "--no-pin", "--threads", str(cpus)],
        # the storage URL (with its password) is read from the Secret mounted as a file
        "env": [{"name": "HPCML_TUNE_STORAGE_FILE", "value": "/etc/hpcml/db/url"},
                {"name": "HPCML_BUILD", "value": SHARED_MOUNT},
                {"name": "OMP_NUM_THREADS", "value": str(cpus)}],
        "securityContext": restricted_container(uid=None), "resources": {"requests": res, "limits": dict(res)},
        "volumeMounts": [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
                         {"name": "db-secret", "mountPath": "/etc/hpcml/db", "readOnly": True},
                         {"name": "shared", "mountPath": SHARED_MOUNT},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(f"{spec.study_name}-optuna", "optuna-worker"),
            "spec": {
                "completionMode": "Indexed", "completions": workers, "parallelism": workers,
                # a worker pod that crashes is retried on its own index; the study keeps its trials
                "backoffLimitPerIndex": 2, "maxFailedIndexes": max(workers - 1, 0),
                "ttlSecondsAfterFinished": 86400, "activeDeadlineSeconds": 6 * 3600,
                "template": {"metadata": {"labels": _labels("optuna-worker", "worker")}, "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": False,
                    "priorityClassName": PRIORITY_CLASS, "enableServiceLinks": False, "restartPolicy": "Never",
                    "securityContext": restricted_pod(), "containers": [container],
                    "volumes": [{"name": "spec", "configMap": {"name": f"{spec.study_name}-tune-spec"}},
                                _secret_volume("url"),
                                {"name": "shared", "persistentVolumeClaim": {"claimName": f"{spec.study_name}-tune-shared"}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "5Gi"}}]}},
            }}


# --- Katib --------------------------------------------------------------------------------
def katib_experiment(spec: TuneSpec, parallel: int = WORKERS, cpus: int = CPUS_PER_WORKER) -> dict:
    """The same search as a Katib Experiment: TPE suggestions, median-stop early stopping."""
    names = spec.space.names
    args = ["python", "-m", "hpcml.tune.workers", "trial", "--spec", f"{SPEC_DIR}/spec.json",
            "--threads", str(cpus)] + [f"--set={n}=${{trialParameters.{n}}}" for n in names]
    res = {"cpu": str(cpus), "memory": f"{2 * cpus}Gi"}
    trial_job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": _labels("katib-trial", "trial")},
            "spec": {"serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": False,
                     "priorityClassName": PRIORITY_CLASS, "restartPolicy": "Never",
                     "securityContext": restricted_pod(),
                     "containers": [{"name": "training", "image": IMAGE, "command": args,
                                     "imagePullPolicy": "Always",
                                     "env": [{"name": "HPCML_BUILD", "value": SHARED_MOUNT}],
                                     "securityContext": restricted_container(uid=None),
                                     "resources": {"requests": res, "limits": dict(res)},
                                     "volumeMounts": [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
                                                      {"name": "shared", "mountPath": SHARED_MOUNT, "readOnly": True},
                                                      {"name": "tmp", "mountPath": "/tmp"}]}],
                     "volumes": [{"name": "spec", "configMap": {"name": f"{spec.study_name}-tune-spec"}},
                                 {"name": "shared",
                                  "persistentVolumeClaim": {"claimName": f"{spec.study_name}-tune-shared"}},
                                 {"name": "tmp", "emptyDir": {"sizeLimit": "5Gi"}}]}}}}
    return {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
        "metadata": _meta(f"{spec.study_name}-katib", "katib-experiment"),
        "spec": {
            "objective": {"type": "maximize", "goal": 0.995, "objectiveMetricName": "val_accuracy",
                          "additionalMetricNames": ["loss"]},
            "algorithm": {"algorithmName": "tpe", "algorithmSettings": [{"name": "random_state", "value": str(spec.seed)}]},
            "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
                {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "1"}]},
            "parallelTrialCount": parallel, "maxTrialCount": spec.n_trials,
            "maxFailedTrialCount": max(spec.n_trials // 4, 1),
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": spec.space.to_katib(),
            "trialTemplate": {"primaryContainerName": "training", "successCondition": "status.conditions.#(type==\"Complete\")#|#(status==\"True\")#",
                              "failureCondition": "status.conditions.#(type==\"Failed\")#|#(status==\"True\")#",
                              "trialParameters": [{"name": n, "reference": n, "description": f"hyperparameter {n}"}
                                                  for n in names],
                              "trialSpec": trial_job},
        },
    }


def render(spec: TuneSpec = PRODUCTION_SPEC) -> dict[str, object]:
    """``{path under manifests/: documents or text}`` for the tuning stage."""
    return {
        "tune/postgresql.yaml": [postgres_service(), postgres_statefulset()],
        "tune/create-db-secret.sh": create_secret_script(),
        "tune/optuna-workers.yaml": [spec_configmap(spec), shared_pvc(spec), worker_job(spec)],
        "tune/katib-experiment.yaml": [katib_experiment(spec)],
        "tune/tune-spec.json": json.loads(spec.to_json()),
    }
