"""A training job killed with SIGKILL at every stage: the previous champion stays fully served, and after the next
job's start (recovery) ``@champion``, the registry's versions and ``models/<name>`` agree; killed runs end KILLED
and ``crlm compare`` lists only published jobs (issue 15, defects 3 and 11)."""

import multiprocessing
import os
import signal

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from crlm import publish, tracking
from crlm.cohort.simulate import simulate_cohort
from crlm.model_metadata import Registration
from crlm.predictor import Predictor

NAME = "crlm-killtest-os"
EXPERIMENT = "crlm-killtest-os"
# stages after which the new champion is already fully published (the aliases have moved)
PUBLISHED_AT = {"alias", "complete"}

pytestmark = pytest.mark.slow


def _train(config_path: str, uri: str, stage: str | None) -> None:
    """The child process: one real training job, killed by SIGKILL at ``stage`` (crlm.publish.checkpoint)."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    if stage:
        os.environ[publish.KILL_ENV] = stage
    from crlm.config import load_config
    from crlm.training import run_job

    run_job(load_config(config_path), log=lambda _: None)


@pytest.fixture
def job(tmp_path, monkeypatch):
    simulate_cohort(200, 3).data.to_csv(tmp_path / "cohort.csv", index=False)
    config = {"job": "kill-test", "cohort": {"file": str(tmp_path / "cohort.csv"), "name": "killtest"},
              "endpoint": "os", "horizons": [36], "models": ["coxph", "coxnet"], "baselines": ["score:fong"],
              "search_spaces": {"coxnet": {}}, "n_interval_models": 5, "n_jobs": 1,
              "resampling": {"outer_repeats": 1, "outer_splits": 2, "inner_splits": 2, "n_boot": 10},
              "export_dir": str(tmp_path / "models" / NAME)}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    # children forked from a server that has imported the stack once (a fresh interpreter per kill is slow)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["crlm.training", "crlm.config"])
    return context, str(tmp_path / "job.yaml"), uri, tmp_path / "models" / NAME


def _run(context, config_path, uri, stage=None) -> int:
    child = context.Process(target=_train, args=(config_path, uri, stage))
    child.start()
    child.join(300)
    return child.exitcode


def _served_version(target) -> str:
    return str(Registration.read(target).version)


def test_a_job_killed_at_any_stage_leaves_the_previous_champion_served_and_everything_agreeing(job):
    context, config_path, uri, target = job
    client = MlflowClient()
    assert _run(context, config_path, uri) == 0
    assert _served_version(target) == tracking.champion_version(NAME) == "1"
    published_jobs = 1
    for stage in publish.STAGES:
        before = tracking.champion_version(NAME)
        n_before = len(client.search_model_versions(f"name='{NAME}'"))
        assert _run(context, config_path, uri, stage) == -signal.SIGKILL, stage

        # at once, before any repair: a complete bundle is served, and the alias is on a complete version
        served = _served_version(target)
        champion = client.get_model_version_by_alias(NAME, "champion")
        killed_champion = str(champion.version)
        assert served in {before, *[str(v.version) for v in client.search_model_versions(f"name='{NAME}'")]}, stage
        assert str(champion.version) == before or stage in PUBLISHED_AT, stage

        # the next job's start repairs what the killed one left
        tracking.mark_killed_runs(EXPERIMENT, log=lambda _: None)
        publish.recover(NAME, target, log=lambda _: None)
        expected = killed_champion if stage in PUBLISHED_AT else before
        champion = client.get_model_version_by_alias(NAME, "champion")
        assert str(champion.version) == expected == _served_version(target), stage
        versions = client.search_model_versions(f"name='{NAME}'")
        assert len(versions) == n_before + (2 if stage in PUBLISHED_AT else 0), stage
        assert all(v.tags.get("crlm_state") == "complete" for v in versions), stage
        assert champion.tags["model"] == Predictor.load(target).model_name
        root = publish.bundle_root(target)
        assert not list(root.glob(".staging-*")) and not (root / publish.JOURNAL).exists(), stage
        assert target.is_symlink() and (root / os.readlink(target).split("/")[-1]).is_dir()
        runs = mlflow.search_runs(experiment_names=[EXPERIMENT])
        assert not (runs.status == "RUNNING").any(), stage
        published_jobs += stage in PUBLISHED_AT

    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.crlm_role = 'job'")
    assert (runs.status == "KILLED").sum() == len(publish.STAGES)
    assert (runs["tags.crlm_published"] == "true").sum() == published_jobs == 3
    board = tracking.compare_runs(EXPERIMENT)  # defect 11: one row per model, from the latest published job
    assert sorted(board.model) == ["coxnet", "coxph", "score:fong"]
    history = tracking.compare_runs(EXPERIMENT, history=True)
    assert len(history) == 3 * published_jobs
