"""External validation: a registered model scored on a new labelled cohort without refitting.

What ``crlm evaluate`` reports (on the patients with the endpoint recorded):
- discrimination (Harrell and Uno C, AUC(t), mean AUC), accuracy (Brier, IBS, IPA) and calibration (O/E,
  slope, ICI) of the model's calibrated survival at each horizon, with percentile-bootstrap 95% intervals over
  patients (the benchmark's own evaluation and bootstrap, ``crlm.evaluation.benchmark``);
- the ICI noise floor: the ICI a perfectly calibrated model would show on this many patients with this
  censoring (outcomes simulated from the model's own curves, censoring from the cohort's reverse
  Kaplan–Meier); an ICI inside it is not evidence of miscalibration;
- every score computable on the cohort (published, and recorded scores the mapping declares), on the
  patients where it is computable, with the model on the same patients and the paired difference in C.
  Scores get discrimination only: their probabilities would have to be fitted on this very cohort;
- decision curves (``crlm.evaluation.decision_curves``) of the model, the scores' high-risk groups, treat
  all and treat none;
- warnings where the cohort differs from the model's training data (fields missing and imputed, values out
  of the training range, categories not seen in training).
"""

from __future__ import annotations

__all__ = [
    "DISCRIMINATION", "ExternalEvaluation", "MODEL", "ModelSource", "evaluate_external", "field_differences",
    "ici_noise_floor", "load_model", "log_evaluation", "predict_survival", "score_label",
]

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from crlm.cohort.base import Cohort, predictors_frame
from crlm.evaluation import decision_curves as dc
from crlm.evaluation.benchmark import _paired, _tidy
from crlm.evaluation.calibration import binned_calibration, calibration_slope, ici
from crlm.evaluation.intervals import bootstrap_indices, percentile_interval
from crlm.evaluation.metrics import usable_horizons
from crlm.evaluation.oof import OOF, bootstrap_oof, evaluate_oof
from crlm.kaplan_meier import censoring_curve
from crlm.model_metadata import Registration
from crlm.models import final_estimator, make_model
from crlm.models.zoo import RECORDED_PREFIX
from crlm.predictor import Predictor
from crlm.scores import SCORES, score_coverage

MODEL = "model"
DISCRIMINATION = ("harrell_c", "uno_c", "auc", "mean_auc")


@dataclass
class ModelSource:
    """Where an evaluated model came from (the lineage written to MLflow)."""

    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None


@dataclass
class ExternalEvaluation:
    source: ModelSource
    predictor: Predictor
    cohort_name: str
    n: int
    events: int
    horizons: list[float]
    metrics: pd.DataFrame  # tidy: model, kind, metric, horizon, estimate, ci_low, ci_high, n, interval
    comparisons: pd.DataFrame  # paired difference model - score on the patients the score rates
    noise_floor: pd.DataFrame  # per horizon: ICI of a perfectly calibrated model, median and 95th percentile
    decision_curves: pd.DataFrame
    decision_summary: pd.DataFrame  # net benefit at a few thresholds with 95% bootstrap intervals
    field_warnings: list[str]
    score_coverage: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    y: np.ndarray | None = None
    survival: np.ndarray | None = None  # (n, len(times)) calibrated survival of the model
    times: np.ndarray | None = None

    def headline(self) -> pd.DataFrame:
        """The model's and the scores' main metrics with intervals, one row per model and metric."""
        m = self.metrics
        keep = m.metric.isin(["harrell_c", "uno_c", "mean_auc", "ibs", "auc", "brier", "oe", "slope", "ici"])
        return m[keep][["model", "metric", "horizon", "estimate", "ci_low", "ci_high", "n"]].reset_index(drop=True)


def load_model(model: str) -> tuple[Predictor, ModelSource]:
    """A Predictor from ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a bundle directory."""
    if model.startswith("models:/"):
        # deferred: MLflow loads only for a registry model (a bundle directory does not need it)
        import mlflow
        from mlflow import MlflowClient

        from crlm import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        spec = model.removeprefix("models:/")
        client = MlflowClient()
        try:
            if "@" in spec:
                name, alias = spec.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
            else:
                name, number = spec.rsplit("/", 1)
                version = client.get_model_version(name, number)
        except mlflow.exceptions.MlflowException as err:
            raise ValueError(f"model {model!r} not found in {tracking.tracking_uri()}: {err.message}") from None
        predictor = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").unwrap_python_model().predictor
        return predictor, ModelSource(model, name, str(version.version), version.run_id)
    predictor = Predictor.load(Path(model))
    registration = Registration.read(Path(model), predictor.metadata)
    return predictor, ModelSource(str(model), registration.registered_name, registration.version, None)


def field_differences(predictor: Predictor, data: pd.DataFrame) -> list[str]:
    """How the cohort differs from the model's training data, one sentence per field."""
    out = []
    n = len(data)
    for name in predictor.fields_used:
        if name not in data:
            out.append(f"{name}: not in this cohort; imputed for all {n} patients")
            continue
        col = data[name]
        missing = int(col.isna().sum())
        if missing:
            out.append(f"{name}: missing and imputed for {missing} of {n} patients")
        rng = predictor.training_ranges.get(name, {})
        known = col.dropna()
        if "min" in rng:
            values = pd.to_numeric(known, errors="coerce")
            outside = values[(values < rng["min"]) | (values > rng["max"])]
            if len(outside):
                out.append(f"{name}: {len(outside)} patients outside the training range {rng['min']:g}-"
                           f"{rng['max']:g} (seen {values.min():g}-{values.max():g}): extrapolation")
        elif "categories" in rng:
            unseen = known.astype(str)[~known.astype(str).isin(rng["categories"] + ["unknown"])]
            if len(unseen):
                out.append(f"{name}: categories not seen in training for {len(unseen)} patients: "
                           f"{', '.join(sorted(unseen.unique()))}")
    return out


def predict_survival(predictor: Predictor, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(risk score, calibrated survival (n, T), times T > 0) of the Predictor for canonical rows."""
    _, Z = predictor._prepare(predictors_frame(data))
    surv = predictor.recalibrator.apply(predictor.kernel.survival(Z))[0]  # the refit only: no band needed
    return predictor.risk(Z), surv, np.asarray(predictor.curve_times[1:], dtype=float)


def ici_noise_floor(y, surv: np.ndarray, times: np.ndarray, horizon: float, n_sim: int = 50,
                    seed: int = 0) -> tuple[float, float]:
    """Median and 95th percentile of the ICI at ``horizon`` of a perfectly calibrated model on these patients.

    Parameters
    ----------
    y : structured array
        The cohort's outcomes (their censoring pattern is reused).
    surv : ndarray
        (n, len(times)) the model's survival; event times are drawn from these curves.
    times : ndarray
        Increasing times (months).
    horizon : float
        One of ``times``.
    n_sim : int
        Simulated cohorts.
    seed : int
        Random seed.

    Returns
    -------
    (float, float)
        The median and the 95th percentile of the simulated ICIs (NaN if none could be computed).
    """
    rng = np.random.default_rng(seed)
    j = int(np.argmin(np.abs(times - horizon)))
    g_times, g_surv = censoring_curve(y["time"], y["event"])  # censoring distribution
    values = []
    for _ in range(n_sim):
        u = rng.random(len(y))
        below = surv <= u[:, None]
        k = np.argmax(below, axis=1)  # first grid time with S <= u; linear in between (no artificial ties)
        s1, t1 = surv[np.arange(len(y)), k], times[k]
        s0 = np.where(k > 0, surv[np.arange(len(y)), np.maximum(k - 1, 0)], 1.0)
        t0 = np.where(k > 0, times[np.maximum(k - 1, 0)], 0.0)
        inside = t0 + (s0 - u) / np.maximum(s0 - s1, 1e-12) * (t1 - t0)
        t_event = np.where(below.any(axis=1), inside, np.inf)
        v = rng.random(len(y))
        idx = np.searchsorted(-g_surv, -v, side="left")  # first time the censoring survival falls to v
        t_cens = np.where(idx < len(g_times), g_times[np.minimum(idx, len(g_times) - 1)], y["time"].max())
        sim = np.empty(len(y), dtype=y.dtype)
        sim["event"] = t_event <= t_cens
        sim["time"] = np.minimum(t_event, t_cens)
        with contextlib.suppress(ValueError, np.linalg.LinAlgError):
            values.append(ici(sim, surv[:, j], horizon)["ici"])
    if not values:
        return float("nan"), float("nan")
    return float(np.median(values)), float(np.quantile(values, 0.95))


def _score_totals(cohort: Cohort) -> dict[str, np.ndarray]:
    """Every score computable for some patient: published (``score:<name>``) and recorded (declared)."""
    names = [f"score:{r.score}" for r in score_coverage(cohort.data).itertuples() if r.computable > 0]
    names += [RECORDED_PREFIX + f.name for f in cohort.recorded_scores]
    return {name: final_estimator(make_model(name)).total(cohort.data) for name in dict.fromkeys(names)}


def evaluate_external(predictor: Predictor, cohort: Cohort, source: ModelSource | None = None, *,
                      horizons=None, n_boot: int = 200, seed: int = 0) -> ExternalEvaluation:
    """Score the Predictor on a labelled cohort without refitting (see the module docstring).

    Parameters
    ----------
    predictor : Predictor
        The model as registered.
    cohort : Cohort
        The new cohort (outcome of the model's endpoint recorded for at least some patients).
    source : ModelSource, optional
        Lineage of the model.
    horizons : sequence of float, optional
        Default: the model's horizons; horizons the cohort cannot evaluate are dropped with a warning.
    n_boot : int
        Bootstrap resamples for the 95% intervals.
    seed : int
        Random seed of the bootstrap and the noise floor.

    Returns
    -------
    ExternalEvaluation
    """
    endpoint = predictor.endpoint
    population = cohort.with_outcome(endpoint)
    if len(population) == 0:
        raise ValueError(f"cohort {cohort.name!r}: no patient has the {endpoint} outcome recorded")
    y = population.y(endpoint)
    if y["event"].sum() < 2:
        raise ValueError(f"cohort {cohort.name!r}: {int(y['event'].sum())} {endpoint} events among {len(y)} "
                         "patients: too few to evaluate a model")
    risk, surv, times = predict_survival(predictor, population.data)
    wanted = [h for h in (horizons or predictor.horizons) if np.isclose(times, h).any()]
    if not wanted:
        raise ValueError(f"none of the horizons {list(horizons or predictor.horizons)} is on the model's time grid")
    used = usable_horizons(y, y, wanted)  # the one horizon rule (dropped horizons warn)
    notes = [f"horizon {h:g} dropped: the cohort cannot evaluate it" for h in wanted if h not in used]

    oof = {MODEL: OOF(risk[None, :], surv[None, :, :], np.ones(len(y), dtype=bool))}
    totals = _score_totals(population)
    indices: np.ndarray | list = bootstrap_indices(len(y), n_boot, seed, strata=y["event"]) if n_boot else []
    rows, comparisons = [], []
    point = evaluate_oof(y, oof[MODEL], times, used)
    boot = bootstrap_oof(y, oof[MODEL], times, used, indices, point) if n_boot else None
    rows += _with_slope_intervals(_tidy(MODEL, point, boot, used), y, surv, times, indices)
    for name, total in totals.items():
        valid = ~np.isnan(total)
        if valid.sum() < 10 or y["event"][valid].sum() < 2:
            notes.append(f"{name}: computable for {int(valid.sum())} patients, too few to evaluate")
            continue
        score_oof = _score_oof(name, population, y, times, total, valid)
        same = OOF(oof[MODEL].risk, oof[MODEL].survival, valid)  # the model on the score's patients
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            points = {name: evaluate_oof(y, score_oof, times, used), f"{MODEL} ({name} patients)":
                      evaluate_oof(y, same, times, used)}
            boots = ({name: bootstrap_oof(y, score_oof, times, used, indices, points[name], n_ici=0),
                      f"{MODEL} ({name} patients)": bootstrap_oof(y, same, times, used, indices,
                                                                    points[f"{MODEL} ({name} patients)"], n_ici=0)}
                     if n_boot else {})
        rows += [r for r in _tidy(name, points[name], boots.get(name), used) if r["metric"] in DISCRIMINATION]
        if n_boot:
            comparisons += [r for r in _paired(f"{MODEL} ({name} patients)", name, boots, points, int(valid.sum()))
                            if r["metric"] in ("harrell_c", "uno_c", "mean_auc")]
    metrics = pd.DataFrame(rows)
    metrics["kind"] = np.where(metrics.model == MODEL, "model", "score (discrimination only)")

    floor = []
    for h in used:
        median, p95 = ici_noise_floor(y, surv, times, h, seed=seed)
        floor.append({"horizon": h, "ici_floor_median": median, "ici_floor_p95": p95})
    j = {h: int(np.argmin(np.abs(times - h))) for h in used}
    rules: dict[str, dc.RiskRule] = {f"{predictor.model_name} (predicted risk)": (lambda h: 1.0 - surv[:, j[h]])}
    rules |= dc.score_group_rules(population.data)
    curves = dc.decision_curves(y, rules, used)
    decision_summary = dc.summary_with_intervals(y, rules, used, n_boot=min(n_boot, 200), seed=seed)
    return ExternalEvaluation(
        source=source or ModelSource("(in memory)"), predictor=predictor, cohort_name=cohort.name, n=len(y),
        events=int(y["event"].sum()), horizons=used, metrics=metrics,
        comparisons=pd.DataFrame(comparisons), noise_floor=pd.DataFrame(floor), decision_curves=curves,
        decision_summary=decision_summary,
        field_warnings=field_differences(predictor, population.data),
        score_coverage=score_coverage(population.data), notes=notes, y=y, survival=surv, times=times)


def _with_slope_intervals(rows: list[dict], y, surv, times, indices, n_slope: int = 50) -> list[dict]:
    """Bootstrap intervals for the calibration slope (a Cox fit per resample: the first ``n_slope``), centred
    like the other metrics' (each replicate of the same predictions on resampled patients)."""
    for r in rows:
        if r["metric"] != "slope" or not len(indices):
            continue
        j = int(np.argmin(np.abs(times - r["horizon"])))
        values = []
        for idx in indices[:n_slope]:
            with contextlib.suppress(ValueError, np.linalg.LinAlgError):
                values.append(calibration_slope(y[idx], surv[idx, j], r["horizon"]))
        r["ci_low"], r["ci_high"] = percentile_interval(values)
        r["interval"] = "bootstrap over patients"
    return rows


def _score_oof(name: str, population: Cohort, y, times, total, valid) -> OOF:
    """A score as predictions: its total as the risk; survival from its one-covariate Cox fit on the rated
    patients (only so that the evaluation runs: only discrimination, which the fit cannot change, is kept)."""
    model = make_model(name).fit(population.data, y)
    surv = np.nan_to_num(model.predict_survival(population.data, times), nan=1.0)
    return OOF(np.where(valid, total, 0.0)[None, :], surv[None, :, :], valid)


def score_label(name: str) -> str:
    short = name.removeprefix("score:")
    return SCORES[short].label if short in SCORES else name


def log_evaluation(ev: ExternalEvaluation, experiment: str | None = None) -> str:
    """An MLflow evaluation run (``crlm_role = evaluation``) linked to the model version; returns its id.

    The run carries the tables, the calibration and decision-curve plots and the headline metrics; the model
    version gets a tag pointing at the run."""
    # deferred: MLflow loads only when an evaluation is logged (`crlm evaluate --no-log` does not need it)
    import mlflow
    from mlflow import MlflowClient

    from crlm import tracking

    name = ev.source.name or ev.predictor.model_name
    tracking.setup(experiment or f"crlm-evaluations-{name}")
    with mlflow.start_run(run_name=f"evaluate {name} v{ev.source.version or '?'} on {ev.cohort_name}") as run:
        mlflow.set_tags({"crlm_role": "evaluation", "crlm_source_model": name,
                         "crlm_source_version": str(ev.source.version), "crlm_source_uri": ev.source.uri,
                         "crlm_source_run_id": str(ev.source.run_id), "crlm_cohort": ev.cohort_name,
                         "crlm_endpoint": ev.predictor.endpoint})
        mlflow.log_params({"patients": ev.n, "events": ev.events, "horizons": ",".join(f"{h:g}" for h in ev.horizons)})
        values = {}
        for r in ev.metrics[ev.metrics.model == MODEL].itertuples():
            key = r.metric if np.isnan(r.horizon) else f"{r.metric}_{r.horizon:g}"
            values[key] = r.estimate
            if np.isfinite(r.ci_low):
                values[f"{key}_ci_low"], values[f"{key}_ci_high"] = r.ci_low, r.ci_high
        for r in ev.noise_floor.itertuples():
            values[f"ici_noise_floor_{r.horizon:g}"] = r.ici_floor_median
        mlflow.log_metrics({k: float(v) for k, v in values.items() if np.isfinite(v)})
        for path, frame in {"evaluation/metrics.csv": ev.metrics, "evaluation/paired_vs_scores.csv": ev.comparisons,
                            "evaluation/decision_summary.csv": ev.decision_summary,
                            "evaluation/ici_noise_floor.csv": ev.noise_floor,
                            "evaluation/decision_curves.csv": ev.decision_curves,
                            "evaluation/score_coverage.csv": ev.score_coverage}.items():
            mlflow.log_text(frame.to_csv(index=False), path)
        mlflow.log_text("\n".join(ev.field_warnings + ev.notes) + "\n", "evaluation/warnings.txt")
        for h in ev.horizons:
            mlflow.log_figure(dc.plot(ev.decision_curves, h), f"decision_curves/decision_curve_{h:g}m.png")
            assert ev.times is not None and ev.survival is not None  # evaluate_external records the curves
            j = int(np.argmin(np.abs(ev.times - h)))
            table = binned_calibration(ev.y, ev.survival[:, j], h, groups=min(10, max(3, ev.n // 30)))
            mlflow.log_figure(_calibration_figure(table, h, ev), f"calibration/calibration_{h:g}m.png")
            plt.close("all")
    if ev.source.name and ev.source.version:
        with contextlib.suppress(Exception):  # a bundle without a registry entry has no version to tag
            MlflowClient().set_model_version_tag(ev.source.name, ev.source.version,
                                                 f"evaluation_{ev.cohort_name}", run.info.run_id)
    return run.info.run_id


def _calibration_figure(table: pd.DataFrame, horizon: float, ev: ExternalEvaluation):
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    ax.plot(table["predicted"], table["observed"], "o-")
    ax.set_xlabel(f"predicted risk by {horizon:g} months")
    ax.set_ylabel("observed (Kaplan–Meier) risk")
    ax.set_title(f"{ev.predictor.model_name} on {ev.cohort_name} (n = {ev.n})")
    fig.tight_layout()
    return fig
