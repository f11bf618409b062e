"""Subgroup performance and the TRIPOD+AI model card, on a small real benchmark and predictor."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from crlm.evaluation.calibration import calibration_in_the_large
from crlm.evaluation.intervals import bootstrap_indices
from crlm.evaluation.metrics import harrell_c
from crlm.evaluation.subgroups import TOO_FEW, subgroup_performance
from crlm.evaluation.weighted import resample_weights, weighted_harrell_c, weighted_oe
from crlm.model_card import SECTION_TITLES, build_model_card
from crlm.predictor import train_predictor

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


def test_card_sections_and_numbers(run, card):
    res, predictor, sg = run
    md, _ = card
    for number, title in enumerate(SECTION_TITLES, start=1):
        assert f"## {number}. {title}" in md
    assert md.startswith("# Model card: crlm-simulated-os (version 7)")
    c = res.metrics[(res.metrics.model == "coxph") & (res.metrics.metric == "harrell_c")].iloc[0]
    assert f"| Harrell's C | {c.estimate:.3f} ({c.ci_low:.3f}, {c.ci_high:.3f}) |" in md
    assert f"| {len(res.y)} | {int(res.y['event'].sum())} |" in md  # benchmark patients and events
    meta = predictor.metadata
    assert f"| {meta['patients']} | {meta['events']} |" in md  # predictor training set
    comp = res.comparisons
    delta = comp[(comp.model == "coxph") & (comp.metric == "harrell_c")].iloc[0]
    assert f"{delta.delta:.3f} ({delta.ci_low:.3f}, {delta.ci_high:.3f})" in md
    for name in meta["fields_used"]:
        assert f"| `{name}` |" in md
    assert "| `age_years` | Age | clinical | preoperative |" in md
    ici = meta["calibration"]["36"]
    assert f"| 36 | {ici['ici_before']:.3f} | {ici['ici_after']:.3f} |" in md
    assert f"Recalibration applied:** {'yes' if meta['recalibration_applied'] else 'no'}" in md
    male = sg[(sg.grouping == "sex") & (sg.subgroup == "male")].iloc[0]
    assert f"| sex | male | {male.patients} | {male.events} | {male.harrell_c:.3f} (" in md
    for phrase in ("not causal", "local validation", "synthetic", "median imputation", "missing indicator",
                   "`unknown` is its own level", "Oracle (true model)", RULE, "Not run in this benchmark",
                   meta["explainer"], meta["interval_method"], "scikit-survival",
                   "outer loop: 1 repeat(s) x 2-fold"):
        assert phrase.lower() in md.lower(), phrase
    assert "CC BY 4.0" not in md  # a synthetic cohort has no data licence to attribute


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


def test_tcia_card_attributes_the_data_and_states_caveats(run):
    res, predictor, sg = run
    tcia = _with_population(
        res, name="tcia-crlm", truth=None,
        source="TCIA Colorectal-Liver-Metastases clinical data, v1 Oct 2022",
        licence="CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
        citation="Simpson AL et al. Scientific Data 11, 172 (2024). doi:10.1038/s41597-024-02981-2. "
                 "Dataset: doi:10.7937/QXK2-QG03.")
    tcia = dataclasses.replace(tcia, cohort_name="tcia-crlm")
    meta = predictor.metadata | {"cohort": "tcia-crlm"}
    md, page = build_model_card(meta, tcia, "coxph", sg, registered_name="crlm-tcia-os", version=None,
                                selection_rule=RULE)
    assert "unregistered" in md and "Attribution (CC BY 4.0)" in md and "doi:10.7937/QXK2-QG03" in md
    for phrase in ("pathological", "No RAS/BRAF/PIK3CA", "Single centre", "Fong reference"):
        assert phrase in md, phrase
    assert "Synthetic data" not in md
    hrefs = re.findall(r"<a href=\"([^\"]*)\">", page)
    assert "https://doi.org/10.1038/s41597-024-02981-2" in hrefs
    assert hrefs and all(re.match(r"https://(doi\.org|creativecommons\.org)/", h) for h in hrefs)
    assert not re.search(r"https?://", re.sub(r"<a href=\"[^\"]*\">.*?</a>", "", page))


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
