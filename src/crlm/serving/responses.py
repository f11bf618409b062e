"""The API's answers as pydantic models: documentation of the responses in the OpenAPI document (and the
shape the tests assert). The keys the service adds are declared here; an endpoint's answer is the
Predictor's, typed once in ``crlm.answer`` (``EndpointAnswer``) and used here as it is; a score's answer is
the scores' own (an open model, described from a real answer in the served document). The answers
themselves are serialised once by pydantic-core (``json_response``)."""

from __future__ import annotations

from typing import Annotated

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from crlm.answer import EndpointAnswer

# Documentation of the answers in the OpenAPI document; extra keys are kept (the Predictor may add some).

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# BentoML flattens ``str | None`` to ``str`` on a response's top-level fields; ``nullable`` keeps it honest.
PatientId = Annotated[str | None, Field(description="the request's patient_id, if any",
                                        json_schema_extra={"nullable": True})]


class Score(_Open):
    """One clinical score's answer: what ``crlm.scores.score_patients`` returns, passed through unchanged."""

    name: str


class TrainingCohort(_Open):
    name: str | None = None
    source: str | None = None
    patients: int | None = None
    events: int | None = None
    licence: str | None = None
    citation: str | None = None


class ModelRef(_Open):
    name: str
    endpoint: str
    label: str | None = Field(None, description='"demonstration: trained on simulated patients" for a model of a '
                                                "simulated cohort", json_schema_extra={"nullable": True})
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
    notices: list[str] = Field(description="the models' labels (a simulated cohort's model is a demonstration)")
    disclaimer: str
    conditional: dict[str, dict] | None = Field(
        None, description='with "event_free_at_months": per endpoint, the answer given event-free then '
                          "(Predictor.conditional)", json_schema_extra={"nullable": True})
    scenarios: dict[str, dict] | None = Field(
        None, description='with "scenarios": true: per endpoint, the answers under each response to preoperative '
                          "chemotherapy (associational; Predictor.scenarios)", json_schema_extra={"nullable": True})


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
