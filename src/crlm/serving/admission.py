"""Admission control: the outermost layer of each worker's ASGI app, in front of BentoML's own middlewares.

Each worker counts the API requests (``POST`` to a route with a JSON body) it has admitted and not yet answered:
answering, or queued for the models in the micro-batcher. A new one is admitted while the wait it can expect
stays under a target queue delay; past it, it is answered 503 with ``Retry-After`` at once, before a byte of its
body is read and before BentoML's metrics, tracing, access-log and timeout middlewares have spent anything on
it: under overload a shed request costs the worker only uvicorn's parsing of its head. Probes, pages and
documents are never shed.

The expected wait is Little's law on this worker's own measurements (``QueueDelayBound``): the requests in
flight times the worker's recent service time per request (seconds of busy time per answer, an EWMA: with
the micro-batcher it falls as batches grow, and it grows when the core is shared or a large batch is
answered). The target is ``CRLM_MAX_QUEUE_MS``, by default twice the recent latency of a ``/predict``
answered by an idle worker: an admitted request is meant to wait about two unloaded answers, whatever the
models' speed (measured with ``benchmarks/load.py``: docs/SERVING.md, "Load shedding"). A count bound alone (the former rule) lets
admitted requests wait ``bound x service time``: fine for one machine and one model, several times the
unloaded latency for a faster one. ``CRLM_MAX_CONCURRENCY`` stays a hard cap; a request that finds the worker
idle is always admitted.

Bursts pass, standing queues are shed (CoDel's distinction: Nichols & Jacobson 2012, "Controlling Queue
Delay", ACM Queue 10(5)): the target rule applies only once the expected wait has stayed at or above the
target for ``OVERLOAD_INTERVAL_S`` (CoDel's 100 ms interval), and stops applying when the worker goes idle or
the wait has stayed under the target for as long. Eight requests arriving together at an idle worker are all
answered (the micro-batcher takes them at once); a rate past capacity is shed within a tenth of a second.

Why not uvicorn's own options: ``limit_concurrency`` counts open connections (idle keep-alive ones too) and
BentoML 1.4 does not pass it through; a smaller listen ``backlog`` makes the kernel drop new connections,
which a client only retries after a second: a slow failure, not a fast 503.

The same layer spreads keep-alive connections over the workers: an answer of a worker that carries clearly
more than another closes its connection (``crlm.serving.balance``).

``install(service)`` makes every ASGI app BentoML builds for ``service`` (``Service.to_asgi``: the server's
workers and in-process test clients alike) start with this layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from _bentoml_impl.server.app import ServiceAppFactory

from crlm.serving.balance import ConnectionBalance
from crlm.serving.errors import RequestError, problem
from crlm.serving.settings import (
    BODY_KEYS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_QUEUE_MS,
    DEFAULT_RETRY_AFTER_S,
    ServiceSettings,
)

__all__ = ["AUTO_TARGET_FACTOR", "OVERLOAD_INTERVAL_S", "AdmissionMiddleware", "AdmissionSettings", "QueueDelayBound",
           "install", "shed_recently"]

# The automatic target queue delay, in lone /predict answers (answered within about 1 + this many).
AUTO_TARGET_FACTOR = 2.0
# EWMA weights: the service time per answer (a batch's answers come together: one carries the batch's busy
# time, the others ~0, so the weight is small enough to average over a few batches) and a lone answer's latency.
SERVICE_ALPHA = 0.05
LONE_ALPHA = 0.1
# The route whose lone answers set the automatic target (the micro-batched one; /scores needs no model and
# a /predict_batch of 1,000 patients takes a second).
LONE_ROUTE = "/predict"
# How long the expected wait must stay at or above the target before the target rule sheds (CoDel's interval).
OVERLOAD_INTERVAL_S = 0.100

_last_shed = [float("-inf")]  # when this process last shed a request (time.perf_counter)


def shed_recently(within_s: float = OVERLOAD_INTERVAL_S) -> bool:
    """Whether this worker process shed a request in the last ``within_s`` seconds (it is past capacity: the
    micro-batcher then runs its calls in a thread, so that the event loop keeps shedding during them)."""
    return time.perf_counter() - _last_shed[0] < within_s


@dataclass(frozen=True)
class AdmissionSettings:
    """The admission rule of a worker: the hard cap on admitted API requests, the target queue delay
    (milliseconds; None: automatic, ``AUTO_TARGET_FACTOR`` lone answers; 0: none, the cap alone) and the
    ``Retry-After`` of a shed request (seconds)."""

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    max_queue_ms: int | None = DEFAULT_MAX_QUEUE_MS

    @classmethod
    def from_env(cls) -> AdmissionSettings:
        s = ServiceSettings.from_env()  # validated, parsed once per distinct environment
        return cls(s.max_concurrency, s.retry_after_s, s.max_queue_ms)


class QueueDelayBound:
    """The admission decision of one worker: admit while the expected wait stays under the target.

    Expected wait of a newcomer = requests in flight x ``service_s``, the EWMA of the worker's busy seconds
    per answer (busy: at least one request in flight; each answer's sample is the busy time since the
    previous answer, so under saturation it is one over the throughput, micro-batching included). Target:
    ``max_queue_ms``, or ``AUTO_TARGET_FACTOR`` x ``lone_s``, the EWMA latency of a ``/predict`` answered
    (200) by an idle worker. Until both are measured, and with ``max_queue_ms=0``, only the cap applies.
    The target sheds only while the worker is ``overloaded``: the expected wait has stayed at or above the
    target for ``OVERLOAD_INTERVAL_S`` (a standing queue, not a burst); that ends when the worker goes idle or
    the wait has stayed under the target for as long.

    Parameters
    ----------
    settings : AdmissionSettings
        The cap and the target.
    clock : callable, optional
        Seconds, monotonic (``time.perf_counter``); tests inject a fake one.
    """

    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.perf_counter):
        self.settings = settings
        self.clock = clock
        self.in_flight = 0  # admitted API requests not yet answered
        self.service_s: float | None = None  # EWMA busy seconds per answer
        self.lone_s: float | None = None  # EWMA latency of a /predict answered by an idle worker
        self._busy = 0.0  # busy seconds since the last answer
        self._last = clock()
        self.overloaded = False  # a standing queue: the target rule sheds
        self._above_since: float | None = None  # since when the expected wait is at or above the target
        self._below_since: float | None = None  # since when it is under the target

    def target_s(self) -> float | None:
        """The target queue delay in seconds (None: not yet measured, or no target)."""
        fixed = self.settings.max_queue_ms
        if fixed is not None:
            return fixed / 1000 if fixed > 0 else None
        return None if self.lone_s is None else AUTO_TARGET_FACTOR * self.lone_s

    def expected_wait_s(self) -> float:
        """What a request admitted now should wait for those ahead of it (seconds; 0 before a measurement)."""
        return self.in_flight * (self.service_s or 0.0)

    def refusal(self) -> str | None:
        """None: admit; else the rule a request arriving now would break (for its 503)."""
        if self.in_flight >= self.settings.max_concurrency:
            return f"at most {self.settings.max_concurrency} requests at once per worker (CRLM_MAX_CONCURRENCY)"
        target = self.target_s()
        if target is None or self.service_s is None:
            return None
        above = self.in_flight > 0 and self.expected_wait_s() >= target
        self._follow(above)
        if above and self.overloaded:
            return (f"the expected wait ({self.in_flight} in flight x {1000 * self.service_s:.1f} ms each) has "
                    f"stayed at or above the target queue delay of {1000 * target:.0f} ms for "
                    f"{1000 * OVERLOAD_INTERVAL_S:.0f} ms (CRLM_MAX_QUEUE_MS)")
        return None

    def _follow(self, above: bool) -> None:
        """Enter the overloaded state after ``OVERLOAD_INTERVAL_S`` at or above the target; leave it when idle
        or after as long under it."""
        now = self.clock()
        if above:
            self._below_since = None
            self._above_since = now if self._above_since is None else self._above_since
            self.overloaded = self.overloaded or now - self._above_since >= OVERLOAD_INTERVAL_S
        else:
            self._above_since = None
            self._below_since = now if self._below_since is None else self._below_since
            if self.in_flight == 0 or now - self._below_since >= OVERLOAD_INTERVAL_S:
                self.overloaded = False

    def admitted(self) -> tuple[float, bool]:
        """Count a request in; returns its token (admission time, whether the worker was idle)."""
        now = self._tick()
        self.in_flight += 1
        return now, self.in_flight == 1

    def answered(self, token: tuple[float, bool], lone_sample: bool) -> None:
        """Count a request out; ``lone_sample``: its latency may update ``lone_s`` (a /predict answered 200)."""
        now = self._tick()
        self.in_flight -= 1
        sample, self._busy = self._busy, 0.0
        self.service_s = sample if self.service_s is None else \
            self.service_s + SERVICE_ALPHA * (sample - self.service_s)
        started, idle = token
        if idle and lone_sample:
            latency = now - started
            self.lone_s = latency if self.lone_s is None else self.lone_s + LONE_ALPHA * (latency - self.lone_s)

    def _tick(self) -> float:
        now = self.clock()
        if self.in_flight:
            self._busy += now - self._last
        self._last = now
        return now


class AdmissionMiddleware:
    """Pure ASGI middleware: counts this worker's admitted API requests, sheds past the expected-wait target.

    Parameters
    ----------
    app : ASGI app
        Everything behind (BentoML's app with its middlewares, the guard, the service).
    settings : AdmissionSettings, optional
        Fixed settings; None: the environment's (``CRLM_MAX_CONCURRENCY``, ``CRLM_MAX_QUEUE_MS``,
        ``CRLM_RETRY_AFTER_S``).
    clock : callable, optional
        The decision's clock (``QueueDelayBound``).
    balance : ConnectionBalance, optional
        This worker's share of the load among the server's workers (``crlm.serving.balance``; default: the
        server's, when it has several workers): an answer of a worker carrying clearly more than another
        closes its connection (``Connection: close``), so that the client reconnects to a less loaded one.
    """

    def __init__(self, app, settings: AdmissionSettings | None = None,
                 clock: Callable[[], float] = time.perf_counter, balance: ConnectionBalance | None = None):
        self.app = app
        self.settings = settings or AdmissionSettings.from_env()
        self.bound = QueueDelayBound(self.settings, clock)
        self.balance = balance if balance is not None else ConnectionBalance.for_this_worker()
        self.shed = 0  # requests refused since the start (for tests and the benchmark)
        self.closed = 0  # connections closed to rebalance the workers (likewise)

    @property
    def in_flight(self) -> int:
        """Admitted API requests of this worker not yet answered."""
        return self.bound.in_flight

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in BODY_KEYS:
            return await self.app(scope, receive, send)
        rule = self.bound.refusal()
        if rule is not None:  # at once: a longer queue only adds latency
            self.shed += 1
            _last_shed[0] = time.perf_counter()
            err = RequestError(503, "the server is at capacity; retry after the delay in Retry-After",
                               [problem("request", rule)], headers={"Retry-After": str(self.settings.retry_after_s)})
            return await err.response()(scope, receive, send)
        token = self.bound.admitted()
        balance = self.balance
        if balance is not None:
            balance.observe(self.bound.in_flight)
        status = []

        async def send_status(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if balance is not None and balance.should_close():
                    self.closed += 1
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            return await self.app(scope, receive, send_status)
        finally:
            self.bound.answered(token, scope["path"] == LONE_ROUTE and status[:1] == [200])
            if balance is not None:
                balance.observe(self.bound.in_flight)
def install(service, settings: AdmissionSettings | None = None) -> None:
    """Put ``AdmissionMiddleware`` in front of every app BentoML builds for ``service`` (idempotent).

    BentoML builds a service's app in ``ServiceAppFactory.__call__`` (Starlette, its middleware list starting
    with its own metrics and tracing); a service's ``add_asgi_middleware`` only adds layers behind those, so
    the built app itself is wrapped.
    """
    original = ServiceAppFactory.__call__
    served = getattr(original, "crlm_admitted", None)
    if served is None:
        served = []

        def build(self):
            app = original(self)
            if any(self.service is s for s, _ in served):
                return AdmissionMiddleware(app, next(c for s, c in served if s is self.service))
            return app

        build.crlm_admitted = served  # type: ignore[attr-defined]
        ServiceAppFactory.__call__ = build
    if not any(service is s for s, _ in served):
        served.append((service, settings))
