"""The real server: one ``bentoml serve`` subprocess on 127.0.0.1 (a free port), reached over HTTP with httpx."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from crlm.serving.launch import bentoml_home, serve_command, serve_env
from serving_fixtures import LiveServer, free_port

pytest_plugins = ["serving_fixtures"]
KEY = "test-key-7f3a"

pytestmark = pytest.mark.slow
SECRET = {"patient_id": "PRIVATE-5512", "age_years": 58.25, "n_liver_metastases": 4, "largest_metastasis_cm": 6.75,
          "cea_ng_ml": 8765.4321, "primary_node_positive": True, "kras_status": "mutant"}


@pytest.fixture(scope="module")
def http(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


def test_health_and_readiness(http):
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").status_code == 200


def test_predict_over_http_equals_the_predictor(http, patients, models_dir):
    from crlm.predictor import Predictor

    patient = patients[0]
    resp = http.post("/predict", json={"patient": patient})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    row = {k: v for k, v in patient.items() if k != "patient_id"}
    for ep in ("os", "rfs"):
        expected = Predictor.load(models_dir / f"crlm-sim-{ep}").predict([row])[0]
        got = body[ep]
        assert [h["survival"] for h in got["horizons"]] == pytest.approx([h["survival"] for h in expected["horizons"]])
        assert [h["lower"] for h in got["horizons"]] == pytest.approx([h["lower"] for h in expected["horizons"]])
        assert got["risk_group"] == expected["risk_group"]
        assert [c["field"] for c in got["contributions"]] == [c["field"] for c in expected["contributions"]]
    assert set(body["scores"]) == {"fong", "game", "mcs", "tbs", "nordlinger"}
    assert body["models"]["os"]["training_cohort"]["name"] == "simulated"


def test_batch_and_errors_over_http(http, patients):
    resp = http.post("/predict_batch", json={"patients": [patients[1], {"age_years": 300}, patients[2]]})
    assert resp.status_code == 200
    assert [r["ok"] for r in resp.json()["results"]] == [True, False, True]
    resp = http.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "body"
    resp = http.post("/predict", json={"patient": {"age_years": 60}})
    assert resp.status_code == 422
    assert {e["field"] for e in resp.json()["errors"]} == {"n_liver_metastases", "largest_metastasis_cm"}


def test_metrics_are_prometheus_text(http):
    assert http.post("/predict", json={"patient": SECRET}).status_code == 200
    resp = http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "bentoml_service_request_total" in text
    assert re.search(r'bentoml_service_request_total\{[^}]*endpoint="/predict"[^}]*\} [1-9]', text), text[:2000]
    assert "bentoml_service_request_duration_seconds_bucket" in text


def test_calculator_page_is_served(http):
    page = http.get("/ui/")
    assert page.status_code == 200 and "CRLM survival calculator" in page.text
    assert http.get("/ui/app.js").status_code == 200
    assert http.get("/model_info").json()["state"] == "ready"


def test_server_logs_hold_no_patient_values(http, live_server):
    assert http.post("/predict", json={"patient": SECRET}).status_code == 200
    assert http.post("/predict", json={"patient": {**SECRET, "sex": "neither"}}).status_code == 422
    assert http.post("/predict_batch", json={"patients": [SECRET]}).status_code == 200
    log = live_server.log_tail(10**7)
    assert "/predict" in log, "the access log is written"
    for value in ("PRIVATE-5512", "8765.4321", "58.25", "6.75", "neither"):
        assert value not in log


# ---------------------------------------------------------------------------------------------- issue 15, real server

HOSTILE = [  # bodies BentoML refused with a traceback quoting the body; the guard now answers them
    b"\xef\xbb\xbf" + json.dumps({"patient": {**SECRET, "sex": "neither"}}).encode(),
    b'{"patient": {"cea_ng_ml": 8765.4321, "patient_id": "PRIVATE-5512\\ud800"}}',
    b'{"patient": {"cea_ng_ml": 8765.4321, "x": ' + b"[" * 250 + b"]" * 250 + b"}}",
    b"  \n\t ",
    b'{"patient": {"cea_ng_ml": 8765.4321, "age_years": NaN}}',
    b'{"patient": {"cea_ng_ml": "8765.4321", "patient_id": "PRIVATE-5512"}}',
]


def test_hostile_bodies_leave_no_patient_value_in_the_logs(http, live_server):
    for body in HOSTILE:
        resp = http.post("/predict", content=body, headers={"content-type": "application/json"})
        assert 400 <= resp.status_code < 500, resp.text
        assert resp.json()["errors"][0]["field"], "the service's own error shape, naming the field"
    resp = http.post("/predict", content=json.dumps({"patient": SECRET}).encode(),
                     headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert resp.status_code == 415
    log = live_server.log_tail(10**7)
    for value in ("PRIVATE-5512", "8765.4321", "input_value", "Traceback"):
        assert value not in log, value


def test_random_paths_do_not_grow_the_metrics_and_a_second_server_keeps_the_firsts(http, models_dir, tmp_path):
    # BentoML empties its Prometheus directory when a server starts; with a shared BentoML home (~/bentoml) a
    # second server wiped the first one's counts. Each server has its own home (``launch.bentoml_home``).
    assert http.post("/predict", json={"patient": SECRET}).status_code == 200
    before = predict_count(http.get("/metrics").text)
    assert before >= 1
    # a second server, of its own: its /metrics holds only this test's traffic
    server = LiveServer(models_dir, log_path=tmp_path / "bentoml.log").wait_ready()
    try:
        assert bentoml_home(server.port) != bentoml_home(http.base_url.port)
        assert predict_count(http.get("/metrics").text) >= before  # the first server's counts survived
        with httpx.Client(base_url=server.url, timeout=60) as own:
            _random_paths_leave_one_label(own)
    finally:
        server.stop()


def predict_count(text: str) -> float:
    """The /predict requests a server's /metrics has counted (all its workers, every status)."""
    found = re.findall(r'bentoml_service_request_total\{[^}]*endpoint="/predict"[^}]*\} ([0-9.e+]+)', text)
    return sum(float(v) for v in found)


def _random_paths_leave_one_label(http) -> None:
    before = http.get("/metrics").text
    for i in range(300):
        assert http.get(f"/no-such-{i}-%00{'x' * (i % 50)}").status_code == 404
    deadline = time.monotonic() + 10  # the workers' counters reach /metrics through the shared metrics dir
    while True:
        text = http.get("/metrics").text
        labels = set(re.findall(r'endpoint="([^"]*)"', text))
        if "/(other)" in labels or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not any(label.startswith("/no-such") for label in labels), sorted(labels)[:20]
    assert "/(other)" in labels, sorted(labels)
    assert len(text) < len(before) + 20_000, "300 unknown paths add one label, not 300"


def test_a_malformed_setting_stops_the_server_at_start(models_dir, tmp_path):
    env = {**serve_env(models_dir), "CRLM_MAX_BODY_BYTES": "4MB"}
    done = subprocess.run(serve_command("127.0.0.1", free_port()), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "CRLM_MAX_BODY_BYTES='4MB'" in done.stdout + done.stderr
    assert os.environ.get("CRLM_MAX_BODY_BYTES") is None


@pytest.fixture(scope="module")
def keyed_server(models_dir, tmp_path_factory):
    server = LiveServer(models_dir, api_key=KEY, workers=2,
                        log_path=tmp_path_factory.mktemp("keyed") / "bentoml.log")
    try:
        yield server.wait_ready(180)
    finally:
        server.stop()


def test_metrics_need_the_key_when_one_is_set(keyed_server):
    assert httpx.get(f"{keyed_server.url}/metrics", timeout=30).status_code == 401
    resp = httpx.get(f"{keyed_server.url}/metrics", headers={"X-API-Key": KEY}, timeout=30)
    assert resp.status_code == 200 and "bentoml_service_request_total" in resp.text


def test_a_killed_worker_is_replaced_without_a_503_and_markers_are_cleaned(keyed_server, patients):
    markers = Path(tempfile.gettempdir()) / f"crlm-ready-{keyed_server.proc.pid}"
    workers = sorted(int(m.name) for m in markers.iterdir() if m.name.isdigit())  # beside them: the load file
    assert len(workers) == 2
    statuses, stop, quiet = [], threading.Event(), threading.Lock()

    def client():
        # a new connection per request (as many clients): the replacement worker gets its share of them
        with httpx.Client(base_url=keyed_server.url, headers={"X-API-Key": KEY, "Connection": "close"},
                          timeout=60) as c:
            i = 0
            while not stop.is_set():
                with quiet:  # no request is in flight at the moment of the kill (that one would be lost)
                    try:
                        statuses.append(c.post("/predict", json={"patient": patients[i % 20]}).status_code)
                    except httpx.TransportError:
                        statuses.append("lost")
                i += 1
                time.sleep(0.03)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.5)
        with quiet:
            os.kill(workers[0], signal.SIGKILL)
            killed = time.monotonic()
        ready = []  # (seconds since the kill, /readyz status)
        while time.monotonic() - killed < 60 and not (ready and ready[-1][1] == 200 and any(s == 503 for _, s in ready)):
            ready.append((time.monotonic() - killed, httpx.get(f"{keyed_server.url}/readyz", timeout=10).status_code))
            time.sleep(0.05)
        # readiness drops at once and comes back when the replacement has loaded
        first_503 = next(t for t, s in ready if s == 503)
        assert first_503 < 0.5, ready[:10]
        back = next((t for t, s in ready if s == 200 and t > first_503), None)
        assert back is not None, "the replacement worker became ready"
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    keyed_server.stop()
    assert not markers.exists(), "the marker directory is removed with the server"


def test_two_workers_on_a_new_tracking_store_create_it_once(models_dir, tmp_path, monkeypatch):
    db = tmp_path / "new.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("CRLM_MODEL_SOURCE", "registry")  # a models dir alone would mean bundles
    server = LiveServer(models_dir, workers=2, log_path=tmp_path / "bentoml.log", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while "model loading failed" not in server.log_tail(10**6) or server.log_tail(10**6).count(
                "model loading failed") < 2:
            assert time.monotonic() < deadline, server.log_tail()
            assert server.proc.poll() is None, server.log_tail()
            time.sleep(0.3)
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 503  # no champion registered
        info = httpx.get(f"{server.url}/model_info", timeout=10).json()
        assert info["state"] == "failed" and "no registered model has the alias @champion" in info["error"]
    finally:
        server.stop()
    log = server.log_tail(10**6)
    assert "already exists" not in log and "OperationalError" not in log, log[-3000:]
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert "registered_models" in tables and not any(t.startswith("_alembic_tmp") for t in tables)


def test_crlm_serve_runs_from_any_directory(models_dir, tmp_path):
    """The CLI (settings validated, then exec of bentoml serve) from a directory outside the repository."""

    port = free_port()
    code = "import sys; from crlm.cli import app; sys.exit(app())"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--models-dir",
                             str(models_dir), "--workers", "1"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.3)
        page = httpx.get(f"http://127.0.0.1:{port}/ui/app.js", timeout=10)
        assert page.status_code == 200 and "fetch" in page.text  # the package's static files
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
