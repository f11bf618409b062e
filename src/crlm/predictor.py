"""The Predictor: calibrated survival at the horizons with intervals, explanations and warnings.

One object answers for one endpoint and is what every consumer calls (API, batch scoring, MLflow pyfunc,
tests); its answer format is documented in ``docs/PREDICTOR.md``. ``train_predictor`` builds it:
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

A clinical score can be the champion (``crlm.selection``): it is served the same way, the score computed from
the patient's fields (or a recorded total where the score is a recorded one and the request gives it); a
patient whose score cannot be computed gets a ``ValueError`` naming the missing fields.
"""

from __future__ import annotations

__all__ = [
    "curve_grid", "CURVE_MAX_MONTHS", "CURVE_STEP_MONTHS", "INTERVAL_MEANING", "median_time",
    "median_times", "oof_survival", "package_versions", "PINNED_PACKAGES", "Predictor", "SCORE_FALLBACK",
    "train_predictor",
]

import functools
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from crlm import model_inputs
from crlm.bootstrap_curves import BootstrapCurves
from crlm.cohort.base import CanonicalColumns, Cohort, canonical_columns, predictors_frame
from crlm.conditional import conditional_answers
from crlm.evaluation.metrics import usable_horizons
from crlm.explain import EVENT_WORDS, Explainer, field_of
from crlm.model_metadata import ModelMetadata
from crlm.models import SurvivalPipeline, final_estimator, is_score_model, make_model
from crlm.recalibration import Recalibrator, cross_fitted_ici
from crlm.scenarios import response_profile, response_scenarios
from crlm.schema import DEFAULT_BLOCKS, DEFAULT_HORIZONS_MONTHS, FIELDS_BY_NAME, schema_stamp
from crlm.schema import endpoint as get_endpoint
from crlm.score_explain import ScoreExplainer
from crlm.survival_kernel import SurvivalKernel
from crlm.tree_kernel import family

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
    """The served object: calibrated survival with intervals, explanations and warnings for patients.

    Built by ``train_predictor`` (or a centre's recalibration) and read back with ``Predictor.load``; the API,
    batch scoring, the MLflow pyfunc and the tests all call it (``docs/PREDICTOR.md``).

    Attributes
    ----------
    endpoint, endpoint_label : str
        The endpoint (``os``, ``rfs``, ...) and its wording for people.
    model_name : str
        The zoo name of the model (``coxnet``, ``score:fong``, ...); ``params`` its hyperparameters.
    horizons : tuple of float
        Months at which the answer gives survival with its interval; ``curve_times`` the curve's grid.
    model : SurvivalPipeline
        The refit on every patient (preprocessing and model).
    kernel, recalibrator, explainer
        The fitted models evaluated together, the per-horizon recalibration map and the explainer.
    risk_cuts : tuple of float
        The risk tertile cut-offs of the training patients (``risk_group``).
    training_ranges : dict
        Per field, the training range or categories (out-of-range warnings); ``fields_used`` the fields read.
    metadata : dict
        JSON-able description of the training (cohort, metrics, calibration, interval method, ...).
    replicates : BootstrapCurves or None
        The bootstrap replicates behind the confidence band (``None`` in bundles that predate them).

    Examples
    --------
    >>> from crlm.cohort.simulate import simulate_cohort
    >>> predictor = train_predictor(simulate_cohort(300, seed=1), "os", "coxph", n_interval_models=5)
    >>> answer = predictor.predict([{"age_years": 64.0, "n_liver_metastases": 2, "largest_metastasis_cm": 3.5}])
    >>> [h["months"] for h in answer[0]["horizons"]]
    [12.0, 36.0, 60.0]
    """

    endpoint: str
    endpoint_label: str
    model_name: str
    params: dict
    horizons: tuple[float, ...]
    curve_times: np.ndarray
    model: SurvivalPipeline
    kernel: SurvivalKernel  # the refit (the point estimate); bundles before bootstrap_curves also hold refits
    recalibrator: Recalibrator
    explainer: Explainer | ScoreExplainer
    risk_cuts: tuple[float, float]
    training_ranges: dict
    fields_used: list[str]
    metadata: ModelMetadata = field(default_factory=ModelMetadata)  # the contract (crlm.model_metadata)
    replicates: BootstrapCurves | None = None  # the confidence interval's bootstrap replicates

    def __setattr__(self, name: str, value) -> None:
        if name == "metadata":  # always the typed document, whatever a caller (or an old bundle) hands over
            value = ModelMetadata.coerce(value)
        super().__setattr__(name, value)

    def __setstate__(self, state: dict) -> None:
        # bundles pickled before ModelMetadata hold a plain dict
        self.__dict__.update(state | {"metadata": ModelMetadata.coerce(state.get("metadata"))})

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

    def refit_curves(self, Z: pd.DataFrame, columns: CanonicalColumns) -> np.ndarray:
        """Calibrated survival at ``curve_times`` of the refit and of each bootstrap replicate.

        Parameters
        ----------
        Z : DataFrame
            The model matrix of the patients (the pipeline's preprocessing applied).
        columns : CanonicalColumns
            The same patients' canonical columns (the replicates preprocess them themselves).

        Returns
        -------
        ndarray
            Shape (1 + B, n, T): the refit at index 0, then the B replicates; t = 0 is S = 1.
        """
        curves = self.recalibrator.apply(self.kernel.survival(Z))  # (K, n, T - 1)
        replicates = self.replicates.survival(columns) if self.replicates is not None else curves[1:]
        stacked = np.concatenate([curves[:1], replicates])
        return np.concatenate([np.ones(stacked.shape[:2] + (1,)), stacked], axis=2)

    def band(self, point: np.ndarray, replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compute the 95% confidence band of a survival estimate from its bootstrap replicates.

        Parameters
        ----------
        point : ndarray
            The estimate, shape (n, T).
        replicates : ndarray
            The bootstrap replicates, shape (B, n, T).

        Returns
        -------
        lower : ndarray
            The band's lower bound, shape (n, T).
        upper : ndarray
            The band's upper bound, shape (n, T).
        """
        if self.replicates is not None:
            return self.replicates.band(point, replicates)
        # an older bundle: model-step refits in the kernel, plain percentiles
        return np.quantile(replicates, 0.025, axis=0), np.quantile(replicates, 0.975, axis=0)

    def _curves(self, Z: pd.DataFrame, columns: CanonicalColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated survival (n, T) at ``curve_times`` with its 95% confidence interval (t = 0 is S = 1)."""
        curves = self.refit_curves(Z, columns)[..., 1:]
        point = curves[0]
        lower, upper = self.band(point, curves[1:])
        ones = np.ones((len(Z), 1))
        return (np.hstack([ones, point]), np.hstack([ones, np.minimum.accumulate(lower, axis=1)]),
                np.hstack([ones, np.minimum.accumulate(upper, axis=1)]))

    def predict(self, rows, top: int = 6) -> list[dict]:
        """Answer for each patient: survival at the horizons with intervals, curve, group, reasons, warnings.

        Parameters
        ----------
        rows : DataFrame, list of dict or CanonicalColumns
            Patient records (canonical field names; a field the models do not use may be absent).
        top : int, default 6
            How many contributions (largest first) each answer lists.

        Returns
        -------
        list of dict
            One answer per patient, in order (``docs/PREDICTOR.md``): ``horizons`` (months, survival, lower,
            upper), ``curve``, ``median_months``, ``risk_score``, ``risk_group``, ``contributions``, ``warnings``.

        Raises
        ------
        ValueError
            No patients, or a served score that cannot be computed for a patient (its missing factors named).
        """
        columns, Z = self._prepare(rows)
        risk = self.risk(Z)
        if np.isnan(risk).any():
            raise ValueError(_uncomputable(self, columns, np.flatnonzero(np.isnan(risk))))
        surv, lower, upper = self._curves(Z, columns)
        records = columns.records()
        explanations = self.explainer.explain(Z, records, top=top)
        warnings = self.warnings(columns)
        months = self.curve_times.tolist()
        # whole-batch conversions to Python values (one call per array, not per patient)
        at = [j for _, j in self._horizon_columns]
        horizon_months = [float(h) for h, _ in self._horizon_columns]
        at_horizons = zip(surv[:, at].tolist(), lower[:, at].tolist(), upper[:, at].tolist(), strict=True)
        curves = zip(surv.round(5).tolist(), lower.round(5).tolist(), upper.round(5).tolist(), strict=True)
        medians = median_times(self.curve_times, surv)
        groups = self.risk_groups(risk)
        answers = []
        for i, ((s, lo, up), (cs, cl, cu), risk_i) in enumerate(zip(at_horizons, curves, risk.tolist(), strict=True)):
            answers.append({
                "endpoint": self.endpoint,
                "endpoint_label": self.endpoint_label,
                "risk_score": risk_i,
                "horizons": [{"months": h, "survival": a, "lower": b, "upper": c}
                             for h, a, b, c in zip(horizon_months, s, lo, up, strict=True)],
                "median_months": medians[i],
                "median_reached": medians[i] is not None,
                "risk_group": groups[i],
                "curve": {"months": months, "survival": cs, "lower": cl, "upper": cu},
                "contributions": explanations[i],
                "warnings": warnings[i],
            })
        return answers

    def scenarios(self, row) -> dict:
        """One patient's answers under each preoperative chemotherapy response, everything else as given.

        Parameters
        ----------
        row : dict or one-row DataFrame
            The patient's record.

        Returns
        -------
        dict
            See ``crlm.scenarios.response_scenarios``: associational, not a treatment effect; unavailable, with
            the reason, for a model that does not use the response fields.
        """
        return response_scenarios(self, row)

    def conditional(self, rows, event_free_months: float) -> list[dict]:
        """Survival given event-free (OS: alive) ``event_free_months`` after resection.

        Parameters
        ----------
        rows : DataFrame, list of dict or CanonicalColumns
            Patient records, as for ``predict``.
        event_free_months : float
            Months since resection the patients are known to be event-free.

        Returns
        -------
        list of dict
            Per patient (``crlm.conditional.conditional_answers``): the curve from then on and the horizons
            (months from now) with intervals, S(t) / S(s) per bootstrap refit.
        """
        columns, Z = self._prepare(rows)
        return conditional_answers(self.curve_times, self.refit_curves(Z, columns), self.horizons,
                                   event_free_months, self.endpoint, band=self.band)

    def risk(self, Z: pd.DataFrame) -> np.ndarray:
        """Compute the refit's risk score (higher = worse) of each patient.

        Parameters
        ----------
        Z : DataFrame
            The model matrix of the patients.

        Returns
        -------
        ndarray
            One risk per patient (NaN where a served score cannot be computed).
        """
        if self.kernel.kind == "generic":
            return np.asarray(final_estimator(self.model).predict(Z), dtype=float)
        return self.kernel.linear_predictors(Z)[:, 0]  # the refit's log-hazard = its predict()

    def predict_frame(self, rows) -> pd.DataFrame:
        """Answer for every patient as one flat table (batch scoring, the MLflow pyfunc).

        A served score leaves the rows it cannot rate missing (every output NaN) with the reason in
        ``warnings`` (missing in, missing out).

        Parameters
        ----------
        rows : DataFrame, list of dict or CanonicalColumns
            Patient records, as for ``predict``.

        Returns
        -------
        DataFrame
            One row per patient: ``risk_score``, ``risk_group``, ``median_months``, ``surv_<h>`` with
            ``surv_<h>_lower`` / ``surv_<h>_upper`` per horizon, ``explanation`` and ``warnings``.
        """
        columns = canonical_columns(rows)
        rated = np.ones(columns.n_rows, dtype=bool)
        if is_score_model(self.model_name):
            rated = np.isfinite(self.risk(self._prepare(columns)[1]))
            rows = columns.frame()[rated].reset_index(drop=True)
        answers = iter(self.predict(rows if not rated.all() else columns, top=3) if rated.any() else [])
        records = []
        for i in range(columns.n_rows):
            if not rated[i]:
                records.append({"warnings": _uncomputable(self, columns, np.array([i]))})
                continue
            a = next(answers)
            rec = {"risk_score": a["risk_score"], "risk_group": a["risk_group"],
                   "median_months": np.nan if a["median_months"] is None else a["median_months"]}
            for h in a["horizons"]:
                tag = f"{h['months']:g}"
                rec[f"surv_{tag}"], rec[f"surv_{tag}_lower"], rec[f"surv_{tag}_upper"] = (
                    h["survival"], h["lower"], h["upper"])
            rec["explanation"] = "; ".join(c["sentence"] for c in a["contributions"])
            rec["warnings"] = "; ".join(a["warnings"])
            records.append(rec)
        horizons = [f"surv_{h:g}{end}" for h in self.horizons for end in ("", "_lower", "_upper")]
        return pd.DataFrame(records, columns=["risk_score", "risk_group", "median_months", *horizons,
                                              "explanation", "warnings"])

    @functools.cached_property
    def _horizon_columns(self) -> list[tuple[float, int]]:
        return [(h, int(np.flatnonzero(np.isclose(self.curve_times, h))[0])) for h in self.horizons]

    def risk_group(self, risk: float) -> str:
        """Name the risk group of a risk score by the training tertiles.

        Parameters
        ----------
        risk : float
            A risk score of this model.

        Returns
        -------
        str
            ``"low"``, ``"intermediate"`` or ``"high"``.
        """
        low, high = self.risk_cuts
        return "low" if risk <= low else "high" if risk > high else "intermediate"

    def risk_groups(self, risk: np.ndarray) -> list[str]:
        """``risk_group`` of every risk score (one vectorised comparison)."""
        low, high = self.risk_cuts
        return np.where(risk <= low, "low", np.where(risk > high, "high", "intermediate")).tolist()

    # ------------------------------------------------------------------ the inputs the models use

    @functools.cached_property
    def used_fields(self) -> list[str]:
        """List the fields the answer depends on (``crlm.model_inputs``).

        A field the models never use need not be given and draws no warning.

        Returns
        -------
        list of str
            Canonical field names, in the order of ``fields_used``.
        """
        if is_score_model(self.model_name):  # a served score uses exactly its factors (or its recorded total)
            return list(self.fields_used)
        assert isinstance(self.explainer, Explainer)  # a learned model (a score returned above)
        used = model_inputs.used_columns(self.kernel, len(self.explainer.features))
        names = set(model_inputs.used_fields(self.explainer.features, self.explainer.fields, used, self.fields_used))
        if self.replicates is not None:
            # each bootstrap replicate has its own preprocessing and model: what any of them uses shapes the band
            for pre, kernel in zip(self.replicates.preprocessors, self.replicates.kernels, strict=True):
                features = [str(f) for f in pre.get_feature_names_out()]
                names.update(model_inputs.used_fields(features, [field_of(f) for f in features],
                                                      model_inputs.used_columns(kernel, len(features)),
                                                      self.fields_used))
        return [f for f in self.fields_used if f in names]

    @property
    def required_fields(self) -> list[str]:
        """Used fields without which no prediction is made (the schema's ``required_for_prediction``).

        Returns
        -------
        list of str
            Canonical field names.
        """
        return model_inputs.required_fields(self.used_fields)

    def input_metadata(self) -> dict:
        """Describe what a serving layer needs to build this model's input schema.

        Returns
        -------
        dict
            JSON-able: ``used_fields``, ``required_fields`` and ``accepted_fields``.
        """
        return {"used_fields": self.used_fields, "required_fields": self.required_fields,
                "accepted_fields": model_inputs.accepted_fields(self.used_fields)}

    def warnings(self, columns: CanonicalColumns) -> list[list[str]]:
        """List, per patient, the inputs that were missing and the values outside the training data.

        Parameters
        ----------
        columns : CanonicalColumns
            The patients' canonical columns.

        Returns
        -------
        list of list of str
            Per patient, in the order of ``used_fields``: missing inputs (imputed, or a genomic marker treated
            as unknown) and values outside the training range or categories.
        """
        out: list[list[str]] = [[] for _ in range(columns.n_rows)]
        for name in self.used_fields:
            f = FIELDS_BY_NAME.get(name)
            genomic = f is not None and f.block == "genomic"
            values = columns.get(name)
            missing = np.ones(columns.n_rows, dtype=bool) if values is None else np.asarray(pd.isna(values))
            message = f"{name} is missing and was {'treated as unknown' if genomic else 'imputed'}"
            for i in np.flatnonzero(missing & (not is_score_model(self.model_name))):  # a score imputes nothing
                out[i].append(message)
            rng = self.training_ranges.get(name)
            if values is None or rng is None:
                continue
            present = np.flatnonzero(~missing)  # the checks run on the batch; only flagged patients loop
            if "min" in rng:
                numbers = np.asarray(values[present], dtype=float)
                for i in present[~((rng["min"] <= numbers) & (numbers <= rng["max"]))]:
                    out[i].append(f"{name} {float(values[i]):g} is outside the training range "
                                  f"({rng['min']:g}-{rng['max']:g}): the prediction is an extrapolation")
            elif "categories" in rng:
                texts = np.asarray(values[present]).astype(str)
                unseen = ~np.isin(texts, rng["categories"]) & ~(genomic & (texts == "unknown"))
                for i in present[unseen]:
                    out[i].append(f"{name} {values[i]!r} was not seen in training")
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write the bundle: ``predictor.joblib`` and ``metadata.json``.

        Parameters
        ----------
        directory : str or Path
            Where to write (created if absent).

        Returns
        -------
        Path
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, directory / "predictor.joblib", compress=3)
        (directory / "metadata.json").write_text(self.metadata.to_json())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        """Read a bundle written by ``save``.

        Parameters
        ----------
        directory : str or Path
            The bundle's directory.

        Returns
        -------
        Predictor
            The Predictor, upgraded in memory where the bundle predates a newer kernel.

        Raises
        ------
        FileNotFoundError
            No ``predictor.joblib`` in ``directory``.
        TypeError
            The file does not hold a Predictor.
        """
        path = Path(directory) / "predictor.joblib"
        if not path.exists():
            raise FileNotFoundError(f"no predictor bundle at {directory} (expected {path.name})")
        predictor = joblib.load(path)
        if not isinstance(predictor, cls):
            raise TypeError(f"{path} does not hold a crlm Predictor")
        kernel = predictor.kernel
        if kernel.kind == "generic" and family(kernel.estimators) and hasattr(predictor.explainer, "background"):
            # a tree model bundled before the tree kernel: built and checked on the explainer's training patients
            predictor.kernel = SurvivalKernel(kernel.estimators, kernel.times, predictor.explainer.background)
        return predictor


def _uncomputable(predictor: Predictor, columns: CanonicalColumns, rows: np.ndarray) -> str:
    """Why a served score could not answer: the rows and the fields the score needs that they lack."""
    needed = [f for f in predictor.fields_used if f != "fong_score_recorded"]
    parts = []
    for i in rows[:5]:
        missing = [f for f in needed if f not in columns or pd.isna(columns[f][i])]
        parts.append(f"row {int(i)}: {', '.join(missing) or 'an input'} missing")
    return (f"{predictor.model_name} cannot be computed ({'; '.join(parts)}); the served model is the score "
            "itself, so each of its factors must be given")


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


def median_times(times: np.ndarray, surv: np.ndarray) -> list[float | None]:
    """``median_time`` of every curve (rows of ``surv``), vectorised over the rows."""
    below = surv <= 0.5
    reached = below.any(axis=1)
    j = np.where(reached, below.argmax(axis=1), 1)
    rows = np.arange(len(surv))
    t0, t1 = times[np.maximum(j - 1, 0)], times[j]
    s0, s1 = surv[rows, np.maximum(j - 1, 0)], surv[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        interpolated = np.where(s0 != s1, t0 + (s0 - 0.5) / (s0 - s1) * (t1 - t0), t1)
    value = np.where(j == 0, times[0], interpolated)
    return [float(v) if r else None for v, r in zip(value.tolist(), reached.tolist(), strict=True)]


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
        training_ranges=_training_ranges(population.data, fields_used, cohort.extra_fields), fields_used=fields_used,
        metadata=None)
    # built once: the training facts, the job's own (``metadata``: champion decision, headline, ...) and the inputs
    predictor.metadata = ModelMetadata(**(meta | predictor.input_metadata()))
    return predictor
