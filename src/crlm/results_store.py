"""A benchmark's results are kept before anything else can fail: an MLflow run of their own and files on disk.

The benchmark is the long step of a job (minutes to hours). Its leaderboard, long metric table, paired
comparisons, ablation, score coverage and plots are written as soon as it ends, to a nested MLflow run
(``crlm_role = benchmark``, status FINISHED) and to ``<workspace>/results/<job>/<UTC time>/``. A later failure
(building the Predictor, logging, registering) fails the job run with its reason and registers nothing, but
the benchmark stays readable in both places.
"""

from __future__ import annotations

__all__ = ["FailureRecorder", "SavedBenchmark", "benchmark_tables", "persist_benchmark", "results_directory"]

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import mlflow
import numpy as np

from crlm.evaluation import decision_curves, plots
from crlm.evaluation.benchmark import BenchmarkResult
from crlm.reporting.leaderboard import leaderboard_html


@dataclass
class SavedBenchmark:
    run_id: str
    directory: Path


def benchmark_tables(result: BenchmarkResult) -> dict[str, str]:
    """The benchmark's tables as CSV or text, by artifact path."""
    tables = {
        "leaderboard/leaderboard.csv": result.leaderboard().to_csv(index=False),
        "leaderboard/metrics_long.csv": result.metrics.to_csv(index=False),
        "leaderboard/paired_vs_reference.csv": result.comparisons.to_csv(index=False),
        "leaderboard/score_coverage.csv": result.score_coverage.to_csv(index=False),
        "leaderboard/notes.txt": "\n".join(result.notes) + "\n",
        "leaderboard/timings.json": json.dumps(result.timings, indent=2),
        "leaderboard/leaderboard.html": leaderboard_html(result),
    }
    if len(result.ablation):
        tables["ablation/ablation.csv"] = result.ablation.to_csv(index=False)
    return tables


def persist_benchmark(result: BenchmarkResult, job: str, directory: Path) -> SavedBenchmark:
    """Write the results to ``directory`` and to a nested, finished MLflow run (inside the job's run),
    decision curves included.

    Parameters
    ----------
    result : BenchmarkResult
        The finished benchmark.
    job : str
        The job name (run name and tag).
    directory : Path
        Where the files go (created).

    Returns
    -------
    SavedBenchmark
        The benchmark run's id and the directory written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tables = benchmark_tables(result)
    curves = decision_curves.benchmark_curves(result)
    tables["decision_curves/decision_curves.csv"] = curves.to_csv(index=False)
    tables["decision_curves/summary.csv"] = decision_curves.summary(curves).to_csv(index=False)
    for path, text in tables.items():  # disk first: it needs no server
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    with mlflow.start_run(run_name=f"{job}: benchmark", nested=True) as run:
        mlflow.set_tags({"crlm_role": "benchmark", "crlm_job": job, "crlm_reference": result.spec.reference or "none",
                         "crlm_results_dir": str(directory)})
        for path, text in tables.items():
            mlflow.log_text(text, path)
        board = result.leaderboard()
        values = {f"{metric}.{r['model'].replace(':', '_')}": float(r[metric]) for _, r in board.iterrows()
                  for metric in ("harrell_c", "uno_c", "ibs") if metric in r and np.isfinite(r[metric])}
        mlflow.log_metrics(values)
        figures = [(plots.time_dependent_auc_plot(result), "leaderboard/time_dependent_auc.png")]
        if len(result.comparisons):
            figures.append((plots.forest_plot(result, "harrell_c"), "leaderboard/forest_delta_c.png"))
        figures += [(decision_curves.plot(curves, h), f"decision_curves/decision_curve_{h:g}m.png")
                    for h in sorted(set(curves.horizon))]
        for fig, path in figures:
            mlflow.log_figure(fig, path)
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(directory / path, dpi=110, bbox_inches="tight")
            plt.close(fig)
    return SavedBenchmark(run.info.run_id, directory)


class FailureRecorder:
    """Entered inside an active MLflow run: if the block raises, the run is tagged ``crlm_failure`` with the
    reason and gets ``failure.txt`` (with ``kept``: what was saved before the failure); MLflow then ends the run
    FAILED. The exception propagates."""

    def __init__(self):
        self.kept = ""

    def __enter__(self) -> FailureRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc is not None:
            reason = f"{exc_type.__name__}: {exc}"
            with contextlib.suppress(Exception):  # recording the reason must never hide the failure itself
                mlflow.set_tag("crlm_failure", reason[:5000])
                mlflow.log_text("\n".join([reason, self.kept]).strip() + "\n", "failure.txt")
        return False


def results_directory(root: Path, job: str) -> Path:
    return root / "results" / job / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
