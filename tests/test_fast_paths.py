"""The serving hot path's fast implementations equal their reference (numpy's own function, the per-item path):
bit for bit, so a speed-up never changes an answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crlm.bootstrap_curves import BootstrapCurves, _cloglog, replicate_quantiles
from crlm.cohort.base import _to_bool, _yes_no_value, canonical_columns
from crlm.cohort.simulate import simulate_cohort
from crlm.explain import describe, value_text
from crlm.model_inputs import input_warnings, warning_rules
from crlm.predictor_training import train_predictor
from crlm.recalibration import Recalibrator, StackedMaps, apply_each


def replicates(rng, shape) -> np.ndarray:
    """Survival-like replicates with ties, exact 0s and 1s (clipped to the same cloglog) and a repeated 0.5."""
    x = rng.uniform(0, 1, shape)
    x[rng.random(shape) < 0.2] = 1.0
    x[rng.random(shape) < 0.1] = 0.0
    x[rng.random(shape) < 0.1] = 0.5
    return x


@pytest.mark.parametrize("count", [1, 2, 3, 10, 50, 51])
@pytest.mark.parametrize("shape", [(7, 5), (3,), ()])
def test_replicate_quantiles_equal_numpys_bit_for_bit(count, shape):
    rng = np.random.default_rng(count)
    x = replicates(rng, (count, *shape))
    qs = [0, 0.025, 0.1, 0.5, 0.9, 0.975, 1]
    assert np.array_equal(replicate_quantiles(x, qs), np.quantile(x, qs, axis=0))
    assert np.array_equal(replicate_quantiles(x, qs, _cloglog, decreasing=True),
                          np.quantile(_cloglog(x), qs, axis=0))


def test_replicate_quantiles_with_a_missing_value_follow_numpy():
    x = replicates(np.random.default_rng(0), (20, 4))
    x[3, 1] = np.nan
    assert np.array_equal(replicate_quantiles(x, [0.5]), np.quantile(x, [0.5], axis=0), equal_nan=True)


@pytest.mark.parametrize("method", ["centred", "percentile", "basic"])
def test_the_band_equals_its_definition_with_numpys_quantiles(method):
    rng = np.random.default_rng(3)
    reps, point = replicates(rng, (50, 30, 12)), replicates(rng, (30, 12))
    z_point, z = _cloglog(point), _cloglog(reps)
    q_low, q_mid, q_high = np.quantile(z, [0.025, 0.5, 0.975], axis=0)
    z_lo, z_hi = {"percentile": (q_low, q_high), "basic": (2 * z_point - q_high, 2 * z_point - q_low),
                  "centred": (z_point - (q_mid - q_low), z_point + (q_high - q_mid))}[method]
    lower, upper = BootstrapCurves([], [], [], method=method).band(point, reps)
    assert np.array_equal(lower, np.exp(-np.exp(z_hi))) and np.array_equal(upper, np.exp(-np.exp(z_lo)))


def test_apply_each_equals_each_maps_own_apply():
    rng = np.random.default_rng(1)
    times = np.arange(1.0, 13.0)
    maps = []
    for k in range(6):
        fitted = rng.random(len(times)) < (0.8 if k else 0.0)  # the first map is the identity
        maps.append(Recalibrator(times, rng.uniform(0.5, 1.5, len(times)), rng.normal(0, 0.3, len(times)),
                                 rng.uniform(0.3, 0.95, len(times)), fitted))
    curves = replicates(rng, (6, 40, len(times)))
    before = curves.copy()
    expected = np.stack([r.apply(c) for r, c in zip(maps, curves, strict=True)])
    assert np.array_equal(apply_each(maps, curves), expected)
    assert np.array_equal(curves, before), "the input is not modified"
    identity = [Recalibrator.identity(times)] * 6
    expected = np.stack([r.apply(c) for r, c in zip(identity, curves, strict=True)])
    assert np.array_equal(apply_each(identity, curves), expected)


def test_apply_each_reads_proportional_hazards_curves_from_their_cloglog():
    # S = s0 ** exp(lp): the maps read log(-log S) = lp + log(-log s0) without S being computed and logged back
    rng = np.random.default_rng(2)
    times = np.arange(1.0, 13.0)
    maps = [Recalibrator(times, rng.uniform(0.5, 1.5, len(times)), rng.normal(0, 0.3, len(times)),
                         rng.uniform(0.3, 0.95, len(times)), rng.random(len(times)) < (0.8 if k else 0.0))
            for k in range(6)]  # the first map is the identity
    s0 = np.sort(rng.uniform(0.05, 1.0, (6, len(times))), axis=1)[:, ::-1]
    s0[:, 0] = 1.0  # no event yet: S = 1, cloglog -inf
    s0[1, -1] = 0.0  # every patient has had the event: S = 0, cloglog +inf
    lp = rng.normal(0, 2.0, (40, 6))
    lp[0] = 12.0  # event probabilities past the maps' clipping at 1 - 1e-6 ...
    lp[1] = -25.0  # ... and under 1e-6
    curves = s0[:, None, :] ** np.exp(lp.T)[:, :, None]
    with np.errstate(divide="ignore"):
        cloglog = lp.T[:, :, None] + np.log(-np.log(s0))[:, None, :]
    np.testing.assert_allclose(apply_each(maps, None, cloglog), apply_each(maps, curves), rtol=0, atol=1e-12)
    identity = [Recalibrator.identity(times)] * 6
    np.testing.assert_allclose(apply_each(identity, None, cloglog), apply_each(identity, curves), rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError, match="curves or their cloglog"):
        apply_each(maps, None)
    # the same maps on the cloglog scale (affine there): the same curves, where they are not 0 or 1 to rounding
    for each in (maps, identity):
        survival = apply_each(each, curves)
        on_scale = np.exp(-np.exp(StackedMaps.of(each).cloglog(cloglog)))
        np.testing.assert_allclose(on_scale, survival, rtol=0, atol=1e-12)
        # log(-log S) of a survival within 1e-6 of 1 is itself imprecise (relative error 1e-16 / (1 - S))
        inner = (survival > 1e-300) & (survival < 1 - 1e-6)
        np.testing.assert_allclose(StackedMaps.of(each).cloglog(cloglog)[inner], np.log(-np.log(survival[inner])), rtol=0,
                                   atol=1e-9)
    assert StackedMaps.of([*maps[:5], ChainedMap(maps[5])]) is None  # a map that reads the curves


class ChainedMap:
    """A map that is not a ``Recalibrator`` (as a centre's chained maps): it reads the curves themselves."""

    def __init__(self, inner):
        self.inner, self.times = inner, inner.times

    active = True

    def apply(self, surv):
        return self.inner.apply(surv)


def test_warnings_of_one_patient_equal_those_of_the_vectorised_batch_path():
    rules = warning_rules(["age_years", "cea_ng_ml", "kras_status", "primary_site", "extrahepatic_disease",
                           "not_given"],
                          {"age_years": {"min": 30.0, "max": 80.0}, "cea_ng_ml": {"min": 0.5, "max": 900.0},
                           "kras_status": {"categories": ["mutant", "wild_type"]},
                           "primary_site": {"categories": ["colon", "rectum"]},
                           "extrahepatic_disease": {"min": 0.0, "max": 1.0}})
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        rows.append({"age_years": [25.0, 55.0, 81.5, None][i % 4], "cea_ng_ml": float(rng.uniform(0, 1000)),
                     "kras_status": ["mutant", "unknown", None, "wild_type"][i % 4],
                     "primary_site": ["colon", "caecum", None, "rectum", "colon"][i % 5],
                     "extrahepatic_disease": [True, False, None][i % 3]})
    columns = canonical_columns(rows)
    for imputes in (True, False):
        batch = input_warnings(columns, rules, imputes)
        assert sum(map(len, batch)) > (40 if imputes else 20)  # missing, out of range, unseen values
        assert batch == [input_warnings(canonical_columns([row]), rules, imputes)[0] for row in rows]


def test_each_kind_of_field_reads_as_text_and_json():
    # one reader per field (looked up once per batch): every kind, missing values, a centre's own field and a
    # derived score recomputed from its row (TBS = sqrt(size^2 + number^2), Sasaki 2018)
    row = {"largest_metastasis_cm": 3.5, "n_liver_metastases": 2.0}
    cases = [("age_years", 64.0, "64 years", 64.0), ("age_years", float("nan"), "unknown (imputed)", None),
             ("cea_ng_ml", 12.25, "12.25 ng/mL", 12.25), ("n_liver_metastases", 3.0, "3", 3.0),
             ("extrahepatic_disease", True, "yes", True), ("extrahepatic_disease", False, "no", False),
             ("extrahepatic_disease", None, "unknown (imputed)", None), ("kras_status", "wild_type", "wild type",
             "wild_type"), ("primary_site", float("nan"), "unknown (imputed)", None),
             ("tumour_burden_score", 4.0, "4.0", math.hypot(3.5, 2.0)), ("a_centres_field", "x_y", "x_y", "x_y"),
             ("a_centres_field", pd.NA, "unknown (imputed)", None)]
    for name, value, text, as_json in cases:
        for size, direction in ((0.3, "raises"), (-0.2, "lowers")):
            answer = describe(name, value, size, "rfs", row)
            assert (answer["value_text"], answer["value"], answer["direction"]) == (text, as_json, direction), name
            assert answer["sentence"] == f"{answer['label']} {text} {direction} the risk of recurrence or death"
            assert value_text(name, value, row) == text
    assert describe("age_years", 64.0, 0.3, "os")["sentence"] == "Age 64 years raises the risk of death"


def test_yes_no_values_as_to_bool():
    for v in (True, False, None, 1, 0, 1.0, 0.0, np.True_, np.False_, float("nan"), pd.NA, "yes", "0", " No "):
        b = _to_bool(v)
        expected = np.nan if b is pd.NA else float(b)
        assert np.array_equal(_yes_no_value(v), expected, equal_nan=True), v
    with pytest.raises(ValueError):
        _yes_no_value("maybe")


@pytest.fixture(scope="module")
def predictor():
    return train_predictor(simulate_cohort(250, seed=3), "os", "coxnet", n_interval_models=5, seed=0)


def test_the_array_model_matrix_gives_the_frame_paths_answers(predictor):
    rows = simulate_cohort(30, seed=8).data.to_dict("records")
    columns, Z = predictor._prepare(rows, as_array=True)
    assert isinstance(Z, np.ndarray) and np.array_equal(Z, predictor._prepare(rows)[1].to_numpy(dtype=float))
    fast = predictor.predict(columns)
    predictor.__dict__["_reads_arrays"] = False  # the DataFrame path, as before
    try:
        assert predictor.predict(columns) == fast
    finally:
        del predictor.__dict__["_reads_arrays"]
