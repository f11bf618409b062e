"""Admission control: the outermost layer of each worker's ASGI app, in front of BentoML's own middlewares.

Each worker counts the API requests (``POST`` to a route with a JSON body) it has admitted and not yet answered:
answering, or queued for the models in the micro-batcher. Past ``CRLM_MAX_CONCURRENCY`` a request is answered
503 with ``Retry-After`` at once, before a byte of its body is read and before BentoML's metrics, tracing,
access-log and timeout middlewares have spent anything on it: under overload a shed request costs the worker
only uvicorn's parsing of its head, so the excess is refused in milliseconds instead of queueing in front of
the models, and the admitted requests keep the latency of a bounded queue (Little's law: about the bound
divided by the worker's throughput). Probes, pages and documents are never shed.

Why not uvicorn's own options: ``limit_concurrency`` counts open connections (idle keep-alive ones too) and
BentoML 1.4 does not pass it through; a smaller listen ``backlog`` makes the kernel drop new connections,
which a client only retries after a second: a slow failure, not a fast 503.

``install(service)`` makes every ASGI app BentoML builds for ``service`` (``Service.to_asgi``: the server's
workers and in-process test clients alike) start with this layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from _bentoml_impl.server.app import ServiceAppFactory

from crlm.serving.errors import RequestError, problem
from crlm.serving.settings import BODY_KEYS, DEFAULT_MAX_CONCURRENCY, DEFAULT_RETRY_AFTER_S, ServiceSettings


@dataclass(frozen=True)
class AdmissionSettings:
    """The bound on admitted API requests per worker and the ``Retry-After`` of a shed one (seconds)."""

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    retry_after_s: int = DEFAULT_RETRY_AFTER_S

    @classmethod
    def from_env(cls) -> AdmissionSettings:
        s = ServiceSettings.from_env()  # validated, parsed once per distinct environment
        return cls(s.max_concurrency, s.retry_after_s)


class AdmissionMiddleware:
    """Pure ASGI middleware: counts this worker's admitted API requests, sheds past the bound.

    Parameters
    ----------
    app : ASGI app
        Everything behind (BentoML's app with its middlewares, the guard, the service).
    settings : AdmissionSettings, optional
        Fixed settings; None: the environment's (``CRLM_MAX_CONCURRENCY``, ``CRLM_RETRY_AFTER_S``).
    """

    def __init__(self, app, settings: AdmissionSettings | None = None):
        self.app = app
        self.settings = settings or AdmissionSettings.from_env()
        self.in_flight = 0  # admitted API requests of this worker not yet answered
        self.shed = 0  # requests refused since the start (for tests and the benchmark)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in BODY_KEYS:
            return await self.app(scope, receive, send)
        s = self.settings
        if self.in_flight >= s.max_concurrency:  # at once: a queue past the bound only adds latency
            self.shed += 1
            err = RequestError(503, "the server is at capacity; retry after the delay in Retry-After",
                               [problem("request", f"at most {s.max_concurrency} requests at once per worker "
                                                   "(CRLM_MAX_CONCURRENCY)")],
                               headers={"Retry-After": str(s.retry_after_s)})
            return await err.response()(scope, receive, send)
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


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
