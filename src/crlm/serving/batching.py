"""Micro-batching: concurrent single-patient requests merged into one Predictor call."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import anyio.to_thread

# How long the thread running the models may keep the GIL while the event loop waits for it (Python's default
# is 5 ms). The loop reads, validates and answers the other requests between two model calls; with 5 ms each of
# its steps waited up to a switch interval behind the models, so two requests in flight took 5x one (p50 30 ms
# against 4 ms, closed loop, benchmarks/load.py's server) and batches formed slowly. At 1 ms: 7 ms, and twice
# the throughput at 2 to 8 in flight (docs/SERVING.md, "Load shedding").
SWITCH_INTERVAL_S = 0.001


def prefer_the_event_loop() -> None:
    """Set this process's GIL switch interval to ``SWITCH_INTERVAL_S`` (a serving worker: the models run in a
    thread beside the event loop). Answers are unchanged; only who runs next."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


class MicroBatcher:
    """Opportunistic batching of single-patient requests: while one Predictor call runs, new requests queue;
    the next call takes all of them (up to ``max_batch``). No request ever waits for a timer, so a lone
    request pays no extra latency, and concurrent ones share the Predictor's fixed per-call cost.

    Parameters
    ----------
    fn : callable
        Maps a list of items to a list of results in the same order; runs in a worker thread. If a merged call
        fails, its items are retried one by one so one failure cannot fail the others.
    max_batch : int
        The most items of one call.
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32):
        self.fn = fn
        self.max_batch = max_batch
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self.batch_sizes: list[int] = []  # recent merged sizes (for tests and the benchmark)

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a new server or test client): start afresh
            self._loop, self._queue, self._running = loop, [], False
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                items = [item for item, _ in batch]
                self.batch_sizes = (self.batch_sizes + [len(items)])[-1000:]
                try:
                    results = await anyio.to_thread.run_sync(self._run, items)
                except BaseException as err:  # _run only raises for cancellation or a single failing item
                    results = [err] * len(items)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running = False

    def _run(self, items: list) -> list:
        try:
            return self.fn(items)
        except Exception as err:
            if len(items) == 1:
                return [err]
        out: list = []
        for item in items:
            try:
                out.extend(self.fn([item]))
            except Exception as err:
                out.append(err)
        return out
