"""TCIA OS and DFS leaderboards of every learned model (the small-cohort models included) against the recorded
Fong score, on the 168 patients with a recorded score: Harrell C, delta C vs the recorded Fong score with its
paired bootstrap interval and p, and ICI at 36 months with its interval (docs/SMALL_COHORTS.md).

Usage: ``python benchmarks/tcia_small_cohorts.py [--splits 5] [--repeats 5] [--n-boot 500] [--endpoints os dfs]``.
Tables go to ``benchmarks/results/tcia_<endpoint>_small_cohorts.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from crlm.cohort import load_tcia
from crlm.evaluation.benchmark import BenchmarkSpec, run_benchmark
from crlm.models import DEFAULT_MODELS

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "score:fong_recorded"
COLUMNS = ["model", "n", "harrell_c", "harrell_c_ci", "uno_c", "delta_c_vs_ref", "delta_c_ci", "p_value", "ici_36",
           "ici_36_ci", "ibs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--endpoints", nargs="+", default=["os", "dfs"])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for ep in args.endpoints:
        started = time.perf_counter()
        spec = BenchmarkSpec(endpoint=ep, models=DEFAULT_MODELS, baselines=(REFERENCE,), reference=REFERENCE,
                             outer_splits=args.splits, outer_repeats=args.repeats, inner_splits=3,
                             n_boot=args.n_boot, seed=0, n_jobs=1, ablation_models=0)
        result = run_benchmark(load_tcia(), spec)
        board = result.leaderboard()
        print(f"== TCIA {ep}: {args.splits}-fold outer x {args.repeats} repeats, 3-fold inner, {args.n_boot} "
              f"bootstrap resamples, seed 0; {time.perf_counter() - started:.0f} s")
        for note in result.notes:
            print("note:", note)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(board[[c for c in COLUMNS if c in board]].to_string(index=False, float_format="{:.3f}".format))
        chosen = result.chosen_params
        for column in [c for c in chosen.columns if c.startswith("model__")]:
            for model, group in chosen.groupby("model"):
                values = group[column].dropna().value_counts().to_dict()
                if values:
                    print(f"chosen {model} {column.removeprefix('model__')} (outer folds): {values}")
        board.to_csv(RESULTS / f"tcia_{ep}_small_cohorts.csv", index=False)


if __name__ == "__main__":
    main()
