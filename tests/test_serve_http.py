"""The real server: one ``bentoml serve`` subprocess on 127.0.0.1 (a free port), reached over HTTP with httpx."""

from __future__ import annotations

import re

import httpx
import pytest

pytest_plugins = ["serving_fixtures"]

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
