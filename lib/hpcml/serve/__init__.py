"""Serving: export (TorchScript / ONNX / TensorRT), the v2 inference server with dynamic
batching, the load generator, and capacity maths for autoscaling.

Modules, by layer:

* spec: ``spec`` (``ServeConfig``, ``ServeSpec``, the runtimes and the server's metric names).
* pure: ``protocol`` (the v2 wire format), ``batching`` (the dynamic batcher), ``capacity``
  (replicas and HPA simulation).
* backend: ``export`` (model export and runtime loading), ``server`` (the supervisor and its
  workers), ``process`` (``ServerProcess``: start/stop the server), ``loadgen``, ``bench`` (the
  notebook's benchmarks), ``sagemaker`` (send the endpoint requests ``hpcml.k8s.serve`` renders).
"""
