"""The answer: both endpoints' Predictors and the clinical scores, validated patients in, answers out."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crlm import schema
from crlm.cohort.base import canonical_columns
from crlm.model_metadata import ModelMetadata
from crlm.scores import score_patients
from crlm.serving.errors import RequestError, json_type, problem
from crlm.serving.request_models import form_fields, score_inputs
from crlm.serving.settings import DISCLAIMER, ENDPOINTS, SERVED_SCORES
from crlm.serving.validation import require_patient, validate_patient


@dataclass
class LoadedModel:
    """A Predictor and which model it is (registered name, version, alias, source, training cohort)."""

    predictor: Any  # crlm.predictor.Predictor
    ref: dict


def _inputs(predictor) -> dict:
    """The fields a Predictor uses and requires (``Predictor.input_metadata``; its metadata for an older one)."""
    if hasattr(predictor, "input_metadata"):
        return predictor.input_metadata()
    meta = getattr(predictor, "metadata", {}) or {}
    used = list(meta.get("used_fields") or getattr(predictor, "fields_used", []))
    return {"used_fields": used, "required_fields": meta.get("required_fields") or
            [f for f in used if f in schema.FIELDS_BY_NAME and schema.FIELDS_BY_NAME[f].required_for_prediction]}


def extra_field(spec: dict) -> schema.Field:
    """A centre's own field as its model's metadata records it (``Predictor.metadata["extra_fields"]``)."""
    names = set(schema.Field.__dataclass_fields__)
    values = {k: v for k, v in spec.items() if k in names}
    values["categories"] = tuple(values["categories"]) if values.get("categories") else None
    values["derived_from"] = tuple(values.get("derived_from") or ())
    return schema.Field(**values)


def clinical_scores(patients, names: Sequence[str] = SERVED_SCORES) -> list[dict[str, dict]]:
    """The served scores of every patient (records or ``CanonicalColumns``; ``crlm.scores.score_patients``)."""
    return score_patients(patients, names)


class Engine:
    """One OS and one RFS Predictor and the clinical scores: validated patients in, answers out.

    The patient a pair takes is the fields its models use: required are the used fields the schema requires
    for a prediction (a model trained without ``largest_metastasis_cm`` does not ask for it), and a centre's
    own fields (``metadata["extra_fields"]``) are accepted and validated by their declared rule.

    Parameters
    ----------
    models : dict
        Endpoint (``os``, ``rfs``) -> ``LoadedModel``.
    """

    def __init__(self, models: dict[str, LoadedModel]):
        missing = [ep for ep in ENDPOINTS if ep not in models]
        if missing:
            raise ValueError(f"missing model(s) for {missing}")
        self.models = models
        self.example: dict | None = None  # the warm-up answer (describes the answer in /docs.json)
        predictors = [m.predictor for m in models.values()]
        self.fields_used = set().union(*(set(_inputs(p)["used_fields"]) for p in predictors))
        self.required = sorted(set().union(*(set(_inputs(p)["required_fields"]) for p in predictors)))
        extras = {d["name"]: d for p in predictors for d in (getattr(p, "metadata", {}) or {}).get("extra_fields", [])}
        self.extra_fields = tuple(extra_field(d) for d in extras.values())
        self.catalogue = schema.FIELDS_BY_NAME | {f.name: f for f in self.extra_fields}
        self.patient_model = schema.patient_model(self.required, self.extra_fields)
        self.curve_end = min(float(p.curve_times[-1]) for p in predictors)

    def warm_up(self) -> None:
        """One prediction at load time, so the first request does not pay for lazy imports and caches."""
        example = {f.name: (f.minimum + f.maximum) / 2 for f in form_fields()
                   if f.required_for_prediction and f.minimum is not None and f.maximum is not None}
        example["n_liver_metastases"] = 2
        with contextlib.suppress(RequestError):  # a served score needs factors the minimal example lacks
            self.example = self.answer([example])[0]

    def require_patient(self, obj) -> dict:
        """The clean patient for this pair (its required and extra fields), or a 422 naming field and rule."""
        return require_patient(obj, self.patient_model, self.catalogue)

    def validate_patient(self, obj) -> tuple[dict | None, list[dict]]:
        return validate_patient(obj, self.patient_model, self.catalogue)

    def event_free_months(self, value) -> float | None:
        """A request's ``event_free_at_months``: None, or a number of months inside both models' curves."""
        if value is None:
            return None
        rule = f"a number of months >= 0 and < {self.curve_end:g} (where the chosen models' curves end)"
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < self.curve_end:
            raise RequestError(422, "event_free_at_months is out of range",
                               [problem("event_free_at_months", rule, f"got {json_type(value)} out of range")])
        return float(value)

    def answer(self, patients: Sequence[dict], event_free_at_months: float | None = None) -> list[dict]:
        """One answer per clean patient record (``validate_patient``): OS, RFS, scores, warnings, models; with
        ``event_free_at_months`` (s), the conditional answers given event-free at s (``conditional``)."""
        if not patients:
            return []
        # canonicalised once, for both endpoints and the scores
        rows = canonical_columns([{k: v for k, v in p.items() if k != "patient_id"} for p in patients])
        try:
            per_endpoint = {ep: m.predictor.predict(rows) for ep, m in self.models.items()}
        except ValueError as err:  # a served clinical score whose factors the patient lacks: the client's to fix
            raise RequestError(422, "the served model cannot rate this patient",
                               [problem("patient", "every factor of the served score is required", str(err))]
                               ) from None
        conditional = None
        if event_free_at_months is not None:
            conditional = {ep: m.predictor.conditional(rows, event_free_at_months) for ep, m in self.models.items()}
        scores = clinical_scores(rows)
        refs = {ep: m.ref for ep, m in self.models.items()}
        notices = list(dict.fromkeys(f"{ep.upper()} model {m.ref['name']}: {m.ref['label']}"
                                     for ep, m in self.models.items() if m.ref.get("label")))
        answers = []
        for i, patient in enumerate(patients):
            own = {ep: per_endpoint[ep][i] for ep in ENDPOINTS}
            answer = {
                "patient_id": patient.get("patient_id"),
                **own,
                "scores": scores[i],
                "warnings": self._warnings(patient, own),
                "models": refs,
                "notices": notices,
                "disclaimer": DISCLAIMER,
            }
            if conditional is not None:
                answer["conditional"] = {ep: conditional[ep][i] for ep in ENDPOINTS}
            answers.append(answer)
        return answers

    def scenarios(self, patient: dict) -> dict:
        """``"scenarios": true``: both endpoints' answers under each response to preoperative chemotherapy
        (``Predictor.scenarios``: associational, with intervals; or why not, for a model without the fields)."""
        record = {k: v for k, v in patient.items() if k != "patient_id"}
        return {ep: m.predictor.scenarios(record) for ep, m in self.models.items()}

    def _warnings(self, patient: dict, own: dict[str, dict]) -> list[str]:
        out = list(dict.fromkeys(w for ep in ENDPOINTS for w in own[ep].get("warnings", [])))
        for name in patient:
            if name == "patient_id" or name in self.fields_used:
                continue
            where = "it enters only the clinical scores" if name in score_inputs() else "it was ignored"
            out.append(f"{name} is not used by the OS/RFS models ({where})")
        return out

    def model_info(self) -> dict:
        return {"models": {ep: model_card(m) for ep, m in self.models.items()}, "disclaimer": DISCLAIMER}


def model_card(model: LoadedModel) -> dict:
    """``GET /model_info`` for one endpoint: which model, how it was built, its card."""
    meta = ModelMetadata.coerce(getattr(model.predictor, "metadata", None))
    return {
        **model.ref,
        "endpoint_label": getattr(model.predictor, "endpoint_label", None),
        "horizons_months": meta.horizons,
        "headline": meta.headline,  # optimism-corrected performance of this (shipped) model
        "champion_decision": meta.champion_verdict,
        "metrics": meta.metrics,
        "metrics_kind": "nested cross-validation (out-of-fold): the comparison between models",
        "calibration": meta.calibration,
        "recalibration": meta.recalibration,
        "interval": meta.interval,
        "interval_method": meta.interval_method,
        "explainer": meta.explainer,
        "risk_groups": meta.risk_groups,
        "feature_blocks": meta.feature_blocks,
        "postoperative": meta.postoperative,
        "fields_used": meta.fields_used,
        "model_card": meta.model_card,
        "metadata": meta.to_dict(),
    }


def echoable_id(raw) -> str | None:
    """A refused patient's patient_id, echoed only if it is a valid one (short text, no control characters)."""
    pid = raw.get("patient_id") if isinstance(raw, dict) else None
    if isinstance(pid, str) and len(pid) <= 64 and not any(ord(c) < 32 or ord(c) == 127 for c in pid):
        return pid
    return None


def batch_answer(engine: Engine, raw_patients: list, event_free_at_months: float | None = None) -> dict:
    """``/predict_batch``: each patient is validated alone; the valid ones share one Predictor call, the
    invalid ones get their own error entry (index, field, rule) without failing the others."""
    results: list[dict | None] = [None] * len(raw_patients)
    valid, where = [], []
    for i, raw in enumerate(raw_patients):
        clean, problems = engine.validate_patient(raw)
        if clean is None:
            results[i] = {"index": i, "patient_id": echoable_id(raw), "ok": False,
                          "error": {"error": "invalid patient", "errors": problems}}
        else:
            valid.append(clean)
            where.append(i)
    for i, answer in zip(where, engine.answer(valid, event_free_at_months) if valid else [], strict=True):
        results[i] = {"index": i, "ok": True, **answer}
    n_ok = len(valid)
    return {"results": results, "summary": {"patients": len(raw_patients), "answered": n_ok,
                                            "refused": len(raw_patients) - n_ok}}


def scores_answer(clean: dict) -> dict:
    """``/scores``: the clinical scores of one clean patient (no model needed)."""
    return {"patient_id": clean.get("patient_id"), "scores": clinical_scores([clean])[0], "disclaimer": DISCLAIMER}
