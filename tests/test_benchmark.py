"""The benchmark: nested resampling without leakage, the oracle on top, paired comparisons, clear errors."""

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from crlm.cohort.base import Cohort, predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation import plots
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark
from crlm.evaluation.reference_rows import ceiling_seed
from crlm.models import make_model
from crlm.reporting.leaderboard import leaderboard_html

SMALL = dict(outer_repeats=1, outer_splits=2, inner_splits=2, n_boot=30, ablation_models=0, ceiling_n=2000)


class Spy(BaseEstimator):
    """A Cox model that records which patients reach fit and predict."""

    calls: list = []

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, X, y):
        Spy.calls.append(("fit", frozenset(X["patient_id"])))
        self.model_ = make_model("coxph", model__alpha=self.alpha).fit(X, y)
        return self

    def predict(self, X):
        Spy.calls.append(("predict", frozenset(X["patient_id"])))
        return self.model_.predict(X)

    def predict_survival(self, X, times):
        return self.model_.predict_survival(X, times)


def spy_factory(name, blocks, postoperative, columns, seed):
    return Spy() if name == "coxph" else make_model(name, blocks=tuple(blocks), columns_present=columns)


def test_no_outer_test_patient_reaches_fit_or_the_tuner():
    Spy.calls = []
    cohort = simulate_cohort(240, seed=2)
    spec = BenchmarkSpec(models=("coxph",), baselines=(), search_spaces={"coxph": {"alpha": [0.1, 10.0]}}, **SMALL)
    res = run_benchmark(cohort, spec, factory=spy_factory)
    ids = res.population.data["patient_id"].to_numpy()
    outer_tests = [frozenset(ids[test]) for _, test in res.folds]
    fits_since_last = []
    checked = 0
    for kind, patients in Spy.calls:
        if kind == "fit":
            fits_since_last.append(patients)
        elif patients in outer_tests:  # the outer test prediction closes a fold's fits
            assert fits_since_last, "a fold predicted without fitting"
            for fitted in fits_since_last:
                assert not fitted & patients, "an outer test patient reached fit or the tuner"
            # tuning happened: inner fits on subsets, then the refit on the whole outer training part
            assert len(fits_since_last) == 2 * 2 + 1
            checked += 1
            fits_since_last = []
    assert checked == len(res.folds) == 2


@pytest.fixture(scope="module")
def sim_result():
    cohort = simulate_cohort(700, seed=4)
    spec = BenchmarkSpec(models=("coxnet",), baselines=("score:fong", "score:game"), outer_repeats=2, outer_splits=2,
                         inner_splits=2, n_boot=60, ablation_models=1, seed=3, ceiling_n=5000)
    return cohort, spec, run_benchmark(cohort, spec)


@pytest.mark.slow
def test_leaderboard_oracle_and_paired_comparison(sim_result):
    _, _, res = sim_result
    board = res.leaderboard().set_index("model")
    assert {"oracle", "coxnet", "score:fong", "score:game"} <= set(board.index)
    c = board["harrell_c"]
    assert c["oracle"] > c["coxnet"] > c["score:fong"]  # the truth beats learning beats the 5-point score
    assert c["oracle"] - c["score:fong"] > 0.05
    assert board.loc["score:fong", "delta_c_vs_ref"] == 0.0 and board.loc["score:fong", "delta_c_ci"] == "(reference)"
    m = res.metrics
    assert set(m.columns) >= {"model", "metric", "horizon", "estimate", "ci_low", "ci_high", "n"}
    row = m[(m.model == "coxnet") & (m.metric == "uno_c")].iloc[0]
    assert row.ci_low < row.estimate < row.ci_high
    for metric in ("auc", "brier", "ici", "oe", "slope", "e50", "e90"):
        assert set(m[(m.model == "coxnet") & (m.metric == metric)].horizon) == {12.0, 36.0, 60.0}
    comp = res.comparisons[(res.comparisons.model == "oracle") & (res.comparisons.metric == "harrell_c")].iloc[0]
    assert comp.delta > 0 and comp.ci_low > 0 and comp.better_than_reference
    assert set(res.ablation.blocks) == {"clinical", "clinical + genomic", "clinical + genomic + response"}
    assert res.ablation["uno_c_ci"].str.startswith("[").all()  # every step has its interval, the full model too
    assert len(res.population) == len(res.y) and res.oof["coxnet"].risk.shape == (2, len(res.y))


@pytest.mark.slow  # two full benchmarks with every step on
def test_same_seed_same_numbers():
    """Every random step (folds, tuning, bootstrap, ablation, ceiling) follows the seed: two runs agree.
    A small run with every step switched on (the module's large run is not repeated for this)."""
    cohort = simulate_cohort(200, seed=4)
    spec = BenchmarkSpec(models=("coxnet",), baselines=("score:fong",), outer_repeats=2, outer_splits=2,
                         inner_splits=2, n_boot=10, ablation_models=1, seed=3, ceiling_n=300)
    res, again = run_benchmark(cohort, spec), run_benchmark(cohort, spec)
    assert {"oracle", "ceiling", "coxnet", "score:fong"} <= set(res.oof) and len(res.ablation)
    pd.testing.assert_frame_equal(res.metrics, again.metrics)
    pd.testing.assert_frame_equal(res.comparisons, again.comparisons)
    pd.testing.assert_frame_equal(res.ablation, again.ablation)


def test_bad_input_gets_clear_errors():
    cohort = simulate_cohort(200, seed=1)
    spec = BenchmarkSpec(models=("coxph",), baselines=(), **SMALL)
    with pytest.raises(ValueError, match="unknown model 'cox_ph'"):
        run_benchmark(cohort, BenchmarkSpec(models=("cox_ph",), **SMALL))
    empty = Cohort(cohort.data.iloc[:0], "empty", "test")
    with pytest.raises(ValueError, match="empty"):
        run_benchmark(empty, spec)
    no_events = cohort.data.copy()
    no_events["os_event"] = pd.array([False] * len(no_events), dtype="boolean")
    with pytest.raises(ValueError, match="no os events"):
        run_benchmark(Cohort(no_events, "quiet", "test"), spec)
    with pytest.raises(ValueError, match="unknown endpoint"):
        run_benchmark(cohort, BenchmarkSpec(endpoint="pfs", models=("coxph",), **SMALL))


def test_horizon_beyond_follow_up_is_dropped_with_a_warning():
    cohort = simulate_cohort(300, seed=6)
    short = cohort.data.copy()
    short["os_event"] = short["os_event"] & (short["os_months"] <= 48)
    short["os_months"] = np.minimum(short["os_months"], 48.0)  # follow-up ends at 4 years
    spec = BenchmarkSpec(models=("coxph",), baselines=(), horizons=(12.0, 36.0, 60.0), **SMALL)
    with pytest.warns(UserWarning, match="60"):
        res = run_benchmark(Cohort(short, "short", "test", truth=None), spec)
    assert res.horizons == [12.0, 36.0]
    assert "oracle" not in res.oof and "ceiling" not in res.oof  # no truth: no simulation-only rows


@pytest.mark.slow
def test_ceiling_is_a_model_fitted_on_independent_patients_and_evaluated_like_the_others(sim_result):
    _, spec, res = sim_result
    board = res.leaderboard().set_index("model")
    assert board.loc["ceiling", "kind"] == "ceiling" and board.loc["oracle", "kind"] == "oracle"
    c = board["harrell_c"]
    # the truth (which sees unrecorded values) > the recorded fields with 5,000 patients > ~320 patients
    assert c["oracle"] > c["ceiling"] > c["coxnet"]
    ceiling = res.oof["ceiling"]
    assert ceiling.valid.all() and ceiling.risk.shape == (2, len(res.y))
    assert np.array_equal(ceiling.risk[0], ceiling.risk[1])  # one model, the same for every repeat
    # exactly an xgb_cox (400 trees, depth 3) fitted on simulate_cohort(ceiling_n, 10**6 + seed), none of
    # whose patients is evaluated
    train = simulate_cohort(5000, seed=10**6 + spec.seed)
    X = predictors_frame(res.population.data)
    model = make_model("xgb_cox", blocks=spec.blocks, columns_present=list(X.columns), random_state=10**6 + spec.seed,
                       model__n_estimators=400, model__max_depth=3).fit(predictors_frame(train.data), train.y("os"))
    assert np.allclose(model.predict(X), ceiling.risk[0])
    assert np.allclose(model.predict_survival(X, res.grid), ceiling.survival[0])
    # the same evaluation, bootstrap intervals and paired comparison as every other row
    row = res.metrics[(res.metrics.model == "ceiling") & (res.metrics.metric == "uno_c")].iloc[0]
    assert row.ci_low < row.estimate < row.ci_high and row.n == len(res.y)
    comp = res.comparisons[res.comparisons.model == "ceiling"]
    assert set(comp.metric) == {"harrell_c", "uno_c", "mean_auc", "ibs", "ipa_ibs"}
    assert comp[comp.metric == "harrell_c"].iloc[0].better_than_reference
    assert "ceiling" in res.timings and any("5000 independent simulated patients" in n for n in res.notes)
    assert "ceiling" not in set(res.ablation.model) and "ceiling" not in set(res.chosen_params.model)


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


@pytest.mark.slow
def test_ceiling_works_in_every_plot(sim_result):
    """The ceiling row is drawn in every figure, from its own numbers (not only: the figure is built)."""
    _, _, res = sim_result
    label = plots.model_label("ceiling")
    ceiling = res.oof["ceiling"]
    n = int(ceiling.valid.sum())

    fig = plots.calibration_plot(res, "ceiling", 36)
    ax = fig.axes[0]
    assert label in ax.get_title(loc="left") and "36 months" in ax.get_title(loc="left")
    counts = [int(t.get_text().removeprefix("n=")) for t in ax.texts if t.get_text().startswith("n=")]
    assert sum(counts) == n  # every patient the ceiling scores is in one of the plotted groups
    at_36 = int(np.flatnonzero(np.isclose(res.grid, 36.0))[0])
    risk_36 = 1 - ceiling.survival[:, ceiling.valid, at_36].mean(axis=0)
    curve = next(line for line in ax.get_lines() if line.get_label().startswith("Smoothed"))
    xs = np.asarray(curve.get_xdata(), dtype=float)
    assert len(xs) > 1 and risk_36.min() - 1e-9 <= xs.min() and xs.max() <= risk_36.max() + 1e-9
    plots.plt.close(fig)

    fig = plots.km_by_risk_group(res, "ceiling")
    left = fig.axes[0]
    assert label in left.get_title(loc="left")
    legend = _legend_texts(left)
    assert len(legend) == 3  # tertiles of the ceiling's risk
    assert sum(int(re.search(r"n=(\d+)", t).group(1)) for t in legend) == n
    plots.plt.close(fig)

    fig = plots.time_dependent_auc_plot(res, models=["ceiling", "score:fong"])
    ax = fig.axes[0]
    texts = _legend_texts(ax)
    assert any(t.startswith(f"{label} (") and f"n={n}" in t for t in texts), texts
    auc = res.metrics[(res.metrics.model == "ceiling") & (res.metrics.metric == "auc")].sort_values("horizon")
    drawn = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    assert any(len(y) == len(auc) and np.allclose(y, auc.estimate) for y in drawn)  # its AUC(t) points
    plots.plt.close(fig)

    fig = plots.forest_plot(res)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert label in ticks
    delta = res.comparisons[(res.comparisons.model == "ceiling") & (res.comparisons.metric == "harrell_c")].delta
    row = ticks.index(label)
    points = [line.get_xydata() for line in ax.get_lines() if len(line.get_xydata()) == 1]
    assert any(np.allclose(p[0], (float(delta.iloc[0]), row)) for p in points)  # its delta on its row
    plots.plt.close(fig)
    assert ">ceiling<" in leaderboard_html(res)


def test_ceiling_can_be_switched_off_and_never_trains_on_the_evaluated_seed():
    cohort = simulate_cohort(200, seed=1)
    res = run_benchmark(cohort, BenchmarkSpec(models=("coxph",), baselines=(), ceiling=False, **SMALL))
    assert "oracle" in res.oof and "ceiling" not in res.oof and "ceiling" not in res.timings
    assert ceiling_seed(cohort, BenchmarkSpec(seed=0)) == 10**6
    same = simulate_cohort(50, seed=10**6 + 7)  # a cohort simulated with the ceiling's own seed
    assert ceiling_seed(same, BenchmarkSpec(seed=7)) == 10**6 + 8
    reworded = dataclasses.replace(same, source="the same patients, described in other words")
    assert ceiling_seed(reworded, BenchmarkSpec(seed=7)) == 10**6 + 8  # read from the truth, not from the text


@pytest.mark.slow
def test_every_metric_row_has_its_estimate_inside_its_interval(sim_result):
    _, _, res = sim_result
    m = res.metrics.dropna(subset=["ci_low"])
    assert len(m) > 20 and {"ici", "harrell_c", "ibs"} <= set(m.metric)
    outside = m[(m.estimate < m.ci_low) | (m.estimate > m.ci_high)]
    assert outside.empty, outside[["model", "metric", "horizon", "estimate", "ci_low", "ci_high"]]
    comp = res.comparisons.dropna(subset=["ci_low"])
    assert ((comp.ci_low <= comp.delta) & (comp.delta <= comp.ci_high)).all()


def test_paired_comparison_uses_the_patients_both_can_score():
    cohort = simulate_cohort(500, seed=8)
    data = cohort.data.copy()
    rows = np.random.default_rng(0).permutation(len(data))[:150]
    data.loc[data.index[rows], "kras_status"] = "unknown"  # GAME needs KRAS; Fong does not
    partial = Cohort(data, "partial", "test")
    spec = BenchmarkSpec(models=("coxph",), baselines=("score:game",), reference="score:fong", tune=False,
                         **SMALL | {"n_boot": 40})
    res = run_benchmark(partial, spec)
    n_game = int(res.oof["score:game"].valid.sum())
    assert n_game < len(res.y)
    comp = res.comparisons[res.comparisons.metric == "harrell_c"].set_index("model")
    assert comp.loc["score:game", "n"] == n_game and comp.loc["coxph", "n"] == len(res.y)
    # the game-vs-fong delta is Fong re-evaluated on GAME's patients, not Fong on everyone
    from crlm.evaluation.metrics import harrell_c
    both = res.oof["score:game"].valid
    fong_on_both = harrell_c(res.y[both], res.oof["score:fong"].risk[0][both])
    game_on_both = harrell_c(res.y[both], res.oof["score:game"].risk[0][both])
    assert comp.loc["score:game", "delta"] == pytest.approx(game_on_both - fong_on_both, abs=1e-9)
    board = res.leaderboard().set_index("model")
    assert board.loc["score:game", "n_vs_ref"] == n_game
    # Holm: adjusted p never below the raw one, the same family per metric
    assert (comp.p_holm >= comp.p_value - 1e-12).all()
