"""Three defects of BentoML 1.4's HTTP middlewares, corrected where they sit (each outside every middleware a
service can add, so a service cannot correct them from its own layer). ``apply()`` is idempotent.

- Metrics labels: ``RunnerTrafficMetricsMiddleware`` labels each request with its raw path, so requests to
  random paths (each a 401 or 404) grew /metrics without bound (28.6 MB after 5,000). Unknown paths are
  labelled ``OTHER_PATH`` (and answered 404, as before).
- Timer leak: ``TimeoutMiddleware`` schedules ``loop.call_later(timeout, ...)`` per request and never cancels
  it, so each answered request's context (its OpenTelemetry span, its future) stays alive for the whole
  timeout (120 s): the server's memory grew by ~5 KB per request for two minutes. The timer is cancelled when
  the request ends; the timeout and its 504 are unchanged.
- Tracing nobody collects: every request goes through OpenTelemetry's ASGI layer, a server span and a span per
  message received and sent, although without a configured exporter (``tracing.exporter_type``) no span ever
  leaves the process. That cost 0.38 ms of a worker's CPU per request (``/scores``, one client: 1.87 against
  1.48 ms; ``/predict`` 4.6 against 4.3 ms), about 40% of the HTTP stack's. Without an exporter the layer is
  replaced by ``RequestIdLayer``, which keeps what BentoML took from it: an id per request, returned in the
  ``X-BentoML-Request-ID`` header. With an exporter, the layer stays as BentoML built it.
"""

from __future__ import annotations

import asyncio
import random

from crlm.serving.settings import KNOWN_PATHS, KNOWN_PREFIXES

OTHER_PATH = "/(other)"  # the one label of every unknown path (metrics, access log)


def known_path(path: str) -> bool:
    return path in KNOWN_PATHS or path.startswith(KNOWN_PREFIXES)


def apply() -> None:
    _bound_metric_labels()
    _cancel_request_timers()
    _trace_only_when_exported()


def _bound_metric_labels() -> None:
    # deferred: BentoML's internals load only in a server that applies the fixes (apply)
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware as Metrics

    if getattr(Metrics.__call__, "crlm_fixed", False):
        return
    original = Metrics.__call__

    async def call(self, scope, receive, send):
        if scope.get("type") == "http" and not known_path(scope.get("path", "")):
            scope["path"], scope["raw_path"] = OTHER_PATH, OTHER_PATH.encode()
        return await original(self, scope, receive, send)

    call.crlm_fixed = True  # type: ignore[attr-defined]
    Metrics.__call__ = call  # type: ignore[method-assign]  # the monkeypatch is the point of this module


def _cancel_request_timers() -> None:
    # deferred: BentoML's internals load only in a server that applies the fixes (apply)
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from starlette.responses import JSONResponse

    if getattr(TimeoutMiddleware.__call__, "crlm_fixed", False):
        return

    async def call(self, scope, receive, send):  # BentoML's own, with the timer cancelled at the end
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                    status_code=504)
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    call.crlm_fixed = True  # type: ignore[attr-defined]
    TimeoutMiddleware.__call__ = call  # type: ignore[method-assign]  # likewise


def tracing_exported() -> bool:
    """Whether BentoML's configuration names a tracing exporter (``tracing.exporter_type``): the only case in
    which a span can leave the server."""
    # deferred: BentoML's container loads its configuration (apply)
    from bentoml._internal.container import BentoMLContainer

    return BentoMLContainer.tracing.exporter_type.get() is not None


class RequestIdLayer:
    """Pure ASGI layer in place of OpenTelemetry's when nothing is traced: each HTTP request gets a random 64-bit
    id (``trace_context.request_id``, which BentoML returns as ``X-BentoML-Request-ID``), as the server span's id
    was before."""

    def __init__(self, app):
        # deferred: BentoML's internals load only in a server that applies the fixes (apply)
        from bentoml._internal.context import trace_context

        self.app, self.trace_context = app, trace_context

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.trace_context.request_id = random.getrandbits(64) or 1
        return await self.app(scope, receive, send)


def _trace_only_when_exported() -> None:
    # deferred: BentoML's internals load only in a server that applies the fixes (apply)
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    built = ServiceAppFactory.middlewares
    if getattr(built.fget, "crlm_fixed", False):
        return

    def middlewares(self) -> list:
        found = built.fget(self)
        if tracing_exported():
            return found
        return [Middleware(RequestIdLayer) if m.cls is OpenTelemetryMiddleware else m for m in found]

    middlewares.crlm_fixed = True  # type: ignore[attr-defined]
    ServiceAppFactory.middlewares = property(middlewares)  # the monkeypatch is the point of this module
