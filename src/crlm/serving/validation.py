"""Request validation: a patient (or a list of them) in, a clean record or a refusal naming field and rule out.

No value of the request is ever echoed in an error (the errors reach clients and could reach logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from crlm import schema
from crlm.serving.errors import RequestError, json_type, problem
from crlm.serving.request_models import patient_model
from crlm.serving.settings import MAX_BATCH


def rule_for(field_name: str, error_type: str, catalogue: Mapping[str, schema.Field] | None = None) -> str:
    """The schema's rule for a field (or a centre's own field, in ``catalogue``), as a refusal states it."""
    f = (catalogue or schema.FIELDS_BY_NAME).get(field_name)
    if error_type == "extra_forbidden" or f is None:
        return "not a patient field (GET /schema/patient lists the fields)"
    if error_type == "missing":
        return f"required ({f.rule})"
    if f.block == "id":
        return "text of at most 64 characters, without control characters"
    return f.rule


def validate_patient(obj: Any, model: type[BaseModel] | None = None,
                     catalogue: Mapping[str, schema.Field] | None = None) -> tuple[dict | None, list[dict]]:
    """(clean record without nulls, []) for a valid patient; (None, problems) otherwise. No values echoed.

    ``model``: the pydantic patient model (default: the schema's, for the clinical scores; a served model pair
    has its own: ``Engine.patient_model``); ``catalogue``: its fields by name (for the rules)."""
    if not isinstance(obj, dict):
        return None, [problem("patient", "a JSON object of patient fields (GET /schema/patient)",
                              f"expected an object, got {json_type(obj)}")]
    try:
        valid = (model or patient_model()).model_validate(obj)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False, include_input=False, include_context=False):
            name = str(e["loc"][0]) if e["loc"] else "patient"
            problems.append(problem(name, rule_for(name, e["type"], catalogue), e["msg"]))
        return None, problems
    return valid.model_dump(exclude_none=True), []


def require_patient(obj: Any, model: type[BaseModel] | None = None,
                    catalogue: Mapping[str, schema.Field] | None = None) -> dict:
    """The clean patient, or a 422 naming the fields and their rules (``model``, ``catalogue``: as for
    ``validate_patient``)."""
    if obj is None:
        raise RequestError(422, "the body must be {\"patient\": {...}}",
                           [problem("patient", "required: a JSON object of patient fields")])
    clean, problems = validate_patient(obj, model, catalogue)
    if clean is None:
        raise RequestError(422, "invalid patient", problems)
    return clean


def require_patient_list(obj: Any) -> list:
    """The raw list of 1 to ``MAX_BATCH`` patients (each validated later, alone), or a 413/422."""
    if obj is None:
        raise RequestError(422, "the body must be {\"patients\": [{...}, ...]}",
                           [problem("patients", f"required: a list of 1 to {MAX_BATCH} patient objects")])
    if not isinstance(obj, list):
        raise RequestError(422, "patients must be a list",
                           [problem("patients", f"a list of 1 to {MAX_BATCH} patient objects",
                                    f"expected an array, got {json_type(obj)}")])
    if not 1 <= len(obj) <= MAX_BATCH:
        raise RequestError(413 if len(obj) > MAX_BATCH else 422, f"{len(obj)} patients in one request",
                           [problem("patients", f"a list of 1 to {MAX_BATCH} patient objects",
                                    f"got {len(obj)} patients")])
    return obj
