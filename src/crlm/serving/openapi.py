"""The complete OpenAPI document: BentoML's (the API routes and probes, generated from the input specs and
response models) plus every status the guard and the service answer, the mounted routes (/model_info,
/schema/patient, /ui) and /metrics, so that a client or a fuzzer sees every route and every answer."""

from __future__ import annotations

import copy

from crlm.serving.settings import BODY_KEYS

ERROR = {"$ref": "#/components/schemas/RequestError"}
ERROR_SCHEMA = {
    "title": "RequestError", "type": "object", "required": ["error", "errors"],
    "properties": {
        "error": {"type": "string", "description": "what was refused (never a submitted value)"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "rule", "message"],
            "properties": {"field": {"type": "string"}, "rule": {"type": "string"}, "message": {"type": "string"}}}},
    },
}
_STATUSES = {
    400: "malformed JSON, or a key the route does not take (field: body or the key)",
    401: "missing or wrong API key (only when CRLM_API_KEY is set)",
    413: "body larger than CRLM_MAX_BODY_BYTES, or more than 1,000 patients",
    415: "a Content-Type other than application/json, or a Content-Encoding other than identity",
    422: "a patient that breaks the schema (each field named with its rule)",
    503: "models loading or not loadable, or the worker at capacity (Retry-After)",
}
_KEYED = {"description": _STATUSES[401], "content": {"application/json": {"schema": ERROR}}}
_UNAVAILABLE = {"description": "the models are not loaded", "content": {"application/json": {"schema": {
    "type": "object"}}}}


def _json(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict:
    return {str(c): {"description": _STATUSES[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _get(summary: str, responses: dict, tag: str = "Service APIs") -> dict:
    return {"get": {"summary": summary, "tags": [tag], "responses": responses,
                    "operationId": "crlm__" + summary.split()[0].lower().strip("/").replace("/", "_")}}


EXTRA_PATHS = {
    "/model_info": _get("model_info: which models answer, how they were built, their cards",
                        {"200": _json("the models' cards"), "503": _UNAVAILABLE, "401": _KEYED}),
    "/models": _get("models: every served model (endpoint, cohort, fields it needs, metrics with intervals)",
                    {"200": _json("the served models, the default pair and the models left out"),
                     "503": _UNAVAILABLE, "401": _KEYED}),
    "/schema/patient": _get("schema_patient: the patient fields (units, ranges, categories, rules)",
                            {"200": _json("the field catalogue and the patient's JSON schema"),
                             "422": {"description": "os or rfs names no served model of that endpoint",
                                     "content": {"application/json": {"schema": ERROR}}}}),
    "/ui": _get("ui: the web calculator (redirects to /ui/)", {"307": {"description": "redirect to /ui/"}}),
    "/ui/": _get("ui_page: the web calculator page", {"200": {"description": "the page",
                                                             "content": {"text/html": {"schema": {"type": "string"}}}}}),
    "/ui/config.json": _get("ui_config: what the page needs to know", {"200": _json("api_key_required, max_batch")}),
    "/metrics": _get("metrics: Prometheus metrics (the API key is needed when one is set)",
                     {"200": {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": _KEYED},
                     tag="Infrastructure"),
}


def schema_of(value, depth: int = 1) -> dict:
    """A loose OpenAPI 3.0 schema of a JSON value: types, and for objects (down to ``depth`` levels) their
    keys as required properties; below that, and for list items, only the type. Every scalar is nullable
    (an answer's optional values are null in some patients)."""
    if isinstance(value, dict):
        out: dict = {"type": "object"}
        if depth > 0 and value:
            out["properties"] = {k: schema_of(v, depth - 1) for k, v in value.items()}
            out["required"] = list(value)
        return out
    if isinstance(value, list):
        return {"type": "array", "items": {"type": "object"} if value and isinstance(value[0], dict) else {}}
    kind = {bool: "boolean", int: "number", float: "number", str: "string"}.get(type(value))
    return {"type": kind, "nullable": True} if kind else {"nullable": True}


def _query(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string"}}


EXTRA_PATHS["/schema/patient"]["get"]["parameters"] = [_query("os", "an OS model's name (GET /models)"),
                                                       _query("rfs", "an RFS model's name (GET /models)")]


def _restrict_options(paths: dict, choices: dict) -> None:
    """The served document names the loaded models and the curves' end, so a body it accepts is answered."""
    for route in ("/predict", "/predict_batch"):
        props = (paths.get(route, {}).get("post", {}).get("requestBody", {}).get("content", {})
                 .get("application/json", {}).get("schema", {}).get("properties", {}))
        for ep in ("os", "rfs"):
            if "models" in props and choices.get(ep):
                props["models"].setdefault("properties", {})[ep] = {"type": "string", "enum": list(choices[ep])}
        if "event_free_at_months" in props and choices.get("event_free_max") is not None:
            props["event_free_at_months"].update({"maximum": choices["event_free_max"], "exclusiveMaximum": True})
    for ep in ("os", "rfs"):
        for param in paths["/schema/patient"]["get"]["parameters"]:
            if param["name"] == ep and choices.get(ep):
                param["schema"] = {"type": "string", "enum": list(choices[ep])}


def complete_openapi(base: dict, example: dict | None = None, choices: dict | None = None) -> dict:
    """``base`` (BentoML's document) with every status of the API routes, the key-protected routes' 401, and
    the routes BentoML does not document.

    Parameters
    ----------
    base : dict
        ``Service.openapi_spec.asdict()``.
    example : dict, optional
        One /predict answer of the loaded models: the score is described from it (the endpoint answer's
        schema is its type, ``crlm.answer.EndpointAnswer``).
    choices : dict, optional
        The served model names per endpoint (``os``, ``rfs``) and ``event_free_max`` (the earliest end of the
        served models' curves): the request's ``models`` and ``event_free_at_months`` are restricted to them.

    Returns
    -------
    dict
        A new document (``base`` is not changed).
    """
    doc = copy.deepcopy(base)
    paths = doc.setdefault("paths", {})
    for route in BODY_KEYS:
        post = paths.get(route, {}).get("post")
        if post is None:
            continue
        # BentoML keys its statuses by int: as text, so that 400 is one key, not "400" beside 400 in the JSON
        post["responses"] = {str(k): v for k, v in post["responses"].items()} | _errors(400, 401, 413, 415, 422, 503)
        body = post.get("requestBody")
        if body:
            body["required"] = True
    for path, item in EXTRA_PATHS.items():
        paths.setdefault(path, copy.deepcopy(item))
    if choices:
        _restrict_options(paths, choices)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["RequestError"] = ERROR_SCHEMA
    if example is not None:
        score = next(iter(example["scores"].values()))
        schemas["Score"] = {**schemas.get("Score", {}), **schema_of(score), "additionalProperties": True}
    return doc
