"""The honest benchmark: nested resampling, every model and score on the same patients, paired against Fong.

Design (stated once, reported with the results):
- Population: the patients with the endpoint recorded and a computable reference score (``spec.reference``:
  a published score, a recorded score declared in the mapping, ``auto`` or none; ``crlm.evaluation.references``),
  so that every model and score is compared on identical patients. Other scores are evaluated on the
  patients where they are computable (their ``n`` says so) and compared with the reference on those.
- Outer loop: repeated stratified K-fold (stratified by event). Inner loop: K-fold grid search on the outer
  training part only (Harrell's C as the tuning criterion). No outer test patient reaches ``fit`` or the tuner.
- Out-of-fold (OOF) predictions: each repeat predicts every patient once, from a model that never saw them.
  Metrics are computed on each repeat's pooled OOF predictions and averaged over repeats (the point estimate).
- Intervals: percentile bootstrap over patients (``n_boot`` resamples, stratified by event). Each resample
  re-evaluates every model's repeat-averaged OOF predictions on the same resampled patients, so deltas
  against the reference are paired. Harrell/Uno C, AUC(t), mean AUC, Brier, IBS, IPA and O/E use every
  resample; ICI (a spline fit per resample) uses the first 50. Models are not refitted inside the bootstrap: the interval reflects the uncertainty of the
  performance on this many patients given the cross-validated predictions.
- The censoring distribution for IPCW metrics is estimated from the whole population (outcomes only).

Two reference rows, for simulated cohorts only (``cohort.truth`` set), say how much of the gap between the
learned models and perfection is learnable at all:
- ``oracle``: the generating model's true risk and S(t|x). It uses what no model can see (true mutation status
  where the record says ``unknown``, CEA values that are missing, postoperative facts such as the margin and
  pathological response), so it is an upper bound that no model fitted to the recorded fields can reach.
- ``ceiling`` (``spec.ceiling``): the observed-information ceiling. An ``xgb_cox`` (400 trees, depth 3, the
  spec's blocks and ``postoperative``) fitted on ``spec.ceiling_n`` (50,000) independent patients from the same
  simulator (seed ``CEILING_SEED_OFFSET + spec.seed``), for the same endpoint, from the recorded fields only.
  With that much data the finite-sample error is small, so it approximates the best a model can do with the
  information recorded. Oracle minus ceiling = information the records lack; ceiling minus the best learned
  model = what is lost to learning from this cohort's size.
Both enter as out-of-fold-like predictions (the same for every repeat, valid for every patient: neither ever
saw an evaluated patient) and go through exactly the same evaluation, bootstrap and paired comparison.
"""

from __future__ import annotations

__all__ = [
    "BOOTSTRAP_METRICS", "BenchmarkResult", "BenchmarkSpec", "COMPARISON_COLUMNS", "HIGHER_IS_BETTER",
    "INTERVAL_WORDS", "NON_NEGATIVE", "family_of", "fit_model",
    "model_kind", "prepare_population", "run_benchmark", "score_values",
]

import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold

from crlm import parallel
from crlm.cohort.base import Cohort, predictors_frame
from crlm.evaluation import references
from crlm.evaluation.benchmark_result import (  # the contracts, re-exported: importers use crlm.evaluation.benchmark
    BOOTSTRAP_METRICS,
    HIGHER_IS_BETTER,
    INTERVAL_WORDS,
    NON_NEGATIVE,
    BenchmarkResult,
    BenchmarkSpec,
    model_kind,
)
from crlm.evaluation.intervals import bootstrap_indices, centred_interval, holm
from crlm.evaluation.metrics import (
    harrell_c,
    usable_horizons,
)
from crlm.evaluation.oof import OOF, bootstrap_oof, evaluate_oof
from crlm.evaluation.reference_rows import CEILING, ORACLE, ceiling_oof, oracle_oof
from crlm.models import (
    SEARCH_SPACES,
    final_estimator,
    is_score_model,
    make_model,
    model_family,
    set_endpoint,
)
from crlm.models.zoo import SCORE_PREFIX
from crlm.reporting.formatting import format_interval
from crlm.schema import PREDICTOR_BLOCKS, endpoint

# ------------------------------------------------------------------------------------------- fitting


def _harrell_scorer(estimator, X, y) -> float:
    return harrell_c(y, estimator.predict(X))


def fit_model(name: str, X: pd.DataFrame, y: np.ndarray, spec: BenchmarkSpec, *, blocks=None, seed: int = 0,
              factory: Callable | None = None):
    """Fit one model on training data only, tuning it by inner cross-validation. Returns (model, params)."""
    factory = factory or _default_factory
    model = set_endpoint(factory(name, blocks or spec.blocks, spec.postoperative, list(X.columns), seed),
                         spec.endpoint)
    if not is_score_model(name) and spec.preprocess_params():
        model.set_params(**spec.preprocess_params())
    grid = (spec.search_spaces or {}).get(name, SEARCH_SPACES.get(name, {}))
    if is_score_model(name) or not spec.tune or not grid or _n_combinations(grid) < 2:
        return model.fit(X, y), {}
    inner = list(StratifiedKFold(spec.inner_splits, shuffle=True, random_state=seed).split(X, y["event"]))
    search = GridSearchCV(model, grid, scoring=_harrell_scorer, cv=inner, refit=True, n_jobs=1,
                          error_score=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        search.fit(X, y)
    return search.best_estimator_, dict(search.best_params_)


def _n_combinations(grid) -> int:
    grids = grid if isinstance(grid, list) else [grid]
    return sum(int(np.prod([len(v) for v in g.values()])) for g in grids)


def _default_factory(name, blocks, postoperative, columns, seed):
    return make_model(name, blocks=tuple(blocks), postoperative=postoperative, columns_present=columns,
                      random_state=seed)


@parallel.isolated
def _fold_task(name, fold, train, test, X, y, grid, spec, blocks, factory):
    started = time.perf_counter()
    seed = spec.seed + fold
    model, params = fit_model(name, X.iloc[train], y[train], spec, blocks=blocks, seed=seed, factory=factory)
    X_test = X.iloc[test]
    risk = np.asarray(model.predict(X_test), dtype=float)
    surv = np.asarray(model.predict_survival(X_test, grid), dtype=float)
    return name, fold, test, risk, surv, params, time.perf_counter() - started


# ------------------------------------------------------------------------------------------- evaluation


def _tidy(model: str, point: dict, boot: pd.DataFrame | None, horizons) -> list[dict]:
    rows = []
    for key, value in point.items():
        if key in ("n", "n_events"):
            continue
        metric, horizon = key, np.nan
        for h in horizons:
            suffix = f"_{h:g}"
            if key.endswith(suffix) and key != "uno_tau":
                metric, horizon = key[: -len(suffix)], float(h)
        low = high = np.nan
        if boot is not None and key in boot:
            low, high = centred_interval(boot[key], float(value))
            if metric in NON_NEGATIVE:  # recentring can cross 0 for an estimate near 0; the metric cannot
                low = max(low, 0.0)
        rows.append({"model": model, "kind": model_kind(model), "metric": metric, "horizon": horizon,
                     "estimate": float(value), "ci_low": low, "ci_high": high, "n": int(point["n"]),
                     "interval": INTERVAL_WORDS if not np.isnan(low) else ""})
    return rows


def _paired(model, ref, boots, points, valid_both_n) -> list[dict]:
    rows = []
    for metric in BOOTSTRAP_METRICS:
        delta = boots[model][metric].to_numpy() - boots[ref][metric].to_numpy()
        delta = delta[~np.isnan(delta)]
        point = points[model][metric] - points[ref][metric]
        low, high = centred_interval(delta, point)
        better = delta > 0 if HIGHER_IS_BETTER[metric] else delta < 0
        p = float(min(1.0, 2 * min(better.mean(), 1 - better.mean()))) if len(delta) else np.nan
        rows.append({"model": model, "reference": ref, "metric": metric, "delta": float(point), "ci_low": low,
                     "ci_high": high, "p_value": p, "n": valid_both_n,
                     "better_than_reference": bool(low > 0) if HIGHER_IS_BETTER[metric] else bool(high < 0)})
    return rows


COMPARISON_COLUMNS = ["model", "reference", "metric", "delta", "ci_low", "ci_high", "p_value", "p_holm", "n",
                      "better_than_reference"]


def _compare_with_reference(oof, points, boots, y, grid, horizons, indices, spec) -> pd.DataFrame:
    """Paired differences against the reference, always on the patients both sides can score.

    When a model scores fewer patients than the reference (a partly computable score), both are re-evaluated
    and re-bootstrapped on the intersection, so the delta never mixes two populations. p-values are
    Holm-adjusted per metric across the compared models (oracle and ceiling are reference rows, not candidates).
    """
    ref = spec.reference
    rows: list[dict] = []
    if not ref or not spec.n_boot or ref not in oof:
        return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    for m in oof:
        if m == ref:
            continue
        both = oof[m].valid & oof[ref].valid
        if both.all() or (np.array_equal(both, oof[m].valid) and np.array_equal(both, oof[ref].valid)):
            pair_points, pair_boots = points, boots
        else:
            pair = {k: OOF(oof[k].risk, oof[k].survival, both) for k in (m, ref)}
            pair_points = {k: evaluate_oof(y, o, grid, horizons) for k, o in pair.items()}
            pair_boots = {k: bootstrap_oof(y, o, grid, horizons, indices, pair_points[k], n_ici=0)
                          for k, o in pair.items()}
        rows += _paired(m, ref, pair_boots, pair_points, int(both.sum()))
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    candidates = ~frame.model.isin([ORACLE, CEILING])
    for metric in BOOTSTRAP_METRICS:
        sel = candidates & (frame.metric == metric)
        frame.loc[sel, "p_holm"] = holm(frame.loc[sel, "p_value"].to_numpy())
    return frame


# ------------------------------------------------------------------------------------------- the run


def prepare_population(cohort: Cohort, spec: BenchmarkSpec) -> tuple[Cohort, list[str]]:
    """The patients every model is compared on, with clear errors for data that cannot be benchmarked."""
    endpoint(spec.endpoint)  # unknown endpoint -> ValueError naming the known ones
    notes = []
    if len(cohort) == 0:
        raise ValueError(f"cohort {cohort.name!r} is empty: nothing to benchmark")
    population = cohort.with_outcome(spec.endpoint)
    if len(population) < len(cohort):
        notes.append(f"{len(cohort) - len(population)} patients without the {spec.endpoint} outcome excluded")
    if spec.reference:
        if spec.reference.startswith(SCORE_PREFIX + "column:") is False:
            references.resolve(spec.reference, population)  # not computable for anyone: say what is missing
        scores = score_values(spec.reference, population.data)
        has_ref = ~np.isnan(scores)
        if has_ref.sum() < len(population):
            notes.append(f"{int((~has_ref).sum())} patients without a computable {spec.reference} excluded, so "
                         f"every model is compared on the same {int(has_ref.sum())} patients")
        population = population.subset(has_ref)
    y = population.y(spec.endpoint) if len(population) else np.array([])
    n_events = int(y["event"].sum()) if len(y) else 0
    min_events = spec.outer_splits * spec.inner_splits * 2
    if n_events == 0:
        raise ValueError(f"cohort {cohort.name!r} has no {spec.endpoint} events among {len(population)} patients: "
                         "discrimination and calibration are undefined")
    if n_events < min_events or len(population) < 4 * spec.outer_splits * spec.inner_splits:
        raise ValueError(f"cohort {cohort.name!r}: {len(population)} patients with {n_events} events is too few "
                         f"for {spec.outer_splits}-fold outer x {spec.inner_splits}-fold inner resampling "
                         f"(need at least {min_events} events)")
    return population, notes


def run_benchmark(cohort: Cohort, spec: BenchmarkSpec | None = None, *, factory: Callable | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> BenchmarkResult:
    """Benchmark models against the reference by nested resampling on one cohort (module docstring).

    Parameters
    ----------
    cohort : Cohort
        The patients with their outcomes.
    spec : BenchmarkSpec, optional
        Models, baselines, reference, horizons, resampling and bootstrap sizes (default: ``BenchmarkSpec()``).
    factory : callable, optional
        ``factory(name, blocks, postoperative, columns, seed)`` -> an unfitted model, instead of the zoo's
        ``make_model`` (tests use it to spy on what reaches ``fit``).
    progress : callable, optional
        ``progress(stage, done, total)``, called as the work advances.

    Returns
    -------
    BenchmarkResult
        Out-of-fold predictions, metrics with bootstrap intervals, paired comparisons against the reference,
        the ablation, the chosen hyperparameters and notes (``docs/ARCHITECTURE.md``, the contracts).

    Raises
    ------
    ValueError
        An unknown model or endpoint, an empty cohort, or too few events, before any work is done.
    """
    spec = spec or BenchmarkSpec()
    spec, ref_notes = references.fit_spec(spec, cohort)  # reference, recorded scores, the centre's fields
    for name in (*spec.models, *spec.baselines, spec.reference):
        if name:
            make_model(name)  # unknown model names fail here, before any work
    timings: dict[str, float] = {}
    started = time.perf_counter()
    population, notes = prepare_population(cohort, spec)
    coverage, coverage_notes = references.coverage_table(population)
    notes = ref_notes + notes + coverage_notes
    y = population.y(spec.endpoint)
    X = predictors_frame(population.data)
    parallel.scatter(X, y)  # on a cluster: sent to the workers once, not with every fit
    horizons = usable_horizons(y, y, spec.horizons)
    grid = _grid(y, horizons)
    splitter = RepeatedStratifiedKFold(n_splits=spec.outer_splits, n_repeats=spec.outer_repeats,
                                       random_state=spec.seed)
    folds = list(splitter.split(X, y["event"]))
    names = list(dict.fromkeys([*spec.models, *(b for b in spec.baselines if b != spec.reference),
                                *([spec.reference] if spec.reference else [])]))
    names = [n for n in names if is_score_model(n) is False or _score_computable(n, X)]

    oof, params = _cross_validate(names, folds, X, y, grid, spec, spec.blocks, factory, progress, "models")
    timings["fit_and_predict"] = time.perf_counter() - started
    if population.truth is not None:
        oof[ORACLE] = oracle_oof(population, spec, grid)
        if spec.ceiling:
            t0 = time.perf_counter()
            oof[CEILING], note = ceiling_oof(cohort, X, spec, grid)
            notes.append(note)
            timings["ceiling"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    points = {m: evaluate_oof(y, o, grid, horizons) for m, o in oof.items()}
    timings["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    indices: list | np.ndarray = (bootstrap_indices(len(y), spec.n_boot, spec.seed, strata=y["event"])
                                  if spec.n_boot else [])
    boots = ({m: bootstrap_oof(y, oof[m], grid, horizons, indices, points[m]) for m in oof}
             if spec.n_boot else {})
    timings["bootstrap"] = time.perf_counter() - t0

    metric_rows = [r for m in oof for r in _tidy(m, points[m], boots.get(m), horizons)]
    comparisons = _compare_with_reference(oof, points, boots, y, grid, horizons, indices, spec)

    t0 = time.perf_counter()
    ablation = _ablation(points, boots, folds, X, y, grid, horizons, spec, factory, progress, indices)
    timings["ablation"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return BenchmarkResult(spec=spec, cohort_name=cohort.name, population=population, y=y, horizons=horizons,
                           grid=grid, folds=folds, oof=oof, metrics=pd.DataFrame(metric_rows),
                           comparisons=comparisons,
                           ablation=ablation, chosen_params=params, timings=timings, notes=notes,
                           score_coverage=coverage)


def _grid(y, horizons) -> np.ndarray:
    """Times at which OOF survival is stored: monthly up to the last follow-up, plus the horizons."""
    t_max = float(np.max(y["time"]))
    return np.unique(np.concatenate([[0.5], np.arange(1.0, np.ceil(t_max) + 1.0, 1.0), horizons]))


def score_values(name: str, X: pd.DataFrame) -> np.ndarray:
    """A score model's total per patient (NaN where a component is missing)."""
    return final_estimator(make_model(name)).total(X)


def _score_computable(name: str, X: pd.DataFrame) -> bool:
    return bool(np.any(~np.isnan(score_values(name, X))))


def _cross_validate(names, folds, X, y, grid, spec, blocks, factory, progress, stage):
    tasks = [(name, k, train, test) for k, (train, test) in enumerate(folds) for name in names]
    done = 0

    def report(_):
        nonlocal done
        done += 1
        if progress:
            progress(stage, done, len(tasks))

    # One call, results in submission order as they arrive (progress); the backend is the job's (crlm.parallel).
    results = []
    out = Parallel(n_jobs=spec.n_jobs, return_as="generator")(
        delayed(_fold_task)(name, k, train, test, X, y, grid, spec, blocks, factory) for name, k, train, test in tasks)
    for r in out:
        report(r)
        results.append(r)
    n, repeats = len(y), spec.outer_repeats
    oof = {}
    for name in names:
        risk = np.full((repeats, n), np.nan)
        surv = np.full((repeats, n, len(grid)), np.nan)
        for res_name, k, test, r, s, _, _ in results:
            if res_name == name:
                risk[k // spec.outer_splits, test] = r
                surv[k // spec.outer_splits, test] = s
        valid = ~np.isnan(risk).any(axis=0)
        oof[name] = OOF(risk, surv, valid)
    params = pd.DataFrame([{"model": name, "fold": k, "seconds": sec, **p}
                           for name, k, _, _, _, p, sec in results])
    return oof, params


def _ablation(points, boots, folds, X, y, grid, horizons, spec, factory, progress, indices) -> pd.DataFrame:
    """Feature blocks added one at a time (clinical, + genomic, + response) for the best learned models; the
    last step is the benchmarked model itself (its point estimate and bootstrap are reused)."""
    learned = [m for m in spec.models if m in points]
    if not spec.ablation_models or not learned:
        return pd.DataFrame()
    best = sorted(learned, key=lambda m: -points[m]["uno_c"])[: spec.ablation_models]
    order = [b for b in PREDICTOR_BLOCKS if b in spec.blocks]
    steps = [tuple(order[: i + 1]) for i in range(len(order))]
    rows = []
    for blocks in steps:
        if blocks == tuple(order):
            block_oof = None  # the full model: already cross-validated
        else:
            block_oof, _ = _cross_validate(best, folds, X, y, grid, spec, blocks, factory, progress,
                                           f"ablation {'+'.join(blocks)}")
        for m in best:
            if block_oof is None:
                point, boot = points[m], boots.get(m)
            else:
                point = evaluate_oof(y, block_oof[m], grid, horizons)
                boot = bootstrap_oof(y, block_oof[m], grid, horizons, indices, point, n_ici=0) \
                    if len(indices) else None
            row = {"model": m, "blocks": " + ".join(blocks), "n_blocks": len(blocks)}
            for metric in ("harrell_c", "uno_c", "ibs"):
                row[metric] = point[metric]
                if boot is not None:
                    low, high = centred_interval(boot[metric], point[metric])
                    row[f"{metric}_ci"] = format_interval(low, high, enclose="[]")
            rows.append(row)
    return pd.DataFrame(rows)


def family_of(model: str) -> str:
    return model if model in (ORACLE, CEILING) else model_family(model)
