"""The allreduce micro-benchmark's maths: message sizes, bandwidths, intervals, metrics, the figure.

Pure functions over the per-rep times the ranks of :mod:`hpcml.train.allreduce_worker` write
(the driver is :mod:`hpcml.train.allreduce`). The bandwidths follow nccl-tests' definitions
(``doc/PERFORMANCE.md`` of NVIDIA/nccl-tests):

* **algorithm bandwidth** ``algbw = S / t``: the message size over the time one allreduce took;
* **bus bandwidth** ``busbw = algbw x 2(n-1)/n``: what each rank's link carried. A ring
  allreduce sends ``2(n-1)/n x S`` bytes out of every rank (a reduce-scatter, then an
  allgather), so ``busbw`` can be set beside the link rate whatever the rank count: a
  perfect ring over a link of rate ``R`` (each direction) reaches ``busbw = R``. With two
  ranks the factor is 1 and the two bandwidths coincide (ring and tree send the same bytes).

Times are summarised by their median over the timed repetitions, with a distribution-free
95 % interval for the median (order statistics of the binomial(n, 1/2), as in
Conover's *Practical Nonparametric Statistics*): no normality is assumed, and one slow rep
(a scheduler hiccup on a shared machine) moves neither. Fewer than 6 reps cannot reach 95 %:
the interval is then ``[min, max]`` and its true coverage is reported beside it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

#: Bytes of one element: every buffer is float32.
ELEMENT_BYTES = 4
#: The issue's range of message sizes, 4 KiB to 128 MiB.
DEFAULT_SIZES = "4KiB..128MiB"
#: Messages at least this large are the ones the bus-bandwidth target is checked on.
TARGET_MIN_BYTES = 16 * 2**20
#: The target: bus bandwidth >= this fraction of the shaped link rate (profiles <= 1 Gbit/s).
TARGET_FRACTION = 0.8
#: Link profiles up to this rate (bits/s) are held to the target; above it one core per node limits.
TARGET_MAX_RATE_BPS = 1e9
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "k": 2**10, "m": 2**20, "g": 2**30}
_SIZE = re.compile(r"^\s*([0-9]+)\s*([a-z]*)\s*$", re.I)


def parse_size(text: str | int) -> int:
    """Bytes of one message size: ``4096``, ``"4KiB"``, ``"16MiB"``, ``"1G"`` (binary units).

    Raises:
        ValueError: not a size, or not a positive multiple of 4 bytes (float32 elements).
    """
    if isinstance(text, bool):
        raise ValueError(f"message size: expected bytes or a size such as '4KiB' or '16MiB', got {text!r}")
    if isinstance(text, int):
        n = text
    else:
        m = _SIZE.match(str(text))
        if not m or (m.group(2) or "").lower() not in _UNITS:
            raise ValueError(f"message size: expected bytes or a size such as '4KiB' or '16MiB', got {text!r}")
        n = int(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if n < ELEMENT_BYTES or n % ELEMENT_BYTES:
        raise ValueError(f"message size: expected a positive multiple of {ELEMENT_BYTES} bytes (float32), got {text!r}")
    return n


def parse_sizes(text: str | Iterable[str | int]) -> list[int]:
    """Message sizes in bytes, ascending and without repeats.

    Accepts a list, a comma-separated string (``"4KiB,1MiB,16MiB"``), or a range
    ``"LOW..HIGH"`` stepping by 4 (``"LOW..HIGH:x2"`` by 2); a range always ends with ``HIGH``.

    Raises:
        ValueError: an empty list, a bad size, a range whose low end exceeds its high end, or a
            step that is not x2 or x4.
    """
    if isinstance(text, str) and ".." in text:
        body, _, step = text.partition(":")
        lo_s, _, hi_s = body.partition("..")
        factor = {"": 4, "x4": 4, "x2": 2}.get(step.strip().lower())
        if factor is None:
            raise ValueError(f"message sizes: a range steps by ':x2' or ':x4', got {step!r} in {text!r}")
        lo, hi = parse_size(lo_s), parse_size(hi_s)
        if lo > hi:
            raise ValueError(f"message sizes: the range {text!r} starts above its end")
        out, s = [], lo
        while s < hi:
            out.append(s)
            s *= factor
        return out + [hi]
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    if not items:
        raise ValueError(f"message sizes: expected at least one size (e.g. '4KiB,16MiB' or '4KiB..128MiB'), got {text!r}")
    return sorted({parse_size(t) for t in items})


def size_label(n: int) -> str:
    """``4096`` -> ``"4 KiB"``, ``16777216`` -> ``"16 MiB"`` (exact binary units where they fit)."""
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def bus_factor(ranks: int) -> float:
    """``2(n-1)/n``: bytes each rank sends per byte of message in a ring allreduce (0 for one rank)."""
    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise ValueError(f"ranks: expected an integer >= 1, got {ranks!r}")
    return 2 * (ranks - 1) / ranks


def algbw(size_bytes: int, seconds: float) -> float:
    """Algorithm bandwidth in bits/s: the message over the time of one allreduce."""
    if seconds <= 0 or size_bytes <= 0:
        raise ValueError(f"algbw: need a positive size and time, got {size_bytes} B in {seconds} s")
    return 8 * size_bytes / seconds


def busbw(size_bytes: int, seconds: float, ranks: int) -> float:
    """Bus bandwidth in bits/s: ``algbw x 2(n-1)/n`` (nccl-tests' definition)."""
    return algbw(size_bytes, seconds) * bus_factor(ranks)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """``(median, low, high, coverage)``: the median and a distribution-free interval for it.

    The interval is ``[x_(j), x_(n+1-j)]`` of the sorted values with the largest ``j`` whose
    binomial(n, 1/2) coverage is at least ``level``; with too few values for that, ``[min, max]``
    and its (lower) coverage.
    """
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_interval: no values")
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

    def coverage(j: int) -> float:  # P(x_(j) <= median < x_(n+1-j)) = 1 - 2 P(B <= j-1)
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n

    j = 1
    while j + 1 <= (n + 1) // 2 and coverage(j + 1) >= level:
        j += 1
    return med, xs[j - 1], xs[n - j], coverage(j)


def collective_times(per_rank: list[list[float]]) -> list[float]:
    """Per rep, the slowest rank's time: an allreduce is over when every rank holds the sum.

    Raises:
        ValueError: no ranks, or ranks with different rep counts.
    """
    if not per_rank or len({len(r) for r in per_rank}) != 1 or not per_rank[0]:
        raise ValueError(f"collective_times: expected the same number (>= 1) of reps from every rank, "
                         f"got {[len(r) for r in per_rank]}")
    return [max(ts) for ts in zip(*per_rank)]


def summarise(tool: str, profile: str, rate_bps: float | None, ranks: int, size_bytes: int,
              times_s: list[float]) -> dict[str, Any]:
    """One row of the results table: times, algorithm and bus bandwidth (Gbit/s), the link's share.

    ``busbw_lo_gbit`` comes from the slow end of the time interval, so a target checked on it
    is "met" only when the whole 95 % interval clears it.
    """
    med, lo, hi, cov = median_interval(times_s)
    link = None if rate_bps is None else rate_bps / 1e9
    bus = busbw(size_bytes, med, ranks) / 1e9
    bus_lo = busbw(size_bytes, hi, ranks) / 1e9
    return {"profile": profile, "tool": tool, "ranks": ranks, "size_bytes": size_bytes, "size": size_label(size_bytes),
            "reps": len(times_s), "time_med_s": med, "time_lo_s": lo, "time_hi_s": hi, "coverage": cov,
            "algbw_gbit": algbw(size_bytes, med) / 1e9, "busbw_gbit": bus, "busbw_lo_gbit": bus_lo,
            "busbw_hi_gbit": busbw(size_bytes, lo, ranks) / 1e9, "link_gbit": link,
            "busbw_frac_link": None if link is None else bus / link,
            "busbw_lo_frac_link": None if link is None else bus_lo / link}


def target_applies(rate_bps: float | None) -> bool:
    """Whether a profile is held to the bus-bandwidth target (shaped, at most 1 Gbit/s)."""
    return rate_bps is not None and rate_bps <= TARGET_MAX_RATE_BPS


def metric_key(text: str) -> str:
    """A profile or tool name as a metric-name part (``"1gbit"`` stays, ``"2.5gbit"`` -> ``"2p5gbit"``)."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower().replace(".", "p")).strip("_")


def _known(v: Any) -> bool:
    return v is not None and v == v  # NaN != NaN: a missing link rate in a mixed table


def _largest(df: Any, profile: str, tool: str) -> Any:
    sub = df[(df.profile == profile) & (df.tool == tool)]
    return sub.loc[sub.size_bytes.idxmax()], sub


def metrics(df: Any) -> list[Any]:
    """The benchmark's metrics (:class:`hpcml.report.Metric`), per profile ``p`` and tool ``t``:

    * ``allreduce_<t>_<p>_busbw_gbit`` / ``..._busbw_lo_gbit``: bus bandwidth of the largest
      message (median, and the low end of its 95 % interval);
    * ``allreduce_<t>_<p>_small_us``: median time of the smallest message (latency-bound);
    * ``allreduce_<t>_<p>_link_frac_lo`` (shaped profiles with messages >= 16 MiB): the lowest
      95 %-interval low end of busbw / link rate over those messages, the number the target
      (>= 0.8 at profiles <= 1 Gbit/s) is checked on;
    * ``allreduce_best_<p>_tool`` / ``..._busbw_gbit`` / ``..._link_frac_lo``: the same, for the best tool;
    * ``allreduce_horovod_vs_torch_<p>_time_ratio``: Horovod's time over torch's for the largest
      message (both Gloo: what Horovod's own machinery costs);
    * ``allreduce_ranks``, ``allreduce_largest_bytes``.
    """
    from hpcml.report import Metric

    out = [Metric("allreduce_ranks", int(df.ranks.max()), "", "ranks of the allreduce micro-benchmark (one per node)"),
           Metric("allreduce_largest_bytes", int(df.size_bytes.max()), "B", "largest message of the micro-benchmark")]
    for p in dict.fromkeys(df.profile):
        pk = metric_key(p)
        for t in dict.fromkeys(df[df.profile == p].tool):
            big, sub = _largest(df, p, t)
            small = sub.loc[sub.size_bytes.idxmin()]
            out += [Metric(f"allreduce_{t}_{pk}_busbw_gbit", float(big.busbw_gbit), "Gbit/s",
                           f"{t} allreduce bus bandwidth, {big['size']} messages, link {p} (median)"),
                    Metric(f"allreduce_{t}_{pk}_busbw_lo_gbit", float(big.busbw_lo_gbit), "Gbit/s",
                           f"{t} allreduce bus bandwidth, {big['size']}, link {p}: low end of the 95 % interval"),
                    Metric(f"allreduce_{t}_{pk}_small_us", float(small.time_med_s) * 1e6, "µs",
                           f"{t} allreduce time of {small['size']} messages, link {p} (median)")]
            large = sub[sub.size_bytes >= TARGET_MIN_BYTES]
            if _known(big.link_gbit) and not large.empty:
                out.append(Metric(f"allreduce_{t}_{pk}_link_frac_lo", float(large.busbw_lo_frac_link.min()), "",
                                  f"{t}: lowest 95 %-interval low end of busbw / link rate over messages >= 16 MiB, link {p}"))
        mine = {m.name: m.value for m in out}
        tools = list(dict.fromkeys(df[df.profile == p].tool))
        best = max(tools, key=lambda t: mine[f"allreduce_{t}_{pk}_busbw_gbit"])
        out += [Metric(f"allreduce_best_{pk}_tool", best, "", f"the tool with the highest busbw of the largest message, link {p}"),
                Metric(f"allreduce_best_{pk}_busbw_gbit", mine[f"allreduce_{best}_{pk}_busbw_gbit"], "Gbit/s",
                       f"the highest busbw of the largest message over the tools, link {p} (median)")]
        fracs = [mine[f"allreduce_{t}_{pk}_link_frac_lo"] for t in tools if f"allreduce_{t}_{pk}_link_frac_lo" in mine]
        if fracs:
            out.append(Metric(f"allreduce_best_{pk}_link_frac_lo", max(fracs), "",
                              f"the best tool's lowest 95 %-interval low end of busbw / link over messages >= 16 MiB, link {p}"))
        if {"horovod", "torch"} <= set(tools):
            h, _ = _largest(df, p, "horovod")
            d, _ = _largest(df, p, "torch")
            out.append(Metric(f"allreduce_horovod_vs_torch_{pk}_time_ratio", float(h.time_med_s / d.time_med_s), "",
                              f"Horovod / torch.distributed allreduce time, {h['size']}, link {p} (both Gloo)"))
    return out


def verdicts(df: Any) -> list[dict[str, Any]]:
    """The bus-bandwidth target per tool at every profile it applies to (shaped, <= 1 Gbit/s).

    ``met`` when the 95 % interval of busbw / link clears :data:`TARGET_FRACTION` for every
    message >= 16 MiB, ``missed`` when the whole interval of one of them is below it, else
    ``undecided``; ``frac_lo`` / ``frac_hi`` are the worst message's interval ends.
    """
    out = []
    for (p, t), sub in df[df.size_bytes >= TARGET_MIN_BYTES].groupby(["profile", "tool"], sort=False):
        link = sub.link_gbit.iloc[0]
        if not _known(link) or not target_applies(link * 1e9):
            continue
        lo, hi = float(sub.busbw_lo_frac_link.min()), float((sub.busbw_hi_gbit / link).min())
        word = "met" if lo >= TARGET_FRACTION else "missed" if hi < TARGET_FRACTION else "undecided"
        out.append({"profile": p, "tool": t, "frac_lo": lo, "frac_hi": hi, "verdict": word})
    return out


def table(df: Any) -> Any:
    """The results as a reader reads them: one row per profile x tool x size, times in ms, Gbit/s."""
    import pandas as pd

    return pd.DataFrame({
        "link": df.profile, "tool": df.tool, "size": df["size"], "reps": df.reps,
        "time ms (median)": (df.time_med_s * 1e3).round(3),
        "95% interval ms": [f"{lo * 1e3:.3f}-{hi * 1e3:.3f}" for lo, hi in zip(df.time_lo_s, df.time_hi_s)],
        "algbw Gbit/s": df.algbw_gbit.round(3), "busbw Gbit/s": df.busbw_gbit.round(3),
        "busbw low Gbit/s": df.busbw_lo_gbit.round(3),
        "busbw / link": [round(v, 3) if _known(v) else None for v in df.busbw_frac_link]})


def plot(df: Any) -> Any:
    """Bus bandwidth against message size, one panel per link profile, one line per tool
    (median, with the 95 % interval as error bars), the shaped link rate as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(df.profile))
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.2 * len(profiles), 3.8), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], profiles):
        sub = df[df.profile == p]
        for t in dict.fromkeys(sub.tool):
            s = sub[sub.tool == t].sort_values("size_bytes")
            ax.errorbar(s.size_bytes, s.busbw_gbit, yerr=[s.busbw_gbit - s.busbw_lo_gbit, s.busbw_hi_gbit - s.busbw_gbit],
                        marker="o", ms=3, capsize=2, label=t)
        link = sub.link_gbit.dropna()
        if not link.empty:
            ax.axhline(float(link.iloc[0]), ls="--", color="grey", label=f"link {p}")
            ax.axhline(TARGET_FRACTION * float(link.iloc[0]), ls=":", color="grey", label=f"{TARGET_FRACTION:.0%} of link")
        ax.set_xscale("log", base=2)
        ticks = sorted(set(sub.size_bytes))
        ax.set_xticks(ticks, [size_label(int(t)).replace(" ", "\n") for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_title(f"link: {p}, {int(sub.ranks.max())} ranks (1 per node)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("bus bandwidth (Gbit/s)")
    fig.tight_layout()
    return fig
