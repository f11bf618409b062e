"""The shape of one endpoint's answer, defined once: what ``Predictor.predict`` returns for a patient.

These typed dictionaries are the contract between the Predictor (which builds the answers; mypy checks every
key it writes against them), the explainer (``Contribution``) and the API (``crlm.serving.responses`` uses
them as the response models' fields, so ``/docs.json`` describes the answer from this module). A plain dict
at run time: no copy, no validation on the hot path. ``docs/PREDICTOR.md`` explains each value.

Optional values carry ``nullable`` for the OpenAPI 3.0 document (pydantic's ``anyOf`` with null is 3.1).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import NotRequired, TypedDict  # noqa: UP035 (pydantic needs typing_extensions' on 3.11)

__all__ = ["Contribution", "Direction", "EndpointAnswer", "HorizonEstimate", "RiskGroup", "SurvivalCurve",
           "direction_of"]

RiskGroup = Literal["low", "intermediate", "high"]  # tertiles of the training cohort's predicted risk
Direction = Literal["raises", "lowers"]


def direction_of(size: float) -> Direction:
    """What a contribution of ``size`` (on the risk scale) does to the risk, in words."""
    return "raises" if size > 0 else "lowers"


def _nullable(description: str):
    return Field(description=description, json_schema_extra={"nullable": True})


class HorizonEstimate(TypedDict):
    """Survival at one horizon with the 95% confidence interval of the estimate (not of the patient's outcome)."""

    months: float
    survival: float
    lower: float
    upper: float


class SurvivalCurve(TypedDict):
    """The calibrated survival curve on the model's grid (``months`` from 0) with its pointwise 95% band."""

    months: list[float]
    survival: list[float]
    lower: list[float]
    upper: list[float]


class Contribution(TypedDict):
    """What one field does to this patient's risk (``crlm.explain``): exact for linear models, TreeSHAP for
    trees, occlusion otherwise; ``size`` on the model's risk scale, ``direction`` its sign in words."""

    field: str
    label: str
    value: Annotated[float | str | bool | None, _nullable("the value as the model read it (null: unknown)")]
    value_text: str
    direction: Direction
    size: float
    sentence: str
    points: NotRequired[float]  # a clinical score's factor: its points (the served score's explainer)


class EndpointAnswer(TypedDict):
    """One endpoint's answer for one patient (OS or RFS)."""

    endpoint: str
    endpoint_label: str
    risk_score: float
    horizons: list[HorizonEstimate]
    median_months: Annotated[float | None, _nullable("months at which the curve crosses 0.5 (null: not reached)")]
    median_reached: bool
    risk_group: RiskGroup
    curve: SurvivalCurve
    contributions: list[Contribution]
    warnings: list[str]
