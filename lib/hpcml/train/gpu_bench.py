"""ResNet-50 synthetic training throughput and MFU on one accelerator (or CPU, tiny).

``python -m hpcml.train.gpu_bench`` on a GPU machine: bf16 autocast + channels-last,
random ImageNet-shaped batches, warm-up steps then timed steps (CUDA-synchronised),
img/s, the training FLOPs per image counted by torch, and MFU against (a) the chip's
spec peak (``--peak-tflops``, default 989 = H200/H100 SXM bf16 dense) and (b) a bf16
matmul peak measured on the same device. Also captures ``nvidia-smi`` output. Prints
one JSON line (prefixed ``RESULT ``) and writes it to ``--out`` if given.

Tiny CPU check: ``python -m hpcml.train.gpu_bench --device cpu --steps 2``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_tflops(device: str, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Best-of-``repeats`` n×n matmul throughput (TFLOP/s) on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n**3 / best / 1e12


def nvidia_smi() -> dict[str, str]:
    """``nvidia-smi`` summary and a CSV query (empty strings where there is no GPU tool)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"summary": "", "query": ""}
    q = "name,memory.total,memory.used,utilization.gpu,power.draw,clocks.sm,clocks.max.sm,temperature.gpu"
    run = lambda args: subprocess.run([exe, *args], capture_output=True, text=True, timeout=30).stdout  # noqa: E731
    return {"summary": run([]), "query": run([f"--query-gpu={q}", "--format=csv"])}


def run(device: str = "cuda", batch: int = 128, image_size: int = 224, warmup: int = 5, steps: int = 20,
        peak_tflops: float = 989.0, bf16: bool = True, channels_last: bool = True,
        matmul_n: int = 8192) -> dict[str, Any]:
    """Benchmark ResNet-50 training steps on ``device``; returns the result dict."""
    from hpcml.train.models import make_model, train_flops_per_sample

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device (this torch build: "
                           f"{torch.__version__}); use --device cpu for the tiny check")
    torch.manual_seed(0)
    model = make_model("resnet50", channels_last=channels_last)
    flops = train_flops_per_sample(model, (3, image_size, image_size), batch=1, channels_last=channels_last)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    img_s = batch / med
    achieved = img_s * flops / 1e12
    mm_dtype = torch.bfloat16 if bf16 else torch.float32
    peak_meas = matmul_peak_tflops(device, mm_dtype, matmul_n if dev_type == "cuda" else min(matmul_n, 512))
    res = {
        "device": torch.cuda.get_device_name(0) if dev_type == "cuda" else "cpu",
        "torch": torch.__version__, "batch": batch, "image_size": image_size, "bf16": bf16,
        "channels_last": channels_last, "steps": steps, "step_s_median": med,
        "img_per_s": img_s, "train_gflop_per_img": flops / 1e9, "achieved_tflops": achieved,
        "peak_tflops_spec": peak_tflops, "mfu_vs_spec": achieved / peak_tflops,
        "matmul_peak_tflops_measured": peak_meas, "mfu_vs_measured_matmul": achieved / peak_meas,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev_type == "cuda" else None,
        "nvidia_smi": nvidia_smi(),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--batch", type=int, default=None, help="default 128 on cuda, 2 on cpu")
    ap.add_argument("--image-size", type=int, default=None, help="default 224 on cuda, 64 on cpu")
    ap.add_argument("--warmup", type=int, default=None, help="default 5 on cuda, 1 on cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="spec bf16 dense peak (H200: 989)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    cpu = a.device == "cpu"
    res = run(a.device, batch=a.batch or (2 if cpu else 128), image_size=a.image_size or (64 if cpu else 224),
              warmup=a.warmup if a.warmup is not None else (1 if cpu else 5), steps=a.steps,
              peak_tflops=a.peak_tflops, bf16=not a.fp32, channels_last=not a.no_channels_last)
    line = json.dumps(res)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(line + "\n")
    smi = res["nvidia_smi"]["query"]
    if smi:
        print(smi, file=sys.stderr)
    print("RESULT " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
