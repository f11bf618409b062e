"""Subgroup performance and the TRIPOD+AI model card, on a small real benchmark and predictor."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from crlm import paths
from crlm.cohort.loader import read_mapping
from crlm.cohort.simulate import SIMULATED_CAVEATS
from crlm.cohort_kind import DEMONSTRATION_LABEL
from crlm.evaluation.calibration import calibration_in_the_large
from crlm.evaluation.intervals import bootstrap_indices
from crlm.evaluation.metrics import harrell_c
from crlm.evaluation.subgroups import TOO_FEW, subgroup_performance
from crlm.evaluation.weighted import resample_weights, weighted_harrell_c, weighted_oe
from crlm.predictor_training import train_predictor
from crlm.reporting.formatting import format_estimate, format_number
from crlm.reporting.model_card import SECTION_TITLES, build_model_card
from crlm.schema import FIELDS_BY_NAME

RULE = "highest Uno's C among learned models"


@pytest.fixture(scope="module")
def run(small_benchmark):
    cohort, res = small_benchmark  # conftest: one benchmark per session for the files that only read it
    predictor = train_predictor(cohort, "os", "coxph", n_interval_models=5)
    subgroups = subgroup_performance(res, "coxph", n_boot=50)
    return res, predictor, subgroups


@pytest.fixture(scope="module")
def card(run):
    res, predictor, subgroups = run
    return build_model_card(predictor.metadata, res, "coxph", subgroups, registered_name="crlm-simulated-os",
                            version="7", selection_rule=RULE)


def _with_population(res, **changes):
    return dataclasses.replace(res, population=dataclasses.replace(res.population, **changes))


# ------------------------------------------------------------------------------------------- subgroups


def test_subgroup_table_rows_and_values(run):
    res, _, sg = run
    n = len(res.y)
    assert {"male", "female"} <= set(sg.loc[sg.grouping == "sex", "subgroup"])
    assert list(sg.loc[sg.grouping == "age band (years)", "subgroup"]) == ["<60", "60-69", ">=70"]
    assert {"RAS status", "preoperative chemotherapy", "Fong CRS group"} <= set(sg.grouping)
    for _, rows in sg.groupby("grouping"):
        assert rows.patients.sum() == n
        assert rows.events.sum() == int(res.y["event"].sum())
    estimated = sg[sg.note != TOO_FEW]
    assert len(estimated) >= 8
    for col in ("harrell_c", "harrell_c_low", "harrell_c_high", "ref_harrell_c"):
        assert estimated[col].between(0, 1).all(), col
    assert (estimated.harrell_c_low <= estimated.harrell_c_high).all()
    assert (estimated.oe > 0).all() and (estimated.oe_low <= estimated.oe_high).all()
    assert (sg.horizon == 36.0).all() and sg.attrs["reference"] == "score:fong"
    # the point estimate is Harrell's C of the repeat-averaged OOF risk within the subgroup
    male = (res.population.data["sex"] == "male").to_numpy()
    risk = res.oof["coxph"].risk.mean(axis=0)
    row = sg[(sg.grouping == "sex") & (sg.subgroup == "male")].iloc[0]
    assert row.harrell_c == pytest.approx(harrell_c(res.y[male], risk[male]))
    fong = res.oof["score:fong"].risk.mean(axis=0)
    assert row.ref_harrell_c == pytest.approx(harrell_c(res.y[male], fong[male]))
    assert row.delta_c == pytest.approx(row.harrell_c - row.ref_harrell_c)


def test_fast_bootstrap_equals_metrics_on_resamples(run):
    res = run[0]
    y, grid = res.y, res.grid
    j = int(np.flatnonzero(grid == 36.0)[0])
    risk = res.oof["coxph"].risk.mean(axis=0)
    fong = res.oof["score:fong"].risk.mean(axis=0)  # integer totals: many ties in risk
    surv = res.oof["coxph"].survival.mean(axis=0)[:, j]
    idx = bootstrap_indices(len(y), 4, 11, strata=y["event"])
    W = resample_weights(idx, len(y))
    both = weighted_harrell_c(y, np.vstack([risk, fong]), W)
    oe = weighted_oe(y, surv, 36.0, W)
    for b in range(4):
        assert both[0, b] == pytest.approx(harrell_c(y[idx[b]], risk[idx[b]]), abs=1e-12)
        assert both[1, b] == pytest.approx(harrell_c(y[idx[b]], fong[idx[b]]), abs=1e-12)
        assert oe[b] == pytest.approx(calibration_in_the_large(y[idx[b]], surv[idx[b]], 36.0), abs=1e-12)


def test_small_subgroups_get_the_note(run):
    res = run[0]
    data = res.population.data.copy()
    censored, events = np.flatnonzero(~res.y["event"]), np.flatnonzero(res.y["event"])
    female = np.r_[censored[:22], events[:3]]  # 25 patients, 3 events
    data["sex"] = "male"
    data.loc[female, "sex"] = "female"
    data["age_years"] = 65.0
    data.loc[np.arange(10), "age_years"] = 50.0  # 10 patients under 60
    sg = subgroup_performance(_with_population(res, data=data), "coxph", n_boot=20)
    for grouping, level, n in (("sex", "female", 25), ("age band (years)", "<60", 10)):
        row = sg[(sg.grouping == grouping) & (sg.subgroup == level)].iloc[0]
        assert row.note == TOO_FEW and row.patients == n
        assert np.isnan(row.harrell_c) and np.isnan(row.oe) and np.isnan(row.ref_harrell_c)
    male = sg[(sg.grouping == "sex") & (sg.subgroup == "male")].iloc[0]
    assert male.note == "" and 0 < male.harrell_c < 1
    assert ">=70" not in set(sg.subgroup)  # empty levels are not listed


def test_groupings_follow_the_cohort(run):
    res = run[0]
    data = res.population.data.drop(columns=["ras_status", "neoadjuvant_chemotherapy"])
    sg = subgroup_performance(_with_population(res, data=data), "coxph", n_boot=10)
    assert not {"RAS status", "preoperative chemotherapy"} & set(sg.grouping)
    with pytest.raises(ValueError, match="not in this benchmark"):
        subgroup_performance(res, "rsf")


# ------------------------------------------------------------------------------------------- the card


def _table_rows(md: str, first_cell: str) -> list[list[str]]:
    """The cells of every Markdown table row whose first cell is ``first_cell``."""
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in md.splitlines()
            if line.startswith("| ")]
    return [r for r in rows if r[0] == first_cell]


def _parse_estimate(text: str) -> tuple[float, float, float]:
    """``0.712 (0.680, 0.745)`` -> the three numbers."""
    match = re.fullmatch(r"(-?\d+\.\d+) \((-?\d+\.\d+), (-?\d+\.\d+)\)", text)
    assert match, text
    return tuple(float(g) for g in match.groups())


def test_card_sections_and_numbers(run, card):
    res, predictor, sg = run
    md, _ = card
    headings = re.findall(r"^## (\d+)\. (.+)$", md, flags=re.M)
    assert [int(n) for n, _ in headings] == list(range(1, len(headings) + 1))  # numbered in order, none twice
    assert [t for _, t in headings] == list(SECTION_TITLES)
    assert md.startswith("# Model card: crlm-simulated-os (version 7)")
    # every benchmark metric the performance table shows is the benchmark's, with its interval, and the
    # estimate lies inside its printed interval
    performance = md.split("## 10. Performance")[1].split("## 11.")[0]
    shown = 0
    for metric, label in (("harrell_c", "Harrell's C"), ("ibs", "integrated Brier score (lower is better)"),
                          ("ici", "ICI at 36 months (lower is better)")):
        horizon = 36.0 if metric == "ici" else None
        for model, cell in zip(("coxph", "score:fong"), _table_rows(performance, label)[0][1:], strict=False):
            row = res.metric_row(model, metric, horizon)
            assert cell == format_estimate(row.estimate, row.ci_low, row.ci_high)
            estimate, low, high = _parse_estimate(cell)
            assert low <= estimate <= high
            shown += 1
    assert shown == 6
    bench = next(r for r in md.splitlines() if r.startswith("| benchmark (patients"))
    assert bench.split(" | ")[1:3] == [str(len(res.y)), str(int(res.y["event"].sum()))]
    meta = predictor.metadata
    training = next(r for r in md.splitlines() if r.startswith("| predictor training"))
    assert training.split(" | ")[1:3] == [str(meta.patients), str(meta.events)]
    delta = res.comparison("coxph", "harrell_c")
    assert format_estimate(delta.delta, delta.ci_low, delta.ci_high) in md
    predictors = md.split("## 5. Predictors")[1].split("## 6.")[0]
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", predictors, flags=re.M)
    assert listed == meta.fields_used  # every field the model uses, in its order, nothing else
    for name in meta.fields_used:
        f = FIELDS_BY_NAME[name]
        assert _table_rows(predictors, f"`{name}`")[0][1:4] == [f.label, f.block, f.timing]
    calibration = md.split("## 12. Calibration")[1].split("## 13.")[0]
    for h, ici in meta.calibration.items():
        assert _table_rows(calibration, h)[0][1:3] == [format_number(ici["ici_before"]),
                                                       format_number(ici["ici_after"])]
    assert f"Recalibration applied:** {'yes' if meta.recalibration_applied else 'no'}" in md
    male = sg[(sg.grouping == "sex") & (sg.subgroup == "male")].iloc[0]
    cells = _table_rows(md, "sex")
    male_row = next(r for r in cells if r[1] == "male")
    assert male_row[2:5] == [str(male.patients), str(male.events),
                             format_estimate(male.harrell_c, male.harrell_c_low, male.harrell_c_high)]
    for phrase in ("not causal", "local validation", "median imputation", "missing indicator",
                   "`unknown` is its own level", "Oracle (true model)", RULE, "Not run in this benchmark",
                   meta.explainer, meta.interval_method, "scikit-survival", "outer loop: 1 repeat(s) x 2-fold"):
        assert phrase.lower() in md.lower(), phrase
    limitations = md.split("## 16. Limitations")[1].split("## 17.")[0]
    for caveat in SIMULATED_CAVEATS:  # the simulator's declared caveats, not text found in its name
        assert f"- {caveat}" in limitations
    assert "Attribution" not in md  # a synthetic cohort has no data licence to attribute


def test_html_is_self_contained(card):
    md, page = card
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    for forbidden in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert forbidden not in page.lower(), forbidden
    without_links = re.sub(r"<a href=\"[^\"]*\">.*?</a>", "", page)
    assert not re.search(r"https?://", without_links)
    assert page.count("<table>") == md.count("\n|---")
    assert page.count("<h2>") == len(SECTION_TITLES)
    assert "<td>Harrell's C</td>" in page


def test_tcia_card_attributes_the_data_and_states_the_mappings_caveats(run):
    res, predictor, sg = run
    mapping = read_mapping(paths.data_dir() / paths.TCIA_MAPPING)
    assert len(mapping.caveats) >= 3
    tcia = _with_population(res, name="tcia-crlm", truth=None, source=mapping.source, licence=mapping.licence,
                            citation=mapping.citation, caveats=tuple(mapping.caveats))
    tcia = dataclasses.replace(tcia, cohort_name="tcia-crlm")
    meta = predictor.metadata | {"cohort": "tcia-crlm", "simulated": False, "caveats": None}
    md, page = build_model_card(meta, tcia, "coxph", sg, registered_name="crlm-tcia-os", version=None,
                                selection_rule=RULE)
    assert "unregistered" in md and "Attribution (CC BY 4.0)" in md and "doi:10.7937/QXK2-QG03" in md
    limitations = md.split("## 16. Limitations")[1].split("## 17.")[0]
    for caveat in mapping.caveats:  # declared in the mapping, printed as they are
        assert f"- {caveat}" in limitations
    for caveat in SIMULATED_CAVEATS:
        assert caveat not in md
    assert "synthetic" not in md.lower() and DEMONSTRATION_LABEL not in md
    hrefs = re.findall(r"<a href=\"([^\"]*)\">", page)
    assert "https://doi.org/10.1038/s41597-024-02981-2" in hrefs
    assert hrefs and all(re.match(r"https://(doi\.org|creativecommons\.org)/", h) for h in hrefs)
    assert not re.search(r"https?://", re.sub(r"<a href=\"[^\"]*\">.*?</a>", "", page))


def test_card_html_renders_every_markdown_table_and_escapes_raw_html(run, card):
    md, page = card
    parsed = _Tables()
    parsed.feed(page)
    assert len(parsed.tables) == md.count("\n|---")
    body_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert sum(len(t) for t in parsed.tables) == len(body_rows)  # header + body rows, each a <tr>
    res, predictor, sg = run
    hostile = _with_population(res, source="<script>alert(1)</script> <img src=x>")
    _, unsafe = build_model_card(predictor.metadata, hostile, "coxph", sg, registered_name="x", version="1",
                                 selection_rule=RULE)
    assert "<script" not in unsafe and "<img" not in unsafe and "&lt;script&gt;" in unsafe


class _Tables(HTMLParser):
    """The rows of every <table> of a page (cells' text)."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_card_refuses_mismatched_inputs(run):
    res, predictor, sg = run
    kwargs = {"registered_name": "x", "version": "1", "selection_rule": RULE}
    with pytest.raises(ValueError, match="not in the benchmark"):
        build_model_card(predictor.metadata, res, "rsf", sg, **kwargs)
    with pytest.raises(ValueError, match="two different models"):  # a score may be champion, not this predictor
        build_model_card(predictor.metadata, res, "score:fong", sg, **kwargs)
    with pytest.raises(ValueError, match="endpoint"):
        build_model_card(predictor.metadata | {"endpoint": "rfs"}, res, "coxph", sg, **kwargs)


def test_card_of_the_reference_score_as_champion_says_why(run):
    res, _, _ = run
    verdict = ("no learned model beat the Fong CRS on this cohort; the served model is the Fong CRS expressed as "
               "survival probabilities (a Cox model on the score). Why: coxph: uno_c difference -0.010")
    head = {"label": "optimism-corrected (Harrell's bootstrap) performance of the shipped model", "n_boot": 10,
            "patients": 300, "harrell_c": {"apparent": 0.6, "optimism": 0.0, "corrected": 0.6},
            "ici_36": {"apparent": 0.02, "optimism": -0.01, "corrected": 0.03}}
    predictor = train_predictor(res.population, "os", "score:fong", n_interval_models=5,
                                metadata={"champion_verdict": verdict, "headline": head})
    sg = subgroup_performance(res, "score:fong", n_boot=20)
    md, _ = build_model_card(predictor.metadata, res, "score:fong", sg, registered_name="crlm-simulated-os",
                             version="8", selection_rule=RULE)
    assert f"**Champion decision:** {verdict}" in md
    assert "**Headline, the shipped model:** optimism-corrected" in md and "Harrell's C 0.600" in md
    assert "confidence interval of the model's estimated survival" in md
