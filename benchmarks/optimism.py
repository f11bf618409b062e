"""Does the shipped model's headline C tell the truth? Optimism-corrected C vs C on a fresh cohort.

For each seed: a simulated cohort of ``--n`` patients; per model, the hyperparameters are tuned on all of it
exactly as training does (``fit_model``: 3-fold inner grid search, Harrell's C), the pipeline is refitted on
all patients (the shipped model), and its Harrell's C is measured (a) optimism-corrected by Harrell's bootstrap
(``crlm.evaluation.optimism``, ``--boot`` refits) and (b) on a fresh simulated cohort of ``--fresh`` patients
from the same population (seed 10^5 + seed), which is what the headline should predict. With ``--nested``
the nested-CV estimate of the same model (5-fold outer x 1, the benchmark's procedure) is printed too.
Printed: per seed and model, and the mean (and range) of corrected - fresh; the target is |mean| <= 0.01.

Usage: ``.venv/bin/python benchmarks/optimism.py [--seeds 6 --n 500 --boot 200 --fresh 5000 --nested]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from crlm.cohort.base import predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, fit_model, run_benchmark
from crlm.evaluation.metrics import harrell_c
from crlm.evaluation.optimism import optimism_corrected
from crlm.models import make_model
from crlm.schema import DEFAULT_HORIZONS_MONTHS

FRESH_OFFSET = 10**5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="coxph,coxnet,xgb_cox")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--fresh", type=int, default=5000)
    parser.add_argument("--nested", action="store_true", help="also the nested-CV C (5-fold outer x 1)")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    models = args.models.split(",")
    started = time.perf_counter()
    spec = BenchmarkSpec(inner_splits=3)
    rows = []
    for seed in range(1, args.seeds + 1):
        cohort = simulate_cohort(args.n, seed).with_outcome("os")
        X, y = predictors_frame(cohort.data), cohort.y("os")
        fresh = simulate_cohort(args.fresh, FRESH_OFFSET + seed).with_outcome("os")
        X_fresh, y_fresh = predictors_frame(fresh.data)[list(X.columns)], fresh.y("os")
        nested = {}
        if args.nested:
            res = run_benchmark(cohort, BenchmarkSpec(models=tuple(models), baselines=(), reference="",
                                                      outer_splits=5, outer_repeats=1, n_boot=0, ablation_models=0,
                                                      ceiling=False, seed=seed, n_jobs=args.n_jobs))
            nested = {m: res.estimate(m, "harrell_c") for m in models}
        for model in models:
            t0 = time.perf_counter()
            _, params = fit_model(model, X, y, spec, seed=seed)
            params = {k.removeprefix("model__"): v for k, v in params.items()}
            head = optimism_corrected(model, params, X, y, DEFAULT_HORIZONS_MONTHS, n_boot=args.boot, seed=seed,
                                      n_jobs=args.n_jobs)
            shipped = make_model(model, columns_present=list(X.columns), random_state=seed, **params).fit(X, y)
            c_fresh = harrell_c(y_fresh, shipped.predict(X_fresh))
            c = head["harrell_c"]
            rows.append({"seed": seed, "model": model, "apparent": c["apparent"], "optimism": c["optimism"],
                         "corrected": c["corrected"], "fresh": c_fresh, "corrected_minus_fresh": c["corrected"] - c_fresh,
                         "nested_cv": nested.get(model, np.nan),
                         "nested_minus_fresh": nested.get(model, np.nan) - c_fresh,
                         "seconds": time.perf_counter() - t0})
            print(f"seed {seed} {model}: corrected {c['corrected']:.3f}, fresh {c_fresh:.3f}", flush=True)
    table = pd.DataFrame(rows)
    print(f"\nHarrell's C of the shipped model: optimism-corrected ({args.boot} bootstrap refits) vs a fresh cohort "
          f"of {args.fresh}; cohorts of {args.n}, seeds 1-{args.seeds}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = table.groupby("model").agg(mean_corrected_minus_fresh=("corrected_minus_fresh", "mean"),
                                         min_diff=("corrected_minus_fresh", "min"),
                                         max_diff=("corrected_minus_fresh", "max"),
                                         mean_nested_minus_fresh=("nested_minus_fresh", "mean"))
    print("\n" + summary.to_string(float_format=lambda v: f"{v:+.3f}"))
    overall = table.corrected_minus_fresh.mean()
    print(f"\nall models: mean corrected - fresh = {overall:+.3f} (target |mean| <= 0.01: "
          f"{'met' if abs(overall) <= 0.01 else 'NOT met'}); wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
