"""The online risk prediction API and the clinician's web calculator (BentoML 1.4 class service).

Run: ``crlm serve`` or ``bentoml serve crlm.serving.service:CRLMService --host 127.0.0.1 --port 3000`` (from any
directory). Models: the MLflow registry alias (``models:/<name>@champion``) when MLFLOW_TRACKING_URI is set,
else the bundles in CRLM_MODELS_DIR (default ``<repo>/models``); names from CRLM_OS_MODEL / CRLM_RFS_MODEL.
Worker processes: CRLM_SERVE_WORKERS (default one per CPU; /readyz waits for all of them).
Optional API key: CRLM_API_KEY (header ``X-API-Key`` or ``Authorization: Bearer``). Everything with logic lives
in the other modules of ``crlm.serving``; this one only wires them to BentoML (API methods never call each
other, pitfall P12).

Routes: POST /predict, /predict_batch, /scores; GET /models, /model_info, /schema/patient, /ui/ (the calculator);
BentoML's /livez, /readyz, /metrics, /docs.json and Swagger UI at /.
"""

from __future__ import annotations

import os

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # the service never calls home

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, cast  # noqa: E402

import anyio  # noqa: E402
import bentoml  # noqa: E402
from pydantic import ConfigDict, Field, WithJsonSchema  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from crlm.serving import admission, bentoml_fixes, responses  # noqa: E402
from crlm.serving.batching import MicroBatcher, prefer_the_event_loop  # noqa: E402
from crlm.serving.engine import batch_answer, scores_answer  # noqa: E402
from crlm.serving.errors import RequestError, problem  # noqa: E402
from crlm.serving.guard import PARSED_BODY, GuardMiddleware, check_body  # noqa: E402
from crlm.serving.openapi import complete_openapi  # noqa: E402
from crlm.serving.readiness import WorkerReadiness  # noqa: E402
from crlm.serving.request_models import patient_openapi_schema, schema_document  # noqa: E402
from crlm.serving.responses import json_response  # noqa: E402
from crlm.serving.settings import MAX_BATCH, default_workers, request_timeout_s, validate_environment  # noqa: E402
from crlm.serving.store import ModelStore  # noqa: E402
from crlm.serving.validation import require_patient, require_patient_list  # noqa: E402

logger = logging.getLogger("crlm.serving")
STATIC = Path(__file__).parent / "static"

# HTTP-level parameters are deliberately lenient (any JSON value): each patient is validated by the schema's
# pydantic model (crlm.serving.validation), so a bad patient gets an error naming the field and the rule
# (and, in a batch, only that patient fails). The OpenAPI document still shows the full patient schema.
PatientBody = Annotated[Any, WithJsonSchema(patient_openapi_schema()),
                        Field(description="One patient (crlm.schema input fields)")]
PatientsBody = Annotated[Any, WithJsonSchema({"type": "array", "items": patient_openapi_schema(),
                                              "minItems": 1, "maxItems": MAX_BATCH}),
                         Field(description=f"1 to {MAX_BATCH} patients")]


class _ParsedBody(bentoml.IODescriptor):
    """An API's input read from the document the guard parsed (``PARSED_BODY``): the body is parsed once, and
    BentoML never parses one (its parse errors are logged with the body's values). No other key: the OpenAPI
    document says so (the guard refuses one with 400)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request: Request, serde) -> _ParsedBody:
        doc = request.scope.get(PARSED_BODY)
        if doc is None:  # only without the guard in front (it is always added below)
            doc = check_body(request.url.path, await request.body())
        return cls.model_construct(**doc)


ModelsChoice = Annotated[Any, WithJsonSchema({
    "type": "object", "additionalProperties": False, "nullable": True,
    "properties": {"os": {"type": "string"}, "rfs": {"type": "string"}},
    "description": "the OS and RFS model by name (GET /models), each optional; absent: the default pair"})]
Scenarios = Annotated[Any, WithJsonSchema({
    "type": "boolean", "nullable": True,
    "description": "true: the answers under each response to preoperative chemotherapy (associational)"})]
EventFree = Annotated[Any, WithJsonSchema({
    "type": "number", "minimum": 0, "nullable": True,
    "description": "s: the patient is event-free (OS: alive) s months after resection: the conditional answer"})]


class PredictInput(_ParsedBody):
    patient: PatientBody  # required: the guard refuses a body without it (422)
    models: ModelsChoice = None
    scenarios: Scenarios = None
    event_free_at_months: EventFree = None


class BatchInput(_ParsedBody):
    patients: PatientsBody
    models: ModelsChoice = None
    event_free_at_months: EventFree = None


class ScoresInput(_ParsedBody):
    patient: PatientBody


# The page only talks to this server: the CSP makes the browser refuse anything else.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _instance() -> CRLMService | None:
    return bentoml.get_current_service()


async def schema_patient(request: Request) -> Response:
    """The field catalogue; ``?os=<name>&rfs=<name>``: that pair's (default: the default pair's)."""
    svc = _instance()
    model_set = svc.store.model_set if svc is not None else None
    if model_set is None:
        return JSONResponse(schema_document())
    choice = {ep: request.query_params[ep] for ep in ("os", "rfs") if ep in request.query_params}
    try:
        engine = model_set.choose(choice or None)
    except RequestError as err:
        return err.response()
    return JSONResponse(schema_document(engine.fields_used, engine))


async def models_catalogue(_: Request) -> Response:
    svc = _instance()
    if svc is None or svc.store.model_set is None:
        return JSONResponse(svc.store.info() if svc else {"state": "starting"}, status_code=503)
    return JSONResponse({"state": "ready", **svc.store.model_set.catalogue()})


async def model_info(request: Request) -> Response:
    svc = _instance()
    if svc is None or svc.store.engine is None:
        return JSONResponse(svc.store.info() if svc else {"state": "starting"}, status_code=503)
    if svc.store.model_set is None:
        return JSONResponse({"state": "ready", **svc.store.engine.model_info()})
    choice = {ep: request.query_params[ep] for ep in ("os", "rfs") if ep in request.query_params}
    try:
        return JSONResponse({"state": "ready", **svc.store.model_set.model_info(choice or None)})
    except RequestError as err:
        return err.response()


async def ui_config(_: Request) -> Response:
    return JSONResponse({"api_key_required": bool(os.environ.get("CRLM_API_KEY")), "max_batch": MAX_BATCH},
                        headers=PAGE_HEADERS)


async def ui_index(_: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


class _PageFiles(StaticFiles):
    """Static files of the calculator, with the same security headers as the page."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


async def openapi_document(_: Request) -> Response:
    svc = _instance()
    model_set = svc.store.model_set if svc is not None else None
    if model_set is None:
        return JSONResponse(service_openapi())
    choices = {ep: model_set.names(ep) for ep in ("os", "rfs")}
    choices["event_free_max"] = min(m.predictor.curve_times[-1] for m in model_set.models.values())
    return JSONResponse(service_openapi(model_set.default_engine.example, choices))


def service_openapi(example: dict | None = None, choices: dict | None = None) -> dict:
    """The complete OpenAPI document (``/docs.json``): BentoML's plus every status and mounted route, the
    answers described from ``example`` (the loaded models' warm-up answer) and the request's model names and
    event-free months restricted to ``choices`` (the served models) when they are loaded."""
    return complete_openapi(bentoml_service().openapi_spec.asdict(), example, choices)


pages = Starlette(routes=[
    Route("/docs.json", openapi_document, methods=["GET"]),
    Route("/schema/patient", schema_patient, methods=["GET"]),
    Route("/model_info", model_info, methods=["GET"]),
    Route("/models", models_catalogue, methods=["GET"]),
    Route("/ui", lambda _: RedirectResponse("/ui/", status_code=307), methods=["GET"]),
    Route("/ui/", ui_index, methods=["GET"]),
    Route("/ui/config.json", ui_config, methods=["GET"]),
    Mount("/ui", _PageFiles(directory=STATIC), name="ui-static"),
])


validate_environment()  # a malformed setting stops the server before it binds a port (SettingsError)
bentoml_fixes.apply()  # unbounded metric labels, request timers kept alive for the whole timeout
WORKERS = default_workers()


@bentoml.asgi_app(pages, path="/", name="calculator")
@bentoml.service(
    name="crlm_risk",
    workers=WORKERS,
    traffic={"timeout": request_timeout_s()},
    # Access log: method, path, status and sizes only (BentoML has no option to log bodies; none is added).
    logging={"access": {"enabled": True, "request_content_length": True, "request_content_type": True,
                        "response_content_length": True, "response_content_type": True}},
)
class CRLMService:
    """OS and RFS survival after resection of colorectal liver metastases, with the clinical scores."""

    def __init__(self) -> None:
        # Models load in a background thread: /livez answers at once, /readyz only when both are loaded in
        # every worker process (bentoml.server_context numbers the workers of `bentoml serve`; in-process there
        # is one).
        in_server = bentoml.server_context.worker_index is not None
        self.readiness = WorkerReadiness(WORKERS if in_server else 1)
        self.store = ModelStore(on_ready=self.readiness.mark_ready)
        if self.readiness.others_ready():
            # A replacement of a killed worker: load before the worker accepts a connection (the others
            # answer meanwhile), so that no request meets a worker that is still loading.
            self.store.load_now()
        else:
            self.store.start()
        # /predict merges concurrent requests into one Predictor call (see MicroBatcher). BentoML's own
        # adaptive batching (batchable=True) needs a single list parameter per request, which /predict's
        # {"patient": {...}} body is not; /predict_batch already sends a list and is answered in one call.
        self.batcher = MicroBatcher(self._answer_many, max_batch=32, offload=admission.shed_recently)
        prefer_the_event_loop()  # the loop gets the GIL back from the models' thread within 1 ms
        self._batch_limiter = anyio.CapacityLimiter(1)

    @bentoml.on_shutdown
    def _unmark(self) -> None:
        self.readiness.unmark()

    def __is_ready__(self) -> bool:
        return self.store.ready and self.readiness.all_ready()

    def _answer_many(self, items: list[tuple]) -> list[dict]:
        """(engine, event-free months, patient) items merged by the batcher: one call per engine and s."""
        groups: dict[tuple, list[int]] = {}
        for i, (engine, s, _) in enumerate(items):
            groups.setdefault((id(engine), s), []).append(i)
        out: list = [None] * len(items)
        for where in groups.values():
            engine, s, _ = items[where[0]]
            for i, answer in zip(where, engine.answer([items[i][2] for i in where], s), strict=True):
                out[i] = answer
        return out

    @bentoml.api(route="/predict", input_spec=PredictInput, output_spec=responses.PredictResponse)
    async def predict(self, patient: PatientBody = None, models: ModelsChoice = None, scenarios: Scenarios = None,
                      event_free_at_months: EventFree = None) -> Response:
        """OS and RFS at 12/36/60 months with 95% confidence intervals of the estimate, curves, risk groups, contributions, scores; the
        models by name (``models``), the response scenarios (``scenarios``), the conditional answer given
        event-free at s months (``event_free_at_months``)."""
        try:
            if patient is None:
                require_patient(None)
            engine = self.store.require_model_set().choose(models)
            clean = engine.require_patient(patient)
            s = engine.event_free_months(event_free_at_months)
            if scenarios is not None and not isinstance(scenarios, bool):
                raise RequestError(422, "scenarios must be true or false",
                                   [problem("scenarios", "true or false", "not a boolean")])
            answer = await self.batcher.submit((engine, s, clean))
            if scenarios:
                answer = {**answer, "scenarios": await anyio.to_thread.run_sync(engine.scenarios, clean)}
            return json_response(answer)
        except RequestError as err:
            return err.response()
        except Exception as err:
            return _server_error("predict", err)

    @bentoml.api(route="/predict_batch", input_spec=BatchInput, output_spec=responses.BatchResponse)
    async def predict_batch(self, patients: PatientsBody = None, models: ModelsChoice = None,
                            event_free_at_months: EventFree = None) -> Response:
        """Up to 1,000 patients: each gets the /predict answer or its own error entry (field and rule)."""
        try:
            raw = require_patient_list(patients)
            engine = self.store.require_model_set().choose(models)
            s = engine.event_free_months(event_free_at_months)
            answer = await anyio.to_thread.run_sync(batch_answer, engine, raw, s, limiter=self._batch_limiter)
            return json_response(answer)
        except RequestError as err:
            return err.response()
        except Exception as err:
            return _server_error("predict_batch", err)

    @bentoml.api(route="/scores", input_spec=ScoresInput, output_spec=responses.ScoresResponse)
    def scores(self, patient: PatientBody = None) -> Response:
        """Fong, GAME, m-CS, TBS (zone) and Nordlinger alone (no model needed)."""
        try:
            return json_response(scores_answer(require_patient(patient)))
        except RequestError as err:
            return err.response()
        except Exception as err:
            return _server_error("scores", err)


def _server_error(where: str, err: Exception) -> Response:
    # Only the exception's type: its message could quote a patient's value.
    logger.error("%s failed with %s", where, type(err).__name__)
    if os.environ.get("CRLM_LOG_TRACEBACKS"):
        logger.exception("%s traceback (CRLM_LOG_TRACEBACKS is set)", where)
    return JSONResponse({"error": "internal error; the request was not answered", "errors": []}, status_code=500)


def bentoml_service() -> bentoml.Service[Any]:
    """``CRLMService`` as what ``@bentoml.service`` made it at run time, a ``bentoml.Service`` (mypy does not apply
    class decorators, so it would see the plain class)."""
    return cast("bentoml.Service[Any]", CRLMService)


bentoml_service().add_asgi_middleware(GuardMiddleware)
admission.install(CRLMService)  # load shedding in front of BentoML's own middlewares (crlm.serving.admission)
