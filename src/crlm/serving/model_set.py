"""The served set of models: which models the service loads (every ``@champion`` alias of a tracking store, a
list of ``models:/`` URIs or names, or the bundle directories), which OS/RFS pair answers by default, and the
``GET /models`` catalogue (endpoint, training cohort, the fields each needs, headline metrics with intervals).

A request may name its OS and RFS model (``"models": {"os": ..., "rfs": ...}``); each pair is one ``Engine``,
built once. Without a name the default pair answers: the operator's (``CRLM_OS_MODEL`` / ``CRLM_RFS_MODEL``),
else a model trained on real patients before one trained on simulated ones (then the larger cohort, then the
name), so that after ``make demo`` the TCIA pair answers, not the simulator's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from crlm.scenarios import RESPONSE_FIELDS
from crlm.serving.engine import Engine, LoadedModel, model_card
from crlm.serving.errors import RequestError, json_type, problem
from crlm.serving.settings import DISCLAIMER, ENDPOINTS, ModelConfig
from crlm.serving.tracking_lock import tracking_store_lock

logger = logging.getLogger("crlm.serving")


def model_entries(config: ModelConfig) -> tuple[list[str], set[str]]:
    """(every entry to load, the entries that must load).

    Entries named by the operator (``CRLM_MODELS``, ``CRLM_OS_MODEL``, ``CRLM_RFS_MODEL``) must load: one that
    fails stops readiness. Discovered ones (every alias of the store, every bundle of the directory) that fail
    are left out, with the reason in ``GET /models``.
    """
    named = [name for ep in ENDPOINTS if (name := config.names.get(ep))]  # loaded first, OS then RFS
    if config.entries:
        return list(dict.fromkeys([*named, *config.entries])), set(config.entries) | set(named)
    found: list[str] = []
    if config.source == "registry":
        from mlflow import MlflowClient  # deferred: MLflow loads only when models come from a registry

        with tracking_store_lock():
            registered = MlflowClient().search_registered_models()
        found = sorted(m.name for m in registered if config.alias in (getattr(m, "aliases", None) or {}))
    elif config.models_dir.is_dir():
        found = sorted(p.name for p in config.models_dir.iterdir() if (p / "predictor.joblib").exists())
    return list(dict.fromkeys([*named, *found])), set(named)


def is_real(model: LoadedModel) -> bool:
    return model.ref["training_cohort"].get("kind") == "real"


def default_pair(models: Mapping[str, LoadedModel], config: ModelConfig) -> dict[str, str]:
    """The pair that answers a request naming no model (see the module docstring)."""
    pair: dict[str, str] = {}
    for ep in ENDPOINTS:
        if name := config.names.get(ep):
            pair[ep] = name
            continue
        candidates = [(not is_real(m), -(m.ref["training_cohort"].get("patients") or 0), name)
                      for name, m in models.items() if m.ref["endpoint"] == ep]
        if not candidates:
            raise ValueError(f"no served model predicts {ep} (set CRLM_{ep.upper()}_MODEL or CRLM_MODELS)")
        pair[ep] = min(candidates)[2]
    return pair


def load_model_set(config: ModelConfig, load_entry: Callable[[str, ModelConfig, str | None], LoadedModel]
                   ) -> ModelSet:
    """Every entry of ``config`` loaded and checked (``load_entry(entry, config, slot)``)."""
    entries, must = model_entries(config)
    if not entries:
        where = (f"no registered model has the alias @{config.alias} in the tracking store"
                 if config.source == "registry" else f"no bundle (predictor.joblib) in {config.models_dir}")
        raise ValueError(f"no model to serve: {where} (train one, or set CRLM_MODELS)")
    slots = {name: ep for ep, name in config.names.items() if name}
    models: dict[str, LoadedModel] = {}
    refused: dict[str, str] = {}
    for entry in entries:
        try:
            model = load_entry(entry, config, slots.get(entry))
        except Exception as err:
            if entry in must:
                raise
            refused[entry] = f"{type(err).__name__}: {err}"
            logger.warning("model %s left out: %s", entry, refused[entry])
            continue
        if model.ref["endpoint"] not in ENDPOINTS:
            refused[entry] = f"it predicts {model.ref['endpoint']}, which this service does not serve"
            continue
        models[model.ref["name"]] = model
    return ModelSet(models, default_pair(models, config), refused)


class ModelSet:
    """The loaded models by name, the default pair and one ``Engine`` per pair asked for.

    Parameters
    ----------
    models : dict
        Served name -> ``LoadedModel``.
    defaults : dict
        Endpoint -> the served name that answers when a request names none.
    refused : dict, optional
        Discovered models that were left out -> the reason.
    """

    def __init__(self, models: dict[str, LoadedModel], defaults: dict[str, str],
                 refused: dict[str, str] | None = None):
        self.models = models
        self.defaults = defaults
        self.refused = dict(refused or {})
        self._engines: dict[tuple[str, str], Engine] = {}
        self._lock = threading.Lock()
        self.default_engine = self.engine(defaults["os"], defaults["rfs"])

    def names(self, endpoint: str) -> list[str]:
        return [name for name, m in self.models.items() if m.ref["endpoint"] == endpoint]

    def engine(self, os_name: str, rfs_name: str) -> Engine:
        key = (os_name, rfs_name)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = self._engines[key] = Engine({"os": self.models[os_name], "rfs": self.models[rfs_name]})
        return engine

    def choose(self, choice) -> Engine:
        """The engine of a request's ``models`` (None: the default pair), or a 422 naming the key and the rule."""
        if choice is None:
            return self.default_engine
        if not isinstance(choice, dict):
            raise RequestError(422, "models must be an object", [problem(
                "models", '{"os": <name>, "rfs": <name>}, each optional (GET /models lists the names)',
                f"expected an object, got {json_type(choice)}")])
        unknown = [k for k in choice if k not in ENDPOINTS]
        if unknown:
            raise RequestError(422, "unknown endpoint in models", [problem(
                "models", "keys os and rfs only", f"{len(unknown)} other key(s)")])
        names = {}
        for ep in ENDPOINTS:
            name = choice.get(ep)
            if name is None:
                names[ep] = self.defaults[ep]
            elif not isinstance(name, str) or name not in self.names(ep):
                raise RequestError(422, f"no served {ep} model of that name", [problem(
                    f"models.{ep}", f"one of {', '.join(self.names(ep))} (GET /models)",
                    "not a served model of this endpoint")])
            else:
                names[ep] = name
        return self.engine(names["os"], names["rfs"])

    def catalogue(self) -> dict:
        """``GET /models``: every served model, the default pair and the models left out."""
        return {"models": [model_summary(name, m, self.defaults) for name, m in self.models.items()],
                "defaults": dict(self.defaults), "refused": dict(self.refused), "disclaimer": DISCLAIMER}

    def model_info(self, choice=None) -> dict:
        """``GET /model_info``: the model card of every served model (``served``, by name), the default pair's
        names (``defaults``) and, under ``models``, the cards of the pair a request would get with these
        ``os`` / ``rfs`` names (None: the default pair; a 422 naming the key for an unknown name)."""
        pair = self.choose(choice).model_info()
        return {"models": pair["models"], "defaults": dict(self.defaults),
                "served": {name: model_card(m) for name, m in self.models.items()}, "disclaimer": DISCLAIMER}

    def warm_up(self) -> None:
        self.default_engine.warm_up()
        for name, model in self.models.items():  # every model answers once before the first request
            if name not in self.defaults.values():
                ep = model.ref["endpoint"]
                other = self.defaults["rfs" if ep == "os" else "os"]
                self.engine(*((name, other) if ep == "os" else (other, name))).warm_up()


def model_summary(name: str, model: LoadedModel, defaults: Mapping[str, str]) -> dict:
    """One entry of ``GET /models``."""
    predictor = model.predictor
    meta = dict(getattr(predictor, "metadata", {}) or {})
    inputs = predictor.input_metadata() if hasattr(predictor, "input_metadata") else {
        k: meta.get(k) for k in ("used_fields", "required_fields", "accepted_fields")}
    return {
        "name": name,
        "endpoint": model.ref["endpoint"],
        "endpoint_label": getattr(predictor, "endpoint_label", None),
        "default": defaults.get(model.ref["endpoint"]) == name,
        "label": model.ref["label"],
        "model_name": meta.get("model_name"),
        "registered_name": model.ref["registered_name"],
        "version": model.ref["version"],
        "alias": model.ref["alias"],
        "source": model.ref["source"],
        "created_at": meta.get("created_at"),
        "training_cohort": model.ref["training_cohort"],
        "horizons_months": meta.get("horizons"),
        "fields": {**inputs, "extra": meta.get("extra_fields") or []},
        "metrics": meta.get("metrics"),
        "metrics_validation": meta.get("validation"),
        "delta_c_vs_reference": meta.get("delta_c_vs_reference"),
        "reference": meta.get("reference"),
        "metrics_note": (None if meta.get("metrics") else
                         "this bundle records no benchmark metrics (it was not exported by a training job)"),
        "scenarios_available": any(f in (inputs.get("used_fields") or []) for f in RESPONSE_FIELDS),
    }
