"""Harrell's optimism correction: zero for a model with nothing to fit, and it removes the optimism of noise."""

import pytest

from crlm.cohort.base import predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.optimism import optimism_corrected


def test_a_score_has_no_discrimination_optimism():
    cohort = simulate_cohort(300, seed=3).with_outcome("os")
    X, y = predictors_frame(cohort.data), cohort.y("os")
    head = optimism_corrected("score:fong", {}, X, y, [12.0, 36.0], n_boot=15, seed=1)
    # the ranking of a fixed score does not depend on the data it is "fitted" on
    assert head["harrell_c"]["optimism"] == pytest.approx(0.0, abs=0.01)
    assert head["harrell_c"]["corrected"] == pytest.approx(head["harrell_c"]["apparent"] - head["harrell_c"]["optimism"])
    assert head["n_boot"] == 15 and head["harrell_c"]["n_ok"] == 15


def test_noise_features_are_corrected_towards_chance():
    cohort = simulate_cohort(160, seed=5).with_outcome("os")
    X, y = predictors_frame(cohort.data), cohort.y("os")
    shuffled = X.copy()
    # break every link between the predictors and the outcome: any apparent discrimination is optimism
    shuffled[:] = X.sample(frac=1.0, random_state=1).to_numpy()
    shuffled = shuffled.astype(X.dtypes.to_dict())
    head = optimism_corrected("coxph", {"alpha": 10.0}, shuffled, y, [12.0, 36.0], n_boot=25, seed=2)
    c = head["harrell_c"]
    assert c["apparent"] > 0.6  # a lightly penalised Cox model on ~40 columns fits the noise
    assert c["optimism"] > 0.05
    # Harrell's bootstrap is known to under-correct when p/n is large and there is no signal (the refits'
    # "original" sample shares ~63% of their patients); it still removes most of the optimism
    assert 0.45 < c["corrected"] < 0.5 + (c["apparent"] - 0.5) / 2
