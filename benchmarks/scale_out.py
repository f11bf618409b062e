"""Scale-out: one benchmark job locally and on a Dask LocalCluster of 2 and 4 workers, then a pooled cohort on
the cluster end to end.

Part 1 runs the same nested benchmark (same cohort, seed and spec) on joblib's local processes (``n_jobs=1``,
the baseline, and ``n_jobs=2``) and on ``local:2`` and ``local:4`` LocalClusters; it prints the median wall time
per backend, the ratio baseline / backend, and whether each leaderboard (and the full metrics table) is
identical to the baseline's. Part 2 trains a synthetic pooled cohort (default 20,000 patients) end to end with
``crlm.training.run_job`` on a LocalCluster (benchmark, Predictor, tracking in a temporary MLflow store,
registry, bundle) and prints the wall time per stage.

Usage::

    .venv/bin/python benchmarks/scale_out.py                       # n=2000 benchmark, pooled n=20,000
    .venv/bin/python benchmarks/scale_out.py --n 400 --pooled-n 3000 --repeats 1   # a reduced check

Cluster speed-ups need free cores: on a shared 2-core machine, 4 workers cannot beat 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from crlm import parallel
from crlm.cohort.simulate import simulate_cohort
from crlm.config import JobConfig
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark

MODELS = ("coxph", "coxnet", "xgb_cox", "rsf")
POOLED_MODELS = ["coxph", "coxnet", "xgb_cox"]


def benchmark_spec(args) -> BenchmarkSpec:
    return BenchmarkSpec(models=MODELS, baselines=("score:fong", "score:game"), outer_splits=2,
                         outer_repeats=args.outer_repeats, inner_splits=3, n_boot=args.n_boot, ceiling=False,
                         ablation_models=1, seed=0)


def timed(cohort, spec, cluster, n_jobs, repeats):
    times, result = [], None
    with parallel.backend(cluster, n_jobs=n_jobs) as backend:
        label = backend.label()
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = run_benchmark(cohort, dataclasses.replace(spec, n_jobs=n_jobs))
            times.append(time.perf_counter() - t0)
    return label, statistics.median(times), result


def same(a, b) -> bool:
    try:
        pd.testing.assert_frame_equal(a.leaderboard(), b.leaderboard())
        pd.testing.assert_frame_equal(a.metrics, b.metrics)
        pd.testing.assert_frame_equal(a.ablation, b.ablation)
    except AssertionError:
        return False
    return True


def part_one(args) -> None:
    cohort = simulate_cohort(args.n, args.seed)
    spec = benchmark_spec(args)
    print(f"Part 1: nested benchmark of {', '.join(spec.models)} + {', '.join(spec.baselines)} on a simulated cohort "
          f"of {args.n} (seed {args.seed}); {spec.outer_repeats}x{spec.outer_splits}-fold outer, "
          f"{spec.inner_splits}-fold inner, {spec.n_boot} bootstrap resamples, ablation of the best model; "
          f"median of {args.repeats} run(s); {os.cpu_count()} CPUs on this machine", flush=True)
    timed(simulate_cohort(200, args.seed), dataclasses.replace(spec, n_boot=10), None, 1, 1)  # warm-up, untimed
    base_label, base_time, base = timed(cohort, spec, None, 1, args.repeats)
    rows = [(base_label, base_time, 1.0, "(baseline)")]
    print(f"  {base_label:<22} {base_time:8.1f} s", flush=True)
    for cluster, n_jobs in ((None, 2), ("local:2", 1), ("local:4", 1)):
        label, seconds, result = timed(cohort, spec, cluster, n_jobs, args.repeats)
        rows.append((label, seconds, base_time / seconds, "yes" if same(result, base) else "NO"))
        print(f"  {label:<22} {seconds:8.1f} s", flush=True)
    print("\n  backend                 median s   baseline/backend   leaderboard identical to the baseline")
    for label, seconds, ratio, identical in rows:
        print(f"  {label:<22} {seconds:9.1f}   {ratio:16.2f}   {identical}")
    print()


def part_two(args) -> None:
    from crlm.training import run_job

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        config = JobConfig.model_validate({
            "job": "pooled-scale-out", "cohort": {"simulate": {"n": args.pooled_n, "seed": 11}, "name": "pooled"},
            "endpoint": "os", "models": POOLED_MODELS, "baselines": ["score:fong"],
            "resampling": {"outer_splits": 2, "outer_repeats": 1, "inner_splits": 3, "n_boot": args.n_boot},
            "n_interval_models": args.interval_models, "cluster": {"address": args.pooled_cluster},
            "export_dir": str(Path(tmp) / "models" / "crlm-pooled-os")})
        print(f"Part 2: pooled synthetic cohort of {args.pooled_n} patients, end to end on {args.pooled_cluster} "
              f"({', '.join(POOLED_MODELS)}; 1x2-fold outer, 3-fold inner; {args.n_boot} bootstrap resamples; "
              f"{args.interval_models} interval refits; tracking in a temporary SQLite store)", flush=True)
        t0 = time.perf_counter()
        outcome = run_job(config, log=lambda line: print(f"  {line}", flush=True))
        total = time.perf_counter() - t0
    stages = ("benchmark", "benchmark_fit_and_predict", "benchmark_ceiling", "benchmark_bootstrap",
              "benchmark_ablation", "predictors", "tracking", "publish")
    for stage in stages:
        if stage in outcome.timings:
            print(f"  {stage:<28} {outcome.timings[stage]:8.1f} s")
    print(f"  {'total (wall)':<28} {total:8.1f} s; champion {outcome.champion} "
          f"(Harrell C {outcome.result.estimate(outcome.champion, 'harrell_c'):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="patients in the part-1 benchmark")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--outer-repeats", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend (the median is reported)")
    parser.add_argument("--pooled-n", type=int, default=20_000, help="patients in the part-2 pooled cohort")
    parser.add_argument("--pooled-cluster", default="local:2")
    parser.add_argument("--interval-models", type=int, default=50)
    parser.add_argument("--skip-pooled", action="store_true")
    args = parser.parse_args()
    part_one(args)
    if not args.skip_pooled:
        part_two(args)


if __name__ == "__main__":
    main()
