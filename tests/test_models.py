"""The model zoo: every model recovers a known signal and returns proper survival curves."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils._param_validation import InvalidParameterError
from sksurv.metrics import concordance_index_censored

from crlm.cohort.base import make_y, to_canonical
from crlm.cohort.simulate import simulate_cohort
from crlm.models import (
    LEARNED_MODEL_NAMES,
    MODEL_NAMES,
    SCORE_MODEL_NAMES,
    SEARCH_SPACES,
    XGBAFT,
    ScoreCoxModel,
    feature_names,
    is_score_model,
    linear_coefficients,
    make_model,
    model_family,
    score_cox,
    xgb_booster,
)
from crlm.scores import SCORES, compute_score

TIMES = [0.0, 1.0, 12.0, 36.0, 60.0, 119.0, 500.0, 5.0]  # unsorted, beyond follow-up on purpose


def simulate(n: int, seed: int):
    """Canonical rows; exponential times from a known linear predictor on a few fields; random censoring."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age_years": rng.normal(62, 10, n).round(),
        "sex": rng.choice(["male", "female"], n),
        "n_liver_metastases": rng.poisson(1.5, n) + 1.0,
        "largest_metastasis_cm": np.round(rng.gamma(2, 1.8, n), 1),
        "cea_ng_ml": np.round(np.exp(rng.normal(2.5, 1.5, n)), 1),
        "extrahepatic_disease": rng.random(n) < 0.25,
        "kras_status": rng.choice(["mutant", "wild_type", "unknown"], n, p=[0.35, 0.45, 0.2]),
        "primary_t_stage": rng.choice(["T1", "T2", "T3", "T4"], n, p=[0.05, 0.15, 0.6, 0.2]),
        "fong_score_recorded": rng.integers(0, 6, n).astype(float),
    })
    log_cea = np.log1p(df["cea_ng_ml"])
    lp = (0.8 * (log_cea - 2.6) / 1.4 + 0.9 * df["extrahepatic_disease"] + 0.15 * df["largest_metastasis_cm"]
          + 0.5 * (df["kras_status"] == "mutant")).to_numpy(float)
    df.loc[rng.random(n) < 0.1, "cea_ng_ml"] = np.nan  # missing at random, after the outcome was drawn
    time = rng.exponential(1 / (0.015 * np.exp(lp)))
    censor = rng.uniform(6, 120, n)
    return to_canonical(df), make_y(time <= censor, np.minimum(time, censor)), lp


@pytest.fixture(scope="module")
def data():
    X, y, _ = simulate(800, seed=1)
    X_test, y_test, lp_test = simulate(800, seed=2)
    return X, y, X_test, y_test, lp_test


@pytest.fixture(scope="module")
def fitted(data):
    X, y, *_ = data
    return {name: make_model(name, random_state=0, endpoint="os").fit(X, y) for name in LEARNED_MODEL_NAMES}


def harrell(y, risk) -> float:
    return concordance_index_censored(y["event"], y["time"], risk)[0]


@pytest.mark.parametrize("name", LEARNED_MODEL_NAMES)
def test_learned_models_recover_the_signal(name, data, fitted):
    _, _, X_test, y_test, lp_test = data
    truth = harrell(y_test, lp_test)
    c = harrell(y_test, fitted[name].predict(X_test))
    assert truth > 0.7  # the simulated signal is strong enough for the comparison to mean something
    if name == "literature_cox":  # learns only the baseline: ranks by the published factors it can see
        assert 0.55 < c < truth - 0.04, f"{name}: C {c:.3f}"
        return
    assert c > truth - 0.04, f"{name}: C {c:.3f} vs true linear predictor {truth:.3f}"


@pytest.mark.parametrize("name", LEARNED_MODEL_NAMES)
def test_survival_curves_are_proper(name, data, fitted):
    _, _, X_test, _, _ = data
    model = fitted[name]
    S = model.predict_survival(X_test, TIMES)
    assert S.shape == (len(X_test), len(TIMES))
    assert np.isfinite(S).all() and (S >= 0).all() and (S <= 1).all()
    order = np.argsort(TIMES)
    assert (np.diff(S[:, order], axis=1) <= 1e-12).all()  # non-increasing in t
    np.testing.assert_allclose(S[:, 0], 1.0, atol=1e-6)  # S(0) = 1
    if name != "xgb_aft":  # step functions stay constant after the last time (AFT is parametric)
        np.testing.assert_allclose(model.predict_survival(X_test, [500.0, 10_000.0])[:, 1],
                                   model.predict_survival(X_test, [500.0])[:, 0])
    # higher risk -> lower survival at 3 years (on average)
    risk = model.predict(X_test)
    high = risk > np.median(risk)
    assert S[high, TIMES.index(36.0)].mean() < S[~high, TIMES.index(36.0)].mean()
    with pytest.raises(ValueError, match=">= 0"):
        model.predict_survival(X_test, [-1.0])


def test_predicted_survival_is_calibrated_on_average(data, fitted):
    """Mean predicted S(36) is close to the Kaplan-Meier estimate on new patients."""
    from sksurv.nonparametric import kaplan_meier_estimator

    _, _, X_test, y_test, _ = data
    km_t, km_s = kaplan_meier_estimator(y_test["event"], y_test["time"])
    km36 = km_s[np.searchsorted(km_t, 36.0, side="right") - 1]
    for name, model in fitted.items():
        assert model.predict_survival(X_test, [36.0]).mean() == pytest.approx(km36, abs=0.08), name


def test_models_are_sklearn_estimators(data, fitted):
    X, y, X_test, *_ = data
    for name in LEARNED_MODEL_NAMES:
        model = make_model(name)
        assert [s for s, _ in model.steps] == ["preprocess", "model"]
        params = model.get_params()
        for key, values in SEARCH_SPACES.get(name, {}).items():
            assert key in params, (name, key)
            assert 2 <= len(values) <= 4
        copy = clone(fitted[name])
        assert not hasattr(copy.named_steps["model"], "n_features_in_")
        assert copy.get_params().keys() == params.keys()
    coxph = make_model("coxph", alpha=5.0)
    assert coxph.get_params()["model__alpha"] == 5.0
    assert make_model("rsf", model__n_estimators=20).named_steps["model"].n_estimators == 20
    # a fitted model pickles and predicts the same
    again = pickle.loads(pickle.dumps(fitted["xgb_aft"]))
    np.testing.assert_allclose(again.predict(X_test), fitted["xgb_aft"].predict(X_test))


def test_grid_search_runs_on_the_pipeline(data):
    X, y, *_ = data
    search = GridSearchCV(make_model("coxnet"), SEARCH_SPACES["coxnet"], cv=KFold(3, shuffle=True, random_state=0),
                          n_jobs=1).fit(X.head(200), y[:200])
    assert set(search.best_params_) == set(SEARCH_SPACES["coxnet"])
    assert 0.5 < search.best_score_ <= 1.0


def test_same_seed_same_model(data):
    X, y, X_test, *_ = data
    a = make_model("xgb_cox", random_state=3).fit(X, y).predict(X_test)
    b = make_model("xgb_cox", random_state=3).fit(X, y).predict(X_test)
    np.testing.assert_array_equal(a, b)


def test_explanation_handles(fitted):
    coefs = linear_coefficients(fitted["coxph"])
    assert list(coefs.index) == feature_names(fitted["coxph"])
    assert coefs["extrahepatic_disease"] > 0.4 and coefs["cea_ng_ml (log)"] > 0.3  # simulated log-HR 0.9, 0.57
    assert abs(coefs["age_years"]) < 0.2  # no effect simulated
    net = linear_coefficients(fitted["coxnet"])
    assert net["extrahepatic_disease"] > 0 and list(net.index) == feature_names(fitted["coxnet"])
    booster = xgb_booster(fitted["xgb_cox"])
    assert booster.feature_names == feature_names(fitted["xgb_cox"])
    with pytest.raises(TypeError):
        linear_coefficients(fitted["rsf"])
    with pytest.raises(TypeError):
        xgb_booster(fitted["coxph"])
    assert [model_family(n) for n in ("coxph", "coxnet", "rsf", "gbsa", "xgb_cox", "xgb_aft", "score:fong")] == [
        "linear", "linear", "tree", "tree", "tree", "tree", "score"]


def test_postoperative_models_use_operative_fields(data):
    X, y, *_ = data
    rng = np.random.default_rng(0)
    X = X.assign(resection_margin=rng.choice(["R0", "R1"], len(X)))
    assert "resection_margin=R1" in feature_names(make_model("coxph", postoperative=True).fit(X, y))
    assert "resection_margin=R1" not in feature_names(make_model("coxph").fit(X, y))


def test_score_model_on_a_column(data):
    X, y, X_test, *_ = data
    X = X.copy()
    X.loc[X.index[:30], "fong_score_recorded"] = np.nan
    model = ScoreCoxModel(score="column:fong_score_recorded").fit(X, y)
    assert model.n_scored_ == len(X) - 30
    total = X_test["fong_score_recorded"].to_numpy()
    np.testing.assert_array_equal(model.predict(X_test), total)
    grid = pd.DataFrame({"fong_score_recorded": np.arange(6.0)})
    S = model.predict_survival(grid, [12.0, 36.0, 60.0])
    assert S.shape == (6, 3) and ((S >= 0) & (S <= 1)).all()
    assert (np.diff(S, axis=1) <= 0).all()  # non-increasing in time
    steps = np.diff(S, axis=0)  # monotone in the score, in the direction of its coefficient
    assert (steps <= 0).all() if model.coef_[0] > 0 else (steps >= 0).all()
    missing = model.predict_survival(X.head(31), [12.0])
    assert np.isnan(missing[:30]).all() and np.isfinite(missing[30:]).all()


def test_score_models_use_compute_score_total(data, monkeypatch):
    X, y, *_ = data
    calls = []

    def compute_score(name, df):
        calls.append(name)
        total = df["largest_metastasis_cm"].where(df["largest_metastasis_cm"] < 8)  # NaN when "incomputable"
        return pd.DataFrame({"size": total, "total": total, "group": "x"}, index=df.index)

    monkeypatch.setattr(score_cox, "compute_score", compute_score)
    model = make_model("score:tbs").fit(X, y)
    assert calls and set(calls) == {"tbs"}
    risk = model.predict(X)
    np.testing.assert_array_equal(np.isnan(risk), (X["largest_metastasis_cm"] >= 8).to_numpy())
    assert linear_coefficients(model).index.tolist() == ["tbs total"]
    assert model.named_steps["model"].coef_[0] > 0  # larger metastases, higher hazard in the simulation


def test_aft_boosting_starts_from_the_intercept_only_fit():
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    time = np.exp(rng.normal(3.0, 1.0, 300))
    est = XGBAFT(n_estimators=0, sigma=1.0).fit(X, make_y(np.ones(300, bool), time))
    assert est.intercept_ == pytest.approx(np.log(time).mean(), abs=1e-3)  # normal MLE without censoring
    np.testing.assert_allclose(-est.predict(X), est.intercept_, atol=1e-4)
    np.testing.assert_allclose(est.predict_survival(X.head(3), [np.exp(est.intercept_)]), 0.5, atol=1e-4)


@pytest.fixture(scope="module")
def cohort_rows():
    """A small simulated cohort with every field the scores read (the recorded Fong score included)."""
    cohort = simulate_cohort(300, seed=3)
    return cohort.data, cohort.y("os")


@pytest.mark.parametrize("score", list(SCORES))
def test_every_clinical_score_is_a_zoo_model_that_fits(score, cohort_rows):
    X, y = cohort_rows
    name = f"score:{score}"
    assert name in MODEL_NAMES and is_score_model(name) and model_family(name) == "score"
    model = make_model(name).fit(X, y)
    total = compute_score(score, X)["total"].to_numpy(dtype=float)
    assert np.isfinite(total).sum() > len(X) / 2  # the simulator records what the score reads
    np.testing.assert_array_equal(model.predict(X), total)  # the risk is the score's own total
    S = model.predict_survival(X, [12.0, 36.0])
    ok = np.isfinite(total)
    assert np.isnan(S[~ok]).all() and ((S[ok] >= 0) & (S[ok] <= 1)).all()  # missing in, missing out
    assert linear_coefficients(model).index.tolist() == [f"{score} total"]


@pytest.mark.parametrize("name", LEARNED_MODEL_NAMES)
def test_every_learned_model_has_a_family_and_a_search_space_that_tunes_it(name, cohort_rows, fitted):
    X, y = cohort_rows
    X, y = X.head(200), y[:200]
    family = model_family(name)
    assert family in {"linear", "tree", "ensemble"} and not is_score_model(name) and name in MODEL_NAMES
    for key, values in SEARCH_SPACES.get(name, {}).items():
        assert key in make_model(name).get_params(), (name, key)
        low = make_model(name, endpoint="os", **{key: values[0]}).fit(X, y)
        high = make_model(name, endpoint="os", **{key: values[-1]}).fit(X, y)
        assert not np.allclose(low.predict(X), high.predict(X)), f"{name}: {key} changes nothing"
    model = fitted[name]
    if family == "linear":  # Cox coefficients, one per column of the model matrix
        coefs = linear_coefficients(model)
        assert np.isfinite(coefs).all() and list(coefs.index) == feature_names(model)


def test_every_search_space_belongs_to_a_learned_model_and_unknown_names_are_refused():
    assert set(SEARCH_SPACES) <= set(LEARNED_MODEL_NAMES)
    assert not set(LEARNED_MODEL_NAMES) & set(SCORE_MODEL_NAMES)
    with pytest.raises(ValueError, match=r"unknown model 'deepsurv'.*known models: coxph, coxnet"):
        make_model("deepsurv")
    with pytest.raises(ValueError, match="unknown model"):
        model_family("score:unknown")


BAD_PARAMETERS = [("coxph", "alpha", -1.0), ("coxnet", "alpha", 0.0), ("coxnet", "l1_ratio", 1.5),
                  ("coxnet", "max_iter", 0), ("rsf", "n_estimators", 0), ("gbsa", "learning_rate", -0.1),
                  ("xgb_cox", "max_depth", 0), ("xgb_cox", "subsample", 1.5), ("xgb_cox", "random_state", -3),
                  ("xgb_aft", "distribution", "weibull"), ("xgb_aft", "sigma", 0.0),
                  ("xgb_aft", "learning_rate", "fast"), ("cox_prior", "prior_strength", -1.0),
                  ("fong_plus", "anchor_strength", -1.0), ("literature_cox", "endpoint", "pfs"),
                  ("ensemble", "inner_splits", 1), ("score:fong", "alpha", -1.0), ("score:fong", "fallback", 3)]


@pytest.mark.parametrize(("name", "param", "bad"), BAD_PARAMETERS)
def test_a_bad_parameter_is_refused_at_fit_naming_it(name, param, bad, cohort_rows):
    X, y = cohort_rows
    model = make_model(name, endpoint="os", **{f"model__{param}": bad})  # set_params does not validate
    with pytest.raises(InvalidParameterError, match=rf"'{param}' parameter of \w+ must be"):
        model.fit(X.head(100), y[:100])
