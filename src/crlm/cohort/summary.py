"""What a cohort holds: patients, events and follow-up per endpoint, and how complete each field is."""

from __future__ import annotations

__all__ = ["completeness", "endpoint_summary", "km_at", "km_median"]

import numpy as np
import pandas as pd
from sksurv.nonparametric import kaplan_meier_estimator

from crlm.cohort.base import Cohort
from crlm.schema import ENDPOINTS, FIELDS


def km_at(time, event, t: float) -> float:
    """Kaplan–Meier survival at t (NaN beyond the last observed time)."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    if len(time) == 0 or t > time.max():
        return float("nan")
    x, s = kaplan_meier_estimator(event, time)
    i = np.searchsorted(x, t, side="right") - 1
    return 1.0 if i < 0 else float(s[i])


def km_median(time, event) -> float:
    """Kaplan–Meier median survival; NaN when not reached."""
    x, s = kaplan_meier_estimator(np.asarray(event, bool), np.asarray(time, float))
    below = np.flatnonzero(s <= 0.5)
    return float(x[below[0]]) if len(below) else float("nan")


def endpoint_summary(cohort: Cohort) -> pd.DataFrame:
    """Per endpoint: patients, events, median follow-up (reverse KM), KM median and 1/3/5-year survival."""
    rows = []
    for ep in ENDPOINTS.values():
        if ep.time not in cohort.data or cohort.data[ep.time].isna().all():
            continue
        sub = cohort.with_outcome(ep.name)
        y = sub.y(ep.name)
        rows.append({
            "endpoint": ep.name, "patients": len(y), "events": int(y["event"].sum()),
            "median_follow_up_months": km_median(y["time"], ~y["event"]),
            "median_survival_months": km_median(y["time"], y["event"]),
            **{f"survival_{int(t)}m": km_at(y["time"], y["event"], t) for t in (12, 36, 60)},
        })
    return pd.DataFrame(rows)


def completeness(cohort: Cohort) -> pd.DataFrame:
    """Share of patients with each schema field recorded (fields the cohort has)."""
    rows = []
    for f in FIELDS:
        if f.name in cohort.data and f.block not in ("id", "outcome"):
            col = cohort.data[f.name]
            known = col.notna() & ~col.astype(str).eq("unknown")
            rows.append({"field": f.name, "block": f.block, "recorded": int(known.sum()),
                         "recorded_share": float(known.mean()) if len(col) else float("nan")})
    return pd.DataFrame(rows)
