import warnings

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from crlm.cohort.base import make_y
from crlm.evaluation.intervals import bootstrap_indices, bootstrap_metric, percentile_interval
from crlm.evaluation.metrics import (
    HorizonWarning,
    brier_scores,
    default_tau,
    evaluate_predictions,
    evaluation_grid,
    harrell_c,
    integrated_brier,
    integrated_ipa,
    ipa,
    km_reference,
    survival_from_matrix,
    time_dependent_auc,
    uno_c,
    usable_horizons,
)

LAM = np.log(2) / 36
H = np.array([12.0, 36.0, 60.0])


def simulate(n, seed, follow_up=120.0):
    rng = np.random.default_rng(seed)
    lp = 0.8 * rng.normal(size=n)
    t_event = -np.log(rng.uniform(size=n)) / (LAM * np.exp(lp))
    t_cens = np.minimum(rng.uniform(24, follow_up, n), rng.exponential(150, n))
    return lp, make_y(t_event <= t_cens, np.minimum(t_event, t_cens))


def surv_fn(lp):
    return lambda times: np.exp(-LAM * np.asarray(times, float)[None, :] * np.exp(lp)[:, None])


@pytest.fixture(scope="module")
def data():
    _, y_train = simulate(400, seed=1, follow_up=130.0)  # training follow-up outlasts the test's,
    lp, y_test = simulate(250, seed=2, follow_up=100.0)  # so sksurv can be called directly as a reference
    assert y_test["time"].max() < y_train["time"].max()
    return y_train, y_test, lp


def test_harrell_c_hand_example():
    # comparable pairs (earlier time is an event): (1,2..5), (2,3..5), (4,5) = 8; only (2,3) discordant
    y = make_y([1, 1, 0, 1, 0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert harrell_c(y, [5, 3, 4, 2, 1]) == pytest.approx(7 / 8)
    assert harrell_c(y, [5, 3, 4, 2, 2]) == pytest.approx(6.5 / 8)  # tied risk counts 1/2


def test_agrees_with_sksurv(data):
    y_train, y_test, lp = data
    S = surv_fn(lp)
    assert harrell_c(y_test, lp) == concordance_index_censored(y_test["event"], y_test["time"], lp)[0]
    assert uno_c(y_train, y_test, lp, 36.0) == concordance_index_ipcw(y_train, y_test, lp, tau=36.0)[0]
    auc, mean_auc = time_dependent_auc(y_train, y_test, lp, H)
    ref_auc, ref_mean = cumulative_dynamic_auc(y_train, y_test, lp, H)
    np.testing.assert_allclose(auc, ref_auc)
    assert mean_auc == pytest.approx(ref_mean)
    np.testing.assert_allclose(brier_scores(y_train, y_test, S(H), H), brier_score(y_train, y_test, S(H), H)[1])
    grid = evaluation_grid(y_train, y_test, n=30)
    assert integrated_brier(y_train, y_test, S(grid), grid) == pytest.approx(
        integrated_brier_score(y_train, y_test, S(grid), grid))


def test_follow_up_beyond_training_is_handled_exactly(data):
    """Lengthening follow-up after the last horizon changes nothing at the horizons; sksurv itself fails."""
    y_train, y_test, lp = data
    S = surv_fn(lp)
    longer = y_test.copy()
    late = longer["time"] > H[-1]
    longer["time"][late] += 100.0
    longer["event"][late] = True
    with pytest.raises(ValueError, match="censoring survival function is zero"):
        cumulative_dynamic_auc(y_train, longer, lp, H)
    np.testing.assert_allclose(brier_scores(y_train, longer, S(H), H), brier_scores(y_train, y_test, S(H), H))
    np.testing.assert_allclose(time_dependent_auc(y_train, longer, lp, H)[0],
                               time_dependent_auc(y_train, y_test, lp, H)[0])


def test_ipa_null_model_is_zero_and_true_model_positive(data):
    y_train, y_test, lp = data
    km = np.broadcast_to(km_reference(y_train, H), (len(y_test), 3))
    np.testing.assert_allclose(ipa(y_train, y_test, km, H), 0.0, atol=1e-12)
    grid = evaluation_grid(y_train, y_test, n=20)
    km_grid = np.broadcast_to(km_reference(y_train, grid), (len(y_test), len(grid)))
    assert integrated_ipa(y_train, y_test, km_grid, grid) == pytest.approx(0.0, abs=1e-12)
    S = surv_fn(lp)
    assert (ipa(y_train, y_test, S(H), H) > 0.05).all()
    assert integrated_ipa(y_train, y_test, S(grid), grid) > 0.05


def test_km_reference_is_the_training_kaplan_meier():
    y = make_y([1, 0, 1, 1], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(km_reference(y, [0.5, 1.0, 2.5, 3.0, 4.0]), [1, 0.75, 0.75, 0.375, 0.0])


def test_horizon_beyond_follow_up_is_dropped_with_warning(data):
    y_train, y_test, lp = data
    with pytest.warns(HorizonWarning, match="horizon 240 dropped"):
        assert usable_horizons(y_train, y_test, [12, 36, 60, 240]) == [12.0, 36.0, 60.0]
    with pytest.warns(HorizonWarning):
        auc, _ = time_dependent_auc(y_train, y_test, lp, [12, 36, 240])
    assert np.isfinite(auc[:2]).all() and np.isnan(auc[2])
    with pytest.warns(HorizonWarning, match="no test event"):
        usable_horizons(y_train, y_test, [1e-3, 12])
    with pytest.warns(HorizonWarning), pytest.raises(ValueError, match="none of the horizons"):
        usable_horizons(y_train, y_test, [240, 300])


def test_clear_errors_for_bad_input(data):
    y_train, y_test, lp = data
    no_events = make_y(np.zeros(len(y_test), bool), y_test["time"])
    for call in (lambda: harrell_c(no_events, lp), lambda: uno_c(y_train, no_events, lp, 36.0),
                 lambda: evaluate_predictions(y_train, no_events, lp, surv_fn(lp))):
        with pytest.raises(ValueError, match="no events"):
            call()
    with pytest.raises(ValueError, match="empty"):
        harrell_c(y_test[:0], lp[:0])
    with pytest.raises(ValueError, match="shape"):
        harrell_c(y_test, lp[:-1])
    with pytest.raises(ValueError, match="shape"):
        brier_scores(y_train, y_test, surv_fn(lp)(H)[:, :2], H)
    with pytest.raises(ValueError, match="structured array"):
        harrell_c(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="strictly increasing"):
        brier_scores(y_train, y_test, surv_fn(lp)(H), H[::-1])
    with pytest.raises(ValueError, match="tau"):
        uno_c(y_train, y_test, lp, 10 * y_train["time"].max())


def test_evaluation_grid_respects_follow_up(data):
    y_train, y_test, _ = data
    grid = evaluation_grid(y_train, y_test, n=25, t_max=60.0)
    assert len(grid) == 25 and grid[-1] == 60.0
    assert grid[0] == pytest.approx(np.percentile(y_test["time"], 10))
    capped = evaluation_grid(y_train, y_test, t_max=1e6)
    assert capped[-1] < min(y_test["time"].max(), y_train["time"].max())


def test_evaluate_predictions_keys_and_values(data):
    y_train, y_test, lp = data
    S = surv_fn(lp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all default horizons usable: no warning expected
        res = evaluate_predictions(y_train, y_test, lp, S)
    per_h = ["auc", "brier", "ipa", "oe", "slope", "ici", "e50", "e90", "emax"]
    expected = {"n", "n_events", "harrell_c", "uno_c", "uno_tau", "mean_auc", "ibs", "ipa_ibs", "dcal_chi2",
                "dcal_p"} | {f"{k}_{h}" for k in per_h for h in (12, 36, 60)}
    assert set(res) == expected
    assert all(isinstance(v, float) and np.isfinite(v) for v in res.values())
    assert res["uno_tau"] == default_tau(y_train, y_test) == 60.0
    assert res["uno_c"] == pytest.approx(uno_c(y_train, y_test, lp, 60.0))
    assert res["brier_36"] == pytest.approx(brier_scores(y_train, y_test, S(H), H)[1])
    # for a proportional-hazards model 1 - S(t) ranks like the risk score
    assert res["auc_12"] == pytest.approx(time_dependent_auc(y_train, y_test, lp, H)[0][0])
    assert 0.8 < res["oe_36"] < 1.25 and res["dcal_p"] > 0.05


def test_evaluate_predictions_keeps_key_set_when_a_horizon_is_dropped(data):
    y_train, y_test, lp = data
    with pytest.warns(HorizonWarning):
        res = evaluate_predictions(y_train, y_test, lp, surv_fn(lp), horizons=(12, 36, 240))
    assert np.isnan(res["auc_240"]) and np.isnan(res["ici_240"]) and np.isfinite(res["ici_36"])
    assert res["uno_tau"] == 36.0


def test_survival_from_matrix_is_a_step_function():
    fn = survival_from_matrix(np.array([[0.9, 0.5], [0.8, 0.2]]), [10.0, 20.0])
    np.testing.assert_allclose(fn([5.0, 10.0, 15.0, 25.0]), [[1, 0.9, 0.9, 0.5], [1, 0.8, 0.8, 0.2]])


def test_bootstrap_indices_deterministic_and_stratified():
    event = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    a = bootstrap_indices(100, 50, seed=7, strata=event)
    np.testing.assert_array_equal(a, bootstrap_indices(100, 50, seed=7, strata=event))
    assert not np.array_equal(a, bootstrap_indices(100, 50, seed=8, strata=event))
    assert (event[a].sum(axis=1) == 30).all()  # every replicate keeps 30 events
    y = make_y(event, np.arange(100.0) + 1)
    np.testing.assert_array_equal(bootstrap_indices(100, 5, seed=1, strata=y), bootstrap_indices(100, 5, 1, event))


def test_percentile_interval_ignores_nan():
    assert percentile_interval(np.r_[np.arange(101.0), np.nan], 0.9) == pytest.approx((5.0, 95.0))
    assert all(np.isnan(percentile_interval([np.nan])))


def test_bootstrap_metric_paired_and_failures(data):
    _, y_test, lp = data
    noise = np.random.default_rng(0).normal(scale=2, size=len(lp))

    def both(idx):
        return {"good": harrell_c(y_test[idx], lp[idx]), "noisy": harrell_c(y_test[idx], lp[idx] + noise[idx])}

    draws = bootstrap_metric(both, len(y_test), n_boot=40, seed=3, strata=y_test["event"])
    assert isinstance(draws, pd.DataFrame) and draws.shape == (40, 2)
    low, high = percentile_interval(draws["good"] - draws["noisy"])
    assert 0 < low < high  # paired difference: the noisy score is clearly worse
    single = bootstrap_metric(lambda idx: harrell_c(y_test[idx], lp[idx]), len(y_test), 40, seed=3,
                              strata=y_test["event"])
    np.testing.assert_allclose(single, draws["good"])

    def flaky(idx):
        if idx[0] % 2:
            raise ValueError("undefined here")
        return 1.0

    with pytest.warns(RuntimeWarning, match="bootstrap replicates failed"):
        out = bootstrap_metric(flaky, 10, n_boot=20, seed=0)
    assert np.isnan(out).any() and (out[~np.isnan(out)] == 1.0).all()


def test_centred_interval_contains_the_estimate_of_a_skewed_metric():
    from crlm.evaluation.intervals import centred_interval

    rng = np.random.default_rng(0)
    replicates = 0.03 + rng.gamma(2.0, 0.01, 2000)  # all above the estimate, like ICI on resamples
    estimate = 0.016
    assert percentile_interval(replicates)[0] > estimate  # the plain percentile interval misses it
    low, high = centred_interval(replicates, estimate)
    assert low <= estimate <= high
    spread = np.quantile(replicates, [0.025, 0.975]) - np.median(replicates)
    assert (low, high) == pytest.approx((estimate + spread[0], estimate + spread[1]))
