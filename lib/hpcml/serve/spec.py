"""The serving stage's specs and shared names.

* :class:`ServeConfig` — one inference worker's settings (the server validates it at start).
* :class:`ServeSpec` — everything the serving manifests depend on; the server arguments it
  renders come from a :class:`ServeConfig` built from it (:meth:`ServeSpec.server_config`),
  so a rendered manifest passes the same validation as a local server.
* :data:`RUNTIMES` and the Prometheus metric names the server exposes (``METRIC_*``):
  rules, dashboards, plots, the load benchmarks and the HPA's custom metric import these
  rather than retype them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Sequence

from hpcml.aws.account import ACCOUNT_ID, REGION, s3_uri
from hpcml.specbase import fail

METRIC_REQUESTS = "hpcml_serve_requests_total"  # counter: requests by model and HTTP code
METRIC_REQUEST_SECONDS = "hpcml_serve_request_duration_seconds"  # histogram: request latency
METRIC_BATCH_SIZE = "hpcml_serve_batch_size"  # histogram: rows per model call
METRIC_MODEL_SECONDS = "hpcml_serve_model_seconds"  # histogram: model time per batch
METRIC_QUEUE_DEPTH = "hpcml_serve_queue_depth"  # gauge: requests waiting for a batch
METRIC_INFLIGHT = "hpcml_serve_inflight_requests"  # gauge: requests being handled
METRIC_ERRORS = "hpcml_serve_errors_total"  # counter: error responses by HTTP code

#: The model runtimes a worker can load (``eager`` runs the ``model.pt`` artifact itself).
RUNTIMES = ("onnx", "torchscript", "eager")
#: The server's interchangeable HTTP front-ends.
FRONTENDS = ("asgi", "fastapi")

#: Where the serving image keeps the exported model and the server's state (the container layout).
CONTAINER_MODEL_FILE = "/opt/hpcml/model/model.onnx"
CONTAINER_STATE_DIR = "/tmp/hpcml-serve"
#: The :class:`ServeConfig` fields a :class:`ServeSpec` sets (the rest keep their defaults).
SPEC_CONFIG_FIELDS = ("model_name", "max_batch_size", "max_wait_ms")
#: :class:`ServeConfig` fields the server's CLI takes as options of their own, not in ``--config``.
_CLI_OPTIONS = ("model_file", "state_dir")


@dataclass
class ServeConfig:
    """One worker's settings.

    Args:
        model_file: the runtime file (``.onnx`` / ``.ts``) or, for ``eager``, the ``model.pt`` artifact.
        runtime: ``onnx``, ``torchscript`` or ``eager``.
        model_name: the name in the v2 routes.
        max_batch_size: rows per model call; 1 disables batching.
        max_wait_ms: 0 = adaptive batching (run when the model is free with what is queued);
            > 0 = fixed window a batch waits to fill after its first request.
        max_request_rows: the largest N a single request may carry.
        max_body_bytes: larger bodies get 413.
        threads: intra-op threads per worker.
        frontend: ``asgi`` (raw) or ``fastapi``.
        state_dir: ready files and the injected latency live here.
        graceful_timeout_s: how long shutdown waits for in-flight requests.
        limit_concurrency: connections per worker beyond which uvicorn answers 503.
    """

    model_file: str
    runtime: str = "onnx"
    model_name: str = "mnist"
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    max_request_rows: int = 64
    max_body_bytes: int = 2_000_000
    threads: int = 1
    frontend: str = "asgi"
    state_dir: str = ""
    graceful_timeout_s: float = 20.0
    limit_concurrency: int = 1000

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise fail(self, "runtime", f"one of {RUNTIMES}", self.runtime)
        if self.frontend not in FRONTENDS:
            raise fail(self, "frontend", " or ".join(repr(f) for f in FRONTENDS), self.frontend)
        for name in ("max_batch_size", "max_request_rows", "max_body_bytes", "threads", "limit_concurrency"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise fail(self, name, "a positive integer", v)
        if not 0 <= self.max_wait_ms <= 1000:
            raise fail(self, "max_wait_ms", "a wait in 0..1000 ms", self.max_wait_ms)
        if not self.model_name or "/" in self.model_name:
            raise fail(self, "model_name", "a non-empty name without '/'", self.model_name)

    def to_args(self, host: str, port: int, workers: int, config_fields: Sequence[str] | None = None) -> list[str]:
        """The arguments of ``python -m hpcml.serve.server`` that start a server with this config.

        The server parses them back (``--model`` and ``--state-dir`` as options, the rest as the
        ``--config`` JSON) into an equal :class:`ServeConfig`.

        Args:
            host / port / workers: where the supervisor listens and how many workers it runs.
            config_fields: the fields written into ``--config`` (default: all but the two options).
        """
        names = [f.name for f in fields(self) if f.name not in _CLI_OPTIONS] if config_fields is None \
            else list(config_fields)
        for name in names:
            if name in _CLI_OPTIONS or name not in {f.name for f in fields(self)}:
                raise fail(self, "to_args.config_fields", "ServeConfig fields other than model_file/state_dir", name)
        cfg = json.dumps({n: getattr(self, n) for n in names}, separators=(",", ":"))
        return ["--model", self.model_file, "--host", host, "--port", str(port), "--workers", str(workers),
                "--state-dir", self.state_dir, "--config", cfg]


@dataclass(frozen=True)
class ServeSpec:
    """Everything the serving manifests depend on.

    Args:
        image: the serving image (built from docker/Dockerfile.serve).
        model_name: the name in the v2 routes.
        workers: server worker processes per pod.
        cpu_request / cpu_limit / memory_request / memory_limit: container resources.
        min_replicas / max_replicas: HPA bounds.
        target_cpu_utilisation: HPA CPU target (percent of the request); also the share of a pod's
            capacity the in-flight target aims at (the same headroom, see ``target_inflight``).
        concurrency_at_slo: requests in flight on one pod at its capacity at the latency objective
            (p99 <= :data:`hpcml.serve.capacity.SLO_P99_MS`): the highest closed-loop client count
            (clients = requests in flight) at which 04's capacity search met the objective, its metric
            ``max_rps_at_p99_50ms_concurrency``. 32 on the reference run of 2026-12-04 (a pod of 2
            workers met p99 <= 50 ms at 32 clients and missed it at 64); re-measure on other hardware.
        target_inflight: HPA Pods-metric target, average in-flight requests per pod. Derived when not
            given: ``floor(concurrency_at_slo x target_cpu_utilisation / 100)``. By Little's law a pod
            serving ``u`` of its capacity holds ``u x rate x latency`` requests, and its latency at
            lower load is at most that at capacity, so this target is reached between ``u`` and all
            of the capacity (04 measures where: ``hpa_target_inflight_utilisation``), never beyond the
            capacity at the objective. A given value must be in 1..``concurrency_at_slo``: a larger one
            would scale out only after p99 has broken the objective.
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
    concurrency_at_slo: int = 32
    target_inflight: int | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 0.0  # 0 = adaptive: run as soon as the model is free (measured best in 04)
    account_id: str = ACCOUNT_ID
    region: str = REGION
    sagemaker_instance_type: str = "ml.c6i.xlarge"
    model_s3_uri: str = s3_uri("models", "best", "model.tar.gz", account_id=ACCOUNT_ID, folder=False)
    host: str = "inference.hpcml.example.com"

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise fail(self, "min_replicas/max_replicas", "1 <= min_replicas <= max_replicas",
                       (self.min_replicas, self.max_replicas))
        if not 1 <= self.target_cpu_utilisation <= 100:
            raise fail(self, "target_cpu_utilisation", "a percent in 1..100", self.target_cpu_utilisation)
        for name in ("concurrency_at_slo", "workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise fail(self, name, "an integer >= 1", v)
        if self.target_inflight is None:
            object.__setattr__(self, "target_inflight", self.derived_target_inflight())
        t = self.target_inflight
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= self.concurrency_at_slo:
            raise fail(self, "target_inflight", f"an integer in 1..concurrency_at_slo ({self.concurrency_at_slo}): "
                       "above it the HPA scales out only after p99 has passed the objective", t)
        if not (self.account_id.isdigit() and len(self.account_id) == 12):
            raise fail(self, "account_id", "12 digits", self.account_id)
        if ":latest" in self.image or ":" not in self.image.rsplit("/", 1)[-1]:
            raise fail(self, "image", "an image pinned to a tag other than latest", self.image)
        if not self.model_s3_uri.startswith("s3://"):
            raise fail(self, "model_s3_uri", "a URI starting with s3://", self.model_s3_uri)
        self.server_config()  # the server's own validation of the batching fields

    def derived_target_inflight(self) -> int:
        """``floor(concurrency_at_slo x target_cpu_utilisation / 100)``, at least 1 (see the class docstring)."""
        return max(1, self.concurrency_at_slo * self.target_cpu_utilisation // 100)

    def server_config(self) -> ServeConfig:
        """The :class:`ServeConfig` of the server in the serving container (validated)."""
        return ServeConfig(model_file=CONTAINER_MODEL_FILE, state_dir=CONTAINER_STATE_DIR,
                           **{name: getattr(self, name) for name in SPEC_CONFIG_FIELDS})
