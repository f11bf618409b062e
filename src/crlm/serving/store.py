"""The model store: the OS and RFS Predictors, loaded in the background (MLflow registry alias or the exported
bundles), so that readiness is honest."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from crlm.serving.engine import Engine, LoadedModel
from crlm.serving.errors import RequestError
from crlm.serving.model_checks import check_slot
from crlm.serving.settings import DISCLAIMER, ENDPOINTS, ModelConfig

logger = logging.getLogger("crlm.serving")


def model_ref(endpoint: str, predictor, *, registered_name: str, version: str | None, alias: str | None,
              source: str) -> dict:
    """Which model answers an endpoint: its name, version, alias, source and training cohort."""
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


class BundleUnreadable(ValueError):
    """A model file that exists but cannot be read (truncated or corrupted)."""


@contextlib.contextmanager
def tracking_store_lock() -> Iterator[None]:
    """One process at a time opens the MLflow tracking store: opening a new SQLite store creates its schema,
    and two workers doing it at once failed ("table ... already exists") or left it half-migrated."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"crlm-mlflow-{digest}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_tracking_store() -> None:
    """Open (and if new, create) the tracking store once, under the lock (``crlm serve`` calls it before the
    server forks its workers; each worker's first registry call takes the same lock)."""
    from mlflow import MlflowClient

    with tracking_store_lock():
        MlflowClient().search_registered_models(max_results=1)


def _read(what: str, load: Callable[[], object]):
    try:
        return load()
    except (FileNotFoundError, ModuleNotFoundError):
        raise
    except Exception as err:  # unpickling a damaged file raises anything (KeyError: 182, EOFError, ...)
        raise BundleUnreadable(f"{what} cannot be read ({type(err).__name__}: {err}); the file is truncated or "
                               "corrupted: export or register the model again") from None


def load_model(endpoint: str, config: ModelConfig) -> LoadedModel:
    """One endpoint's Predictor from the registry alias or the exported bundle, checked against its slot."""
    name = config.names[endpoint]
    if config.source == "registry":
        import mlflow
        from mlflow import MlflowClient

        uri = f"models:/{name}@{config.alias}"
        with tracking_store_lock():
            version = MlflowClient().get_model_version_by_alias(name, config.alias).version
        predictor = _read(f"the model {uri} (version {version})",
                          lambda: mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor)
        check_slot(endpoint, predictor, uri)
        return LoadedModel(predictor, model_ref(endpoint, predictor, registered_name=name, version=version,
                                                alias=config.alias, source=uri))
    from crlm.predictor import Predictor

    path = config.models_dir / name
    predictor = _read(f"{path / 'predictor.joblib'}", lambda: Predictor.load(path))
    check_slot(endpoint, predictor, f"bundle {path}")
    meta = predictor.metadata or {}
    card = path / "model_card.md"
    if not meta.get("model_card") and card.exists():  # the exported bundle may keep the card beside it
        predictor.metadata = {**meta, "model_card": card.read_text()}
    # A bundle exported by a training job records the registry version and alias it was registered under.
    return LoadedModel(predictor, model_ref(endpoint, predictor, registered_name=name, version=meta.get("version"),
                                            alias=meta.get("alias"), source=f"bundle {path}"))


class ModelStore:
    """The OS and RFS models, loaded once in a background thread; ``ready`` only when both are.

    Parameters
    ----------
    config : ModelConfig, optional
        Where the models come from (default: the environment, read when loading starts).
    loader : callable
        ``(endpoint, config) -> LoadedModel``.
    on_ready : callable, optional
        Called once both models are loaded (the worker's readiness marker).
    """

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

    def info(self) -> dict:
        """``/model_info`` while no model answers: the state and the reason."""
        return {"models": {}, "state": self.state, "error": self.error, "disclaimer": DISCLAIMER}
