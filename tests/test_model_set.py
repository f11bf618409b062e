"""Serving a set of models (issue 13): every bundle of the directory, GET /models, a request naming its models,
the default pair (a real-patient model before a simulated one), per-model required and extra fields, the
demonstration label, response scenarios and conditional survival through /predict.

The set (``serving_fixtures.build_model_set``): the serving tests' simulated coxnet pair and a "centre" pair
(ridge Cox, a non-simulated cohort description, trained without largest_metastasis_cm and the response fields,
with a centre's own field ``tmb_mut_mb``). It is swapped into the running app's store (one ASGI app per process)."""

from __future__ import annotations

import shutil

import pytest

from crlm.cohort_kind import DEMONSTRATION_LABEL
from crlm.serving.model_set import default_pair
from crlm.serving.settings import ModelConfig, SettingsError
from crlm.serving.store import ModelStore

pytest_plugins = ["serving_fixtures"]

PATIENT = {"age_years": 66, "n_liver_metastases": 2, "sex": "male", "primary_node_positive": True,
           "cea_ng_ml": 12.0}


@pytest.fixture(scope="module")
def set_dir(model_set_dir):
    return model_set_dir


@pytest.fixture(scope="module")
def client(asgi_client, set_dir):
    import bentoml

    svc = bentoml.get_current_service()
    before = svc.store
    svc.store = ModelStore(ModelConfig("bundle", {"os": None, "rfs": None}, set_dir)).load_now()
    assert svc.store.ready, svc.store.error
    try:
        yield asgi_client
    finally:
        svc.store = before


@pytest.fixture(scope="module")
def predictors(set_dir):
    from crlm.predictor import Predictor

    return {name: Predictor.load(set_dir / name) for name in ("crlm-sim-os", "crlm-sim-rfs", "centre-os",
                                                               "centre-rfs")}


def test_models_lists_every_bundle_and_the_real_pair_is_the_default(client):
    resp = client.get("/models")
    assert resp.status_code == 200
    doc = resp.json()
    by_name = {m["name"]: m for m in doc["models"]}
    assert set(by_name) == {"crlm-sim-os", "crlm-sim-rfs", "centre-os", "centre-rfs"}
    assert doc["defaults"] == {"os": "centre-os", "rfs": "centre-rfs"}
    for name, m in by_name.items():
        simulated = name.startswith("crlm-sim")
        assert m["label"] == (DEMONSTRATION_LABEL if simulated else None)
        assert m["training_cohort"]["kind"] == ("simulated" if simulated else "real")
        assert m["training_cohort"]["patients"] == (400 if simulated else 300) and m["training_cohort"]["events"] > 0
        assert m["default"] == (not simulated)
        assert m["endpoint"] == name.rsplit("-", 1)[1]
        assert m["fields"]["required_fields"] and m["metrics_note"]  # test bundles carry no benchmark metrics
    centre = by_name["centre-os"]["fields"]
    assert "largest_metastasis_cm" not in centre["used_fields"] + centre["required_fields"]
    assert "tmb_mut_mb" in centre["used_fields"] and centre["extra"][0]["name"] == "tmb_mut_mb"
    assert "largest_metastasis_cm" in by_name["crlm-sim-os"]["fields"]["required_fields"]
    assert by_name["crlm-sim-os"]["scenarios_available"] and not by_name["centre-os"]["scenarios_available"]


def test_a_model_trained_without_a_field_does_not_require_it(client, predictors):
    resp = client.post("/predict", json={"patient": {**PATIENT, "tmb_mut_mb": 7.5}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {ep: body["models"][ep]["name"] for ep in ("os", "rfs")} == {"os": "centre-os", "rfs": "centre-rfs"}
    assert body["notices"] == []
    record = {**PATIENT, "tmb_mut_mb": 7.5}
    expected = predictors["centre-os"].predict([record])[0]
    assert body["os"]["risk_score"] == pytest.approx(expected["risk_score"])
    assert [h["survival"] for h in body["os"]["horizons"]] == pytest.approx(
        [h["survival"] for h in expected["horizons"]])
    without_tmb = client.post("/predict", json={"patient": PATIENT}).json()
    assert without_tmb["os"]["risk_score"] != pytest.approx(body["os"]["risk_score"])  # the extra field is used
    assert any("tmb_mut_mb is missing" in w for w in without_tmb["warnings"])


def test_the_simulated_pair_is_named_labelled_and_asks_for_its_own_fields(client, predictors):
    models = {"os": "crlm-sim-os", "rfs": "crlm-sim-rfs"}
    resp = client.post("/predict", json={"patient": PATIENT, "models": models})
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["largest_metastasis_cm"]
    patient = {**PATIENT, "largest_metastasis_cm": 3.0}
    body = client.post("/predict", json={"patient": patient, "models": models}).json()
    assert body["models"]["os"]["label"] == DEMONSTRATION_LABEL
    assert body["notices"] == [f"OS model crlm-sim-os: {DEMONSTRATION_LABEL}",
                               f"RFS model crlm-sim-rfs: {DEMONSTRATION_LABEL}"]
    assert body["os"]["risk_score"] == pytest.approx(predictors["crlm-sim-os"].predict([patient])[0]["risk_score"])
    mixed = client.post("/predict", json={"patient": patient, "models": {"rfs": "crlm-sim-rfs"}}).json()
    assert mixed["models"]["os"]["name"] == "centre-os" and mixed["models"]["rfs"]["name"] == "crlm-sim-rfs"
    assert mixed["notices"] == [f"RFS model crlm-sim-rfs: {DEMONSTRATION_LABEL}"]


@pytest.mark.parametrize("models, field", [
    ({"os": "nope"}, "models.os"), ({"os": "crlm-sim-rfs"}, "models.os"), ({"liver": "x"}, "models"),
    ("centre-os", "models"), ({"rfs": 3}, "models.rfs")])
def test_an_unknown_model_is_a_422_naming_the_key(client, models, field):
    resp = client.post("/predict", json={"patient": PATIENT, "models": models})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == field
    assert client.post("/predict_batch", json={"patients": [PATIENT], "models": models}).status_code == 422


@pytest.mark.parametrize("value", [-1, 1000, "12", True])
def test_extra_field_and_event_free_months_are_validated(client, value):
    resp = client.post("/predict", json={"patient": {**PATIENT, "tmb_mut_mb": value}})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "tmb_mut_mb"
    assert "number >= 0 and <= 500" in resp.json()["errors"][0]["rule"]
    resp = client.post("/predict", json={"patient": PATIENT, "event_free_at_months": value})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "event_free_at_months"


def test_conditional_survival_equals_the_predictor(client, predictors):
    body = client.post("/predict", json={"patient": PATIENT, "event_free_at_months": 24}).json()
    for ep in ("os", "rfs"):
        expected = predictors[f"centre-{ep}"].conditional([PATIENT], 24)[0]
        got = body["conditional"][ep]
        assert got["available"] and got["event_free_at_months"] == 24
        assert got["condition"] == expected["condition"]
        assert got["curve"]["survival"] == pytest.approx(expected["curve"]["survival"])
        for g, e in zip(got["horizons"], expected["horizons"], strict=True):
            assert g["available"] == e["available"]
            if e["available"]:
                assert g["lower"] <= g["survival"] <= g["upper"]
                assert (g["survival"], g["lower"], g["upper"]) == pytest.approx((e["survival"], e["lower"],
                                                                                 e["upper"]))
    assert "conditional" not in client.post("/predict", json={"patient": PATIENT}).json()
    batch = client.post("/predict_batch", json={"patients": [PATIENT, PATIENT], "event_free_at_months": 24}).json()
    assert batch["results"][1]["conditional"]["os"]["curve"] == body["conditional"]["os"]["curve"]


def test_scenarios_for_a_model_with_response_fields_and_the_reason_without(client, predictors):
    patient = {**PATIENT, "largest_metastasis_cm": 3.0, "neoadjuvant_chemotherapy": True, "recist_response": "PR"}
    body = client.post("/predict", json={"patient": patient, "scenarios": True,
                                         "models": {"os": "crlm-sim-os", "rfs": "centre-rfs"}}).json()
    sim = body["scenarios"]["os"]
    expected = predictors["crlm-sim-os"].scenarios(patient)
    assert sim["available"] and "not the effect of a treatment" in sim["label"]
    assert [s["key"] for s in sim["scenarios"]] == [s["key"] for s in expected["scenarios"]]
    assert [s["key"] for s in sim["scenarios"]] == ["complete_response", "partial_response", "stable_disease",
                                                    "progression", "progression_before_surgery"]
    for got, exp in zip(sim["scenarios"], expected["scenarios"], strict=True):
        if exp["available"]:
            assert [h["survival"] for h in got["horizons"]] == pytest.approx([h["survival"] for h in exp["horizons"]])
            assert all(h["lower"] <= h["survival"] <= h["upper"] for h in got["horizons"])
    centre = body["scenarios"]["rfs"]
    assert centre["available"] is False and "does not use the response" in centre["reason"]
    partial = next(s for s in sim["scenarios"] if s["key"] == "partial_response")
    assert partial["horizons"][0]["survival"] == pytest.approx(body["os"]["horizons"][0]["survival"], abs=0.05)
    assert client.post("/predict", json={"patient": PATIENT, "scenarios": "yes"}).status_code == 422


def test_schema_and_openapi_follow_the_served_models(client):
    doc = client.get("/schema/patient", params={"os": "centre-os", "rfs": "centre-rfs"}).json()
    fields = {f["name"]: f for f in doc["fields"]}
    assert fields["largest_metastasis_cm"]["required"] is False and fields["age_years"]["required"] is True
    assert fields["tmb_mut_mb"]["extra"] and fields["tmb_mut_mb"]["unit"] == "mut/Mb"
    assert doc["models"] == {"os": "centre-os", "rfs": "centre-rfs"}
    sim = {f["name"]: f for f in client.get("/schema/patient", params={"os": "crlm-sim-os",
                                                                        "rfs": "crlm-sim-rfs"}).json()["fields"]}
    assert sim["largest_metastasis_cm"]["required"] is True and "tmb_mut_mb" not in sim
    assert client.get("/schema/patient", params={"os": "nope"}).status_code == 422
    spec = client.get("/docs.json").json()
    assert "/models" in spec["paths"] and "/model_info" in spec["paths"] and "/schema/patient" in spec["paths"]
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert body["models"]["properties"]["os"]["enum"] == ["centre-os", "crlm-sim-os"]
    assert {"scenarios", "event_free_at_months"} <= set(body)


def test_default_pair_and_settings():
    config = ModelConfig.from_env({"CRLM_MODELS": "a, models:/b@champion ,/x/c", "CRLM_OS_MODEL": "a"})
    assert config.entries == ("a", "models:/b@champion", "/x/c") and config.names == {"os": "a", "rfs": None}
    with pytest.raises(SettingsError, match="CRLM_MODELS"):
        ModelConfig.from_env({"CRLM_MODELS": " , "})

    class Model:
        def __init__(self, endpoint, kind, patients):
            self.ref = {"endpoint": endpoint, "training_cohort": {"kind": kind, "patients": patients}}

    models = {"sim-os": Model("os", "simulated", 5000), "small-os": Model("os", "real", 150),
              "tcia-os": Model("os", "real", 197), "sim-rfs": Model("rfs", "simulated", 5000)}
    config = ModelConfig("bundle", {"os": None, "rfs": None}, None)
    assert default_pair(models, config) == {"os": "tcia-os", "rfs": "sim-rfs"}
    assert default_pair(models, ModelConfig("bundle", {"os": "sim-os", "rfs": None}, None))["os"] == "sim-os"
    with pytest.raises(ValueError, match="no served model predicts rfs"):
        default_pair({"tcia-os": models["tcia-os"]}, config)


def test_a_broken_discovered_bundle_is_left_out_with_its_reason(set_dir, tmp_path):
    target = tmp_path / "models"
    shutil.copytree(set_dir, target)
    (target / "centre-rfs" / "predictor.joblib").write_bytes(b"garbage")
    store = ModelStore(ModelConfig("bundle", {"os": None, "rfs": None}, target)).load_now()
    assert store.ready and store.model_set.defaults == {"os": "centre-os", "rfs": "crlm-sim-rfs"}
    assert "truncated or corrupted" in store.model_set.refused["centre-rfs"]
    named = ModelStore(ModelConfig("bundle", {"os": None, "rfs": "centre-rfs"}, target)).load_now()
    assert named.state == "failed" and "truncated or corrupted" in named.error  # named by the operator: fatal


def test_model_info_describes_every_served_model_and_the_pair_asked_for(client):
    info = client.get("/model_info").json()
    assert info["state"] == "ready" and info["defaults"] == {"os": "centre-os", "rfs": "centre-rfs"}
    listed = {m["name"] for m in client.get("/models").json()["models"]}
    assert set(info["served"]) == listed  # every served model, not only the default pair
    for name, card in info["served"].items():
        assert card["name"] == name and card["metadata"]["endpoint"] == card["endpoint"]
        assert card["interval_method"] and card["explainer"]
    assert {ep: m["name"] for ep, m in info["models"].items()} == info["defaults"]
    pair = client.get("/model_info", params={"os": "crlm-sim-os"}).json()
    assert pair["models"]["os"]["name"] == "crlm-sim-os" and pair["models"]["rfs"]["name"] == "centre-rfs"
    refused = client.get("/model_info", params={"rfs": "crlm-sim-os"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "models.rfs"
