"""Dynamic batching: requests queue up and run through the model together.

One :class:`DynamicBatcher` per worker process. ``submit`` puts a request on an
asyncio queue and awaits its future. A single batching task forms batches, runs the
model once per batch in a dedicated thread (so the event loop keeps accepting and
parsing requests meanwhile) and hands each caller its slice of the output.

Two policies, chosen by ``max_wait_ms``:

* ``max_wait_ms == 0`` — **adaptive** (the default): as soon as the model is free, run
  whatever is queued (up to ``max_batch_size`` rows). An idle server runs a lone request
  at once (no added latency at low load); under load, requests pile up while the model
  runs the previous batch, so batches grow by themselves with the arrival rate.
* ``max_wait_ms > 0`` — **fixed window** (Triton's ``max_queue_delay``): after the first
  request of a batch, keep collecting until the batch is full or the window has passed.
  Bigger batches at moderate load, at the price of up to that window of latency.

With ``max_batch_size=1`` it degenerates to one model call per request — the
"no batching" baseline the notebook compares against, with everything else identical.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np


class DynamicBatcher:
    """Queue + batching loop around a ``predict(np.ndarray) -> np.ndarray`` function.

    Args:
        predict: runs the model on ``(B, 1, 28, 28)`` and returns ``(B, 10)``.
        max_batch_size: rows per model call (≥ 1).
        max_wait_ms: 0 = adaptive policy; > 0 = how long the first request of a batch waits
            for company (fixed window).
        on_batch: called with ``(rows, model_seconds)`` after every model call (metrics).
        on_queue: called with the queue depth whenever it changes (metrics).
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 32,
                 max_wait_ms: float = 0.0, on_batch: Callable[[int, float], None] | None = None,
                 on_queue: Callable[[int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1e3
        self.on_batch = on_batch or (lambda rows, secs: None)
        self.on_queue = on_queue or (lambda depth: None)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._pending = 0
        self._carry: tuple | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="dynamic-batcher")

    async def stop(self) -> None:
        """Finish everything queued, then stop the loop (graceful shutdown)."""
        if self._task is None:
            return
        while self._pending:
            await asyncio.sleep(0.005)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        self._pool.shutdown(wait=True)

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Queue ``x`` (n, 1, 28, 28) and return its (n, 10) output when its batch has run."""
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not awaited")
        fut = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._queue.put_nowait((x, fut))
        self.on_queue(self._queue.qsize())
        try:
            return await fut
        finally:
            self._pending -= 1

    @property
    def policy(self) -> str:
        return "adaptive" if self.max_wait_s == 0 else "window"

    async def _next(self, timeout: float | None):
        """The carried-over request, else the next queued one (``None`` on timeout)."""
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout=timeout)
        except asyncio.TimeoutError:
            return None

    async def _collect(self) -> list:
        """One batch: ``max_batch_size`` rows at most (a single larger request runs alone)."""
        first = await self._next(None)
        items, rows = [first], len(first[0])
        adaptive = self.max_wait_s == 0
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch_size:
            if adaptive:  # take what is queued now, never wait
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            else:
                item = await self._next(deadline - time.monotonic())
                if item is None:
                    break
            if rows + len(item[0]) > self.max_batch_size:
                self._carry = item  # starts the next batch
                break
            items.append(item)
            rows += len(item[0])
        return items

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        y = self.predict(x)
        return y, time.perf_counter() - t0

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            self.on_queue(self._queue.qsize())
            x = items[0][0] if len(items) == 1 else np.concatenate([it[0] for it in items])
            try:
                y, secs = await loop.run_in_executor(self._pool, self._run, x)
            except Exception as exc:  # noqa: BLE001 - a model failure fails this batch's requests only
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.on_batch(len(x), secs)
            i = 0
            for xi, fut in items:
                n = len(xi)
                if not fut.done():
                    fut.set_result(y[i:i + n])
                i += n
