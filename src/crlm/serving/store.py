"""The model store: the OS and RFS Predictors, loaded in the background (MLflow registry alias or the exported
bundles), so that readiness is honest."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from crlm import schema
from crlm.cohort_kind import DEMONSTRATION_LABEL, is_simulated
from crlm.model_metadata import ModelMetadata, Registration
from crlm.predictor import Predictor
from crlm.serving.engine import Engine, LoadedModel
from crlm.serving.errors import RequestError
from crlm.serving.model_checks import check_slot
from crlm.serving.model_set import ModelSet, load_model_set
from crlm.serving.settings import DISCLAIMER, ModelConfig
from crlm.serving.tracking_lock import tracking_store_lock

logger = logging.getLogger("crlm.serving")


def model_ref(endpoint: str, predictor, *, registered_name: str, version: str | None, alias: str | None,
              source: str, published_as: str | None = None) -> dict:
    """Which model answers an endpoint: its served name, version, alias, source and training cohort (real or
    simulated: a simulated cohort's model carries ``DEMONSTRATION_LABEL`` wherever its numbers appear);
    ``published_as``: a bundle's registered name when it differs from its directory's."""
    meta = ModelMetadata.coerce(getattr(predictor, "metadata", None))
    # the cohort says whether it was simulated; a bundle from before that field is judged by its description
    simulated = meta.simulated if meta.simulated is not None else is_simulated(meta.cohort, meta.cohort_source,
                                                                                meta.licence)
    return {
        "name": registered_name,
        "endpoint": endpoint,
        "label": DEMONSTRATION_LABEL if simulated else None,
        "registered_name": published_as or registered_name,
        "version": None if version is None else str(version),
        "alias": alias,
        "source": source,
        "model_name": meta.get("model_name"),
        "created_at": meta.get("created_at"),
        "training_cohort": {
            "kind": "simulated" if simulated else "real", "name": meta.get("cohort"), "source": meta.get("cohort_source"), "patients": meta.get("patients"),
            "events": meta.get("events"), "licence": meta.get("licence"), "citation": meta.get("citation"),
        },
    }


class BundleUnreadable(ValueError):
    """A model file that exists but cannot be read (truncated or corrupted)."""


def _read(what: str, load: Callable[[], object]):
    try:
        return load()
    except (FileNotFoundError, ModuleNotFoundError):
        raise
    except Exception as err:  # unpickling a damaged file raises anything (KeyError: 182, EOFError, ...)
        raise BundleUnreadable(f"{what} cannot be read ({type(err).__name__}: {err}); the file is truncated or "
                               "corrupted: export or register the model again") from None


def _endpoint_of(predictor, fallback: str | None) -> str:
    declared = getattr(predictor, "endpoint", None) or (getattr(predictor, "metadata", {}) or {}).get("endpoint")
    try:
        return schema.endpoint(str(declared)).name if declared is not None else fallback or "unknown"
    except ValueError:
        return str(declared)


def load_entry(entry: str, config: ModelConfig, slot: str | None = None) -> LoadedModel:
    """One model of the served set: a registered name (at ``config.alias``), a ``models:/`` URI or a bundle
    directory (a path, or a name in ``config.models_dir``), checked against ``slot`` (default: its own
    endpoint)."""
    if entry.startswith("models:/") or (config.source == "registry" and "/" not in entry):
        # deferred: MLflow loads only for registry entries (serving bundles does not need it)
        import mlflow
        from mlflow import MlflowClient

        uri = entry if entry.startswith("models:/") else f"models:/{entry}@{config.alias}"
        name, _, pin = uri.removeprefix("models:/").partition("@")
        alias = pin or None
        if alias is None:
            name, _, version = name.partition("/")
        else:
            with tracking_store_lock():
                version = MlflowClient().get_model_version_by_alias(name, alias).version
        predictor = _read(f"the model {uri} (version {version})",
                          lambda: mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor)
        endpoint = slot or _endpoint_of(predictor, None)
        check_slot(endpoint, predictor, uri)
        return LoadedModel(predictor, model_ref(endpoint, predictor, registered_name=name, version=version or None,
                                                alias=alias, source=uri))
    path = Path(entry) if "/" in entry else config.models_dir / entry
    predictor = _read(f"{path / 'predictor.joblib'}", lambda: Predictor.load(path))
    endpoint = slot or _endpoint_of(predictor, None)
    check_slot(endpoint, predictor, f"bundle {path}")
    card = path / "model_card.md"
    if not predictor.metadata.model_card and card.exists():  # the exported bundle may keep the card beside it
        predictor.metadata = predictor.metadata.replace(model_card=card.read_text())
    # A bundle exported by a training job records the registry name, version and alias it was published under.
    registration = Registration.read(path, predictor.metadata)
    return LoadedModel(predictor, model_ref(endpoint, predictor, registered_name=path.name,
                                            version=registration.version, alias=registration.alias,
                                            source=f"bundle {path}", published_as=registration.registered_name))


def load_model(endpoint: str, config: ModelConfig) -> LoadedModel:
    """One endpoint's named model (``config.names``) from the registry alias or the exported bundle, checked
    against its slot."""
    name = config.names.get(endpoint)
    if name is None:
        raise ValueError(f"no model is named for the {endpoint!r} endpoint (CRLM_{endpoint.upper()}_MODEL)")
    return load_entry(name, config, endpoint)


class ModelStore:
    """The served models (``crlm.serving.model_set``), loaded once in a background thread; ``ready`` only when
    every model the operator named and a default OS and RFS model are.

    Parameters
    ----------
    config : ModelConfig, optional
        Where the models come from (default: the environment, read when loading starts).
    loader : callable
        ``(entry, config, slot) -> LoadedModel`` (``load_entry``).
    on_ready : callable, optional
        Called once the models are loaded (the worker's readiness marker).
    """

    def __init__(self, config: ModelConfig | None = None,
                 loader: Callable[[str, ModelConfig, str | None], LoadedModel] = load_entry,
                 on_ready: Callable[[], None] | None = None):
        self.config = config
        self.loader = loader
        self.on_ready = on_ready
        self.models: dict[str, LoadedModel] = {}  # endpoint -> the default pair's model
        self.model_set: ModelSet | None = None
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
            model_set = load_model_set(config, self.loader)
            model_set.warm_up()
            engine = model_set.default_engine
            models = engine.models
            # Everything loaded so far lives as long as the process: move it out of the cyclic garbage
            # collector's generations, so full collections stop scanning millions of model and library
            # objects (they stalled requests for ~100 ms every few hundred requests).
            gc.collect()
            gc.freeze()
            self.models, self.engine, self.model_set, self.state = models, engine, model_set, "ready"
            if self.on_ready is not None:
                self.on_ready()
            logger.info("models ready in %.1f s: %s; default %s", time.perf_counter() - started,
                        ", ".join(f"{name} ({m.ref['source']})" for name, m in model_set.models.items()),
                        model_set.defaults)
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

    def require_model_set(self) -> ModelSet:
        self.require_engine()
        assert self.model_set is not None  # set together with the engine
        return self.model_set

    def require_engine(self) -> Engine:
        if self.engine is None:
            if self.state == "failed":
                raise RequestError(503, f"the models could not be loaded ({self.error})")
            raise RequestError(503, "the models are still loading; retry shortly (GET /readyz)")
        return self.engine

    def info(self) -> dict:
        """``/model_info`` while no model answers: the state and the reason."""
        return {"models": {}, "state": self.state, "error": self.error, "disclaimer": DISCLAIMER}
