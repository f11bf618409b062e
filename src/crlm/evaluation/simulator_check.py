"""The simulator's check: a cohort against clinical.md's figures and external validations (bands).

It lives with evaluation, not with the simulator: the simulator does not need it, and it needs the scores and
the metrics, which sit above the cohort layer.

``check_table`` gives one row per target (quantity, band, observed, pass); ``docs/SIMULATOR.md`` §6 lists the
sources. Any cohort can be checked (a real one too): only the truth-based row needs ``cohort.truth``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crlm.cohort.base import Cohort
from crlm.evaluation.metrics import harrell_c
from crlm.kaplan_meier import km_at as _km
from crlm.kaplan_meier import km_median as _km_median
from crlm.scores import compute_score


def _share(mask, known=None) -> float:
    mask = np.asarray(mask, dtype=bool)
    known = np.ones_like(mask) if known is None else np.asarray(known, dtype=bool)
    return float(mask[known].mean()) if known.any() else float("nan")


def check_table(cohort: Cohort) -> pd.DataFrame:
    """One row per clinical.md target: quantity, band (low, high), observed value and whether it passes."""
    df = cohort.data
    os_t, os_e = df["os_months"].to_numpy(float), df["os_event"].to_numpy(bool)
    rfs_t, rfs_e = df["rfs_months"].to_numpy(float), df["rfs_event"].to_numpy(bool)
    rows: list[tuple[str, float, float, float]] = []

    def add(quantity: str, low: float, high: float, observed: float) -> None:
        rows.append((quantity, low, high, float(observed)))

    add("5-year OS (KM)", 0.40, 0.50, _km(os_t, os_e, 60))
    add("10-year OS (KM)", 0.20, 0.30, _km(os_t, os_e, 120))
    add("median OS (months)", 45, 65, _km_median(os_t, os_e))
    add("1-year recurrence or death (1 - KM RFS)", 0.30, 0.40, 1 - _km(rfs_t, rfs_e, 12))
    add("5-year recurrence or death (1 - KM RFS)", 0.65, 0.82, 1 - _km(rfs_t, rfs_e, 60))
    add("median RFS (months)", 15, 24, _km_median(rfs_t, rfs_e))

    def known(col):
        s = df[col]
        return (s.notna() & (s.astype(str) != "unknown")).to_numpy()

    def yes(col):
        return df[col].fillna(False).astype(bool).to_numpy()

    dfi = df["disease_free_interval_months"].to_numpy(float)
    add("node-positive primary", 0.55, 0.65, _share(yes("primary_node_positive"), known("primary_node_positive")))
    add("synchronous (DFI 0)", 0.40, 0.60, _share(yes("synchronous_metastases"), known("synchronous_metastases")))
    add("DFI < 12 months", 0.50, 0.65, _share(dfi < 12, ~np.isnan(dfi)))
    add("> 1 liver metastasis", 0.55, 0.65, _share(df["n_liver_metastases"] > 1))
    add("largest metastasis > 5 cm", 0.25, 0.45, _share(df["largest_metastasis_cm"] > 5))
    add("CEA > 200 ng/mL", 0.05, 0.12, _share(df["cea_ng_ml"] > 200, known("cea_ng_ml")))
    add("RAS mutant (among known)", 0.35, 0.45, _share(df["ras_status"] == "mutant", known("ras_status")))
    add("BRAF V600E (among known)", 0.02, 0.05,
        _share(df["braf_v600e_status"] == "mutant", known("braf_v600e_status")))
    add("PIK3CA mutant (among known)", 0.10, 0.15, _share(df["pik3ca_status"] == "mutant", known("pik3ca_status")))
    add("right-sided primary", 0.25, 0.35, _share(df["primary_side"] == "right", known("primary_side")))
    add("extrahepatic disease", 0.05, 0.15, _share(yes("extrahepatic_disease"), known("extrahepatic_disease")))
    add("R1 margin", 0.07, 0.19, _share(df["resection_margin"] == "R1", known("resection_margin")))
    add("R2 margin", 0.0, 0.03, _share(df["resection_margin"] == "R2", known("resection_margin")))
    treated = yes("neoadjuvant_chemotherapy")
    add("preoperative chemotherapy", 0.50, 0.65, _share(treated))
    resp = df["recist_response"]
    resp_known = treated & resp.notna().to_numpy()
    add("response CR/PR (treated)", 0.45, 0.70, _share(resp.isin(["CR", "PR"]), resp_known))
    add("stable disease (treated)", 0.20, 0.45, _share(resp == "SD", resp_known))
    add("progression (treated)", 0.05, 0.15, _share(resp == "PD", resp_known))
    viable = df["viable_tumour_percent"].to_numpy(float)
    add("pCR, 0 % viable (treated)", 0.05, 0.10, _share(viable == 0, treated & ~np.isnan(viable)))
    add("progression before surgery", 0.01, 0.06,
        _share(yes("progression_before_surgery"), known("progression_before_surgery")))

    fong = compute_score("fong", df)["total"].to_numpy(float)
    has_fong = ~np.isnan(fong)
    add("Fong 3-5 (high)", 0.30, 0.45, _share(fong >= 3, has_fong))
    low, high = has_fong & (fong <= 2), has_fong & (fong >= 3)
    os_low, os_high = _km(os_t[low], os_e[low], 60), _km(os_t[high], os_e[high], 60)
    add("5-year OS, Fong 0-2", 0.45, 0.60, os_low)
    add("5-year OS, Fong 3-5", 0.25, 0.40, os_high)
    add("5-year OS, Fong 0-2 minus 3-5", 0.0, 1.0, os_low - os_high)
    by_resp = {}
    for label, cats in (("R", ["CR", "PR"]), ("S", ["SD"]), ("P", ["PD"])):
        m = resp_known & resp.isin(cats).to_numpy()
        by_resp[label] = _km(os_t[m], os_e[m], 60)
    add("5-year OS, responders minus stable", 0.0, 1.0, by_resp["R"] - by_resp["S"])
    add("5-year OS, stable minus progression", 0.0, 1.0, by_resp["S"] - by_resp["P"])
    add("5-year OS, progression on chemotherapy", 0.0, 0.25, by_resp["P"])

    y_os = cohort.y("os")
    # External validations of GAME (and Fong) group survival: Bolhuis 2022 (Dutch nationwide, n = 1105) median
    # OS 68.1 / 46.7 / 32.4 months for GAME low / medium / high; Sant Pau (n = 142) GAME low vs high 68.8 vs 38.6.
    # The low group's curve is flat near S = 0.5 (cure), so its KM median moves by about +-8 months between
    # simulated cohorts of 5,000: the upper edge of its band allows for that.
    game_total = compute_score("game", df)["total"].to_numpy(float)
    for label, sel, low_band, high_band in (("low (0-1)", game_total <= 1, 58, 88), ("medium (2-3)",
                                            (game_total >= 2) & (game_total <= 3), 40, 58),
                                           ("high (>= 4)", game_total >= 4, 26, 42)):
        add(f"median OS, GAME {label} (months)", low_band, high_band, _km_median(os_t[sel], os_e[sel]))
    add("Harrell C for OS, Fong", 0.55, 0.62, harrell_c(y_os[has_fong], fong[has_fong]))
    game = compute_score("game", df)["total"].to_numpy(float)
    has_game = ~np.isnan(game)
    add("Harrell C for OS, GAME", 0.58, 0.66, harrell_c(y_os[has_game], game[has_game]))
    if cohort.truth is not None:  # clinical.md §2.1: a full model above ~0.80 would be unrealistic
        add("Harrell C for OS, true risk (oracle)", 0.60, 0.80, harrell_c(y_os, cohort.truth.risk("os")))

    table = pd.DataFrame(rows, columns=["quantity", "low", "high", "observed"])
    table["pass"] = (table["observed"] >= table["low"]) & (table["observed"] <= table["high"])
    return table


def check_passes(table: pd.DataFrame) -> bool:
    return bool(table["pass"].all())


def format_check(table: pd.DataFrame) -> str:
    """A plain-text table: quantity, target band, observed value, PASS/FAIL."""
    def fmt(x: float) -> str:
        return "nan" if not np.isfinite(x) else (f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}")

    width = max(len(q) for q in table["quantity"]) + 2
    lines = [f"{'quantity':<{width}}{'target':>18}{'observed':>11}  result", "-" * (width + 37)]
    for quantity, low, high, observed, ok in table[["quantity", "low", "high", "observed", "pass"]].itertuples(
            index=False, name=None):
        band = f"{fmt(low)} - {fmt(high)}"
        lines.append(f"{quantity:<{width}}{band:>18}{fmt(observed):>11}  {'PASS' if ok else 'FAIL'}")
    n_fail = int((~table["pass"]).sum())
    lines.append(f"{len(table) - n_fail}/{len(table)} targets met")
    return "\n".join(lines)
