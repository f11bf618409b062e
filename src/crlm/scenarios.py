"""Response scenarios: one patient's prognosis under each response to preoperative chemotherapy.

For one patient, the same Predictor answers for copies of the record that differ only in the response fields:
complete / partial response, stable disease, progression on chemotherapy (RECIST), and progression between the
end of chemotherapy and surgery; every other input is held as given. The answers are associations learned from
the training cohort (what patients like this one with that response had there), not effects of a treatment:
the response is an outcome of the tumour's biology and of the chemotherapy, not a choice.

What changes per scenario:
- RECIST scenarios: ``recist_response`` is the category; ``progression_before_surgery`` is false; the size
  change (``tumour_size_change_percent``), which RECIST is defined from, is the training median of the patients
  with that category (missing if the training cohort had none); chemotherapy was given.
- progression before surgery: ``progression_before_surgery`` is true, the patient's RECIST response and size
  change are kept; chemotherapy was given.
- a patient recorded without chemotherapy: regimen, biologic and cycles are set missing (unknown), not "none".

Scenarios are offered only for models that use a response field; a scenario whose fields the model does not use
is listed as unavailable with the reason.
"""

from __future__ import annotations

__all__ = [
    "CHEMO_FIELDS", "FEW_PATIENTS", "PROGRESSION_FIELD", "PROGRESSION_SCENARIO", "RECIST_FIELDS",
    "RECIST_SCENARIOS", "RESPONSE_FIELDS", "response_profile", "response_scenarios",
]

import numpy as np
import pandas as pd

RECIST_FIELDS = ("recist_response", "tumour_size_change_percent")
PROGRESSION_FIELD = "progression_before_surgery"
RESPONSE_FIELDS = (*RECIST_FIELDS, PROGRESSION_FIELD)
CHEMO_FIELDS = ("chemo_regimen", "chemo_biologic", "chemo_cycles")
FEW_PATIENTS = 10  # below this many training patients in a category, the answer says so

RECIST_SCENARIOS = (
    ("complete_response", "Complete response (RECIST CR)", "CR"),
    ("partial_response", "Partial response (RECIST PR)", "PR"),
    ("stable_disease", "Stable disease (RECIST SD)", "SD"),
    ("progression", "Progression on chemotherapy (RECIST PD)", "PD"),
)
PROGRESSION_SCENARIO = ("progression_before_surgery", "Progression between chemotherapy and surgery")


def response_profile(data: pd.DataFrame) -> dict:
    """What the training cohort holds per response category (stored in the Predictor's metadata).

    Parameters
    ----------
    data : DataFrame
        The training patients (canonical schema columns).

    Returns
    -------
    dict
        JSON-able: ``{"recist": {code: {"patients", "median_size_change_percent"}},
        "progression_before_surgery": patients}`` (None or empty where the cohort lacks the field).
    """
    profile: dict = {"recist": {}, "progression_before_surgery": None}
    if "recist_response" in data:
        recist = data["recist_response"].astype(object)
        change = (pd.to_numeric(data["tumour_size_change_percent"], errors="coerce")
                  if "tumour_size_change_percent" in data else pd.Series(np.nan, index=data.index))
        for _, _, code in RECIST_SCENARIOS:
            mask = (recist == code).to_numpy()
            median = change[mask].median() if mask.any() else np.nan
            profile["recist"][code] = {"patients": int(mask.sum()),
                                       "median_size_change_percent": None if pd.isna(median) else float(median)}
    if PROGRESSION_FIELD in data:
        profile["progression_before_surgery"] = int((data[PROGRESSION_FIELD] == True).sum())  # noqa: E712
    return profile


def _record(row) -> dict:
    if isinstance(row, pd.DataFrame):
        if len(row) != 1:
            raise ValueError(f"scenarios are for one patient, got {len(row)} rows")
        row = row.iloc[0].to_dict()
    if not isinstance(row, dict):
        raise TypeError("a patient record is a dict of schema fields or a one-row DataFrame")
    return {k: v for k, v in row.items() if not (v is None or (not isinstance(v, str) and pd.isna(v)))}


def _chemotherapy_given(record: dict) -> tuple[dict, list[str]]:
    """The record's chemotherapy fields when chemotherapy is assumed given, and notes on what was changed."""
    changed: dict[str, bool | None] = {"neoadjuvant_chemotherapy": True}
    notes: list[str] = []
    untreated = record.get("neoadjuvant_chemotherapy") is False or record.get("chemo_regimen") == "none"
    if untreated:
        for name in CHEMO_FIELDS:
            if name in record:
                changed[name] = None
        notes.append("the record says no preoperative chemotherapy: the scenarios assume it was given, with "
                     "regimen, biologic agent and cycles unknown")
    return changed, notes


def response_scenarios(predictor, row) -> dict:
    """The patient's answer under each response scenario (see the module docstring).

    Parameters
    ----------
    predictor : crlm.predictor.Predictor
        The model answering.
    row : dict or one-row DataFrame
        The patient's record (schema fields).

    Returns
    -------
    dict
        ``available`` (with ``reason`` when not), the ``label`` (associational, not a treatment effect), the
        response fields the model ``uses``, the patient's own (``as_given``), ``notes``, and per scenario:
        ``key``, ``label``, ``inputs`` changed, ``training_patients``, ``available`` and, when available, the
        ``horizons`` with intervals, ``curve``, ``median_months``, ``risk_score``, ``risk_group``, ``notes``.
    """
    record = _record(row)
    meta = predictor.metadata
    cohort = f"{meta.get('cohort', 'the training cohort')} ({meta.get('patients', '?')} patients)"
    used = set(predictor.used_fields)
    out = {
        "endpoint": predictor.endpoint,
        "label": (f"What patients like this one with each response had in the training cohort {cohort}: "
                  "an association learned from observational data, not the effect of a treatment. Only the "
                  "response to chemotherapy changes; every other input is held as given."),
        "uses": [f for f in RESPONSE_FIELDS if f in used],
        "as_given": {f: record.get(f) for f in ("neoadjuvant_chemotherapy", *RESPONSE_FIELDS)},
    }
    if not out["uses"]:
        return out | {"available": False, "scenarios": [], "reason": (
            "this model does not use the response to preoperative chemotherapy (" + ", ".join(RESPONSE_FIELDS)
            + "): every scenario would give the same answer")}
    profile = meta.get("response_profile") or {"recist": {}, "progression_before_surgery": None}
    chemo, notes = _chemotherapy_given(record)
    specs = []
    for key, label, code in RECIST_SCENARIOS:
        info = profile["recist"].get(code, {})
        inputs = chemo | {"recist_response": code, PROGRESSION_FIELD: False,
                          "tumour_size_change_percent": info.get("median_size_change_percent")}
        specs.append((key, label, inputs, info.get("patients"), any(f in used for f in RECIST_FIELDS)))
    key, label = PROGRESSION_SCENARIO
    specs.append((key, label, chemo | {PROGRESSION_FIELD: True}, profile.get("progression_before_surgery"),
                  PROGRESSION_FIELD in used))

    usable = [s for s in specs if s[4]]
    rows = [{k: v for k, v in (record | inputs).items() if v is not None} for _, _, inputs, _, _ in usable]
    answers = iter(predictor.predict(rows, top=0))  # contributions: the patient's own answer has them
    scenarios = []
    for key, label, inputs, patients, ok in specs:
        item = {"key": key, "label": label, "inputs": inputs, "training_patients": patients, "available": ok}
        if not ok:
            scenarios.append(item | {"reason": f"this model does not use {', '.join(_fields_of(key))}"})
            continue
        answer = next(answers)
        item_notes = []
        if patients is not None and patients < FEW_PATIENTS:
            item_notes.append(f"only {patients} training patients had this response: the estimate leans on the "
                              "model's form more than on data")
        if (key != PROGRESSION_SCENARIO[0] and inputs["tumour_size_change_percent"] is None
                and "tumour_size_change_percent" in used):
            item_notes.append("size change unknown for this category in the training cohort (left missing)")
        scenarios.append(item | {k: answer[k] for k in ("risk_score", "risk_group", "horizons", "median_months",
                                                       "median_reached", "curve")} | {"notes": item_notes})
    return out | {"available": True, "reason": None, "notes": notes, "scenarios": scenarios}


def _fields_of(key: str) -> tuple[str, ...]:
    return (PROGRESSION_FIELD,) if key == PROGRESSION_SCENARIO[0] else RECIST_FIELDS
