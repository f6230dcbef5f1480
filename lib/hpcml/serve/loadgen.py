"""An async HTTP load generator (aiohttp): closed-loop and open-loop, bounded in count and time.

* **Closed loop** — ``C`` clients, each sends a request, waits for the answer, sends the
  next. Throughput adapts to the server; latency includes no queueing at the client.
  This finds capacity (the knee of the latency/throughput curve).
* **Open loop** — requests arrive at a fixed mean rate (Poisson: exponential gaps)
  regardless of how the server copes, the way independent users behave. Latency is
  measured from the *scheduled* send time, so a server falling behind shows it
  (no coordinated omission). An outstanding-request cap stops a collapsing server from
  exhausting the client; requests over the cap are counted as ``dropped``.

Both run in their own thread with their own event loop, so they work from a plain script
and from a Jupyter kernel (whose loop is already running). Errors are counted by kind
(HTTP status or exception class), never raised.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hpcml.serve.capacity import LoadPoint


@dataclass
class LoadResult:
    """What one load run measured."""

    mode: str
    concurrency: int | None
    rate: float | None
    sent: int
    ok: int
    errors: dict[str, int]
    duration_s: float
    latencies_ms: np.ndarray = field(repr=False)

    @property
    def error_count(self) -> int:
        return int(sum(self.errors.values()))

    @property
    def throughput(self) -> float:
        """Successful responses per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    def mean_ms(self) -> float:
        """Mean latency of the successful requests (ms); NaN when there were none."""
        return float(np.mean(self.latencies_ms)) if len(self.latencies_ms) else float("nan")

    def inflight(self) -> float:
        """Mean requests in the system, by Little's law ``L = X · W`` (throughput × mean latency).

        In a closed loop this is close to the number of clients (each has one request open at a
        time); in an open loop it is what queueing made of the arrival rate.
        """
        return self.throughput * self.mean_ms() / 1e3

    def summary(self) -> dict:
        return {"mode": self.mode, "concurrency": self.concurrency, "rate": self.rate, "sent": self.sent,
                "ok": self.ok, "errors": self.error_count, "error_kinds": dict(self.errors),
                "duration_s": round(self.duration_s, 3), "rps": round(self.throughput, 1),
                "mean_ms": round(self.mean_ms(), 2), "p50_ms": round(self.pct(50), 2), "p95_ms": round(self.pct(95), 2),
                "p99_ms": round(self.pct(99), 2), "inflight": round(self.inflight(), 2)}


def _in_thread(coro_fn, *args):
    box: dict = {}

    def target():
        try:
            box["r"] = asyncio.run(coro_fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["e"] = exc
    t = threading.Thread(target=target, name="loadgen", daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["r"]


def _request_kwargs(bodies: list, method: str) -> list[dict]:
    """aiohttp keyword arguments per body: a plain body is JSON; ``(body, headers)`` adds headers."""
    if method != "POST":
        return [{}]
    out = []
    for b in bodies:
        data, extra = b if isinstance(b, tuple) else (b, {})
        ctype = "application/octet-stream" if extra else "application/json"
        out.append({"data": data, "headers": {"content-type": ctype, **extra}})
    return out


class _Shot:
    def __init__(self, session, url: str, bodies: list, method: str, timeout_s: float):
        import aiohttp

        self.session, self.url, self.method = session, url, method
        self.kwargs = _request_kwargs(bodies, method)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.lat: list[float] = []
        self.errors: Counter = Counter()
        self.ok = 0
        self.sent = 0

    async def one(self, i: int, t_start: float | None = None) -> None:
        t0 = t_start if t_start is not None else time.perf_counter()
        self.sent += 1
        try:
            kw = self.kwargs[i % len(self.kwargs)]
            async with self.session.request(self.method, self.url, timeout=self.timeout, **kw) as r:
                await r.read()
                if r.status == 200:
                    self.ok += 1
                    self.lat.append((time.perf_counter() - t0) * 1e3)
                else:
                    self.errors[f"http_{r.status}"] += 1
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            self.errors[type(exc).__name__] += 1


def _session(limit: int):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False))


async def _closed(url, bodies, concurrency, n_requests, duration_s, method, timeout_s) -> LoadResult:
    async with _session(concurrency) as s:
        shot = _Shot(s, url, bodies, method, timeout_s)
        counter = iter(range(n_requests))
        t_end = time.perf_counter() + duration_s

        async def client():
            for i in counter:
                if time.perf_counter() > t_end:
                    return
                await shot.one(i)
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        dur = time.perf_counter() - t0
    return LoadResult("closed", concurrency, None, shot.sent, shot.ok, dict(shot.errors), dur, np.asarray(shot.lat))


async def _open(url, bodies, rate, n_requests, duration_s, method, timeout_s, max_outstanding, seed) -> LoadResult:
    rng = random.Random(seed)
    async with _session(max_outstanding) as s:
        shot = _Shot(s, url, bodies, method, timeout_s)
        tasks: set[asyncio.Task] = set()
        dropped = 0
        t0 = time.perf_counter()
        nxt = t0
        for i in range(n_requests):
            nxt += rng.expovariate(rate)
            if nxt - t0 > duration_s:
                break
            delay = nxt - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_outstanding:
                dropped += 1
                continue
            task = asyncio.create_task(shot.one(i, t_start=nxt))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        dur = time.perf_counter() - t0
    errors = dict(shot.errors)
    if dropped:
        errors["dropped"] = dropped
    return LoadResult("open", None, rate, shot.sent + dropped, shot.ok, errors, dur, np.asarray(shot.lat))


def _check(n_requests: int, duration_s: float) -> None:
    if n_requests < 1:
        raise ValueError(f"n_requests must be >= 1, got {n_requests}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")


def closed_loop(url: str, bodies: list[bytes], concurrency: int, n_requests: int = 1000, duration_s: float = 10.0,
                method: str = "POST", timeout_s: float = 30.0) -> LoadResult:
    """Run ``concurrency`` clients back to back until ``n_requests`` are sent or ``duration_s`` passes.

    Args:
        url: full URL, e.g. ``srv.url + "/v2/models/mnist/infer"``.
        bodies: request bodies, used round-robin (pre-encoded so the client spends little CPU);
            an item may be ``(body, extra headers)``, e.g. from
            :func:`~hpcml.serve.protocol.make_binary_infer_request`.
        concurrency: simultaneous clients (C).
        n_requests: upper bound on requests sent.
        duration_s: upper bound on wall time.
        method: ``POST`` (bodies sent) or ``GET``.
        timeout_s: per-request timeout (counted as an error).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    _check(n_requests, duration_s)
    return _in_thread(_closed, url, bodies or [b""], concurrency, n_requests, duration_s, method, timeout_s)


def open_loop(url: str, bodies: list[bytes], rate: float, n_requests: int = 1000, duration_s: float = 10.0,
              method: str = "POST", timeout_s: float = 30.0, max_outstanding: int = 256, seed: int = 0) -> LoadResult:
    """Poisson arrivals at ``rate`` requests/s, bounded by ``n_requests`` and ``duration_s``.

    Latency counts from each request's scheduled arrival time. Arrivals that find
    ``max_outstanding`` requests already open are counted as ``errors["dropped"]``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    _check(n_requests, duration_s)
    return _in_thread(_open, url, bodies or [b""], rate, n_requests, duration_s, method, timeout_s,
                      max_outstanding, seed)


def sweep(url: str, bodies: list[bytes], concurrencies: list[int], n_requests: int, duration_s: float,
          **kw) -> list[LoadResult]:
    """Closed-loop runs at each concurrency (the latency/throughput curve)."""
    return [closed_loop(url, bodies, c, n_requests=n_requests, duration_s=duration_s, **kw) for c in concurrencies]


def load_points(results: list[LoadResult]) -> list[LoadPoint]:
    """Each run as a :class:`~hpcml.serve.capacity.LoadPoint` (throughput, Little's-law in-flight, p99)."""
    return [LoadPoint(r.throughput, r.inflight(), r.pct(99)) for r in results if r.ok]


def meets(result: LoadResult, p99_ms: float) -> bool:
    """The run answered, with no errors, and its p99 stayed ≤ ``p99_ms``."""
    return bool(result.ok) and result.error_count == 0 and result.pct(99) <= p99_ms


def max_rps_under(results: list[LoadResult], p99_ms: float) -> float:
    """Highest throughput among runs whose p99 stayed ≤ ``p99_ms`` and had no errors (0 if none)."""
    return max((r.throughput for r in results if meets(r, p99_ms)), default=0.0)


@dataclass(frozen=True)
class SloCapacity:
    """The best measured rate that met a p99 objective, and whether the search bracketed it.

    Attributes:
        max_rps: highest throughput among the runs that met the objective (0 if none did).
        concurrency: the clients of that run (``None`` if none met it).
        is_lower_bound: no run at a higher concurrency missed the objective, so the real
            capacity at the objective may be higher than ``max_rps`` (the search stopped at
            its bound before p99 crossed the objective).
        first_miss_concurrency: the lowest concurrency above the best run that missed it.
        first_miss_rps / first_miss_p99_ms: that run's throughput and p99.
    """

    max_rps: float
    concurrency: int | None
    is_lower_bound: bool
    first_miss_concurrency: int | None = None
    first_miss_rps: float | None = None
    first_miss_p99_ms: float | None = None


def capacity_at_slo(results: list[LoadResult], p99_ms: float) -> SloCapacity:
    """:class:`SloCapacity` of closed-loop ``results`` (any order) against ``p99_ms``."""
    runs = sorted((r for r in results if r.concurrency is not None), key=lambda r: r.concurrency)
    good = [r for r in runs if meets(r, p99_ms)]
    if not good:
        miss = runs[0] if runs else None
        return SloCapacity(0.0, None, False, miss and miss.concurrency, miss and miss.throughput,
                           miss and miss.pct(99))
    best = max(good, key=lambda r: r.throughput)
    misses = [r for r in runs if r.concurrency > best.concurrency and not meets(r, p99_ms)]
    if not misses:
        return SloCapacity(best.throughput, best.concurrency, True)
    m = misses[0]
    return SloCapacity(best.throughput, best.concurrency, False, m.concurrency, m.throughput, m.pct(99))
