"""The training loop's pieces: seeding, optimiser, LR schedule, batching, one step,
evaluation, prediction, and :func:`fit_local` (one process, no Horovod; the tuning stage
trains its trials with it).

The Horovod worker (:mod:`hpcml.train.worker`) uses the same step and evaluation
functions, so the single-process and distributed loops differ only in the optimiser
wrapper and the collectives. Pure: tensors in, tensors out; no files, no processes (the
shards are read by :mod:`hpcml.train.shards`).
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from hpcml.train.models import build_from_config, model_config_from


class NaNLossError(FloatingPointError):
    """The training loss became NaN or infinite; carries the global step (1-based: the step that failed)."""

    def __init__(self, step: int, loss: float, checkpoint: str | None = None):
        where = f"; last good checkpoint: {checkpoint}" if checkpoint else "; no checkpoint written yet"
        super().__init__(f"loss is {loss} at step {step}: training stopped{where} "
                         "(lower the learning rate or check the input normalisation)")
        self.step, self.loss, self.checkpoint = step, loss, checkpoint


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, optimizer: str, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum or AdamW."""
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay, nesterov=momentum > 0)
    if optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")


def lr_at(epoch_progress: float, base_lr: float, world_size: int, warmup_epochs: float,
          total_epochs: float, schedule: str = "cosine") -> float:
    """Learning rate at a fractional epoch (Goyal et al.: linear scaling + warm-up).

    Warm-up goes linearly from ``base_lr`` to ``base_lr * world_size`` over
    ``warmup_epochs``; then ``"cosine"`` decays to 0 at ``total_epochs`` and
    ``"constant"`` stays at the peak.
    """
    if world_size < 1 or base_lr <= 0 or total_epochs <= 0:
        raise ValueError("lr_at: need world_size >= 1, base_lr > 0, total_epochs > 0")
    peak = base_lr * world_size
    if warmup_epochs > 0 and epoch_progress < warmup_epochs:
        return base_lr + (peak - base_lr) * epoch_progress / warmup_epochs
    if schedule == "constant":
        return peak
    if schedule != "cosine":
        raise ValueError(f"lr schedule must be 'cosine' or 'constant', got {schedule!r}")
    span = max(total_epochs - warmup_epochs, 1e-9)
    t = min(max((epoch_progress - warmup_epochs) / span, 0.0), 1.0)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0) -> np.ndarray:
    """Deterministic shuffle of ``n`` rows for (seed, epoch, rank): resumable by index."""
    return np.random.default_rng([seed, epoch, rank]).permutation(n)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Batches of one epoch (the last partial batch is dropped when n >= batch_size)."""
    full = n // batch_size
    if full == 0:
        return [slice(0, n)] if n else []
    return [slice(i * batch_size, (i + 1) * batch_size) for i in range(full)]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """One SGD step: forward, cross-entropy, backward, optimiser step. Returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


def synthetic_batch(arch: str, batch_size: int, image_size: int, num_classes: int = 1000,
                    channels_last: bool = True) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fresh model (seed 0) and one random ImageNet-shaped batch: Horovod's synthetic benchmark input.

    The weights keep the default layout (Horovod only reduces/broadcasts contiguous tensors);
    a channels-last *input* still makes every activation channels-last (NHWC).
    """
    from hpcml.train.models import make_model

    torch.manual_seed(0)
    model = make_model(arch, num_classes=num_classes)
    x = torch.randn(batch_size, 3, image_size, image_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, torch.randint(0, num_classes, (batch_size,))


def plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """:func:`train_step` on fixed batches with SGD (lr 0.01, momentum 0.9), no communication, as a callable."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return lambda: train_step(model, opt, x, y)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
             batch_size: int = 1024) -> dict[str, float]:
    """Sums over the rows: ``{"loss_sum", "correct", "count"}`` (eval mode, restored after)."""
    was = model.training
    model.eval()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    loss_sum, correct = 0.0, 0
    for i in range(0, len(xt), batch_size):
        out = model(xt[i:i + batch_size])
        loss_sum += float(nn.functional.cross_entropy(out, yt[i:i + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == yt[i:i + batch_size]).sum())
    model.train(was)
    return {"loss_sum": loss_sum, "correct": float(correct), "count": float(len(xt))}


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Argmax class per row."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.as_tensor(x[i:i + batch_size])).argmax(1).numpy()
                               for i in range(0, len(x), batch_size)]) if len(x) else np.zeros(0, np.int64)


# --- one process ------------------------------------------------------------------------
def iterate_epoch(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(batch index, x, y) of one shuffled epoch, starting at batch ``start``."""
    order = epoch_order(len(x), seed, epoch, rank)
    for i, sl in enumerate(batch_slices(len(x), batch_size)):
        if i < start:
            continue
        idx = order[sl]
        yield i, torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def fit_local(config: dict, train: tuple, val: tuple, epochs: int,
              on_epoch: Callable[[int, dict], bool | None] | None = None,
              threads: int | None = None) -> dict:
    """Train one model in this process (no Horovod).

    Args:
        config: ``lr, batch_size, weight_decay, optimizer ("sgd"|"adamw"), arch, width,
            depth, dropout, seed`` (and optionally ``momentum``, ``warmup_epochs``).
        train: ``(x float32 (N, 784), y int64 (N,))``.
        val: same, for the per-epoch validation accuracy.
        epochs: epochs to run at most.
        on_epoch: called as ``on_epoch(epoch, {"val_accuracy", "loss"})`` after each epoch;
            returning True stops early (Optuna pruning).
        threads: intra-op threads (None = leave torch's setting).

    Returns:
        ``{"val_accuracy", "history", "model", "epochs_run", "model_config", "samples_per_s"}``.
    """
    if epochs < 1:
        raise ValueError(f"fit_local: epochs must be >= 1, got {epochs}")
    for key in ("lr", "batch_size"):
        if key not in config:
            raise ValueError(f"fit_local: config needs {key!r} (got keys {sorted(config)})")
    if threads:
        torch.set_num_threads(threads)
    seed = int(config.get("seed", 0))
    set_seed(seed)
    mcfg = model_config_from(config)
    model = build_from_config(mcfg)
    opt = make_optimizer(model, config.get("optimizer", "sgd"), float(config["lr"]),
                         float(config.get("weight_decay", 0.0)), float(config.get("momentum", 0.9)))
    xtr, ytr = np.asarray(train[0], np.float32), np.asarray(train[1], np.int64)
    steps = max(len(batch_slices(len(xtr), int(config["batch_size"]))), 1)
    history, seen, t0 = [], 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        loss_sum = 0.0
        for i, xb, yb in iterate_epoch(xtr, ytr, int(config["batch_size"]), seed, epoch):
            set_lr(opt, lr_at(epoch + i / steps, float(config["lr"]), 1,
                              float(config.get("warmup_epochs", 0.0)), epochs))
            loss = float(train_step(model, opt, xb, yb))
            if not math.isfinite(loss):
                raise NaNLossError(epoch * steps + i + 1, loss)  # 1-based, as in the worker
            loss_sum += loss
            seen += len(yb)
        ev = evaluate(model, val[0], val[1])
        rec = {"epoch": epoch, "loss": loss_sum / steps, "val_accuracy": ev["correct"] / max(ev["count"], 1),
               "val_loss": ev["loss_sum"] / max(ev["count"], 1)}
        history.append(rec)
        if on_epoch is not None and on_epoch(epoch, {"val_accuracy": rec["val_accuracy"], "loss": rec["loss"]}):
            break
    return {"val_accuracy": history[-1]["val_accuracy"], "history": history, "model": model,
            "epochs_run": len(history), "model_config": mcfg,
            "samples_per_s": seen / max(time.perf_counter() - t0, 1e-9)}


def loss_parity(a: list[float], b: list[float], steps: int = 100) -> dict[str, float | int]:
    """How far two runs' per-step losses lie apart over their first ``steps`` steps.

    The relative difference of step i is ``|a_i - b_i| / max(|a_i|, |b_i|)`` (0 when both
    are 0). Two runs of the same seed, shards and per-worker batch under two backends
    should agree closely (issue 25 asks for <= 1e-3 over 100 steps).

    Returns:
        ``{"max_rel_diff", "mean_rel_diff", "steps", "worst_step"}`` (``steps``: how many were
        compared, the shorter of the two runs and ``steps``; ``worst_step``: 1-based).

    Raises:
        ValueError: ``steps`` < 1, no step to compare, or a non-finite loss.
    """
    if steps < 1:
        raise ValueError(f"loss_parity: steps must be >= 1, got {steps}")
    n = min(len(a), len(b), steps)
    if n == 0:
        raise ValueError(f"loss_parity: nothing to compare (runs recorded {len(a)} and {len(b)} losses)")
    xa, xb = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("loss_parity: a loss is NaN or infinite; compare finite runs")
    scale = np.maximum(np.abs(xa), np.abs(xb))
    rel = np.divide(np.abs(xa - xb), scale, out=np.zeros(n), where=scale > 0)
    return {"max_rel_diff": float(rel.max()), "mean_rel_diff": float(rel.mean()), "steps": int(n),
            "worst_step": int(rel.argmax()) + 1}
