"""Horovod vs DDP across the cluster's nodes, and the link sweep: the runs behind issue 25's numbers.

* :func:`bakeoff`: the synthetic benchmark on both backends across the nodes, at two
  settings: ``matched`` (the same bucket size for Horovod's fusion threshold and DDP's
  ``bucket_cap_mb``, :data:`MATCHED_MB`, and Horovod at the cycle time given, None for its
  1 ms default; notebook 02 passes the cycle it tunes and says so) and ``defaults`` (each tool
  as it ships: Horovod's 128 MiB fusion threshold and 1 ms cycle, DDP's 25 MiB buckets).
* :func:`link_sweep`: one backend's scaling efficiency (N nodes x 1 rank vs 1) at each link
  profile of the cluster (:meth:`hpcml.cluster.local.LocalCluster.shape`), restored to
  ``unshaped`` afterwards even when a run fails.
* ``--paired-bakeoff``: the matched setting measured in one ``horovodrun`` job whose ranks
  interleave Horovod's step and DDP's (:func:`hpcml.train.bench_worker.versus`), so the host's
  drift between separate runs pairs out (``--bakeoff-runs N`` repeats the job and pools the
  jobs, with an interval over them); ``--paired-ceiling`` does the same for DDP's efficiency
  over the no-communication ceiling.

The numbers are made in :mod:`hpcml.train.sweep_summary` (pure). ``python -m hpcml.train.sweep``
runs both on a cluster of its own name (up if needed, down after if it brought it up) and
writes one JSON: the full profile's command (README, "Checking the performance targets").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml import paths
from hpcml.cluster import fabric
from hpcml.train import bench, comm

if TYPE_CHECKING:
    from hpcml.cluster.local import LocalCluster

SETTINGS = ("matched", "defaults")
#: The matched setting's bucket size (MiB): DDP's own default, given to Horovod's fusion threshold too.
MATCHED_MB = 25.0
#: Every link profile of the full sweep; the last is slow enough that communication dominates
#: (ResNet-50's ~102 MB of gradients per step take ~5 s at 150 Mbit/s, more than its compute).
PROFILES_FULL = ("unshaped", "10gbit", "1gbit", "150mbit")
#: CI's sweep: the two ends of the curve.
PROFILES_CI = ("unshaped", "150mbit")


def _whole_count(name: str, value: Any, what: str) -> int:
    """``value`` if it is a whole number >= 1, else a ValueError naming ``name`` and ``what`` it counts."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1 ({what}), got {value!r}")
    return value


def _need_nodes(cluster: LocalCluster | None, who: str, why: str = "") -> None:
    """A ValueError naming ``who`` (and ``why``) unless ``cluster`` is the running multi-node cluster."""
    if not bench.on_nodes(cluster):
        raise ValueError(f"{who} needs the multi-node cluster{f' ({why})' if why else ''}; got "
                         + ("none" if cluster is None else f"the {cluster.mode}-node fallback"))


def setting_options(setting: str, matched_mb: float = MATCHED_MB) -> dict[str, Any]:
    """The benchmark options of a setting: ``{"bucket_mb": ...}`` (None: each tool's default)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    return {"bucket_mb": matched_mb if setting == "matched" else None}


def bakeoff(cluster: LocalCluster | None, settings: tuple[str, ...] = ("matched",), world_size: int = 2,
            matched_mb: float = MATCHED_MB, cycle_time_ms: float | None = None, timeout_s: float = 600,
            pairs: int = 1, hvd_poll_ms: float | None = None,
            **cfg: Any) -> dict[str, dict[str, Any]]:
    """Horovod and DDP, ``pairs`` runs each per setting, across the nodes (or here without a cluster).

    The order alternates, ABBA (Horovod first in the first pair of the first setting, DDP first
    in the next pair, ...), so slow drift on a shared machine does not favour one backend.
    ``hvd_poll_ms`` is the matched setting's Horovod wait: milliseconds slept between polls
    (:func:`hpcml.train.comm.init`'s ``poll_ms``), None for Horovod's own spinning wait, which
    ``defaults`` always runs.

    Returns:
        setting -> {"horovod": run, "ddp": run} of the first pair (each
        :func:`hpcml.train.bench.run_bench`'s JSON), plus ``"pairs"``: every pair in order when
        ``pairs`` > 1 (:func:`hpcml.train.sweep_summary.pooled_ratio` pools them).
    """
    _whole_count("pairs", pairs, "Horovod/DDP runs per setting")
    out: dict[str, dict[str, Any]] = {}
    k = 0
    for setting in settings:
        opts = setting_options(setting, matched_mb)
        # "defaults" is each tool as it ships: Horovod's own cycle and spinning wait, not only its fusion threshold
        extra = ({"cycle_time_ms": cycle_time_ms, "hvd_poll_ms": hvd_poll_ms} if setting == "matched"
                 else {"hvd_poll_ms": None})
        runs = []
        for _ in range(pairs):
            order = ("horovod", "ddp") if k % 2 == 0 else ("ddp", "horovod")
            k += 1
            pair = {}
            for backend in order:
                pair[backend] = bench.run_bench(world_size, ["synthetic"], timeout_s, tag=f"bakeoff-{setting}",
                                                backend=backend, cluster=cluster, **opts,
                                                **(extra if backend == "horovod" else {}), **cfg)
            runs.append(pair)
        out[setting] = {"horovod": runs[0]["horovod"], "ddp": runs[0]["ddp"], **({"pairs": runs} if pairs > 1 else {})}
    return out


def link_rates(cluster: LocalCluster, profiles: tuple[str, ...] | list[str], seconds: float = 1.0) -> dict[str, float]:
    """Link rate (bits/s) of each profile: the tc rate when shaped; iperf3's measured rate unshaped
    (one TCP stream between the first two nodes, on the cluster's current shaping: call it unshaped)."""
    rates = {}
    for prof in profiles:
        rate = fabric.parse_rate(prof)
        if rate is None:
            names = [n.name for n in cluster.plan.nodes]
            rate = cluster.iperf(names[0], names[1], seconds=seconds)
        rates[prof] = float(rate)
    return rates


def link_sweep(cluster: LocalCluster, profiles: tuple[str, ...] | list[str] = PROFILES_CI, backend: str = "ddp",
               world_size: int = 2, one: dict[str, Any] | None = None, reuse: dict[str, dict[str, Any]] | None = None,
               timeout_s: float = 600, **cfg: Any) -> dict[str, Any]:
    """``backend``'s synthetic benchmark on ``world_size`` nodes at each link profile, and on one node.

    Args:
        cluster: a running multi-node cluster.
        profiles: link profiles (``"unshaped"`` or a tc rate), in the order run.
        backend: ``horovod`` or ``ddp``.
        world_size: nodes (one rank each).
        one: a 1-worker run to reuse (the compute per step; no link involved); run here if None.
        reuse: profile -> a ``world_size`` run of the same backend and options already made at
            that profile (e.g. the bake-off's unshaped run); those profiles are not run again.
        timeout_s: per run.
        **cfg: benchmark options (image size, batch, iterations, bucket_mb, ...).

    Returns:
        ``{"one", "runs": {profile: run}, "rates_bps": {profile: bits/s}, "backend", "world_size"}``.

    Raises:
        ValueError: the cluster is not a running multi-node one.
    """
    _need_nodes(cluster, "link_sweep", "it shapes the links between nodes")
    names = [n.name for n in cluster.plan.nodes]
    cluster.shape("unshaped")
    rates = link_rates(cluster, profiles)
    if one is None:
        one = bench.run_bench(1, ["synthetic"], timeout_s, tag="sweep-one", backend=backend, cluster=cluster,
                              hosts=names[:1], **cfg)
    runs = {}
    try:
        for prof in profiles:
            if reuse and prof in reuse:
                if reuse[prof].get("backend") != backend or reuse[prof].get("world_size") != world_size:
                    raise ValueError(f"link_sweep: the run reused at {prof!r} is {reuse[prof].get('backend')} on "
                                     f"{reuse[prof].get('world_size')} ranks, not {backend} on {world_size}")
                runs[prof] = reuse[prof]
                continue
            cluster.shape(prof)
            runs[prof] = bench.run_bench(world_size, ["synthetic"], timeout_s, tag=f"sweep-{prof}", backend=backend,
                                         cluster=cluster, **cfg)
    finally:
        cluster.shape("unshaped")
    return {"one": one, "runs": runs, "rates_bps": rates, "backend": backend, "world_size": world_size}


def ceiling_rounds(cluster: LocalCluster, rounds: int, backend: str = "ddp", world_size: int = 2,
                   timeout_s: float = 600, **cfg: Any) -> list[dict[str, Any]]:
    """``rounds`` repeats of the three runs behind the efficiency-vs-ceiling target, on unshaped links.

    Each round makes ``backend``'s 1-node run, its ``world_size``-node run and the
    no-communication ceiling (:func:`hpcml.train.bench.ceiling`). The order reverses every
    other round (one, nodes, ceiling; then ceiling, nodes, one), so slow drift on a shared
    machine does not favour either side of the ratio.
    :func:`hpcml.train.sweep_summary.pooled_vs_ceiling` pools the rounds; its interval
    includes what moves from run to run, which one round's iteration spread does not.

    Returns:
        one ``{"one", "nodes", "ceiling"}`` per round, in order.

    Raises:
        ValueError: ``rounds`` is not a whole number >= 1, or the cluster is not a running
            multi-node one.
    """
    _whole_count("rounds", rounds, "one, nodes and ceiling runs each")
    _need_nodes(cluster, "ceiling_rounds")
    names = [n.name for n in cluster.plan.nodes]
    cluster.shape("unshaped")
    make = {"one": lambda: bench.run_bench(1, ["synthetic"], timeout_s, tag="ceiling-one", backend=backend,
                                           cluster=cluster, hosts=names[:1], **cfg),
            "nodes": lambda: bench.run_bench(world_size, ["synthetic"], timeout_s, tag="ceiling-nodes",
                                             backend=backend, cluster=cluster, **cfg),
            "ceiling": lambda: bench.ceiling(world_size, timeout_s, cluster=cluster, **cfg)}
    out = []
    for k in range(rounds):
        order = ("one", "nodes", "ceiling") if k % 2 == 0 else ("ceiling", "nodes", "one")
        out.append({name: make[name]() for name in order})
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcml.train.sweep``: the bake-off and the link sweep on a cluster of its own; one JSON."""
    from hpcml.cluster import local
    from hpcml.cluster.fabric import LocalClusterSpec

    ap = argparse.ArgumentParser(description="Horovod vs DDP across nodes, and the link sweep (issue 25)")
    ap.add_argument("--cluster", default="hpcmlsw", help="the cluster's name (never the pipeline's 'hpcml')")
    ap.add_argument("--profiles", default=",".join(PROFILES_FULL))
    ap.add_argument("--settings", default=",".join(SETTINGS), help="bake-off settings; empty for none")
    ap.add_argument("--backend", default="ddp", choices=bench.BACKENDS, help="the sweep's backend")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batches-per-iter", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cycle-time-ms", type=float, default=None, help="Horovod's cycle in the matched setting (default: its 1 ms; "
                    "the defaults setting always runs Horovod's own)")
    ap.add_argument("--pairs", type=int, default=1, help="Horovod/DDP run pairs per setting, in ABBA order; "
                    ">= 2 adds the pooled ratio whose interval includes run-to-run spread")
    ap.add_argument("--hvd-poll-ms", default="spin", help="the matched Horovod wait: ms slept between polls, or "
                    "'spin' (default) for Horovod 0.28.1's own synchronize")
    ap.add_argument("--ceiling-rounds", type=int, default=1, help="rounds of (1-node run, unshaped nodes run, "
                    "ceiling); >= 2 adds the pooled efficiency/ceiling whose interval includes run-to-run spread")
    ap.add_argument("--paired-ceiling", action="store_true", help="run DDP's paired benchmark on the unshaped nodes: "
                    "steps with and without the gradient allreduces interleaved in one job (--iters pairs)")
    ap.add_argument("--paired-bakeoff", action="store_true", help="run Horovod's step and DDP's interleaved in "
                    "one horovodrun job on the unshaped nodes, matched buckets (--iters pairs)")
    ap.add_argument("--bakeoff-runs", type=int, default=1, help="separate --paired-bakeoff jobs; >= 2 adds the "
                    "pooled ratio whose interval is over the jobs, so it includes what moves from job to job")
    ap.add_argument("--out", type=Path, default=None, help="the JSON (default build/sweep/<cluster>.json)")
    ap.add_argument("--summary-of", type=Path, default=None, help="print the summary of an earlier run's JSON, run nothing")
    a = ap.parse_args(argv)
    if a.summary_of:
        print(json.dumps(summary_of(json.loads(a.summary_of.read_text())), indent=1, default=float))
        return 0
    try:
        poll = None if a.hvd_poll_ms == "spin" else comm.check_poll_ms(float(a.hvd_poll_ms))
    except ValueError:
        ap.error(f"--hvd-poll-ms must be a positive number of ms or 'spin', got {a.hvd_poll_ms!r}")
    for flag, on in (("--paired-ceiling", a.paired_ceiling), ("--paired-bakeoff", a.paired_bakeoff)):
        if on and a.iters < 2:
            ap.error(f"{flag} needs --iters >= 2 (pairs of phases), got {a.iters}")
    if a.bakeoff_runs < 1 or (a.bakeoff_runs > 1 and not a.paired_bakeoff):
        ap.error(f"--bakeoff-runs must be >= 1, and > 1 only with --paired-bakeoff; got {a.bakeoff_runs}"
                 + ("" if a.paired_bakeoff else " without --paired-bakeoff"))
    if a.ceiling_rounds < 1:
        ap.error(f"--ceiling-rounds must be >= 1, got {a.ceiling_rounds}")
    if a.ceiling_rounds > 1 and "unshaped" not in a.profiles.split(","):
        ap.error("--ceiling-rounds > 1 needs 'unshaped' in --profiles (the ceiling is held against the unshaped run)")
    if a.cluster == fabric.PREFIX:
        ap.error(f"--cluster {a.cluster!r} is the pipeline's cluster; name one of your own")
    cfg = dict(arch=a.arch, image_size=a.image_size, batch_size=a.batch_size, iters=a.iters,
               batches_per_iter=a.batches_per_iter, warmup_batches=a.warmup)
    state = paths.build_dir() / "sweep" / f"cluster-{a.cluster}"
    running = local.leftovers(a.cluster)["netns"]
    cl = local.up(LocalClusterSpec(nodes=2, name=a.cluster), state)
    out: dict[str, Any] = {"config": cfg, "argv": sys.argv[1:] if argv is None else argv}
    try:
        settings = tuple(s for s in a.settings.split(",") if s)
        if settings:
            out["bakeoff"] = bakeoff(cl, settings, cycle_time_ms=a.cycle_time_ms, pairs=a.pairs,
                                     hvd_poll_ms=poll, **cfg)
        if a.paired_ceiling:
            cl.shape("unshaped")
            out["paired"] = bench.run_bench(2, ["paired"], tag="paired", backend="ddp", cluster=cl, **cfg)
        if a.paired_bakeoff:
            cl.shape("unshaped")
            runs = [bench.run_bench(2, ["versus"], tag="versus", backend="horovod", cluster=cl,
                                    cycle_time_ms=a.cycle_time_ms, hvd_poll_ms=poll,
                                    **setting_options("matched"), **cfg) for _ in range(a.bakeoff_runs)]
            out["versus"] = runs[0]
            if len(runs) > 1:
                out["versus_runs"] = runs
        profiles = [p for p in a.profiles.split(",") if p]
        if profiles and a.ceiling_rounds > 1 and "unshaped" in profiles:
            # the first round is also the sweep's 1-node run, its unshaped point and its ceiling
            rounds = ceiling_rounds(cl, a.ceiling_rounds, backend=a.backend, **cfg)
            out["ceiling_rounds"] = rounds
            out["sweep"] = link_sweep(cl, profiles, backend=a.backend, one=rounds[0]["one"],
                                      reuse={"unshaped": rounds[0]["nodes"]}, **cfg)
            out["ceiling"] = rounds[0]["ceiling"]
        elif profiles:
            out["sweep"] = link_sweep(cl, profiles, backend=a.backend, **cfg)
            out["ceiling"] = bench.ceiling(2, cluster=cl, **cfg)
    finally:
        if not running:
            local.down(state, prefix=a.cluster)
    dest = a.out or paths.build_dir() / "sweep" / f"{a.cluster}.json"
    paths.atomic_write_text(paths.ensure(dest.parent) / dest.name, json.dumps(out, indent=2, default=float))
    print(dest)
    print(json.dumps(summary_of(out), indent=1, default=float))
    return 0


def summary_of(out: dict[str, Any]) -> dict[str, Any]:
    """:func:`hpcml.train.sweep_summary.summary` of a run's JSON, for its model's gradient bytes."""
    from hpcml.train.models import count_params, make_model
    from hpcml.train.sweep_summary import summary

    arch = out.get("config", {}).get("arch", "resnet50")
    return summary(out, 4.0 * count_params(make_model(arch)))


if __name__ == "__main__":
    sys.exit(main())
