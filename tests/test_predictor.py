"""The Predictor: calibrated horizons with intervals, explanations, warnings, fast path = slow path, save/load."""

import copy

import numpy as np
import pandas as pd
import pytest

from crlm.centre import ChainedRecalibrator
from crlm.cohort.base import make_y, predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.calibration import ici
from crlm.median_survival import median_time
from crlm.models import final_estimator
from crlm.predictor import Predictor
from crlm.predictor_training import train_predictor
from crlm.recalibration import Recalibrator


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(500, seed=21)


@pytest.fixture(scope="module", params=["coxnet", "xgb_cox", "rsf"])
def predictor(request, cohort):
    return train_predictor(cohort, "os", request.param, n_interval_models=15, seed=1)


def patients(cohort, n=5):
    return predictors_frame(cohort.data).head(n)


def test_answer_has_calibrated_horizons_with_intervals_curve_and_median(predictor, cohort):
    answers = predictor.predict(patients(cohort))
    assert len(answers) == 5
    for a in answers:
        months = [h["months"] for h in a["horizons"]]
        assert months == [12.0, 36.0, 60.0]
        for h in a["horizons"]:
            assert 0 <= h["lower"] <= h["survival"] <= h["upper"] <= 1
        surv = np.array(a["curve"]["survival"])
        assert surv[0] == 1 and np.all(np.diff(surv) <= 1e-12)
        assert np.all(np.array(a["curve"]["lower"]) <= surv + 1e-9)
        if a["median_reached"]:
            assert np.interp(a["median_months"], a["curve"]["months"], surv) == pytest.approx(0.5, abs=0.02)
        assert a["risk_group"] in ("low", "intermediate", "high")
        sizes = [abs(c["size"]) for c in a["contributions"]]
        assert sizes == sorted(sizes, reverse=True) and len(sizes) <= 6
        for c in a["contributions"]:
            assert c["direction"] == ("raises" if c["size"] > 0 else "lowers") and c["direction"] in c["sentence"]


def test_fast_kernel_equals_each_models_own_prediction(predictor, cohort):
    raw, Z = predictor._prepare(patients(cohort, 20))
    assert predictor.kernel.kind in ("linear", "trees")
    fast = predictor.kernel.survival(Z)
    slow = np.stack([e.predict_survival(Z, predictor.kernel.times) for e in predictor.kernel.estimators])
    atol = 1e-5 if predictor.kernel.kind == "trees" else 1e-10  # xgboost adds its leaves in float32
    np.testing.assert_allclose(fast, slow, atol=atol)
    np.testing.assert_allclose(predictor.risk(Z), final_estimator(predictor.model).predict(Z), atol=atol, rtol=1e-6)


def test_warnings_for_missing_out_of_range_and_unknown(predictor):
    [a] = predictor.predict([{"age_years": 99.0, "n_liver_metastases": 2, "largest_metastasis_cm": 3.0}])
    text = " ".join(a["warnings"])
    assert "age_years 99 is outside the training range" in text
    assert "cea_ng_ml is missing and was imputed" in text
    assert "kras_status is missing and was treated as unknown" in text


def test_linear_contributions_are_exact(cohort):
    p = train_predictor(cohort, "os", "coxph", n_interval_models=5)
    raw, Z = p._prepare(patients(cohort, 10))
    contributions = p.explainer.feature_contributions(Z).sum(axis=1)
    _, Z_train = p._prepare(predictors_frame(cohort.data))
    lp, lp_train = p.risk(Z), p.risk(Z_train)
    np.testing.assert_allclose(contributions, lp - lp_train.mean(), atol=1e-8)


def test_save_and_load_give_the_same_answers(predictor, cohort, tmp_path):
    path = predictor.save(tmp_path / "bundle")
    again = Predictor.load(path)
    pd.testing.assert_frame_equal(predictor.predict_frame(patients(cohort)), again.predict_frame(patients(cohort)))
    with pytest.raises(FileNotFoundError):
        Predictor.load(tmp_path / "nothing")


def test_a_forest_bundled_before_the_tree_kernel_gets_it_on_load(cohort, tmp_path):
    p = train_predictor(cohort, "os", "rsf", {"n_estimators": 20}, n_interval_models=3, seed=0)
    expected = p.predict_frame(patients(cohort))
    _, Z = p._prepare(predictors_frame(cohort.data))
    p.kernel.kind = "generic"  # what such a bundle holds: no tree kernel, an occlusion background
    del p.kernel.trees
    p.explainer.background = Z.head(20)
    again = Predictor.load(p.save(tmp_path / "old"))
    assert again.kernel.kind == "trees"
    pd.testing.assert_frame_equal(again.predict_frame(patients(cohort)), expected)


def test_recalibration_repairs_a_miscalibrated_model():
    rng = np.random.default_rng(3)
    n, times = 3000, np.array([12.0, 36.0, 60.0])
    lp = rng.normal(0, 0.8, n)
    t_event = rng.exponential(40 / np.exp(lp))
    t_cens = rng.uniform(10, 150, n)
    y = make_y(t_event <= t_cens, np.minimum(t_event, t_cens))
    truth = np.exp(-(times[None, :] / 40) * np.exp(lp)[:, None])
    wrong = truth ** 2.0  # overestimates every risk
    half = np.arange(n) % 2 == 0
    recal = Recalibrator.fit(y[half], wrong[half], times)
    fixed = recal.apply(wrong[~half])
    before = ici(y[~half], wrong[~half][:, 1], 36.0)["ici"]
    after = ici(y[~half], fixed[:, 1], 36.0)["ici"]
    assert before > 0.1 and after < 0.03
    # a stack of curve sets (the refit and its bootstrap refits) is recalibrated set by set
    stacked = np.stack([wrong[:50], truth[:50]])
    np.testing.assert_allclose(recal.apply(stacked), np.stack([recal.apply(wrong[:50]), recal.apply(truth[:50])]))


def test_median_time_interpolates_and_reports_not_reached():
    assert median_time(np.array([0, 12, 24]), np.array([1.0, 0.6, 0.4])) == pytest.approx(18.0)
    assert median_time(np.array([0, 12, 24]), np.array([1.0, 0.9, 0.8])) is None


def test_interval_replicates_refit_preprocessing_model_and_recalibration(predictor, cohort):
    reps = predictor.replicates
    assert reps is not None and len(reps.preprocessors) == len(reps.kernels) == len(reps.recalibrators) == 15
    # each replicate learned its own preprocessing (imputation/scaling fitted on its own bootstrap sample)
    Zs = [pre.transform(patients(cohort, 50)) for pre in reps.preprocessors[:3]]
    assert not np.allclose(Zs[0].to_numpy(dtype=float), Zs[1].to_numpy(dtype=float))
    assert "confidence interval of the model's estimated survival" in predictor.metadata["interval"]


def test_band_methods_and_the_estimate_inside_the_centred_band():
    from crlm.bootstrap_curves import BootstrapCurves

    rng = np.random.default_rng(0)
    point = np.full((1, 3), 0.6)
    shifted = np.clip(0.45 + 0.03 * rng.standard_normal((200, 1, 3)), 0.01, 0.99)  # replicates all below
    centred = BootstrapCurves([], [], [], method="centred").band(point, shifted)
    assert np.all(centred[0] <= point) and np.all(point <= centred[1])
    plain = BootstrapCurves([], [], [], method="percentile").band(point, shifted)
    assert np.all(plain[1] < point)  # the plain percentile band misses an estimate it is shifted from


def test_reference_score_served_as_champion(cohort):
    from crlm.scores import compute_score

    pred = train_predictor(cohort, "os", "score:fong", n_interval_models=10, seed=2)
    frame = predictors_frame(cohort.data)
    rows = frame[compute_score("fong", frame)["total"].notna().to_numpy()].head(8)
    answers = pred.predict(rows)
    fong = compute_score("fong", rows)["total"].to_numpy()
    np.testing.assert_allclose([a["risk_score"] for a in answers], fong)
    for a, total in zip(answers, fong, strict=True):
        h = a["horizons"][1]
        assert 0 <= h["lower"] <= h["survival"] <= h["upper"] <= 1 and h["upper"] > h["lower"]
        assert sum(c["points"] for c in a["contributions"]) == pytest.approx(total)  # the score's points
        assert all("Fong CRS point" in c["sentence"] for c in a["contributions"])
    # same total, same survival: the served model is the score expressed as survival probabilities
    same = [i for i in range(len(fong)) if fong[i] == fong[0]]
    assert all(answers[i]["horizons"][1]["survival"] == answers[0]["horizons"][1]["survival"] for i in same)
    incomplete = rows.iloc[[0]].assign(cea_ng_ml=np.nan)
    with pytest.raises(ValueError, match="cea_ng_ml"):
        pred.predict(incomplete)


def test_shared_preprocessing_replicates_take_the_fast_kernel(cohort):
    pred = train_predictor(cohort, "os", "coxnet", n_interval_models=12, seed=3, interval_refit_preprocessing=False)
    reps = pred.replicates
    assert reps.shared and len(reps.preprocessors) == 1 and reps.kernels[0].kind == "linear"
    assert len(reps.kernels[0].estimators) == len(reps.recalibrators) == 12
    [a] = pred.predict(patients(cohort, 1))
    for h in a["horizons"]:
        assert 0 <= h["lower"] <= h["survival"] <= h["upper"] <= 1
    assert "full-data preprocessing kept" in pred.metadata["interval_method"]


def test_median_times_of_a_batch_equal_each_curves_median_time():
    from crlm.median_survival import median_times

    rng = np.random.default_rng(3)
    times = np.arange(0.0, 61.0, 3.0)
    curves = np.minimum.accumulate(np.clip(1 - np.cumsum(rng.uniform(0, 0.08, (200, len(times))), axis=1)
                                           + rng.uniform(0, 0.08, (200, 1)), 0, 1), axis=1)
    curves[0, 0] = 0.4  # below one half from the start
    curves[1, 3:6] = 0.5  # a flat step at exactly one half
    curves[2:20] = np.maximum(curves[2:20], 0.6)  # never reaches one half: no median
    assert median_times(times, curves) == [median_time(times, c) for c in curves]
    medians = median_times(times, curves)
    assert medians[0] == 0.0 and None in medians and any(m is not None for m in medians)


def test_replicates_with_a_centres_chained_maps_apply_each_map_in_turn(predictor, cohort):
    """A centre's recalibration (``crlm.centre``) chains its map after every replicate's own: the band's
    replicates are then the source replicates' curves passed through the centre's map."""
    times = predictor.replicates.recalibrators[0].times
    k = len(times)
    centre_map = Recalibrator(times, np.full(k, 1.3), np.zeros(k), np.linspace(0.9, 0.4, k), np.ones(k, dtype=bool))
    chained = copy.copy(predictor)
    chained.replicates = copy.copy(predictor.replicates)
    chained.replicates.recalibrators = [ChainedRecalibrator(r, centre_map) for r in predictor.replicates.recalibrators]
    rows = patients(cohort, 20)
    expected = centre_map.apply(predictor.replicates.survival(rows))
    assert not np.allclose(expected, predictor.replicates.survival(rows))  # the centre's map changes the curves
    np.testing.assert_allclose(chained.replicates.survival(rows), expected, atol=1e-12)
    for answer in chained.predict(rows.head(3)):
        for h in answer["horizons"]:
            assert 0 <= h["lower"] <= h["upper"] <= 1
