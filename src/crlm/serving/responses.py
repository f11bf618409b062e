"""The API's answers as pydantic models: documentation of the responses in the OpenAPI document (and the
shape the tests assert). The answers themselves are serialised once by pydantic-core (``json_response``)."""

from __future__ import annotations

from typing import Annotated

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

# Documentation of the answers in the OpenAPI document; extra keys are kept (the Predictor may add some).

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# BentoML flattens ``str | None`` to ``str`` on a response's top-level fields; ``nullable`` keeps it honest.
PatientId = Annotated[str | None, Field(description="the request's patient_id, if any",
                                        json_schema_extra={"nullable": True})]


class Horizon(_Open):
    months: float
    survival: float
    lower: float
    upper: float


class Curve(_Open):
    months: list[float]
    survival: list[float]
    lower: list[float]
    upper: list[float]


class Contribution(_Open):
    field: str
    label: str | None = None
    value: float | bool | str | None = None
    value_text: str | None = None
    direction: str
    size: float
    sentence: str


class EndpointAnswer(_Open):
    endpoint: str
    endpoint_label: str | None = None
    risk_score: float
    horizons: list[Horizon]
    median_months: float | None
    median_reached: bool
    risk_group: str
    curve: Curve
    contributions: list[Contribution]
    warnings: list[str]


class Score(_Open):
    name: str
    label: str
    total: float | None
    group: str | None
    groups: list[str]
    points: dict[str, float | None]
    missing: list[str]
    reason: str | None


class TrainingCohort(_Open):
    name: str | None = None
    source: str | None = None
    patients: int | None = None
    events: int | None = None
    licence: str | None = None
    citation: str | None = None


class ModelRef(_Open):
    endpoint: str
    registered_name: str | None
    version: str | None
    alias: str | None
    source: str
    model_name: str | None = None
    training_cohort: TrainingCohort


class PredictResponse(_Open):
    patient_id: PatientId = None
    os: EndpointAnswer
    rfs: EndpointAnswer
    scores: dict[str, Score]
    warnings: list[str]
    models: dict[str, ModelRef]
    disclaimer: str


class BatchItem(_Open):
    """An answer (``ok`` true, the /predict fields) or a refused patient (``ok`` false, ``error``)."""

    index: int
    ok: bool
    patient_id: str | None = None
    error: dict | None = None


class BatchSummary(BaseModel):
    patients: int
    answered: int
    refused: int


class BatchResponse(BaseModel):
    results: list[BatchItem]
    summary: BatchSummary


class ScoresResponse(_Open):
    patient_id: PatientId = None
    scores: dict[str, Score]
    disclaimer: str


def json_response(answer: dict) -> Response:
    """The answer serialised once by pydantic-core. Its shape is the route's response model (the OpenAPI
    document; asserted by the tests): validating every answer into that model again before BentoML
    serialised it cost more than the OS and RFS models together."""
    return Response(pydantic_core.to_json(answer), media_type="application/json")
