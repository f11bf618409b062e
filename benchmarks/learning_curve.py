"""Learning curve: what the literature prior, the literature model and the ensemble buy on small cohorts.

For each training size (150, 300, 600, 2,000 simulated patients) and seed, every model is fitted on that
cohort (tuned by inner cross-validation on it, as in the benchmark) and evaluated on one large independent
simulated test cohort (its own seed), on the test patients with a computable Fong score, so every model is
compared on identical patients: Harrell's C and the ICI at 36 months. The table prints the median over seeds
with the range (min-max) and the median fit time; the plot goes to ``benchmarks/results/learning_curve.png``.

The simulator takes its effects from the same literature as the prior (``crlm.cohort.simulate``,
``crlm.literature_prior``), so these figures flatter cox_prior and literature_cox; the real-cohort
leaderboards are the evidence.

Usage: ``python benchmarks/learning_curve.py [--sizes 150 300 600 2000] [--seeds 3] [--n-test 5000]
[--endpoint os]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from crlm.cohort.base import predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, fit_model, score_values
from crlm.evaluation.calibration import ici
from crlm.evaluation.metrics import harrell_c

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("coxnet", "cox_prior", "literature_cox", "ensemble", "score:fong")
HORIZON = 36.0
TEST_SEED = 999
CAVEAT = ("The simulator takes its effects from the same literature as the prior, so these figures flatter "
          "cox_prior and literature_cox; the real-cohort (TCIA) leaderboards are the evidence.")


def run(sizes, seeds: int, n_test: int, endpoint: str) -> pd.DataFrame:
    test = simulate_cohort(n_test, TEST_SEED).with_outcome(endpoint)
    X_test = predictors_frame(test.data)
    scored = ~np.isnan(score_values("score:fong", X_test))  # identical patients for every model
    X_test, y_test = X_test[scored], test.y(endpoint)[scored]
    spec = BenchmarkSpec(endpoint=endpoint, inner_splits=3)
    rows = []
    for n in sizes:
        for seed in range(seeds):
            train = simulate_cohort(n, 100 + seed).with_outcome(endpoint)
            X, y = predictors_frame(train.data), train.y(endpoint)
            for name in MODELS:
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model, _ = fit_model(name, X, y, spec, seed=seed)
                seconds = time.perf_counter() - started
                risk = np.asarray(model.predict(X_test), dtype=float)
                surv = np.asarray(model.predict_survival(X_test, [HORIZON]), dtype=float)[:, 0]
                rows.append({"n": n, "seed": seed, "model": name, "harrell_c": harrell_c(y_test, risk),
                             "ici_36": ici(y_test, surv, HORIZON)["ici"], "fit_seconds": seconds})
                print(f"  n={n} seed={seed} {name}: C {rows[-1]['harrell_c']:.3f}, ICI36 {rows[-1]['ici_36']:.3f}, "
                      f"{seconds:.1f} s", flush=True)
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    def cell(values: pd.Series) -> str:
        return f"{values.median():.3f} ({values.min():.3f}-{values.max():.3f})"

    out = results.groupby(["n", "model"], sort=False).agg(
        harrell_c=("harrell_c", cell), ici_36=("ici_36", cell), fit_seconds=("fit_seconds", "median"))
    fong = results[results.model == "score:fong"].set_index(["n", "seed"]).harrell_c
    delta = results.join(fong.rename("fong_c"), on=["n", "seed"]).assign(d=lambda d: d.harrell_c - d.fong_c)
    out["delta_c_vs_fong"] = delta.groupby(["n", "model"], sort=False).d.median().round(3)
    return out.reset_index()


def plot(results: pd.DataFrame, path: Path, n_test: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, group in results.groupby("model", sort=False):
        med = group.groupby("n")[["harrell_c", "ici_36"]].median()
        axes[0].plot(med.index, med.harrell_c, marker="o", label=name)
        axes[1].plot(med.index, med.ici_36, marker="o", label=name)
    for ax, label in zip(axes, ("Harrell's C (median over seeds)", "ICI at 36 months (median over seeds)"),
                         strict=True):
        ax.set_xscale("log")
        sizes = sorted(results.n.unique())
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training patients (simulated)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Learning curve on an independent simulated test cohort (n = {n_test}); the simulator "
                 "shares the prior's literature", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 300, 600, 2000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--endpoint", default="os")
    args = parser.parse_args()
    started = time.perf_counter()
    results = run(args.sizes, args.seeds, args.n_test, args.endpoint)
    table = summary(results)
    print()
    print(f"Learning curve ({args.endpoint}): training sizes {args.sizes}, {args.seeds} seeds (100..), independent "
          f"test cohort n={args.n_test} (seed {TEST_SEED}); median (min-max) over seeds; delta C vs Fong paired "
          "per seed on the same test patients")
    print(table.to_string(index=False))
    print()
    print("Note:", CAVEAT)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results.to_csv(RESULTS / "learning_curve.csv", index=False)
    plot(results, RESULTS / "learning_curve.png", args.n_test)
    print(f"wrote {RESULTS / 'learning_curve.csv'} and learning_curve.png; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
