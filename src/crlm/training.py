"""A training job: cohort -> nested benchmark -> tracked runs -> champion Predictor -> registry and export.

Order matters for safety: everything that can fail (loading, benchmarking, building the Predictors, logging)
happens first; publishing (registering the versions, switching the served bundle, moving the ``champion`` /
``challenger`` aliases, in that order: ``crlm.publish``) is the very last step, so a failed job leaves the
registry and the bundle as they were, and a killed one leaves a state the next job's ``recover`` finishes or
undoes. The whole job runs on one parallel backend (``crlm.parallel``: local processes or a Dask cluster).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.data.pandas_dataset import from_pandas

from crlm import parallel, publish, tracking
from crlm.cohort import Cohort, load_cohort
from crlm.cohort.base import predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.config import JobConfig
from crlm.evaluation import plots
from crlm.evaluation.benchmark import BenchmarkResult, BenchmarkSpec, fit_model, model_kind, run_benchmark
from crlm.evaluation.metrics import harrell_c
from crlm.evaluation.optimism import optimism_corrected
from crlm.evaluation.subgroups import subgroup_performance
from crlm.model_metadata import Registration
from crlm.models import is_score_model
from crlm.paths import project_root
from crlm.predictor import Predictor
from crlm.predictor_training import train_predictor
from crlm.reporting.model_card import build_model_card
from crlm.results_store import FailureRecorder, benchmark_tables, persist_benchmark, results_directory
from crlm.scores import SCORES
from crlm.selection import Decision, choose_champion

Progress = Callable[[str, int, int], None]


@dataclass
class JobOutcome:
    config: JobConfig
    result: BenchmarkResult
    champion: str
    runner_up: str | None
    selection_note: str
    predictor: Predictor
    registered_name: str
    champion_version: str
    challenger_version: str | None
    parent_run_id: str
    export_dir: Path
    tracking_uri: str
    timings: dict[str, float] = field(default_factory=dict)


def load_job_cohort(config: JobConfig) -> Cohort:
    if config.cohort.simulate is not None:
        cohort = simulate_cohort(config.cohort.simulate.n, config.cohort.simulate.seed)
    else:
        assert config.cohort.file is not None, "JobConfig validates: a cohort is simulated or read from a file"
        cohort = load_cohort(config.cohort.file, config.cohort.mapping, strict=config.cohort.strict)
    cohort.name = config.cohort_name
    return cohort


def benchmark_spec(config: JobConfig) -> BenchmarkSpec:
    r = config.resampling
    return BenchmarkSpec(endpoint=config.endpoint, horizons=tuple(config.horizons), models=tuple(config.models),
                         baselines=tuple(config.baselines), reference=config.reference,
                         blocks=tuple(config.blocks), postoperative=config.postoperative,
                         outer_splits=r.outer_splits, outer_repeats=r.outer_repeats, inner_splits=r.inner_splits,
                         n_boot=r.n_boot, seed=config.seed, n_jobs=config.n_jobs, search_spaces=config.search_spaces,
                         plain_imputation=tuple(f for f, how in config.missing.items() if how == "impute"))


def select_champion(result: BenchmarkResult, config: JobConfig) -> tuple[str, str | None, str]:
    """The stated rule (``crlm.selection``, settings in ``config.selection``); returns champion, runner-up and
    the rule with its verdict in words."""
    decision = decide_champion(result, config)
    return decision.champion, decision.runner_up, f"{decision.rule}. Verdict: {decision.verdict}"


def decide_champion(result: BenchmarkResult, config: JobConfig) -> Decision:
    sel = config.selection
    return choose_champion(result, config.models, config.reference, metric=sel.metric,
                           ici_horizon=sel.ici_horizon, tie_tolerance=sel.tie_tolerance,
                           noise_floor_resamples=sel.noise_floor_resamples, seed=config.seed,
                           reference_label=reference_label(config.reference))


def reference_label(reference: str) -> str:
    """'score:fong_recorded' -> 'the Fong CRS (recorded)' (the score catalogue's label)."""
    name = reference.removeprefix("score:")
    return f"the {SCORES[name].label}" if name in SCORES else reference


def run_job(config: JobConfig, progress: Progress | None = None, log: Callable[[str], None] = print) -> JobOutcome:
    """Run a training job on its parallel backend (``config.cluster``), after repairing what a killed job left.

    Parameters
    ----------
    config : JobConfig
        The validated job.
    progress : callable, optional
        ``progress(stage, done, total)``; the stage names the backend and its workers (``models [dask 4 workers]``).
    log : callable
        One line of text per message.

    Returns
    -------
    JobOutcome
    """
    tracking.setup(config.experiment_name)
    tracking.mark_killed_runs(config.experiment_name, log)
    publish.recover(config.model_name, export_target(config), log)
    with parallel.backend(config.cluster.address, config.n_jobs, config.cluster.memory_per_worker) as backend:
        dashboard = f"; Dask dashboard {backend.client.dashboard_link}" if backend.client is not None else ""
        log(f"parallel backend: {backend.label()} ({backend.address}{dashboard})")

        def staged(stage: str, done: int, total: int) -> None:
            if progress:
                progress(f"{stage} [{backend.label()}]", done, total)

        return _run_job(config, backend, staged, log)


def export_target(config: JobConfig) -> Path:
    """The served bundle's path (a link to the current versioned bundle): ``models/<registered name>``."""
    return Path(config.export_dir or project_root() / "models" / config.model_name)


def _run_job(config: JobConfig, backend: parallel.Backend, progress: Progress | None,
             log: Callable[[str], None]) -> JobOutcome:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    cohort = load_job_cohort(config)  # strict validation failure raises here: nothing is logged or registered
    log(f"cohort {cohort.name}: {len(cohort)} patients ({cohort.report.summary()})")
    uri = tracking.setup(config.experiment_name)
    spec = benchmark_spec(config)
    with mlflow.start_run(run_name=f"{config.job}") as parent, FailureRecorder() as failure:
        mlflow.set_tags({"crlm_role": "job", "crlm_job": config.job, "crlm_cohort": cohort.name,
                         "crlm_endpoint": config.endpoint, "crlm_published": "false"} | publish.owner())
        mlflow.log_params(backend.params())
        mlflow.log_params(tracking.flat_params("", json.loads(config.model_dump_json())))
        mlflow.log_dict(json.loads(config.model_dump_json()), "config/job.json")
        mlflow.log_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False), "config/job.yaml")
        mlflow.log_dict(tracking.package_versions(), "environment/package_versions.json")
        with warnings.catch_warnings():  # a free-text source matches several MLflow source types; it is a label
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(cohort.data, name=cohort.name, source=cohort.source[:200])
        mlflow.log_input(dataset, context="training")
        mlflow.log_params({"dataset_digest": dataset.digest, "patients": len(cohort)})

        t0 = time.perf_counter()
        result = run_benchmark(cohort, spec, progress=progress)
        timings["benchmark"] = time.perf_counter() - t0
        timings |= {f"benchmark_{k}": v for k, v in result.timings.items()}
        publish.checkpoint("benchmark")
        for note in result.notes:
            log(f"note: {note}")
        # Results first: a failure from here on leaves the benchmark in MLflow and on disk.
        saved = persist_benchmark(result, config.job, results_directory(project_root(), config.job))
        log(f"benchmark results saved: MLflow run {saved.run_id}, {saved.directory}")
        failure.kept = f"benchmark results kept: run {saved.run_id}, {saved.directory}"
        decision = decide_champion(result, config)
        champion, runner_up, rule = decision.champion, decision.runner_up, f"{decision.rule}. Verdict: {decision.verdict}"
        log(f"champion: {champion} (runner-up: {runner_up}); {decision.verdict}")
        mlflow.set_tag("mlflow.runName", f"{config.job} · job · champion {champion}")
        mlflow.log_text(pd.DataFrame(decision.candidates).to_csv(index=False), "leaderboard/champion_decision.csv")

        t0 = time.perf_counter()
        predictors = {m: _build_predictor(m, cohort, result, config, rule,
                                          decision=decision if m == champion else None)
                      for m in [champion, runner_up] if m}
        timings["predictors"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        model_infos, card = _log_model_runs(result, config, champion, predictors, rule, progress)
        _log_job_artifacts(result, champion, rule)
        timings["tracking"] = time.perf_counter() - t0
        mlflow.set_tags({"crlm_champion": champion, "crlm_selection_rule": rule[:5000]})
        mlflow.log_metrics({f"timing_{k}_seconds": v for k, v in timings.items()})  # before anything can fail
        publish.checkpoint("tracking")

        # Last: the registry and the served bundle (crlm.publish: versions, bundle, link switch, aliases).
        name = config.model_name
        tags = {"cohort": cohort.name, "endpoint": config.endpoint, "job": config.job,
                "parent_run_id": parent.info.run_id}
        predictor = predictors[champion]

        def write_bundle(directory: Path, version: str) -> None:
            # the registry identity beside the document, not in it: the registry's copy was logged before it
            _write_bundle(predictor, card, directory, Registration(name, version, "champion"))

        t0 = time.perf_counter()
        published = publish.publish(name, [(m, model_infos[m].model_uri) for m in (champion, runner_up) if m], tags,
                                    write_bundle, export_target(config))
        timings["publish"] = time.perf_counter() - t0
        champion_version, challenger_version = published.champion_version, published.challenger_version
        export_dir = published.bundle
        mlflow.set_tags({"crlm_export_dir": str(export_dir), "crlm_published": "true",
                         "crlm_champion_version": champion_version})
        timings["total"] = time.perf_counter() - started
        mlflow.log_metrics({f"timing_{k}_seconds": timings[k] for k in ("publish", "total")})
    return JobOutcome(config, result, champion, runner_up, rule, predictor, name, champion_version,
                      challenger_version, parent.info.run_id, export_dir, uri, timings)


def _build_predictor(model: str, cohort: Cohort, result: BenchmarkResult, config: JobConfig, rule: str,
                     decision: Decision | None = None) -> Predictor:
    """Final hyperparameters: the same inner tuning applied to all patients; then the Predictor. The champion
    (``decision`` given) also gets its optimism-corrected headline and the decision in words."""
    spec = result.spec
    population = cohort.with_outcome(config.endpoint)
    X = predictors_frame(population.data)
    _, params = fit_model(model, X, population.y(config.endpoint), spec, seed=config.seed)
    params = {k.removeprefix("model__"): v for k, v in params.items()}
    headline = result.metrics[(result.metrics.model == model)]
    summary = {f"{r.metric}{'' if np.isnan(r.horizon) else f'_{r.horizon:g}'}": {
        "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high}
        for r in headline.itertuples() if r.metric in ("harrell_c", "uno_c", "mean_auc", "ibs", "ipa_ibs", "ici", "oe",
                                                      "auc")}
    comp = result.comparisons[(result.comparisons.model == model) & (result.comparisons.metric == "harrell_c")]
    meta = {"selection_rule": rule, "job": config.job, "reference": spec.reference or "none",
            "score_coverage": result.score_coverage.to_dict(orient="records"),
            "validation": (f"nested resampling: {spec.outer_repeats}x{spec.outer_splits}-fold outer, "
                           f"{spec.inner_splits}-fold inner tuning; {spec.n_boot} bootstrap resamples"),
            "metrics": summary,
            "delta_c_vs_reference": (comp.iloc[0][["delta", "ci_low", "ci_high"]].astype(float).to_dict()
                                     if len(comp) else None)}
    if decision is not None:
        meta["champion_verdict"] = decision.verdict
        meta["ici_noise_floor"] = decision.noise_floor
        shipped_params = {**params, **({} if is_score_model(model) else spec.preprocess_params())}
        meta["headline"] = optimism_corrected(model, shipped_params, X, population.y(config.endpoint),
                                              result.horizons, blocks=config.blocks,
                                              postoperative=config.postoperative,
                                              n_boot=config.resampling.optimism_boot, seed=config.seed,
                                              n_jobs=config.n_jobs, endpoint=config.endpoint)
    return train_predictor(cohort, config.endpoint, model, params, horizons=config.horizons,
                           blocks=tuple(config.blocks), postoperative=config.postoperative,
                           n_interval_models=config.n_interval_models, seed=config.seed,
                           interval_refit_preprocessing=config.interval_refit_preprocessing,
                           endpoint_label=config.endpoint, metadata=meta,
                           preprocess_params=spec.preprocess_params(), n_jobs=config.n_jobs)


def _log_model_runs(result, config, champion, predictors, rule, progress):
    model_infos, card = {}, None
    job_run_id = mlflow.active_run().info.run_id
    reference = result.spec.reference
    models = list(result.oof)
    for i, model in enumerate(models):
        with mlflow.start_run(run_name=tracking.model_run_name(config.job, model, result), nested=True) as run:
            mlflow.set_tags({"crlm_role": "model", "crlm_model": model, "crlm_job": config.job,
                             "crlm_kind": model_kind(model), "crlm_is_champion": str(model == champion),
                             "crlm_job_run_id": job_run_id,
                             "mlflow.note.content": tracking.model_run_note(model, result)} | publish.owner())
            params = result.chosen_params[result.chosen_params.model == model].drop(
                columns=["model", "fold", "seconds"]).dropna(axis=1, how="all")
            for col in params.columns:
                mlflow.log_param(f"chosen.{col}", ",".join(map(str, params[col].tolist()))[:500])
            tracking.log_metric_table(result.metrics, model, result.comparisons)
            for h in result.horizons:
                _log_fig(plots.calibration_plot(result, model, h), f"calibration/calibration_{h:g}m.png")
            if reference in result.oof and model != reference and reference.removeprefix("score:") in SCORES:
                _log_fig(plots.km_by_risk_group(result, model, reference=reference), "km/km_by_risk_group.png")
            _log_fig(plots.time_dependent_auc_plot(result, models=[m for m in (model, reference) if m in result.oof]),
                     "discrimination/time_dependent_auc.png")
            if model in predictors:
                predictor = predictors[model]
                importance = field_importance(predictor, result)
                _log_fig(plots.importance_plot(importance.index.tolist(), importance.to_numpy(),
                                               f"{plots.model_label(model)}: mean |contribution| per field "
                                               f"({predictor.explainer.method.split(' (')[0]})"),
                         "explanations/importance.png")
                mlflow.log_text(importance.to_csv(), "explanations/importance.csv")
                subgroups = subgroup_performance(result, model, n_boot=min(100, max(20, config.resampling.n_boot)))
                mlflow.log_text(subgroups.to_csv(index=False), "subgroups/subgroups.csv")
                md, html = build_model_card(predictor.metadata, result, model, subgroups,
                                            registered_name=config.model_name, version=None, selection_rule=rule)
                mlflow.log_text(md, "model_card/model_card.md")
                mlflow.log_text(html, "model_card/model_card.html")
                predictor.metadata = predictor.metadata.replace(model_card=md)  # before the registry's copy is logged
                mlflow.log_dict({k: v for k, v in predictor.metadata.to_dict().items() if k != "model_card"},
                                "predictor/metadata.json")
                head = predictor.metadata.headline or {}
                mlflow.log_metrics({f"headline_optimism_corrected_{k}": v["corrected"] for k, v in head.items()
                                    if isinstance(v, dict) and np.isfinite(v["corrected"])})
                calibration = predictor.metadata.calibration or {}
                mlflow.log_metrics({f"recal_{k}_{h}": v for h, d in calibration.items() for k, v in d.items()})
                example = tracking.input_example(result.population.data)
                model_infos[model] = tracking.log_predictor(predictor, example)
                if model == champion:
                    card = (md, html)
        tracking.show_at_top_level(run.info.run_id)
        if progress:
            progress("tracking", i + 1, len(models))
    return model_infos, card


def field_importance(predictor: Predictor, result: BenchmarkResult, max_patients: int = 300) -> pd.Series:
    """Mean |contribution| per field over (up to) ``max_patients`` training patients, from the explainer."""
    data = result.population.data
    sample = data.sample(min(max_patients, len(data)), random_state=0) if len(data) > max_patients else data
    raw, Z = predictor._prepare(predictors_frame(sample))
    contributions = predictor.explainer.feature_contributions(Z)
    return pd.Series(np.abs(contributions).mean(axis=0), index=predictor.explainer.field_names,
                     name="mean_abs_contribution").sort_values(ascending=False)


def _log_job_artifacts(result: BenchmarkResult, champion: str, rule: str) -> None:
    for path, text in benchmark_tables(result).items():  # also on the job run, where the UI looks first
        mlflow.log_text(text, path)
    if len(result.comparisons):
        _log_fig(plots.forest_plot(result, "harrell_c"), "leaderboard/forest_delta_c.png")
    _log_fig(plots.time_dependent_auc_plot(result), "leaderboard/time_dependent_auc.png")
    mlflow.log_text(rule, "leaderboard/selection_rule.txt")
    champ = result.oof[champion]
    mlflow.log_metric("champion_oof_harrell_c_repeat0", harrell_c(result.y[champ.valid], champ.risk[0][champ.valid]))


def _log_fig(fig, path: str) -> None:
    mlflow.log_figure(fig, path)
    plt.close(fig)


def _write_bundle(predictor: Predictor, card, directory: Path, registration: Registration) -> None:
    """The champion bundle for serving (``crlm.publish`` writes it beside the served one, then switches): the
    Predictor and its ``metadata.json`` (the registry version's very document), ``registration.json``, the card."""
    predictor.save(directory)
    registration.write(directory)
    if card:
        (directory / "model_card.md").write_text(card[0])
        (directory / "model_card.html").write_text(card[1])
