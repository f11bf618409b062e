"""The champion rule: the ICI noise floor at the cohort's n, and the reference score as the default champion."""

import numpy as np
import pandas as pd
import pytest

from crlm.cohort.base import make_y
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark
from crlm.selection import choose_champion, ici_noise_floor


def test_noise_floor_matches_the_ici_of_perfect_predictions_at_n_300():
    # exponential survival with known hazards: the floor must equal the ICI of the true curves on real draws
    rng = np.random.default_rng(1)
    n, grid = 300, np.arange(1.0, 121.0)
    rate = np.exp(rng.normal(np.log(0.02), 0.5, n))
    surv = np.exp(-rate[:, None] * grid[None, :])
    from crlm.evaluation.calibration import ici

    direct = []
    for _ in range(60):
        t, c = rng.exponential(1 / rate), rng.uniform(12, 120, n)
        direct.append(ici(make_y(t <= c, np.minimum(t, c)), np.exp(-rate * 36.0), 36.0)["ici"])
    y = make_y(*(lambda t, c: (t <= c, np.minimum(t, c)))(rng.exponential(1 / rate), rng.uniform(12, 120, n)))
    floor = ici_noise_floor(y, surv, grid, 36.0, n_resamples=60, seed=2)
    assert floor["n_resamples"] == 60
    assert floor["mean"] == pytest.approx(np.mean(direct), rel=0.35)
    assert floor["q95"] > floor["mean"] > 0.005


@pytest.fixture(scope="module")
def result():
    cohort = simulate_cohort(400, seed=12)
    spec = BenchmarkSpec(models=("coxph", "coxnet"), baselines=(), reference="score:fong", outer_repeats=1,
                         outer_splits=5, inner_splits=2, n_boot=30, ablation_models=0, ceiling=False, tune=False)
    return run_benchmark(cohort, spec)


def test_reference_is_champion_when_no_learned_model_beats_it(result):
    res = result
    comp = res.comparisons.copy()
    comp.loc[comp.metric == "uno_c", "delta"] = -0.01  # pretend every learned model lost to the score
    res_lost = type(res)(**{**res.__dict__, "comparisons": comp})
    d = choose_champion(res_lost, ("coxph", "coxnet"), "score:fong", noise_floor_resamples=20,
                        reference_label="the Fong CRS")
    assert d.champion == "score:fong" and d.reference_is_champion and d.runner_up in ("coxph", "coxnet")
    assert d.verdict.startswith("no learned model beat the Fong CRS on this cohort; the served model is the Fong "
                                "CRS expressed as survival probabilities")
    assert "uno_c difference -0.010" in d.verdict


def test_learned_champion_must_also_be_calibrated_within_the_noise_floor(result):
    d = choose_champion(result, ("coxph", "coxnet"), "score:fong", noise_floor_resamples=20)
    table = pd.DataFrame(d.candidates).set_index("model")
    for m, row in table.iterrows():
        assert row.qualifies == (row.delta_uno_c > 0 and row.ici_36 <= row.ici_allowed)
        assert row.ici_allowed == pytest.approx(max(result.estimate("score:fong", "ici", 36.0),
                                                    d.noise_floor[m]["q95"]))
    if d.reference_is_champion:
        assert not table.qualifies.any()
    else:
        assert table.loc[d.champion, "qualifies"]
