"""Two defects of BentoML 1.4's HTTP middlewares, corrected where they sit (each outside every middleware a
service can add, so a service cannot correct them from its own layer). ``apply()`` is idempotent.

- Metrics labels: ``RunnerTrafficMetricsMiddleware`` labels each request with its raw path, so requests to
  random paths (each a 401 or 404) grew /metrics without bound (28.6 MB after 5,000). Unknown paths are
  labelled ``OTHER_PATH`` (and answered 404, as before).
- Timer leak: ``TimeoutMiddleware`` schedules ``loop.call_later(timeout, ...)`` per request and never cancels
  it, so each answered request's context (its OpenTelemetry span, its future) stays alive for the whole
  timeout (120 s): the server's memory grew by ~5 KB per request for two minutes. The timer is cancelled when
  the request ends; the timeout and its 504 are unchanged.
"""

from __future__ import annotations

import asyncio

from crlm.serving.settings import KNOWN_PATHS, KNOWN_PREFIXES

OTHER_PATH = "/(other)"  # the one label of every unknown path (metrics, access log)


def known_path(path: str) -> bool:
    return path in KNOWN_PATHS or path.startswith(KNOWN_PREFIXES)


def apply() -> None:
    _bound_metric_labels()
    _cancel_request_timers()


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
