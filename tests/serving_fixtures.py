"""Shared fixtures of the serving tests (API, real server, fuzzing, browser), loaded as a pytest plugin by
those modules (``pytest_plugins = ["serving_fixtures"]``) so that every session-scoped fixture exists once:
the models are trained once, one ASGI app and one real ``bentoml serve`` process serve all the tests."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

MODEL_CARD = "# Test model card\n\nTrained on a small simulated cohort for the serving tests."


def train_models(directory: Path, n: int = 400, seed: int = 5, n_interval_models: int = 10) -> Path:
    """OS and RFS Predictors (coxnet) on a simulated cohort, saved as the bundles the service loads."""
    from crlm.cohort.simulate import simulate_cohort
    from crlm.predictor_training import train_predictor

    cohort = simulate_cohort(n, seed=seed)
    for endpoint in ("os", "rfs"):
        name = f"crlm-sim-{endpoint}"
        predictor = train_predictor(cohort, endpoint=endpoint, model_name="coxnet", n_interval_models=n_interval_models,
                                    seed=0, metadata={"model_card": MODEL_CARD})
        predictor.save(directory / name)
    return directory


CENTRE_DROPPED = ("largest_metastasis_cm", "recist_response", "tumour_size_change_percent",
                  "progression_before_surgery")


def tmb_field():
    from crlm.schema import Field

    return Field("tmb_mut_mb", "float", "genomic", "preoperative", "Tumour mutational burden", "mut/Mb", 0, 500)


def centre_cohort():
    """A centre's export: no largest_metastasis_cm and no response fields, its own field ``tmb_mut_mb``, and
    described as a real cohort (the label follows the description, not how the rows were made)."""
    import dataclasses

    import numpy as np

    from crlm.cohort.simulate import simulate_cohort

    cohort = simulate_cohort(300, seed=21)
    data = cohort.data.drop(columns=list(CENTRE_DROPPED))
    data["tmb_mut_mb"] = np.random.default_rng(3).lognormal(1.5, 0.5, len(data))
    return dataclasses.replace(cohort, data=data, name="centre-x", source="Centre X export 2025",
                               licence="internal use", truth=None, extra_fields=(tmb_field(),))


def build_model_set(directory: Path, models_dir: Path) -> Path:
    """The served set of the model-set tests: the simulated coxnet pair and a centre's ridge-Cox pair."""
    import shutil

    from crlm.predictor_training import train_predictor

    for name in ("crlm-sim-os", "crlm-sim-rfs"):
        shutil.copytree(models_dir / name, directory / name)
    cohort = centre_cohort()
    for endpoint in ("os", "rfs"):
        predictor = train_predictor(cohort, endpoint=endpoint, model_name="coxph", n_interval_models=5, seed=0,
                                    blocks=("clinical", "genomic"),
                                    preprocess_params={"preprocess__extra_fields": (tmb_field(),)})
        predictor.save(directory / f"centre-{endpoint}")
    (directory / "not-a-model").mkdir()  # ignored: no predictor.joblib
    return directory


@pytest.fixture(scope="session")
def model_set_dir(models_dir, tmp_path_factory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("model-set"), models_dir)


def clean_record(row: dict) -> dict:
    """A cohort row as an API client would send it: input fields only, no missing values, ints as ints."""
    import pandas as pd

    from crlm.schema import FIELDS_BY_NAME, input_fields

    names = {f.name for f in input_fields()}
    out = {}
    for key, value in row.items():
        if key not in names or value is None or value is pd.NA:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        kind = FIELDS_BY_NAME[key].kind
        if kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        elif kind == "bool":
            value = bool(value)
        out[key] = value
    return out


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return train_models(tmp_path_factory.mktemp("served-models"))


@pytest.fixture(scope="session")
def patients() -> list[dict]:
    """Realistic patients (a different simulated cohort than the training one)."""
    from crlm.cohort.simulate import simulate_cohort

    return [clean_record(r) for r in simulate_cohort(60, seed=11).data.to_dict("records")]


@pytest.fixture(scope="session")
def asgi_client(models_dir):
    """One ASGI app of the service (starlette TestClient), models loaded."""
    from starlette.testclient import TestClient

    old = os.environ.get("CRLM_MODELS_DIR")
    os.environ["CRLM_MODELS_DIR"] = str(models_dir)
    os.environ.pop("CRLM_API_KEY", None)
    from crlm.serving.service import CRLMService

    try:
        with TestClient(app=CRLMService.to_asgi()) as client:
            deadline = time.monotonic() + 120
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the service never became ready"
                time.sleep(0.1)
            yield client
    finally:
        if old is None:
            os.environ.pop("CRLM_MODELS_DIR", None)
        else:
            os.environ["CRLM_MODELS_DIR"] = old


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real ``bentoml serve`` subprocess on 127.0.0.1 (its own process group, always terminated)."""

    def __init__(self, models_dir: Path, *, api_key: str | None = None, workers: int | None = None,
                 log_path: Path | None = None, cwd: Path | None = None):
        from crlm.serving.launch import serve_command, serve_env

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        # Started outside the repository: the service is imported from the installed package.
        self.proc = subprocess.Popen(serve_command("127.0.0.1", self.port), cwd=cwd or models_dir,
                                     env=serve_env(models_dir, api_key, workers, port=self.port), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> LiveServer:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}; log: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"bentoml serve not ready after {timeout:.0f} s; log: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-n:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


@pytest.fixture(scope="session")
def live_server(models_dir, tmp_path_factory):
    server = LiveServer(models_dir, log_path=tmp_path_factory.mktemp("server") / "bentoml.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()
