"""Coverage of the Predictor's 95% confidence interval on simulated cohorts (the simulator knows the truth).

For each model and cohort size n: ``--reps`` training cohorts of n (seeds 1..reps) each give a Predictor
(``train_predictor`` with the model's default hyperparameters, ``--boot`` interval replicates); its interval at
36 and 60 months is evaluated on the same ``--eval`` independent patients (simulate_cohort(eval, seed 777)).
Two targets:
- the model's own large-sample estimate: the same pipeline (same hyperparameters, same Predictor steps)
  trained on ``--big`` patients (seed 555). This is what a confidence interval of the model's estimate
  should cover 95% of the time;
- the patient's true survival S(t | x) from the generating model. The interval is not built to cover it
  (the model's large-sample limit differs from the truth: what the records lack, what the model cannot
  represent), so its coverage says how far the estimate is from the truth, not whether the interval is honest.
Printed per model x n x horizon x band method (``crlm.bootstrap_curves``: centred, the served default;
percentile; basic): coverage of each target, mean width, and bias (mean point estimate minus the target).

Usage: ``.venv/bin/python benchmarks/coverage.py [--reps 20 --boot 50 --big 10000 --eval 300]``; reduced
runs pass smaller values (the printout states them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crlm.bootstrap_curves import INTERVAL_METHODS
from crlm.cohort.base import predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.predictor import Predictor
from crlm.predictor_training import train_predictor

RESULTS = Path(__file__).resolve().parent / "results"
HORIZONS = (36.0, 60.0)
EVAL_SEED, BIG_SEED = 777, 555


def curves(predictor: Predictor, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate (n, H) and replicates (B, n, H) at ``HORIZONS`` (the served curves, recalibrated)."""
    columns, Z = predictor._prepare(X)
    j = [int(np.argmin(np.abs(predictor.kernel.times - h))) for h in HORIZONS]
    point = predictor.recalibrator.apply(predictor.kernel.survival(Z))[0]
    reps = predictor.replicates.survival(columns)
    return point[:, j], reps[:, :, j]


def run(models, sizes, reps: int, boot: int, big: int, n_eval: int) -> pd.DataFrame:
    evaluation = simulate_cohort(n_eval, EVAL_SEED)
    X_eval = predictors_frame(evaluation.data)
    truth = np.asarray(evaluation.truth.survival("os", np.asarray(HORIZONS)), dtype=float)  # (n, H)
    rows = []
    for model in models:
        t0 = time.perf_counter()
        large = train_predictor(simulate_cohort(big, BIG_SEED), "os", model, n_interval_models=5, seed=0)
        target_large, _ = curves(large, X_eval)
        print(f"{model}: large-sample pipeline on {big} patients in {time.perf_counter() - t0:.0f} s", flush=True)
        for n in sizes:
            t0 = time.perf_counter()
            hits = {(m, k): [] for m in INTERVAL_METHODS for k in ("large", "truth")}
            widths = {m: [] for m in INTERVAL_METHODS}
            bias_large, bias_truth = [], []
            for seed in range(1, reps + 1):
                pred = train_predictor(simulate_cohort(n, seed), "os", model, n_interval_models=boot, seed=seed)
                point, replicates = curves(pred, X_eval)
                for method in INTERVAL_METHODS:
                    pred.replicates.method = method
                    lower, upper = pred.replicates.band(point, replicates)
                    hits[(method, "large")].append((lower <= target_large) & (target_large <= upper))
                    hits[(method, "truth")].append((lower <= truth) & (truth <= upper))
                    widths[method].append(upper - lower)
                bias_large.append(point - target_large)
                bias_truth.append(point - truth)
            for method in INTERVAL_METHODS:
                for k, h in enumerate(HORIZONS):
                    rows.append({"model": model, "n": n, "horizon": h, "method": method,
                                 "cover_large_sample": float(np.mean([a[:, k] for a in hits[(method, "large")]])),
                                 "cover_truth": float(np.mean([a[:, k] for a in hits[(method, "truth")]])),
                                 "mean_width": float(np.mean([w[:, k] for w in widths[method]])),
                                 "bias_vs_large_sample": float(np.mean([b[:, k] for b in bias_large])),
                                 "bias_vs_truth": float(np.mean([b[:, k] for b in bias_truth]))})
            print(f"  n={n}: {reps} cohorts in {time.perf_counter() - t0:.0f} s", flush=True)
            done = pd.DataFrame([r for r in rows if r["model"] == model and r["n"] == n and r["method"] == "centred"])
            print(done[["horizon", "cover_large_sample", "cover_truth", "mean_width", "bias_vs_large_sample"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)  # partial results
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="coxph,coxnet,xgb_cox,rsf")
    parser.add_argument("--sizes", default="300,1000")
    parser.add_argument("--reps", type=int, default=20, help="training cohorts per model and size")
    parser.add_argument("--boot", type=int, default=50, help="interval replicates per Predictor")
    parser.add_argument("--big", type=int, default=10000, help="patients of the large-sample pipeline")
    parser.add_argument("--eval", type=int, default=300, help="independent evaluation patients")
    args = parser.parse_args(argv)
    models, sizes = args.models.split(","), [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    table = run(models, sizes, args.reps, args.boot, args.big, args.eval)
    print(f"\nCoverage of the 95% confidence interval (models {', '.join(models)}; sizes {sizes}; {args.reps} "
          f"training cohorts each; {args.boot} replicates; large-sample pipeline on {args.big}; {args.eval} "
          f"evaluation patients; default hyperparameters)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    served = table[(table.method == "centred") & (table.n == max(sizes))]
    print(f"\nserved method (centred) at n = {max(sizes)}: coverage of the large-sample estimate "
          + ", ".join(f"{r.model} {r.horizon:g} mo {r.cover_large_sample:.2f}" for r in served.itertuples())
          + " (target >= 0.90)")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "coverage.csv", index=False)


if __name__ == "__main__":
    main()
