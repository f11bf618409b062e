"""Keep-alive connections spread over the worker processes.

The workers share one listening socket, and a worker accepts every connection pending when its event loop
looks (asyncio accepts up to the backlog at once): eight keep-alive clients that connect together can all land
on one worker and stay there, so half the machine idles while the other half queues (measured: 8 and 0
connections in one of three runs of ``benchmarks/serving.py``, 608 answers/s against 754 balanced). A worker
that carries clearly more of the load than the least loaded one therefore closes the connection after its
answer (``Connection: close``, which uvicorn honours); the client reconnects, and the kernel hands the new
connection to whichever worker accepts first, normally an idle one (the busy worker's event loop waits for the
GIL behind its models). Nothing is refused and no request is lost: only a reconnection, when unbalanced.

Load is each worker's count of API requests in flight averaged over time (an exponential average with the
time constant ``LOAD_TIME_S``: a batch of a second weighs as much as its duration, a burst of a millisecond
little), kept in a small shared file of one slot per worker (``mmap``) beside the readiness markers of the
server. Each slot holds the average, the count and when they were written, so that a reader brings an idle
worker's average to the present (it decays towards its count, which is 0).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import bentoml

from crlm.serving.readiness import LOAD_FILE, server_directory
from crlm.serving.settings import default_workers

__all__ = ["LOAD_TIME_S", "MARGIN", "ConnectionBalance"]

# A worker closes a connection when its load exceeds the least loaded worker's by at least this many requests
# in flight: 8 clients split 5 / 3 are rebalanced, 4 / 4 with the fluctuation of clients between two requests
# is left alone.
MARGIN = 1.5
# The time constant of the load (seconds).
LOAD_TIME_S = 0.1
SLOT = struct.Struct("ddd")  # average, count in flight, time written (time.monotonic: one clock for all processes)


class ConnectionBalance:
    """One worker's view of the load of every worker of its server.

    Parameters
    ----------
    workers : int
        Worker processes of the server (>= 2).
    index : int
        This worker's slot, 0 to ``workers - 1``.
    path : Path, optional
        The shared file (default: ``readiness.LOAD_FILE`` in ``readiness.server_directory()``).
    clock : callable, optional
        Seconds on a clock every worker shares (``time.monotonic``); tests inject a fake one.
    """

    def __init__(self, workers: int, index: int, path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if workers < 2 or not 0 <= index < workers:
            raise ValueError(f"a balance needs >= 2 workers and a slot among them (got {workers}, {index})")
        self.workers, self.index, self.clock = workers, index, clock
        self.path = path or server_directory() / LOAD_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = SLOT.size * workers
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # zeros: every worker idle
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.load, self.in_flight, self._when = 0.0, 0, clock()
        self._write()

    @classmethod
    def for_this_worker(cls) -> ConnectionBalance | None:
        """The balance of a worker of ``bentoml serve`` with several workers; None otherwise (in-process, one
        worker, or no shared temporary directory)."""
        index, workers = bentoml.server_context.worker_index, default_workers()
        if index is None or workers < 2:
            return None
        with contextlib.suppress(OSError, ValueError):
            return cls(workers, (int(index) - 1) % workers)  # BentoML numbers its workers from 1
        return None

    def _write(self) -> None:
        SLOT.pack_into(self._map, SLOT.size * self.index, self.load, self.in_flight, self._when)

    def observe(self, in_flight: int) -> None:
        """This worker's count of API requests in flight changed (an admission or an answer) to ``in_flight``."""
        now = self.clock()
        self.load = _decayed(self.load, self.in_flight, now - self._when)
        self.in_flight, self._when = in_flight, now
        self._write()

    def loads(self) -> list[float]:
        """Every worker's load now, by slot."""
        now = self.clock()
        out = []
        for i in range(self.workers):
            load, count, when = SLOT.unpack_from(self._map, SLOT.size * i)
            out.append(_decayed(load, count, max(0.0, now - when)))
        return out

    def should_close(self) -> bool:
        """Whether this worker should close the connection it answers on: its load exceeds the least loaded
        other worker's by at least ``MARGIN``."""
        loads = self.loads()
        others = [v for i, v in enumerate(loads) if i != self.index]
        return loads[self.index] - min(others) >= MARGIN


def _decayed(load: float, count: float, elapsed: float) -> float:
    """The average ``elapsed`` seconds later, the count having stayed ``count`` meanwhile."""
    return count + (load - count) * math.exp(-elapsed / LOAD_TIME_S)
