"""Building the Predictor from a cohort and a chosen model: ``train_predictor``.

``train_predictor``:
1. out-of-fold (OOF) survival predictions by K-fold cross-validation of the chosen pipeline with its chosen
   hyperparameters (so the recalibration never sees a model's own training predictions);
2. refit of the pipeline on all patients with the endpoint;
3. recalibration map per time fitted on the OOF predictions (``crlm.recalibration``), with ICI before and
   after measured by 2-fold cross-fitting;
4. the confidence interval of the estimated survival (``crlm.bootstrap_curves``): B bootstrap replicates of
   every data-influenced step (preprocessing fit, model fit with the chosen hyperparameters, recalibration
   map). It is the estimation uncertainty of the model's curve, not the range of the patient's fate;
5. the explainer (``crlm.explain``; for a clinical score served as the champion, the score's points,
   ``crlm.score_explain``) and the training ranges that make out-of-range inputs carry a warning.
"""

from __future__ import annotations

__all__ = [
    "CURVE_MAX_MONTHS", "CURVE_STEP_MONTHS", "INTERVAL_MEANING", "PINNED_PACKAGES", "SCORE_FALLBACK", "curve_grid",
    "oof_survival", "package_versions", "train_predictor",
]

import platform
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from crlm.bootstrap_curves import BootstrapCurves
from crlm.cohort.base import Cohort, predictors_frame
from crlm.evaluation.metrics import usable_horizons
from crlm.explain import EVENT_WORDS, Explainer
from crlm.model_metadata import ModelMetadata
from crlm.models import final_estimator, is_score_model, make_model
from crlm.predictor import Predictor
from crlm.recalibration import Recalibrator, cross_fitted_ici
from crlm.scenarios import response_profile
from crlm.schema import DEFAULT_BLOCKS, DEFAULT_HORIZONS_MONTHS, FIELDS_BY_NAME, schema_stamp
from crlm.schema import endpoint as get_endpoint
from crlm.score_explain import ScoreExplainer
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


def curve_grid(horizons, max_follow_up: float) -> np.ndarray:
    t_max = min(CURVE_MAX_MONTHS, np.floor(max_follow_up))
    grid = np.arange(0.0, t_max + 1e-9, CURVE_STEP_MONTHS)
    return np.unique(np.concatenate([grid, [h for h in horizons if h <= t_max]]))


def _training_ranges(raw: pd.DataFrame, fields: list[str], extra_fields=()) -> dict:
    ranges: dict[str, dict] = {}
    catalogue = FIELDS_BY_NAME | {f.name: f for f in extra_fields}
    for name in fields:
        f = catalogue.get(name)
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
                 blocks, postoperative: bool, folds: int = 5, seed: int = 0,
                 endpoint: str | None = None) -> np.ndarray:
    """Out-of-fold survival at ``times`` from K-fold CV of the pipeline with fixed hyperparameters."""
    out = np.full((len(y), len(times)), np.nan)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(splitter.split(X, y["event"])):
        model = make_model(model_name, blocks=blocks, postoperative=postoperative,
                           columns_present=list(X.columns), random_state=seed + k, endpoint=endpoint, **params)
        model.fit(X.iloc[train], y[train])
        out[test] = model.predict_survival(X.iloc[test], times)
    return out


# A recorded score served as the champion: where a request lacks the recorded total, compute it from the fields.
SCORE_FALLBACK = {"score:fong_recorded": "fong"}
INTERVAL_MEANING = ("95% confidence interval of the model's estimated survival for this patient (estimation "
                    "uncertainty of the fitted model), not the range of the patient's own outcome")


def _served_score(model_name: str) -> dict:
    fallback = SCORE_FALLBACK.get(model_name)
    if not fallback:
        return {}
    return {"preprocess__scores": (model_name.removeprefix("score:"), fallback), "model__fallback": fallback}


def train_predictor(cohort: Cohort, endpoint: str, model_name: str, params: dict | None = None, *,
                    horizons=DEFAULT_HORIZONS_MONTHS, blocks=DEFAULT_BLOCKS,
                    postoperative: bool = False, n_interval_models: int = 50, seed: int = 0,
                    endpoint_label: str | None = None, metadata: dict | None = None,
                    preprocess_params: dict | None = None, interval_method: str = "centred",
                    interval_refit_preprocessing: bool = True, n_jobs: int = 1) -> Predictor:
    """Build the champion Predictor from a cohort and a chosen model (see the module docstring).

    Parameters
    ----------
    cohort : Cohort
        The training patients with their outcomes.
    endpoint : str
        ``os``, ``rfs``, ``liver_rfs`` (or an alias such as ``dfs``).
    model_name : str
        A zoo name (``crlm.models.MODEL_NAMES``).
    params : dict, optional
        The model's hyperparameters (``model__alpha=...``), e.g. those the benchmark's tuning chose.
    horizons : sequence of float
        Months at which answers are given; horizons the follow-up cannot support are dropped.
    blocks : sequence of str
        Feature blocks the model may use (``crlm.schema.PREDICTOR_BLOCKS``).
    postoperative : bool
        Whether postoperative fields (operative block, pathology) may enter the model.
    n_interval_models : int
        Bootstrap replicates behind the 95% confidence interval.
    seed : int
        Seed of every random step (folds, bootstrap, models).
    endpoint_label : str, optional
        The endpoint's wording for people (default: the schema's).
    metadata : dict, optional
        Extra metadata merged into the Predictor's (registered name, model card, ...).
    preprocess_params : dict, optional
        Feature-step parameters (a centre's extra fields, plain imputation; see
        ``BenchmarkSpec.preprocess_params``), kept out of ``params``.
    interval_method : str
        How the bootstrap replicates become an interval (``"centred"``: the estimate inside its interval).
    interval_refit_preprocessing : bool
        Whether each replicate refits the preprocessing as well as the model.
    n_jobs : int
        Processes for the bootstrap replicates on the job's parallel backend (``crlm.parallel``).

    Returns
    -------
    Predictor
        Fitted, recalibrated where that helps, with its interval replicates and explainer.

    Raises
    ------
    ValueError
        Fewer than 20 patients or 10 events, or an unknown model or endpoint.
    """
    params = dict(params or {})
    pipeline_params = params | (preprocess_params or {})
    ep = get_endpoint(endpoint)
    population = cohort.with_outcome(endpoint)
    if is_score_model(model_name):  # a score is fitted on the patients it can rate (missing in, missing out)
        rated = np.isfinite(final_estimator(make_model(model_name)).total(predictors_frame(population.data)))
        population = population.subset(rated)
    y = population.y(endpoint)
    if len(y) < 20 or y["event"].sum() < 10:
        raise ValueError(f"{len(y)} patients with {int(y['event'].sum())} events are too few to train a predictor")
    X = predictors_frame(population.data)
    # the one horizon rule (crlm.evaluation.metrics.usable_horizons): inside follow-up, an event at or before it
    horizons = tuple(float(h) for h in usable_horizons(y, y, horizons))
    times = curve_grid(horizons, float(np.quantile(y["time"], 0.98)))
    positive = times[1:]

    oof = oof_survival(model_name, pipeline_params, X, y, positive, blocks=blocks, postoperative=postoperative,
                       seed=seed, endpoint=ep.name)
    model = make_model(model_name, blocks=tuple(blocks), postoperative=postoperative,
                       columns_present=list(X.columns), random_state=seed, endpoint=ep.name,
                       **pipeline_params, **_served_score(model_name))
    model.fit(X, y)
    calibration = {f"{h:g}": cross_fitted_ici(y, oof, positive, h, seed=seed) for h in horizons}
    # Stated rule: recalibrate only if it lowers the cross-fitted ICI on average over the horizons, before and
    # after measured on the same held-out patients (on small cohorts a per-time slope can add more noise
    # than it removes).
    improves = np.mean([c["ici_after"] for c in calibration.values()]) < np.mean(
        [c["ici_before"] for c in calibration.values()])
    recalibrator = Recalibrator.fit(y, oof, positive) if improves else Recalibrator.identity(positive)

    preprocess = model.steps[0][1]
    Z = preprocess.transform(X)
    if not isinstance(Z, pd.DataFrame):
        Z = pd.DataFrame(Z)
    base = final_estimator(model)
    kernel = SurvivalKernel([base], positive, Z.head(25))
    replicates = BootstrapCurves.fit(model, X, y, oof, positive, recalibrate=bool(improves),
                                     n_boot=n_interval_models, seed=seed + 1, method=interval_method,
                                     refit_preprocessing=interval_refit_preprocessing, n_jobs=n_jobs)
    explainer = (ScoreExplainer(model, Z, ep.name) if is_score_model(model_name)
                 else Explainer(model, Z, ep.name, seed=seed))
    risk = np.asarray(base.predict(Z), dtype=float)
    fields_used = list(getattr(preprocess, "columns_", []))
    meta = {
        "model_name": model_name, "params": params, "endpoint": ep.name,
        "endpoint_label": endpoint_label or ep.name, "endpoint_description": ep.description,
        "event": EVENT_WORDS.get(ep.name, "event"), "cohort": cohort.name, "cohort_source": cohort.source,
        "licence": cohort.licence, "citation": cohort.citation, "caveats": list(cohort.caveats),
        "simulated": cohort.truth is not None, "patients": int(len(y)),
        "events": int(y["event"].sum()), "max_follow_up_months": float(y["time"].max()),
        "horizons": list(horizons), "feature_blocks": list(blocks), "postoperative": postoperative,
        "fields_used": fields_used, "response_profile": response_profile(population.data),
        "extra_fields": [f.__dict__ | {"categories": list(f.categories or [])} for f in cohort.extra_fields],
        "plain_imputation": list((preprocess_params or {}).get("preprocess__plain_imputation", ())),
        "calibration": calibration,
        "recalibration": ("per-time Cox recalibration (baseline and slope) on cloglog of 5-fold OOF survival, "
                          f"{'applied' if improves else 'not applied'}: it is applied only when it lowers the "
                          "ICI averaged over the horizons out of sample (map fitted on one half, ICI before and "
                          "after on the other half: the same patients; 2-fold x 5 repeats)"),
        "recalibration_applied": bool(improves),
        "interval": INTERVAL_MEANING,
        "interval_method": (f"95% confidence interval of the model's estimated survival: {n_interval_models} "
                            "bootstrap replicates refitting "
                            + ("the preprocessing, " if interval_refit_preprocessing else
                               "(with the full-data preprocessing kept) ")
                            + "the model (chosen hyperparameters) and the recalibration map; band on the cloglog scale, "
                            f"{interval_method} method (crlm.bootstrap_curves)"),
        "explainer": explainer.method,
        "risk_groups": "tertiles of the training cohort's risk score",
        "package_versions": package_versions(),
        **schema_stamp(fields_used),  # schema_version + schema_fields: checked at load (serving.model_checks)
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    } | (metadata or {})
    predictor = Predictor(
        endpoint=ep.name, endpoint_label=endpoint_label or ep.name, model_name=model_name, params=params,
        horizons=horizons, curve_times=times, model=model, kernel=kernel,
        recalibrator=recalibrator, explainer=explainer, replicates=replicates,
        risk_cuts=(float(np.quantile(risk, 1 / 3)), float(np.quantile(risk, 2 / 3))),
        training_ranges=_training_ranges(population.data, fields_used, cohort.extra_fields), fields_used=fields_used)
    # built once (replacing the default, empty ModelMetadata): the training facts, the job's own (``metadata``:
    # champion decision, headline, ...) and the inputs
    predictor.metadata = ModelMetadata(**(meta | predictor.input_metadata()))
    return predictor
