"""The collective layer both training backends share: Horovod (Gloo) or PyTorch DDP (Gloo).

The training worker (:mod:`hpcml.train.worker`) runs one loop; it talks to its peers only
through a :class:`Comm`, so the two backends differ only here:

=====================  ======================================  =========================================
                       ``horovod``                             ``ddp``
=====================  ======================================  =========================================
started by             ``horovodrun --gloo``                   ``torchrun`` (env: RANK, WORLD_SIZE, ...)
gradient averaging     ``hvd.DistributedOptimizer`` (Tensor    ``DistributedDataParallel`` (gradient
                       Fusion, a background cycle)             buckets, allreduce inside ``backward``)
bucket / fusion size   ``HOROVOD_FUSION_THRESHOLD`` (set by    ``bucket_cap_mb`` (given to :meth:`wrap`)
                       :func:`init` before ``hvd.init``)
``synchronize(opt)``   waits for the gradient allreduces       no-op: ``backward`` already waited
initial state          broadcast params + optimizer state      DDP broadcasts params; the optimizer
                                                               state is broadcast here
=====================  ======================================  =========================================

``bucket_mb`` (MiB) reaches Horovod through :func:`init`'s ``bucket_mb`` argument, because
Horovod reads its fusion threshold once, in ``hvd.init``; :meth:`Comm.wrap` takes it again
for DDP (and checks that a Horovod comm was initialised with the same value). ``None`` keeps
each tool's own default (Horovod 128 MiB: ``SetTensorFusionThresholdBytes(128 * 1024 * 1024)`` in
Horovod 0.28.1's ``operations.cc`` and ``horovodrun --help``; DDP 25 MiB).

Horovod 0.28.1's ``synchronize`` (``WaitAndClear`` in ``torch/mpi_ops_v2.cc``) waits in a loop of
``std::this_thread::yield()``: the rank's main thread stays runnable while Horovod's background
thread and Gloo's loops do the allreduce, on the same core when a rank has one (perf shows
``sched_yield`` in the main thread). Up to 0.19 it slept 1 ms between polls; Horovod PR #2101
(2020) replaced the sleep with the yield, which master still has. ``poll_ms`` (None by default:
Horovod's own wait) makes :meth:`HorovodComm.wait` and :meth:`HorovodComm.synchronize` sleep that
long between ``hvd.poll`` calls until every handle is done, so Horovod's wait then returns at
once: ``python -m hpcml.train.sweep --hvd-poll-ms 1`` measures it against the spin. On these nodes
it did not pay: a yield hands the core to the runnable thread it waits for, so the spin costs
little.

Every rendezvous and collective times out after ``timeout_s`` (60 s by default): Horovod's
``HOROVOD_GLOO_TIMEOUT_SECONDS``, ``torch.distributed``'s process-group ``timeout``. A DDP
job's Gloo interface is ``GLOO_SOCKET_IFNAME`` when set (torch reads it by name).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
import warnings
from typing import Any, Iterator

import torch

from hpcml.train.spec import BACKENDS  # TrainSpec.backend's choices, named once
#: Reduction ops of :meth:`Comm.allreduce`.
OPS = ("mean", "sum", "min")
#: Seconds any rendezvous or collective waits before it fails.
DEFAULT_TIMEOUT_S = 60.0
#: Each tool's own default bucket size (MiB): Horovod's fusion threshold, DDP's ``bucket_cap_mb``.
DEFAULT_BUCKET_MB = {"horovod": 128.0, "ddp": 25.0}


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"allreduce op must be one of {OPS}, got {op!r}")


def _optional_positive(name: str, value: float | None, none_means: str, unit: str) -> float | None:
    """``value`` if it is None or a positive number, else a ValueError naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"{name} must be None ({none_means}) or a positive number of {unit}, got {value!r}")
    return value


def check_poll_ms(poll_ms: float | None) -> float | None:
    """``poll_ms`` if it is None or a positive number, else a ValueError naming it."""
    return _optional_positive("poll_ms", poll_ms, "Horovod's own spinning wait", "milliseconds")


def check_bucket_mb(bucket_mb: float | None) -> float | None:
    """``bucket_mb`` if it is None or a positive number, else a ValueError naming it."""
    return _optional_positive("bucket_mb", bucket_mb, "each tool's default", "MiB")


class Comm:
    """One rank's view of its process group (base class: see :class:`HorovodComm`, :class:`DDPComm`)."""

    name: str = ""

    def rank(self) -> int:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    def local_rank(self) -> int:
        raise NotImplementedError

    def allreduce(self, t: torch.Tensor, op: str = "mean", name: str | None = None) -> torch.Tensor:
        """A new tensor: ``t`` reduced over all ranks (``op`` in :data:`OPS`)."""
        return self.wait(self.allreduce_async(t, op, name))

    def allreduce_async(self, t: torch.Tensor, op: str = "mean", name: str | None = None) -> Any:
        """Start an allreduce of ``t``; :meth:`wait` on the handle returns the result."""
        raise NotImplementedError

    def wait(self, handle: Any) -> torch.Tensor:
        raise NotImplementedError

    def broadcast_object(self, obj: Any, root: int = 0, name: str | None = None) -> Any:
        """``root``'s (picklable) ``obj`` on every rank (``name``: Horovod's collective name)."""
        raise NotImplementedError

    def allgather_object(self, obj: Any, name: str | None = None) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, bucket_mb: float | None = None,
             fp16: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """(model to run forward/backward through, optimizer to step), both in sync with rank 0.

        The returned model may be a wrapper: save and evaluate the original one (its
        ``state_dict`` keys stay unprefixed).
        """
        raise NotImplementedError

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        """Wait for this step's gradient allreduces (those backward did not wait for)."""

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` after :meth:`synchronize` (without synchronising twice)."""
        optimizer.step()

    def shutdown(self) -> None:
        raise NotImplementedError


class HorovodComm(Comm):
    """Horovod over Gloo (started by ``horovodrun --gloo``)."""

    name = "horovod"

    def __init__(self, hvd: Any, bucket_mb: float | None, poll_ms: float | None = None):
        self.hvd, self.bucket_mb, self.poll_ms = hvd, bucket_mb, check_poll_ms(poll_ms)
        self._ops = {"mean": hvd.Average, "sum": hvd.Sum, "min": hvd.Min}

    def _sleep_until_done(self, handles: list[Any]) -> None:
        """Sleep ``poll_ms`` between polls until every handle is done (no-op when ``poll_ms`` is None)."""
        if self.poll_ms is None:
            return
        pending = [h for h in handles if h is not None]
        while pending:
            pending = [h for h in pending if not self.hvd.poll(h)]
            if pending:
                time.sleep(self.poll_ms / 1000)

    def rank(self) -> int:
        return self.hvd.rank()

    def size(self) -> int:
        return self.hvd.size()

    def local_rank(self) -> int:
        return self.hvd.local_rank()

    def allreduce_async(self, t: torch.Tensor, op: str = "mean", name: str | None = None) -> Any:
        _check_op(op)
        return self.hvd.allreduce_async(t, name=name, op=self._ops[op])  # None: Horovod names it

    def wait(self, handle: Any) -> torch.Tensor:
        self._sleep_until_done([handle])
        return self.hvd.synchronize(handle)

    def broadcast_object(self, obj: Any, root: int = 0, name: str | None = None) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=root, name=name)

    def allgather_object(self, obj: Any, name: str | None = None) -> list[Any]:
        return self.hvd.allgather_object(obj, name=name)

    def barrier(self) -> None:
        self.hvd.barrier()

    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, bucket_mb: float | None = None,
             fp16: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        if check_bucket_mb(bucket_mb) != self.bucket_mb:
            raise ValueError(f"wrap(bucket_mb={bucket_mb}) differs from init(bucket_mb={self.bucket_mb}): Horovod "
                             "reads its fusion threshold once, in hvd.init; pass the same value to both")
        hvd = self.hvd
        comp = hvd.Compression.fp16 if fp16 else hvd.Compression.none
        opt = optimizer if hasattr(optimizer, "skip_synchronize") else hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), compression=comp, op=hvd.Average)
        # Parameters only: BN running stats stay rank-local (each rank restored its own on resume).
        hvd.broadcast_parameters(dict(model.named_parameters()), root_rank=0)
        hvd.broadcast_optimizer_state(opt, root_rank=0)
        return model, opt

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        # DistributedOptimizer keeps {param: (handle, ctx)} of the allreduces backward started;
        # its synchronize() then starts any a hook missed and waits (spinning) on all of them.
        started = getattr(optimizer, "_handles", {})
        self._sleep_until_done([hc[0] for hc in started.values()])
        optimizer.synchronize()  # type: ignore[attr-defined]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        with optimizer.skip_synchronize():  # type: ignore[attr-defined]
            optimizer.step()

    def shutdown(self) -> None:
        self.hvd.shutdown()


class DDPComm(Comm):
    """``torch.distributed`` over Gloo (started by ``torchrun``), gradients by DDP."""

    name = "ddp"

    def __init__(self, dist: Any):
        self.dist = dist
        self._ops = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}

    def rank(self) -> int:
        return self.dist.get_rank()

    def size(self) -> int:
        return self.dist.get_world_size()

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    def allreduce_async(self, t: torch.Tensor, op: str = "mean", name: str | None = None) -> Any:
        _check_op(op)  # Gloo has no AVG: mean = SUM, divided in wait()
        buf = t.detach().clone()
        return self.dist.all_reduce(buf, op=self._ops[op], async_op=True), buf, op

    def wait(self, handle: Any) -> torch.Tensor:
        work, buf, op = handle
        work.wait()
        if op == "mean":
            return buf / self.size() if buf.is_floating_point() else buf // self.size()
        return buf

    def broadcast_object(self, obj: Any, root: int = 0, name: str | None = None) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=root)
        return box[0]

    def allgather_object(self, obj: Any, name: str | None = None) -> list[Any]:
        out: list[Any] = [None] * self.size()
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self.dist.barrier()

    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, bucket_mb: float | None = None,
             fp16: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        from torch.nn.parallel import DistributedDataParallel

        cap = check_bucket_mb(bucket_mb) or DEFAULT_BUCKET_MB["ddp"]
        # broadcast_buffers=False: BN running stats stay rank-local, as under Horovod (the
        # worker averages them at epoch ends); DDP broadcasts rank 0's parameters here.
        with warnings.catch_warnings():  # torch 2.13 deprecates the name, and says to keep it for this
            warnings.simplefilter("ignore", FutureWarning)
            net = DistributedDataParallel(model, bucket_cap_mb=cap, broadcast_buffers=False)
        if fp16:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            net.register_comm_hook(None, default_hooks.fp16_compress_hook)
        state = self.broadcast_object(optimizer.state_dict() if self.rank() == 0 else None)
        if self.rank() != 0:
            optimizer.load_state_dict(state)
        return net, optimizer

    def shutdown(self) -> None:
        if self.dist.is_initialized():
            # every rank first: one that tears its Gloo pairs down while a peer still uses them
            # can abort at exit ("terminate called without an active exception")
            self.dist.barrier()
            self.dist.destroy_process_group()


def init(backend: str, timeout_s: float = DEFAULT_TIMEOUT_S, bucket_mb: float | None = None,
         poll_ms: float | None = None) -> Comm:
    """Join this process's group and return its :class:`Comm`.

    Args:
        backend: one of :data:`BACKENDS`.
        timeout_s: rendezvous and collective timeout (seconds).
        bucket_mb: Horovod's fusion threshold in MiB, set as ``HOROVOD_FUSION_THRESHOLD``
            before ``hvd.init`` (None: Horovod's default, or what the environment says);
            DDP takes it in :meth:`Comm.wrap` and ignores it here.
        poll_ms: Horovod's waits sleep this many milliseconds between polls (None: Horovod's
            own spinning wait); DDP ignores it (its waits block on a condition variable).

    Raises:
        ValueError: an unknown backend (naming the choices), a bad ``bucket_mb``, or DDP
            started without torchrun's environment.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_bucket_mb(bucket_mb)
    check_poll_ms(poll_ms)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if backend == "horovod":
        import horovod.torch as hvd

        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(int(max(timeout_s, 1))))
        if bucket_mb is not None:
            os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(bucket_mb * 1024 * 1024))
        hvd.init()
        return HorovodComm(hvd, bucket_mb, poll_ms)
    import torch.distributed as dist

    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"backend 'ddp' needs torchrun's environment; missing {missing} (start the worker "
                         "with torchrun, or set them)")
    if not dist.is_initialized():
        td = datetime.timedelta(seconds=timeout_s)
        store, rank, size = next(dist.rendezvous("env://", timeout=td))
        # Keys of this restart round only: after torchrun restarts the group, a rank could
        # otherwise read a killed peer's Gloo address from the previous round (connection refused).
        store = dist.PrefixStore(f"hpcml/round-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=size, timeout=td)
    return DDPComm(dist)


#: Set once :func:`ddp_beside` has joined a Gloo process group inside a Horovod job (see :func:`exit_process`).
_beside = False


def _iface_address(iface: str) -> str:
    """The IPv4 address of network interface ``iface`` on this node."""
    import socket

    import psutil

    addrs = [a.address for a in psutil.net_if_addrs().get(iface, []) if a.family == socket.AF_INET]
    if not addrs:
        raise ValueError(f"interface {iface!r} (HOROVOD_GLOO_IFACE) has no IPv4 address on this node; "
                         f"interfaces: {sorted(psutil.net_if_addrs())}")
    return addrs[0]


def ddp_beside(hvd_comm: Comm, timeout_s: float = DEFAULT_TIMEOUT_S) -> DDPComm:
    """A ``torch.distributed`` Gloo group of the same ranks, joined inside a ``horovodrun`` job.

    For :func:`hpcml.train.bench_worker.versus`, which interleaves Horovod's step and DDP's in
    the same processes. Rank 0 opens a ``TCPStore`` on the address of the interface horovodrun
    chose (``HOROVOD_GLOO_IFACE``; loopback without one) and broadcasts it over Horovod; the
    group's Gloo pairs use the same interface (``GLOO_SOCKET_IFNAME``).

    Raises:
        ValueError: ``hvd_comm`` is not a Horovod comm, or the interface has no IPv4 address.
    """
    import torch.distributed as dist

    if hvd_comm.name != "horovod":
        raise ValueError(f"ddp_beside joins a DDP group inside a Horovod job, got a {hvd_comm.name!r} comm")
    iface = os.environ.get("HOROVOD_GLOO_IFACE", "lo")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)
    td = datetime.timedelta(seconds=timeout_s)
    rank, size = hvd_comm.rank(), hvd_comm.size()
    if rank == 0:
        addr = _iface_address(iface)
        store = dist.TCPStore(addr, 0, size, is_master=True, timeout=td, wait_for_workers=False)
        hvd_comm.broadcast_object((addr, store.port), name="ddp_beside.store")
    else:
        addr, port = hvd_comm.broadcast_object(None, name="ddp_beside.store")
        store = dist.TCPStore(addr, port, size, is_master=False, timeout=td)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=size, timeout=td)
    global _beside
    _beside = True
    return DDPComm(dist)


@contextlib.contextmanager
def group(backend: str, timeout_s: float = DEFAULT_TIMEOUT_S, bucket_mb: float | None = None,
          poll_ms: float | None = None) -> Iterator[Comm]:
    """:func:`init` as a context manager that shuts the group down on exit."""
    c = init(backend, timeout_s, bucket_mb, poll_ms)
    try:
        yield c
    finally:
        c.shutdown()


def selftest(backend: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Exercise every collective of ``backend`` once in this process's group; returns what each gave.

    ``python -m hpcml.train.comm --backend B`` runs it (one process, or under ``horovodrun`` /
    ``torchrun``) and rank 0 prints the result as one JSON line: a smoke test of a group.
    """
    with group(backend, timeout_s) as c:
        r, n = c.rank(), c.size()
        x = torch.tensor([float(r + 1), 2.0 * (r + 1)])
        h = c.allreduce_async(x, "sum", "selftest.async")
        model = torch.nn.Linear(3, 2)
        torch.manual_seed(r)  # different per rank: wrap must make them equal
        for p in model.parameters():
            torch.nn.init.normal_(p)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        net, opt = c.wrap(model, opt)
        opt.zero_grad()
        net(torch.full((4, 3), float(r))).sum().backward()
        c.synchronize(opt)
        grads = [p.grad.clone() for p in model.parameters()]
        c.step(opt)
        out = {"backend": c.name, "rank": r, "size": n, "local_rank": c.local_rank(),
               "mean": c.allreduce(x, "mean", "selftest.mean").tolist(),
               "sum": c.allreduce(x, "sum", "selftest.sum").tolist(),
               "min": c.allreduce(x, "min", "selftest.min").tolist(),
               "async_sum": c.wait(h).tolist(),
               "broadcast": c.broadcast_object({"from": r}, root=n - 1),
               "allgather": c.allgather_object(r * 10),
               "weights": c.allgather_object([p.detach().sum().item() for p in model.parameters()]),
               "grad_bias": grads[1].tolist()}
        c.barrier()
    return out


def exit_process(code: int) -> None:
    """End this rank's process with ``code``: ``sys.exit``, except under torchrun or after
    :func:`ddp_beside`, where it is ``os._exit`` after flushing stdio and logging.

    A Gloo process group that has been destroyed can still abort the interpreter's teardown
    ("terminate called without an active exception", SIGABRT): its C++ threads are destructed
    while joinable. The barrier in :meth:`DDPComm.shutdown` made it rarer, not impossible (seen
    once in a dozen two-node runs after the rank had written everything). By then the rank's
    results are on disk and its peers are done, so nothing the teardown would do is needed.
    """
    import logging
    import sys

    if not (os.environ.get("TORCHELASTIC_RUN_ID") or _beside):
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Smoke-test a process group's collectives")
    ap.add_argument("--backend", choices=BACKENDS, required=True)
    ap.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    a = ap.parse_args()
    res = selftest(a.backend, a.timeout_s)
    if res["rank"] == 0:
        print("HPCML-COMM " + json.dumps(res), flush=True)
    exit_process(0)  # os._exit under torchrun: Gloo's teardown can abort a finished rank (see its docstring)
