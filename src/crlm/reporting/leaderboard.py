"""The leaderboard of a ``BenchmarkResult`` (``BenchmarkResult.leaderboard()``, the one table) as text columns
for the terminal and as one self-contained HTML page (inline CSS, no external requests)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from crlm.evaluation.benchmark import ORACLE, BenchmarkResult
from crlm.evaluation.plots import endpoint_text, model_label
from crlm.reporting.formatting import format_interval, format_p, headline_horizon, horizon_key

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1a1a1a;margin:24px;max-width:1200px}
h1{font-size:20px;margin-bottom:4px}h2{font-size:15px;margin-top:26px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap}
th{background:#f4f4f4;font-weight:600}td.name,th.name{text-align:left}
tr.reference td{background:#fff7e6}tr.oracle td{color:#777;font-style:italic}
.ci{color:#777;font-size:11px}.better{color:#0b6e3a;font-weight:600}
dl{font-size:13px}dt{font-weight:600;margin-top:6px}dd{margin-left:16px}
.small{font-size:12px;color:#555}ul{font-size:13px}
"""

_LEADERBOARD_COLUMNS = [  # (metric, at the calibration horizon, header)
    ("harrell_c", False, "Harrell C"), ("uno_c", False, "Uno C"), ("mean_auc", False, "Mean AUC"),
    ("ibs", False, "IBS"), ("ipa_ibs", False, "IPA"), ("ici", True, "ICI"), ("oe", True, "O/E"),
]


TEXT_COLUMNS = ("model", "kind", "n", "harrell_c", "harrell_c_ci", "uno_c", "uno_c_ci", "ibs", "ipa_ibs", "ici",
                "delta_c_vs_ref", "delta_c_ci")  # ``ici``: at the headline horizon


def text_columns(res: BenchmarkResult, board: pd.DataFrame | None = None) -> list[str]:
    """The leaderboard's columns printed by ``crlm train`` and ``crlm demo`` (those the board has), the ICI at
    the headline horizon (``crlm.reporting.formatting.headline_horizon``).

    Parameters
    ----------
    res : BenchmarkResult
    board : pandas.DataFrame, optional
        ``res.leaderboard()`` when already computed.

    Returns
    -------
    list of str
    """
    board = res.leaderboard() if board is None else board
    names = [horizon_key(c, res.horizons) if c == "ici" else c for c in TEXT_COLUMNS]
    return [c for c in names if c in board]


def _cell(value, ci: str = "", css: str = "") -> str:
    cls = f" class='{css}'" if css else ""
    if value is None or pd.isna(value):
        return f"<td{cls}>–</td>"
    ci_html = f"<br><span class='ci'>({html.escape(ci)})</span>" if ci else ""
    return f"<td{cls}>{value:.3f}{ci_html}</td>"


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append("<td>–</td>" if np.isnan(v) else f"<td>{v:.3f}</td>")
            else:
                cells.append(f"<td class='name'>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def leaderboard_html(res: BenchmarkResult) -> str:
    """A self-contained HTML page (inline CSS, no external requests): leaderboard, design, notes, ablation.

    Rows and their order come from ``res.leaderboard()``; estimates and intervals are read from ``res.metrics``
    and ``res.comparisons`` so that negative interval bounds print unambiguously.
    """
    spec = res.spec
    board = res.leaderboard()
    h_cal = headline_horizon(res.horizons)
    hk = f"{h_cal:g}"
    tau_row = res.metric_row(board.model.iloc[0], "uno_tau") if len(board) else None
    tau = f"{tau_row.estimate:g} months" if tau_row is not None else "the last horizon"
    surv_label, event_word = endpoint_text(res)
    esc = html.escape

    headers = ["<th class='name'>Model</th>", "<th class='name'>Kind</th>", "<th>n</th>"]
    headers += [f"<th>{h}{f' {hk} mo' if at_h else ''}</th>" for _, at_h, h in _LEADERBOARD_COLUMNS]
    headers += [f"<th>Δ Harrell C vs {esc(model_label(spec.reference))}</th>", "<th>p</th>"]
    rows = []
    for _, r in board.iterrows():
        cls = "reference" if r.model == spec.reference else "oracle" if r.model == ORACLE else ""
        cells = [f"<td class='name'>{esc(model_label(r.model))}<br><span class='ci'>{esc(r.model)}</span></td>",
                 f"<td class='name'>{esc(str(r.kind))}</td>", f"<td>{int(r.n)}</td>"]
        for metric, at_h, _ in _LEADERBOARD_COLUMNS:
            m = res.metric_row(r.model, metric, h_cal if at_h else None)
            cells.append(_cell(None) if m is None else
                         _cell(m.estimate, format_interval(m.ci_low, m.ci_high, enclose="")))
        c = res.comparison(r.model, "harrell_c")
        if c is not None:
            cells += [_cell(c.delta, format_interval(c.ci_low, c.ci_high, enclose=""),
                            "better" if bool(c.get("better_than_reference", False)) else ""),
                      f"<td>{esc(format_p(c.get('p_holm', c.p_value), spec.n_boot, missing='–'))}</td>"]
        else:
            cells += ["<td>reference</td>" if r.model == spec.reference else "<td>–</td>", "<td>–</td>"]
        rows.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    leaderboard = f"<table><thead><tr>{''.join(headers)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    n_events = int(res.y["event"].sum())
    design = [
        ("Cohort", f"{res.cohort_name}: {len(res.y)} patients, {n_events} events"),
        ("Endpoint", f"{spec.endpoint} ({surv_label.lower()}; event = {event_word}), time in months"),
        ("Horizons", ", ".join(f"{h:g}" for h in res.horizons) + " months"),
        ("Reference", f"{model_label(spec.reference)} ({spec.reference})"),
        ("Feature blocks", ", ".join(spec.blocks) + (" + postoperative" if spec.postoperative else "")),
        ("Resampling", f"outer: {spec.outer_repeats} × repeated stratified {spec.outer_splits}-fold "
                       f"cross-validation (out-of-fold predictions); inner: {spec.inner_splits}-fold grid search "
                       f"on the outer training part only (tuning criterion Harrell's C)"
                       + ("" if spec.tune else "; tuning disabled")),
        ("Intervals", f"bootstrap over patients, percentile recentred on the estimate ({spec.n_boot} resamples, stratified by event), "
                      "paired for deltas; models are not refitted inside the bootstrap"),
        ("Seed", str(spec.seed)),
    ]
    design_html = "<table>" + "".join(f"<tr><th class='name'>{esc(k)}</th><td class='name'>{esc(v)}</td></tr>"
                                      for k, v in design) + "</table>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in res.notes) or "<li>none</li>"
    ablation = _table(res.ablation) if res.ablation is not None and not res.ablation.empty else \
        "<p class='small'>No feature-block ablation in this run.</p>"

    legend = [
        ("Harrell C", "concordance of the predicted risk with the observed order of events over the whole "
                      "follow-up (0.5 = chance, 1 = perfect). Not adjusted for censoring."),
        ("Uno C", f"concordance weighted by the inverse probability of censoring, truncated at tau = {tau}; "
                  "less dependent on the censoring pattern than Harrell's C."),
        ("Mean AUC", "cumulative/dynamic time-dependent AUC averaged over the horizons: how well the "
                     "predicted probability separates patients with an event by t from those still event-free."),
        ("IBS", "integrated Brier score: mean squared error of the predicted survival probabilities over time "
                "(IPCW; lower is better; combines discrimination and calibration)."),
        ("IPA", "index of prediction accuracy: 1 − IBS(model) / IBS(Kaplan–Meier without covariates); "
                "0 = no better than the null model, negative = worse."),
        (f"ICI {hk} mo", f"integrated calibration index at {hk} months (Austin et al. 2020): mean absolute "
                         "difference between predicted and smoothed observed event probabilities (0 = perfect)."),
        (f"O/E {hk} mo", f"observed (Kaplan–Meier) / expected (mean predicted) event probability at {hk} months; "
                         "1 = calibrated in the large, < 1 = the model over-predicts risk."),
        ("Δ Harrell C", f"paired difference model − {model_label(spec.reference)} on the patients both can "
                        "score; green when the 95% interval excludes 0 in the model's favour. p: two-sided "
                        "bootstrap p-value, Holm-adjusted across the compared models (it cannot resolve values "
                        "below about 2 / number of resamples, shown as a bound)."),
        ("Intervals", "95% bootstrap over patients (percentile recentred on the estimate), paired for deltas "
                      "(every model re-evaluated on the same resampled patients). Point estimates: metrics of the out-of-fold predictions, "
                      "averaged over outer repeats."),
    ]
    legend_html = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in legend) + "</dl>"
    title = f"Prognostic model benchmark — {res.cohort_name}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class='small'>{esc(surv_label)}; all predictions out-of-fold. "
            f"Sorted by Uno's C; cells show the estimate and its 95% interval.</p>"
            f"<h2>Leaderboard</h2>{leaderboard}<h2>Design</h2>{design_html}<h2>Notes</h2><ul>{notes}</ul>"
            f"<h2>Feature-block ablation</h2>{ablation}<h2>Legend</h2>{legend_html}</body></html>")
