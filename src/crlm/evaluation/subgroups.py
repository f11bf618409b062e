"""Performance of one benchmarked model within patient subgroups (TRIPOD+AI items 14 and 23a: fairness).

Uses the model's out-of-fold (OOF) predictions from a ``BenchmarkResult`` (risk and survival averaged over the
outer repeats), so every patient is scored by a model that never saw them. Per subgroup (sex, age band, RAS
status, preoperative chemotherapy, Fong risk group; each only when the cohort records it): patients, events,
Harrell's C and observed/expected (O/E) at 36 months (else the largest evaluated horizon), with 95%
recentred percentile bootstrap intervals (the estimate always inside) over the subgroup's patients (stratified by event), and the reference score's C
on the same resamples (so the difference is paired). Subgroups with < 20 patients or < 5 events get NaN and
a note.

Speed: a resample's C is a weighted C of the subgroup (each patient weighted by how often it was drawn), i.e.
sum_ij w_i w_j S_ij / sum_ij w_i w_j A_ij with A the comparable pairs and S the concordant ones (ties 1/2),
identical to scikit-survival's Harrell C on the resampled rows. All resamples are evaluated at once as matrix
products, in row blocks so memory stays bounded. O/E uses a weighted Kaplan–Meier the same way.
"""

from __future__ import annotations

__all__ = [
    "AGE_BANDS", "COLUMNS", "MIN_EVENTS", "MIN_PATIENTS", "NOT_RECORDED", "TOO_FEW", "fong_score_name",
    "subgroup_labels", "subgroup_performance",
]

import warnings
from typing import Any

import numpy as np
import pandas as pd

from crlm.evaluation.benchmark import BenchmarkResult
from crlm.evaluation.calibration import calibration_in_the_large
from crlm.evaluation.intervals import bootstrap_indices, centred_interval
from crlm.evaluation.metrics import harrell_c
from crlm.evaluation.weighted import resample_weights, weighted_harrell_c, weighted_oe
from crlm.reporting.formatting import headline_horizon
from crlm.scores import SCORES, compute_score

MIN_PATIENTS = 20
MIN_EVENTS = 5
TOO_FEW = "too few patients/events"
NOT_RECORDED = "not recorded"
AGE_BANDS = ("<60", "60-69", ">=70")

COLUMNS = ["grouping", "subgroup", "patients", "events", "harrell_c", "harrell_c_low", "harrell_c_high",
           "horizon", "oe", "oe_low", "oe_high", "reference", "ref_harrell_c", "ref_harrell_c_low",
           "ref_harrell_c_high", "delta_c", "delta_c_low", "delta_c_high", "note"]


# ------------------------------------------------------------------------------------------- groupings


def _labels(values: pd.Series, mapping: dict, missing: str = NOT_RECORDED) -> pd.Series:
    out = values.astype(object).map(lambda v: mapping.get(v, missing) if pd.notna(v) else missing)
    return out.astype(object)


def fong_score_name(reference: str | None, data: pd.DataFrame) -> str | None:
    """The Fong variant whose groups define the Fong subgroups: the reference's own (``fong`` or
    ``fong_recorded``) when it is one, else the computed Fong score when any patient has it."""
    if reference and reference.startswith("score:") and reference[len("score:"):].startswith("fong"):
        return reference[len("score:"):]
    return "fong" if compute_score("fong", data)["total"].notna().any() else None


def subgroup_labels(data: pd.DataFrame, reference: str | None = None
                    ) -> list[tuple[str, pd.Series, list[str]]]:
    """(grouping, label per patient, levels in display order) for each grouping the cohort supports.

    Every patient gets a label (missing values get their own level), so the patients of a grouping add up to
    the population."""
    out = []

    def add(name: str, labels: pd.Series, order: list[str]) -> None:
        labels = labels.reset_index(drop=True)
        levels = [lv for lv in order if (labels == lv).any()]
        levels += sorted(set(labels.unique()) - set(levels))
        out.append((name, labels, levels))

    if "sex" in data and data["sex"].notna().any():
        add("sex", _labels(data["sex"], {"male": "male", "female": "female"}),
            ["male", "female", NOT_RECORDED])
    if "age_years" in data and data["age_years"].notna().any():
        age = pd.to_numeric(data["age_years"], errors="coerce")
        band = np.where(age < 60, AGE_BANDS[0], np.where(age < 70, AGE_BANDS[1], AGE_BANDS[2]))
        add("age band (years)", pd.Series(np.where(age.isna(), NOT_RECORDED, band), dtype=object),
            [*AGE_BANDS, NOT_RECORDED])
    if "ras_status" in data:
        ras = data["ras_status"].astype(object).where(data["ras_status"].notna(), "unknown")
        if ras.isin(["mutant", "wild_type"]).any():  # all unknown says nothing about RAS
            add("RAS status", ras, ["mutant", "wild_type", "unknown"])
    if "neoadjuvant_chemotherapy" in data and data["neoadjuvant_chemotherapy"].notna().any():
        chemo = _labels(data["neoadjuvant_chemotherapy"], {True: "yes", False: "no"})
        add("preoperative chemotherapy", chemo, ["yes", "no", NOT_RECORDED])
    fong = fong_score_name(reference, data)
    if fong is not None and fong in SCORES:
        defn = SCORES[fong]
        groups = compute_score(fong, data)["group"]
        if groups.notna().any():
            add(f"{defn.label} group", groups.astype(object).where(groups.notna(), "not computable"),
                [*defn.groups, "not computable"])
    return out


# ------------------------------------------------------------------------------------------- the table


def _point(fn, *args) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(fn(*args))
    except ValueError:
        return float("nan")


def subgroup_performance(res: BenchmarkResult, model: str, n_boot: int = 100, seed: int = 0) -> pd.DataFrame:
    """One row per subgroup: patients, events, Harrell C, O/E at the horizon and the reference score's C, each
    with a 95% bootstrap interval (see the module docstring). ``attrs``: model, reference, horizon, n_boot,
    seed and the interval method."""
    if model not in res.oof:
        raise ValueError(f"model {model!r} is not in this benchmark; it has {', '.join(res.oof)}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    oof = res.oof[model]
    y = res.y
    horizon = headline_horizon(res.horizons)
    col = np.flatnonzero(np.isclose(res.grid, horizon))
    if not len(col):
        raise ValueError(f"horizon {horizon:g} is not on the benchmark's prediction grid")
    valid = oof.valid
    risk = np.full(len(y), np.nan)
    surv = np.full(len(y), np.nan)
    risk[valid] = oof.risk[:, valid].mean(axis=0)
    surv[valid] = oof.survival[:, valid, col[0]].mean(axis=0)
    ref = res.spec.reference
    ref_oof = res.oof.get(ref) if ref and ref != model else None
    ref_risk = np.full(len(y), np.nan)
    if ref_oof is not None:
        ref_risk[ref_oof.valid] = ref_oof.risk[:, ref_oof.valid].mean(axis=0)

    rows = []
    for grouping, labels, levels in subgroup_labels(res.population.data, ref):
        for level in levels:
            members = np.flatnonzero((labels.to_numpy() == level) & valid)
            ys = y[members]
            n, events = len(members), int(ys["event"].sum())
            row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan) | {
                "grouping": grouping, "subgroup": level, "patients": n, "events": events, "horizon": horizon,
                "reference": ref if ref_oof is not None else "", "note": ""}
            if n < MIN_PATIENTS or events < MIN_EVENTS:
                row["note"] = TOO_FEW
                rows.append(row)
                continue
            W = resample_weights(bootstrap_indices(n, n_boot, seed, strata=ys["event"]), n)
            paired = ref_oof is not None and bool(ref_oof.valid[members].all())
            boots = weighted_harrell_c(ys, np.vstack([risk[members], ref_risk[members]]) if paired
                                       else risk[members][None, :], W)
            c_boot = boots[0]
            row["harrell_c"] = _point(harrell_c, ys, risk[members])
            row["harrell_c_low"], row["harrell_c_high"] = centred_interval(c_boot, row["harrell_c"])
            row["oe"] = _point(calibration_in_the_large, ys, surv[members], horizon)
            row["oe_low"], row["oe_high"] = centred_interval(weighted_oe(ys, surv[members], horizon, W), row["oe"])
            notes = []
            if np.isnan(row["oe"]):
                notes.append(f"O/E undefined at {horizon:g} months (follow-up or events)")
            if ref_oof is not None:
                scored = ref_oof.valid[members]
                if paired:
                    r_boot = boots[1]
                    row["ref_harrell_c"] = _point(harrell_c, ys, ref_risk[members])
                    row["ref_harrell_c_low"], row["ref_harrell_c_high"] = centred_interval(r_boot, row["ref_harrell_c"])
                    row["delta_c"] = row["harrell_c"] - row["ref_harrell_c"]
                    row["delta_c_low"], row["delta_c_high"] = centred_interval(c_boot - r_boot, row["delta_c"])
                else:
                    notes.append(f"{ref} not computable for {int((~scored).sum())} of these patients")
            row["note"] = "; ".join(notes)
            rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.astype({"patients": int, "events": int})
    table.attrs.update(model=model, reference=ref if ref_oof is not None else None, horizon=horizon,
                       n_boot=n_boot, seed=seed,
                       interval=f"95% bootstrap, percentile recentred on the estimate ({n_boot} resamples within "
                                f"the subgroup, "
                                "stratified by event; predictions held fixed)")
    return table
