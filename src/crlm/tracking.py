"""MLflow: the tracking store, runs, the Predictor as a models-from-code pyfunc, registry aliases.

Runs go to ``MLFLOW_TRACKING_URI`` when set, else to an embedded SQLite store in the project
(``sqlite:///<repo>/mlflow.db``, artifacts under ``<repo>/mlartifacts``). Metric names are identical across
jobs, so the MLflow UI compares runs and experiments directly.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from crlm.ownership import owner_dead
from crlm.paths import project_root
from crlm.predictor import Predictor
from crlm.predictor_training import package_versions
from crlm.reporting.formatting import headline_horizon, horizon_key
from crlm.schema import FIELDS_BY_NAME, input_fields

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
CHAMPION, CHALLENGER = "champion", "challenger"
# MLflow 3's UI opens an experiment without this tag on the GenAI overview (traces, tokens); this value makes it
# a model-training experiment, whose runs list is the model comparison.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
EXPERIMENT_NOTE = (
    "crlm training jobs. Each row named `<job> · <model> · C ...` is one model of one job, evaluated by nested "
    "cross-validation on the same patients: Harrell's C with its 95% bootstrap interval over patients, the "
    "paired difference in C against the reference score (Fong), ICI at 36 months (calibration, lower is better) "
    "and the integrated Brier score (IBS, lower is better). Columns `harrell_c`, `delta_harrell_c_vs_reference`, "
    "`ici_36`, `ibs` sort the comparison; `crlm compare` prints the same table. The `<job> · job` rows hold the "
    "leaderboard, the selection rule, the parallel backend and the timings.")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def setup(experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists (local artifact folder for SQLite)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep job output readable
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    if client.get_experiment_by_name(experiment) is None:
        location = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, never relative to the working directory
            database = Path(uri.removeprefix("sqlite:///")).resolve()
            location = (database.parent / "mlartifacts" / experiment).as_uri()
        client.create_experiment(experiment, artifact_location=location)
    found = mlflow.set_experiment(experiment)
    for key, value in (EXPERIMENT_KIND | {"mlflow.note.content": EXPERIMENT_NOTE}).items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return uri


def dashboard_url(experiment_id: str, base: str | None = None) -> str:
    """The link that opens an experiment's runs list in the MLflow UI as a model comparison.

    MLflow 3.17's UI opens an experiment in its GenAI view on a browser's first visit, whatever the experiment's
    kind; ``workflowType=machine_learning`` (remembered afterwards) opens the training runs instead.

    Parameters
    ----------
    experiment_id : str
    base : str, optional
        The UI's address; default the tracking server's (``http`` URIs) or ``mlflow ui``'s ``127.0.0.1:5000``.
    """
    uri = tracking_uri()
    base = base or (uri if uri.startswith("http") else "http://127.0.0.1:5000")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def flat_params(prefix: str, value) -> dict[str, str]:
    """Nested config -> flat MLflow params (``resampling.outer_repeats``)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= flat_params(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return {prefix: str(value)[:500]}


def headline_metrics(rows: pd.DataFrame, model: str, comparisons: pd.DataFrame | None) -> dict[str, float]:
    """The comparison at a glance, named to sort first in the MLflow UI (which lists metrics alphabetically and
    shows only the first ones on its compare page): ``1_C_harrell`` with its 95% interval, ``2_delta_C_vs_reference``
    (paired, with its interval), ``3_ICI_36`` (or the last horizon) and ``4_IBS``. Copies of the full names'
    values (``harrell_c``, ``delta_harrell_c_vs_reference``, ``ici_36``, ``ibs``)."""
    out: dict[str, float] = {}

    def pick(metric, horizon=None):
        sel = rows[(rows.metric == metric) & (rows.horizon.isna() if horizon is None else rows.horizon == horizon)]
        return sel.iloc[0] if len(sel) else None

    c = pick("harrell_c")
    if c is not None:
        out |= {"1_C_harrell": c.estimate, "1_C_harrell_ci_low": c.ci_low, "1_C_harrell_ci_high": c.ci_high}
    if comparisons is not None and len(comparisons):
        d = comparisons[(comparisons.model == model) & (comparisons.metric == "harrell_c")]
        if len(d):
            d = d.iloc[0]
            out |= {"2_delta_C_vs_reference": d.delta, "2_delta_C_vs_reference_ci_low": d.ci_low,
                    "2_delta_C_vs_reference_ci_high": d.ci_high}
    horizons = sorted(rows.loc[rows.metric == "ici", "horizon"].dropna())
    if horizons:
        h = headline_horizon(horizons)
        out[f"3_ICI_{h:g}"] = pick("ici", h).estimate
    ibs = pick("ibs")
    if ibs is not None:
        out["4_IBS"] = ibs.estimate
    return out


def log_metric_table(metrics: pd.DataFrame, model: str, comparisons: pd.DataFrame | None = None) -> None:
    """Summary metrics with their interval bounds as separate metrics, and per-horizon metrics both named
    (``auc_36``) and as a series over horizon (step = months), so the UI plots metric against time."""
    rows = metrics[metrics.model == model]
    values: dict[str, float] = {}
    for r in rows.itertuples():
        name = r.metric if np.isnan(r.horizon) else f"{r.metric}_{r.horizon:g}"
        values[name] = r.estimate
        if not np.isnan(r.ci_low):
            values[f"{name}_ci_low"], values[f"{name}_ci_high"] = r.ci_low, r.ci_high
    if comparisons is not None and len(comparisons):
        for r in comparisons[comparisons.model == model].itertuples():
            values[f"delta_{r.metric}_vs_reference"] = r.delta
            values[f"delta_{r.metric}_vs_reference_ci_low"] = r.ci_low
            values[f"delta_{r.metric}_vs_reference_ci_high"] = r.ci_high
    values |= headline_metrics(rows, model, comparisons)
    mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)})
    for r in rows[rows.horizon.notna()].itertuples():
        if np.isfinite(r.estimate):
            mlflow.log_metric(f"{r.metric}_by_month", float(r.estimate), step=int(r.horizon))


def model_run_name(job: str, model: str, result) -> str:
    """A model run's name that reads as its comparison: ``sim-os · coxph · C 0.712 [0.680, 0.744] · ΔC vs
    score:fong +0.051 · ICI36 0.021 · IBS 0.181`` (the nested-CV estimates and 95% bootstrap intervals)."""
    row = result.leaderboard().set_index("model").loc[model]
    parts = [f"{job} · {model}"]
    if np.isfinite(row.get("harrell_c", np.nan)):
        parts.append(f"C {row['harrell_c']:.3f} {row.get('harrell_c_ci', '')}".strip())
    delta = row.get("delta_c_vs_ref", np.nan)
    if model != result.spec.reference and delta is not None and np.isfinite(delta):
        parts.append(f"ΔC vs {result.spec.reference.removeprefix('score:')} {delta:+.3f}")
    ici_key = next((k for k in row.index if k.startswith("ici_") and not k.endswith("_ci")), None)
    if ici_key and np.isfinite(row[ici_key]):
        parts.append(f"ICI{ici_key.removeprefix('ici_')} {row[ici_key]:.3f}")
    if np.isfinite(row.get("ibs", np.nan)):
        parts.append(f"IBS {row['ibs']:.3f}")
    return " · ".join(parts)[:250]


def model_run_note(model: str, result) -> str:
    """The run's description (Markdown): the headline figures with their intervals, named for what they are."""
    row = result.leaderboard().set_index("model").loc[model]
    lines = [f"**{model}** ({row['kind']}), n = {row['n']} patients, nested cross-validation "
             f"({result.spec.outer_repeats}x{result.spec.outer_splits}-fold outer); intervals: 95% percentile "
             f"bootstrap over patients ({result.spec.n_boot} resamples).", ""]
    at = headline_horizon(result.horizons)
    for key, label in (("harrell_c", "Harrell's C"), ("uno_c", "Uno's C"), ("delta_c_vs_ref",
                       f"ΔC vs {result.spec.reference} (paired)"), (horizon_key("ici", result.horizons),
                       f"ICI at {at:g} months"), ("ibs", "Integrated Brier score")):
        if key in row.index and np.isfinite(row[key]):
            ci = row.get(f"{key}_ci", "") if key != "delta_c_vs_ref" else row.get("delta_c_ci", "")
            lines.append(f"- {label}: {row[key]:.3f} {ci}".rstrip())
    return "\n".join(lines)


def show_at_top_level(run_id: str) -> None:
    """Unnest a model run in the UI's runs list (MLflow folds child runs under their parent, hiding the models);
    the job run stays linked through the ``crlm_job_run_id`` tag."""
    client = MlflowClient()
    if "mlflow.parentRunId" in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, "mlflow.parentRunId")


def mark_killed_runs(experiment: str | None = None, log=print) -> list[str]:
    """Runs left RUNNING by a job that was killed (its process on this host is gone) are ended as KILLED."""
    client = MlflowClient()
    experiments = ([client.get_experiment_by_name(experiment)] if experiment else client.search_experiments())
    ids = [e.experiment_id for e in experiments if e is not None]
    if not ids:
        return []
    killed = []
    for run in client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=5000):
        if run.data.tags.get("crlm_role") and owner_dead(run.data.tags):
            client.set_tag(run.info.run_id, "crlm_killed", "its process was gone when the next job started")
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
    if killed:
        log(f"marked {len(killed)} run(s) of killed jobs as KILLED")
    return killed


def input_signature(extra_fields: list[dict] | None = None) -> ModelSignature:
    """Every patient field is an optional input column (the Predictor imputes and warns about gaps); a
    centre's own fields (``Predictor.metadata["extra_fields"]``) are columns too."""
    types = {"float": "double", "int": "double", "bool": "boolean", "category": "string", "string": "string"}
    cols: list[ColSpec | TensorSpec] = [ColSpec(types[f.kind], f.name, required=False) for f in input_fields()]
    cols += [ColSpec(types[f["kind"]], f["name"], required=False) for f in extra_fields or []
             if f["block"] != "score"]
    params = ParamSchema([ParamSpec("output", "string", "table")])
    return ModelSignature(inputs=Schema(cols), params=params)


def input_example(data: pd.DataFrame) -> pd.DataFrame:
    """Two patients as the pyfunc's input example (schema fields only, JSON-friendly values)."""
    cols = [c for c in data.columns if c in FIELDS_BY_NAME and FIELDS_BY_NAME[c].block not in ("outcome",)]
    example = data[cols].head(2).copy()
    for c in cols:  # plain dtypes that survive JSON serialisation of the example
        if FIELDS_BY_NAME[c].kind == "bool":
            example[c] = example[c].astype(object).where(example[c].notna(), None)
    return example


def requirements() -> list[str]:
    versions = package_versions()
    return [f"{name}=={version}" for name, version in versions.items() if name not in ("python", "bentoml")]


def log_predictor(predictor: Predictor, example: pd.DataFrame) -> mlflow.models.model.ModelInfo:
    """Log the Predictor as a models-from-code pyfunc (the bundle is an artifact; the crlm package travels
    with it as code, so the model loads where crlm is not installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = predictor.save(Path(tmp) / "predictor")
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={"predictor": str(bundle)},
            signature=input_signature(predictor.metadata.extra_fields), input_example=example,
            pip_requirements=requirements(),
            code_paths=[str(Path(__file__).parent)])


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def set_aliases(name: str, champion_version: str, challenger_version: str | None) -> None:
    client = MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, champion_version)
    if challenger_version is not None:
        client.set_registered_model_alias(name, CHALLENGER, challenger_version)


def champion_version(name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def load_champion(name: str) -> Predictor:
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    return model.unwrap_python_model().predictor


def compare_runs(experiment: str | None = None, history: bool = False) -> pd.DataFrame:
    """The leaderboard across runs in the tracking store: the model runs of published jobs only (a job that
    failed, or was killed before its aliases moved, registered nothing, so its runs are not a result), by default
    the latest published run of each job; ``history`` lists every published run."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    found = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    experiments = [e for e in found if e is not None and e.name.startswith("crlm")]
    if not experiments:
        return pd.DataFrame()
    ids = [e.experiment_id for e in experiments]
    jobs = mlflow.search_runs(experiment_ids=ids, output_format="pandas", filter_string="tags.crlm_role = 'job'")
    if jobs.empty:
        return jobs
    published = jobs.get("tags.crlm_published", pd.Series(None, index=jobs.index))
    # runs from before the published tag count when they finished (they registered last, as now)
    jobs = jobs[(published == "true") | (published.isna() & (jobs.status == "FINISHED"))]
    jobs = jobs.sort_values("start_time", ascending=False)
    if not history:
        jobs = jobs.drop_duplicates(["experiment_id", "tags.crlm_job"])
    runs = mlflow.search_runs(experiment_ids=ids, filter_string="tags.crlm_role = 'model'", output_format="pandas")
    if runs.empty:
        return runs
    link = runs.get("tags.crlm_job_run_id", pd.Series(None, index=runs.index))
    if "tags.mlflow.parentRunId" in runs:  # model runs nested under their job (before they were shown on top)
        link = link.fillna(runs["tags.mlflow.parentRunId"])
    runs = runs.assign(job_run=link)
    runs = runs[runs.job_run.isin(set(jobs.run_id))]
    keep = {"tags.crlm_job": "job", "tags.crlm_model": "model", "job_run": "job_run",
            "metrics.harrell_c": "harrell_c", "metrics.harrell_c_ci_low": "harrell_c_low",
            "metrics.harrell_c_ci_high": "harrell_c_high", "metrics.uno_c": "uno_c",
            "metrics.uno_c_ci_low": "uno_c_low", "metrics.uno_c_ci_high": "uno_c_high",
            "metrics.ibs": "ibs", "metrics.ici_36": "ici_36",
            "metrics.delta_harrell_c_vs_reference": "delta_c_vs_fong", "start_time": "started"}
    table = runs[[c for c in keep if c in runs.columns]].rename(columns=keep)
    return table.sort_values(["job", "started", "uno_c"], ascending=[True, False, False]).reset_index(drop=True)
