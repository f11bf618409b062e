"""Writes the two centre exports of the end-to-end test (run from the repository root:
``PYTHONPATH=src python tests/data/centre/make_exports.py``; the files are committed, this says how they were made).

Two hepatobiliary centres' exports in their own style, made from the simulator (``crlm.cohort.simulate``):
their own column names, codes (M/F, pT3, G2, mut/wt, Dead/Alive, Y/N, 1.0/0.0) and units (days, mm), missing
codes (-9, NA, unk), a lab file to join (CA19-9, BMI), one duplicated and one missing patient ID, an unknown
sex code, a centre's own predictor (TMB) and score (LocalScore), and no CEA (so Fong cannot be computed).
Centre B's survival times are halved: the same covariate effects on a different baseline hazard, the
miscalibration a model moved between centres meets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crlm.cohort.simulate import simulate_cohort

HERE = Path(__file__).parent
DAYS = 365.25 / 12


def _code(values: pd.Series, codes: dict, missing: str = "NA") -> pd.Series:
    return values.map(lambda v: missing if pd.isna(v) else codes.get(v, v))


def export(n: int, seed: int, prefix: str, time_factor: float = 1.0) -> None:
    d = simulate_cohort(n, seed).data
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{1000 + i}" for i in range(n)]
    tmb = np.round(np.exp(rng.normal(1.3, 0.6, n) + 0.3 * d["braf_v600e_status"].eq("mutant")), 1)
    local = (d["primary_node_positive"].fillna(False).astype(int) + d["multiple_metastases"].fillna(False).astype(int)
             + (d["largest_metastasis_cm"] > 5).astype(int) + d["extrahepatic_disease"].fillna(False).astype(int))
    main = pd.DataFrame({
        "PatID": ids,
        "Age_op": d["age_years"].round(1),
        "Gender": _code(d["sex"], {"male": "M", "female": "F"}),
        "Tumour_site": _code(d["primary_side"], {"right": "R colon", "left": "L colon", "rectum": "Rectum"}),
        "pT": _code(d["primary_t_stage"], {f"T{i}": f"pT{i}" for i in range(1, 5)}),
        "pN": _code(d["primary_node_positive"].astype(object), {True: "N1", False: "N0"}, "unk"),
        "Grade": _code(d["primary_grade"], {"well": "G1", "moderate": "G2", "poor": "G3"}),
        "DFI_days": (d["disease_free_interval_months"] * DAYS).round().map(lambda v: -9 if pd.isna(v) else int(v)),
        "N_mets": d["n_liver_metastases"].map(lambda v: "NA" if pd.isna(v) else int(v)),
        "MaxDiam_mm": (d["largest_metastasis_cm"] * 10).round(),
        "Bilobar": d["bilobar_disease"].astype(object).map(lambda v: "" if pd.isna(v) else float(v)),
        "EHD": _code(d["extrahepatic_disease"].astype(object), {True: "Y", False: "N"}),
        "Regimen": _code(d["chemo_regimen"], {"folfox": "FOLFOX", "capox": "CAPOX", "folfiri": "FOLFIRI",
                                              "folfoxiri": "FOLFOXIRI", "fluoropyrimidine": "5FU",
                                              "other": "Other", "none": "None"}),
        "KRAS": _code(d["kras_status"], {"mutant": "mut", "wild_type": "wt", "unknown": "NA"}),
        "BRAF": _code(d["braf_v600e_status"], {"mutant": "mut", "wild_type": "wt", "unknown": "NA"}),
        "TMB": tmb,
        "LocalScore": local,
        "Vital_status": _code(d["os_event"].astype(object), {True: "Dead", False: "Alive"}),
        "FU_days": (d["os_months"] / time_factor * DAYS).round().astype(int),
        "Recurrence": _code(d["rfs_event"].astype(object), {True: "yes", False: "no"}),
        "RFS_days": (d["rfs_months"] / time_factor * DAYS).round().astype(int),
    })
    main.loc[4, "PatID"] = main.loc[3, "PatID"]  # a duplicated ID
    main.loc[8, "PatID"] = ""  # a row without an ID
    main.loc[12, "Gender"] = "X"  # an unknown code
    labs = pd.DataFrame({"PatID": ids, "CA19_9": d["ca19_9_u_ml"].round(1).map(lambda v: "NA" if pd.isna(v) else v),
                         "BMI": d["body_mass_index"].round(1).map(lambda v: -9 if pd.isna(v) else v)})
    main.to_csv(HERE / f"centre_{prefix.lower()}.csv", index=False)
    labs.drop(index=4).to_csv(HERE / f"labs_{prefix.lower()}.csv", index=False)


if __name__ == "__main__":
    export(320, 101, "A")
    export(260, 202, "B", time_factor=2.0)
