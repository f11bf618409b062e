"""The Predictor: calibrated survival at the horizons with intervals, explanations and warnings.

One object answers for one endpoint and is what every consumer calls (API, batch scoring, MLflow pyfunc,
tests); its answer format is documented in ``docs/PREDICTOR.md``. ``train_predictor`` builds it:
1. out-of-fold (OOF) survival predictions by K-fold cross-validation of the chosen pipeline with its chosen
   hyperparameters (so the recalibration never sees a model's own training predictions);
2. refit of the pipeline on all patients with the endpoint;
3. recalibration map per time fitted on the OOF predictions (``crlm.recalibration``), with ICI before and
   after measured by 2-fold cross-fitting;
4. 95% intervals: B bootstrap refits of the model step (the fitted preprocessing is kept fixed: imputation
   and scaling are unsupervised and their resampling variability is negligible next to the model's), each
   recalibrated with the same map; the interval is the 2.5-97.5 percentile range of those curves;
5. the explainer (``crlm.explain``) and the training ranges that make out-of-range inputs carry a warning.
"""

from __future__ import annotations

import functools
import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from crlm import parallel
from crlm.cohort.base import CanonicalColumns, Cohort, canonical_columns, predictors_frame
from crlm.evaluation.intervals import bootstrap_indices
from crlm.explain import EVENT_WORDS, Explainer
from crlm.models import final_estimator, make_model
from crlm.recalibration import Recalibrator, cross_fitted_ici
from crlm.schema import DEFAULT_HORIZONS_MONTHS, FIELDS_BY_NAME
from crlm.schema import endpoint as get_endpoint
from crlm.survival_kernel import SurvivalKernel

CURVE_STEP_MONTHS = 3.0
CURVE_MAX_MONTHS = 120.0
PINNED_PACKAGES = ("scikit-survival", "scikit-learn", "xgboost-cpu", "shap", "mlflow", "bentoml", "pandas",
                   "numpy", "scipy", "pandera", "pydantic", "joblib", "pyyaml")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PINNED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Predictor:
    endpoint: str
    endpoint_label: str
    model_name: str
    params: dict
    horizons: tuple[float, ...]
    curve_times: np.ndarray
    model: object
    kernel: SurvivalKernel  # the refit (index 0) and its bootstrap refits (the interval), evaluated together
    recalibrator: Recalibrator
    explainer: Explainer
    risk_cuts: tuple[float, float]
    training_ranges: dict
    fields_used: list[str]
    metadata: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ prediction

    def _prepare(self, rows) -> tuple[CanonicalColumns, pd.DataFrame]:
        """(canonical columns, model matrix) of records, a DataFrame or ``CanonicalColumns`` (the API
        canonicalises a request once for both endpoints and the scores)."""
        columns = canonical_columns(rows)
        if columns.n_rows == 0:
            raise ValueError("no patients to predict")
        Z = self.model.steps[0][1].transform(columns)  # fields the rows lack are missing
        if not isinstance(Z, pd.DataFrame):
            Z = pd.DataFrame(Z, columns=self.explainer.features)
        return columns, Z

    def _curves(self, Z: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated survival (n, T) at ``curve_times`` with its 95% interval (t = 0 is S = 1)."""
        curves = self.recalibrator.apply(self.kernel.survival(Z))  # (1 + B, n, T - 1)
        point, boots = curves[0], curves[1:]
        lower = np.minimum(np.quantile(boots, 0.025, axis=0), point)
        upper = np.maximum(np.quantile(boots, 0.975, axis=0), point)
        ones = np.ones((len(Z), 1))
        return (np.hstack([ones, point]), np.hstack([ones, np.minimum.accumulate(lower, axis=1)]),
                np.hstack([ones, np.minimum.accumulate(upper, axis=1)]))

    def predict(self, rows, top: int = 6) -> list[dict]:
        """One answer per patient (``docs/PREDICTOR.md``); ``rows`` as in ``_prepare``."""
        columns, Z = self._prepare(rows)
        risk = self.risk(Z)
        surv, lower, upper = self._curves(Z)
        records = columns.records()
        explanations = self.explainer.explain(Z, records, top=top)
        warnings = self.warnings(columns)
        months = self.curve_times.tolist()
        horizons = self._horizon_columns
        answers = []
        for i in range(len(records)):
            median = median_time(self.curve_times, surv[i])
            answers.append({
                "endpoint": self.endpoint,
                "endpoint_label": self.endpoint_label,
                "risk_score": float(risk[i]),
                "horizons": [{"months": float(h), "survival": float(surv[i, j]), "lower": float(lower[i, j]),
                              "upper": float(upper[i, j])} for h, j in horizons],
                "median_months": median,
                "median_reached": median is not None,
                "risk_group": self.risk_group(risk[i]),
                "curve": {"months": months, "survival": surv[i].round(5).tolist(),
                          "lower": lower[i].round(5).tolist(), "upper": upper[i].round(5).tolist()},
                "contributions": explanations[i],
                "warnings": warnings[i],
            })
        return answers

    def risk(self, Z: pd.DataFrame) -> np.ndarray:
        if self.kernel.kind == "generic":
            return np.asarray(final_estimator(self.model).predict(Z), dtype=float)
        return self.kernel.linear_predictors(Z)[:, 0]  # the refit's log-hazard = its predict()

    def predict_frame(self, rows) -> pd.DataFrame:
        """A flat table (batch scoring, MLflow pyfunc): risk, survival and bounds at each horizon, group,
        median, top contributor sentences and warnings."""
        answers = self.predict(rows, top=3)
        records = []
        for a in answers:
            rec = {"risk_score": a["risk_score"], "risk_group": a["risk_group"],
                   "median_months": np.nan if a["median_months"] is None else a["median_months"]}
            for h in a["horizons"]:
                tag = f"{h['months']:g}"
                rec[f"surv_{tag}"], rec[f"surv_{tag}_lower"], rec[f"surv_{tag}_upper"] = (
                    h["survival"], h["lower"], h["upper"])
            rec["explanation"] = "; ".join(c["sentence"] for c in a["contributions"])
            rec["warnings"] = "; ".join(a["warnings"])
            records.append(rec)
        return pd.DataFrame(records)

    @functools.cached_property
    def _horizon_columns(self) -> list[tuple[float, int]]:
        return [(h, int(np.flatnonzero(np.isclose(self.curve_times, h))[0])) for h in self.horizons]

    def risk_group(self, risk: float) -> str:
        low, high = self.risk_cuts
        return "low" if risk <= low else "high" if risk > high else "intermediate"

    def warnings(self, columns: CanonicalColumns) -> list[list[str]]:
        """Per patient: inputs that were missing (imputed, or a genomic marker treated as unknown) and values
        outside the training data, in the order of ``fields_used`` (one pass per field over the batch)."""
        out: list[list[str]] = [[] for _ in range(columns.n_rows)]
        for name in self.fields_used:
            f = FIELDS_BY_NAME.get(name)
            genomic = f is not None and f.block == "genomic"
            values = columns.get(name)
            missing = np.ones(columns.n_rows, dtype=bool) if values is None else np.asarray(pd.isna(values))
            message = f"{name} is missing and was {'treated as unknown' if genomic else 'imputed'}"
            for i in np.flatnonzero(missing):
                out[i].append(message)
            rng = self.training_ranges.get(name)
            if values is None or rng is None:
                continue
            for i in np.flatnonzero(~missing):
                value = values[i]
                if genomic and value == "unknown":
                    continue
                if "min" in rng and not rng["min"] <= float(value) <= rng["max"]:
                    out[i].append(f"{name} {float(value):g} is outside the training range "
                                  f"({rng['min']:g}-{rng['max']:g}): the prediction is an extrapolation")
                elif "categories" in rng and str(value) not in rng["categories"]:
                    out[i].append(f"{name} {value!r} was not seen in training")
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, directory / "predictor.joblib", compress=3)
        (directory / "metadata.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        path = Path(directory) / "predictor.joblib"
        if not path.exists():
            raise FileNotFoundError(f"no predictor bundle at {directory} (expected {path.name})")
        predictor = joblib.load(path)
        if not isinstance(predictor, cls):
            raise TypeError(f"{path} does not hold a crlm Predictor")
        return predictor


def median_time(times: np.ndarray, surv: np.ndarray) -> float | None:
    """First time the curve reaches 0.5 (linear interpolation between grid points); None if not reached."""
    below = np.flatnonzero(surv <= 0.5)
    if len(below) == 0:
        return None
    j = int(below[0])
    if j == 0:
        return float(times[0])
    t0, t1, s0, s1 = times[j - 1], times[j], surv[j - 1], surv[j]
    return float(t0 + (s0 - 0.5) / (s0 - s1) * (t1 - t0)) if s0 != s1 else float(t1)


def curve_grid(horizons, max_follow_up: float) -> np.ndarray:
    t_max = min(CURVE_MAX_MONTHS, np.floor(max_follow_up))
    grid = np.arange(0.0, t_max + 1e-9, CURVE_STEP_MONTHS)
    return np.unique(np.concatenate([grid, [h for h in horizons if h <= t_max]]))


def _training_ranges(raw: pd.DataFrame, fields: list[str]) -> dict:
    ranges = {}
    for name in fields:
        f = FIELDS_BY_NAME.get(name)
        if f is None or name not in raw:
            continue
        col = raw[name].dropna()
        if len(col) == 0:
            continue
        if f.kind in ("float", "int"):
            ranges[name] = {"min": float(col.min()), "max": float(col.max())}
        elif f.kind == "category":
            ranges[name] = {"categories": sorted(map(str, col.unique()))}
    return ranges


def oof_survival(model_name: str, params: dict, X: pd.DataFrame, y: np.ndarray, times: np.ndarray, *,
                 blocks, postoperative: bool, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold survival at ``times`` from K-fold CV of the pipeline with fixed hyperparameters."""
    out = np.full((len(y), len(times)), np.nan)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(splitter.split(X, y["event"])):
        model = make_model(model_name, blocks=blocks, postoperative=postoperative,
                           columns_present=list(X.columns), random_state=seed + k, **params)
        model.fit(X.iloc[train], y[train])
        out[test] = model.predict_survival(X.iloc[test], times)
    return out


@parallel.isolated
def _refit(template, Z: pd.DataFrame, y: np.ndarray, idx: np.ndarray):
    """One bootstrap refit of the model step (seeded by the template's own random_state, as the refit)."""
    return clone(template).fit(Z.iloc[idx], y[idx])


def train_predictor(cohort: Cohort, endpoint: str, model_name: str, params: dict | None = None, *,
                    horizons=DEFAULT_HORIZONS_MONTHS, blocks=("clinical", "genomic", "response"),
                    postoperative: bool = False, n_interval_models: int = 50, seed: int = 0,
                    endpoint_label: str | None = None, metadata: dict | None = None, n_jobs: int = 1) -> Predictor:
    """Build the champion Predictor from a cohort and a chosen model (see the module docstring); the bootstrap
    refits run on the job's parallel backend (``crlm.parallel``; ``n_jobs`` local processes by default)."""
    params = dict(params or {})
    ep = get_endpoint(endpoint)
    population = cohort.with_outcome(endpoint)
    y = population.y(endpoint)
    if len(y) < 20 or y["event"].sum() < 10:
        raise ValueError(f"{len(y)} patients with {int(y['event'].sum())} events are too few to train a predictor")
    X = predictors_frame(population.data)
    horizons = tuple(float(h) for h in horizons if h < y["time"].max())
    times = curve_grid(horizons, float(np.quantile(y["time"], 0.98)))
    positive = times[1:]

    oof = oof_survival(model_name, params, X, y, positive, blocks=blocks, postoperative=postoperative, seed=seed)
    model = make_model(model_name, blocks=tuple(blocks), postoperative=postoperative,
                       columns_present=list(X.columns), random_state=seed, **params).fit(X, y)
    calibration = {f"{h:g}": cross_fitted_ici(y, oof, positive, h, seed=seed) for h in horizons}
    # Stated rule: recalibrate only if it lowers the cross-fitted ICI on average over the horizons (on small
    # cohorts a per-time slope can add more noise than it removes).
    improves = np.mean([c["ici_after"] for c in calibration.values()]) < np.mean(
        [c["ici_before"] for c in calibration.values()])
    recalibrator = Recalibrator.fit(y, oof, positive) if improves else Recalibrator.identity(positive)

    preprocess = model.steps[0][1]
    Z = preprocess.transform(X)
    if not isinstance(Z, pd.DataFrame):
        Z = pd.DataFrame(Z)
    base = final_estimator(model)
    parallel.scatter(Z, y)
    template = clone(base)  # unfitted: what each task needs, not the fitted model
    estimators = Parallel(n_jobs=n_jobs)(delayed(_refit)(template, Z, y, idx)
                                         for idx in bootstrap_indices(len(y), n_interval_models, seed + 1,
                                                                      strata=y["event"]))
    kernel = SurvivalKernel([base, *estimators], positive, Z.head(25))
    explainer = Explainer(model, Z, ep.name, seed=seed)
    risk = np.asarray(base.predict(Z), dtype=float)
    fields_used = list(getattr(preprocess, "columns_", []))
    meta = {
        "model_name": model_name, "params": params, "endpoint": ep.name,
        "endpoint_label": endpoint_label or ep.name, "endpoint_description": ep.description,
        "event": EVENT_WORDS.get(ep.name, "event"), "cohort": cohort.name, "cohort_source": cohort.source,
        "licence": cohort.licence, "citation": cohort.citation, "patients": int(len(y)),
        "events": int(y["event"].sum()), "max_follow_up_months": float(y["time"].max()),
        "horizons": list(horizons), "feature_blocks": list(blocks), "postoperative": postoperative,
        "fields_used": fields_used,
        "calibration": calibration,
        "recalibration": ("per-time Cox recalibration (baseline and slope) on cloglog of 5-fold OOF survival, "
                          f"{'applied' if improves else 'not applied'}: it is applied only when it lowers the "
                          "2-fold cross-fitted ICI averaged over the horizons"),
        "recalibration_applied": bool(improves),
        "interval_method": (f"95% percentile interval over {n_interval_models} bootstrap refits of the model step "
                            "(preprocessing fixed), each recalibrated with the same map"),
        "explainer": explainer.method,
        "risk_groups": "tertiles of the training cohort's risk score",
        "package_versions": package_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    } | (metadata or {})
    return Predictor(
        endpoint=ep.name, endpoint_label=endpoint_label or ep.name, model_name=model_name, params=params,
        horizons=horizons, curve_times=times, model=model, kernel=kernel,
        recalibrator=recalibrator, explainer=explainer,
        risk_cuts=(float(np.quantile(risk, 1 / 3)), float(np.quantile(risk, 2 / 3))),
        training_ranges=_training_ranges(population.data, fields_used), fields_used=fields_used, metadata=meta)
