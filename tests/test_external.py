"""External validation and recalibration for a new centre, on small simulated cohorts."""

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from crlm.centre import recalibrate_for_centre, register
from crlm.cli import app
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.decision_curves import TREAT_ALL, TREAT_NONE, decision_curves
from crlm.external import ModelSource, evaluate_external, ici_noise_floor
from crlm.predictor_training import train_predictor

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("CRLM_HOME", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def predictor():
    return train_predictor(simulate_cohort(500, 21), "os", "coxph", {"alpha": 10.0}, n_interval_models=5)


def shifted(n: int, seed: int, factor: float = 2.0):
    """A cohort whose baseline hazard differs from the training centre's: times divided by ``factor``
    (S'(t | x) = S(factor t | x): the same covariate effects, a new baseline cumulative hazard)."""
    cohort = simulate_cohort(n, seed)
    for col in ("os_months", "rfs_months", "liver_rfs_months"):
        cohort.data[col] = cohort.data[col] / factor
    cohort.truth = None
    return cohort


def test_decision_curves_match_the_definition():
    rng = np.random.default_rng(0)
    y = np.empty(400, dtype=[("event", "?"), ("time", "<f8")])
    y["time"], y["event"] = rng.uniform(1, 50, 400), True
    y["event"][:100] = False  # censored
    y["time"][:100] = 60.0  # ... after the horizon, event-free at 55 months
    curves = decision_curves(y, {"rule": (np.arange(400) >= 99).astype(float)}, [55.0], thresholds=[0.2])
    # acting on the 300 with the event by 55 months and one without: TP 300/400, FP 1/400
    assert curves.set_index("model").loc["rule", "net_benefit"] == pytest.approx(0.75 - 0.25 / 400, abs=1e-6)
    # treat all: 0.75 - 0.25 * 0.2 / 0.8
    assert curves.set_index("model").loc[TREAT_ALL, "net_benefit"] == pytest.approx(0.75 - 0.25 / 4, abs=1e-6)
    assert curves.set_index("model").loc[TREAT_NONE, "net_benefit"] == 0


def test_decision_curves_equal_dcurves(predictor):
    import pandas as pd
    from dcurves import dca

    rng = np.random.default_rng(1)
    n = 150
    y = np.empty(n, dtype=[("event", "?"), ("time", "<f8")])
    y["time"], y["event"] = rng.exponential(30, n), rng.random(n) < 0.7
    risk, group = rng.random(n), (rng.random(n) < 0.4).astype(float)
    ours = decision_curves(y, {"risk": risk, "group": group}, [24.0], thresholds=[0.1, 0.3, 0.5, 0.7])
    ref = dca(data=pd.DataFrame({"event": y["event"].astype(int), "time": y["time"], "risk": risk, "group": group}),
              outcome="event", modelnames=["risk", "group"], thresholds=[0.1, 0.3, 0.5, 0.7], time=24.0,
              time_to_outcome_col="time")
    ref["model"] = ref["model"].replace({"all": TREAT_ALL, "none": TREAT_NONE})
    merged = ours.merge(ref, on=["model", "threshold"], suffixes=("", "_ref"))
    assert len(merged) == 16
    np.testing.assert_allclose(merged.net_benefit, pd.to_numeric(merged.net_benefit_ref), atol=1e-9)


def test_noise_floor_is_what_a_calibrated_model_shows(predictor):
    cohort = simulate_cohort(300, 22)
    ev = evaluate_external(predictor, cohort, n_boot=0)
    median, p95 = ici_noise_floor(ev.y, ev.survival, ev.times, 36.0, n_sim=20)
    assert 0 < median < p95 < 0.15


def test_evaluate_reports_model_scores_intervals_and_warnings(predictor):
    cohort = simulate_cohort(300, 23)
    cohort.data = cohort.data.drop(columns=["cea_ng_ml"])
    ev = evaluate_external(predictor, cohort, ModelSource("test"), n_boot=30)
    m = ev.metrics.set_index(["model", "metric", "horizon"])
    c = m.loc[("model", "harrell_c", np.nan)] if ("model", "harrell_c", np.nan) in m.index else \
        ev.metrics[(ev.metrics.model == "model") & (ev.metrics.metric == "harrell_c")].iloc[0]
    assert c.ci_low <= c.estimate <= c.ci_high and 0.5 < c.estimate < 0.85
    assert "score:fong" not in set(ev.metrics.model)  # no CEA: Fong not computable
    assert "score:tbs" in set(ev.metrics.model)
    tbs = ev.metrics[ev.metrics.model == "score:tbs"]
    assert set(tbs.metric) <= {"harrell_c", "uno_c", "auc", "mean_auc"}  # discrimination only
    assert any(w.startswith("cea_ng_ml: not in this cohort") for w in ev.field_warnings)
    assert set(ev.decision_curves.horizon) == {12.0, 36.0, 60.0}
    assert {TREAT_ALL, TREAT_NONE} <= set(ev.decision_curves.model)
    nb = ev.decision_summary
    rated = nb[nb.ci_low.notna()]
    assert len(rated) > 0.8 * len(nb) and nb[nb.net_benefit.isna()].ci_low.isna().all()
    inside = (rated.ci_low <= rated.net_benefit + 1e-12) & (rated.net_benefit <= rated.ci_high + 1e-12)
    assert inside.mean() > 0.95  # percentile intervals of a skewed statistic may rarely miss the estimate
    slope = ev.metrics[(ev.metrics.model == "model") & (ev.metrics.metric == "slope")]
    assert slope.ci_low.notna().all()
    paired = ev.comparisons[(ev.comparisons.reference == "score:tbs") & (ev.comparisons.metric == "harrell_c")]
    assert len(paired) == 1 and paired.iloc[0].n == 300


def test_recalibration_lowers_held_out_ici_and_keeps_the_ranking(predictor, store):
    cohort = shifted(600, 24)
    rec = recalibrate_for_centre(predictor, cohort, "centre-b", ModelSource("test", "crlm-sim-os", "1"))
    h36 = rec.held_out.set_index("horizon").loc[36.0]
    assert h36.ici_after < h36.ici_before  # the miscalibration is removed on held-out patients
    assert h36.oe_before > 1.2 and abs(h36.oe_after - 1) < abs(h36.oe_before - 1)
    assert rec.c_after == rec.c_before  # the ranking is the source model's
    assert rec.improved
    name, version = register(rec, cohort)
    assert name == "crlm-centre-b-os"
    client = MlflowClient()
    mv = client.get_model_version_by_alias(name, "champion")
    assert str(mv.version) == version and mv.tags["source_model"] == "crlm-sim-os" and mv.tags["source_version"] == "1"
    assert (store / "models" / name / "model_card.md").read_text().count("refitted") >= 1


@pytest.mark.slow  # the CLI end to end: evaluate, recalibrate, register
def test_evaluate_and_recalibrate_commands(predictor, store, tmp_path):
    bundle = predictor.save(tmp_path / "bundle")
    shifted(300, 25).data.to_csv(tmp_path / "centre.csv", index=False)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "centre.csv"), "--model", str(bundle), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    assert "harrell_c" in result.output and "decision curves" in result.output and "noise floor" in result.output
    assert "evaluation run" in result.output
    result = runner.invoke(app, ["recalibrate", str(tmp_path / "centre.csv"), "--model", str(bundle),
                                 "--name", "centre-c"])
    assert result.exit_code == 0, result.output
    assert "registered crlm-centre-c-os" in result.output
