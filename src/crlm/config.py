"""Training job configuration (one YAML per job in ``training/configs/``), validated before any work starts.

An invalid config is refused with the key and the reason: unknown keys, unknown models, endpoints or
blocks, a missing cohort file or mapping, horizons that are not positive.
"""

from __future__ import annotations

__all__ = [
    "ClusterSpec", "CohortSpec", "ConfigError", "JobConfig", "Resampling", "Selection", "SimulatedCohort",
    "Strict", "load_config",
]

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crlm.evaluation.references import is_valid
from crlm.models import DEFAULT_BASELINES, DEFAULT_MODELS, MODEL_NAMES, SCORE_MODEL_NAMES
from crlm.parallel import parse_cluster
from crlm.paths import project_root
from crlm.schema import DEFAULT_BLOCKS, DEFAULT_HORIZONS_MONTHS, ENDPOINT_ALIASES, ENDPOINTS, PREDICTOR_BLOCKS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulatedCohort(Strict):
    n: int = Field(default=2000, ge=50, le=200_000)
    seed: int = 1


class CohortSpec(Strict):
    """Either a file (+ optional mapping) or the simulator."""

    file: Path | None = None
    mapping: Path | None = None
    simulate: SimulatedCohort | None = None
    name: str | None = None  # used in registered names, e.g. "tcia" -> crlm-tcia-os
    strict: bool = True  # a cohort with any bad cell fails the job (nothing is registered)

    @model_validator(mode="after")
    def one_source(self):
        if (self.file is None) == (self.simulate is None):
            raise ValueError("give exactly one of 'file' or 'simulate'")
        if self.simulate is not None and self.mapping is not None:
            raise ValueError("'mapping' only applies to a cohort file")
        return self


class Resampling(Strict):
    """Outer loop: repeated stratified K-fold with K >= 5, so every model trains on at least 80% of the patients
    (the Fong score needs no training; with 2 folds every delta C against it was biased towards 0).
    ``optimism_boot``: Harrell's optimism bootstrap of the shipped model (``crlm.evaluation.optimism``)."""

    outer_splits: int = Field(default=5, ge=2, le=10)
    outer_repeats: int = Field(default=2, ge=1, le=50)
    inner_splits: int = Field(default=3, ge=2, le=10)
    n_boot: int = Field(default=200, ge=0, le=5000)
    optimism_boot: int = Field(default=200, ge=0, le=2000)


class Selection(Strict):
    """The champion rule (``crlm.selection``): a learned model is champion only if it beats the reference score
    on paired ``metric`` (point estimate, identical patients) and its ICI at ``ici_horizon`` is at most the
    larger of the reference's ICI and the ICI noise floor at the cohort's size (the 95th percentile over
    ``noise_floor_resamples`` of calibrated-by-construction predictions); otherwise the reference score's own
    survival model is the champion. Ties within ``tie_tolerance`` go to the simpler model."""

    metric: Literal["uno_c", "harrell_c", "mean_auc", "ipa_ibs"] = "uno_c"
    ici_horizon: float = 36.0
    tie_tolerance: float = Field(default=0.005, ge=0, le=0.1)
    noise_floor_resamples: int = Field(default=100, ge=10, le=2000)


class ClusterSpec(Strict):
    """Where the job's parallel work runs (``crlm.parallel``; ``docs/SCALE_OUT.md``). No address: joblib's
    local processes (``n_jobs``); ``local:N``: a Dask LocalCluster of N workers; else a Dask scheduler address."""

    address: str | None = None
    memory_per_worker: str | None = None  # local:N only, e.g. "2GiB" (Dask's default: the machine's share)

    @field_validator("address")
    @classmethod
    def known_form(cls, v: str | None) -> str | None:
        parse_cluster(v)  # ValueError names the value and the accepted forms
        return v.strip() if v else None


class JobConfig(Strict):
    job: str = Field(description="job name, e.g. tcia-os")
    cohort: CohortSpec
    endpoint: str = "os"
    horizons: list[float] = list(DEFAULT_HORIZONS_MONTHS)
    postoperative: bool = False
    blocks: list[str] = list(DEFAULT_BLOCKS)
    models: list[str] = list(DEFAULT_MODELS)
    baselines: list[str] = list(DEFAULT_BASELINES)
    reference: str = "score:fong"  # score:<name>, recorded:<field> (declared in the mapping), auto or none
    search_spaces: dict[str, dict[str, list]] | None = None
    # per field: "indicator" (missing-as-information, the default) or "impute" (plain imputation)
    missing: dict[str, Literal["indicator", "impute"]] = {}
    resampling: Resampling = Resampling()
    selection: Selection = Selection()
    n_interval_models: int = Field(default=50, ge=5, le=1000)
    interval_refit_preprocessing: bool = True  # False: faster serving, see crlm.bootstrap_curves
    seed: int = 0
    n_jobs: int = Field(default=2, ge=1, le=64)
    cluster: ClusterSpec = ClusterSpec()
    experiment: str | None = None  # default crlm-<cohort>-<endpoint>
    registered_model: str | None = None  # default crlm-<cohort>-<endpoint>
    export_dir: Path | None = None  # default models/<registered_model>

    @field_validator("endpoint")
    @classmethod
    def known_endpoint(cls, v: str) -> str:
        if v not in ENDPOINTS and v not in ENDPOINT_ALIASES:
            raise ValueError(f"unknown endpoint {v!r}; known: {', '.join([*ENDPOINTS, *ENDPOINT_ALIASES])}")
        return v

    @field_validator("horizons")
    @classmethod
    def positive_horizons(cls, v: list[float]) -> list[float]:
        if not v or any(h <= 0 for h in v):
            raise ValueError("horizons must be positive months, at least one")
        return sorted(set(v))

    @field_validator("blocks")
    @classmethod
    def known_blocks(cls, v: list[str]) -> list[str]:
        unknown = [b for b in v if b not in PREDICTOR_BLOCKS]
        if unknown or not v:
            raise ValueError(f"unknown block(s) {unknown}; blocks are {list(PREDICTOR_BLOCKS)}")
        return v

    @field_validator("models", "baselines")
    @classmethod
    def known_models(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(MODEL_NAMES)}")
        return v

    @field_validator("reference")
    @classmethod
    def score_reference(cls, v: str) -> str:
        if not is_valid(v):
            raise ValueError(f"the reference must be a clinical score ({', '.join(SCORE_MODEL_NAMES)}), "
                             "recorded:<field> (a score column declared in the mapping), auto or none")
        return v

    @property
    def cohort_name(self) -> str:
        if self.cohort.name:
            return self.cohort.name
        if self.cohort.simulate:
            return "sim"
        assert self.cohort.file is not None  # validated: exactly one of file and simulate
        return Path(self.cohort.file).stem

    @property
    def model_name(self) -> str:
        return self.registered_model or f"crlm-{self.cohort_name}-{self.endpoint}"

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"crlm-{self.cohort_name}-{self.endpoint}"


class ConfigError(ValueError):
    pass


def load_config(path: str | Path, overrides: dict | None = None) -> JobConfig:
    """Read and validate a job config.

    Relative paths in it are resolved against the config file's folder, and, when nothing is there, against the
    workspace (``crlm.paths.project_root``; the shipped configs name files from the repository root)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    raw = _merge(raw, overrides or {})
    try:
        config = JobConfig.model_validate(raw)
    except ValidationError as err:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid config {path}: {reasons}") from None
    folders = [path.resolve().parent, project_root()]
    for attr in ("file", "mapping"):
        value = getattr(config.cohort, attr)
        if value is not None:
            candidates = [value] if value.is_absolute() else [folder / value for folder in folders]
            resolved = next((c for c in candidates if c.exists()), None)
            if resolved is None:
                raise ConfigError(f"invalid config {path}: cohort.{attr}: file not found: {value} (looked in "
                                  f"{', '.join(str(c.parent) for c in candidates)})")
            setattr(config.cohort, attr, resolved)
    if config.export_dir is not None and not config.export_dir.is_absolute():
        config.export_dir = folders[0] / config.export_dir
    return config


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out
