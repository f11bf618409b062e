"""Behaviour of the clinical scores: every cut-off on both sides, groups, missing data, vectorised = one patient."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crlm.cohort.base import to_canonical
from crlm.explain import describe, value_text
from crlm.features import TumourBurdenScore
from crlm.schema import FIELDS_BY_NAME
from crlm.scores import (
    SCORE_NAMES,
    SCORES,
    available_scores,
    compute_score,
    score_patient,
    score_table,
    tumour_burden_score,
)

# Every factor known and scoring 0 in every score (TBS sqrt(2^2 + 1^2) = 2.24, zone 1).
BASE = dict(age_years=50.0, primary_t_stage="T2", primary_node_positive=False, disease_free_interval_months=36.0,
            synchronous_metastases=False, n_liver_metastases=1, largest_metastasis_cm=2.0, cea_ng_ml=5.0,
            extrahepatic_disease=False, kras_status="wild_type", nras_status="wild_type", resection_margin="R0",
            fong_score_recorded=0)
NO_DFI = dict(disease_free_interval_months=None, synchronous_metastases=None)


def patient(**overrides) -> dict:
    return {**BASE, **overrides}


def test_definitions_are_consistent_with_the_schema():
    assert tuple(SCORES) == SCORE_NAMES
    for name, d in SCORES.items():
        assert d.name == name and d.label and d.reference
        assert set(d.fields) <= set(FIELDS_BY_NAME), name
        assert len(d.groups) == len(d.group_starts)
        assert list(d.group_starts) == sorted(d.group_starts)
    assert [n for n, d in SCORES.items() if not d.preoperative] == ["nordlinger"]


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_base_patient_scores_zero_in_the_lowest_group(name):
    out = score_patient(name, BASE)
    assert out["group"] == SCORES[name].groups[0]
    assert out["missing"] == [] and out["reason"] is None
    if name != "tbs":
        assert out["total"] == 0.0 and set(out["points"].values()) == {0.0}


BOUNDARIES = [
    # Fong 1999: node+, DFI < 12, n > 1, CEA > 200, size > 5
    ("fong", "cea_gt_200", dict(cea_ng_ml=200), 0), ("fong", "cea_gt_200", dict(cea_ng_ml=200.01), 1),
    ("fong", "size_gt_5", dict(largest_metastasis_cm=5.0), 0), ("fong", "size_gt_5", dict(largest_metastasis_cm=5.01), 1),
    ("fong", "dfi_lt_12", dict(NO_DFI, disease_free_interval_months=12), 0),
    ("fong", "dfi_lt_12", dict(NO_DFI, disease_free_interval_months=11.9), 1),
    ("fong", "dfi_lt_12", dict(NO_DFI, disease_free_interval_months=0), 1),
    ("fong", "n_gt_1", dict(n_liver_metastases=1), 0), ("fong", "n_gt_1", dict(n_liver_metastases=2), 1),
    ("fong", "node_positive", dict(primary_node_positive=True), 1),
    # GAME 2018: KRAS mutant, CEA >= 20, node+, TBS 3 to < 9 = 1 / >= 9 = 2, EHD = 2
    ("game", "cea_ge_20", dict(cea_ng_ml=19.99), 0), ("game", "cea_ge_20", dict(cea_ng_ml=20), 1),
    ("game", "tbs", dict(n_liver_metastases=2, largest_metastasis_cm=2.2), 0),  # TBS 2.97
    ("game", "tbs", dict(n_liver_metastases=3, largest_metastasis_cm=0.0), 1),  # TBS exactly 3
    ("game", "tbs", dict(n_liver_metastases=4, largest_metastasis_cm=8.0), 1),  # TBS 8.94
    ("game", "tbs", dict(n_liver_metastases=9, largest_metastasis_cm=0.0), 2),  # TBS exactly 9
    ("game", "kras_mutant", dict(kras_status="mutant"), 1),
    ("game", "node_positive", dict(primary_node_positive=True), 1),
    ("game", "extrahepatic", dict(extrahepatic_disease=True), 2),
    # m-CS 2019: RAS mutant, node+, size > 5
    ("mcs", "size_gt_5", dict(largest_metastasis_cm=5.0), 0), ("mcs", "size_gt_5", dict(largest_metastasis_cm=5.01), 1),
    ("mcs", "ras_mutant", dict(kras_status="mutant"), 1), ("mcs", "node_positive", dict(primary_node_positive=True), 1),
    # Nordlinger 1996: age > 60, pT4, node+, DFI < 24, n >= 4, size >= 5, margin < 1 cm
    ("nordlinger", "age_gt_60", dict(age_years=60), 0), ("nordlinger", "age_gt_60", dict(age_years=60.5), 1),
    ("nordlinger", "n_ge_4", dict(n_liver_metastases=3), 0), ("nordlinger", "n_ge_4", dict(n_liver_metastases=4), 1),
    ("nordlinger", "size_ge_5", dict(largest_metastasis_cm=4.99), 0),
    ("nordlinger", "size_ge_5", dict(largest_metastasis_cm=5.0), 1),
    ("nordlinger", "dfi_lt_24", dict(NO_DFI, disease_free_interval_months=23.9), 1),
    ("nordlinger", "dfi_lt_24", dict(NO_DFI, disease_free_interval_months=24), 0),
    ("nordlinger", "pt4", dict(primary_t_stage="T3"), 0), ("nordlinger", "pt4", dict(primary_t_stage="T4"), 1),
    ("nordlinger", "node_positive", dict(primary_node_positive=True), 1),
    ("nordlinger", "margin_lt_1cm", dict(resection_margin="R0"), 0),
    ("nordlinger", "margin_lt_1cm", dict(resection_margin="R1"), 1),
    ("nordlinger", "margin_lt_1cm", dict(resection_margin="R2"), 1),
    # Konopke 2009: synchronous, n >= 4, CEA >= 200
    ("konopke", "n_ge_4", dict(n_liver_metastases=3), 0), ("konopke", "n_ge_4", dict(n_liver_metastases=4), 1),
    ("konopke", "cea_ge_200", dict(cea_ng_ml=199.9), 0), ("konopke", "cea_ge_200", dict(cea_ng_ml=200), 1),
    ("konopke", "synchronous", dict(synchronous_metastases=True), 1),
    ("konopke", "synchronous", dict(NO_DFI, disease_free_interval_months=0), 1),  # derived from DFI 0
    ("konopke", "synchronous", dict(NO_DFI, disease_free_interval_months=1), 0),
]


@pytest.mark.parametrize(("name", "factor", "overrides", "points"), BOUNDARIES)
def test_cut_off_boundaries(name, factor, overrides, points):
    p = patient(**overrides)
    out = score_patient(name, p)
    assert out["points"][factor] == points
    assert out["total"] == points  # every other factor scores 0
    vec = compute_score(name, pd.DataFrame([p]))
    assert vec.loc[0, factor] == points and vec.loc[0, "total"] == points


# Point-giving changes, applied cumulatively: after k of them the total is k.
CUMULATIVE = {
    "fong": ([dict(primary_node_positive=True), dict(n_liver_metastases=2), dict(cea_ng_ml=300),
              dict(largest_metastasis_cm=6.0), dict(disease_free_interval_months=6, synchronous_metastases=None)],
             ["low", "low", "low", "high", "high", "high"]),
    "mcs": ([dict(kras_status="mutant"), dict(primary_node_positive=True), dict(largest_metastasis_cm=6.0)],
            ["low", "intermediate", "moderate", "high"]),
    "nordlinger": ([dict(age_years=70), dict(primary_t_stage="T4"), dict(primary_node_positive=True),
                    dict(disease_free_interval_months=6, synchronous_metastases=None), dict(n_liver_metastases=5),
                    dict(largest_metastasis_cm=6.0), dict(resection_margin="R1")],
                   ["low"] * 3 + ["intermediate"] * 2 + ["high"] * 3),
    "konopke": ([dict(synchronous_metastases=True, disease_free_interval_months=0), dict(n_liver_metastases=4),
                 dict(cea_ng_ml=250)], ["low", "intermediate", "high", "high"]),
}


@pytest.mark.parametrize("name", sorted(CUMULATIVE))
def test_group_edges_cumulative(name):
    changes, groups = CUMULATIVE[name]
    p = dict(BASE)
    for k in range(len(changes) + 1):
        out = score_patient(name, p)
        assert (out["total"], out["group"]) == (k, groups[k])
        if k < len(changes):
            p.update(changes[k])


@pytest.mark.parametrize(("overrides", "total", "group"), [
    ({}, 0, "low"),
    (dict(kras_status="mutant"), 1, "low"),
    (dict(kras_status="mutant", cea_ng_ml=20), 2, "medium"),
    (dict(kras_status="mutant", cea_ng_ml=20, primary_node_positive=True), 3, "medium"),
    (dict(extrahepatic_disease=True, n_liver_metastases=9, largest_metastasis_cm=0.0), 4, "high"),
    (dict(kras_status="mutant", cea_ng_ml=50, primary_node_positive=True, extrahepatic_disease=True,
          n_liver_metastases=4, largest_metastasis_cm=10.0), 7, "high"),
])
def test_game_groups(overrides, total, group):
    out = score_patient("game", patient(**overrides))
    assert (out["total"], out["group"]) == (total, group)


@pytest.mark.parametrize(("score", "group"), [(0, "low"), (2, "low"), (3, "high"), (5, "high")])
def test_fong_recorded_reads_the_column(score, group):
    out = score_patient("fong_recorded", patient(fong_score_recorded=score, cea_ng_ml=None))
    assert (out["total"], out["group"]) == (score, group)
    assert score_patient("fong_recorded", patient(fong_score_recorded=None))["total"] is None


@pytest.mark.parametrize(("size", "n", "tbs", "zone"), [
    (5.0, 1, 5.10, "zone 2"),  # clinical.md §1.4 worked examples
    (3.0, 3, 4.24, "zone 2"),
    (8.0, 4, 8.94, "zone 2"),
    (2.2, 2, 2.97, "zone 1"),
    (0.0, 3, 3.00, "zone 2"),
    (0.0, 9, 9.00, "zone 3"),
    (12.0, 2, 12.17, "zone 3"),
])
def test_tbs_value_and_zones(size, n, tbs, zone):
    out = score_patient("tbs", {"largest_metastasis_cm": size, "n_liver_metastases": n})
    assert out["total"] == pytest.approx(tbs, abs=0.005)
    assert out["group"] == zone
    assert out["points"] == {"size_cm": size, "n_metastases": n}


def test_missing_cea_makes_fong_missing_not_zero():
    out = score_patient("fong", patient(cea_ng_ml=None))
    assert out["total"] is None and out["group"] is None
    assert out["points"]["cea_gt_200"] is None and out["points"]["n_gt_1"] == 0.0
    assert out["missing"] == ["cea_ng_ml"]
    assert out["reason"] == "not computable: missing cea_ng_ml"
    vec = compute_score("fong", pd.DataFrame([patient(cea_ng_ml=None)]))
    assert np.isnan(vec.loc[0, "total"]) and pd.isna(vec.loc[0, "group"])


@pytest.mark.parametrize("kras", ["unknown", None])
def test_unknown_kras_makes_game_missing(kras):
    out = score_patient("game", patient(kras_status=kras, nras_status="unknown"))
    assert out["total"] is None and out["points"]["kras_mutant"] is None
    assert out["missing"] == ["kras_status"]
    # m-CS needs RAS, which is unknown too (KRAS not known, NRAS not mutant).
    assert score_patient("mcs", patient(kras_status=kras, nras_status="wild_type"))["missing"] == ["ras_status"]


def test_unknown_kras_but_mutant_nras_is_ras_mutant():
    out = score_patient("mcs", patient(kras_status="unknown", nras_status="mutant"))
    assert out["points"]["ras_mutant"] == 1.0


def test_nras_only_mutant_counts_for_mcs_not_game():
    p = patient(kras_status="wild_type", nras_status="mutant")
    assert score_patient("game", p)["points"]["kras_mutant"] == 0.0
    assert score_patient("mcs", p)["points"]["ras_mutant"] == 1.0
    # the same when ras_status is given rather than derived
    p = {k: v for k, v in p.items() if k != "nras_status"} | {"ras_status": "mutant"}
    assert score_patient("mcs", p)["points"]["ras_mutant"] == 1.0


def test_synchronous_without_dfi():
    sync = patient(**NO_DFI) | {"synchronous_metastases": True}
    assert score_patient("fong", sync)["points"]["dfi_lt_12"] == 1.0
    assert score_patient("nordlinger", sync)["points"]["dfi_lt_24"] == 1.0
    assert score_patient("konopke", sync)["points"]["synchronous"] == 1.0
    # metachronous alone does not say whether the DFI is < 12 (or < 24) months
    meta = patient(**NO_DFI) | {"synchronous_metastases": False}
    out = score_patient("fong", meta)
    assert out["total"] is None and out["missing"] == ["disease_free_interval_months"]
    assert score_patient("nordlinger", meta)["points"]["dfi_lt_24"] is None
    assert score_patient("konopke", meta)["points"]["synchronous"] == 0.0
    both = score_patient("fong", patient(**NO_DFI))
    assert both["missing"] == ["disease_free_interval_months", "synchronous_metastases"]


def test_missing_columns_are_all_missing_and_index_and_dtypes_are_kept():
    df = pd.DataFrame([patient(), patient(cea_ng_ml=500)], index=[10, 20]).drop(columns="cea_ng_ml")
    out = compute_score("fong", df)
    assert list(out.index) == [10, 20]
    assert list(out.columns) == ["node_positive", "dfi_lt_12", "n_gt_1", "cea_gt_200", "size_gt_5", "total", "group"]
    assert out["total"].isna().all() and out["group"].isna().all() and out["cea_gt_200"].isna().all()
    assert (out["n_gt_1"] == 0).all()
    assert all(out[c].dtype == np.float64 for c in out.columns if c != "group") and out["group"].dtype == object
    assert np.isnan(compute_score("tbs", pd.DataFrame(index=[3])).loc[3, "total"])  # no columns: NaN, no error


def test_score_table_and_available_scores():
    rows = [patient(cea_ng_ml=300, n_liver_metastases=3), patient(kras_status="unknown")]
    df = to_canonical(pd.DataFrame(rows)).drop(columns=["fong_score_recorded", "resection_margin"])
    table = score_table(df)
    assert list(table.columns) == [c for n in ("fong", "game", "mcs", "tbs", "konopke") for c in (n, f"{n}_group")]
    assert table["fong"].tolist() == [2.0, 0.0] and table["fong_group"].tolist() == ["low", "low"]
    assert table.loc[0, "game"] == 2.0 and np.isnan(table.loc[1, "game"]) and pd.isna(table.loc[1, "game_group"])
    assert "fong_recorded" in score_table(to_canonical(pd.DataFrame(rows)))
    assert list(score_table(df, names=("tbs",)).columns) == ["tbs", "tbs_group"]
    assert available_scores(df) == ["fong", "game", "mcs", "tbs", "konopke"]
    assert available_scores(df.assign(cea_ng_ml=np.nan)) == ["mcs", "tbs"]


def test_unknown_score_name_lists_the_known_ones():
    for call in (lambda: compute_score("crs", pd.DataFrame()), lambda: score_patient("crs", {}),
                 lambda: score_table(pd.DataFrame(), names=("crs",))):
        with pytest.raises(ValueError, match="known scores: fong, game, mcs, tbs, nordlinger, konopke"):
            call()


def _random_cohort(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {
        "age_years": rng.uniform(30, 85, n).round(1),
        "primary_t_stage": rng.choice(["T1", "T2", "T3", "T4"], n),
        "primary_node_positive": rng.random(n) < 0.5,
        "disease_free_interval_months": np.where(rng.random(n) < 0.4, 0.0, rng.choice([6, 11.9, 12, 23.9, 24, 40], n)),
        "synchronous_metastases": rng.random(n) < 0.5,
        "n_liver_metastases": rng.integers(1, 10, n).astype(float),
        "largest_metastasis_cm": rng.choice([0.5, 2.0, 4.99, 5.0, 5.01, 8.0, 12.0], n),
        "cea_ng_ml": rng.choice([2.0, 19.99, 20.0, 150.0, 199.9, 200.0, 200.01, 900.0], n),
        "extrahepatic_disease": rng.random(n) < 0.2,
        "kras_status": rng.choice(["mutant", "wild_type", "unknown"], n),
        "nras_status": rng.choice(["mutant", "wild_type", "unknown"], n),
        "resection_margin": rng.choice(["R0", "R1", "R2"], n),
        "fong_score_recorded": rng.integers(0, 6, n).astype(float),
    }
    df = pd.DataFrame(cols).astype(object)
    df = df.mask(rng.random(df.shape) < 0.1)  # 10 % missing everywhere
    # synchronous only kept where the DFI is missing or agrees with it
    agrees = df["disease_free_interval_months"].isna() | df["synchronous_metastases"].isna() | (
        (df["disease_free_interval_months"] == 0) == df["synchronous_metastases"])
    df.loc[~agrees, "synchronous_metastases"] = np.nan
    return to_canonical(df)


def test_vectorised_equals_per_patient():
    df = _random_cohort(150)
    records = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in df.to_dict("records")]
    for name in SCORE_NAMES:
        vec = compute_score(name, df)
        assert vec["total"].notna().any() and vec["total"].isna().any(), name
        for i, rec in enumerate(records):
            one = score_patient(name, rec)
            total = vec["total"].iloc[i]
            assert (one["total"] is None) == math.isnan(total), (name, i)
            if one["total"] is not None:
                assert one["total"] == pytest.approx(total) and one["group"] == vec["group"].iloc[i]
            for factor, pts in one["points"].items():
                v = vec[factor].iloc[i]
                assert (pts is None and np.isnan(v)) or pts == pytest.approx(v), (name, factor, i)
            assert (one["missing"] == []) == (one["total"] is not None)


def test_nordlinger_needs_the_margin():
    out = score_patient("nordlinger", patient(resection_margin=None))
    assert out["total"] is None and out["missing"] == ["resection_margin"]
    assert score_patient("nordlinger", patient(primary_t_stage=None))["missing"] == ["primary_t_stage"]


def test_one_tumour_burden_score_for_the_score_the_features_and_the_explanations():
    df = pd.DataFrame({"largest_metastasis_cm": [3.0, np.nan, 6.0, 0.5], "n_liver_metastases": [4.0, 2.0, 8.0, 1.0]})
    tbs = tumour_burden_score(df["largest_metastasis_cm"], df["n_liver_metastases"])
    np.testing.assert_allclose(tbs, [5.0, np.nan, 10.0, np.sqrt(1.25)])  # Sasaki 2018: sqrt(size^2 + number^2)
    np.testing.assert_allclose(compute_score("tbs", df)["total"].to_numpy(float), tbs)
    raw = TumourBurdenScore()._values([df["largest_metastasis_cm"].to_numpy(), df["n_liver_metastases"].to_numpy()])
    np.testing.assert_allclose(raw[:, 0], tbs)
    row = df.iloc[0].to_dict()
    assert value_text("tumour_burden_score", None, row) == "5.0"
    assert describe("tumour_burden_score", None, 0.1, "os", row)["value"] == 5.0
