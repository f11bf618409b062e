"""Models that learn from small cohorts: cox_prior, literature_cox, fong_plus, ensemble (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from sksurv.linear_model import CoxPHSurvivalAnalysis
from statsmodels.duration.hazard_regression import PHReg

from crlm.cohort.base import make_y, predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.benchmark import BenchmarkSpec, fit_model, run_benchmark
from crlm.literature_prior import PRIOR, PRIOR_BY_FEATURE, prior_card_lines, prior_table
from crlm.models import CoxPrior, Ensemble, FongPlus, LiteratureCox, final_estimator, make_model
from crlm.models.prior_cox import BreslowPartialLikelihood, penalised_cox
from crlm.predictor_training import train_predictor

BRAF = "braf_v600e_status"
BRAF_FEATURE = "braf_v600e_status (literature: V600E mutant)"


@pytest.fixture(scope="module")
def sim():
    cohort = simulate_cohort(300, 5).with_outcome("os")
    return cohort, predictors_frame(cohort.data), cohort.y("os")


def test_prior_table_rows_have_sources_and_sensible_effects():
    rows = prior_table()
    assert {p.name for p in PRIOR} >= {"node_positive", "synchronous", "multiple", "size_gt_3", "cea_gt_200",
                                       "extrahepatic", "ras_mutant", "braf_v600e", "pik3ca_mutant",
                                       "right_sided", "recist_progression", "margin_r1_r2"}
    for r in rows:
        if r["hazard_ratio"] is not None:
            low, high = (float(v) for v in r["interval"].split(" ")[0].split("-"))
            assert low < r["hazard_ratio"] < high, r  # the estimate lies inside its own interval
            assert r["source"] and 1990 < r["year"] < 2030 and r["evidence"] in ("V", "U", "D")
            assert r["se"] > 0
    for p in PRIOR:
        assert "=" not in p.coding and PRIOR_BY_FEATURE[p.feature] is p
    braf = PRIOR_BY_FEATURE[BRAF_FEATURE]
    assert braf.effect("os").hazard_ratio == 2.8 and braf.effect("dfs") is braf.effect("rfs")


def test_partial_likelihood_equals_statsmodels_phreg(sim):
    _, X, y = sim
    Z = make_model("coxph", columns_present=list(X.columns)).steps[0][1].fit_transform(X).to_numpy(float)[:, :8]
    y = y.copy()
    y["time"] = np.round(y["time"] / 6) * 6 + 1  # many tied times
    ours = BreslowPartialLikelihood(Z, y)
    ref = PHReg(y["time"], Z, status=y["event"].astype(float), ties="breslow")
    for beta in (np.zeros(8), np.random.default_rng(0).normal(0, 0.3, 8)):
        assert ours.loglike(beta) == pytest.approx(ref.loglike(beta), rel=1e-10)
        np.testing.assert_allclose(ours.score(beta), ref.score(beta), rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(ours.hessian(beta), ref.hessian(beta), rtol=1e-8, atol=1e-8)


def test_penalised_cox_at_zero_centre_is_sksurv_ridge_cox(sim):
    _, X, y = sim
    Z = make_model("coxph", columns_present=list(X.columns)).steps[0][1].fit_transform(X).to_numpy(float)
    alpha = 5.0
    ours = penalised_cox(Z, y, np.zeros(Z.shape[1]), np.full(Z.shape[1], alpha))
    ref = CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow").fit(Z, y).coef_
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_penalised_cox_shrinks_to_its_centre(sim):
    _, X, y = sim
    Z = make_model("coxph", columns_present=list(X.columns)).steps[0][1].fit_transform(X).to_numpy(float)[:, :5]
    centre = np.array([0.5, -0.3, 0.0, 1.0, 0.2])
    strong = penalised_cox(Z, y, centre, np.full(5, 1e7))
    np.testing.assert_allclose(strong, centre, atol=1e-3)
    weak = penalised_cox(Z, y, centre, np.full(5, 1e-6))
    free = penalised_cox(Z, y, np.zeros(5), np.full(5, 1e-6))
    np.testing.assert_allclose(weak, free, atol=1e-3)  # the centre no longer matters


def test_literature_cox_uses_the_published_effects(sim):
    _, X, y = sim
    model = make_model("literature_cox", columns_present=list(X.columns), endpoint="os").fit(X, y)
    est = final_estimator(model)
    names = list(model.steps[0][1].get_feature_names_out())
    for name, coef in zip(names, est.coef_, strict=True):
        effect = PRIOR_BY_FEATURE[name].effect("os")
        assert coef == pytest.approx(0.0 if effect is None else effect.log_hr)
    rfs = make_model("literature_cox", columns_present=list(X.columns), endpoint="rfs").fit(X, y)
    cea = names.index("cea_ng_ml (literature: > 200 ng/mL)")
    assert final_estimator(rfs).coef_[cea] == 0.0  # no published RFS effect for CEA
    surv = model.predict_survival(X.head(20), [12, 36, 60])
    assert np.all(np.diff(surv, axis=1) <= 0) and np.all((surv > 0) & (surv < 1))


def test_parameters_are_validated(sim):
    _, X, y = sim
    with pytest.raises(InvalidParameterError, match="prior_strength"):
        make_model("cox_prior", endpoint="os", prior_strength=-1.0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="endpoint"):
        make_model("cox_prior", endpoint="death").fit(X, y)
    with pytest.raises(ValueError, match="set the endpoint"):
        make_model("cox_prior").fit(X, y)
    with pytest.raises(TypeError, match="DataFrame"):
        CoxPrior(endpoint="os").fit(np.zeros((10, 2)), y[:10])
    with pytest.raises(InvalidParameterError, match="n_members"):
        make_model("ensemble", n_members=0).fit(X, y)


def _few_braf(n_keep: int):
    """A simulated cohort with only ``n_keep`` BRAF V600E patients (the others are removed)."""
    cohort = simulate_cohort(400, 11).with_outcome("os")
    mutant = np.flatnonzero(cohort.data[BRAF].to_numpy() == "mutant")
    assert len(mutant) > n_keep
    keep = np.ones(len(cohort), dtype=bool)
    keep[mutant[n_keep:]] = False
    return cohort.subset(keep)


def test_cox_prior_braf_v600e_with_a_handful_of_patients():
    cohort = _few_braf(5)
    X, y = predictors_frame(cohort.data), cohort.y("os")
    assert (X[BRAF] == "mutant").sum() == 5
    spec = BenchmarkSpec(endpoint="os", inner_splits=3)
    model, params = fit_model("cox_prior", X, y, spec, seed=0)  # tuned by inner CV, as shipped
    patient = X[X[BRAF] == "wild_type"].head(10).copy()
    mutant = patient.copy()
    mutant[BRAF] = "mutant"
    s_wt, s_mut = model.predict_survival(patient, [36.0])[:, 0], model.predict_survival(mutant, [36.0])[:, 0]
    assert np.all(s_mut < s_wt - 0.02), (params, s_wt - s_mut)
    # the Predictor's explanation names BRAF for the mutant patient and says it raises the risk
    predictor = train_predictor(cohort, "os", "cox_prior",
                                {k.removeprefix("model__"): v for k, v in params.items()}, n_interval_models=5)
    answer = predictor.predict(mutant.head(1))[0]
    braf = [c for c in answer["contributions"] if c["field"] == BRAF]
    assert braf and braf[0]["direction"] == "raises" and "BRAF V600E" in braf[0]["sentence"]
    assert "literature prior" in predictor.explainer.method and "updated by" in predictor.explainer.method
    assert answer["horizons"][1]["lower"] <= answer["horizons"][1]["survival"] <= answer["horizons"][1]["upper"]


def test_fong_plus_anchors_the_score_at_its_own_estimate(sim):
    _, X_sim, y = sim
    X = X_sim.drop(columns="fong_score_recorded")  # no recorded score: Fong computed from its factors
    model = make_model("fong_plus", columns_present=list(X.columns), anchor_strength=1e6).fit(X, y)
    est = final_estimator(model)
    names = list(model.steps[0][1].get_feature_names_out())
    assert est.anchor_feature_ == "fong_score (points)"
    score = model.steps[0][1].transform(X).to_numpy(float)[:, names.index("fong_score (points)")]
    ok = np.isfinite(score)
    ref = CoxPHSurvivalAnalysis(alpha=1e-3, ties="breslow").fit(score[ok, None], y[ok]).coef_[0]
    assert est.anchor_ == pytest.approx(ref, abs=1e-3)
    assert est.coef_[names.index("fong_score (points)")] == pytest.approx(est.anchor_, abs=1e-3)
    model = make_model("fong_plus", columns_present=list(X_sim.columns)).fit(X_sim, y)
    assert final_estimator(model).anchor_feature_ == "fong_score_recorded (points)"
    assert "fong_score_recorded" in model.steps[0][1].columns_


def test_ensemble_chooses_members_on_its_training_rows_only(sim):
    _, X, y = sim
    train, test = np.arange(200), np.arange(200, len(y))
    model = make_model("ensemble", columns_present=list(X.columns), endpoint="os",
                       candidates=("coxnet", "cox_prior", "xgb_cox"), n_members=2)
    model.fit(X.iloc[train], y[train])
    est = final_estimator(model)
    assert isinstance(est, Ensemble) and len(est.members_) == 2
    assert set(est.candidate_c_) == {"coxnet", "cox_prior", "xgb_cox"}
    assert est.members_ == sorted(est.candidate_c_, key=lambda m: -est.candidate_c_[m])[:2]
    # the chosen members do not change when the held-out rows' outcomes do
    y_shuffled = y.copy()
    y_shuffled[test] = y[test][np.random.default_rng(0).permutation(len(test))]
    again = clone(make_model("ensemble", columns_present=list(X.columns), endpoint="os",
                             candidates=("coxnet", "cox_prior", "xgb_cox"), n_members=2))
    again.fit(X.iloc[train], y_shuffled[train])
    assert final_estimator(again).members_ == est.members_
    Z = model.steps[0][1].transform(X.iloc[test])
    mean = np.mean([m.predict_survival(Z, [12, 36]) for m in est.models_], axis=0)
    np.testing.assert_allclose(model.predict_survival(X.iloc[test], [12, 36]), mean)
    copy = clone(est)  # the Predictor's bootstrap refits keep the chosen members
    assert copy.members == est.members_ and not hasattr(copy, "models_")


def test_the_four_models_run_through_the_benchmark():
    cohort = simulate_cohort(200, 2)
    spec = BenchmarkSpec(endpoint="rfs", models=("coxnet", "cox_prior", "literature_cox", "fong_plus", "ensemble"),
                         baselines=(), outer_splits=2, outer_repeats=1, inner_splits=3, n_boot=20, ceiling=False,
                         ablation_models=0)
    result = run_benchmark(cohort, spec)
    board = result.leaderboard().set_index("model")
    for name in ("cox_prior", "literature_cox", "fong_plus", "ensemble"):
        assert 0.5 < board.loc[name, "harrell_c"] < 0.9
        assert np.isfinite(board.loc[name, "delta_c_vs_ref"]) and np.isfinite(board.loc[name, "ici_36"])
    chosen = result.chosen_params.set_index("model")
    assert chosen.loc["cox_prior", "model__prior_strength"].notna().all()


def test_literature_models_keep_unknown_values_unknown():
    cohort = _few_braf(5)
    X, y = predictors_frame(cohort.data), cohort.y("os")
    model = make_model("literature_cox", columns_present=list(X.columns), endpoint="os").fit(X, y)
    pre = model.steps[0][1].parts_[0]
    j = pre.factors_.index("braf_v600e")
    row = X.head(1).copy()
    row[BRAF] = "unknown"
    known = X[BRAF].isin(["mutant", "wild_type"])
    assert pre.transform(row)[0, j] == pytest.approx((X.loc[known, BRAF] == "mutant").mean())
    assert "margin_r1_r2" not in pre.factors_  # postoperative factors stay out
    assert not isinstance(final_estimator(model), FongPlus | CoxPrior) and isinstance(final_estimator(model),
                                                                                   LiteratureCox)
    y_few = make_y(np.zeros(len(y), bool), y["time"])
    with pytest.raises(ValueError, match="no events"):
        make_model("cox_prior", columns_present=list(X.columns), endpoint="os").fit(X, y_few)


@pytest.mark.parametrize("name", ["literature_cox", "fong_plus", "ensemble"])
def test_predictors_answer_for_incomplete_records_and_round_trip(name, tmp_path):
    cohort = simulate_cohort(250, 8)
    predictor = train_predictor(cohort, "rfs", name, n_interval_models=5)
    records = [{"age_years": 66.0, "n_liver_metastases": 3, "largest_metastasis_cm": 4.5,
                "braf_v600e_status": "mutant"},
               {"age_years": 50.0, "n_liver_metastases": 1, "largest_metastasis_cm": 2.0, "cea_ng_ml": 3.0,
                "fong_score_recorded": 1}]
    answers = predictor.predict(records)
    for a in answers:
        h = a["horizons"][0]
        assert h["lower"] <= h["survival"] <= h["upper"]
    assert any(c["field"] == "braf_v600e_status" and c["direction"] == "raises" for c in answers[0]["contributions"])
    assert any("is missing" in w for w in answers[0]["warnings"])
    again = type(predictor).load(predictor.save(tmp_path / name))
    np.testing.assert_allclose([a["risk_score"] for a in again.predict(records)],
                               [a["risk_score"] for a in answers])
    if name == "fong_plus":
        fields = [c["field"] for a in answers for c in a["contributions"]]
        assert "fong_score_recorded" in fields


def test_model_card_lines_list_the_effects_used():
    assert prior_card_lines("coxnet", "os") == []
    pre = "\n".join(prior_card_lines("cox_prior", "os"))
    assert "braf_v600e_status | V600E mutant | 2.8 |" in pre and "resection_margin" not in pre
    post = "\n".join(prior_card_lines("literature_cox", "rfs", postoperative=True))
    assert "resection_margin" in post and "cea_ng_ml" not in post  # no published RFS effect of CEA


def test_literature_cox_without_any_published_factor_says_so(sim):
    _, X, y = sim
    rows = X[["age_years", "sex"]]
    with pytest.raises(ValueError, match="none of the published factors"):
        make_model("literature_cox", columns_present=list(rows.columns), endpoint="os").fit(rows, y)
