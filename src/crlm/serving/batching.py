"""Micro-batching: concurrent single-patient requests merged into one Predictor call."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import anyio.to_thread

# How long a thread running the models (/predict_batch, the response scenarios; /predict's micro-batches run on
# the loop itself) may keep the GIL while the event loop waits for it (Python's default is 5 ms). With 5 ms each of
# its steps waited up to a switch interval behind the models, so two requests in flight took 5x one (p50 30 ms
# against 4 ms, closed loop, benchmarks/load.py's server) and batches formed slowly. At 1 ms: 7 ms, and twice
# the throughput at 2 to 8 in flight (docs/SERVING.md, "Load shedding").
SWITCH_INTERVAL_S = 0.001


def prefer_the_event_loop() -> None:
    """Set this process's GIL switch interval to ``SWITCH_INTERVAL_S`` (a serving worker: large batches run in
    a thread beside the event loop). Answers are unchanged; only who runs next."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


class MicroBatcher:
    """Opportunistic batching of single-patient requests: while one Predictor call runs, new requests queue;
    the next call takes all of them (up to ``max_batch``). No request ever waits for a timer, so a lone
    request pays no extra latency, and concurrent ones share the Predictor's fixed per-call cost.

    The calls run on the event loop itself, not in a thread. In a thread, the loop and the models took turns
    at the GIL every switch interval, each of the loop's steps waited behind the models, and a request that
    arrived during a call was read at once and started a batch of its own as soon as the call ended: eight
    clients in a closed loop made batches of 1 and 3 (measured, 2 workers). On the loop, the requests that
    arrive during a call wait in the socket buffers and are all read before the next call, which takes them
    together (batches of 4 from 4 clients per worker; at concurrency 8, 25-45% less server CPU per answer and
    more answers per second: docs/SERVING.md, "Micro-batches on the event loop"). The cost: the loop answers nothing
    else during a call, so past capacity, while ``offload()`` says so (the worker is shedding), the calls run
    in a thread and the loop refuses the excess at once (on the loop, a shed 503 waited for whole calls: p99
    96-107 ms against 21-23 ms). ``/predict_batch`` and the response scenarios, which can take a second, stay in threads.

    Parameters
    ----------
    fn : callable
        Maps a list of items to a list of results in the same order; runs on the event loop (or, with
        ``offload``, in a thread). If a merged call fails, its items are retried one by one so one failure
        cannot fail the others.
    max_batch : int
        The most items of one call.
    offload : callable, optional
        Returns True when the next call should run in a thread (``admission.shed_recently``); default: never.
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32,
                 offload: Callable[[], bool] | None = None):
        self.fn = fn
        self.max_batch = max_batch
        self.offload = offload or (lambda: False)
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
                await asyncio.sleep(0)  # the requests already read reach the queue: they join this call
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                items = [item for item, _ in batch]
                self.batch_sizes = (self.batch_sizes + [len(items)])[-1000:]
                if self.offload():
                    try:
                        results = await anyio.to_thread.run_sync(self._run, items)
                    except BaseException as err:  # _run only raises for cancellation or a single failing item
                        results = [err] * len(items)
                else:
                    results = self._run(items)  # on the loop: see the class docstring
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
