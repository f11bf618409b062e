"""A shared tracking server: a real ``mlflow server`` (SQLite store, artifact root) started on 127.0.0.1 by the
test; ``crlm train``, ``compare`` and the service's registry loader work against it via MLFLOW_TRACKING_URI."""

import contextlib
import socket
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from crlm import tracking, tracking_server
from crlm.cli import app
from crlm.cohort.simulate import simulate_cohort
from crlm.serving.settings import ModelConfig
from crlm.serving.store import load_model

pytestmark = pytest.mark.slow
runner = CliRunner()
NAME = "crlm-teamtest-os"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = tracking_server.start_server(f"sqlite:///{root / 'team.db'}", str(root / "artifacts"), port,
                                        log=root / "server.log")
    yield f"http://127.0.0.1:{port}", root, proc
    tracking_server.stop_server(proc)


def descendants(pid: int) -> list[str]:
    """The command lines of a process's descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        with contextlib.suppress(OSError):
            out.append((Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        todo += children.get(child, [])
    return out


def test_the_server_runs_without_mlflows_job_runner(server):
    # MLflow's GenAI job runner (a runner and six huey consumers) is off: crlm only logs runs and models
    commands = descendants(server[2].pid)
    assert any("uvicorn" in c for c in commands), commands
    assert not any("huey" in c or "_job_runner" in c for c in commands), commands


def test_server_command_uses_a_database_store_and_proxied_artifacts(tmp_path):
    cmd = tracking_server.server_command("postgresql://crlm@db.example/mlflow", "s3://bucket/crlm", "0.0.0.0", 5001)
    assert cmd[1] == "server" and cmd[cmd.index("--backend-store-uri") + 1] == "postgresql://crlm@db.example/mlflow"
    assert "--serve-artifacts" in cmd and cmd[cmd.index("--artifacts-destination") + 1] == "s3://bucket/crlm"
    local = tracking_server.server_command(f"sqlite:///{tmp_path / 'a' / 'x.db'}", str(tmp_path / "art"))
    assert (tmp_path / "a").is_dir() and (tmp_path / "art").is_dir() and local[local.index("--port") + 1] == "5000"


def test_train_compare_and_load_the_champion_through_the_server(server, tmp_path, monkeypatch):
    url, root, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    simulate_cohort(200, 4).data.to_csv(tmp_path / "cohort.csv", index=False)
    config = {"job": "team-test", "cohort": {"file": str(tmp_path / "cohort.csv"), "name": "teamtest"},
              "endpoint": "os", "horizons": [12, 36], "models": ["coxph", "coxnet"], "baselines": ["score:fong"],
              "search_spaces": {"coxnet": {}}, "n_interval_models": 5, "n_jobs": 1,
              "resampling": {"outer_repeats": 1, "outer_splits": 2, "inner_splits": 2, "n_boot": 10,
                             "optimism_boot": 8},  # the default 200 headline refits: not what is tested
              "export_dir": str(tmp_path / "models" / NAME)}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))

    trained = runner.invoke(app, ["train", "--config", str(tmp_path / "job.yaml")])
    assert trained.exit_code == 0, trained.output
    assert f"tracking store {url}" in trained.output.replace("\n", "")

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(NAME)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server stores the artifacts
    assert list((root / "artifacts").rglob("predictor.joblib"))  # ... in its own artifact root
    runs = mlflow.search_runs(experiment_names=[NAME])
    assert set(runs["tags.crlm_model"].dropna()) == {"coxph", "coxnet", "score:fong"}
    assert (runs.status == "FINISHED").all()

    compare = runner.invoke(app, ["compare", "--experiment", NAME])
    assert compare.exit_code == 0 and "coxnet" in compare.output and url in compare.output.replace("\n", "")

    # what `crlm serve` does with MLFLOW_TRACKING_URI set: the champion comes from the server's registry
    mlflow.set_tracking_uri(url)
    loaded = load_model("os", ModelConfig("registry", {"os": NAME}, tmp_path / "models", "champion"))
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert loaded.predictor.model_name == champion.tags["model"]
    patient = {"age_years": 61.0, "n_liver_metastases": 2.0, "largest_metastasis_cm": 3.0, "cea_ng_ml": 12.0,
               "primary_node_positive": True, "disease_free_interval_months": 8.0}  # every Fong factor: the
    answer = loaded.predictor.predict_frame(pd.DataFrame([patient]))  # champion may be the Fong score itself
    assert 0 < answer["surv_36"][0] < answer["surv_12"][0] < 1
    assert tracking.champion_version(NAME) == str(champion.version)
