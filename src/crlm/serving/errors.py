"""A refused request: an HTTP status and a JSON body naming each field and the rule it breaks."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class RequestError(Exception):
    """A refused request: HTTP status and a JSON body ``{"error": ..., "errors": [{field, rule, message}]}``.

    Parameters
    ----------
    status : int
        The HTTP status (4xx for the client's mistakes, 503 when the models are not ready or the server is full).
    error : str
        One sentence on what was refused (never a patient's value).
    errors : list of dict, optional
        ``problem`` entries, one per field.
    headers : dict, optional
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, error: str, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.body = {"error": error, "errors": errors or []}
        self.headers = headers or {}

    def response(self):
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def problem(field_name: str, rule: str, message: str | None = None) -> dict:
    """One entry of a refusal: the field, the rule it breaks, and pydantic's message (no input echoed)."""
    return {"field": field_name, "rule": rule, "message": message or rule}


def json_type(obj: Any) -> str:
    """The JSON type of a parsed value, as an error message names it."""
    if obj is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(obj), type(obj).__name__)
