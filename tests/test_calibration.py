import numpy as np
import pytest
from scipy import stats
from sksurv.linear_model import CoxPHSurvivalAnalysis

from crlm.cohort.base import make_y
from crlm.evaluation.calibration import (
    binned_calibration,
    calibration_in_the_large,
    calibration_slope,
    d_calibration,
    fit_cox,
    ici,
    rcs_basis,
)

LAM = np.log(2) / 36  # baseline: median survival 36 months
T0 = 36.0


def simulate(n, seed, beta=0.8):
    """Exponential PH model with a known linear predictor, uniform administrative + random censoring."""
    rng = np.random.default_rng(seed)
    lp = beta * rng.normal(size=n)
    t_event = -np.log(rng.uniform(size=n)) / (LAM * np.exp(lp))
    t_cens = np.minimum(rng.uniform(24, 120, n), rng.exponential(150, n))
    return lp, make_y(t_event <= t_cens, np.minimum(t_event, t_cens))


def true_surv(lp, t):
    return np.exp(-LAM * np.asarray(t, dtype=float) * np.exp(lp))


@pytest.fixture(scope="module")
def sim():
    lp, y = simulate(2000, seed=11)
    return lp, y


def test_cox_fitter_matches_sksurv_breslow_with_ties():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    t = np.ceil(rng.exponential(10 * np.exp(-X @ [0.7, -0.4])))  # integer months: many ties
    y = make_y(rng.uniform(size=300) < 0.7, t)
    ours = fit_cox(X, y["time"], y["event"])
    ref = CoxPHSurvivalAnalysis(ties="breslow").fit(X, y)
    assert ours.converged
    np.testing.assert_allclose(ours.coef, ref.coef_, rtol=1e-5)
    ref_surv = np.array([fn(8.0) for fn in ref.predict_survival_function(X[:20])])
    np.testing.assert_allclose(ours.survival_at(X[:20], 8.0), ref_surv, rtol=1e-5)


def test_rcs_basis_is_linear_beyond_outer_knots():
    knots = [-1.0, 0.0, 1.5, 3.0]
    x = np.linspace(-4, 8, 241)
    basis = rcs_basis(x, knots)
    assert basis.shape == (241, 3)
    np.testing.assert_array_equal(basis[:, 0], x)
    for region in (x < knots[0], x > knots[-1]):
        second_diff = np.diff(basis[region], n=2, axis=0)
        np.testing.assert_allclose(second_diff, 0, atol=1e-9)
    assert np.abs(np.diff(basis[(x > 0) & (x < 1.5), 1], n=2)).max() > 1e-6  # curved between knots


def test_well_calibrated_model_passes_every_check(sim):
    lp, y = sim
    s = true_surv(lp, T0)
    res = ici(y, s, T0)
    assert res["ici"] < 0.02
    assert res["e50"] <= res["e90"] <= res["emax"]
    assert 0.95 < calibration_in_the_large(y, s, T0) < 1.05
    assert abs(calibration_slope(y, s, T0) - 1) < 0.15
    _, p = d_calibration(y, true_surv(lp, y["time"]))
    assert p > 0.05
    # the curve is returned sorted by prediction and tracks the diagonal
    assert np.all(np.diff(res["predicted"]) >= 0)
    np.testing.assert_allclose(res["observed"], res["predicted"], atol=0.05)


@pytest.mark.parametrize("power, oe_side", [(2.0, "below"), (0.5, "above")])
def test_shifted_predictions_are_flagged(sim, power, oe_side):
    lp, y = sim
    good = ici(y, true_surv(lp, T0), T0)["ici"]
    s = true_surv(lp, T0) ** power  # S^2 over-predicts risk, S^0.5 under-predicts
    res = ici(y, s, T0)
    oe = calibration_in_the_large(y, s, T0)
    assert res["ici"] > 0.1 and res["ici"] > 5 * good
    assert (oe < 0.85) if oe_side == "below" else (oe > 1.2)
    # a constant shift on the cloglog scale leaves the slope at 1: it is calibration-in-the-large only
    assert abs(calibration_slope(y, s, T0) - 1) < 0.15
    assert d_calibration(y, true_surv(lp, y["time"]) ** power)[1] < 0.05


def test_over_confident_predictions_have_low_slope(sim):
    lp, y = sim
    s = true_surv(2 * lp, T0)  # linear predictor doubled
    assert calibration_slope(y, s, T0) < 0.75
    assert ici(y, s, T0)["ici"] > 3 * ici(y, true_surv(lp, T0), T0)["ici"]
    assert d_calibration(y, true_surv(2 * lp, y["time"]))[1] < 0.05


def test_ici_matches_reference_cox_on_spline(sim):
    """Austin's recipe done with sksurv's Cox on the same spline basis gives the same ICI."""
    lp, y = sim
    s = true_surv(lp, T0) ** 1.5
    x = np.log(-np.log(s))
    basis = rcs_basis(x, np.quantile(x, [0.1, 0.5, 0.9]))
    ref = CoxPHSurvivalAnalysis(ties="breslow").fit(basis, y)
    observed = 1 - np.array([fn(T0) for fn in ref.predict_survival_function(basis)])
    assert ici(y, s, T0)["ici"] == pytest.approx(np.mean(np.abs(observed - (1 - s))), abs=1e-4)


def test_ici_with_few_distinct_predictions_falls_back_to_linear(sim):
    lp, y = sim
    groups = np.digitize(lp, [-0.5, 0.5])  # a three-level risk score
    s = np.array([0.7, 0.5, 0.3])[groups]
    res = ici(y, s, T0, knots=4)
    assert np.isfinite(res["ici"]) and res["ici"] < 0.2


def test_d_calibration_hand_example():
    # bins of width 0.5: events at u = 0.1, 0.2, 0.3 -> [3, 0]; a censored patient with S(c) = 0.8 spreads
    # 0.5/0.8 into the first bin and 0.3/0.8 into the second -> [3.625, 0.375]; expected 2 per bin.
    y = make_y([True, True, True, False], [1.0, 2.0, 3.0, 4.0])
    chi2, p = d_calibration(y, [0.1, 0.2, 0.3, 0.8], bins=2)
    assert chi2 == pytest.approx(2 * 1.625**2 / 2)
    assert p == pytest.approx(stats.chi2.sf(chi2, 1))
    # a censored patient with S(c) = 0.5 fills the lower half only: [1 + 1, 2] -> perfectly uniform
    y = make_y([True, True, True, False], [1.0, 2.0, 3.0, 4.0])
    assert d_calibration(y, [0.1, 0.6, 0.7, 0.5], bins=2)[0] == pytest.approx(0.0)


def test_calibration_in_the_large_hand_example():
    y = make_y([True] * 4, [1.0, 2.0, 3.0, 4.0])  # KM at 2.5 = 0.5 -> observed risk 0.5
    assert calibration_in_the_large(y, np.full(4, 0.75), 2.5) == pytest.approx(0.5 / 0.25)


def test_binned_calibration_tracks_truth(sim):
    lp, y = sim
    table = binned_calibration(y, true_surv(lp, T0), T0, groups=5)
    assert list(table.columns) == ["group", "n", "events", "predicted", "observed"]
    assert table["n"].sum() == len(y) and len(table) == 5
    assert table["predicted"].is_monotonic_increasing
    np.testing.assert_allclose(table["observed"], table["predicted"], atol=0.06)


def test_clear_errors(sim):
    lp, y = sim
    s = true_surv(lp, T0)
    with pytest.raises(ValueError, match="beyond the follow-up"):
        ici(y, s, 10 * y["time"].max())
    with pytest.raises(ValueError, match="shape"):
        calibration_slope(y, s[:-1], T0)
    with pytest.raises(ValueError, match="empty"):
        calibration_in_the_large(y[:0], s[:0], T0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_in_the_large(y, s + 1, T0)
    with pytest.raises(ValueError, match="no events"):
        calibration_slope(make_y([False, False], [5.0, 40.0]), [0.9, 0.8], T0)
    assert np.isnan(calibration_slope(y, np.full(len(y), 0.5), T0))  # no spread: slope undefined
