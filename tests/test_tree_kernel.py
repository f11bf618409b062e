"""The tree-ensemble kernel equals the libraries' own predictions; TreeSHAP on forests and boosting is exact."""

import itertools
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.base import clone

from crlm import tree_kernel
from crlm.cohort.base import make_y
from crlm.explain import Explainer
from crlm.models import GBSA, RSF, XGBAFT, SurvivalPipeline, XGBCox
from crlm.survival_kernel import SurvivalKernel
from crlm.tree_kernel import TreeKernel, ensemble_trees

TIMES = np.arange(3.0, 61.0, 3.0)
FACTORIES = {
    "rsf": lambda rs: RSF(n_estimators=12, min_samples_leaf=8, max_features="sqrt", max_samples=0.5,
                          low_memory=False, random_state=rs),
    "gbsa": lambda rs: GBSA(loss="coxph", n_estimators=30, max_depth=3, subsample=0.8, random_state=rs),
    "xgb_cox": lambda rs: XGBCox(n_estimators=40, max_depth=3, random_state=rs),
    "xgb_aft": lambda rs: XGBAFT(n_estimators=40, max_depth=3, random_state=rs),
}


@pytest.fixture(scope="module")
def data():
    """A small numeric matrix with a binary, an integer and continuous columns; outcome depends on three."""
    rng = np.random.default_rng(4)
    n = 240
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 2, n).astype(float),
                      "c": rng.integers(1, 6, n).astype(float), "d": rng.normal(size=n), "e": rng.normal(size=n)})
    lp = 0.8 * X["a"] + 0.6 * X["b"] - 0.3 * X["c"]
    t_event = rng.exponential(30 * np.exp(-lp))
    t_cens = rng.uniform(5, 80, n)
    return X, make_y(t_event <= t_cens, np.minimum(t_event, t_cens))


ROUTES = ["compiled", "numpy", "per_tree"]


def use_route(route, monkeypatch):
    """The compiled loops (crlm.tree_routing, the default), or one of the two reference routes."""
    monkeypatch.setattr(tree_kernel, "COMPILED_ROUTE", route == "compiled")
    if route == "per_tree":
        monkeypatch.setattr(tree_kernel, "NUMPY_ROUTE_MAX_CELLS", 0)


def fitted(name, data, n_models=3):
    X, y = data
    rng = np.random.default_rng(0)
    models = [FACTORIES[name](0).fit(X, y)]
    for k in range(1, n_models):
        idx = rng.integers(0, len(y), len(y))
        models.append(clone(FACTORIES[name](k)).fit(X.iloc[idx], y[idx]))
    return models


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("route", ROUTES)
def test_kernel_equals_each_models_own_prediction(name, route, data, monkeypatch):
    X, _ = data
    models = fitted(name, data)
    use_route(route, monkeypatch)
    kernel = TreeKernel(models, TIMES)
    rows = X.iloc[:60]
    risk, surv = kernel.evaluate(rows)
    expected = np.stack([m.predict_survival(rows, TIMES) for m in models])
    expected_risk = np.stack([m.predict(rows) for m in models], axis=1)
    # scikit-learn's trees agree to rounding; xgboost adds its leaves in float32
    atol = 1e-5 if name.startswith("xgb") else 1e-10
    np.testing.assert_allclose(surv, expected, atol=atol)
    np.testing.assert_allclose(risk, expected_risk, atol=atol, rtol=1e-6)


@pytest.mark.parametrize("name", ["rsf", "gbsa", "xgb_aft"])
@pytest.mark.parametrize("route", ROUTES)
def test_each_model_may_read_its_own_matrix(name, route, data, monkeypatch):
    """Refits with their own preprocessing: one matrix per model, of its own width."""
    X, y = data
    use_route(route, monkeypatch)
    narrow = FACTORIES[name](1).fit(X.iloc[:, :4] * 2.0, y)
    wide = FACTORIES[name](0).fit(X, y)
    kernel = TreeKernel([wide, narrow], TIMES)
    rows = X.iloc[:30]
    risk, surv = kernel.evaluate([rows, rows.iloc[:, :4] * 2.0])
    atol = 1e-5 if name.startswith("xgb") else 1e-10
    np.testing.assert_allclose(surv[1], narrow.predict_survival(rows.iloc[:, :4] * 2.0, TIMES), atol=atol)
    np.testing.assert_allclose(risk[:, 0], wide.predict(rows), atol=atol, rtol=1e-6)
    with pytest.raises(ValueError, match="2 models"):
        kernel.evaluate([rows])


@pytest.mark.parametrize("name", ["rsf", "xgb_cox"])
@pytest.mark.parametrize("route", ROUTES)
def test_missing_values_follow_each_nodes_default_direction(name, route, data, monkeypatch):
    X, _ = data
    use_route(route, monkeypatch)
    models = fitted(name, data, n_models=2)
    rows = X.iloc[:40].copy()
    rows.iloc[::3, 0] = np.nan
    rows.iloc[1::4, 3] = np.nan
    kernel = TreeKernel(models, TIMES)
    np.testing.assert_allclose(kernel.risk(rows), np.stack([m.predict(rows) for m in models], axis=1),
                               atol=1e-5, rtol=1e-6)


def test_missing_values_are_refused_where_the_model_refuses_them(data):
    X, _ = data
    kernel = TreeKernel(fitted("gbsa", data, n_models=1), TIMES)
    rows = X.iloc[:3].copy()
    rows.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="missing"):
        kernel.risk(rows)


def test_survival_kernel_uses_the_tree_kernel_and_pickles_without_its_tables(data):
    X, _ = data
    models = fitted("rsf", data)
    kernel = SurvivalKernel(models, TIMES, X.head(25))
    assert kernel.kind == "trees"
    again = pickle.loads(pickle.dumps(kernel))
    np.testing.assert_array_equal(again.survival(X.head(7)), kernel.survival(X.head(7)))
    assert set(kernel.trees.__getstate__()) == {"estimators", "times"}  # leaf tables are rebuilt on load


def _expected_value(tree, x, subset, node=0):
    """Lundberg et al. 2020, Algorithm 1: E[f(x) | x_S] with the training cover as the conditional law."""
    if tree.left[node] < 0:
        return tree.value[node]
    f = tree.feature[node]
    if f in subset:
        child = tree.left[node] if np.float32(x[f]) <= tree.threshold[node] else tree.right[node]
        return _expected_value(tree, x, subset, child)
    left, right = tree.left[node], tree.right[node]
    return (tree.weight[left] * _expected_value(tree, x, subset, left)
            + tree.weight[right] * _expected_value(tree, x, subset, right)) / tree.weight[node]


def brute_force_shapley(estimator, x) -> np.ndarray:
    trees, scale = ensemble_trees(estimator)
    m = len(x)

    def value(subset):
        return sum(s * _expected_value(t, x, subset) for t, s in zip(trees, scale, strict=True))

    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (value(set(subset) | {i}) - value(set(subset)))
    return phi


@pytest.mark.parametrize("name", ["rsf", "gbsa"])
def test_tree_shap_of_forests_and_boosting_equals_brute_force_shapley_values(name, data):
    X, y = data
    model = SurvivalPipeline([("preprocess", "passthrough"), ("model", FACTORIES[name](0))]).fit(X, y)
    explainer = Explainer(model, X, "os")
    assert "TreeSHAP" in explainer.method
    rows = X.iloc[:4]
    got = explainer.feature_contributions(rows)
    for i in range(len(rows)):
        np.testing.assert_allclose(got[i], brute_force_shapley(model.steps[-1][1], rows.iloc[i].to_numpy()),
                                   atol=1e-9)
    # additivity: the contributions add up to the risk minus its expectation over the training cover
    trees, scale = ensemble_trees(model.steps[-1][1])

    def tree_sum(x, subset):
        return sum(s * _expected_value(t, x, subset) for t, s in zip(trees, scale, strict=True))

    everything = set(range(X.shape[1]))
    offset = model.predict(rows)[0] - tree_sum(rows.iloc[0].to_numpy(), everything)  # gbsa's constant start
    expectation = tree_sum(rows.iloc[0].to_numpy(), set())
    np.testing.assert_allclose(got.sum(axis=1) + expectation + offset, model.predict(rows), atol=1e-8)


@pytest.mark.parametrize("name", ["xgb_cox", "xgb_aft"])
def test_xgboost_explanations_equal_xgboosts_own_treeshap(name, data):
    """The xgboost tree reader, through shap's TreeSHAP, reproduces xgboost's pred_contribs (AFT: sign flipped,
    so that positive raises the risk)."""
    X, y = data
    model = SurvivalPipeline([("preprocess", "passthrough"), ("model", FACTORIES[name](0))]).fit(X, y)
    booster = model.steps[-1][1].booster_
    ours = Explainer(model, X, "os").feature_contributions(X.iloc[:30])
    theirs = booster.predict(xgb.DMatrix(X.iloc[:30], feature_names=booster.feature_names), pred_contribs=True)
    np.testing.assert_allclose(ours, (-1 if name == "xgb_aft" else 1) * theirs[:, :-1], atol=1e-5)


@pytest.mark.parametrize("name", ["rsf", "gbsa", "xgb_aft"])
def test_the_compiled_loops_reach_the_reference_routes_leaves_and_do_not_depend_on_the_batch(name, data,
                                                                                               monkeypatch):
    X, _ = data
    rows = X.iloc[:50].copy()
    if name != "gbsa":  # gradient boosting refuses missing values
        rows.iloc[::4, 0] = np.nan
    kernel = TreeKernel(fitted(name, data), TIMES)
    monkeypatch.setattr(tree_kernel, "COMPILED_ROUTE", True)
    leaves = kernel.apply(rows)
    kernel.remember = False
    risk, surv = kernel.evaluate(rows)
    alone = np.concatenate([kernel.evaluate(rows.iloc[[i]])[1] for i in range(len(rows))], axis=1)
    np.testing.assert_array_equal(alone, surv)  # bit for bit: each patient's loop reads only that patient
    # boosting's margins are added in the routing loop itself (no table of leaves): the same for one patient
    np.testing.assert_array_equal(np.concatenate([kernel.risk(rows.iloc[[i]]) for i in range(len(rows))]), risk)
    monkeypatch.setattr(tree_kernel, "COMPILED_ROUTE", False)
    np.testing.assert_array_equal(kernel.apply(rows), leaves)
    reference_risk, reference_surv = kernel.evaluate(rows)
    np.testing.assert_allclose(reference_surv, surv, rtol=0, atol=1e-13)
    np.testing.assert_allclose(reference_risk, risk, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["rsf", "gbsa"])
def test_each_trees_depth_is_scikit_learns(name, data):
    """The lanes' step count per tree (a patient still walking after them would get a wrong leaf)."""
    models = fitted(name, data)
    trees = [t for m in models for t in (m.estimators_ if name == "rsf" else m.estimators_[:, 0])]
    depths = TreeKernel(models, TIMES).tree_depth
    np.testing.assert_array_equal(depths, [t.tree_.max_depth for t in trees])
    assert len(set(depths)) > 1 or name == "gbsa"  # the forest's trees differ: each runs its own count


@pytest.mark.parametrize("name", list(FACTORIES))
def test_cox_loss_ensembles_give_log_cumulative_hazard_directly(name, data):
    X, _ = data
    kernel = SurvivalKernel(fitted(name, data), TIMES, X.head(25))
    rows = X.iloc[:30]
    cloglog = kernel.log_cumulative_hazard(rows)
    if name in ("rsf", "xgb_aft"):  # not proportional hazards
        assert cloglog is None
        return
    np.testing.assert_allclose(np.exp(-np.exp(cloglog)), kernel.survival(rows), rtol=0, atol=1e-12)
