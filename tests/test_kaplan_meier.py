"""crlm.kaplan_meier against the helpers it replaced (copied here as they were) and scikit-survival's own
step functions, on cohorts with ties, heavy censoring, a curve that reaches 0 and one that does not."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.nonparametric import SurvivalFunctionEstimator, kaplan_meier_estimator
from sksurv.util import Surv

from crlm.kaplan_meier import censoring_curve, km_at, km_curve, km_median, median_follow_up

# --- the replaced helpers, verbatim but for names -------------------------------------------------------------


def old_calibration_kaplan_meier_at(y, times):  # crlm.evaluation.calibration.kaplan_meier_at
    t_km, s_km = kaplan_meier_estimator(np.asarray(y["event"], bool), np.asarray(y["time"], float))
    times = np.atleast_1d(np.asarray(times, dtype=float))
    idx = np.searchsorted(t_km, times, side="right") - 1
    out = np.where(idx >= 0, s_km[np.clip(idx, 0, None)], 1.0)
    out[(times > t_km[-1]) & (s_km[-1] > 0)] = np.nan
    return out


def old_summary_km_at(time, event, t):  # crlm.cohort.summary.km_at
    time, event = np.asarray(time, float), np.asarray(event, bool)
    if len(time) == 0 or t > time.max():
        return float("nan")
    x, s = kaplan_meier_estimator(event, time)
    i = np.searchsorted(x, t, side="right") - 1
    return 1.0 if i < 0 else float(s[i])


def old_summary_km_median(time, event):  # crlm.cohort.summary.km_median
    x, s = kaplan_meier_estimator(np.asarray(event, bool), np.asarray(time, float))
    below = np.flatnonzero(s <= 0.5)
    return float(x[below[0]]) if len(below) else float("nan")


def old_decision_km_risk(time, event, horizon):  # crlm.evaluation.decision_curves._km_risk (hand-written)
    if len(time) == 0:
        return 0.0
    if time.max() < horizon:
        return float("nan")
    times = np.unique(time[event & (time <= horizon)])
    at_risk = (time[None, :] >= times[:, None]).sum(axis=1)
    deaths = ((time[None, :] == times[:, None]) & event[None, :]).sum(axis=1)
    return float(1.0 - np.prod(1.0 - deaths / at_risk))


def cohorts():
    rng = np.random.default_rng(3)
    out = {}
    for n in (1, 7, 60, 400):
        time = np.round(rng.exponential(30, n), 0) + 1.0  # whole months: many ties
        event = rng.random(n) < 0.6
        out[f"ties n={n}"] = (time, event)
    t = np.round(rng.exponential(30, 80), 1) + 0.1
    out["all events"] = (t, np.ones(80, bool))
    out["all censored"] = (t, np.zeros(80, bool))
    e = rng.random(80) < 0.5
    order = np.argsort(t)
    e[order[-1]] = True
    out["last is an event"] = (t, e.copy())
    e[order[-1]] = False
    out["last is censored"] = (t, e)
    return out


COHORTS = cohorts()


@pytest.mark.parametrize("name", sorted(COHORTS))
def test_km_at_equals_the_replaced_helpers(name):
    time, event = COHORTS[name]
    grid = np.r_[0.0, 0.5, np.unique(time), np.unique(time) + 0.25, time.max() + 1.0, 1e4]
    y = Surv.from_arrays(event, time)
    new = km_at(time, event, grid)
    np.testing.assert_array_equal(new, old_calibration_kaplan_meier_at(y, grid))  # NaN in the same places
    for t, value in zip(grid, new, strict=True):
        old = old_summary_km_at(time, event, t)
        if t <= time.max():
            assert value == old
        else:  # beyond follow-up: unknown, unless the curve reached 0 (the old summary helper said NaN)
            assert np.isnan(old) and (np.isnan(value) or value == 0.0)
        assert km_at(time, event, t) == value or (np.isnan(value) and np.isnan(km_at(time, event, t)))
        if t <= time.max():
            assert 1.0 - value == pytest.approx(old_decision_km_risk(time, event, t), abs=1e-12)


@pytest.mark.parametrize("name", sorted(COHORTS))
def test_km_at_is_scikit_survivals_step_function(name):
    time, event = COHORTS[name]
    if not event.any():
        return
    at = np.r_[0.0, np.unique(time), np.unique(time)[:-1] + 0.25]
    sksurv = SurvivalFunctionEstimator().fit(Surv.from_arrays(event, time)).predict_proba(at)
    np.testing.assert_allclose(km_at(time, event, at), sksurv, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", sorted(COHORTS))
def test_median_and_censoring_equal_the_replaced_helpers(name):
    time, event = COHORTS[name]
    for e in (event, ~event):
        old, new = old_summary_km_median(time, e), km_median(time, e)
        assert (np.isnan(old) and np.isnan(new)) or old == new
    assert median_follow_up(time, event) == km_median(time, ~event) or np.isnan(median_follow_up(time, event))
    ct, cs = censoring_curve(time, event)
    old_t, old_s = kaplan_meier_estimator(~event, time)  # the inline censoring KMs it replaced
    np.testing.assert_array_equal(ct, old_t)
    np.testing.assert_array_equal(cs, old_s)


def test_known_values_and_the_empty_cohort():
    time, event = [1.0, 2.0, 3.0, 4.0], [True, False, True, False]
    np.testing.assert_allclose(km_at(time, event, [0.5, 1.0, 2.5, 3.0]), [1.0, 0.75, 0.75, 0.375])
    assert np.isnan(km_at(time, event, 5.0))  # beyond the last (censored) time: unknown
    assert km_at(time, [True, False, True, True], 9.0) == 0.0  # the curve reached 0 and stays there
    assert km_median(time, event) == 3.0
    assert np.isnan(km_at([], [], 1.0)) and np.isnan(km_median([], []))
    x, s, band = km_curve(time, event, conf_type="log-log")
    assert band.shape == (2, len(x)) and (band[0] <= s).all() and (s <= band[1]).all()
