"""Training jobs: config refusal before work, tracked runs, registry aliases, failure safety, batch scoring."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from crlm import training
from crlm.cli import app
from crlm.config import ConfigError, load_config
from crlm.model_metadata import REGISTRATION_FILE, ModelMetadata, Registration
from crlm.training import run_job

runner = CliRunner()
SMALL = {"job": "sim-os-test", "cohort": {"simulate": {"n": 300, "seed": 8}, "name": "simtest"}, "endpoint": "os",
         "models": ["coxph", "coxnet"], "baselines": ["score:fong"],
         "resampling": {"outer_repeats": 1, "outer_splits": 2, "inner_splits": 2, "n_boot": 20, "optimism_boot": 8},
         "n_interval_models": 5, "n_jobs": 1}


def write_config(path, overrides=None):
    cfg = json.loads(json.dumps(SMALL)) | (overrides or {})
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("CRLM_HOME", str(root))  # results/ and models/ of the jobs go here, not into the checkout
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def first_job(store):
    cfg = load_config(write_config(store / "job.yaml"), {"export_dir": str(store / "models" / "crlm-simtest-os")})
    return run_job(cfg, log=lambda _: None)


def test_invalid_configs_are_refused_with_key_and_reason(tmp_path):
    cases = {"unknown key": ({"modles": ["coxph"]}, "modles"), "unknown model": ({"models": ["coxph", "cox"]}, "cox"),
             "bad endpoint": ({"endpoint": "pfs"}, "unknown endpoint"),
             "bad horizon": ({"horizons": [12, -1]}, "horizons"),
             "missing file": ({"cohort": {"file": "nope.csv"}}, "file not found")}
    for name, (override, needle) in cases.items():
        with pytest.raises(ConfigError, match=needle):
            load_config(write_config(tmp_path / f"{name}.yaml", override))
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path / "x.yaml", {"models": ["cox"]}))])
    assert result.exit_code == 2 and "models" in result.output


@pytest.mark.slow
def test_job_tracks_runs_registers_champion_and_exports(first_job, store):
    out = first_job
    client = MlflowClient()
    # the rule (crlm.selection): a learned model, or the reference score if none earned its place
    assert out.champion in ("coxph", "coxnet", "score:fong") and out.runner_up in ("coxph", "coxnet")
    meta = out.predictor.metadata
    assert meta["headline"]["n_boot"] == 8 and "optimism-corrected" in meta["headline"]["label"]
    head_c = meta["headline"]["harrell_c"]
    assert head_c["corrected"] == pytest.approx(head_c["apparent"] - head_c["optimism"])
    assert meta["champion_verdict"] in out.selection_note and meta["ici_noise_floor"][out.runner_up]["q95"] > 0
    card = (out.export_dir / "model_card.md").read_text()
    assert "Headline, the shipped model" in card and meta["champion_verdict"] in card
    champion = client.get_model_version_by_alias("crlm-simtest-os", "champion")
    challenger = client.get_model_version_by_alias("crlm-simtest-os", "challenger")
    assert str(champion.version) == out.champion_version and challenger.tags["model"] == out.runner_up
    runs = mlflow.search_runs(experiment_names=["crlm-simtest-os"])
    children = runs[runs["tags.crlm_role"] == "model"]
    assert set(children["tags.crlm_model"]) == {"coxph", "coxnet", "score:fong", "oracle", "ceiling"}
    assert {"metrics.harrell_c", "metrics.harrell_c_ci_low", "metrics.uno_c_ci_high", "metrics.ici_36",
            "metrics.auc_12"} <= set(runs.columns)
    champ_run = children[children["tags.crlm_model"] == out.champion].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(champ_run.run_id, "calibration")}
    assert artifacts == {f"calibration/calibration_{h}m.png" for h in (12, 36, 60)}
    assert client.list_artifacts(champ_run.run_id, "model_card")
    parent = runs[runs["tags.crlm_role"] == "job"].iloc[0]
    assert {a.path for a in client.list_artifacts(parent.run_id, "leaderboard")} >= {
        "leaderboard/leaderboard.csv", "leaderboard/leaderboard.html", "leaderboard/forest_delta_c.png"}
    assert (out.export_dir / "predictor.joblib").exists() and (out.export_dir / "model_card.md").exists()


@pytest.mark.slow
def test_registered_champion_predicts_calibrated_probabilities_with_intervals(first_job):
    model = mlflow.pyfunc.load_model("models:/crlm-simtest-os@champion")
    patient = pd.DataFrame([{"age_years": 64.0, "sex": "male", "n_liver_metastases": 3.0,
                             "largest_metastasis_cm": 4.5, "cea_ng_ml": 350.0, "kras_status": "mutant",
                             "primary_node_positive": True, "synchronous_metastases": True}])
    table = model.predict(patient)
    for h in (12, 36, 60):
        assert table[f"surv_{h}_lower"][0] <= table[f"surv_{h}"][0] <= table[f"surv_{h}_upper"][0]
    assert table["surv_12"][0] > table["surv_36"][0] > table["surv_60"][0]
    answer = json.loads(model.predict(patient, params={"output": "json"})["answer"][0])
    contributions = answer["contributions"]
    assert contributions
    for c in contributions:  # each sentence names the factor and says what it does, by the sign of its effect
        assert c["direction"] == ("raises" if c["size"] > 0 else "lowers")
        assert c["sentence"].startswith(c["label"]) and f" {c['direction']} the risk of " in c["sentence"]
    sizes = [abs(c["size"]) for c in contributions]
    assert sizes == sorted(sizes, reverse=True)  # largest effect first
    # this patient carries every Fong risk factor: something in the record raises the risk of death
    assert any(c["direction"] == "raises" for c in contributions)
    assert model.unwrap_python_model().predictor.model_name == first_job.champion


@pytest.mark.slow
def test_failed_job_registers_nothing_and_keeps_the_champion(first_job, store, monkeypatch):
    name = "crlm-simtest-os"
    client = MlflowClient()
    before = client.get_model_version_by_alias(name, "champion").version
    n_versions = len(client.search_model_versions(f"name='{name}'"))

    def broken(*args, **kwargs):
        raise RuntimeError("interrupted while building the predictor")

    monkeypatch.setattr(training, "_build_predictor", broken)
    cfg = load_config(write_config(store / "job2.yaml"), {"export_dir": str(store / "models" / "other")})
    with pytest.raises(RuntimeError):
        run_job(cfg, log=lambda _: None)
    assert client.get_model_version_by_alias(name, "champion").version == before
    assert len(client.search_model_versions(f"name='{name}'")) == n_versions
    assert not (store / "models" / "other").exists()
    # the benchmark's results were kept: a finished benchmark run, a failed job run with the reason, files
    experiment = client.get_experiment_by_name("crlm-simtest-os")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=20)
    job_run = next(r for r in runs if r.data.tags.get("crlm_role") == "job")
    bench = next(r for r in runs if r.data.tags.get("crlm_role") == "benchmark"
                 and r.data.tags.get("mlflow.parentRunId") == job_run.info.run_id)
    assert job_run.info.status == "FAILED" and "interrupted while building" in job_run.data.tags["crlm_failure"]
    assert bench.info.status == "FINISHED" and "uno_c.coxph" in bench.data.metrics
    board = mlflow.artifacts.load_text(f"runs:/{bench.info.run_id}/leaderboard/leaderboard.csv")
    assert "coxph" in board and "coxnet" in board
    on_disk = pd.read_csv(next((store / "results" / "sim-os-test").glob("*/leaderboard/leaderboard.csv")))
    assert set(on_disk.model) >= {"coxph", "coxnet"}


@pytest.mark.slow
def test_strict_cohort_failure_registers_nothing(store, tmp_path, data_dir):
    cfg = write_config(tmp_path / "bad.yaml", {"job": "bad", "cohort": {"file": str(data_dir / "five_bad_cells.csv"),
                                                                        "name": "bad"}})
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 1 and "strict validation failed" in result.output
    assert not MlflowClient().search_registered_models(filter_string="name='crlm-bad-os'")


@pytest.mark.slow
def test_batch_predict_and_compare(first_job, tmp_path, data_dir):
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", str(data_dir / "five_bad_cells.csv"), "--model",
                                 "models:/crlm-simtest-os@champion", "-o", str(out)])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    assert len(scores) == 4 and "surv_36_upper" in scores and "5 rows set aside" in result.output
    compare = runner.invoke(app, ["compare", "--experiment", "crlm-simtest-os"])
    assert compare.exit_code == 0 and "coxnet" in compare.output


@pytest.mark.slow  # reads the training job of the slow tests
def test_registry_version_and_bundle_carry_the_same_metadata(first_job):
    """The registry's copy of the champion and the served bundle hold one document (``crlm.model_metadata``);
    the registry identity lives beside it in ``registration.json``."""
    out = first_job
    bundle = json.loads((out.export_dir / "metadata.json").read_text())
    uri = f"models:/{out.registered_name}/{out.champion_version}"
    registry_dir = mlflow.artifacts.download_artifacts(uri)
    registry = json.loads(next(Path(registry_dir).rglob("metadata.json")).read_text())
    assert registry == bundle
    loaded = mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor.metadata
    assert isinstance(loaded, ModelMetadata) and json.loads(loaded.to_json()) == bundle
    assert bundle["model_name"] == out.champion and bundle["model_card"]
    assert not {"registered_name", "version", "alias"} & set(bundle)
    assert (out.export_dir / REGISTRATION_FILE).exists()
    assert Registration.read(out.export_dir) == Registration(out.registered_name, out.champion_version, "champion")
