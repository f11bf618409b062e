"""Fuzzing the API: no request, however malformed, gets a 5xx.

Schemathesis generates positive and negative requests from the service's own OpenAPI document (the patient
schema included) and sends them through the ASGI app; hypothesis adds arbitrary JSON values and raw bytes.
``make test`` runs about 200 generated requests; ``CRLM_FUZZ_EXAMPLES=1000`` runs 1,000 (plus the raw ones).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from crlm.serving.service import service_openapi

pytest_plugins = ["serving_fixtures"]


EXAMPLES = int(os.environ.get("CRLM_FUZZ_EXAMPLES", "200"))
# /metrics only answers under a real server (BentoML pitfall P13); tests/test_serve_http.py covers it.
# The served document names the loaded models and the curves' end (/docs.json); the schema is built at import,
# before they load: the serving fixtures' names, and an end every test model's curves pass (they reach 120).
CHOICES = {"os": ["crlm-sim-os"], "rfs": ["crlm-sim-rfs"], "event_free_max": 60.0}
SCHEMA = schemathesis.openapi.from_dict(service_openapi(choices=CHOICES)).exclude(path="/metrics")
# The deterministic coverage phase adds ~400 boundary requests per operation: only in the long run.
SCHEMA.config.phases.update(phases=["examples", "fuzzing"] + (["coverage"] if EXAMPLES >= 1000 else []))
POST_ROUTES = ("/predict", "/predict_batch", "/scores")
# Most of the budget goes to the three POST operations; the probes are trivial.
PER_OPERATION = max(10, math.ceil(EXAMPLES * 0.9 / len(POST_ROUTES)))
SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)


def send(client, kwargs: dict):
    """A schemathesis request (requests-style kwargs) through the starlette TestClient."""
    content = json.dumps(kwargs["json"]).encode() if "json" in kwargs else kwargs.get("data")
    url = kwargs["url"].removeprefix("http://testserver")
    headers = {k: v for k, v in kwargs.get("headers", {}).items() if k.lower() != "connection"}
    return client.request(kwargs["method"], url, content=content, headers=headers, params=kwargs.get("params"),
                          follow_redirects=False)


@SCHEMA.parametrize()
@settings(SETTINGS, max_examples=PER_OPERATION)
def test_generated_requests_never_get_a_server_error(case, asgi_client):
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    response = send(asgi_client, kwargs)
    assert response.status_code < 500, response.text[:500]
    checks = [not_a_server_error] + ([response_schema_conformance] if response.status_code == 200 else [])
    case.validate_response(response, checks=checks)


# A body the schema accepts is one the server answers: positive cases of the API routes get a 200.
POSITIVE = schemathesis.openapi.from_dict(service_openapi(choices=CHOICES)).include(path_regex="^/(predict|predict_batch|scores)$")
POSITIVE.config.generation.update(modes=[GenerationMode.POSITIVE])
POSITIVE.config.phases.update(phases=["examples", "fuzzing"])


@POSITIVE.parametrize()
@settings(SETTINGS, max_examples=max(5, EXAMPLES // 20))
def test_a_body_the_schema_accepts_is_answered(case, asgi_client):
    response = send(asgi_client, case.as_transport_kwargs(base_url="http://testserver"))
    assert response.status_code == 200, response.text[:500]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=25), children, max_size=5),
    max_leaves=20)
FIELD_NAMES = st.sampled_from(["age_years", "n_liver_metastases", "largest_metastasis_cm", "sex", "cea_ng_ml",
                               "kras_status", "primary_node_positive", "patient_id", "chemo_cycles", "unknown"])
NEAR_PATIENTS = st.dictionaries(FIELD_NAMES, JSON_VALUES | st.floats(-1e6, 1e6), max_size=8)


@given(route=st.sampled_from(POST_ROUTES), value=JSON_VALUES | NEAR_PATIENTS, wrap=st.booleans())
@settings(SETTINGS, max_examples=max(20, EXAMPLES // 4))
def test_arbitrary_json_never_gets_a_server_error(asgi_client, route, value, wrap):
    key = "patients" if route == "/predict_batch" else "patient"
    body = {key: [value] if key == "patients" else value} if wrap else value
    response = asgi_client.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text[:500]


@given(route=st.sampled_from(POST_ROUTES), raw=st.binary(max_size=200),
       ctype=st.sampled_from(["application/json", "text/plain", "multipart/form-data", "application/x-ndjson", ""]))
@settings(SETTINGS, max_examples=max(20, EXAMPLES // 10))
def test_arbitrary_bytes_never_get_a_server_error(asgi_client, route, raw, ctype):
    response = asgi_client.post(route, content=raw, headers={"content-type": ctype} if ctype else {})
    assert response.status_code < 500, response.text[:500]


SUMMARY_EXAMPLES = max(5, EXAMPLES // 40)  # per generation mode and route (30 requests by default)


def test_fuzz_summary(asgi_client):
    """A sample of its own (positive and negative generated bodies for every POST route), tallied by status
    class: none gets a 5xx, some positive ones reach the models (200), and the negative ones are refused (4xx).
    Self-contained: it does not depend on which other tests ran before it, or in which order."""
    statuses: Counter = Counter()
    operations = [SCHEMA[route]["POST"] for route in POST_ROUTES]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    cases = st.sampled_from(modes).flatmap(
        lambda mode: st.sampled_from(operations).flatmap(lambda op: op.as_strategy(mode).map(lambda c: (mode, c))))

    @given(item=cases)
    @settings(SETTINGS, max_examples=SUMMARY_EXAMPLES * len(modes) * len(POST_ROUTES))
    def sample(item):
        mode, case = item
        response = send(asgi_client, case.as_transport_kwargs(base_url="http://testserver"))
        statuses[(mode.value, case.path, response.status_code // 100 * 100)] += 1

    sample()
    by_class: Counter = Counter()
    for (_, _, status), n in statuses.items():
        by_class[status] += n
    print(f"\nfuzzed requests: {sum(by_class.values())}, by status class {dict(sorted(by_class.items()))}")
    print("\n".join(f"  {mode} {route} {status}: {n}" for (mode, route, status), n in sorted(statuses.items())))
    assert by_class[500] == 0
    assert statuses[("positive", "/predict", 200)] > 0, "some generated requests reached the models"
    refused = sum(n for (mode, _, status), n in statuses.items() if mode == "negative" and status == 400)
    assert refused > 0, "negative bodies are refused with a 4xx"
