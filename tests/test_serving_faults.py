"""Serving under faults, in-process: models in the wrong slot, damaged bundles, malformed settings, strict
types, hostile bodies, load shedding, readiness around killed workers, the MLflow store opened by two workers,
and the OpenAPI document against what the server accepts (issue 15)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from crlm.serving import admission
from crlm.serving.admission import AdmissionMiddleware, AdmissionSettings
from crlm.serving.bentoml_fixes import known_path
from crlm.serving.model_checks import ModelRefused, check_slot
from crlm.serving.readiness import WorkerReadiness, alive, remove_stale_directories
from crlm.serving.settings import ModelConfig, SettingsError, validate_environment
from crlm.serving.store import BundleUnreadable, ModelStore, load_model

pytest_plugins = ["serving_fixtures"]

NAMES = {"os": "crlm-sim-os", "rfs": "crlm-sim-rfs"}
VALID = {"age_years": 64, "n_liver_metastases": 3, "largest_metastasis_cm": 4.2, "bilobar_disease": True}


def copy_models(models_dir, tmp_path):
    target = tmp_path / "models"
    shutil.copytree(models_dir, target)
    return target


# ---------------------------------------------------------------------------------------------- slots (defect 1)

def test_a_bundle_in_the_wrong_slot_is_refused(models_dir, tmp_path):
    swapped = copy_models(models_dir, tmp_path)
    shutil.rmtree(swapped / "crlm-sim-os")
    shutil.copytree(models_dir / "crlm-sim-rfs", swapped / "crlm-sim-os")  # the RFS bundle in the OS directory
    store = ModelStore(ModelConfig("bundle", NAMES, swapped)).load_now()
    assert store.state == "failed" and store.engine is None
    assert "a model of rfs cannot fill the os slot" in store.error and "crlm-sim-os" in store.error


def test_a_model_named_for_the_other_endpoint_is_refused(models_dir):
    store = ModelStore(ModelConfig("bundle", {"os": "crlm-sim-rfs", "rfs": "crlm-sim-os"}, models_dir)).load_now()
    assert store.state == "failed" and "cannot fill the os slot" in store.error
    with pytest.raises(SettingsError, match="each endpoint needs its own model"):
        ModelConfig.from_env({"CRLM_OS_MODEL": "m", "CRLM_RFS_MODEL": "m"})


def test_schema_and_library_versions_are_checked(models_dir):
    predictor = load_model("os", ModelConfig("bundle", NAMES, models_dir)).predictor
    check_slot("os", predictor, "test")  # the real one fits
    predictor.fields_used = [*predictor.fields_used, "shoe_size"]
    with pytest.raises(ModelRefused, match="shoe_size"):
        check_slot("os", predictor, "test")
    declared = {**predictor.metadata, "extra_fields": [{"name": "shoe_size", "type": "number"}]}
    predictor.metadata = declared  # a centre's own field, declared in its mapping, is not a foreign schema
    check_slot("os", predictor, "test")
    predictor.fields_used.remove("shoe_size")
    predictor.metadata = {**predictor.metadata,
                          "package_versions": {**predictor.metadata["package_versions"], "scikit-learn": "0.24.2"}}
    with pytest.raises(ModelRefused, match="scikit-learn 0.24.2"):
        check_slot("os", predictor, "test")


# ---------------------------------------------------------------------------------------------- damaged bundle (13)

@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_damaged_bundle_names_the_file_and_the_problem(models_dir, tmp_path, damage):
    broken = copy_models(models_dir, tmp_path)
    path = broken / "crlm-sim-os" / "predictor.joblib"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:200] + bytes(range(256)) * 40)
    with pytest.raises(BundleUnreadable) as err:
        load_model("os", ModelConfig("bundle", NAMES, broken))
    assert str(path) in str(err.value) and "truncated or corrupted" in str(err.value)
    store = ModelStore(ModelConfig("bundle", NAMES, broken)).load_now()
    assert store.state == "failed" and "truncated or corrupted" in store.error


# ---------------------------------------------------------------------------------------------- settings (8)

@pytest.mark.parametrize("name, value", [("CRLM_MAX_BODY_BYTES", "4MB"), ("CRLM_MAX_BODY_BYTES", "-1"),
                                         ("CRLM_SERVE_WORKERS", "two"), ("CRLM_MAX_CONCURRENCY", "0"),
                                         ("CRLM_RETRY_AFTER_S", "1.5"), ("CRLM_MODEL_SOURCE", "s3"),
                                         ("CRLM_REQUEST_TIMEOUT_S", "1m"), ("CRLM_MAX_QUEUE_MS", "10ms")])
def test_a_malformed_setting_is_refused_at_start(name, value):
    with pytest.raises(SettingsError) as err:
        validate_environment({name: value})
    assert name in str(err.value) and repr(value) in str(err.value)


def test_crlm_serve_refuses_a_malformed_setting(monkeypatch):
    from typer.testing import CliRunner

    from crlm.cli import app

    monkeypatch.setenv("CRLM_MAX_BODY_BYTES", "4MB")
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "CRLM_MAX_BODY_BYTES='4MB'" in result.output.replace("\n", "")


# ---------------------------------------------------------------------------------------------- strict types (7)

@pytest.mark.parametrize("field, value", [
    ("age_years", "77"), ("age_years", "7.7e1"), ("n_liver_metastases", True), ("n_liver_metastases", 3.0),
    ("bilobar_disease", "off"), ("bilobar_disease", 0.0), ("bilobar_disease", 1), ("largest_metastasis_cm", "4"),
    ("cea_ng_ml", False), ("patient_id", "P\u00001"), ("patient_id", "a\nb"), ("patient_id", 17),
])
@pytest.mark.parametrize("route", ["/predict", "/scores"])
def test_wrong_types_are_refused_naming_the_field(asgi_client, route, field, value):
    resp = asgi_client.post(route, json={"patient": {**VALID, field: value}})
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == [field]


def test_an_integer_for_a_decimal_field_is_json_itself(asgi_client):
    resp = asgi_client.post("/predict", json={"patient": {**VALID, "age_years": 64, "cea_ng_ml": 5}})
    assert resp.status_code == 200


# ---------------------------------------------------------------------------------------------- hostile bodies (2, 10)

@pytest.mark.parametrize("content, headers, status, field, rule", [
    (b"\xef\xbb\xbf" + json.dumps({"patient": VALID}).encode(), {}, 200, None, None),  # a BOM is ignored
    (b'{"patient": {"age_years": 64, "patient_id": "\\ud800"}}', {}, 400, "body", "RFC 8259"),
    (b"[" * 250 + b"]" * 250, {}, 400, "body", "200 levels"),
    (b'{"patient": ' + b'{"a": ' * 250 + b"1" + b"}" * 251, {}, 400, "body", "200 levels"),
    (b"   \n ", {}, 422, "patient", "required"),
    (b'{"patient": {"age_years": 1e400, "n_liver_metastases": 1, "largest_metastasis_cm": 1}}', {}, 422,
     "age_years", None),
    (b'{"patient": {"age_years": Infinity}}', {}, 400, "body", None),
    (json.dumps({"patient": VALID}).encode(), {"content-encoding": "gzip"}, 415, "Content-Encoding", None),
    (b'{"patient": {}, "\\u0000x": 1}', {}, 400, "(unknown key)", None),
])
def test_hostile_bodies_get_the_services_own_4xx(asgi_client, content, headers, status, field, rule):
    resp = asgi_client.post("/predict", content=content, headers={"content-type": "application/json", **headers})
    assert resp.status_code == status, resp.text
    if field is not None:
        error = resp.json()["errors"][0]
        assert error["field"] == field
        assert rule is None or rule in error["rule"]


# ---------------------------------------------------------------------------------------------- shedding (6)

def test_past_capacity_requests_are_shed_at_once_with_retry_after_without_reading_the_body():
    release = asyncio.Event()
    seen = []

    async def slow_app(scope, receive, send):
        seen.append(scope["path"])
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = AdmissionMiddleware(slow_app, AdmissionSettings(max_concurrency=2, retry_after_s=3))

    async def call(path="/predict", method="POST"):
        sent, reads = [], []

        async def receive():
            reads.append(1)
            return {"type": "http.request", "body": b'{"patient": {}}', "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-type", b"application/json")]}
        await gate(scope, receive, send)
        return sent, reads

    async def run():
        first = [asyncio.create_task(call()) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        shed = await call()  # the third, while two are answered
        elapsed = time.perf_counter() - started
        probe = asyncio.create_task(call("/readyz", "GET"))  # probes and pages are never shed
        await asyncio.sleep(0.01)
        release.set()
        return shed, elapsed, await asyncio.gather(*first), await probe

    (shed, reads), elapsed, answered, probe = asyncio.run(run())
    assert shed[0]["status"] == 503 and elapsed < 0.1 and reads == []  # refused before a byte of the body
    assert (b"retry-after", b"3") in shed[0]["headers"]
    assert "CRLM_MAX_CONCURRENCY" in json.loads(shed[1]["body"])["errors"][0]["rule"]
    assert [a[0][0]["status"] for a in answered] == [200, 200] and probe[0][0]["status"] == 200
    assert seen == ["/predict", "/predict", "/readyz"]
    assert gate.in_flight == 0 and gate.shed == 1
    # the worker is past capacity: its micro-batcher runs the calls in a thread for a while (the loop keeps shedding)
    assert admission.shed_recently() and not admission.shed_recently(within_s=0.0)


def test_admission_is_the_outermost_layer_of_the_served_app(monkeypatch):
    from crlm.serving.service import CRLMService

    monkeypatch.setenv("CRLM_MAX_CONCURRENCY", "3")
    app = CRLMService.to_asgi()
    assert isinstance(app, AdmissionMiddleware) and app.settings.max_concurrency == 3
    assert not isinstance(app.app, AdmissionMiddleware)  # once, however often the module is imported


def _layers(app) -> list[str]:
    """The class names of an ASGI app's layers, outermost first (Starlette's built middleware stack included)."""
    names = []
    while app is not None:
        names.append(type(app).__name__)
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
    return names


def test_requests_are_traced_only_when_an_exporter_is_configured(asgi_client, monkeypatch):
    from _bentoml_impl.server.app import ServiceAppFactory

    from crlm.serving import bentoml_fixes
    from crlm.serving.service import CRLMService

    # no exporter (the default): OpenTelemetry's layer is replaced, and each answer still carries its own id
    app = asgi_client.app
    assert "RequestIdLayer" in _layers(app) and "OpenTelemetryMiddleware" not in _layers(app)
    ids = {asgi_client.post("/scores", json={"patient": VALID}).headers["x-bentoml-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)
    # with an exporter, BentoML's layer stays
    monkeypatch.setattr(bentoml_fixes, "tracing_exported", lambda: True)
    kinds = [m.cls.__name__ for m in ServiceAppFactory(CRLMService).middlewares]
    assert "OpenTelemetryMiddleware" in kinds and "RequestIdLayer" not in kinds


# ---------------------------------------------------------------------------------------------- metrics labels (5)

def test_only_known_paths_keep_their_label():
    for path in ("/predict", "/metrics", "/ui/app.js", "/readyz", "/model_info", "/docs.json"):
        assert known_path(path)
    for path in ("/x", "/predict/", "/%00", "/ui", "/" + "a" * 500):
        assert known_path(path) == (path == "/ui")


# ---------------------------------------------------------------------------------------------- readiness (9)

def test_a_killed_worker_is_not_ready_even_before_it_is_reaped(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(child.pid):  # a zombie until reaped by wait() below
            assert time.monotonic() < deadline, "a killed, unreaped process still counts as alive"
            time.sleep(0.01)
    finally:
        child.wait()


def test_markers_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"crlm-ready-{dead.stdout.strip()}"
    stale.mkdir()
    (stale / "1").touch()
    remove_stale_directories(tmp_path)
    assert not stale.exists(), "a dead server's marker directory is removed"
    ready = WorkerReadiness(2, tmp_path / f"crlm-ready-{os.getppid()}")
    (ready.directory).mkdir()
    (ready.directory / dead.stdout.strip()).touch()  # a killed worker's marker
    assert not ready.others_ready()
    ready.mark_ready()
    assert [m.name for m in ready.directory.iterdir()] == [str(os.getpid())]
    ready.unmark()
    assert not ready.directory.exists()


# ---------------------------------------------------------------------------------------------- MLflow store (4)

OPEN_STORE = ("import sys; from crlm.serving.tracking_lock import open_tracking_store; open_tracking_store(); "
              "print('opened')")


@pytest.mark.slow  # two interpreters racing on a new store
def test_two_workers_open_a_new_tracking_store_at_once(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new.db'}"}
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    import sqlite3

    tables = {r[0] for r in sqlite3.connect(tmp_path / "new.db").execute("select name from sqlite_master")}
    assert "registered_models" in tables and not any(t.startswith("_alembic_tmp") for t in tables)


# ---------------------------------------------------------------------------------------------- OpenAPI (10)

def test_the_openapi_document_has_every_route_and_status():
    from crlm.serving.service import service_openapi

    doc = service_openapi()
    paths = doc["paths"]
    for path in ("/predict", "/predict_batch", "/scores", "/model_info", "/schema/patient", "/ui", "/ui/",
                 "/ui/config.json", "/metrics", "/livez", "/readyz"):
        assert path in paths, path
    for route, key in (("/predict", "patient"), ("/predict_batch", "patients"), ("/scores", "patient")):
        post = paths[route]["post"]
        assert {"200", "400", "401", "413", "415", "422", "503"} <= set(post["responses"])
        assert all(isinstance(status, str) for status in post["responses"])  # one JSON key per status
        body = post["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in body:
            body = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert key in body["required"], body


# ---------------------------------------------------------------------------------------------- batching (12)

def test_an_answer_does_not_depend_on_the_batch_it_was_in(models_dir, patients):
    engine = ModelStore(ModelConfig("bundle", NAMES, models_dir)).load_now().engine
    alone = [json.dumps(engine.answer([p])[0]) for p in patients[:12]]
    for size in (2, 5, 12, 60):
        batch = engine.answer(patients[:size])
        for i, answer in enumerate(batch[:12]):
            assert json.dumps(answer) == alone[i], f"patient {i} in a batch of {size} differs from alone"


JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "number": (int, float)}


def conforms(value, schema: dict) -> bool:
    """``value`` against the loose OpenAPI schema ``schema_of`` writes (type, nullable, required properties)."""
    if value is None:
        return bool(schema.get("nullable")) or "type" not in schema
    kind = schema.get("type")
    if kind is not None and (not isinstance(value, JSON_TYPES[kind]) or (kind == "number" and isinstance(value, bool))):
        return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return set(schema.get("required", [])) <= set(value) and all(
            conforms(value[k], sub) for k, sub in props.items() if k in value)
    return True


def test_the_served_document_describes_the_predictors_own_answer(asgi_client, patients):
    """The endpoint answer is typed once (``crlm.answer.EndpointAnswer``): /docs.json describes it from that
    type, and every real answer of the Predictor conforms to it."""
    doc = asgi_client.get("/docs.json").json()
    described = doc["components"]["schemas"]["EndpointAnswer"]
    score = doc["components"]["schemas"]["Score"]
    for patient in patients[:10] + [VALID]:
        answer = asgi_client.post("/predict", json={"patient": patient}).json()
        assert set(described["required"]) == set(answer["os"]) >= {"horizons", "curve", "contributions"}
        assert all(conforms(answer[ep], described) for ep in ("os", "rfs"))
        assert all(conforms(value, score) for value in answer["scores"].values())
    assert not conforms({**answer["os"], "horizons": "12"}, described)


def test_a_refused_patients_id_is_echoed_only_when_valid(asgi_client):
    bad = {"age_years": 300}
    resp = asgi_client.post("/predict_batch", json={"patients": [{**bad, "patient_id": "P-1"},
                                                                 {**bad, "patient_id": "P\u00002"},
                                                                 {**bad, "patient_id": "x" * 5000}]})
    assert [r["patient_id"] for r in resp.json()["results"]] == ["P-1", None, None]


# ---------------------------------------------------------------------------------------------- memory (issue 15)

def test_answered_requests_leave_nothing_alive(asgi_client, patients):
    """BentoML's request timer kept every answered request's context (and its trace span) for the whole
    timeout (120 s): ~5 KB per request. After the requests, none of their spans is alive."""
    import gc

    from opentelemetry.sdk.trace import _Span

    for i in range(200):
        assert asgi_client.post("/predict", json={"patient": patients[i % 60]}).status_code == 200
    gc.collect()
    assert sum(isinstance(o, _Span) for o in gc.get_objects()) <= 2


def test_a_serving_worker_gives_the_event_loop_the_gil_back_quickly(asgi_client):
    from crlm.serving.batching import SWITCH_INTERVAL_S

    assert asgi_client.post("/predict", json={"patient": VALID}).status_code == 200
    assert SWITCH_INTERVAL_S < 0.005  # Python's default: 5 ms
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
