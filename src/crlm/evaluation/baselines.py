"""How well the clinical scores discriminate on a cohort, before any model: Harrell's C with 95% intervals."""

from __future__ import annotations

__all__ = ["score_agreement", "score_concordance"]

import numpy as np
import pandas as pd

from crlm.cohort.base import Cohort
from crlm.evaluation.intervals import bootstrap_indices, centred_interval
from crlm.evaluation.metrics import harrell_c
from crlm.schema import ENDPOINTS
from crlm.scores import SCORES, available_scores, compute_score


def score_concordance(cohort: Cohort, endpoints: list[str] | None = None, n_boot: int = 200,
                      seed: int = 0) -> pd.DataFrame:
    """One row per endpoint x score: patients with the score, events, Harrell's C and its 95% interval
    (bootstrap over those patients, resampled within event strata; percentile recentred on the estimate)."""
    rows = []
    names = available_scores(cohort.data)
    for ep_name in endpoints or [e for e, ep in ENDPOINTS.items() if ep.time in cohort.data]:
        with_outcome = cohort.with_outcome(ep_name)
        if len(with_outcome) == 0:
            continue
        y_all = with_outcome.y(ep_name)
        for name in [*names, *(f.name for f in cohort.recorded_scores)]:
            recorded = {f.name: f for f in cohort.recorded_scores}.get(name)
            total = (pd.to_numeric(with_outcome.data[name], errors="coerce").to_numpy(dtype=float) if recorded
                     else compute_score(name, with_outcome.data)["total"].to_numpy(dtype=float))
            keep = ~np.isnan(total)
            y, risk = y_all[keep], total[keep]
            if keep.sum() < 10 or y["event"].sum() < 2:
                continue
            c = harrell_c(y, risk)
            boots = [harrell_c(y[i], risk[i]) for i in bootstrap_indices(len(y), n_boot, seed, strata=y["event"])]
            low, high = centred_interval(boots, c)
            label = f"{recorded.description.split(': ')[0]} (recorded)" if recorded else SCORES[name].label
            rows.append({"endpoint": ep_name, "score": label, "patients": int(keep.sum()),
                         "events": int(y["event"].sum()), "harrell_c": c, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["endpoint", "score", "patients", "events", "harrell_c", "ci_low",
                                       "ci_high"])


def score_agreement(cohort: Cohort) -> str:
    """Agreement between a recorded Fong score and the one recomputed from its components, if both exist."""
    if "fong_score_recorded" not in cohort.data:
        return ""
    data, proxy = cohort.data.copy(), ""
    if "disease_free_interval_months" not in data and "synchronous_metastases" in data:
        # Without a disease-free interval, synchronous stands in for "DFI < 12 months" (as a reader of the
        # sheet would do); this proxy is one reason recomputation disagrees with the recorded score.
        sync = data["synchronous_metastases"]
        data["disease_free_interval_months"] = np.where(sync.isna(), np.nan, np.where(sync.fillna(False), 0, 24))
        proxy = " (synchronous used as the proxy for DFI < 12 months)"
    recorded = data["fong_score_recorded"].to_numpy(dtype=float)
    recomputed = compute_score("fong", data)["total"].to_numpy(dtype=float)
    both = ~np.isnan(recorded) & ~np.isnan(recomputed)
    if both.sum() == 0:
        return f"Fong score: recorded for {int((~np.isnan(recorded)).sum())} patients; recomputable for none (components missing)."
    exact = np.mean(recorded[both] == recomputed[both])
    within_one = np.mean(np.abs(recorded[both] - recomputed[both]) <= 1)
    high_agree = np.mean((recorded[both] >= 3) == (recomputed[both] >= 3))
    return (f"Fong score agreement, recorded vs recomputed from components, on {int(both.sum())} patients with "
            f"both: exact {exact:.0%}, within one point {within_one:.0%}, same group (0-2 / 3-5) "
            f"{high_agree:.0%}{proxy}. The recorded score is this cohort's Fong baseline.")
