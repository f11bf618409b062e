"""The guard: API key, body size, content type and JSON well-formedness, before the service sees a byte (load
shedding is earlier still: ``crlm.serving.admission``, in front of BentoML's middlewares).

It parses each API body once and carries the parsed document in the ASGI scope (``PARSED_BODY``); the
service's input specs read it from there, so BentoML never parses (or logs) a body: its pydantic error of a
body it cannot parse quotes the input, and nothing of a patient may reach the logs.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from crlm.serving.errors import RequestError, json_type, problem
from crlm.serving.settings import (
    BODY_KEYS,
    DEFAULT_MAX_BODY_BYTES,
    MAX_BATCH,
    OPEN_PATHS,
    OPEN_PREFIXES,
    REQUIRED_BODY_KEY,
    ServiceSettings,
)

PARSED_BODY = "crlm.parsed_body"  # the ASGI scope key of the parsed JSON document
BOM = b"\xef\xbb\xbf"


def parse_json_body(body: bytes) -> Any:
    """Strict JSON (RFC 8259: UTF-8, no NaN/Infinity, no lone surrogates, at most 200 levels deep; a leading
    byte-order mark is ignored, as RFC 8259 allows) or a 400 naming the problem (never a value)."""
    try:
        return pydantic_core.from_json(body.removeprefix(BOM), allow_inf_nan=False)
    except ValueError as err:
        rule = ("a JSON object nested at most 200 levels deep" if "recursion limit" in str(err)
                else "a JSON object (RFC 8259, UTF-8)")
        raise RequestError(400, "malformed JSON", [problem("body", rule, str(err))]) from None


def check_body(path: str, body: bytes) -> dict:
    """The API body of ``path``: a JSON object with the route's key (the parsed document), or a 4xx naming
    the key. An empty body is an object without the key."""
    doc = parse_json_body(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise RequestError(400, "the body must be a JSON object",
                           [problem("body", "a JSON object", f"got {json_type(doc)}")])
    allowed = BODY_KEYS[path]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise RequestError(400, "unknown key(s) in the body",
                           [problem("(unknown key)" if _unsafe(k) else k,
                                    f"not a key of this request; the body is "
                                    f"{{{', '.join(repr(a) for a in allowed)}: ...}}") for k in unknown])
    key = REQUIRED_BODY_KEY[path]
    if doc.get(key) is None:
        what = "patient fields" if key == "patient" else f"1 to {MAX_BATCH} patient objects"
        raise RequestError(422, f"the body must be {{{key!r}: ...}}", [problem(key, f"required: {what}")])
    return doc


def _unsafe(name: str) -> bool:
    """A key that cannot be echoed as a field name (control characters, or long enough to be data)."""
    return len(name) > 64 or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in name)


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
        return _guard_settings(s)


@functools.lru_cache(maxsize=8)
def _guard_settings(s: ServiceSettings) -> GuardSettings:
    return GuardSettings(api_key=s.api_key, max_body_bytes=s.max_body_bytes)


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
        self.fixed = settings  # None: the environment's (parsed once per distinct value: the key can be rotated)

    @property
    def settings(self) -> GuardSettings:
        return self.fixed or GuardSettings.from_env()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        path = scope.get("path", "")
        api_call = scope.get("method") == "POST" and path in s.body_paths
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if s.api_key and path not in s.open_paths and not path.startswith(s.open_prefixes) \
                    and not authorised(headers, s.api_key):
                raise RequestError(401, "missing or wrong API key",
                                   [problem("X-API-Key", "the service's API key in X-API-Key or "
                                                         "Authorization: Bearer")],
                                   headers={"WWW-Authenticate": "Bearer"})
            if api_call:
                self._check_headers(headers, s)
        except RequestError as err:
            return await err.response()(scope, receive, send)
        if not api_call:
            return await self.app(scope, receive, send)
        try:
            body = await self._read_body(receive, s.max_body_bytes)
            scope[PARSED_BODY] = check_body(path, body)
        except RequestError as err:
            return await err.response()(scope, receive, send)
        return await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, headers: dict[str, str], s: GuardSettings) -> None:
        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise RequestError(415, "the body must be application/json",
                               [problem("Content-Type", "application/json", f"got {ctype[:40]}")])
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RequestError(415, "compressed bodies are not accepted",
                               [problem("Content-Encoding", "identity (send the JSON uncompressed)")])
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > s.max_body_bytes):
            raise self._too_large(s.max_body_bytes)

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
