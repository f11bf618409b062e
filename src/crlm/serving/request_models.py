"""The request's patient, generated from ``crlm.schema``: the pydantic model, its OpenAPI 3.0 rendering and
the field catalogue the web form reads (``GET /schema/patient``)."""

from __future__ import annotations

import functools

from pydantic import BaseModel

from crlm import schema
from crlm.scores import SCORES
from crlm.serving.settings import DISCLAIMER, MAX_BATCH, SERVED_SCORES


@functools.cache
def patient_model() -> type[BaseModel]:
    return schema.patient_model()


def form_fields() -> list[schema.Field]:
    """The fields a client may send (the schema's input fields)."""
    return schema.input_fields()


@functools.cache
def score_inputs() -> frozenset[str]:
    """The fields the served clinical scores read."""
    return frozenset(f for name in SERVED_SCORES for f in SCORES[name].fields)


def _openapi_property(prop: dict) -> dict:
    """pydantic's JSON schema of one field, rewritten for OpenAPI 3.0 (``nullable`` instead of a null type)."""
    prop = dict(prop)
    options = prop.pop("anyOf", None)
    if options:
        concrete = [o for o in options if o.get("type") != "null"]
        prop.update(concrete[0] if len(concrete) == 1 else {"anyOf": concrete})
        if len(concrete) < len(options):
            prop["nullable"] = True
    if "const" in prop:  # a one-category Literal
        prop["enum"] = [prop.pop("const")]
    prop.pop("default", None)
    return prop


@functools.cache
def patient_openapi_schema() -> dict:
    """The patient object as OpenAPI 3.0 documents it (generated from the pydantic model of the schema)."""
    js = patient_model().model_json_schema()
    props = {name: _openapi_property(p) for name, p in js["properties"].items()}
    return {"title": "Patient", "type": "object", "properties": props, "required": js.get("required", []),
            "additionalProperties": False,
            "description": "One patient's fields (crlm.schema); absent or null = unknown. "
                           "GET /schema/patient lists units, ranges and categories."}


def field_spec(f: schema.Field, used_by_models: set[str] | None = None, required: set[str] | None = None,
               extra: bool = False) -> dict:
    """One field as the web form and API clients need it (``required``: the chosen models' required fields,
    default the schema's; ``extra``: a centre's own field, declared by its model)."""
    return {
        "name": f.name, "label": f.label, "kind": f.kind, "unit": f.unit, "minimum": f.minimum,
        "maximum": f.maximum, "step": 1 if f.kind == "int" else None, "categories": list(f.categories or []),
        "required": f.required_for_prediction if required is None else f.name in required, "block": f.block, "timing": f.timing,
        "description": f.description, "rule": f.rule, "derived_from": list(f.derived_from),
        "used_by_models": None if used_by_models is None else f.name in used_by_models,
        "used_by_scores": f.name in score_inputs(), "extra": extra,
    }


def schema_document(used_by_models: set[str] | None = None, engine=None) -> dict:
    """``GET /schema/patient``: the catalogue's input fields and the JSON schema of the request's patient; with
    ``engine`` (a served OS/RFS pair), that pair's: its required fields, its centre's own fields, its models."""
    required = None if engine is None else set(engine.required)
    extras = () if engine is None else engine.extra_fields
    return {
        "fields": [field_spec(f, used_by_models, required) for f in form_fields()]
        + [field_spec(f, used_by_models, required, extra=True) for f in extras],
        "blocks": ["clinical", "genomic", "response", "operative", "score", "id"],
        "models": None if engine is None else {ep: m.ref["name"] for ep, m in engine.models.items()},
        "json_schema": (patient_model() if engine is None else engine.patient_model).model_json_schema(),
        "max_batch": MAX_BATCH,
        "disclaimer": DISCLAIMER,
    }
