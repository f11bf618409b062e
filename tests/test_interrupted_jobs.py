"""A training job killed with SIGKILL at every stage: the previous champion stays fully served, and after the next
job's start (recovery) ``@champion``, the registry's versions and ``models/<name>`` agree; killed runs end KILLED
and ``crlm compare`` lists only published jobs (issue 15, defects 3 and 11).

Each stage is its own scenario: one real job process, SIGKILLed by itself at that stage
(``crlm.publish.checkpoint`` with ``CRLM_KILL_AT``), on its own copy of a store where a first job has
published version 1. The scenarios are independent (their own SQLite store, bundles and workspace), so they run
two at a time; the first job is run once for all of them, and the job is small (a 150-patient cohort, Cox and
Coxnet without a search, the Fong score, no optimism bootstrap) since what is tested is the publication, not the models."""

import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
from pathlib import Path

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
PARALLEL = 2  # scenarios at once (each a single-threaded job: n_jobs 1)

pytestmark = pytest.mark.slow


def _train(config_path: str, uri: str, home: str, stage: str | None) -> None:
    """The child process: one real training job, killed by SIGKILL at ``stage`` (crlm.publish.checkpoint)."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["CRLM_HOME"] = home  # the job's results directory, apart from the checkout and the other jobs
    if stage:
        os.environ[publish.KILL_ENV] = stage
    from crlm.config import load_config
    from crlm.training import run_job

    run_job(load_config(config_path), log=lambda _: None)


class Workspace:
    """One store (SQLite, artifacts beside it), its bundles and its job config."""

    def __init__(self, root: Path, cohort_csv: Path, config: dict):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.target = root / "models" / NAME
        self.config_path = root / "job.yaml"
        self.config = config | {"cohort": {"file": str(cohort_csv), "name": "killtest"},
                                "export_dir": str(self.target)}
        self.config_path.write_text(yaml.safe_dump(self.config))

    def copy(self, root: Path, cohort_csv: Path) -> "Workspace":
        """A copy of this store and its bundles (the link is relative: it points into the copy); new runs of
        the copy write their artifacts under new run ids, so the copies never meet."""
        shutil.copytree(self.root, root, symlinks=True)
        return Workspace(root, cohort_csv, self.config)

    def start(self, context, stage: str | None):
        child = context.Process(target=_train, args=(str(self.config_path), self.uri, str(self.root), stage))
        child.start()
        return child


@pytest.fixture(scope="module")
def context():
    # children forked from a server that has imported the stack once (a fresh interpreter per job is slow)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["crlm.training", "crlm.config", "crlm.model_card", "crlm.evaluation.subgroups"])
    return ctx


@pytest.fixture(scope="module")
def published(tmp_path_factory, context):
    """A store where one job has published v1 (champion) and v2 (challenger)."""
    base = tmp_path_factory.mktemp("kill-test")
    cohort_csv = base / "cohort.csv"
    simulate_cohort(150, 3).data.to_csv(cohort_csv, index=False)
    config = {"job": "kill-test", "endpoint": "os", "horizons": [36], "models": ["coxph", "coxnet"],
              "baselines": ["score:fong"], "search_spaces": {"coxnet": {}}, "n_interval_models": 5, "n_jobs": 1,
              "resampling": {"outer_repeats": 1, "outer_splits": 2, "inner_splits": 2, "n_boot": 0,
                             "optimism_boot": 0},
              "selection": {"noise_floor_resamples": 10}}
    (base / "first").mkdir()
    first = Workspace(base / "first", cohort_csv, config)
    child = first.start(context, None)
    child.join(600)
    assert child.exitcode == 0
    mlflow.set_tracking_uri(first.uri)
    # a champion and a challenger: "register-champion" falls between their registrations
    assert len(MlflowClient(first.uri).search_model_versions(f"name='{NAME}'")) == 2
    return first, cohort_csv


def _served_version(target) -> str:
    return str(Registration.read(target).version)


def _check(ws: Workspace, stage: str, exitcode: int) -> None:
    """What a job killed at ``stage`` left, before and after the next job's recovery."""
    mlflow.set_tracking_uri(ws.uri)
    client = MlflowClient(ws.uri)
    before, n_before = "1", 2  # the first job's champion and versions
    assert exitcode == -signal.SIGKILL, stage

    # at once, before any repair: a complete bundle is served, and the alias is on a complete version
    served = _served_version(ws.target)
    champion = client.get_model_version_by_alias(NAME, "champion")
    killed_champion = str(champion.version)
    assert served in {before, *[str(v.version) for v in client.search_model_versions(f"name='{NAME}'")]}, stage
    assert str(champion.version) == before or stage in PUBLISHED_AT, stage

    # the next job's start repairs what the killed one left
    tracking.mark_killed_runs(EXPERIMENT, log=lambda _: None)
    publish.recover(NAME, ws.target, log=lambda _: None)
    expected = killed_champion if stage in PUBLISHED_AT else before
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == expected == _served_version(ws.target), stage
    versions = client.search_model_versions(f"name='{NAME}'")
    assert len(versions) == n_before + (2 if stage in PUBLISHED_AT else 0), stage
    assert all(v.tags.get("crlm_state") == "complete" for v in versions), stage
    assert champion.tags["model"] == Predictor.load(ws.target).model_name, stage
    root = publish.bundle_root(ws.target)
    assert not list(root.glob(".staging-*")) and not (root / publish.JOURNAL).exists(), stage
    assert ws.target.is_symlink() and (root / os.readlink(ws.target).split("/")[-1]).is_dir(), stage
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT])
    assert not (runs.status == "RUNNING").any(), stage

    jobs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.crlm_role = 'job'")
    published_jobs = 1 + (stage in PUBLISHED_AT)
    assert (jobs.status == "KILLED").sum() == 1, stage
    assert (jobs["tags.crlm_published"] == "true").sum() == published_jobs, stage
    board = tracking.compare_runs(EXPERIMENT)  # defect 11: one row per model, from the latest published job
    models = [*ws.config["models"], *ws.config["baselines"]]
    assert sorted(board.model) == sorted(models), stage
    assert len(tracking.compare_runs(EXPERIMENT, history=True)) == len(models) * published_jobs, stage


def test_a_job_killed_at_any_stage_leaves_the_previous_champion_served_and_everything_agreeing(
        published, context, tmp_path):
    first, cohort_csv = published
    mlflow.set_tracking_uri(first.uri)
    assert _served_version(first.target) == tracking.champion_version(NAME) == "1"
    assert len(publish.STAGES) == 9
    todo, running, checked = list(publish.STAGES), {}, []
    while todo or running:
        while todo and len(running) < PARALLEL:
            stage = todo.pop(0)
            ws = first.copy(tmp_path / stage, cohort_csv)
            running[stage] = (ws, ws.start(context, stage))
        ready = multiprocessing.connection.wait([child.sentinel for _, child in running.values()], timeout=600)
        assert ready, f"no job ended in 600 s: {sorted(running)}"
        for stage in [s for s, (_, child) in running.items() if child.sentinel in ready]:
            ws, child = running.pop(stage)
            child.join()
            _check(ws, stage, child.exitcode)
            checked.append(stage)
    assert sorted(checked) == sorted(publish.STAGES)
