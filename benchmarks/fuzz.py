"""Fuzzing a real server: schemathesis over the complete OpenAPI document, unique inputs, then the logs.

Starts ``bentoml serve`` on 127.0.0.1 (``--workers``, default 2; the bundles in ``models/`` or small coxnet
models trained into a temporary directory) and sends, for every operation of ``/docs.json``, positive and
negative requests generated from the document (hypothesis, derandomised by ``--seed``), keeping only inputs not
sent before, until ``--requests`` in total. Prints the distinct requests, the statuses by route and class,
and what the server's log holds: every answer must be below 500, a positive request to an API route must be
answered (the schema and the server agree), and the log must hold no ERROR line, no traceback, no pydantic
``input_value`` and none of the patient_id strings sent.

Usage: ``.venv/bin/python benchmarks/fuzz.py [--requests 5000] [--workers 2] [--seed 0]``. Exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from serving import bundles_or_small, server

API_ROUTES = ("/predict", "/predict_batch", "/scores")


def patient_ids(body) -> list[str]:
    """The patient_id strings of a request body (any nesting the generator produced)."""
    out = []
    if isinstance(body, dict):
        for k, v in body.items():
            if k == "patient_id" and isinstance(v, str):
                out.append(v)
            out.extend(patient_ids(v))
    elif isinstance(body, list):
        for v in body:
            out.extend(patient_ids(v))
    return out


def run(url: str, log_path: Path, total: int, seed: int) -> int:
    import httpx
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    spec = httpx.get(f"{url}/docs.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec).exclude(path="/metrics")
    operations = [result.ok() for result in schema.get_all_operations()]
    # the routes without inputs have one request each; the rest of the budget goes to the API routes
    others = [op for op in operations if op.path not in API_ROUTES]
    per_operation = {op.path: 2 if op.path not in API_ROUTES else -(-(total - len(others)) // len(API_ROUTES))
                     for op in operations}
    seen: set[str] = set()
    statuses: Counter = Counter()
    failures: list[str] = []
    sent_ids: set[str] = set()
    client = httpx.Client(base_url=url, timeout=120, follow_redirects=False)

    def fuzz(op, mode, quota: int) -> None:
        sent = 0

        @hypothesis_seed(seed)
        @settings(max_examples=quota * 3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def send(case) -> None:
            nonlocal sent
            if sent >= quota:
                return
            kwargs = case.as_transport_kwargs(base_url=url)
            content = json.dumps(kwargs["json"]).encode() if "json" in kwargs else kwargs.get("data")
            key = hashlib.sha256(repr((case.method, case.path, case.query, case.headers, content)).encode()
                                 ).hexdigest()
            if key in seen:
                return
            seen.add(key)
            sent += 1
            headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "connection"}
            try:
                resp = client.request(case.method, kwargs["url"].removeprefix(url), content=content,
                                      headers=headers, params=kwargs.get("params"))
            except httpx.HTTPError as err:
                failures.append(f"{case.method} {case.path}: {type(err).__name__}")
                return
            statuses[(case.path, mode.value, resp.status_code // 100 * 100)] += 1
            if "json" in kwargs:
                sent_ids.update(s for s in patient_ids(kwargs["json"]) if len(s) >= 6)
            if resp.status_code >= 500:
                failures.append(f"{case.method} {case.path} {mode.value}: {resp.status_code} {resp.text[:200]}")
            if mode is GenerationMode.POSITIVE and case.path in API_ROUTES and resp.status_code != 200:
                failures.append(f"{case.path}: a body the schema accepts got {resp.status_code} {resp.text[:300]}")

        with contextlib.suppress(Unsatisfiable):  # no negative request exists for an operation without inputs
            send()

    for op in operations:
        budget = int(per_operation[op.path])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(op, mode, max(1, budget // 2))
    client.close()

    by_class = Counter()
    for (_, _, status), n in statuses.items():
        by_class[status] += n
    print(f"distinct requests: {len(seen)}; by status class {dict(sorted(by_class.items()))}")
    for (path, mode, status), n in sorted(statuses.items()):
        print(f"  {path:<18}{mode:<10}{status}: {n}")
    log = log_path.read_text(errors="replace")
    leaks = {"ERROR lines": sum(" ERROR " in line or "[ERROR]" in line for line in log.splitlines()),
             "tracebacks": log.count("Traceback"), "input_value": log.count("input_value"),
             "patient_ids sent, found in the log": sum(1 for s in sent_ids if s in log)}
    print(f"server log: {len(log.splitlines())} lines; " + "; ".join(f"{k} {v}" for k, v in leaks.items())
          + f" (of {len(sent_ids)} distinct patient_id strings of 6+ characters sent)")
    for failure in failures[:20]:
        print("FAIL", failure)
    return 1 if failures or any(leaks.values()) else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    models_dir, trained = bundles_or_small(args.models_dir)
    with tempfile.TemporaryDirectory(prefix="crlm-fuzz-") as logs:
        log_path = Path(logs) / "server.log"
        with server(models_dir, args.workers, log_path=log_path) as (url, _):
            code = run(url, log_path, args.requests, args.seed)
    if trained is not None:
        trained.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
