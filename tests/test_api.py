"""The online API in-process and through its ASGI app: answers, validation, batch, API key, scores, model info."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time

import pytest

from crlm.paths import project_root
from crlm.schema import FIELDS_BY_NAME, input_fields
from crlm.scores import score_patient
from crlm.serving.batching import MicroBatcher
from crlm.serving.engine import clinical_scores
from crlm.serving.errors import RequestError
from crlm.serving.readiness import WorkerReadiness
from crlm.serving.responses import BatchResponse, PredictResponse, ScoresResponse
from crlm.serving.settings import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BATCH,
    ModelConfig,
    SettingsError,
    default_workers,
)
from crlm.serving.store import ModelStore

pytest_plugins = ["serving_fixtures"]

HORIZONS = [12.0, 36.0, 60.0]


def assert_close(a, b, path="answer", tol=1e-6):
    """Equal JSON-like structures, floats within ``tol`` (curves are rounded to 5 decimals)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}", tol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}[{i}]", tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert b is not None and math.isclose(a, b, rel_tol=tol, abs_tol=tol), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def jsonable(obj):
    return json.loads(json.dumps(obj))


@pytest.fixture(scope="module")
def predictors(models_dir):
    from crlm.predictor import Predictor

    return {ep: Predictor.load(models_dir / f"crlm-sim-{ep}") for ep in ("os", "rfs")}


def model_rows(patient: dict) -> list[dict]:
    return [{k: v for k, v in patient.items() if k != "patient_id"}]


# ---------------------------------------------------------------------------------------------- /predict

def test_predict_has_every_field_and_equals_the_predictor(asgi_client, patients, predictors):
    for patient in patients[:4]:
        resp = asgi_client.post("/predict", json={"patient": patient})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert resp.headers["content-type"] == "application/json"
        PredictResponse.model_validate(body)  # the documented response model (OpenAPI)
        assert body["patient_id"] == patient["patient_id"]
        for ep in ("os", "rfs"):
            answer = body[ep]
            expected = jsonable(predictors[ep].predict(model_rows(patient))[0])
            assert_close(answer, expected, path=ep)
            assert [h["months"] for h in answer["horizons"]] == HORIZONS
            for h in answer["horizons"]:
                assert 0 <= h["lower"] <= h["survival"] <= h["upper"] <= 1
            assert answer["risk_group"] in ("low", "intermediate", "high")
            assert answer["median_reached"] == (answer["median_months"] is not None)
            curve = answer["curve"]
            assert len(curve["months"]) == len(curve["survival"]) == len(curve["lower"]) == len(curve["upper"]) > 10
            assert answer["contributions"], "an explanation is always given"
            for c in answer["contributions"]:
                assert {"field", "value", "direction", "size", "sentence"} <= set(c)
                assert c["direction"] == ("raises" if c["size"] > 0 else "lowers")
        for name in ("fong", "game", "mcs", "tbs", "nordlinger"):
            score = body["scores"][name]
            assert (score["group"] is None) == (score["reason"] is not None)
            expected = jsonable(score_patient(name, model_rows(patient)[0]))
            assert_close({k: score[k] for k in expected}, expected, path=name)
        if body["scores"]["tbs"]["group"] is not None:
            assert body["scores"]["tbs"]["group"].startswith("zone ")
        for ep in ("os", "rfs"):
            ref = body["models"][ep]
            assert ref["registered_name"] == f"crlm-sim-{ep}"
            assert {"version", "alias", "source"} <= set(ref)
            assert ref["training_cohort"]["name"] == "simulated" and ref["training_cohort"]["patients"] == 400
        assert isinstance(body["warnings"], list)
        assert "not for clinical use" in body["disclaimer"].lower()


def test_sparse_patient_is_answered_with_warnings(asgi_client):
    patient = {"age_years": 61, "n_liver_metastases": 2, "largest_metastasis_cm": 3.5,
               "resection_margin": "R1", "fong_score_recorded": 2}
    body = asgi_client.post("/predict", json={"patient": patient}).json()
    assert any("cea_ng_ml is missing" in w for w in body["warnings"])
    assert any(w.startswith("resection_margin is not used by the OS/RFS models") for w in body["warnings"])
    assert body["scores"]["fong"]["group"] is None and "primary_node_positive" in body["scores"]["fong"]["reason"]
    assert body["scores"]["tbs"]["total"] == pytest.approx(math.hypot(3.5, 2))


def test_out_of_training_range_is_warned(asgi_client):
    body = asgi_client.post("/predict", json={"patient": {"age_years": 99.5, "n_liver_metastases": 1,
                                                          "largest_metastasis_cm": 2}}).json()
    assert any("age_years 99.5 is outside the training range" in w for w in body["warnings"])


def test_in_process_service_methods_answer_like_http(asgi_client, patients, models_dir, monkeypatch):
    monkeypatch.setenv("CRLM_MODELS_DIR", str(models_dir))
    from crlm.serving.service import CRLMService

    svc = CRLMService()
    assert svc.store.wait(60) and svc.__is_ready__()
    patient = patients[5]
    direct = json.loads(asyncio.run(svc.predict(patient=patient)).body)
    assert_close(direct, asgi_client.post("/predict", json={"patient": patient}).json())
    scores = json.loads(svc.scores(patient=patient).body)
    assert_close(scores["scores"], direct["scores"])
    batch = json.loads(asyncio.run(svc.predict_batch(patients=[patient, {"age_years": 10}])).body)
    assert batch["summary"] == {"patients": 2, "answered": 1, "refused": 1}
    refused = asyncio.run(svc.predict(patient={"age_years": 10}))
    assert refused.status_code == 422


# ---------------------------------------------------------------------------------------------- /predict_batch

def test_batch_answers_each_patient_and_isolates_the_bad_one(asgi_client, patients):
    good = patients[10:14]
    bad_range = {**patients[14], "largest_metastasis_cm": 45.0}
    bad_field = {**patients[15], "tumor_size": 3}
    batch = [good[0], bad_range, good[1], bad_field, good[2], "not a patient", good[3]]
    resp = asgi_client.post("/predict_batch", json={"patients": batch})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    BatchResponse.model_validate(body)
    assert all(PredictResponse.model_validate(r) for r in body["results"] if r["ok"])
    assert body["summary"] == {"patients": 7, "answered": 4, "refused": 3}
    results = body["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["ok"] for r in results] == [True, False, True, False, True, False, True]
    assert results[1]["patient_id"] == bad_range["patient_id"]
    assert results[1]["error"]["errors"] == [{
        "field": "largest_metastasis_cm", "rule": FIELDS_BY_NAME["largest_metastasis_cm"].rule,
        "message": "Input should be less than or equal to 30"}]
    assert results[3]["error"]["errors"][0]["field"] == "tumor_size"
    assert results[5]["error"]["errors"][0]["field"] == "patient"
    for i, patient in zip((0, 2, 4, 6), good, strict=True):
        single = asgi_client.post("/predict", json={"patient": patient}).json()
        item = {k: v for k, v in results[i].items() if k not in ("index", "ok", "error")}
        assert_close(item, single, path=f"results[{i}]")


@pytest.mark.parametrize("patients_value, status, field", [
    ([], 422, "patients"),
    ({"age_years": 60}, 422, "patients"),
    (None, 422, "patients"),
])
def test_batch_shape_errors(asgi_client, patients_value, status, field):
    body = {} if patients_value is None else {"patients": patients_value}
    resp = asgi_client.post("/predict_batch", json=body)
    assert resp.status_code == status
    assert resp.json()["errors"][0]["field"] == field


def test_batch_length_limit(asgi_client):
    patient = {"age_years": 60, "n_liver_metastases": 1, "largest_metastasis_cm": 2.0}
    resp = asgi_client.post("/predict_batch", json={"patients": [patient] * (MAX_BATCH + 1)})
    assert resp.status_code == 413
    assert resp.json()["errors"][0]["field"] == "patients"
    assert str(MAX_BATCH) in resp.json()["errors"][0]["rule"]


# ---------------------------------------------------------------------------------------------- validation

VALID = {"age_years": 64, "n_liver_metastases": 3, "largest_metastasis_cm": 4.2, "sex": "female",
         "primary_node_positive": True, "kras_status": "wild_type"}


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("patient, field", [
    ({**VALID, "age_years": "sixty"}, "age_years"),  # wrong type
    ({**VALID, "age_years": 17}, "age_years"),  # out of range
    ({**VALID, "cea_ng_ml": -1}, "cea_ng_ml"),
    ({**VALID, "largest_metastasis_cm": 31}, "largest_metastasis_cm"),
    ({**VALID, "sex": "unknown"}, "sex"),  # unknown category
    ({**VALID, "kras_status": "MUTANT"}, "kras_status"),
    ({**VALID, "primary_node_positive": "maybe"}, "primary_node_positive"),
    ({**VALID, "n_liver_metastases": 2.5}, "n_liver_metastases"),  # an integer field
    ({**VALID, "tumour_size_cm": 3}, "tumour_size_cm"),  # unknown field
    ({**VALID, "os_months": 12}, "os_months"),  # outcomes are not inputs
    (_without(VALID, "age_years"), "age_years"),  # missing required field
    (_without(VALID, "largest_metastasis_cm"), "largest_metastasis_cm"),
    ({**VALID, "age_years": [60]}, "age_years"),
    ({**VALID, "patient_id": "x" * 65}, "patient_id"),
])
@pytest.mark.parametrize("route", ["/predict", "/scores"])
def test_invalid_patient_is_refused_naming_field_and_rule(asgi_client, route, patient, field):
    resp = asgi_client.post(route, json={"patient": patient})
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    f = FIELDS_BY_NAME.get(field)
    if f is not None and f.block not in ("id", "outcome"):
        assert f.rule in errors[0]["rule"]
    else:
        assert errors[0]["rule"]


@pytest.mark.parametrize("content, headers, status, field", [
    (b'{"patient": {"age_years": 60,', {}, 400, "body"),  # malformed JSON
    (b'{"patient": {"age_years": NaN, "n_liver_metastases": 1, "largest_metastasis_cm": 1}}', {}, 400, "body"),
    (b"[1, 2]", {}, 400, "body"),
    (b'"patient"', {}, 400, "body"),
    (b'{"patient": 5}', {}, 422, "patient"),
    (b'{"patient": null}', {}, 422, "patient"),
    (b"{}", {}, 422, "patient"),
    (b"", {}, 422, "patient"),
    (b'{"patient": {}, "extra": 1}', {}, 400, "extra"),
    (b'{"age_years": 60}', {}, 400, "age_years"),  # fields without the {"patient": ...} wrapper
    (b"age_years=60", {"content-type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    (b"\xff\xfe", {}, 400, "body"),
])
def test_malformed_requests_are_4xx(asgi_client, content, headers, status, field):
    resp = asgi_client.post("/predict", content=content, headers={"content-type": "application/json", **headers})
    assert resp.status_code == status, resp.text
    assert resp.json()["errors"][0]["field"] == field


def test_body_size_limit(asgi_client, monkeypatch):
    monkeypatch.setenv("CRLM_MAX_BODY_BYTES", "2000")
    big = json.dumps({"patient": {**VALID, "patient_id": "p"}, "pad": "x" * 3000}).encode()
    resp = asgi_client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["errors"][0]["field"] == "body"

    def chunks():  # no content-length: the limit is enforced while reading
        yield big[:1500]
        yield big[1500:]

    resp = asgi_client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    monkeypatch.delenv("CRLM_MAX_BODY_BYTES")
    assert asgi_client.post("/predict", json={"patient": VALID}).status_code == 200


def test_default_body_limit_fits_a_full_batch(patients):
    full = {f.name: None for f in input_fields()}
    worst = [{**full, **p} for p in patients]
    body = json.dumps({"patients": (worst * 20)[:MAX_BATCH]}, indent=2).encode()
    assert len(body) < DEFAULT_MAX_BODY_BYTES


def test_get_on_post_routes_is_405(asgi_client):
    assert asgi_client.get("/predict").status_code == 405


# ---------------------------------------------------------------------------------------------- API key

def test_api_key(asgi_client, monkeypatch):
    monkeypatch.setenv("CRLM_API_KEY", "s3cret-key")
    body = {"patient": VALID}
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        resp = asgi_client.post("/predict", json=body, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["errors"][0]["field"] == "X-API-Key"
    assert asgi_client.post("/predict", json=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert asgi_client.post("/predict", json=body, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert asgi_client.post("/scores", json=body).status_code == 401
    assert asgi_client.post("/predict_batch", json={"patients": [VALID]}).status_code == 401
    assert asgi_client.get("/model_info").status_code == 401
    assert asgi_client.get("/model_info", headers={"X-API-Key": "s3cret-key"}).status_code == 200
    for path in ("/livez", "/readyz", "/ui/", "/ui/app.js", "/schema/patient", "/docs.json"):
        assert asgi_client.get(path).status_code == 200, path
    assert asgi_client.get("/ui/config.json").json()["api_key_required"] is True
    monkeypatch.delenv("CRLM_API_KEY")
    assert asgi_client.post("/predict", json=body).status_code == 200


# ---------------------------------------------------------------------------------------------- /scores, /model_info

def test_scores_endpoint_equals_score_patient(asgi_client, patients):
    for patient in patients[20:26] + [VALID]:
        resp = asgi_client.post("/scores", json={"patient": patient})
        assert resp.status_code == 200
        body = resp.json()
        ScoresResponse.model_validate(body)
        assert set(body["scores"]) == {"fong", "game", "mcs", "tbs", "nordlinger"}
        for name, score in body["scores"].items():
            expected = score_patient(name, model_rows(patient)[0])
            assert_close({k: score[k] for k in expected}, jsonable(expected), path=name)


def test_vectorised_scores_equal_score_patient(patients):
    rows = [model_rows(p)[0] for p in patients] + [VALID, {"age_years": 50, "n_liver_metastases": 1,
                                                         "largest_metastasis_cm": 1, "kras_status": "unknown"}]
    names = ("fong", "game", "mcs", "tbs", "nordlinger", "konopke")
    for row, got in zip(rows, clinical_scores(rows, names), strict=True):
        for name in names:
            expected = score_patient(name, row)
            assert_close({k: got[name][k] for k in expected}, jsonable(expected), path=name)


def test_model_info(asgi_client):
    resp = asgi_client.get("/model_info")
    assert resp.status_code == 200
    info = resp.json()
    assert info["state"] == "ready"
    for ep in ("os", "rfs"):
        m = info["models"][ep]
        assert m["registered_name"] == f"crlm-sim-{ep}" and m["model_name"] == "coxnet"
        assert m["training_cohort"]["patients"] == 400 and m["training_cohort"]["events"] > 0
        assert set(m["calibration"]) == {"12", "36", "60"}
        assert m["model_card"].startswith("# Test model card")
        assert "metrics" in m and m["interval_method"] and m["explainer"]


def test_schema_document_and_openapi(asgi_client):
    doc = asgi_client.get("/schema/patient").json()
    names = [f["name"] for f in doc["fields"]]
    assert names == [f.name for f in input_fields()]
    age = next(f for f in doc["fields"] if f["name"] == "age_years")
    assert age["required"] and age["unit"] == "years" and age["minimum"] == 18 and age["maximum"] == 100
    assert age["used_by_models"] is True
    spec = asgi_client.get("/docs.json").json()
    for route, key in (("/predict", "patient"), ("/scores", "patient")):
        schema = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        props = schema["properties"][key]["properties"]
        assert set(props) == set(names)
        assert props["sex"]["enum"] == ["male", "female"] and props["sex"]["nullable"] is True


# ---------------------------------------------------------------------------------------------- health, readiness

def test_health_endpoints(asgi_client):
    assert asgi_client.get("/livez").status_code == 200
    assert asgi_client.get("/readyz").status_code == 200
    assert asgi_client.get("/ui").status_code == 200  # redirected to /ui/
    page = asgi_client.get("/ui/")
    assert "Not for clinical use without local validation" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_not_ready_until_models_load(asgi_client, tmp_path):
    """Readiness and the API follow the model store (swapped on the running app: a second ASGI app in one
    process would register BentoML's Prometheus metrics twice)."""
    import bentoml

    svc = bentoml.get_current_service()
    ready_store = svc.store
    config = ModelConfig("bundle", {"os": "crlm-sim-os", "rfs": "crlm-sim-rfs"}, tmp_path / "empty")
    try:
        svc.store = ModelStore(config)  # still loading
        assert asgi_client.get("/readyz").status_code == 503
        resp = asgi_client.post("/predict", json={"patient": VALID})
        assert resp.status_code == 503 and "still loading" in resp.json()["error"]
        svc.store.load_now()  # fails: no bundles there
        assert svc.store.state == "failed"
        assert asgi_client.get("/livez").status_code == 200
        assert asgi_client.get("/readyz").status_code == 503
        resp = asgi_client.post("/predict_batch", json={"patients": [VALID]})
        assert resp.status_code == 503 and "could not be loaded" in resp.json()["error"]
        assert asgi_client.post("/scores", json={"patient": VALID}).status_code == 200  # no model needed
        info = asgi_client.get("/model_info")
        assert info.status_code == 503 and info.json()["state"] == "failed"
    finally:
        svc.store = ready_store
    assert asgi_client.get("/readyz").status_code == 200


def test_model_store_readiness_is_honest():
    import threading

    gate = threading.Event()

    def slow_loader(entry, config, slot):
        gate.wait(10)
        raise FileNotFoundError(f"no bundle for {slot}")

    config = ModelConfig("bundle", {"os": "a", "rfs": "b"}, project_root() / "nowhere")
    store = ModelStore(config, loader=slow_loader).start()
    assert not store.ready and store.state == "loading"
    with pytest.raises(RequestError) as err:
        store.require_engine()
    assert err.value.status == 503 and "still loading" in err.value.body["error"]
    gate.set()
    assert store.wait(10) is False and store.state == "failed" and "no bundle for os" in store.error


def test_readiness_waits_for_every_worker(tmp_path):
    import subprocess
    import sys

    first = WorkerReadiness(2, tmp_path / "markers")
    assert not first.all_ready()
    first.mark_ready()  # this process
    assert not first.all_ready()  # one of two workers
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "markers" / done.stdout.strip()).touch()  # a worker that has exited does not count
    assert not first.all_ready()
    (tmp_path / "markers" / str(os.getppid())).touch()  # a live second worker
    assert first.all_ready()
    assert WorkerReadiness(1, tmp_path / "none").all_ready()  # one worker: its own store decides


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (8, 8), (None, 1)])
def test_default_workers_is_one_per_cpu(monkeypatch, cpus, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)  # a machine with that many CPUs (None: unknown)
    assert default_workers({}) == expected
    monkeypatch.delenv("CRLM_SERVE_WORKERS", raising=False)
    assert default_workers() == expected  # the process environment is read when none is given


def test_default_workers_setting_wins_and_is_validated(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert default_workers({"CRLM_SERVE_WORKERS": "3"}) == 3
    monkeypatch.setenv("CRLM_SERVE_WORKERS", "2")
    assert default_workers() == 2
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(SettingsError, match="CRLM_SERVE_WORKERS"):
            default_workers({"CRLM_SERVE_WORKERS": bad})


def test_model_config_from_env(tmp_path):
    cfg = ModelConfig.from_env({"CRLM_MODELS_DIR": str(tmp_path)})
    assert cfg.source == "bundle" and cfg.models_dir == tmp_path and cfg.names == {"os": None, "rfs": None}
    assert cfg.entries == ()  # every bundle of the directory; the default pair chosen from them
    cfg = ModelConfig.from_env({"MLFLOW_TRACKING_URI": "sqlite:///x.db", "CRLM_OS_MODEL": "m-os"})
    assert cfg.source == "registry" and cfg.names["os"] == "m-os" and cfg.alias == "champion"


# ---------------------------------------------------------------------------------------------- batching, privacy

def test_micro_batcher_merges_and_isolates_failures():
    calls = []

    def fn(items):
        calls.append(list(items))
        time.sleep(0.05)
        if "boom" in items:
            raise ValueError("boom")
        return [f"answer {x}" for x in items]

    batcher = MicroBatcher(fn, max_batch=8)

    async def run():
        return await asyncio.gather(*(batcher.submit(x) for x in ["a", "b", "boom", "c", "d"]),
                                    return_exceptions=True)

    results = asyncio.run(run())
    assert results[:2] == ["answer a", "answer b"] and results[3:] == ["answer c", "answer d"]
    assert isinstance(results[2], ValueError)
    assert max(len(c) for c in calls) > 1, "concurrent requests were merged"


def test_micro_batches_run_on_the_loop_and_take_the_requests_already_read():
    """The call runs on the event loop's own thread (no GIL turns with a models' thread), and a request whose
    handler reaches the batcher one loop step after the first (read in the same pass of the loop) joins the
    first call instead of starting a call of its own."""
    calls, threads = [], []

    def fn(items):
        calls.append(list(items))
        threads.append(threading.get_ident())
        return [f"answer {x}" for x in items]

    batcher = MicroBatcher(fn, max_batch=8)

    async def one_step_later(x):
        await asyncio.sleep(0)  # a handler one step behind the first
        return await batcher.submit(x)

    async def run():
        answers = await asyncio.gather(batcher.submit("a"), one_step_later("b"), one_step_later("c"))
        return answers, threading.get_ident()

    answers, loop_thread = asyncio.run(run())
    assert answers == ["answer a", "answer b", "answer c"]
    assert calls == [["a", "b", "c"]], calls
    assert threads == [loop_thread]

    # past capacity (the worker sheds: offload() is true) the call runs in a thread, the loop stays free
    shedding = MicroBatcher(fn, max_batch=8, offload=lambda: True)

    async def run_shedding():
        return await shedding.submit("d"), threading.get_ident()

    answer, loop_thread = asyncio.run(run_shedding())
    assert answer == "answer d" and threads[-1] != loop_thread



def test_concurrent_predictions_are_merged_and_equal(asgi_client, patients):
    from concurrent.futures import ThreadPoolExecutor

    sample = patients[30:38]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: asgi_client.post("/predict", json={"patient": p}).json(), sample))
    for patient, answer in zip(sample, answers, strict=True):
        assert_close(answer, asgi_client.post("/predict", json={"patient": patient}).json())


def test_no_patient_values_in_logs(asgi_client, caplog):
    secret = {**VALID, "patient_id": "PRIVATE-7731", "cea_ng_ml": 4321.987, "body_mass_index": 27.123}
    with caplog.at_level(logging.DEBUG):
        assert asgi_client.post("/predict", json={"patient": secret}).status_code == 200
        assert asgi_client.post("/predict", json={"patient": {**secret, "age_years": 1234.5}}).status_code == 422
        assert asgi_client.post("/predict", content=b'{"patient": {"cea_ng_ml": 4321.987',
                                headers={"content-type": "application/json"}).status_code == 400
        assert asgi_client.post("/predict_batch", json={"patients": [secret, {**secret, "sex": "x"}]}
                                ).status_code == 200
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for value in ("PRIVATE-7731", "4321.987", "27.123", "1234.5"):
        assert value not in text
    assert os.environ.get("BENTOML_DO_NOT_TRACK") == "True"


# ---------------------------------------------------------------------------------------------- MLflow registry

WRAPPER = '''
import mlflow
from mlflow.pyfunc import PythonModel


class PredictorModel(PythonModel):
    """As the training job registers it: the Predictor bundle as an artifact, exposed as ``.predictor``."""

    def load_context(self, context):
        from crlm.predictor import Predictor

        self.predictor = Predictor.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(PredictorModel())
'''


@pytest.mark.slow
def test_models_from_the_mlflow_registry_alias(models_dir, patients, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = tmp_path / "model_code.py"
    code.write_text(WRAPPER)
    experiment = mlflow.create_experiment("serving-test", artifact_location=str(tmp_path / "artifacts"))
    client = MlflowClient()
    for ep in ("os", "rfs"):
        name = f"crlm-test-{ep}"
        for _ in range(2 if ep == "os" else 1):  # os: version 2 is registered, version 1 keeps the alias
            with mlflow.start_run(experiment_id=experiment):
                info = mlflow.pyfunc.log_model(name="model", python_model=str(code), registered_model_name=name,
                                               artifacts={"bundle": str(models_dir / f"crlm-sim-{ep}")},
                                               pip_requirements=["crlm"])
            if str(info.registered_model_version) == "1" or ep == "rfs":
                client.set_registered_model_alias(name, "champion", info.registered_model_version)
        monkeypatch.setenv(f"CRLM_{ep.upper()}_MODEL", name)

    store = ModelStore().load_now()
    assert store.ready, store.error
    assert store.config.source == "registry"
    ref = store.models["os"].ref
    assert ref["version"] == "1" and ref["alias"] == "champion" and ref["source"] == "models:/crlm-test-os@champion"
    # the registry name it is served from (the registry identity is not part of the model's metadata document)
    assert ref["registered_name"] == "crlm-test-os"
    assert ref["training_cohort"]["patients"] == 400
    row = model_rows(patients[0])
    bundle = ModelStore(ModelConfig("bundle", {"os": "crlm-sim-os", "rfs": "crlm-sim-rfs"}, models_dir))
    expected = bundle.load_now().engine.answer(row)[0]
    got = store.engine.answer(row)[0]
    assert_close(jsonable(got["os"]), jsonable(expected["os"]))
    assert_close(jsonable(got["rfs"]), jsonable(expected["rfs"]))


def test_a_served_score_answers_complete_patients_and_refuses_incomplete_ones_with_422():
    from crlm.cohort.simulate import simulate_cohort
    from crlm.predictor_training import train_predictor
    from crlm.serving.engine import Engine, LoadedModel, model_card
    from crlm.serving.errors import RequestError

    cohort = simulate_cohort(300, seed=9)
    models = {ep: LoadedModel(train_predictor(cohort, ep, "score:fong", n_interval_models=5, seed=0,
                                              metadata={"champion_verdict": "no learned model beat the Fong CRS"}),
                              {"endpoint": ep}) for ep in ("os", "rfs")}
    engine = Engine(models)
    engine.warm_up()  # must not fail although the minimal example cannot be scored
    complete = {"primary_node_positive": True, "synchronous_metastases": True, "n_liver_metastases": 3,
                "largest_metastasis_cm": 6.0, "cea_ng_ml": 250.0, "age_years": 60.0}
    [answer] = engine.answer([complete])
    assert answer["os"]["horizons"][1]["lower"] <= answer["os"]["horizons"][1]["survival"]
    assert any("Fong CRS point" in c["sentence"] for c in answer["os"]["contributions"])
    with pytest.raises(RequestError) as err:
        engine.answer([{k: v for k, v in complete.items() if k != "cea_ng_ml"}])
    assert err.value.status == 422 and "cea_ng_ml" in err.value.body["errors"][0]["message"]
    info = model_card(models["os"])
    assert info["champion_decision"].startswith("no learned model beat") and "confidence interval" in info["interval"]
