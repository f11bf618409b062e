"""Bootstrap-as-weights metrics equal the library metrics on the resampled (duplicated) patients."""

import numpy as np
import pytest

from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.intervals import bootstrap_indices
from crlm.evaluation.metrics import evaluate_predictions, evaluation_grid, km_reference, survival_from_matrix
from crlm.evaluation.weighted import bootstrap_metrics, resample_weights

KEYS = ["harrell_c", "uno_c", "auc_12", "auc_36", "mean_auc", "brier_36", "oe_36", "ibs", "ipa_ibs"]


@pytest.fixture(scope="module")
def case():
    c = simulate_cohort(800, seed=3)
    y = c.y("os")
    grid = np.unique(np.concatenate([[0.5], np.arange(1.0, 181.0)]))
    surv = c.truth.survival("os", grid)
    risk = c.truth.risk("os") + np.random.default_rng(0).normal(0, 0.05, len(y))
    return y, risk, survival_from_matrix(surv, grid), surv, grid


def _weighted(y, risk, at, W):
    horizons = [12.0, 36.0, 60.0]
    eg = evaluation_grid(y, y, 50, t_max=60.0)
    return bootstrap_metrics(y, risk, at(np.array(horizons)), horizons, at(eg), eg, 60.0, km_reference(y, eg), W)


def test_unit_weights_reproduce_evaluate_predictions(case):
    y, risk, at, _, _ = case
    ref = evaluate_predictions(y, y, risk, at, [12.0, 36.0, 60.0])
    out = _weighted(y, risk, at, np.ones((1, len(y))))
    for key in KEYS:
        assert out[key][0] == pytest.approx(ref[key], abs=1e-4), key  # float32 pair matrices; censoring KM looked up at t


def test_a_resample_equals_the_metrics_on_duplicated_rows(case):
    y, risk, at, surv, grid = case
    idx = bootstrap_indices(len(y), 3, seed=1, strata=y["event"])
    out = _weighted(y, risk, at, resample_weights(idx, len(y)))
    for b in range(3):
        i = idx[b]
        ref = evaluate_predictions(y, y[i], risk[i], survival_from_matrix(surv[i], grid), [12.0, 36.0, 60.0])
        for key in KEYS:
            assert out[key][b] == pytest.approx(ref[key], abs=2e-3), (b, key)
