"""Figures for a ``BenchmarkResult`` (the HTML leaderboard: ``crlm.reporting.leaderboard``).

Every figure function returns a ``matplotlib.figure.Figure``; the caller logs it (``mlflow.log_figure``) and
closes it. The Agg backend is selected here so that figures render on headless machines. Everything shown is
out-of-fold (OOF): each patient's prediction comes from a model that never saw them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402
from sksurv.compare import compare_survival  # noqa: E402

from crlm.evaluation.benchmark import HIGHER_IS_BETTER, ORACLE, BenchmarkResult  # noqa: E402
from crlm.evaluation.calibration import binned_calibration, ici  # noqa: E402
from crlm.kaplan_meier import km_curve  # noqa: E402
from crlm.reporting.formatting import METRIC_LABELS, format_estimate, format_p  # noqa: E402
from crlm.scores import SCORES, compute_score  # noqa: E402

if TYPE_CHECKING:  # only the type checker needs it (the rcParams key names of recent matplotlib stubs)
    from matplotlib.typing import RcKeyType

# Okabe–Ito: distinguishable with colour-vision deficiency and in greyscale print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
GROUP_COLOURS = {2: ("#0072B2", "#D55E00"), 3: ("#0072B2", "#E69F00", "#D55E00"),
                 4: ("#0072B2", "#009E73", "#E69F00", "#D55E00")}
REFERENCE_COLOUR = "#4D4D4D"
ORACLE_COLOUR = "#A6A6A6"
_STYLE: dict[RcKeyType, Any] = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "#E5E5E5", "grid.linewidth": 0.6, "axes.axisbelow": True, "legend.frameon": False,
    "figure.dpi": 100, "savefig.dpi": 150, "font.family": "DejaVu Sans",
    "figure.constrained_layout.w_pad": 0.12, "figure.constrained_layout.h_pad": 0.12,  # inches of margin
}
_LEARNED_LABELS = {"coxph": "Cox PH", "coxnet": "Cox elastic net", "rsf": "Random survival forest",
                   "gbsa": "Gradient boosting (Cox)", "xgb_cox": "XGBoost Cox", "xgb_aft": "XGBoost AFT",
                   "cox_prior": "Cox with literature prior", "literature_cox": "Literature Cox (published HRs)",
                   "fong_plus": "Fong + the rest", "ensemble": "Ensemble (mean survival)",
                   ORACLE: "Oracle (true model)"}
_ENDPOINT_TEXT = {  # (survival label, event wording)
    "os": ("Overall survival", "death"),
    "rfs": ("Recurrence-free survival", "recurrence or death"),
    "liver_rfs": ("Liver recurrence-free survival", "liver recurrence or death"),
}
SCORE_PREFIX = "score:"


# ------------------------------------------------------------------------------------------- helpers


def model_label(model: str) -> str:
    """Readable name: ``score:fong`` -> "Fong CRS", ``coxph`` -> "Cox PH"; unknown names pass through."""
    if model.startswith(SCORE_PREFIX) and model[len(SCORE_PREFIX):] in SCORES:
        return SCORES[model[len(SCORE_PREFIX):]].label
    if model.startswith(f"{SCORE_PREFIX}column:"):
        return f"{model[len(SCORE_PREFIX) + len('column:'):]} (recorded score)"
    if not model:
        return "none"
    return _LEARNED_LABELS.get(model, model)


def endpoint_text(res: BenchmarkResult) -> tuple[str, str]:
    """(survival label, event wording) of the benchmark's endpoint, e.g. ("Overall survival", "death")."""
    return _ENDPOINT_TEXT.get(res.spec.endpoint, (res.spec.endpoint.upper(), "event"))


def _oof(res: BenchmarkResult, model: str):
    if model not in res.oof:
        raise ValueError(f"model {model!r} is not in this benchmark; it has {', '.join(res.oof)}")
    return res.oof[model]


def _horizon_index(res: BenchmarkResult, horizon: float) -> int:
    hit = np.flatnonzero(np.isclose(res.grid, float(horizon)))
    if not len(hit):
        raise ValueError(f"horizon {horizon:g} months is not on the benchmark's prediction grid "
                         f"(horizons evaluated: {', '.join(f'{h:g}' for h in res.horizons)})")
    return int(hit[0])


def _estimate_text(row) -> str:
    """A metric row of ``BenchmarkResult.metric_row`` as ``estimate (low, high)``; n/a when not evaluated."""
    return "n/a" if row is None else format_estimate(row.estimate, row.ci_low, row.ci_high)


def _km(time, event):
    """Kaplan–Meier step function starting at (0, 1) and its log-log 95% band (2, len)."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    x, s, ci = km_curve(time, event, conf_type="log-log")
    return np.r_[0.0, x], np.r_[1.0, s], np.c_[[1.0, 1.0], ci]


def _km_at(time, event, t: float) -> tuple[float, float, float]:
    """KM survival at t with its log-log 95% interval (NaN beyond the last observed time)."""
    if len(time) == 0 or t > np.max(time):
        return (np.nan, np.nan, np.nan)
    x, s, ci = _km(time, event)
    i = np.searchsorted(x, t, side="right") - 1
    return float(s[i]), float(ci[0, i]), float(ci[1, i])


# ------------------------------------------------------------------------------------------- calibration


def _calibration_groups(y, f: np.ndarray, risk: np.ndarray, horizon: float, groups: int,
                        unit: str = "risk value") -> tuple[pd.DataFrame, str]:
    """Observed (KM, with log-log 95% interval) vs mean predicted risk per group, and how groups were formed.

    Continuous predictions: the equal-sized groups of ``binned_calibration``. A risk with at most ``groups``
    distinct values (a clinical score's total): one group per value, since equal-sized groups would split
    tied patients across points. (A score's predicted probability still varies a little between the folds'
    Cox fits, so the grouping goes by the risk, not by the probability.)
    """
    values, which = np.unique(np.round(risk, 10), return_inverse=True)
    if len(values) <= groups:
        members = [np.flatnonzero(which == k) for k in range(len(values))]
        what = f"one group per {unit} ({len(values)})"
        table = pd.DataFrame({"n": [len(m) for m in members], "predicted": [f[m].mean() for m in members]})
    else:
        table = binned_calibration(y, 1.0 - f, horizon, groups=groups)
        order = np.argsort(f, kind="stable")  # the groups binned_calibration formed, for their intervals
        members = [g for g in np.array_split(order, groups) if len(g)]
        what = f"{len(members)} equal-sized groups of predicted risk"
    bands = np.array([_km_at(y["time"][m], y["event"][m], horizon) for m in members])
    if "observed" not in table:
        table["observed"] = 1.0 - bands[:, 0]
    table["observed_low"], table["observed_high"] = 1.0 - bands[:, 2], 1.0 - bands[:, 1]
    return table, what


def calibration_plot(res: BenchmarkResult, model: str, horizon: float = 36.0, *, repeat: int | None = None,
                     groups: int = 10) -> Figure:
    """Predicted vs observed probability of the event by ``horizon`` months (OOF, valid patients only).

    The prediction per patient is the mean over outer repeats of the OOF survival at the horizon
    (``repeat=None``, default: every repeat is out-of-fold, and the mean is steadier than one repeat), or
    one repeat's when ``repeat`` is given. Shown: Austin's smoothed calibration curve (``ici``), Kaplan–Meier
    observed risk per group of predicted risk (deciles by default, or one group per value of a score; with
    95% intervals and n), the diagonal, and the distribution of predictions. The text box quotes the benchmark's metrics (computed per repeat
    and averaged, with percentile-bootstrap intervals), which can differ slightly from the plotted curve.
    """
    oof = _oof(res, model)
    idx = _horizon_index(res, horizon)
    surv = oof.survival[:, :, idx] if repeat is None else oof.survival[[repeat], :, idx]
    valid = oof.valid
    s = surv[:, valid].mean(axis=0)
    y = res.y[valid]
    curve = ici(y, s, horizon)
    f = 1.0 - s
    risk = (oof.risk if repeat is None else oof.risk[[repeat]])[:, valid].mean(axis=0)
    unit = "score value" if model.startswith(SCORE_PREFIX) else "risk value"
    binned, what = _calibration_groups(y, f, risk, horizon, groups, unit)
    obs_low, obs_high = binned.observed_low.to_numpy(), binned.observed_high.to_numpy()

    _, event_word = endpoint_text(res)
    label = model_label(model)
    reps = oof.survival.shape[0]
    how = f"repeat {repeat}" if repeat is not None else "1 repeat" if reps == 1 else f"mean of {reps} repeats"
    with plt.rc_context(_STYLE):
        fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(6.4, 7.0), sharex=True, layout="constrained",
                                          gridspec_kw={"height_ratios": (4.2, 1.0)})
        top = np.nanmax(np.r_[f, curve["observed"], obs_high[np.isfinite(obs_high)], 0.1])
        hi = min(1.0, np.ceil((top + 0.05) * 10) / 10)
        ax.plot([0, hi], [0, hi], ls="--", lw=1, color="#8C8C8C", label="Perfect calibration")
        ax.plot(curve["predicted"], curve["observed"], color=PALETTE[0], lw=2,
                label="Smoothed calibration curve (Austin)")
        yerr = np.vstack([binned.observed - obs_low, obs_high - binned.observed])
        ax.errorbar(binned.predicted, binned.observed, yerr=np.clip(np.nan_to_num(yerr), 0, None), fmt="o",
                    ms=5, color=PALETTE[1], ecolor=PALETTE[1], elinewidth=0.8, capsize=2,
                    label=f"Kaplan–Meier observed, {what} (95% CI)")
        for row in binned.itertuples():
            ax.annotate(f"n={row.n}", (row.predicted, row.observed), xytext=(4, -9), textcoords="offset points",
                        fontsize=6.5, color="#595959")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_ylabel(f"Observed probability of {event_word} by {horizon:g} months")
        ax.set_title(f"{label}: calibration at {horizon:g} months (out-of-fold, {how})", loc="left")
        ax.legend(loc="upper left")
        ax.tick_params(labelbottom=False)

        rows = [("ICI", res.metric_row(model, "ici", horizon)), ("E90", res.metric_row(model, "e90", horizon)),
                ("O/E", res.metric_row(model, "oe", horizon)),
                ("Slope", res.metric_row(model, "slope", horizon))]
        n_events = int((y["event"] & (y["time"] <= horizon)).sum())
        box = "\n".join(["Benchmark metrics (95% CI)"] + [f"{k}: {_estimate_text(r)}" for k, r in rows]
                        + [f"n = {len(y)}, {n_events} events by {horizon:g} mo"])
        ax.text(0.98, 0.03, box, transform=ax.transAxes, ha="right", va="bottom", multialignment="left",
                fontsize=7.5, family="DejaVu Sans Mono",
                bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "#BFBFBF"})

        ax_hist.hist(f, bins=np.linspace(0, hi, 41), color=PALETTE[0], alpha=0.55, edgecolor="white", lw=0.3)
        ax_hist.set_ylabel("Patients")
        ax_hist.set_xlabel(f"Predicted probability of {event_word} by {horizon:g} months (1 − S(t))")
        ax_hist.grid(axis="x", visible=False)
    return fig


# ------------------------------------------------------------------------------------------- Kaplan–Meier


def _risk_tertiles(res: BenchmarkResult, model: str) -> tuple[pd.Series, tuple[str, ...]]:
    """Tertiles of the mean OOF risk over repeats (by rank, so equal-sized groups even with ties)."""
    oof = _oof(res, model)
    risk = pd.Series(np.nan, index=range(oof.risk.shape[1]))
    risk[oof.valid] = oof.risk[:, oof.valid].mean(axis=0)
    labels = ("low", "intermediate", "high")
    ranks = risk.rank(method="first")
    groups = pd.cut(ranks, np.quantile(ranks.dropna(), [0, 1 / 3, 2 / 3, 1]), labels=labels, include_lowest=True)
    return groups.astype(object).where(risk.notna()), labels


def _score_groups(res: BenchmarkResult, reference: str) -> tuple[pd.Series, tuple[str, ...], dict[str, str]]:
    if not reference.startswith(SCORE_PREFIX) or reference[len(SCORE_PREFIX):] not in SCORES:
        raise ValueError(f"reference must be a score model 'score:<name>' ({', '.join(SCORES)}), got {reference!r}")
    defn = SCORES[reference[len(SCORE_PREFIX):]]
    result = compute_score(defn.name, res.population.data)
    total = result["total"].dropna().to_numpy()
    integer = len(total) > 0 and np.allclose(total, np.round(total))
    ranges = {}
    for i, (group, start) in enumerate(zip(defn.groups, defn.group_starts, strict=True)):
        nxt = defn.group_starts[i + 1] if i + 1 < len(defn.group_starts) else None
        if nxt is None:
            ranges[group] = f"≥{start:g}"
        elif integer:
            ranges[group] = f"{start:g}" if nxt - 1 == start else f"{start:g}–{nxt - 1:g}"
        else:
            ranges[group] = f"{start:g} to <{nxt:g}"
    return result["group"].reset_index(drop=True), defn.groups, ranges


def _km_panel(ax, res: BenchmarkResult, groups: pd.Series, order: Sequence[str], names: dict[str, str],
              max_time: float, at_risk_times: Sequence[float], title: str) -> None:
    y = res.y
    present = [g for g in order if (groups == g).any()]
    colours = GROUP_COLOURS.get(len(present), PALETTE)
    # The at-risk table sits below the x label at fixed offsets in points, so the layout engine can make room.
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    table_top = -38.0
    ax.annotate("Number at risk", (0.0, 0.0), xycoords="axes fraction", xytext=(-70, table_top),
                textcoords="offset points", ha="left", va="top", fontsize=7.5, weight="bold")
    for k, (group, colour) in enumerate(zip(present, colours, strict=False)):
        sel = (groups == group).to_numpy()
        t, e = y["time"][sel], y["event"][sel]
        x, s, ci = _km(t, e)
        keep = x <= max_time
        xs, ss, lo, hi = x[keep], s[keep], ci[0][keep], ci[1][keep]
        if t.max() > max_time:  # follow-up continues past the axis: draw the curve to its edge
            xs, ss, lo, hi = np.r_[xs, max_time], np.r_[ss, ss[-1]], np.r_[lo, lo[-1]], np.r_[hi, hi[-1]]
        ax.step(xs, ss, where="post", color=colour, lw=1.8,
                label=f"{names.get(group, group)} (n={sel.sum()}, {int(e.sum())} events)")
        ax.fill_between(xs, lo, hi, step="post", color=colour, alpha=0.10, lw=0)
        cens = t[~e & (t <= max_time)]
        ax.scatter(cens, _step_at(x, s, cens), marker="|", s=14, lw=0.7, color=colour)
        row = table_top - 12.0 * (k + 1)
        ax.annotate(names.get(group, group).split(" (")[0], (0.0, 0.0), xycoords="axes fraction",
                    xytext=(-14, row), textcoords="offset points", ha="right", va="top", fontsize=7.5,
                    color=colour)
        for at in at_risk_times:
            if at <= max_time:
                ax.annotate(str(int((t >= at).sum())), (at, 0.0), xycoords=trans, xytext=(0, row),
                            textcoords="offset points", ha="center", va="top", fontsize=7.5, color=colour)
    mask = groups.isin(present).to_numpy()
    if len(present) > 1:
        indicator = groups[mask].to_numpy().astype(str)
        _, p = compare_survival(y[mask], indicator)
        ax.text(0.98, 0.97, f"Log-rank {format_p(p)}", transform=ax.transAxes, ha="right", va="top",
                fontsize=8)
    excluded = int((~mask).sum())
    if excluded:
        title += f"\n({excluded} patients without a group not shown)"
    ax.set_xlim(0, max_time)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(np.arange(0, max_time + 1, 12))
    ax.set_xlabel("Months since liver resection")
    ax.set_title(title, loc="left")
    ax.legend(loc="lower left")


def _step_at(x, s, t) -> np.ndarray:
    return s[np.clip(np.searchsorted(x, t, side="right") - 1, 0, None)]


def km_by_risk_group(res: BenchmarkResult, model: str, reference: str = "score:fong", *,
                     max_time: float = 120.0, at_risk_times: Sequence[float] = (0, 12, 36, 60)) -> Figure:
    """Kaplan–Meier curves by the model's OOF risk tertiles (left) and by the reference score's groups (right).

    Left: tertiles of the mean OOF risk over outer repeats, among the patients the model could score.
    Right: the reference score's published groups (``crlm.scores.compute_score`` on the benchmark population).
    Shaded: log-log 95% bands; ticks: censored patients; below: numbers at risk.
    """
    tertiles, t_order = _risk_tertiles(res, model)
    ref_groups, r_order, ranges = _score_groups(res, reference)
    surv_label, _ = endpoint_text(res)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12.0, 5.6), sharey=True, layout="constrained")
        _km_panel(axes[0], res, tertiles, t_order, {g: f"{g.capitalize()} risk" for g in t_order}, max_time,
                  at_risk_times, f"{model_label(model)}: tertiles of predicted risk (out-of-fold)")
        names = {g: f"{g.capitalize()} ({ranges[g]})" for g in r_order}
        _km_panel(axes[1], res, ref_groups, r_order, names, max_time, at_risk_times,
                  f"{model_label(reference)}: published risk groups")
        axes[0].set_ylabel(f"{surv_label} probability")
        axes[1].tick_params(labelleft=True)
        fig.suptitle(f"{surv_label} by risk group — {res.cohort_name}, {len(res.y)} patients", x=0.02,
                     ha="left", fontsize=11, weight="bold")
    return fig


# ------------------------------------------------------------------------------------------- discrimination


def time_dependent_auc_plot(res: BenchmarkResult, models: Sequence[str] | None = None) -> Figure:
    """Cumulative/dynamic AUC(t) at each horizon with 95% bootstrap intervals; the reference score dashed.

    Points are slightly offset horizontally so that the intervals of different models do not overlap.
    """
    m = res.metrics[res.metrics.metric == "auc"]
    models = list(models) if models is not None else [x for x in res.oof if x in set(m.model)]
    missing = [x for x in models if x not in set(m.model)]
    if missing:
        raise ValueError(f"no AUC(t) for {missing}; models with AUC: {sorted(set(m.model))}")
    reference = res.spec.reference
    span = np.ptp(res.horizons) if len(res.horizons) > 1 else 12.0
    width = 0.025 * span
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8.0, 4.6), layout="constrained")
        colours = itertools.cycle(PALETTE)  # more models than colours: reuse them
        for k, model in enumerate(models):
            rows = m[m.model == model].sort_values("horizon")
            x = rows.horizon.to_numpy(float) + (k - (len(models) - 1) / 2) * width
            est = rows.estimate.to_numpy(float)
            err = np.vstack([est - rows.ci_low.to_numpy(float), rows.ci_high.to_numpy(float) - est])
            is_ref, is_oracle = model == reference, model == ORACLE
            colour = REFERENCE_COLOUR if is_ref else ORACLE_COLOUR if is_oracle else next(colours)
            note = "reference, " if is_ref else "simulation only, " if is_oracle else ""
            ax.errorbar(x, est, yerr=np.nan_to_num(np.clip(err, 0, None)), color=colour,
                        marker="s" if is_ref else "D" if is_oracle else "o", ms=5, lw=1.4,
                        ls="--" if is_ref else ":" if is_oracle else "-", capsize=3, elinewidth=1,
                        label=f"{model_label(model)} ({note}n={int(rows.n.iloc[0])})")
        ax.axhline(0.5, color="#8C8C8C", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[0], 0.505, " no discrimination", fontsize=7, color="#8C8C8C", va="bottom")
        ax.set_xticks(res.horizons)
        ax.set_xlabel("Horizon (months since liver resection)")
        ax.set_ylabel("Time-dependent AUC (cumulative/dynamic)")
        low = np.nanmin(np.r_[m[m.model.isin(models)].ci_low.to_numpy(float), 0.5])
        ax.set_ylim(max(0.0, np.floor(low * 20) / 20 - 0.02), 1.0)
        ax.set_title("Discrimination over time: AUC(t) with 95% bootstrap intervals (out-of-fold)", loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def forest_plot(res: BenchmarkResult, metric: str = "harrell_c") -> Figure:
    """Paired difference of each model vs the reference (``res.comparisons``) with 95% bootstrap intervals.

    Rows are sorted so that the largest improvement over the reference is at the top (for lower-is-better
    metrics such as the IBS, the most negative difference). Blue: the interval excludes 0 in the model's favour.
    """
    comp = res.comparisons[res.comparisons.metric == metric]
    if comp.empty:
        raise ValueError(f"no comparisons for metric {metric!r}; available: {sorted(set(res.comparisons.metric))}")
    higher = HIGHER_IS_BETTER.get(metric, True)
    comp = comp.assign(_gain=comp.delta if higher else -comp.delta).sort_values("_gain").reset_index(drop=True)
    reference = str(comp.reference.iloc[0])
    name = METRIC_LABELS.get(metric, metric)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9.0, 1.9 + 0.45 * len(comp)), layout="constrained")
        for i, row in comp.iterrows():
            better = bool(row.get("better_than_reference", False))
            colour = ORACLE_COLOUR if row.model == ORACLE else PALETTE[0] if better else "#1A1A1A"
            ax.errorbar(row.delta, i, xerr=[[max(row.delta - row.ci_low, 0)], [max(row.ci_high - row.delta, 0)]],
                        fmt="o", color=colour, ms=6, capsize=3, elinewidth=1.2)
        ax.axvline(0, color="#595959", lw=1)
        ax.set_yticks(np.arange(len(comp)))
        ax.set_yticklabels([model_label(x) for x in comp.model])
        ax.set_ylim(-0.7, len(comp) - 0.3)
        ax.grid(axis="y", visible=False)
        trans = blended_transform_factory(ax.transAxes, ax.transData)
        mono: dict[str, Any] = {"transform": trans, "fontsize": 8, "family": "DejaVu Sans Mono"}
        ax.text(1.02, len(comp) - 0.45, f"{'delta [95% CI]':<24}{'p Holm':>7}{'n':>6}", va="bottom", color="#404040", **mono)
        for i, row in comp.iterrows():
            ci = f"{row.delta:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
            ax.text(1.02, i, f"{ci:<24}{format_p(row.p_holm, res.spec.n_boot, missing='–'):>7}{int(row.n):>6}",
                    va="center", **mono)
        lo, hi = np.nanmin(np.r_[comp.ci_low, 0]), np.nanmax(np.r_[comp.ci_high, 0])
        pad = 0.08 * (hi - lo or 0.1)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel(f"Difference in {name} vs {model_label(reference)} (model − reference)")
        left, right = ("favours reference", "favours model") if higher else ("favours model", "favours reference")
        ax.annotate(f"← {left}", xy=(0.0, 1.0), xycoords="axes fraction", xytext=(0, 4),
                    textcoords="offset points", fontsize=7.5, color="#595959", ha="left", va="bottom")
        ax.annotate(f"{right} →", xy=(1.0, 1.0), xycoords="axes fraction", xytext=(0, 4),
                    textcoords="offset points", fontsize=7.5, color="#595959", ha="right", va="bottom")
        ax.set_title(f"Paired difference in {name} vs {model_label(reference)}\n(bootstrap over patients, "
                     f"{res.spec.n_boot} resamples, 95% CI; p Holm-adjusted; n = patients both can score)", loc="left",
                     pad=18)
    return fig


# ------------------------------------------------------------------------------------------- importance


def importance_plot(names: Sequence[str], values, title: str, *, top_k: int = 15,
                    xlabel: str = "Importance", errors=None) -> Figure:
    """Horizontal bars of the ``top_k`` largest ``values`` (e.g. mean |SHAP| or permutation importance).

    ``errors`` (optional, same length): e.g. the SD of permutation importance, drawn as error bars.
    """
    names = [str(x) for x in names]
    values = np.asarray(values, dtype=float).ravel()
    if len(names) != len(values):
        raise ValueError(f"{len(names)} names but {len(values)} values")
    if len(values) == 0:
        raise ValueError("no importances to plot")
    err = None if errors is None else np.asarray(errors, dtype=float).ravel()
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:top_k][::-1]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.3 * len(order)), layout="constrained")
        ax.barh(np.arange(len(order)), values[order], xerr=None if err is None else err[order], color=PALETTE[0],
                alpha=0.85, height=0.65, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#404040"})
        ax.set_yticks(np.arange(len(order)))
        ax.set_yticklabels([names[i] for i in order])
        ax.axvline(0, color="#595959", lw=0.8)
        ax.grid(axis="y", visible=False)
        span = np.nanmax(np.abs(values[order])) or 1.0
        for i, j in enumerate(order):
            v = values[j]
            ax.text(v + (0.01 * span if v >= 0 else -0.01 * span), i, f"{v:.3g}", va="center",
                    ha="left" if v >= 0 else "right", fontsize=7, color="#404040")
        lo = min(0.0, np.nanmin(values[order]))
        ax.set_xlim(lo - (0.12 * span if lo < 0 else 0), np.nanmax(np.r_[values[order], 0]) + 0.15 * span)
        ax.set_xlabel(xlabel)
        shown = f"top {len(order)} of {len(values)} features" if len(values) > len(order) else \
            f"{len(values)} features"
        ax.set_title(f"{title} ({shown})", loc="left")
    return fig
