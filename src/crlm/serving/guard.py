"""The guard: API key, body size, content type and JSON well-formedness, before the service sees a byte.

It parses each API body once and carries the parsed document in the ASGI scope (``PARSED_BODY``); the
service's input specs read it from there, so BentoML never parses (or logs) a body: its pydantic error of a
body it cannot parse quotes the input, and nothing of a patient may reach the logs.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from crlm.serving.errors import RequestError, json_type, problem
from crlm.serving.settings import (
    BODY_KEYS,
    DEFAULT_MAX_BODY_BYTES,
    OPEN_PATHS,
    OPEN_PREFIXES,
    ServiceSettings,
)

PARSED_BODY = "crlm.parsed_body"  # the ASGI scope key of the parsed JSON document


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> Any:
    """Strict JSON (RFC 8259: no NaN/Infinity) or a 400 naming the problem."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RequestError(400, "malformed JSON", [problem("body", "a JSON object (RFC 8259)", str(err))]) from None


def check_body(path: str, body: bytes) -> dict:
    """The API body of ``path``: a JSON object with the route's keys only (the parsed document)."""
    doc = parse_json_body(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise RequestError(400, "the body must be a JSON object",
                           [problem("body", "a JSON object", f"got {json_type(doc)}")])
    allowed = BODY_KEYS[path]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise RequestError(400, "unknown key(s) in the body",
                           [problem(k, f"not a key of this request; the body is "
                                       f"{{{', '.join(repr(a) for a in allowed)}: ...}}") for k in unknown])
    return doc


@dataclass
class GuardSettings:
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    open_paths: frozenset[str] = OPEN_PATHS
    open_prefixes: tuple[str, ...] = OPEN_PREFIXES
    body_paths: dict = field(default_factory=lambda: dict(BODY_KEYS))

    @classmethod
    def from_env(cls) -> GuardSettings:
        s = ServiceSettings.from_env()
        return cls(api_key=s.api_key, max_body_bytes=s.max_body_bytes)


def authorised(headers: dict[str, str], api_key: str) -> bool:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, compared in constant time."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


class GuardMiddleware:
    """Pure ASGI middleware in front of the whole service (API routes, mounted pages)."""

    def __init__(self, app, settings: GuardSettings | None = None):
        self.app = app
        self.fixed = settings  # None: read the environment at each request (the key can be set or rotated)

    @property
    def settings(self) -> GuardSettings:
        return self.fixed or GuardSettings.from_env()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        path = scope.get("path", "")
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if s.api_key and path not in s.open_paths and not path.startswith(s.open_prefixes) \
                    and not authorised(headers, s.api_key):
                err = RequestError(401, "missing or wrong API key",
                                   [problem("X-API-Key", "the service's API key in X-API-Key or "
                                                         "Authorization: Bearer")])
                resp = err.response()
                resp.headers["WWW-Authenticate"] = "Bearer"
                return await resp(scope, receive, send)
            if scope.get("method") == "POST" and path in s.body_paths:
                ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
                if ctype and ctype != "application/json" and not ctype.endswith("+json"):
                    raise RequestError(415, "the body must be application/json",
                                       [problem("Content-Type", "application/json", f"got {ctype}")])
                declared = headers.get("content-length")
                if declared is not None and (not declared.isdigit() or int(declared) > s.max_body_bytes):
                    raise self._too_large(s.max_body_bytes)
                body = await self._read_body(receive, s.max_body_bytes)
                scope[PARSED_BODY] = check_body(path, body)
                receive = _replay(body, receive)
        except RequestError as err:
            return await err.response()(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def _too_large(limit: int) -> RequestError:
        return RequestError(413, "request body too large",
                            [problem("body", f"at most {limit} bytes", f"at most {limit} bytes")])

    async def _read_body(self, receive, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
