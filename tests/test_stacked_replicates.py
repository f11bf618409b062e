"""The bootstrap replicates evaluated together (crlm.stacked_features, SurvivalKernel.stack) equal the
per-replicate reference path: each replicate's own preprocessing, model and recalibration map in turn."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from crlm.bootstrap_curves import EPS, _clip_cloglog
from crlm.cohort.base import canonical_columns, predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.intervals import bootstrap_indices
from crlm.features import make_preprocessor
from crlm.models import make_model
from crlm.predictor_training import train_predictor
from crlm.schema import Field
from crlm.stacked_features import StackedPreprocessing

TMB = Field("tmb_mut_mb", "float", "genomic", "preoperative", "TMB", "mut/Mb", 0, 500)
STROMA = Field("stroma_type", "category", "clinical", "preoperative", "Tumour stroma type",
                  categories=("mature", "intermediate", "immature"))


def with_extra_fields(data, seed):
    """A centre's cohort: its own number and category, some of them missing."""
    rng = np.random.default_rng(seed)
    data = data.copy()
    data["tmb_mut_mb"] = np.where(rng.random(len(data)) < 0.2, np.nan, rng.lognormal(1, 0.5, len(data)))
    data["stroma_type"] = np.where(rng.random(len(data)) < 0.15, None,
                                    rng.choice(["mature", "intermediate", "immature"], len(data)))
    return data


def requests(data, n, seed):
    """Request rows: the cohort's own, with extra cells blanked, fields absent, and values never seen."""
    rng = np.random.default_rng(seed)
    rows = predictors_frame(data).sample(n, random_state=seed).reset_index(drop=True).to_dict("records")
    for i, row in enumerate(rows):
        for name in list(row):
            if rng.random() < 0.25 and i % 2:
                del row[name]  # absent from the request
            elif rng.random() < 0.25:
                row[name] = None  # given as missing
    if "stroma_type" in data:
        rows[0]["stroma_type"] = "unrecorded"  # a level no replicate saw: all its one-hot columns are 0
    rows.append({})  # nothing known at all
    return rows


def replicate_preprocessors(data, n_boot, seed, **params):
    event = np.zeros(len(data), dtype=bool)
    event[::3] = True
    return [make_preprocessor(**params).fit(data.iloc[idx])
            for idx in bootstrap_indices(len(data), n_boot, seed, strata=event)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("params", [
    {},
    {"postoperative": True},
    {"blocks": ("clinical",)},
    {"extra_fields": (TMB, STROMA)},
    {"extra_fields": (TMB, STROMA), "plain_imputation": ("braf_v600e_status", "ca19_9_u_ml", "stroma_type")},
], ids=["default", "postoperative", "clinical-only", "extra-fields", "plain-imputation"])
def test_stacked_preprocessing_equals_each_replicates_own_transform(seed, params):
    data = simulate_cohort(150, seed=seed).data
    if "extra_fields" in params:
        data = with_extra_fields(data, seed)
    pres = replicate_preprocessors(data, 12, seed, **params)
    stacked = StackedPreprocessing.build(pres)
    assert stacked is not None
    rows = requests(data, 40, seed)
    Z = stacked.transform(canonical_columns(rows))
    assert Z.shape[:2] == (12, len(rows))
    for b, pre in enumerate(pres):
        own = np.asarray(pre.transform(canonical_columns(rows)), dtype=float)
        np.testing.assert_allclose(Z[b, :, :own.shape[1]], own, rtol=0, atol=1e-12)
        assert not Z[b, :, own.shape[1]:].any()  # the padding is zero
    assert_linear_predictors_equal_the_model_matrices(stacked, rows, seed)


def assert_linear_predictors_equal_the_model_matrices(stacked, rows, seed):
    """Linear replicates' log-hazards from the raw columns' basis (``StackedPreprocessing.linear``) equal those of
    the (B, n, P) model matrices, and a patient's does not depend on the rows it came with (bit for bit)."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(0, 1, (stacked.width, stacked.n_replicates))
    coef[np.arange(stacked.width)[:, None] >= stacked.widths[None, :]] = 0.0  # nothing on the padding
    linear = stacked.linear(SimpleNamespace(coef=coef))  # a stacked linear kernel's coefficients
    rows = rows * 3  # more patients than one sum takes at a time (PATIENTS_PER_SUM)
    columns = canonical_columns(rows)
    log_hazard = linear.log_hazard(columns)
    np.testing.assert_allclose(log_hazard, np.einsum("knp,pk->nk", stacked.transform(columns), coef), rtol=0,
                               atol=1e-11)
    for i in (0, 3, len(rows) - 1):
        assert np.array_equal(linear.log_hazard([rows[i]])[0], log_hazard[i])


@pytest.mark.parametrize("name", ["cox_prior", "fong_plus"])
def test_stacked_preprocessing_of_the_literature_and_score_columns(name):
    data = simulate_cohort(150, seed=4).data
    X = predictors_frame(data)
    pres = [make_model(name, columns_present=list(X.columns)).steps[0][1].fit(X.iloc[idx])
            for idx in bootstrap_indices(len(X), 6, 4)]
    stacked = StackedPreprocessing.build(pres)
    assert stacked is not None
    rows = requests(data, 30, 4)
    Z = stacked.transform(rows)
    for b, pre in enumerate(pres):
        own = np.asarray(pre.transform(rows), dtype=float)
        np.testing.assert_allclose(Z[b, :, :own.shape[1]], own, rtol=0, atol=1e-12)
    assert_linear_predictors_equal_the_model_matrices(stacked, rows, 4)


def test_an_unknown_preprocessor_keeps_the_per_replicate_path():
    X = predictors_frame(simulate_cohort(100, seed=5).data)
    canonical_rows = make_model("ensemble", columns_present=list(X.columns)).steps[0][1].fit(X)
    assert StackedPreprocessing.build([canonical_rows]) is None


@pytest.fixture(scope="module")
def centre_cohort():
    cohort = simulate_cohort(260, seed=8)
    return dataclasses.replace(cohort, data=with_extra_fields(cohort.data, 8), extra_fields=(TMB, STROMA))


@pytest.mark.parametrize("model_name", ["coxnet", "gbsa", "rsf", "xgb_cox"])
def test_stacked_replicates_equal_the_per_replicate_path(model_name, centre_cohort):
    pred = train_predictor(centre_cohort, "rfs", model_name, n_interval_models=8, seed=3,
                           preprocess_params={"preprocess__extra_fields": (TMB, STROMA)})
    reps = pred.replicates
    rows = canonical_columns(requests(centre_cohort.data, 30, 9))
    fast = reps.stacked(rows)
    assert fast is not None and fast[1].kind == ("linear" if model_name == "coxnet" else "trees")
    reference = reps.survival_per_replicate(rows)
    np.testing.assert_allclose(reps.survival(rows), reference, rtol=0, atol=1e-12)
    # proportional-hazards replicates reach the band's scale, log(-log S), without the curves; the same band
    cloglog = reps.cloglog(rows)
    assert (cloglog is None) == (model_name == "rsf")
    assert (reps.stacked_linear(rows) is not None) == (model_name == "coxnet")  # the raw columns' basis
    if cloglog is not None:
        np.testing.assert_allclose(np.exp(-np.exp(_clip_cloglog(cloglog))), np.clip(reference, EPS, 1 - EPS),
                                   rtol=0, atol=1e-12)
    point = reference.mean(axis=0)
    for fast_bound, bound in zip(reps.interval(point, rows), reps.band(point, reference), strict=True):
        np.testing.assert_allclose(fast_bound, bound, rtol=0, atol=1e-10)
    # a request of one patient, and the Predictor's answer, take the same path
    one = canonical_columns(requests(centre_cohort.data, 1, 10)[:1])
    np.testing.assert_allclose(reps.survival(one), reps.survival_per_replicate(one), rtol=0, atol=1e-12)
    assert pred.predict(one)[0]["horizons"]


def test_the_stacked_path_is_not_stored_in_bundles(centre_cohort, tmp_path):
    pred = train_predictor(centre_cohort, "os", "coxnet", n_interval_models=5, seed=1)
    rows = requests(centre_cohort.data, 5, 2)
    before = pred.predict(rows)
    assert pred.replicates.stacked(rows) is not None
    loaded = type(pred).load(pred.save(tmp_path / "b"))
    assert not hasattr(loaded.replicates, "_stacked") and not hasattr(loaded.replicates, "_linear")
    after = loaded.predict(rows)
    assert [a["horizons"] for a in after] == [b["horizons"] for b in before]
