"""What a cohort holds: patients, events and follow-up per endpoint, and how complete each field is."""

from __future__ import annotations

__all__ = ["completeness", "endpoint_summary", "km_at", "km_median"]

import pandas as pd

from crlm.cohort.base import Cohort
from crlm.kaplan_meier import km_at, km_median, median_follow_up
from crlm.schema import DEFAULT_HORIZONS_MONTHS, ENDPOINTS, FIELDS


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
            "median_follow_up_months": median_follow_up(y["time"], y["event"]),
            "median_survival_months": km_median(y["time"], y["event"]),
            **{f"survival_{int(t)}m": km_at(y["time"], y["event"], t) for t in DEFAULT_HORIZONS_MONTHS},
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
