"""References that fit the data: a score that cannot be computed is named with what it lacks; a recorded
score or no reference at all still gives a leaderboard."""

import pandas as pd
import pytest

from crlm.cohort import Cohort
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark
from crlm.schema import Field
from crlm.scores import score_coverage

FAST = dict(models=("coxph",), baselines=("score:fong", "score:mcs", "score:tbs"), outer_splits=2, outer_repeats=1,
            inner_splits=2, n_boot=20, tune=False, ceiling=False, ablation_models=0, n_jobs=1)


@pytest.fixture(scope="module")
def no_cea():
    cohort = simulate_cohort(240, 5)
    cohort.data = cohort.data.drop(columns=["cea_ng_ml"])
    cohort.truth = None
    return cohort


def test_coverage_names_the_missing_factor_and_how_many_lack_it(no_cea):
    cov = score_coverage(no_cea.data).set_index("score")
    assert cov.loc["fong", "computable"] == 0
    assert "cea_gt_200 (cea_ng_ml, not in the file): 240 of 240" in cov.loc["fong", "lacking"]
    assert cov.loc["tbs", "computable"] > 0


def test_uncomputable_reference_fails_in_the_users_terms(no_cea):
    with pytest.raises(ValueError, match=r"Fong CRS \(score:fong\) cannot be computed.*cea_ng_ml.*recorded:"):
        run_benchmark(no_cea, BenchmarkSpec(reference="score:fong", **FAST))


def test_no_reference_and_auto_reference_give_a_leaderboard(no_cea):
    none = run_benchmark(no_cea, BenchmarkSpec(reference="none", **FAST))
    assert none.spec.reference == "" and len(none.comparisons) == 0 and "coxph" in set(none.leaderboard().model)
    assert any("Fong CRS (fong) not computable for any patient" in n for n in none.notes)
    auto = run_benchmark(no_cea, BenchmarkSpec(reference="auto", **FAST))
    assert auto.spec.reference in ("score:tbs", "score:mcs", "score:game", "score:konopke", "score:nordlinger")
    assert set(auto.comparisons.model) == {m for m in auto.oof if m != auto.spec.reference}


def test_a_recorded_score_declared_in_the_mapping_is_a_reference(no_cea):
    data = no_cea.data.copy()
    data["local_score"] = pd.Series(data["n_liver_metastases"].astype(float) + data["primary_node_positive"]
                                    .astype(float))
    cohort = Cohort(data, "local", "test", extra_fields=(
        Field("local_score", "float", "score", "preoperative", "Our centre's score", "points", 0, 200),))
    result = run_benchmark(cohort, BenchmarkSpec(reference="recorded:local_score", **FAST))
    assert result.spec.reference == "score:column:local_score"
    assert result.leaderboard().set_index("model").loc["score:column:local_score", "delta_c_ci"] == "(reference)"
    with pytest.raises(ValueError, match="declares no recorded score 'other'"):
        run_benchmark(cohort, BenchmarkSpec(reference="recorded:other", **FAST))


def test_a_horizon_without_events_is_dropped_with_a_warning_when_building_the_predictor():
    from crlm.evaluation.metrics import HorizonWarning
    from crlm.predictor_training import train_predictor

    cohort = simulate_cohort(200, 9)
    early = cohort.data["os_months"] <= 12
    cohort.data.loc[early, "os_event"] = False  # nobody dies in the first year: calibration at 12 is undefined
    with pytest.warns(HorizonWarning, match="horizon 12 dropped"):
        predictor = train_predictor(cohort, "os", "coxph", {"alpha": 10.0}, horizons=(12, 36), n_interval_models=5)
    assert predictor.horizons == (36.0,)


@pytest.mark.slow
def test_train_without_a_reference_end_to_end(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from crlm.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CRLM_HOME", str(tmp_path))
    config = {"job": "noref", "cohort": {"simulate": {"n": 200, "seed": 4}, "name": "noref"}, "models": ["coxph"],
              "baselines": [], "reference": "none", "n_interval_models": 5, "n_jobs": 1,
              "resampling": {"outer_repeats": 1, "outer_splits": 2, "inner_splits": 2, "n_boot": 10,
                             "optimism_boot": 8}}  # the default 200 refits of the headline: not what is tested
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "job.yaml")])
    assert result.exit_code == 0, result.output
    assert "no reference: IPA is the gain over Kaplan" in result.output and "registered as crlm-noref-os" in result.output
