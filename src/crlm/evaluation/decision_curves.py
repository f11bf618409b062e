"""Decision curves: the net benefit of "act if the predicted risk by the horizon is at least the threshold".

Net benefit at threshold p = TP/n - FP/n * p / (1 - p), with the true and false positives of a survival
outcome estimated by Kaplan–Meier among the patients acted on (Vickers et al. 2008). The computation is that of
the maintained ``dcurves`` package (MSKCC, the Python port of the R/Stata ``dca``; ``tests/test_external.py``
checks every value against ``dcurves.dca``), vectorised here because ``dcurves`` fits a lifelines
Kaplan–Meier twice per threshold and rule (16 s per horizon for eight rules on 300 patients, too slow for a
benchmark that draws curves for every model). Rules compared at each horizon:
the model's predicted risk 1 - S(h); each score's high-risk group as a yes/no rule (Fong 3-5 is how centres
choose neoadjuvant chemotherapy before resection); treat all; treat none. All rules are evaluated on the same
patients (those every rule can rate).
"""

from __future__ import annotations

__all__ = [
    "RiskRule", "SUMMARY_THRESHOLDS", "THRESHOLDS", "benchmark_curves", "decision_curves", "plot", "score_group_rules",
    "summary", "summary_with_intervals",
]

from collections.abc import Callable, Mapping
from typing import TypeAlias

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crlm.evaluation.benchmark import model_kind  # noqa: E402
from crlm.evaluation.intervals import bootstrap_indices, percentile_interval  # noqa: E402
from crlm.kaplan_meier import km_at  # noqa: E402
from crlm.scores import SCORES, compute_score  # noqa: E402

THRESHOLDS = np.round(np.arange(0.02, 0.96, 0.02), 2)
SUMMARY_THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.7)
TREAT_ALL, TREAT_NONE = "treat all", "treat none"
# a rule's predicted risk by the horizon: one array for every horizon, or computed per horizon (months)
RiskRule: TypeAlias = np.ndarray | Callable[[float], np.ndarray]


def score_group_rules(data: pd.DataFrame, min_share: float = 0.8) -> dict[str, np.ndarray]:
    """Each published score's "act if in its highest-risk group" rule as 1.0 / 0.0 (NaN where the score
    cannot be computed); only scores computable for at least ``min_share`` of the patients.

    Parameters
    ----------
    data : DataFrame
        Canonical cohort rows.
    min_share : float
        Scores computable for fewer patients are left out (the curves use identical patients).

    Returns
    -------
    dict
        ``"<label>: <group>"`` (e.g. ``"Fong CRS: high"``) -> rule per patient.
    """
    rules = {}
    for name, defn in SCORES.items():
        total = compute_score(name, data)["total"].to_numpy(dtype=float)
        if len(total) == 0 or np.mean(~np.isnan(total)) < min_share:
            continue
        start = defn.group_starts[-1]
        rules[f"{defn.label}: {defn.groups[-1]} (>= {start:g})"] = np.where(np.isnan(total), np.nan,
                                                                          (total >= start).astype(float))
    return rules


def decision_curves(y, risks: Mapping[str, RiskRule], horizons, thresholds=THRESHOLDS) -> pd.DataFrame:
    """Net benefit of each rule at each horizon and threshold, on the patients every rule can rate.

    Parameters
    ----------
    y : structured array
        Outcomes (``event``, ``time``; months).
    risks : dict
        Rule name -> predicted risk by the horizon in [0, 1] (a yes/no rule as 1.0 / 0.0), or a callable
        ``horizon -> risks``; NaN = cannot be rated.
    horizons : sequence of float
        Months.
    thresholds : sequence of float
        Risk thresholds in (0, 1).

    Returns
    -------
    DataFrame
        ``horizon, model, threshold, net_benefit, test_pos_rate, n`` with rows for treat all and treat none.
    """
    frames = []
    for h in horizons:
        columns = {name: np.asarray(r(h) if callable(r) else r, dtype=float) for name, r in risks.items()}
        known = np.all([~np.isnan(v) for v in columns.values()], axis=0) if columns else np.ones(len(y), bool)
        if known.sum() == 0 or float(np.max(y["time"][known])) < h:
            continue
        time, event = y["time"][known], y["event"][known]
        rules = {**{name: v[known] for name, v in columns.items()}, TREAT_ALL: np.ones(int(known.sum())),
                 TREAT_NONE: np.zeros(int(known.sum()))}
        out = pd.DataFrame([{"model": name, "threshold": float(p), **_net_benefit(time, event, risk, p, float(h))}
                            for name, risk in rules.items() for p in thresholds])
        out["horizon"] = float(h)
        out["n"] = int(known.sum())
        frames.append(out[["horizon", "model", "threshold", "net_benefit", "test_pos_rate", "n"]])
    if not frames:
        return pd.DataFrame(columns=["horizon", "model", "threshold", "net_benefit", "test_pos_rate", "n"])
    curves = pd.concat(frames, ignore_index=True)
    curves["net_benefit"] = pd.to_numeric(curves["net_benefit"], errors="coerce")
    return curves


def _km_risk(time: np.ndarray, event: np.ndarray, horizon: float) -> float:
    """1 - Kaplan–Meier survival at ``horizon`` (NaN when follow-up ends before it, as ``dcurves``)."""
    if len(time) == 0:
        return 0.0
    if time.max() < horizon:
        return float("nan")
    return 1.0 - km_at(time, event, float(horizon))


def _net_benefit(time, event, risk, threshold: float, horizon: float) -> dict:
    # dcurves moves risks of exactly 0 and 1 just outside [0, 1], so "act if risk >= threshold" never acts on
    # 0 and always acts on 1
    risk = np.where(risk == 0, -np.finfo(float).eps, np.where(risk == 1, 1 + np.finfo(float).eps, risk))
    act = risk >= threshold
    rate = act.mean()
    risk_among = _km_risk(time[act], event[act], horizon)
    tp, fp = risk_among * rate, (1.0 - risk_among) * rate
    return {"net_benefit": tp - fp * threshold / (1.0 - threshold), "test_pos_rate": float(rate)}


def summary_with_intervals(y, risks: Mapping[str, RiskRule], horizons, thresholds=SUMMARY_THRESHOLDS, n_boot: int = 200,
                           seed: int = 0) -> pd.DataFrame:
    """Net benefit at a few thresholds with 95% percentile-bootstrap intervals over patients.

    Parameters
    ----------
    y : structured array
        Outcomes.
    risks : dict
        As ``decision_curves``.
    horizons : sequence of float
        Months.
    thresholds : sequence of float
        Risk thresholds.
    n_boot : int
        Resamples (stratified by event).
    seed : int
        Random seed.

    Returns
    -------
    DataFrame
        ``horizon, model, threshold, net_benefit, ci_low, ci_high, n``.
    """
    point = decision_curves(y, risks, horizons, thresholds)
    if point.empty or not n_boot:
        return point.assign(ci_low=np.nan, ci_high=np.nan)
    lows, highs = [], []
    indices = bootstrap_indices(len(y), n_boot, seed, strata=y["event"])
    replicates = []
    for idx in indices:
        resampled = {name: (lambda h, r=r, idx=idx: np.asarray(r(h) if callable(r) else r, dtype=float)[idx])
                     for name, r in risks.items()}
        replicates.append(decision_curves(y[idx], resampled, horizons, thresholds))
    boot = pd.concat(replicates, ignore_index=True)
    grouped = boot.groupby(["horizon", "model", "threshold"], sort=False)["net_benefit"]
    for r in point.itertuples():
        values = grouped.get_group((r.horizon, r.model, r.threshold)).dropna().to_numpy() \
            if (r.horizon, r.model, r.threshold) in grouped.groups else np.array([])
        # no interval for a value that cannot be estimated on the full sample
        low, high = percentile_interval(values) if len(values) and np.isfinite(r.net_benefit) else (np.nan, np.nan)
        lows.append(low)
        highs.append(high)
    return point.assign(ci_low=lows, ci_high=highs)


def summary(curves: pd.DataFrame, thresholds=SUMMARY_THRESHOLDS) -> pd.DataFrame:
    """Net benefit at a few thresholds: one row per horizon and rule, one column per threshold."""
    if curves.empty:
        return pd.DataFrame()
    picked = curves[np.isclose(curves.threshold.to_numpy()[:, None], np.asarray(thresholds)[None, :]).any(axis=1)]
    table = picked.pivot_table(index=["horizon", "model"], columns="threshold", values="net_benefit",
                               sort=False)
    table.columns = [f"nb_at_{t:g}" for t in table.columns]
    return table.reset_index()


def plot(curves: pd.DataFrame, horizon: float, title: str = ""):
    """Net benefit against threshold at one horizon (treat all / treat none in grey)."""
    sub = curves[curves.horizon == horizon]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, rows in sub.groupby("model", sort=False):
        style = dict(color="0.6", lw=1, ls="--" if model == TREAT_ALL else ":") if model in (
            TREAT_ALL, TREAT_NONE) else dict(lw=1.8)
        ax.plot(rows.threshold, rows.net_benefit, label=model, **style)
    prevalence = sub.loc[sub.model == TREAT_ALL, "net_benefit"].max()
    top = max(0.05, float(np.nanmax(sub.net_benefit)) * 1.1) if len(sub) else 0.1
    ax.set_ylim(-0.05 if not np.isfinite(prevalence) else min(-0.05, -0.2 * top), top)
    ax.set_xlabel(f"threshold: predicted risk of the event by {horizon:g} months")
    ax.set_ylabel("net benefit")
    n = int(sub.n.iloc[0]) if len(sub) else 0
    ax.set_title(title or f"Decision curves at {horizon:g} months (n = {n})")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _risk_by(surv: np.ndarray, grid: np.ndarray) -> Callable[[float], np.ndarray]:
    """Horizon -> predicted risk (1 - survival at the grid time nearest the horizon) of curves on ``grid``."""
    return lambda h: 1.0 - surv[:, int(np.argmin(np.abs(grid - h)))]


def benchmark_curves(result, models=None) -> pd.DataFrame:
    """Decision curves of a benchmark's out-of-fold predictions (repeat-averaged risk 1 - S(h)) for learned
    ``models`` (default: every learned model) and the scores' high-risk groups, on the benchmark population.

    Parameters
    ----------
    result : BenchmarkResult
        A finished benchmark.
    models : sequence of str, optional
        Models whose predicted risk enters as a rule.

    Returns
    -------
    DataFrame
        As ``decision_curves``.
    """
    models = [m for m in (models or result.oof) if m in result.oof and model_kind(m) == "learned"]
    grid = np.asarray(result.grid, dtype=float)
    rules: dict[str, RiskRule] = {}
    for m in models:
        oof = result.oof[m]
        surv = np.where(oof.valid[:, None], oof.survival.mean(axis=0), np.nan)
        rules[f"{m} (predicted risk)"] = _risk_by(surv, grid)
    rules |= score_group_rules(result.population.data)
    return decision_curves(result.y, rules, result.horizons)
