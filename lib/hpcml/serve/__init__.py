"""Serving: export (TorchScript / ONNX / TensorRT), the v2 inference server with dynamic
batching, the load generator, and capacity maths for autoscaling."""
