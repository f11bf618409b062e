"""The benchmark's contracts: ``BenchmarkSpec`` (what is compared, how) and ``BenchmarkResult`` (the tidy
metrics, the paired comparisons, the one metric lookup and the leaderboard), with the metric constants they share."""

from __future__ import annotations

__all__ = [
    "BOOTSTRAP_METRICS", "BenchmarkResult", "BenchmarkSpec", "HIGHER_IS_BETTER", "INTERVAL_WORDS", "NON_NEGATIVE",
    "model_kind",
]

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crlm.cohort.base import Cohort
from crlm.evaluation.oof import OOF
from crlm.evaluation.reference_rows import CEILING, ORACLE
from crlm.models import (
    DEFAULT_BASELINES,
    DEFAULT_MODELS,
    is_score_model,
)
from crlm.reporting.formatting import format_interval, headline_horizon
from crlm.schema import DEFAULT_BLOCKS, DEFAULT_HORIZONS_MONTHS

# Metrics with bootstrap intervals (the others are point estimates from the full evaluation); the first
# group also gets paired differences against the reference.
BOOTSTRAP_METRICS = ("harrell_c", "uno_c", "mean_auc", "ibs", "ipa_ibs")
NON_NEGATIVE = ("ici", "e50", "e90", "emax", "brier", "ibs")
INTERVAL_WORDS = "95% bootstrap over patients (percentile, recentred on the estimate)"
HIGHER_IS_BETTER = {"harrell_c": True, "uno_c": True, "mean_auc": True, "ibs": False, "ipa_ibs": True}


@dataclass
class BenchmarkSpec:
    endpoint: str = "os"
    horizons: tuple[float, ...] = DEFAULT_HORIZONS_MONTHS
    models: tuple[str, ...] = DEFAULT_MODELS
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    reference: str = "score:fong"
    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    postoperative: bool = False
    outer_splits: int = 5  # K >= 5: every model trains on at least 80% of the patients
    outer_repeats: int = 2
    inner_splits: int = 3
    n_boot: int = 200
    seed: int = 0
    n_jobs: int = 1
    ablation_models: int = 2  # how many of the best learned model families get the feature-block ablation
    search_spaces: dict[str, dict] | None = None  # overrides of crlm.models.SEARCH_SPACES
    tune: bool = True
    ceiling: bool = True  # simulated cohorts: add the observed-information ceiling row (module docstring)
    ceiling_n: int = 50_000  # patients in the ceiling's independent training cohort
    extra_fields: tuple = ()  # a centre's own predictors (crlm.schema.Field), default: the cohort's
    plain_imputation: tuple[str, ...] = ()  # fields imputed without missing-as-information

    def preprocess_params(self) -> dict:
        """Pipeline parameters of the feature step for a centre's fields and imputation choices."""
        if not self.extra_fields and not self.plain_imputation:
            return {}
        return {"preprocess__extra_fields": tuple(self.extra_fields),
                "preprocess__plain_imputation": tuple(self.plain_imputation)}


@dataclass
class BenchmarkResult:
    spec: BenchmarkSpec
    cohort_name: str
    population: Cohort
    y: np.ndarray
    horizons: list[float]
    grid: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    oof: dict[str, OOF]
    metrics: pd.DataFrame  # tidy: model, kind, metric, horizon, estimate, ci_low, ci_high, n, interval
    comparisons: pd.DataFrame  # paired differences against the reference
    ablation: pd.DataFrame
    chosen_params: pd.DataFrame  # per model x fold
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    score_coverage: pd.DataFrame = field(default_factory=pd.DataFrame)  # crlm.scores.score_coverage

    def metric_row(self, model: str, metric: str, horizon: float | None = None) -> pd.Series | None:
        """The one lookup of a metric: its row of ``metrics`` (estimate, ci_low, ci_high, n, interval), or None.

        Parameters
        ----------
        model, metric : str
        horizon : float, optional
            Months, for per-horizon metrics (``auc``, ``ici``, ``oe``, ``slope``); None for summary metrics.

        Returns
        -------
        pandas.Series or None
            None when the benchmark did not evaluate it (never a made-up value).
        """
        m = self.metrics
        if m.empty:
            return None
        sel = (m.model == model) & (m.metric == metric)
        sel &= m.horizon.isna() if horizon is None else np.isclose(m.horizon.astype(float), float(horizon))
        return m[sel].iloc[0] if sel.any() else None

    def estimate(self, model: str, metric: str, horizon: float | None = None) -> float:
        """The point estimate of ``metric_row`` (NaN when not evaluated)."""
        row = self.metric_row(model, metric, horizon)
        return float("nan") if row is None else float(row.estimate)

    def comparison(self, model: str, metric: str = "harrell_c") -> pd.Series | None:
        """The paired difference of ``model`` against the reference (a row of ``comparisons``), or None."""
        comp = self.comparisons
        if comp.empty:
            return None
        sel = (comp.model == model) & (comp.metric == metric)
        return comp[sel].iloc[0] if sel.any() else None

    def leaderboard(self) -> pd.DataFrame:
        """One row per model: the headline metrics with 95% intervals and the paired delta C vs reference
        (per-horizon columns at the headline horizon, ``crlm.reporting.formatting.headline_horizon``)."""
        h = headline_horizon(self.horizons)
        rows = []
        for model in self.oof:
            row = {"model": model, "kind": model_kind(model), "n": int(self.oof[model].valid.sum())}
            for metric, horizon in [("harrell_c", None), ("uno_c", None), ("mean_auc", None), ("ibs", None),
                                    ("ipa_ibs", None), ("ici", h), ("oe", h)]:
                r = self.metric_row(model, metric, horizon)
                if r is not None:
                    name = metric if horizon is None else f"{metric}_{horizon:g}"
                    row[name] = r.estimate
                    row[f"{name}_ci"] = format_interval(r.ci_low, r.ci_high, enclose="[]")
            r = self.comparison(model, "harrell_c")
            if r is not None:
                row["delta_c_vs_ref"] = r.delta
                row["delta_c_ci"] = format_interval(r.ci_low, r.ci_high, enclose="[]")
                row["p_value"] = r.p_value
                row["p_holm"] = r.p_holm
                row["n_vs_ref"] = int(r.n)
            elif model == self.spec.reference:
                row["delta_c_vs_ref"], row["delta_c_ci"] = 0.0, "(reference)"
            rows.append(row)
        board = pd.DataFrame(rows)
        return board.sort_values("uno_c", ascending=False, na_position="last").reset_index(drop=True)


def model_kind(model: str) -> str:
    """oracle / ceiling (simulation-only reference rows), score or learned."""
    if model in (ORACLE, CEILING):
        return model
    return "score" if is_score_model(model) else "learned"
