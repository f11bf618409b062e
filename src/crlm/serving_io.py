"""What the online API does, without BentoML: request validation, the answer, model loading, guards.

``serving/service.py`` is a thin BentoML shell over this module, so everything here is testable in-process:
- request/response models generated from ``crlm.schema`` (the patient model refuses unknown fields, wrong
  types and out-of-range values; every error names the field and the schema's rule);
- ``Engine``: the OS and RFS Predictors plus the clinical scores -> one answer per patient;
- ``ModelStore``: loads the Predictors (MLflow registry alias, or the exported bundles) in the background,
  so readiness is honest;
- ``MicroBatcher``: merges concurrent single-patient requests into one Predictor call;
- ``GuardMiddleware``: API key, body size, content type and JSON well-formedness, before BentoML parses a
  byte (BentoML logs the pydantic error of a body it cannot parse, input values included: it must never see
  one, so nothing of a patient reaches the logs).
Request bodies are never logged here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crlm import schema
from crlm.paths import project_root

logger = logging.getLogger("crlm.serving")

ENDPOINTS = ("os", "rfs")
SERVED_SCORES = ("fong", "game", "mcs", "tbs", "nordlinger")
MAX_BATCH = 1000
# 1,000 complete patients are about 1.1 MB of compact JSON (1.3 MB indented); 4 MiB leaves ample room.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_ALIAS = "champion"
DISCLAIMER = ("Research prototype: not for clinical use without local validation. Predictions are associations "
              "learned from the training cohort, not treatment effects.")
# Top-level keys of each JSON API body (anything else is refused with the key's name).
BODY_KEYS = {"/predict": ("patient",), "/predict_batch": ("patients",), "/scores": ("patient",)}
# Paths reachable without the API key: probes, metrics, API documentation and the calculator's static files
# (the page holds no data; its calls to the API carry the key).
OPEN_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json",
                        "/schema/patient", "/ui"})
OPEN_PREFIXES = ("/ui/", "/static_content/")


# ---------------------------------------------------------------------------------------------- errors

class RequestError(Exception):
    """A refused request: HTTP status and a JSON body ``{"error": ..., "errors": [{field, rule, message}]}``."""

    def __init__(self, status: int, error: str, errors: list[dict] | None = None):
        super().__init__(error)
        self.status = status
        self.body = {"error": error, "errors": errors or []}

    def response(self):
        from starlette.responses import JSONResponse

        return JSONResponse(self.body, status_code=self.status)


def problem(field_name: str, rule: str, message: str | None = None) -> dict:
    return {"field": field_name, "rule": rule, "message": message or rule}


# ---------------------------------------------------------------------------------------------- schema

@functools.cache
def patient_model() -> type[BaseModel]:
    return schema.patient_model()


def form_fields() -> list[schema.Field]:
    """The fields a client may send (the schema's input fields)."""
    return schema.input_fields()


def _openapi_property(prop: dict) -> dict:
    """pydantic's JSON schema of one field, rewritten for OpenAPI 3.0 (``nullable`` instead of a null type)."""
    prop = dict(prop)
    options = prop.pop("anyOf", None)
    if options:
        concrete = [o for o in options if o.get("type") != "null"]
        prop.update(concrete[0] if len(concrete) == 1 else {"anyOf": concrete})
        if len(concrete) < len(options):
            prop["nullable"] = True
    if "const" in prop:  # a one-category Literal
        prop["enum"] = [prop.pop("const")]
    prop.pop("default", None)
    return prop


@functools.cache
def patient_openapi_schema() -> dict:
    """The patient object as OpenAPI 3.0 documents it (generated from the pydantic model of the schema)."""
    js = patient_model().model_json_schema()
    props = {name: _openapi_property(p) for name, p in js["properties"].items()}
    return {"title": "Patient", "type": "object", "properties": props, "required": js.get("required", []),
            "additionalProperties": False,
            "description": "One patient's fields (crlm.schema); absent or null = unknown. "
                           "GET /schema/patient lists units, ranges and categories."}


def field_spec(f: schema.Field, used_by_models: set[str] | None = None) -> dict:
    """One field as the web form and API clients need it."""
    score_inputs = _score_inputs()
    return {
        "name": f.name, "label": f.label, "kind": f.kind, "unit": f.unit, "minimum": f.minimum,
        "maximum": f.maximum, "step": 1 if f.kind == "int" else None, "categories": list(f.categories or []),
        "required": f.required_for_prediction, "block": f.block, "timing": f.timing,
        "description": f.description, "rule": f.rule, "derived_from": list(f.derived_from),
        "used_by_models": None if used_by_models is None else f.name in used_by_models,
        "used_by_scores": f.name in score_inputs,
    }


def schema_document(used_by_models: set[str] | None = None) -> dict:
    """``GET /schema/patient``: the catalogue's input fields and the JSON schema of the request's patient."""
    return {
        "fields": [field_spec(f, used_by_models) for f in form_fields()],
        "blocks": ["clinical", "genomic", "response", "operative", "score", "id"],
        "json_schema": patient_model().model_json_schema(),
        "max_batch": MAX_BATCH,
        "disclaimer": DISCLAIMER,
    }


# ---------------------------------------------------------------------------------------------- validation

def _rule_for(field_name: str, error_type: str) -> str:
    f = schema.FIELDS_BY_NAME.get(field_name)
    if error_type == "extra_forbidden" or f is None:
        return "not a patient field (GET /schema/patient lists the fields)"
    if error_type == "missing":
        return f"required ({f.rule})"
    if f.block == "id":
        return "text of at most 64 characters"
    return f.rule


def validate_patient(obj: Any) -> tuple[dict | None, list[dict]]:
    """(clean record without nulls, []) for a valid patient; (None, problems) otherwise. No values echoed."""
    if not isinstance(obj, dict):
        return None, [problem("patient", "a JSON object of patient fields (GET /schema/patient)",
                              f"expected an object, got {_json_type(obj)}")]
    try:
        model = patient_model().model_validate(obj)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False, include_input=False, include_context=False):
            name = str(e["loc"][0]) if e["loc"] else "patient"
            problems.append(problem(name, _rule_for(name, e["type"]), e["msg"]))
        return None, problems
    return model.model_dump(exclude_none=True), []


def _json_type(obj: Any) -> str:
    if obj is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(obj), type(obj).__name__)


def require_patient(obj: Any) -> dict:
    """The clean patient, or a 422 naming the fields and their rules."""
    if obj is None:
        raise RequestError(422, "the body must be {\"patient\": {...}}",
                           [problem("patient", "required: a JSON object of patient fields")])
    clean, problems = validate_patient(obj)
    if clean is None:
        raise RequestError(422, "invalid patient", problems)
    return clean


def require_patient_list(obj: Any) -> list:
    if obj is None:
        raise RequestError(422, "the body must be {\"patients\": [{...}, ...]}",
                           [problem("patients", f"required: a list of 1 to {MAX_BATCH} patient objects")])
    if not isinstance(obj, list):
        raise RequestError(422, "patients must be a list",
                           [problem("patients", f"a list of 1 to {MAX_BATCH} patient objects",
                                    f"expected an array, got {_json_type(obj)}")])
    if not 1 <= len(obj) <= MAX_BATCH:
        raise RequestError(413 if len(obj) > MAX_BATCH else 422, f"{len(obj)} patients in one request",
                           [problem("patients", f"a list of 1 to {MAX_BATCH} patient objects",
                                    f"got {len(obj)} patients")])
    return obj


# ---------------------------------------------------------------------------------------------- scores

@functools.cache
def _score_inputs() -> frozenset[str]:
    from crlm.scores import SCORES

    return frozenset(f for name in SERVED_SCORES for f in SCORES[name].fields)


def clinical_scores(patients, names: Sequence[str] = SERVED_SCORES) -> list[dict[str, dict]]:
    """The served scores of every patient (records or ``CanonicalColumns``; ``crlm.scores.score_patients``)."""
    from crlm.scores import score_patients

    return score_patients(patients, names)


# ---------------------------------------------------------------------------------------------- models

@dataclass
class LoadedModel:
    predictor: Any  # crlm.predictor.Predictor
    ref: dict  # which model answers: registered name, version, alias, source, training cohort


def model_ref(endpoint: str, predictor, *, registered_name: str, version: str | None, alias: str | None,
              source: str) -> dict:
    meta = dict(getattr(predictor, "metadata", {}) or {})
    return {
        "endpoint": endpoint,
        "registered_name": meta.get("registered_name") or registered_name,
        "version": None if version is None else str(version),
        "alias": alias,
        "source": source,
        "model_name": meta.get("model_name"),
        "created_at": meta.get("created_at"),
        "training_cohort": {
            "name": meta.get("cohort"), "source": meta.get("cohort_source"), "patients": meta.get("patients"),
            "events": meta.get("events"), "licence": meta.get("licence"), "citation": meta.get("citation"),
        },
    }


@dataclass(frozen=True)
class ModelConfig:
    """Where the Predictors come from (read from the environment by ``from_env``)."""

    source: str  # "registry" or "bundle"
    names: dict[str, str]  # endpoint -> registered model name (also the bundle directory's name)
    models_dir: Path
    alias: str = DEFAULT_ALIAS

    @classmethod
    def from_env(cls, env: dict | None = None) -> ModelConfig:
        env = os.environ if env is None else env
        names = {"os": env.get("CRLM_OS_MODEL", "crlm-sim-os"), "rfs": env.get("CRLM_RFS_MODEL", "crlm-sim-rfs")}
        models_dir = Path(env.get("CRLM_MODELS_DIR") or project_root() / "models")
        source = env.get("CRLM_MODEL_SOURCE", "auto")
        if source == "auto":
            source = "registry" if env.get("MLFLOW_TRACKING_URI") else "bundle"
        if source not in ("registry", "bundle"):
            raise ValueError(f"CRLM_MODEL_SOURCE must be auto, registry or bundle, not {source!r}")
        return cls(source, names, models_dir, env.get("CRLM_MODEL_ALIAS", DEFAULT_ALIAS))


def load_model(endpoint: str, config: ModelConfig) -> LoadedModel:
    name = config.names[endpoint]
    if config.source == "registry":
        import mlflow
        from mlflow import MlflowClient

        uri = f"models:/{name}@{config.alias}"
        version = MlflowClient().get_model_version_by_alias(name, config.alias).version
        predictor = mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor
        return LoadedModel(predictor, model_ref(endpoint, predictor, registered_name=name, version=version,
                                                alias=config.alias, source=uri))
    from crlm.predictor import Predictor

    path = config.models_dir / name
    predictor = Predictor.load(path)
    meta = predictor.metadata or {}
    card = path / "model_card.md"
    if not meta.get("model_card") and card.exists():  # the exported bundle may keep the card beside it
        predictor.metadata = {**meta, "model_card": card.read_text()}
    # A bundle exported by a training job records the registry version and alias it was registered under.
    return LoadedModel(predictor, model_ref(endpoint, predictor, registered_name=name, version=meta.get("version"),
                                            alias=meta.get("alias"), source=f"bundle {path}"))


def default_workers() -> int:
    """Server worker processes: ``CRLM_SERVE_WORKERS``, else one per CPU (each process answers with its own
    interpreter; one process is bound to one core by Python's global interpreter lock)."""
    value = os.environ.get("CRLM_SERVE_WORKERS", "")
    return max(1, int(value)) if value.strip().isdigit() else max(1, os.cpu_count() or 1)


class WorkerReadiness:
    """Readiness across the service's worker processes. Each worker loads its own models; a worker whose
    models are loaded leaves a marker (its pid) in a directory named after the server process, and /readyz
    is true only when every worker has one, so a client told "ready" by one worker never meets another that
    is still loading."""

    def __init__(self, workers: int, directory: Path | None = None):
        import tempfile

        self.workers = workers
        self.directory = directory or Path(tempfile.gettempdir()) / f"crlm-ready-{os.getppid()}"

    def mark_ready(self) -> None:
        if self.workers > 1:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / str(os.getpid())).touch()

    def all_ready(self) -> bool:
        if self.workers <= 1:
            return True
        markers = self.directory.glob("*") if self.directory.is_dir() else []
        return sum(1 for m in markers if m.name.isdigit() and _alive(int(m.name))) >= self.workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


class ModelStore:
    """The OS and RFS models, loaded once in a background thread; ``ready`` only when both are."""

    def __init__(self, config: ModelConfig | None = None,
                 loader: Callable[[str, ModelConfig], LoadedModel] = load_model,
                 on_ready: Callable[[], None] | None = None):
        self.config = config
        self.loader = loader
        self.on_ready = on_ready
        self.models: dict[str, LoadedModel] = {}
        self.state = "loading"
        self.error: str | None = None
        self.engine: Engine | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ModelStore:
        self._thread = threading.Thread(target=self._load, name="crlm-model-loader", daemon=True)
        self._thread.start()
        return self

    def load_now(self) -> ModelStore:
        self._load()
        return self

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            config = self.config or ModelConfig.from_env()
            self.config = config
            models = {ep: self.loader(ep, config) for ep in ENDPOINTS}
            engine = Engine(models)
            engine.warm_up()
            # Everything loaded so far lives as long as the process: move it out of the cyclic garbage
            # collector's generations, so full collections stop scanning millions of model and library
            # objects (they stalled requests for ~100 ms every few hundred requests).
            gc.collect()
            gc.freeze()
            self.models, self.engine, self.state = models, engine, "ready"
            if self.on_ready is not None:
                self.on_ready()
            logger.info("models ready in %.1f s: %s", time.perf_counter() - started,
                        ", ".join(f"{m.ref['registered_name']} ({m.ref['source']})" for m in models.values()))
        except Exception as err:  # readiness stays false and the reason is reported by /model_info
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
            logger.error("model loading failed: %s", self.error)
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def wait(self, timeout: float | None = None) -> bool:
        self._done.wait(timeout)
        return self.ready

    def require_engine(self) -> Engine:
        if self.engine is None:
            if self.state == "failed":
                raise RequestError(503, f"the models could not be loaded ({self.error})")
            raise RequestError(503, "the models are still loading; retry shortly (GET /readyz)")
        return self.engine


# ---------------------------------------------------------------------------------------------- the answer

class Engine:
    """Both endpoints' Predictors and the clinical scores: validated patients in, answers out."""

    def __init__(self, models: dict[str, LoadedModel]):
        missing = [ep for ep in ENDPOINTS if ep not in models]
        if missing:
            raise ValueError(f"missing model(s) for {missing}")
        self.models = models
        self.fields_used = set().union(*(set(getattr(m.predictor, "fields_used", [])) for m in models.values()))

    def warm_up(self) -> None:
        """One prediction at load time, so the first request does not pay for lazy imports and caches."""
        example = {f.name: (f.minimum + f.maximum) / 2 for f in form_fields() if f.required_for_prediction}
        example["n_liver_metastases"] = 2
        with contextlib.suppress(RequestError):  # a served score needs factors the minimal example lacks
            self.answer([example])

    def answer(self, patients: Sequence[dict]) -> list[dict]:
        """One answer per clean patient record (``validate_patient``): OS, RFS, scores, warnings, models."""
        if not patients:
            return []
        from crlm.cohort.base import canonical_columns

        # canonicalised once, for both endpoints and the scores
        rows = canonical_columns([{k: v for k, v in p.items() if k != "patient_id"} for p in patients])
        try:
            per_endpoint = {ep: m.predictor.predict(rows) for ep, m in self.models.items()}
        except ValueError as err:  # a served clinical score whose factors the patient lacks: the client's to fix
            raise RequestError(422, "the served model cannot rate this patient",
                               [problem("patient", "every factor of the served score is required", str(err))]
                               ) from None
        scores = clinical_scores(rows)
        refs = {ep: m.ref for ep, m in self.models.items()}
        answers = []
        for i, patient in enumerate(patients):
            own = {ep: per_endpoint[ep][i] for ep in ENDPOINTS}
            answers.append({
                "patient_id": patient.get("patient_id"),
                **own,
                "scores": scores[i],
                "warnings": self._warnings(patient, own),
                "models": refs,
                "disclaimer": DISCLAIMER,
            })
        return answers

    def _warnings(self, patient: dict, own: dict[str, dict]) -> list[str]:
        out = list(dict.fromkeys(w for ep in ENDPOINTS for w in own[ep].get("warnings", [])))
        for name in patient:
            if name == "patient_id" or name in self.fields_used:
                continue
            where = "it enters only the clinical scores" if name in _score_inputs() else "it was ignored"
            out.append(f"{name} is not used by the OS/RFS models ({where})")
        return out

    def model_info(self) -> dict:
        return {"models": {ep: model_card(m) for ep, m in self.models.items()}, "disclaimer": DISCLAIMER}


def model_card(model: LoadedModel) -> dict:
    meta = dict(getattr(model.predictor, "metadata", {}) or {})
    metrics = next((meta[k] for k in ("metrics", "headline_metrics", "performance") if k in meta), None)
    return {
        **model.ref,
        "endpoint_label": getattr(model.predictor, "endpoint_label", None),
        "horizons_months": meta.get("horizons"),
        "headline": meta.get("headline"),  # optimism-corrected performance of this (shipped) model
        "champion_decision": meta.get("champion_verdict"),
        "metrics": metrics,
        "metrics_kind": "nested cross-validation (out-of-fold): the comparison between models",
        "calibration": meta.get("calibration"),
        "recalibration": meta.get("recalibration"),
        "interval": meta.get("interval"),
        "interval_method": meta.get("interval_method"),
        "explainer": meta.get("explainer"),
        "risk_groups": meta.get("risk_groups"),
        "feature_blocks": meta.get("feature_blocks"),
        "postoperative": meta.get("postoperative"),
        "fields_used": meta.get("fields_used"),
        "model_card": meta.get("model_card"),
        "metadata": meta,
    }


def unavailable_info(store: ModelStore) -> dict:
    return {"models": {}, "state": store.state, "error": store.error, "disclaimer": DISCLAIMER}


# ---------------------------------------------------------------------------------------------- batch

def batch_answer(engine: Engine, raw_patients: list) -> dict:
    """``/predict_batch``: each patient is validated alone; the valid ones share one Predictor call, the
    invalid ones get their own error entry (index, field, rule) without failing the others."""
    results: list[dict | None] = [None] * len(raw_patients)
    valid, where = [], []
    for i, raw in enumerate(raw_patients):
        clean, problems = validate_patient(raw)
        if clean is None:
            pid = raw.get("patient_id") if isinstance(raw, dict) and isinstance(raw.get("patient_id"), str) else None
            results[i] = {"index": i, "patient_id": pid, "ok": False,
                          "error": {"error": "invalid patient", "errors": problems}}
        else:
            valid.append(clean)
            where.append(i)
    for i, answer in zip(where, engine.answer(valid) if valid else [], strict=True):
        results[i] = {"index": i, "ok": True, **answer}
    n_ok = len(valid)
    return {"results": results, "summary": {"patients": len(raw_patients), "answered": n_ok,
                                            "refused": len(raw_patients) - n_ok}}


# ---------------------------------------------------------------------------------------------- micro-batching

class MicroBatcher:
    """Opportunistic batching of single-patient requests: while one Predictor call runs, new requests queue;
    the next call takes all of them (up to ``max_batch``). No request ever waits for a timer, so a lone
    request pays no extra latency, and concurrent ones share the Predictor's fixed per-call cost.

    ``fn`` maps a list of items to a list of results in the same order and runs in a worker thread. If a
    merged call fails, its items are retried one by one so one failure cannot fail the others.
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32):
        self.fn = fn
        self.max_batch = max_batch
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self.batch_sizes: list[int] = []  # recent merged sizes (for tests and the benchmark)

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a new server or test client): start afresh
            self._loop, self._queue, self._running = loop, [], False
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        import anyio.to_thread

        try:
            while self._queue:
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                items = [item for item, _ in batch]
                self.batch_sizes = (self.batch_sizes + [len(items)])[-1000:]
                try:
                    results = await anyio.to_thread.run_sync(self._run, items)
                except BaseException as err:  # _run only raises for cancellation or a single failing item
                    results = [err] * len(items)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running = False

    def _run(self, items: list) -> list:
        try:
            return self.fn(items)
        except Exception as err:
            if len(items) == 1:
                return [err]
        out: list = []
        for item in items:
            try:
                out.extend(self.fn([item]))
            except Exception as err:
                out.append(err)
        return out


# ---------------------------------------------------------------------------------------------- guard middleware

def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> Any:
    """Strict JSON (RFC 8259: no NaN/Infinity) or a 400 naming the problem."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RequestError(400, "malformed JSON", [problem("body", "a JSON object (RFC 8259)", str(err))]) from None


def check_body(path: str, body: bytes) -> None:
    """The API bodies: a JSON object with the route's keys only."""
    doc = parse_json_body(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise RequestError(400, "the body must be a JSON object",
                           [problem("body", "a JSON object", f"got {_json_type(doc)}")])
    allowed = BODY_KEYS[path]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise RequestError(400, "unknown key(s) in the body",
                           [problem(k, f"not a key of this request; the body is "
                                       f"{{{', '.join(repr(a) for a in allowed)}: ...}}") for k in unknown])


@dataclass
class GuardSettings:
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    open_paths: frozenset[str] = OPEN_PATHS
    open_prefixes: tuple[str, ...] = OPEN_PREFIXES
    body_paths: dict = field(default_factory=lambda: dict(BODY_KEYS))

    @classmethod
    def from_env(cls) -> GuardSettings:
        return cls(api_key=os.environ.get("CRLM_API_KEY") or None,
                   max_body_bytes=int(os.environ.get("CRLM_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)))


def authorised(headers: dict[str, str], api_key: str) -> bool:
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


class GuardMiddleware:
    """Pure ASGI middleware in front of the whole service (API routes, mounted pages)."""

    def __init__(self, app, settings: GuardSettings | None = None):
        self.app = app
        self.fixed = settings  # None: read the environment at each request (the key can be set or rotated)

    @property
    def settings(self) -> GuardSettings:
        return self.fixed or GuardSettings.from_env()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        path = scope.get("path", "")
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if s.api_key and path not in s.open_paths and not path.startswith(s.open_prefixes) \
                    and not authorised(headers, s.api_key):
                err = RequestError(401, "missing or wrong API key",
                                   [problem("X-API-Key", "the service's API key in X-API-Key or "
                                                         "Authorization: Bearer")])
                resp = err.response()
                resp.headers["WWW-Authenticate"] = "Bearer"
                return await resp(scope, receive, send)
            if scope.get("method") == "POST" and path in s.body_paths:
                ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
                if ctype and ctype != "application/json" and not ctype.endswith("+json"):
                    raise RequestError(415, "the body must be application/json",
                                       [problem("Content-Type", "application/json", f"got {ctype}")])
                declared = headers.get("content-length")
                if declared is not None and (not declared.isdigit() or int(declared) > s.max_body_bytes):
                    raise self._too_large(s.max_body_bytes)
                body = await self._read_body(receive, s.max_body_bytes)
                check_body(path, body)
                receive = _replay(body, receive)
        except RequestError as err:
            return await err.response()(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def _too_large(limit: int) -> RequestError:
        return RequestError(413, "request body too large",
                            [problem("body", f"at most {limit} bytes", f"at most {limit} bytes")])

    async def _read_body(self, receive, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ---------------------------------------------------------------------------------------------- response models
# Documentation of the answers in the OpenAPI document; extra keys are kept (the Predictor may add some).

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# BentoML flattens ``str | None`` to ``str`` on a response's top-level fields; ``nullable`` keeps it honest.
PatientId = Annotated[str | None, Field(description="the request's patient_id, if any",
                                        json_schema_extra={"nullable": True})]


CI_WORDS = ("95% confidence interval of the model's estimated survival (estimation uncertainty of the fitted "
            "model), not the range of the patient's own outcome")


class Horizon(_Open):
    months: float
    survival: float = Field(description="the model's estimated survival probability at ``months``")
    lower: float = Field(description=f"lower bound of the {CI_WORDS}")
    upper: float = Field(description=f"upper bound of the {CI_WORDS}")


class Curve(_Open):
    months: list[float]
    survival: list[float]
    lower: list[float] = Field(description=f"lower band: the {CI_WORDS}, per month")
    upper: list[float] = Field(description=f"upper band: the {CI_WORDS}, per month")


class Contribution(_Open):
    field: str
    label: str | None = None
    value: float | bool | str | None = None
    value_text: str | None = None
    direction: str
    size: float
    sentence: str


class EndpointAnswer(_Open):
    endpoint: str
    endpoint_label: str | None = None
    risk_score: float
    horizons: list[Horizon]
    median_months: float | None
    median_reached: bool
    risk_group: str
    curve: Curve
    contributions: list[Contribution]
    warnings: list[str]


class Score(_Open):
    name: str
    label: str
    total: float | None
    group: str | None
    groups: list[str]
    points: dict[str, float | None]
    missing: list[str]
    reason: str | None


class TrainingCohort(_Open):
    name: str | None = None
    source: str | None = None
    patients: int | None = None
    events: int | None = None
    licence: str | None = None
    citation: str | None = None


class ModelRef(_Open):
    endpoint: str
    registered_name: str | None
    version: str | None
    alias: str | None
    source: str
    model_name: str | None = None
    training_cohort: TrainingCohort


class PredictResponse(_Open):
    patient_id: PatientId = None
    os: EndpointAnswer
    rfs: EndpointAnswer
    scores: dict[str, Score]
    warnings: list[str]
    models: dict[str, ModelRef]
    disclaimer: str


class BatchItem(_Open):
    """An answer (``ok`` true, the /predict fields) or a refused patient (``ok`` false, ``error``)."""

    index: int
    ok: bool
    patient_id: str | None = None
    error: dict | None = None


class BatchSummary(BaseModel):
    patients: int
    answered: int
    refused: int


class BatchResponse(BaseModel):
    results: list[BatchItem]
    summary: BatchSummary


class ScoresResponse(_Open):
    patient_id: PatientId = None
    scores: dict[str, Score]
    disclaimer: str


def scores_answer(clean: dict) -> dict:
    return {"patient_id": clean.get("patient_id"), "scores": clinical_scores([clean])[0], "disclaimer": DISCLAIMER}


# ---------------------------------------------------------------------------------------------- launching

SERVICE_IMPORT = "serving.service:CRLMService"


def serve_command(host: str = "127.0.0.1", port: int = 3000, python: str | None = None) -> list[str]:
    """The ``bentoml serve`` command line that ``crlm serve`` runs (from the repository root)."""
    import sys

    return [python or sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", host, "--port",
            str(port), "--working-dir", str(project_root())]


def serve_env(models_dir: str | Path | None = None, api_key: str | None = None, workers: int | None = None,
              base: dict | None = None) -> dict[str, str]:
    """The environment of the served process (no usage tracking: the service never calls home)."""
    env = dict(os.environ if base is None else base)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    if models_dir is not None:
        env["CRLM_MODELS_DIR"] = str(models_dir)
    if api_key:
        env["CRLM_API_KEY"] = api_key
    if workers:
        env["CRLM_SERVE_WORKERS"] = str(workers)
    return env


def serve(host: str = "127.0.0.1", port: int = 3000, *, models_dir: str | Path | None = None,
          api_key: str | None = None, workers: int | None = None) -> None:
    """Run the service in the foreground (replaces the current process; Ctrl-C stops it)."""
    cmd = serve_command(host, port)
    os.chdir(project_root())
    os.execve(cmd[0], cmd, serve_env(models_dir, api_key, workers))
