"""The Dask backend: the same seed gives the same leaderboard on a LocalCluster as locally; the cohort is
scattered once; a worker that dies is retried, one that keeps dying fails the work with a clear error."""

import os
from pathlib import Path

import dask
import pandas as pd
import pytest
import yaml
from joblib import Parallel, delayed

from crlm import parallel
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark
from crlm.predictor_training import train_predictor

SPEC = BenchmarkSpec(models=("coxph", "xgb_cox"), baselines=("score:fong",), outer_splits=2, outer_repeats=2,
                     inner_splits=2, n_boot=20, ablation_models=1, ceiling=False, n_jobs=1,
                     search_spaces={"coxph": {"model__alpha": [10.0, 100.0]},
                                    "xgb_cox": {"model__max_depth": [1, 2], "model__n_estimators": [30]}})


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(260, seed=5)


@pytest.fixture(scope="module")
def local(cohort):
    with parallel.backend(None, n_jobs=1):
        result = run_benchmark(cohort, SPEC)
        predictor = train_predictor(cohort, "os", "xgb_cox", {"max_depth": 2, "n_estimators": 30},
                                    n_interval_models=6, seed=3)
    return result, predictor


def test_parse_cluster_accepts_the_documented_forms_and_names_a_bad_one():
    assert parallel.parse_cluster(None) == ("loky", None)
    assert parallel.parse_cluster("local:4") == ("local", 4)
    assert parallel.parse_cluster("tcp://10.0.0.5:8786") == ("remote", None)
    assert parallel.parse_cluster("scheduler:8786") == ("remote", None)
    with pytest.raises(ValueError, match="'local:x'.*local:N"):
        parallel.parse_cluster("local:x")


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of 2 workers for the tests that only use it (one takes seconds to start)."""
    with parallel.backend("local:2") as backend:
        yield backend


@pytest.mark.slow
def test_local_cluster_of_two_workers_gives_the_same_numbers(cohort, local, cluster):
    result, predictor = local
    backend = cluster
    assert backend.kind == "dask" and backend.workers == 2 and backend.address.startswith("tcp://127.0.0.1")
    scattered = len(backend._joblib_backend.data_futures)
    on_cluster = run_benchmark(cohort, SPEC)
    # the model matrix and the outcomes went to the workers once for the whole benchmark (ablation included)
    assert len(backend._joblib_backend.data_futures) == scattered + 2
    clustered = train_predictor(cohort, "os", "xgb_cox", {"max_depth": 2, "n_estimators": 30},
                                n_interval_models=6, seed=3)
    pd.testing.assert_frame_equal(on_cluster.leaderboard(), result.leaderboard())
    pd.testing.assert_frame_equal(on_cluster.metrics, result.metrics)
    pd.testing.assert_frame_equal(on_cluster.ablation, result.ablation)
    pd.testing.assert_frame_equal(on_cluster.chosen_params.drop(columns="seconds"),
                                  result.chosen_params.drop(columns="seconds"))
    assert len(result.ablation) > 0 and result.chosen_params.model.nunique() == 3
    patients = cohort.data.head(5)
    a, b = predictor.predict_frame(patients), clustered.predict_frame(patients)
    pd.testing.assert_frame_equal(a, b)  # the interval's bootstrap refits ran on the cluster, same numbers
    assert (a["surv_36_upper"] > a["surv_36_lower"]).all()


def _in_worker() -> None:
    from distributed import get_worker

    get_worker()  # ValueError outside a Dask worker: the test must never kill its own process


def _die_once(marker: str, value: int) -> int:
    _in_worker()
    path = Path(marker)
    if value == 1 and not path.exists():
        path.write_text("died")
        os._exit(1)  # the worker process dies mid-task
    return value * 2


def _always_die(value: int) -> int:
    _in_worker()
    os._exit(1)


@pytest.mark.slow
def test_a_dead_worker_is_retried_and_a_task_that_kills_every_worker_fails_clearly(tmp_path):
    lost = "lost the workers running a task.*registered nothing"
    with (dask.config.set({"distributed.scheduler.allowed-failures": 1}),
          pytest.raises(parallel.ClusterError, match=lost), parallel.backend("local:2")):
        out = Parallel(n_jobs=1)(delayed(_die_once)(str(tmp_path / "died"), i) for i in range(3))
        assert out == [0, 2, 4] and (tmp_path / "died").exists()  # a worker died once; Dask reran its task
        Parallel(n_jobs=1)(delayed(_always_die)(i) for i in range(2))


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CRLM_DASK_CONNECT_TIMEOUT", "2s")
    unreachable = "cannot reach the Dask scheduler at tcp://127.0.0.1:9"
    with pytest.raises(parallel.ClusterError, match=unreachable), parallel.backend("tcp://127.0.0.1:9"):
        pass


@pytest.mark.slow
def test_isolated_tasks_do_not_spawn_nested_cluster_tasks(cluster):
    pids = Parallel(n_jobs=1)(delayed(_inner_pids)() for _ in range(2))
    for outer, inner in pids:
        assert set(inner) == {outer}


@parallel.isolated
def _inner_pids():
    return os.getpid(), Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(3))


@pytest.mark.slow
def test_effective_n_jobs_reads_the_cluster(cluster):
    assert parallel.effective_n_jobs(1) == 2
    with parallel.backend(None, n_jobs=3):
        assert parallel.effective_n_jobs(3) == 3 and parallel.active().kind == "loky"


@pytest.mark.slow
def test_the_cli_refuses_a_bad_cluster_and_reports_an_unreachable_one(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from crlm.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CRLM_DASK_CONNECT_TIMEOUT", "2s")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"job": "c", "cohort": {"simulate": {"n": 100}}, "models": ["coxph"],
                                      "export_dir": str(tmp_path / "models" / "x")}))
    bad = CliRunner().invoke(app, ["train", "--config", str(config), "--cluster", "local:many"])
    assert bad.exit_code == 2 and "cluster.address" in bad.output and "local:N" in bad.output
    unreachable = CliRunner().invoke(app, ["train", "--config", str(config), "--cluster", "tcp://127.0.0.1:9"])
    assert unreachable.exit_code == 3 and "cannot reach the Dask scheduler" in unreachable.output
    assert not (tmp_path / "models" / "x").exists()
