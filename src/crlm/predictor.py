"""The Predictor: calibrated survival at the horizons with intervals, explanations and warnings.

One object answers for one endpoint and is what every consumer calls (API, batch scoring, MLflow pyfunc,
tests); its answer format is documented in ``docs/PREDICTOR.md``. ``crlm.predictor_training.train_predictor`` builds it (the steps are in that module's docstring).

A clinical score can be the champion (``crlm.selection``): it is served the same way, the score computed from
the patient's fields (or a recorded total where the score is a recorded one and the request gives it); a
patient whose score cannot be computed gets a ``ValueError`` naming the missing fields.
"""

from __future__ import annotations

__all__ = ["Predictor"]




import functools
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from crlm import model_inputs
from crlm.answer import EndpointAnswer, RiskGroup
from crlm.bootstrap_curves import BootstrapCurves, replicate_quantiles
from crlm.cohort.base import CanonicalColumns, canonical_columns
from crlm.conditional import conditional_answers
from crlm.explain import Explainer, field_of
from crlm.median_survival import median_times
from crlm.model_metadata import ModelMetadata
from crlm.models import SurvivalPipeline, final_estimator, is_score_model
from crlm.recalibration import SurvivalMap
from crlm.scenarios import response_scenarios
from crlm.score_explain import ScoreExplainer
from crlm.survival_kernel import SurvivalKernel
from crlm.tree_kernel import family


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
    recalibrator: SurvivalMap
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

    def _prepare(self, rows, as_array: bool = False) -> tuple[CanonicalColumns, pd.DataFrame | np.ndarray]:
        """(canonical columns, model matrix) of records, a DataFrame or ``CanonicalColumns`` (the API
        canonicalises a request once for both endpoints and the scores). The matrix is a DataFrame, or with
        ``as_array`` an array where every reader of it takes one (``_reads_arrays``: the prediction path)."""
        columns = canonical_columns(rows)
        if columns.n_rows == 0:
            raise ValueError("no patients to predict")
        pre = self.model.steps[0][1]
        if as_array and self._reads_arrays and hasattr(pre, "transform_array"):
            # the kernel and the explainer read the matrix as numbers (columns in the explainer's order)
            return columns, pre.transform_array(columns)
        Z = pre.transform(columns)  # fields the rows lack are missing
        if not isinstance(Z, pd.DataFrame):
            Z = pd.DataFrame(Z, columns=self.explainer.features)
        return columns, Z

    @functools.cached_property
    def _reads_arrays(self) -> bool:
        """Whether every reader of the model matrix takes an array: a fast kernel (not the models' own
        ``predict``, which wants the feature names) and an exact explainer (not occlusion)."""
        explainer = self.explainer
        return (self.kernel.kind in ("linear", "trees") and isinstance(explainer, Explainer)
                and explainer.reads_arrays)

    def refit_curves(self, Z: pd.DataFrame | np.ndarray, columns: CanonicalColumns) -> np.ndarray:
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
        point, replicates = self._point_and_replicates(Z, columns)
        stacked = np.concatenate([point[None], replicates])
        return np.concatenate([np.ones(stacked.shape[:2] + (1,)), stacked], axis=2)

    def _point_and_replicates(self, Z, columns: CanonicalColumns) -> tuple[np.ndarray, np.ndarray]:
        """The refit's calibrated survival (n, T - 1) and the replicates' (B, n, T - 1), at ``curve_times[1:]``."""
        curves = self.recalibrator.apply(self.kernel.survival(Z))  # (K, n, T - 1)
        return curves[0], self.replicates.survival(columns) if self.replicates is not None else curves[1:]

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
        lower, upper = replicate_quantiles(replicates, [0.025, 0.975])  # = np.quantile's, faster
        return lower, upper

    def _curves(self, Z: pd.DataFrame | np.ndarray,
                columns: CanonicalColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated survival (n, T) at ``curve_times`` with its 95% confidence interval (t = 0 is S = 1)."""
        if self.replicates is not None:  # the band from the replicates' log(-log S) where they give it
            point = self.recalibrator.apply(self.kernel.survival(Z))[0]
            lower, upper = self.replicates.interval(point, columns)
        else:
            point, replicates = self._point_and_replicates(Z, columns)
            lower, upper = self.band(point, replicates)
        ones = np.ones((len(Z), 1))
        return (np.hstack([ones, point]), np.hstack([ones, np.minimum.accumulate(lower, axis=1)]),
                np.hstack([ones, np.minimum.accumulate(upper, axis=1)]))

    def predict(self, rows, top: int = 6) -> list[EndpointAnswer]:
        """Answer for each patient: survival at the horizons with intervals, curve, group, reasons, warnings.

        Parameters
        ----------
        rows : DataFrame, list of dict or CanonicalColumns
            Patient records (canonical field names; a field the models do not use may be absent).
        top : int, default 6
            How many contributions (largest first) each answer lists.

        Returns
        -------
        list of EndpointAnswer
            One answer per patient, in order (``crlm.answer.EndpointAnswer``, ``docs/PREDICTOR.md``): ``horizons``
            (months, survival, lower, upper), ``curve``, ``median_months``, ``risk_score``, ``risk_group``,
            ``contributions``, ``warnings``.

        Raises
        ------
        ValueError
            No patients, or a served score that cannot be computed for a patient (its missing factors named).
        """
        columns, Z = self._prepare(rows, as_array=True)
        risk = self.risk(Z)
        if np.isnan(risk).any():
            raise ValueError(model_inputs.uncomputable_score(self.model_name, self.fields_used, columns, np.flatnonzero(np.isnan(risk))))
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
        answers: list[EndpointAnswer] = []  # the typed contract (crlm.answer): mypy checks every key
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
        columns, Z = self._prepare(rows, as_array=True)
        return conditional_answers(self.curve_times, self.refit_curves(Z, columns), self.horizons,
                                   event_free_months, self.endpoint, band=self.band)

    def risk(self, Z: pd.DataFrame | np.ndarray) -> np.ndarray:
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
        records: list[dict[str, object]] = []
        for i in range(columns.n_rows):
            if not rated[i]:
                records.append({"warnings": model_inputs.uncomputable_score(self.model_name, self.fields_used, columns, np.array([i]))})
                continue
            a = next(answers)
            rec: dict[str, object] = {"risk_score": a["risk_score"], "risk_group": a["risk_group"],
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

    def risk_groups(self, risk: np.ndarray) -> list[RiskGroup]:
        """``risk_group`` of every risk score (one vectorised comparison).

        Parameters
        ----------
        risk : numpy.ndarray
            Risk scores of this model, one per patient.

        Returns
        -------
        list of str
            ``"low"``, ``"intermediate"`` or ``"high"`` per score.
        """
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
        return model_inputs.input_warnings(columns, self._warning_rules, imputes=not is_score_model(self.model_name))

    @functools.cached_property
    def _warning_rules(self) -> list[model_inputs.WarningRule]:
        """``model_inputs.warning_rules`` of the used fields (built once)."""
        return model_inputs.warning_rules(self.used_fields, self.training_ranges)

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
