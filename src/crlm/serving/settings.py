"""The service's settings: constants and every ``CRLM_*`` environment variable, validated once at start-up.

A malformed setting stops the server before it binds a port, with the variable's name, its value and the
rule (``SettingsError``); nothing is parsed again per request.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crlm.paths import project_root

ENDPOINTS = ("os", "rfs")
SERVED_SCORES = ("fong", "game", "mcs", "tbs", "nordlinger")
MAX_BATCH = 1000
# 1,000 complete patients are about 1.1 MB of compact JSON (1.3 MB indented); 4 MiB leaves ample room.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_ALIAS = "champion"
# The hard cap on API requests a worker has admitted (answering or queued for the models); past it, a fast 503
# (crlm.serving.admission). Below it the target queue delay decides (CRLM_MAX_QUEUE_MS).
DEFAULT_MAX_CONCURRENCY = 8
# The target queue delay of an admitted request, ms: None (unset or "auto"): twice the worker's recent latency
# of a lone /predict (crlm.serving.admission.AUTO_TARGET_FACTOR); 0: no target, the cap alone.
DEFAULT_MAX_QUEUE_MS: int | None = None
DEFAULT_RETRY_AFTER_S = 1
# A request not answered in this time gets a 504 (a batch of 1,000 patients takes about a second).
DEFAULT_REQUEST_TIMEOUT_S = 60
DISCLAIMER = ("Research prototype: not for clinical use without local validation. Predictions are associations "
              "learned from the training cohort, not treatment effects.")
# Top-level keys of each JSON API body (anything else is refused with the key's name).
BODY_KEYS = {"/predict": ("patient", "models", "scenarios", "event_free_at_months"),
             "/predict_batch": ("patients", "models", "event_free_at_months"), "/scores": ("patient",)}
# The one key each body must have (the others are options).
REQUIRED_BODY_KEY = {"/predict": "patient", "/predict_batch": "patients", "/scores": "patient"}
# Paths reachable without the API key: probes, API documentation and the calculator's static files (the page
# holds no data; its calls to the API carry the key). /metrics needs the key when one is set.
OPEN_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/docs.json", "/schema.json", "/schema/patient",
                        "/ui"})
OPEN_PREFIXES = ("/ui/", "/static_content/")
# Every path the service answers (anything else is a 404, labelled "/(other)" in the metrics and access log).
KNOWN_PATHS = OPEN_PATHS | set(BODY_KEYS) | {"/metrics", "/model_info", "/models"}
KNOWN_PREFIXES = (*OPEN_PREFIXES, "/assets/")


class SettingsError(ValueError):
    """A malformed ``CRLM_*`` setting (the message names the variable, its value and the rule)."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not text.isdigit() or int(text) < minimum:
        raise SettingsError(f"{name}={raw!r}: must be a whole number >= {minimum} (bytes, counts and seconds "
                            "are plain integers, e.g. 4194304)")
    return int(text)


@dataclass(frozen=True)
class ModelConfig:
    """Which models are served and which pair answers by default (read from the environment by ``from_env``).

    ``entries`` (``CRLM_MODELS``, a comma list): registered names, ``models:/`` URIs or bundle directories;
    empty: every ``@alias`` of the tracking store (registry) or every bundle in ``models_dir``. ``names``: the
    default model per endpoint (``CRLM_OS_MODEL`` / ``CRLM_RFS_MODEL``); None: chosen from the served set (a
    real-patient model before a simulated one; ``crlm.serving.model_set.default_pair``).
    """

    source: str  # "registry" or "bundle"
    names: dict[str, str | None]  # endpoint -> default registered model name (also the bundle directory's name)
    models_dir: Path
    alias: str = DEFAULT_ALIAS
    entries: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelConfig:
        env = os.environ if env is None else env
        names = {"os": env.get("CRLM_OS_MODEL") or None, "rfs": env.get("CRLM_RFS_MODEL") or None}
        models_dir = Path(env.get("CRLM_MODELS_DIR") or project_root() / "models")
        source = env.get("CRLM_MODEL_SOURCE") or "auto"
        if source == "auto":
            source = "registry" if env.get("MLFLOW_TRACKING_URI") else "bundle"
        if source not in ("registry", "bundle"):
            raise SettingsError(f"CRLM_MODEL_SOURCE={source!r}: must be auto, registry or bundle")
        if names["os"] is not None and names["os"] == names["rfs"]:
            raise SettingsError(f"CRLM_OS_MODEL and CRLM_RFS_MODEL are both {names['os']!r}: each endpoint "
                                "needs its own model")
        raw = env.get("CRLM_MODELS") or ""
        entries = tuple(e.strip() for e in raw.split(",") if e.strip())
        if raw.strip() and not entries:
            raise SettingsError(f"CRLM_MODELS={raw!r}: a comma list of registered names, models:/ URIs or bundle "
                                "directories")
        return cls(source, names, models_dir, env.get("CRLM_MODEL_ALIAS") or DEFAULT_ALIAS, entries)


@dataclass(frozen=True)
class ServiceSettings:
    """The request-path settings of one server (API key, limits, load shedding)."""

    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY  # per worker process
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    max_queue_ms: int | None = DEFAULT_MAX_QUEUE_MS  # None: automatic (crlm.serving.admission)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if env is None else env
        return _service_settings(tuple(env.get(name) for name in SERVICE_VARIABLES))

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> ServiceSettings:
        return cls(api_key=env.get("CRLM_API_KEY") or None,
                   max_body_bytes=_int(env, "CRLM_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024),
                   max_concurrency=_int(env, "CRLM_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, 1),
                   retry_after_s=_int(env, "CRLM_RETRY_AFTER_S", DEFAULT_RETRY_AFTER_S, 1),
                   max_queue_ms=_queue_ms(env))


SERVICE_VARIABLES = ("CRLM_API_KEY", "CRLM_MAX_BODY_BYTES", "CRLM_MAX_CONCURRENCY", "CRLM_RETRY_AFTER_S",
                     "CRLM_MAX_QUEUE_MS")


def _queue_ms(env: Mapping[str, str]) -> int | None:
    raw = env.get("CRLM_MAX_QUEUE_MS")
    if raw is None or raw.strip().lower() in ("", "auto"):
        return DEFAULT_MAX_QUEUE_MS
    try:
        return _int(env, "CRLM_MAX_QUEUE_MS", 0, 0)
    except SettingsError:
        raise SettingsError(f"CRLM_MAX_QUEUE_MS={raw!r}: must be auto or a whole number of milliseconds >= 0 "
                            "(0: no target, CRLM_MAX_CONCURRENCY alone)") from None


@functools.lru_cache(maxsize=8)
def _service_settings(values: tuple[str | None, ...]) -> ServiceSettings:
    """Parsed once per distinct environment (the guard asks at every request; the key may be rotated)."""
    return ServiceSettings.parse({k: v for k, v in zip(SERVICE_VARIABLES, values, strict=True) if v is not None})


def default_workers(env: Mapping[str, str] | None = None) -> int:
    """Server worker processes: ``CRLM_SERVE_WORKERS``, else one per CPU (each process answers with its own
    interpreter; one process is bound to one core by Python's global interpreter lock)."""
    env = os.environ if env is None else env
    return _int(env, "CRLM_SERVE_WORKERS", max(1, os.cpu_count() or 1), 1)


def request_timeout_s(env: Mapping[str, str] | None = None) -> int:
    """Seconds before an unanswered request gets a 504: ``CRLM_REQUEST_TIMEOUT_S``."""
    env = os.environ if env is None else env
    return _int(env, "CRLM_REQUEST_TIMEOUT_S", DEFAULT_REQUEST_TIMEOUT_S, 1)


def validate_environment(env: Mapping[str, str] | None = None) -> None:
    """Every setting parsed once (``crlm serve`` and the service's import call it): raises ``SettingsError``."""
    ServiceSettings.from_env(env)
    ModelConfig.from_env(env)
    default_workers(env)
    request_timeout_s(env)
