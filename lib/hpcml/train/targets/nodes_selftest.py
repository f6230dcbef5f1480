"""A small data-parallel job for either backend: ``python -m hpcml.train.targets.nodes_selftest --backend ddp``.

Each rank fits a linear model to its own data; the backend averages the gradients (Horovod's
``DistributedOptimizer`` or DDP), so the ranks' weights stay equal. Rank 0 prints ``start``,
``step`` and ``done`` events (``HPCML {...}``) as the training worker does. Started across the
cluster's nodes with :func:`hpcml.train.targets.nodes.start`, it checks the launchers, the
rendezvous and Gloo on the nodes' interface without the training data, in seconds.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import time
from typing import Any

from hpcml.train.spec import BACKENDS


def selftest(backend: str, steps: int, step_sleep_s: float, every: int) -> dict[str, Any]:
    """A data-parallel linear regression: each rank its own data, gradients averaged by ``backend``.

    Rank 0 prints a ``start`` event, a ``step`` event every ``every`` steps and a ``done`` event with
    the world size and the final loss (the ranks must agree on the weights: the averaged gradients
    keep them in step).
    """
    import torch

    from hpcml.train.worker import emit

    torch.set_num_threads(1)
    if backend == "horovod":
        import horovod.torch as hvd

        hvd.init()
        rank, size = hvd.rank(), hvd.size()
    else:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
        rank, size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 1)
    gen = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(256, 16, generator=gen)
    y = x @ torch.arange(16, dtype=torch.float32).unsqueeze(1) / 16
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    if backend == "horovod":
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    else:
        model = torch.nn.parallel.DistributedDataParallel(model)
    if rank == 0:
        emit({"event": "start", "world_size": size, "backend": backend, "host": socket.gethostname()})
    loss = torch.tensor(0.0)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        time.sleep(step_sleep_s)
        if rank == 0 and step % every == 0:
            emit({"event": "step", "step": step, "loss": loss.item(), "world_size": size})
    w = (model.module if backend == "ddp" else model).weight.detach().clone()
    if backend == "horovod":
        spread = float((hvd.allreduce(w, op=hvd.Max) - hvd.allreduce(w, op=hvd.Min)).abs().max())
    else:
        hi, lo = w.clone(), w.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        spread = float((hi - lo).abs().max())
        dist.barrier()  # no rank tears the group down while another still uses it
        del model, opt  # DDP's reducer holds the group: free it first (else an abort at exit, now and then)
        dist.destroy_process_group()
    out = {"event": "done", "world_size": size, "loss": loss.item(), "weight_spread": spread, "steps": steps}
    if rank == 0:
        emit(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.train.targets.nodes_selftest",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=BACKENDS, default="horovod")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-sleep", type=float, default=0.0, help="seconds to sleep after each step")
    ap.add_argument("--every", type=int, default=5, help="a step event every this many steps")
    a = ap.parse_args(argv)
    selftest(a.backend, a.steps, a.step_sleep, a.every)
    return 0


if __name__ == "__main__":
    from hpcml.train.comm import exit_process

    exit_process(main())  # os._exit under torchrun: Gloo's teardown can abort a finished rank
