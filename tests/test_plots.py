"""Figures and the HTML leaderboard, drawn from a small real benchmark run on a simulated cohort."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from crlm.evaluation import plots
from crlm.reporting.formatting import format_interval, headline_horizon
from crlm.reporting.leaderboard import leaderboard_html, text_columns
from crlm.scores import compute_score

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def res(small_benchmark):
    return small_benchmark[1]  # conftest: one benchmark per session for the files that only read it


@pytest.fixture
def close():
    figures = []
    yield figures.append
    for fig in figures:
        plots.plt.close(fig)


def _save(fig: Figure, path) -> None:
    fig.savefig(path)  # as mlflow.log_figure does: no bbox_inches, so the layout itself must fit
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000


def _legend_labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_calibration_plot(res, tmp_path, close):
    fig = plots.calibration_plot(res, "coxph", 36)
    close(fig)
    assert isinstance(fig, Figure)
    ax, ax_hist = fig.axes
    valid = res.oof["coxph"].valid
    labels = _legend_labels(ax)
    assert labels[0] == "Perfect calibration" and "Smoothed" in labels[1] and "Kaplan–Meier" in labels[2]
    diagonal, curve = ax.lines[0], ax.lines[1]
    assert np.allclose(diagonal.get_xdata(), diagonal.get_ydata())
    assert len(curve.get_xdata()) == valid.sum()  # one smoothed point per valid patient
    # the curve is the predicted risk 1 - S(36) of the OOF predictions, in order
    idx = int(np.flatnonzero(res.grid == 36)[0])
    assert np.allclose(np.sort(1 - res.oof["coxph"].survival[0][valid, idx]), curve.get_xdata())
    (points,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(points.lines[0].get_xdata()) == 10  # deciles of a continuous prediction
    counts = [int(t.get_text()[2:]) for t in ax.texts if t.get_text().startswith("n=")]
    assert len(counts) == 10 and sum(counts) == valid.sum()
    assert sum(p.get_height() for p in ax_hist.patches) == valid.sum()  # histogram of every prediction
    box = next(t.get_text() for t in ax.texts if "ICI: " in t.get_text())
    assert f"{res.estimate('coxph', 'ici', 36):.3f}" in box and "O/E" in box and "Slope" in box
    assert "36 months" in ax.get_title(loc="left") and "months" in ax_hist.get_xlabel()
    _save(fig, tmp_path / "calibration.png")


def test_calibration_plot_of_a_score_groups_by_value(res, close):
    fig = plots.calibration_plot(res, "score:fong", 12)
    close(fig)
    ax = fig.axes[0]
    (points,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    totals = compute_score("fong", res.population.data)["total"][res.oof["score:fong"].valid]
    assert len(points.lines[0].get_xdata()) == totals.nunique()  # one point per score value, ties kept together
    counts = [int(t.get_text()[2:]) for t in ax.texts if t.get_text().startswith("n=")]
    assert sum(counts) == res.oof["score:fong"].valid.sum()


def test_calibration_plot_rejects_bad_input(res):
    with pytest.raises(ValueError, match="not on the benchmark's prediction grid"):
        plots.calibration_plot(res, "coxph", 37.5)
    with pytest.raises(ValueError, match="not in this benchmark"):
        plots.calibration_plot(res, "rsf", 36)


def test_km_by_risk_group(res, tmp_path, close):
    fig = plots.km_by_risk_group(res, "coxph")
    close(fig)
    left, right = fig.axes
    assert len(_legend_labels(left)) == 3 and len(_legend_labels(right)) == 2
    assert [lbl.split(" (")[0] for lbl in _legend_labels(left)] == ["Low risk", "Intermediate risk", "High risk"]
    assert _legend_labels(right)[0].startswith("Low (0–2)") and _legend_labels(right)[1].startswith("High (≥3)")
    sizes = [int(lbl.split("n=")[1].split(",")[0]) for lbl in _legend_labels(left)]
    assert sum(sizes) == res.oof["coxph"].valid.sum() and max(sizes) - min(sizes) <= 1  # tertiles
    fong = compute_score("fong", res.population.data)["group"]
    ref_sizes = [int(lbl.split("n=")[1].split(",")[0]) for lbl in _legend_labels(right)]
    assert ref_sizes == [int((fong == "low").sum()), int((fong == "high").sum())]
    # numbers at risk: four times per curve; at 0 months they are the group sizes
    for ax, n_groups, expected in ((left, 3, sizes), (right, 2, ref_sizes)):
        numbers = [a for a in ax.texts if isinstance(a, Annotation) and a.get_text().isdigit()]
        assert len(numbers) == 4 * n_groups
        at_zero = [int(a.get_text()) for a in numbers if a.xy[0] == 0]
        assert at_zero == expected
        assert ax.get_xlim() == (0.0, 120.0) and "Months" in ax.get_xlabel()
        assert any(t.get_text().startswith("Log-rank") for t in ax.texts)
    assert "survival probability" in left.get_ylabel()
    _save(fig, tmp_path / "km.png")


def test_km_by_risk_group_needs_a_score_reference(res):
    with pytest.raises(ValueError, match="score model"):
        plots.km_by_risk_group(res, "coxph", reference="coxph")


def test_time_dependent_auc_plot(res, tmp_path, close):
    fig = plots.time_dependent_auc_plot(res)
    close(fig)
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(res.oof)  # coxph, score:fong and the simulation's oracle
    labels = _legend_labels(ax)
    ref = labels.index(next(lbl for lbl in labels if lbl.startswith("Fong CRS (reference")))
    assert bars[ref].lines[0].get_linestyle() == "--"
    estimates = res.metrics.query("model == 'coxph' and metric == 'auc'").sort_values("horizon").estimate
    cox = bars[labels.index(next(lbl for lbl in labels if lbl.startswith("Cox PH")))]
    assert np.allclose(cox.lines[0].get_ydata(), estimates)
    assert list(ax.get_xticks()) == list(res.horizons)
    _save(fig, tmp_path / "auc.png")

    one = plots.time_dependent_auc_plot(res, models=["coxph"])
    close(one)
    assert len([c for c in one.axes[0].containers if isinstance(c, ErrorbarContainer)]) == 1
    with pytest.raises(ValueError, match="no AUC"):
        plots.time_dependent_auc_plot(res, models=["rsf"])


@pytest.mark.parametrize("metric", ["harrell_c", "ibs"])
def test_forest_plot(res, tmp_path, close, metric):
    fig = plots.forest_plot(res, metric)
    close(fig)
    (ax,) = fig.axes
    comp = res.comparisons[res.comparisons.metric == metric]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(comp) == len(ax.get_yticks())
    deltas = [c.lines[0].get_xdata()[0] for c in bars]
    gains = deltas if metric == "harrell_c" else [-d for d in deltas]
    assert gains == sorted(gains)  # best improvement over the reference on top
    assert any(line.get_xdata()[0] == 0 for line in ax.lines)  # the no-difference line
    cox = comp[comp.model == "coxph"].iloc[0]
    assert any(f"{cox.delta:+.3f} [{cox.ci_low:+.3f}, {cox.ci_high:+.3f}]" in t.get_text() for t in ax.texts)
    assert "Fong CRS" in ax.get_xlabel()
    _save(fig, tmp_path / f"forest_{metric}.png")
    with pytest.raises(ValueError, match="no comparisons"):
        plots.forest_plot(res, "brier")


def test_importance_plot(tmp_path, close):
    names = [f"feature_{i}" for i in range(25)]
    values = np.linspace(-0.01, 0.3, 25)[::-1]
    fig = plots.importance_plot(names, values, "Permutation importance", top_k=10, xlabel="Decrease in C")
    close(fig)
    (ax,) = fig.axes
    assert len(ax.patches) == 10
    widths = [p.get_width() for p in ax.patches]
    assert widths[-1] == pytest.approx(0.3) and widths == sorted(widths)  # largest at the top
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "feature_0"
    assert "top 10 of 25" in ax.get_title(loc="left") and ax.get_xlabel() == "Decrease in C"
    _save(fig, tmp_path / "importance.png")
    with pytest.raises(ValueError, match="names but"):
        plots.importance_plot(names[:3], values, "x")


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_leaderboard_html(res):
    page = leaderboard_html(res)
    for external in ("http://", "https://", "src=", "href=", "@import", "url(", "<script"):
        assert external not in page
    parsed = _Tables()
    parsed.feed(page)
    header, *rows = parsed.tables[0]
    assert len(rows) == len(res.oof)  # one row per model, each model once
    assert sorted(r[0].split()[-1] for r in rows) == sorted(res.oof)
    at = headline_horizon(res.horizons)
    shown = {"Harrell C": ("harrell_c", None), "IBS": ("ibs", None), f"ICI {at:g} mo": ("ici", at)}
    assert set(shown) <= set(header)
    for row in rows:
        model = row[0].split()[-1]
        for column, (metric, horizon) in shown.items():
            cell = row[header.index(column)]
            m = res.metric_row(model, metric, horizon)
            numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", cell)]
            assert numbers[0] == pytest.approx(m.estimate, abs=5e-4), (model, column)
            if len(numbers) == 3:  # an estimate lies inside its interval, as printed
                assert format_interval(m.ci_low, m.ci_high, enclose="") in cell
                assert numbers[1] <= numbers[0] <= numbers[2]
    for note in res.notes:
        assert note in page


def test_auc_plot_handles_more_models_than_colours(res):
    from crlm.evaluation.plots import PALETTE, time_dependent_auc_plot

    # more models than colours: the small benchmark's models (and their metrics) under more names than PALETTE
    copies = {f"{name} #{i}": name for i in range(len(PALETTE)) for name in res.oof}
    metrics = pd.concat([res.metrics[res.metrics.model == name].assign(model=copy)
                         for copy, name in copies.items()], ignore_index=True)
    many = dataclasses.replace(res, oof={copy: res.oof[name] for copy, name in copies.items()}, metrics=metrics)
    assert len(many.oof) > len(PALETTE)
    fig = time_dependent_auc_plot(many)
    assert len(fig.axes[0].get_legend().get_texts()) == len(many.oof)


def test_text_leaderboard_quotes_the_headline_horizon(res):
    board = res.leaderboard()
    columns = text_columns(res, board)
    assert f"ici_{headline_horizon(res.horizons):g}" in columns and set(columns) <= set(board.columns)
    short = dataclasses.replace(res, horizons=[12.0, 24.0])  # 36 months not evaluated: the last horizon
    assert "ici_24" in text_columns(short, board.rename(columns={"ici_36": "ici_24"}))
