"""The simulator: deterministic, schema-valid, internally consistent, on the clinical.md targets, and its truth
is the model that generated the outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import crlm.cohort
from crlm.cohort import simulate as sim
from crlm.cohort.base import Cohort
from crlm.evaluation import simulator_check as check
from crlm.evaluation.metrics import harrell_c
from crlm.kaplan_meier import km_at
from crlm.schema import FIELDS, FIELDS_BY_NAME
from crlm.schema_artefacts import pandera_schema
from crlm.scores import compute_score


@pytest.fixture(scope="module")
def cohorts() -> dict[int, Cohort]:
    return {seed: sim.simulate_cohort(3000, seed) for seed in (7, 11)}


@pytest.fixture(scope="module")
def cohort(cohorts) -> Cohort:
    return cohorts[7]


def test_package_simulator_works_every_time():
    """``crlm.cohort`` once exported a function named like its ``simulate`` submodule, which the first import of
    the submodule replaced: the second call raised ``TypeError: 'module' object is not callable``."""
    first = crlm.cohort.simulate_cohort(50, 2)
    second = crlm.cohort.simulate_cohort(50, 2)
    pd.testing.assert_frame_equal(first.data, second.data)
    assert crlm.cohort.simulate is sim and callable(sim.simulate_cohort)


def test_same_seed_same_cohort_and_another_seed_differs():
    a, b, c = sim.simulate_cohort(400, 3), sim.simulate_cohort(400, 3), sim.simulate_cohort(400, 4)
    pd.testing.assert_frame_equal(a.data, b.data)
    np.testing.assert_array_equal(a.truth.lp_death, b.truth.lp_death)
    assert not a.data.drop(columns="patient_id").equals(c.data.drop(columns="patient_id"))
    assert not np.allclose(a.data["os_months"], c.data["os_months"])


def test_metadata_ids_and_every_schema_field(cohort):
    assert cohort.name == "simulated"
    assert cohort.source == "crlm simulator n=3000 seed=7"
    assert cohort.licence == "synthetic, no real patients"
    assert len(cohort) == 3000 and len(cohort.truth) == 3000
    assert cohort.truth.seed == 7 and cohort.subset(np.arange(10)).truth.seed == 7  # the seed travels on the truth
    assert cohort.with_outcome("os").truth.seed == 7
    assert list(cohort.data.columns) == [f.name for f in FIELDS]
    ids = cohort.data["patient_id"]
    assert ids.iloc[0] == "SIM-00001" and ids.iloc[-1] == "SIM-03000" and ids.is_unique
    with pytest.raises(ValueError):
        sim.simulate_cohort(0, 1)


def test_validates_against_the_schema_in_canonical_dtypes(cohort):
    df = cohort.data
    pandera_schema().validate(df, lazy=True)
    for name in df.columns:
        f = FIELDS_BY_NAME[name]
        if f.kind in ("float", "int"):
            assert df[name].dtype == np.float64, name
        elif f.kind == "bool":
            assert df[name].dtype == "boolean", name
        else:
            assert df[name].dtype == object, name
        if f.kind == "category":
            assert set(df[name].dropna()) <= set(f.categories), name
    # realistic missingness: some, not all
    for name, low, high in (("cea_ng_ml", 0.01, 0.10), ("ca19_9_u_ml", 0.15, 0.40), ("primary_grade", 0.03, 0.25),
                            ("primary_t_stage", 0.02, 0.15)):
        assert low < df[name].isna().mean() < high, name
    for name, low, high in (("kras_status", 0.15, 0.30), ("braf_v600e_status", 0.15, 0.45),
                            ("pik3ca_status", 0.30, 0.70), ("mmr_status", 0.30, 0.70)):
        assert low < (df[name] == "unknown").mean() < high, name
    for name in ("age_years", "n_liver_metastases", "largest_metastasis_cm", "os_months", "rfs_months"):
        assert df[name].notna().all(), name


@pytest.mark.parametrize("seed", [7, 11])
def test_check_table_passes_every_band(cohorts, seed):
    table = check.check_table(cohorts[seed])
    assert list(table.columns) == ["quantity", "low", "high", "observed", "pass"]
    assert len(table) >= 30 and table["observed"].notna().all()
    assert check.check_passes(table), "\n" + check.format_check(table)


def test_format_check_reports_a_failed_band(cohort):
    table = check.check_table(cohort)
    text = check.format_check(table)
    assert "5-year OS (KM)" in text and "FAIL" not in text and f"{len(table)}/{len(table)} targets met" in text
    broken = table.copy()
    broken.loc[0, ["low", "high"]] = (0.9, 1.0)
    broken["pass"] = (broken["observed"] >= broken["low"]) & (broken["observed"] <= broken["high"])
    assert not check.check_passes(broken)
    assert "FAIL" in check.format_check(broken)


def test_genomics_are_consistent(cohort):
    df = cohort.data
    ras_mut = (df["kras_status"] == "mutant") | (df["nras_status"] == "mutant")
    braf_mut = df["braf_v600e_status"] == "mutant"
    assert not (ras_mut & braf_mut).any()
    assert (df.loc[ras_mut, "ras_status"] == "mutant").all()
    assert ((df["ras_status"] == "wild_type") == ((df["kras_status"] == "wild_type")
                                                  & (df["nras_status"] == "wild_type"))).all()
    known = df["braf_v600e_status"] != "unknown"
    right = df["primary_side"] == "right"
    assert braf_mut[known & right].mean() > 2 * braf_mut[known & ~right & df["primary_side"].notna()].mean()


def test_outcomes_are_consistent(cohort):
    df = cohort.data
    os_t, rfs_t, liver_t = df["os_months"], df["rfs_months"], df["liver_rfs_months"]
    os_e, rfs_e = df["os_event"].astype(bool), df["rfs_event"].astype(bool)
    assert (rfs_t > 0).all() and (rfs_t <= os_t).all()
    assert ((liver_t >= rfs_t) & (liver_t <= os_t)).all()
    assert (rfs_e[os_e & (rfs_t == os_t)]).all()  # death without recurrence is an RFS event
    assert (~os_e[~rfs_e]).all() and (rfs_t[~rfs_e] == os_t[~rfs_e]).all()  # censored together
    assert (rfs_e & ~os_e).any() and (rfs_t < os_t).any()  # recurrences before death or censoring
    assert os_t.max() <= sim.CLOSING_MONTHS and os_t.max() > 150  # follow-up spans up to 15 years
    assert 0.3 < os_e.mean() < 0.7


def test_chemotherapy_and_response_fields_are_consistent(cohort):
    df = cohort.data
    treated = df["neoadjuvant_chemotherapy"].astype(bool)
    untreated = df[~treated]
    assert untreated["recist_response"].isna().all() and untreated["chemo_line"].isna().all()
    assert (untreated["chemo_regimen"] == "none").all() and (untreated["chemo_biologic"] == "none").all()
    assert (untreated["chemo_cycles"] == 0).all() and untreated["tumour_size_change_percent"].isna().all()
    assert untreated["viable_tumour_percent"].isna().all() and not untreated["progression_before_surgery"].any()
    tr = df[treated]
    assert (tr["chemo_regimen"] != "none").all() and (tr["chemo_cycles"].dropna() > 0).all()
    change, resp = tr["tumour_size_change_percent"], tr["recist_response"]
    assert (change[resp == "CR"].dropna() == -100).all() and (tr.loc[resp == "CR", "largest_metastasis_cm"] == 0).all()
    assert (change[resp == "PR"].dropna() <= -30).all() and (change[resp == "PD"].dropna() >= 20).all()
    assert change[resp == "SD"].dropna().between(-30, 20, inclusive="neither").all()
    assert change[resp.notna()].notna().mean() > 0.9 and change[resp.isna()].isna().all()
    assert not ((df["chemo_biologic"] == "anti_egfr") & (df["ras_status"] != "wild_type")).any()
    dfi = df["disease_free_interval_months"]
    assert (df.loc[dfi.notna(), "synchronous_metastases"] == (dfi[dfi.notna()] == 0)).all()
    assert df["synchronous_metastases"].notna().all()


def test_truth_survival_is_a_survival_function(cohort):
    truth = cohort.truth
    times = np.array([0.0, 1.0, 6.0, 12.0, 36.0, 60.0, 120.0, 240.0])
    for ep in ("os", "rfs", "liver_rfs"):
        s = truth.survival(ep, times)
        assert s.shape == (len(cohort), len(times))
        np.testing.assert_allclose(s[:, 0], 1.0)
        assert (np.diff(s, axis=1) <= 1e-12).all() and (s[:, -1] > 0).all() and (s[:, -1] < 1).all()
        np.testing.assert_allclose(truth.risk(ep), 1 - truth.survival(ep, [60.0])[:, 0])
    s_os, s_rfs = truth.survival("os", times), truth.survival("rfs", times)
    assert (s_rfs <= s_os + 1e-12).all()
    assert (truth.survival("liver_rfs", times) >= s_rfs - 1e-12).all()
    np.testing.assert_array_equal(truth.survival("dfs", times), s_rfs)
    with pytest.raises(ValueError):
        truth.survival("progression", times)


def test_truth_is_the_generating_model(cohorts):
    """The mean of the true curves matches the cohort's Kaplan–Meier curve (censoring is independent)."""
    both = [c for c in cohorts.values()]
    for ep, time, event in (("os", "os_months", "os_event"), ("rfs", "rfs_months", "rfs_event")):
        t = np.concatenate([c.data[time].to_numpy(float) for c in both])
        e = np.concatenate([c.data[event].to_numpy(bool) for c in both])
        mean_truth = np.concatenate([c.truth.survival(ep, [12.0, 60.0, 120.0]) for c in both]).mean(axis=0)
        for i, horizon in enumerate((12.0, 60.0, 120.0)):
            assert abs(km_at(t, e, horizon) - mean_truth[i]) < 0.03, (ep, horizon)


def test_truth_follows_the_cohort_subset(cohort):
    idx = np.array([5, 0, 17, 2999])
    sub = cohort.subset(idx)
    np.testing.assert_array_equal(sub.truth.risk("os"), cohort.truth.risk("os")[idx])
    mask = cohort.data["neoadjuvant_chemotherapy"].astype(bool).to_numpy()
    assert len(cohort.subset(mask).truth) == mask.sum()


def test_oracle_beats_fong_clearly(cohort):
    y = cohort.y("os")
    fong = compute_score("fong", cohort.data)["total"].to_numpy(float)
    keep = ~np.isnan(fong)
    c_fong = harrell_c(y[keep], fong[keep])
    c_oracle = harrell_c(y[keep], cohort.truth.risk("os")[keep])
    assert c_oracle > c_fong + 0.05
    assert c_oracle < 0.80  # clinical.md §2.1: a full model above ~0.80 would be unrealistic


def test_non_linear_and_interaction_terms():
    base = dict(node=np.array([False]), dfi=np.array([600.0]), n=np.array([1.0]), size=np.array([1.5]),
                cea=np.array([2.0]), ca19_9=np.array([10.0]), ehd=np.array([False]), ras=np.array([False]),
                braf=np.array([False]), pik3ca=np.array([False]), side=np.array(["left"], dtype=object),
                age=np.array([55.0]), comorbidity=np.array([False]), grade=np.array(["moderate"], dtype=object),
                t_stage=np.array(["T3"], dtype=object), recist=np.array(["PR"], dtype=object),
                pcr=np.array([False]), progression=np.array([False]), margin=np.array(["R0"], dtype=object),
                ablation=np.array([False]))

    def lp(**changes):
        return sim.linear_predictors({**base, **{k: np.array([v], dtype=object if isinstance(v, str) else None)
                                                 for k, v in changes.items()}})[0][0]

    assert abs(lp()) < 1e-12  # the reference patient
    ref = lp()
    assert lp(cea=4.9) == ref < lp(cea=50.0) and lp(cea=1000.0) == lp(cea=5000.0)  # threshold, plateau
    assert np.isclose(lp(cea=200.0) - ref, np.log(sim.HAZARD_RATIOS["cea"][0]))
    assert lp(size=1.9) == ref < lp(size=5.0) < lp(size=10.0) == lp(size=20.0)  # saturating size
    stable_wt = lp(recist="SD")
    stable_mut = lp(recist="SD", ras=True) - lp(ras=True)
    assert np.isclose(stable_mut, sim.RAS_RESPONSE_FACTOR * stable_wt) and stable_mut < stable_wt
