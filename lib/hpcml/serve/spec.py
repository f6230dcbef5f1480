"""The serving stage's shared names: its Prometheus metrics.

Rules, dashboards, plots, the load benchmarks and the HPA's custom metric import these
rather than retype them.
"""

from __future__ import annotations

METRIC_REQUESTS = "hpcml_serve_requests_total"  # counter: requests by model and HTTP code
METRIC_REQUEST_SECONDS = "hpcml_serve_request_duration_seconds"  # histogram: request latency
METRIC_BATCH_SIZE = "hpcml_serve_batch_size"  # histogram: rows per model call
METRIC_MODEL_SECONDS = "hpcml_serve_model_seconds"  # histogram: model time per batch
METRIC_QUEUE_DEPTH = "hpcml_serve_queue_depth"  # gauge: requests waiting for a batch
METRIC_INFLIGHT = "hpcml_serve_inflight_requests"  # gauge: requests being handled
METRIC_ERRORS = "hpcml_serve_errors_total"  # counter: error responses by HTTP code
