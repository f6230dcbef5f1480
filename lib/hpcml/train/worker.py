"""The training worker: ``python -m hpcml.train.worker --spec spec.json``, one loop for both backends.

Started once per rank by ``horovodrun`` (``spec.backend == "horovod"``: ``-np N --gloo``;
elastic: ``--min-np/--max-np --host-discovery-script``) or by ``torchrun``
(``"ddp"``; elastic: ``--nnodes=MIN:MAX --max-restarts=K``). The loop talks to its peers
only through :mod:`hpcml.train.comm`, so the backends differ only there. Each rank: sizes
its thread pool, optionally pins itself to its cores, reads its own train shard, gets rank
0's initial parameters and optimiser state, trains through ``comm.wrap`` (Horovod's
``DistributedOptimizer`` or DDP; LR scaled by world size after a warm-up), averages
metrics with ``comm.allreduce``, and rank 0 reports one JSON line per epoch (``HPCML
{...}``), writes atomic checkpoints every K steps, the final metrics JSON (with the first
``record_losses`` per-step losses) and the model artifact. A NaN loss stops every rank
before the poisoned update, naming the step and the last good checkpoint. With
``metrics_port`` set each rank serves its Prometheus metrics (:mod:`hpcml.train.exporter`).

Elastic DDP: torchrun restarts every worker after a failure; each starts again here,
resumes from the latest checkpoint, re-shards for the new world size (shard s -> rank
s mod size, as the Horovod elastic path does) and rank 0 emits a ``reset`` event.

Preemption: SIGTERM (a Spot reclaim's notice, a pod deletion, ``scancel``) does not kill a
rank. Its handler only sets a flag; the flag rides on the step's loss allreduce, so every
rank learns at the same step that some rank was asked to stop. They finish that step,
write one checkpoint (atomic, as above), wait for each other, and exit with
:data:`EXIT_PREEMPTED` after rank 0 prints a ``preempted`` event naming the step and the
file. A restart resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcml import proc
from hpcml.train import checkpoint as ck
from hpcml.train import ckpt_bucket, comm, heap
from hpcml.train import loop, shards
from hpcml.train.exporter import Exporter, ExporterAB
from hpcml.train.models import build_from_config, model_config_from
from hpcml.train.spec import TrainSpec

PREFIX = "HPCML "
ERROR_PREFIX = "HPCML-ERROR "
#: What the metrics' ``time_split`` can and cannot separate, per backend.
TIME_SPLIT_NOTES = {
    "horovod": "allreduce_s is the gradient allreduce time backward did not hide (optimizer.synchronize) "
               "plus the loss allreduce; compute_s is forward+backward while the gradient allreduces run",
    "ddp": "DDP allreduces the gradient buckets inside backward and waits for them before backward returns, "
           "so compute_s includes the gradient allreduce wait; allreduce_s is only the loss allreduce",
}
#: Exit status of a rank that checkpointed and stopped on SIGTERM: 128 + 15, what a shell
#: and the kubelet report for a process ended by SIGTERM, so a scheduler retries the job.
EXIT_PREEMPTED = 128 + signal.SIGTERM


class Preempted(Exception):
    """Every rank stopped after a SIGTERM, with the checkpoint written at ``step``."""

    def __init__(self, step: int, checkpoint: str | None, signum: int):
        super().__init__(f"stopped on {signal.Signals(signum).name} after step {step}; checkpoint: {checkpoint}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum


class StopRequest:
    """The SIGTERM handler's state: the signal received (``None`` until one arrives).

    The handler does nothing but record it; the training loop acts at a step boundary, where
    every rank can agree on it (:func:`dist_step`).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received_at: float | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum, self.received_at = signum, time.monotonic()

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> "StopRequest":
        """Make this object the handler of ``signals`` (main thread only); returns self."""
        for s in signals:
            signal.signal(s, self)
            # restart interrupted system calls: the C++ threads (Gloo, NCCL) must not see EINTR
            signal.siginterrupt(s, False)
        return self


def emit(event: dict[str, Any], error: bool = False) -> None:
    """One JSON line on stdout (progress) or stderr (error), flushed at once.

    An error line also names the node (``host``) and the rank (from the launcher's
    environment), so the launcher's error can say where a rank died.
    """
    if error:
        rank = os.environ.get("HOROVOD_RANK", os.environ.get("RANK"))
        event = {**event, "host": socket.gethostname(), **({"rank": int(rank)} if rank is not None else {})}
    stream = sys.stderr if error else sys.stdout
    stream.write((ERROR_PREFIX if error else PREFIX) + json.dumps(event, default=float) + "\n")
    stream.flush()


def pin_cpus(local_rank: int, threads: int) -> list[int]:
    """Pin this process, every thread of it, to ``threads`` cores of its own (wrapping when oversubscribed).

    ``sched_setaffinity(0, …)`` pins the calling thread only (threads it starts later inherit
    it). The collective layer starts its threads before the rank knows its local rank:
    Horovod's background thread in ``hvd.init``, Gloo's loops in ``init_process_group``.
    Pinned by the caller alone, those ran on any core, including the core of the rank beside
    them, so each thread of the process is pinned here (:func:`hpcml.proc.pin_threads`).
    """
    cores = sorted(os.sched_getaffinity(0))
    mine = [cores[(local_rank * threads + i) % len(cores)] for i in range(threads)]
    proc.pin_threads(mine)
    return mine


class Timers(dict):
    """Accumulated seconds per phase: data, compute (fwd+bwd), allreduce (wait), optimizer."""

    def __init__(self) -> None:
        super().__init__(data=0.0, compute=0.0, allreduce=0.0, optimizer=0.0)


def dist_step(c: comm.Comm, net: torch.nn.Module, opt: Any, xb: torch.Tensor, yb: torch.Tensor,
              timers: Timers, stop_requested: bool = False) -> tuple[float, bool]:
    """One data-parallel step; returns (the loss averaged over ranks, whether any rank asked to stop).

    ``net``/``opt`` come from :meth:`hpcml.train.comm.Comm.wrap`. Horovod: the gradient
    allreduces start from backward hooks while backward still runs, and the loss allreduce
    is queued behind them (fused in the same cycle); ``synchronize()`` is timed separately:
    the communication the backward pass did not hide. DDP: backward itself waits for its
    bucket allreduces, so only the loss allreduce is left to wait for (see
    :data:`TIME_SPLIT_NOTES`). The loss allreduce carries this rank's stop flag beside the
    loss, so all ranks learn of a SIGTERM at the same step at no extra collective.
    """
    t0 = time.perf_counter()
    opt.zero_grad()  # Horovod's wrapper takes no set_to_none (torch's default is True)
    loss = torch.nn.functional.cross_entropy(net(xb), yb)
    loss.backward()
    carried = torch.stack([loss.detach().float(), torch.tensor(1.0 if stop_requested else 0.0)])
    h = c.allreduce_async(carried, "mean", "loss")
    t1 = time.perf_counter()
    c.synchronize(opt)
    reduced = c.wait(h)
    avg, stop_any = float(reduced[0]), float(reduced[1]) > 0
    t2 = time.perf_counter()
    if math.isfinite(avg):
        c.step(opt)
    t3 = time.perf_counter()
    timers["compute"] += t1 - t0
    timers["allreduce"] += t2 - t1
    timers["optimizer"] += t3 - t2
    return avg, stop_any


def _gather(c: comm.Comm, model: torch.nn.Module) -> list[dict[str, Any]]:
    """Every rank's RNG states and BN buffers (rank-local state a restart must restore)."""
    mine = {"rng": ck.rng_state(), "buffers": {k: v.clone() for k, v in model.named_buffers()}}
    return c.allgather_object(mine)


def _average_buffers(c: comm.Comm, model: torch.nn.Module) -> None:
    for name, buf in model.named_buffers():
        if buf.dtype.is_floating_point:
            buf.copy_(c.allreduce(buf, "mean", f"buf.{name}"))


def _eval_split(c: comm.Comm, model: torch.nn.Module, data: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Each rank evaluates rows rank::size; sums are allreduced."""
    x, y = data[0][c.rank()::c.size()], data[1][c.rank()::c.size()]
    ev = loop.evaluate(model, x, y)
    t = c.allreduce(torch.tensor([ev["loss_sum"], ev["correct"], ev["count"]], dtype=torch.float64), "sum", "eval")
    return {"loss": float(t[0] / max(t[2], 1)), "accuracy": float(t[1] / max(t[2], 1)), "count": int(t[2])}


def _load_rank_data(c: comm.Comm, dataset_dir: Path, elastic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Non-elastic: shard == rank. Elastic: shards s with s % size == rank (re-sharding)."""
    n = shards.check_world_size(dataset_dir, c.size(), elastic=elastic)
    mine = [c.rank()] if not elastic else list(range(c.rank(), n, c.size()))
    parts = [shards.read_split(dataset_dir, "train", shard=s) for s in mine]
    return np.concatenate([p[0] for p in parts]).astype(np.float32), np.concatenate([p[1] for p in parts]).astype(np.int64)


class Trainer:
    """Holds one rank's run: model, optimiser, data, position, history."""

    def __init__(self, spec: TrainSpec, c: comm.Comm, stop: StopRequest | None = None):
        self.spec, self.comm = spec, c
        self.stop = stop or StopRequest()
        self.ckpt_writes: list[dict[str, float]] = []
        self.out = spec.resolved_out_dir()
        self.ckpt_dir = self.out / "checkpoints"
        self.dataset_dir = spec.resolved_dataset_dir()
        self.schedule = spec.extra.get("lr_schedule", "cosine")
        loop.set_seed(spec.seed)
        self.mcfg = model_config_from(spec.to_dict())
        self.model = build_from_config(self.mcfg)
        base = loop.make_optimizer(self.model, spec.optimizer, spec.lr, spec.weight_decay, spec.momentum)
        # net: what forward/backward run through (DDP's wrapper); self.model stays the bare
        # module (checkpoints, evaluation, the artifact). Both start as rank 0's.
        self.net, self.opt = c.wrap(self.model, base, bucket_mb=spec.bucket_mb, fp16=spec.fp16_allreduce)
        self.step_losses: list[float] = []
        self.epoch = self.batch = self.step = 0
        self.history: list[dict[str, Any]] = []
        self.epoch_loss = 0.0
        self.epoch_batches = 0
        self.timers = Timers()
        self.samples = 0
        self.train_s = 0.0
        self.last_ckpt: str | None = None
        self.resumed_from: int | None = None
        self.exporter: Exporter | None = None
        self.ab: ExporterAB | None = None
        self.load_data()

    # -- setup ------------------------------------------------------------------------
    def load_data(self) -> None:
        c = self.comm
        self.x, self.y = _load_rank_data(c, self.dataset_dir, self.spec.elastic)
        n = len(loop.batch_slices(len(self.x), self.spec.batch_size))
        self.steps_per_epoch = int(c.allreduce(torch.tensor(n), "min", "nbatches"))
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size={self.spec.batch_size} leaves no batch on some rank's shard")

    def resume(self) -> None:
        """Restore the latest checkpoint (rank 0 reads it, everyone gets it by broadcast: every
        rank loads the same parameters and optimiser state, so no second broadcast is needed)."""
        c = self.comm
        if c.rank() == 0 and ckpt_bucket.configured():  # a newer checkpoint in the bucket is fetched first
            emit({"event": "resume_source", "source": ckpt_bucket.pull_from_env(self.ckpt_dir)})
        state = ck.resume_state(self.ckpt_dir) if c.rank() == 0 else None
        state = c.broadcast_object(state, root=0, name="resume")
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        for k in ("epoch", "batch", "step", "history", "epoch_loss", "epoch_batches"):
            setattr(self, k, state[k])
        self.step_losses = list(state.get("step_losses", []))
        per_rank = state.get("per_rank") or []
        if len(per_rank) == c.size():  # BN running stats stay rank-local: each rank restores its own
            ck.set_rng_state(per_rank[c.rank()]["rng"])
            for name, buf in self.model.named_buffers():
                buf.copy_(per_rank[c.rank()]["buffers"][name])
        self.resumed_from = self.step
        self.last_ckpt = state.get("path")

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Rank 0 writes the checkpoint (every rank takes part: the rank-local state is gathered).

        The write (serialise, write, fsync, rename, pointer) is timed; its bytes and seconds
        go into the event and the run's ``checkpoint_writes`` (the measured write rate).
        """
        per_rank = _gather(self.comm, self.model)
        if self.comm.rank() == 0:
            t0 = time.perf_counter()
            path = ck.save_checkpoint(self.ckpt_dir, {
                "step": self.step, "epoch": self.epoch, "batch": self.batch, "history": self.history,
                "epoch_loss": self.epoch_loss, "epoch_batches": self.epoch_batches,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "per_rank": per_rank, "world_size": self.comm.size(), "spec": self.spec.to_dict(),
                "step_losses": self.step_losses})
            write_s = time.perf_counter() - t0
            nbytes = path.stat().st_size
            self.ckpt_writes.append({"bytes": nbytes, "seconds": write_s})
            self.last_ckpt = str(path)
            emit({"event": "checkpoint", "step": self.step, "path": str(path), "bytes": nbytes, "write_s": write_s})
            pushed = ckpt_bucket.push_from_env(path)  # to checkpoints/<run>/ when $HPCML_CKPT_S3 is set
            if pushed:
                emit({"event": "checkpoint_bucket", "step": self.step, **pushed})

    def preempt(self, checkpointed: bool) -> None:
        """Every rank saw a stop request at this step: checkpoint (unless this step just
        did), wait until rank 0 has written it, then raise :class:`Preempted`."""
        if not checkpointed:
            self.checkpoint()
        self.comm.barrier()  # no rank exits (and gets the job torn down) before the file is on disk
        signum = self.stop.signum or signal.SIGTERM
        if self.comm.rank() == 0:
            emit({"event": "preempted", "signal": signal.Signals(signum).name, "step": self.step,
                  "checkpoint": self.last_ckpt})
        raise Preempted(self.step, self.last_ckpt, signum)

    # -- loop -------------------------------------------------------------------------
    def run_epoch(self, commit: Any = None) -> bool:
        """Train from the current position to the end of the epoch; False when max_steps hit."""
        spec, c = self.spec, self.comm
        self.model.train()
        order = loop.epoch_order(len(self.x), spec.seed, self.epoch, c.rank())
        slices = loop.batch_slices(len(self.x), spec.batch_size)[: self.steps_per_epoch]
        while self.batch < self.steps_per_epoch:
            if spec.max_steps and self.step >= spec.max_steps:
                return False
            if self.ab:
                self.ab.before_step(self.step)
            t0 = time.perf_counter()
            idx = order[slices[self.batch]]
            xb, yb = torch.from_numpy(self.x[idx]), torch.from_numpy(self.y[idx])
            self.timers["data"] += time.perf_counter() - t0
            loop.set_lr(self.opt, loop.lr_at(self.epoch + self.batch / self.steps_per_epoch, spec.lr,
                                             c.size(), spec.warmup_epochs, spec.epochs, self.schedule))
            ar0 = self.timers["allreduce"]
            loss, stop = dist_step(c, self.net, self.opt, xb, yb, self.timers,
                                   stop_requested=self.stop.signum is not None)
            if not math.isfinite(loss):
                raise loop.NaNLossError(self.step + 1, loss, self.last_ckpt)
            dt = time.perf_counter() - t0
            self.train_s += dt
            self.samples += len(yb) * c.size()
            if len(self.step_losses) < spec.record_losses:
                self.step_losses.append(loss)
            self.step += 1
            self.batch += 1
            self.epoch_loss += loss
            self.epoch_batches += 1
            if self.ab:
                self.ab.record(dt)
            if self.exporter and self.exporter.enabled:
                self.exporter.observe(self.step, dt, self.timers["allreduce"] - ar0, len(yb), loss)
            periodic = bool(spec.checkpoint_every and self.step % spec.checkpoint_every == 0)
            if periodic:
                self.checkpoint()
                if commit is not None:
                    commit()
            if stop:
                self.preempt(checkpointed=periodic)
        return True

    def end_epoch(self) -> None:
        _average_buffers(self.comm, self.model)
        val = self._val()
        rec = {"epoch": self.epoch, "step": self.step, "loss": self.epoch_loss / max(self.epoch_batches, 1),
               "val_accuracy": val["accuracy"], "val_loss": val["loss"], "world_size": self.comm.size(),
               "lr": self.opt.param_groups[0]["lr"],
               "samples_per_s": self.samples / max(self.train_s, 1e-9)}
        self.history.append(rec)
        if self.comm.rank() == 0:
            emit({"event": "epoch", **rec})
        self.epoch, self.batch, self.epoch_loss, self.epoch_batches = self.epoch + 1, 0, 0.0, 0

    def _val(self) -> dict[str, float]:
        if not hasattr(self, "_valdata"):
            self._valdata = shards.read_split(self.dataset_dir, "val")
        return _eval_split(self.comm, self.model, self._valdata)

    def finish(self) -> dict[str, Any]:
        c = self.comm
        test = _eval_split(c, self.model, shards.read_split(self.dataset_dir, "test"))
        t = c.allreduce(torch.tensor([self.timers[k] for k in ("data", "compute", "allreduce", "optimizer")]
                                     + [self.train_s], dtype=torch.float64), "mean", "timers")
        split = dict(zip(("data_s", "compute_s", "allreduce_s", "optimizer_s", "train_s"), map(float, t)))
        hosts = c.allgather_object(socket.gethostname(), name="hosts")  # each rank's node, in rank order
        last = self.history[-1] if self.history else {}
        metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_count": test["count"],
                   "val_accuracy": last.get("val_accuracy"), "train_loss": last.get("loss"),
                   "epochs_run": len(self.history), "steps": self.step, "world_size": c.size(),
                   "train_samples_per_s": self.samples / max(split["train_s"], 1e-9),
                   "time_split": split, "time_split_note": TIME_SPLIT_NOTES[c.name],
                   "step_time_s": split["train_s"] / max(self.step - (self.resumed_from or 0), 1),
                   "backend": c.name, "bucket_mb": self.spec.bucket_mb, "step_losses": self.step_losses,
                   "hosts": hosts,
                   "resumed_from_step": self.resumed_from,
                   "history": self.history, "model_config": self.mcfg,
                   "checkpoint_writes": checkpoint_write_summary(self.ckpt_writes)}
        if self.ab:
            self.exporter.set_enabled(True)
            try:
                metrics["exporter_ab"] = self.ab.summary()
            except ValueError as exc:  # too few steps for a block of each: say so, keep the run
                metrics["exporter_ab"] = {"error": str(exc), "blocks": self.ab.blocks}
        if c.rank() == 0:
            ck.save_model(self.model, self.mcfg, self.out / "model.pt",
                          {k: metrics[k] for k in ("test_accuracy", "test_loss", "val_accuracy")},
                          shards.load_normalization(self.dataset_dir))
            from hpcml.paths import atomic_write_text

            atomic_write_text(self.out / "metrics.json", json.dumps(metrics, indent=2, default=float))
            emit({"event": "done", **{k: v for k, v in metrics.items() if k not in ("history", "step_losses")}})
        return metrics


def checkpoint_write_summary(writes: list[dict[str, float]]) -> dict[str, Any] | None:
    """Rank 0's checkpoint writes of this process: count, bytes, seconds and the rate
    (total bytes / total seconds, in bytes/s); None when it wrote none."""
    if not writes:
        return None
    nbytes = sum(w["bytes"] for w in writes)
    secs = sum(w["seconds"] for w in writes)
    return {"count": len(writes), "bytes_total": nbytes, "seconds_total": secs,
            "mean_bytes": nbytes / len(writes), "bytes_per_s": nbytes / secs if secs > 0 else None,
            "writes": writes}


def _train_fixed(t: Trainer) -> dict[str, Any]:
    """The fixed-size loop; also elastic DDP's, where torchrun restarts the whole group."""
    t.resume()
    t.batch = min(t.batch, t.steps_per_epoch)  # a restarted elastic group may have fewer batches per rank
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if t.spec.elastic and restarts > 0 and t.comm.rank() == 0:
        emit({"event": "reset", "world_size": t.comm.size(), "step": t.step, "restart": restarts,
              "backend": t.comm.name})
    while t.epoch < t.spec.epochs:
        if not t.run_epoch():
            break
        t.end_epoch()
    if t.spec.checkpoint_every:
        t.checkpoint()
    return t.finish()


def _train_elastic(t: Trainer) -> dict[str, Any]:
    """Horovod elastic: survivors continue in memory (``hvd.elastic.run``), re-sharded on reset."""
    hvd = t.comm.hvd  # type: ignore[attr-defined]
    t.resume()
    state = hvd.elastic.TorchState(model=t.model, optimizer=t.opt, epoch=t.epoch, batch=t.batch,
                                   step=t.step, history=t.history, epoch_loss=t.epoch_loss,
                                   epoch_batches=t.epoch_batches)

    def pull() -> None:  # TorchState -> trainer
        for k in ("epoch", "batch", "step", "history", "epoch_loss", "epoch_batches"):
            setattr(t, k, getattr(state, k))

    def push() -> None:  # trainer -> TorchState, then snapshot in memory
        for k in ("epoch", "batch", "step", "history", "epoch_loss", "epoch_batches"):
            setattr(state, k, getattr(t, k))
        state.commit()

    def on_reset() -> None:
        t.load_data()  # re-shard for the new (rank, size)
        if hvd.rank() == 0:
            emit({"event": "reset", "world_size": hvd.size(), "step": state.step})

    state.register_reset_callbacks([on_reset])

    @hvd.elastic.run
    def train(state: Any) -> None:
        pull()
        t.batch = min(t.batch, t.steps_per_epoch)
        while t.epoch < t.spec.epochs:
            if not t.run_epoch(commit=push):
                break
            t.end_epoch()
            push()

    train(state)
    return t.finish()


def run(spec: TrainSpec) -> dict[str, Any]:
    """Run this rank of the job described by ``spec`` (inside horovodrun or torchrun)."""
    stop = StopRequest().install()  # before anything slow: a SIGTERM from here on is caught
    if spec.keep_heap:
        heap.keep()  # before the model's first allocation (see hpcml.train.heap)
    c = comm.init(spec.backend, timeout_s=float(spec.extra.get("comm_timeout_s", comm.DEFAULT_TIMEOUT_S)),
                  bucket_mb=spec.bucket_mb)
    torch.set_num_threads(spec.threads_per_worker)
    cores = pin_cpus(c.local_rank(), spec.threads_per_worker) if spec.pin_cpus else None
    out = spec.resolved_out_dir()
    (out / "pids").mkdir(parents=True, exist_ok=True)
    (out / "pids" / f"rank-{c.rank()}.pid").write_text(str(os.getpid()))
    t = Trainer(spec, c, stop)
    if c.rank() == 0:
        emit({"event": "start", "world_size": c.size(), "threads": spec.threads_per_worker, "backend": c.name,
              "cores_rank0": cores, "steps_per_epoch": t.steps_per_epoch, "elastic": spec.elastic})
    if spec.metrics_port:
        t.exporter = Exporter(spec.metrics_port + c.local_rank(), c.rank())  # one port per slot on a node
        if spec.extra.get("exporter_ab_block"):
            t.ab = ExporterAB(t.exporter, int(spec.extra["exporter_ab_block"]))
    try:
        horovod_elastic = spec.elastic and c.name == "horovod"  # elastic DDP: torchrun restarts the group
        metrics = _train_elastic(t) if horovod_elastic else _train_fixed(t)
        c.shutdown()
        return metrics
    finally:
        if t.exporter:
            # A short job can end between two scrapes; keep the final values up for one more
            # (Prometheus' answer for batch jobs is a Pushgateway; a linger is enough here).
            linger = float(spec.extra.get("exporter_linger_s", 0))
            if linger > 0:
                time.sleep(linger)
            t.exporter.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="TrainSpec JSON file")
    args = ap.parse_args(argv)
    try:
        spec = TrainSpec.from_json(args.spec)
        run(spec)
    except Preempted as e:
        print(f"hpcml worker: {e}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except loop.NaNLossError as e:
        emit({"error": "nan_loss", "step": e.step, "checkpoint": e.checkpoint, "message": str(e)}, error=True)
        return 3
    except (ValueError, FileNotFoundError, ck.CheckpointError) as e:
        emit({"error": type(e).__name__, "message": str(e)}, error=True)
        return 2
    return 0


if __name__ == "__main__":
    comm.exit_process(main())  # os._exit under torchrun: see its docstring
