"""Tree ensembles evaluated from leaf tables: every tree of a refit and of its bootstrap refits at once.

A fitted ensemble is a set of trees whose leaves hold precomputed outputs:
- random survival forest (``RSF``): each leaf's survival curve on the curve grid and its risk (the summed
  cumulative hazard over the event times, scikit-survival's ``predict``); a forest averages its trees;
- gradient boosting with the Cox loss (``GBSA``) and XGBoost Cox / AFT: each leaf's margin; a model adds its
  trees' leaves (times the learning rate for ``GBSA``) to a constant offset. Cox models give
  S(t|x) = S0(t) ** exp(margin); AFT gives S(t|x) = 1 - F((ln t - margin) / sigma) and risk = -margin.

All trees of all models are flattened into one node table. Patients are routed through every tree by
compiled loops (``crlm.tree_routing``, numba), which also average the forests' leaf curves. The two reference
routes, used where numba is not installed and tested equal to it: a few patients through every tree at once
with numpy (one vectorised step per tree level), a batch tree by tree with the libraries' own compiled
``apply`` (scikit-learn's ``Tree.apply``; xgboost's ``pred_leaf``), the forests' curves then a sparse product.
Leaf values are summed per model. Every route follows the libraries' rules: inputs as float32,
scikit-learn goes left when x <= threshold, xgboost when x < threshold, missing values follow the node's
default direction. ``SurvivalKernel`` checks the result against the models' own predictions when it is built.

The tables are rebuilt from the fitted estimators when a pickled kernel is loaded, so bundles do not store them.
"""

from __future__ import annotations

__all__ = [
    "COMPILED_ROUTE", "NUMPY_ROUTE_MAX_CELLS", "TREE_FAMILIES", "TreeKernel", "TreeNodes", "ensemble_trees", "family",
    "sklearn_tree_nodes", "xgb_tree_nodes",
]

import importlib.util
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xgboost as xgb

from crlm.models.trees import GBSA, RSF
from crlm.models.xgb import XGBAFT, XGBCox

TREE_FAMILIES = {RSF: "forest", GBSA: "cox", XGBCox: "cox", XGBAFT: "aft"}
# patients x trees x depth (the vectorised route's steps) up to which it beats per-tree calls (measured: they
# break even at 2-3 million, e.g. 250 patients x 5,000 trees of depth 2, or 50 x 5,000 of depth 10)
NUMPY_ROUTE_MAX_CELLS = 2_000_000
# the compiled loops (crlm.tree_routing) where numba is installed; else the numpy and per-tree routes
COMPILED_ROUTE = importlib.util.find_spec("numba") is not None


@dataclass
class TreeNodes:
    """One tree as arrays over its nodes (leaves have ``left == right == -1``).

    ``threshold`` uses the rule "go left when float32(x) <= threshold"; ``value`` is the node's scalar output
    (a leaf's margin or risk); ``curve`` (forests only) is the node's survival on the kernel's grid."""

    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    weight: np.ndarray  # training samples (or hessian cover) per node: what path-dependent TreeSHAP needs
    curve: np.ndarray | None = None

    def shap_dict(self, scale: float = 1.0) -> dict:
        """The tree in shap's dictionary format (``shap.TreeExplainer(model={"trees": [...]})``)."""
        return {"children_left": self.left, "children_right": self.right,
                "children_default": np.where(self.default_left, self.left, self.right),
                "features": np.where(self.left < 0, -2, self.feature), "thresholds": self.threshold,
                "values": (self.value * scale)[:, None], "node_sample_weight": self.weight}


def sklearn_tree_nodes(tree, survival: tuple | None = None, times: np.ndarray | None = None) -> TreeNodes:
    """Nodes of a fitted scikit-learn / scikit-survival tree.

    Parameters
    ----------
    tree : sklearn.tree._tree.Tree
        ``estimator.tree_`` of a regression tree (gradient boosting) or a ``SurvivalTree``.
    survival : (array, array), optional
        For a survival tree: its ``unique_times_`` and ``is_event_time_``. ``value`` is then the risk of
        scikit-survival's ``SurvivalTree.predict`` (the cumulative hazard summed over the event times).
    times : array of float, optional
        For a survival tree: the grid at which ``curve`` holds each node's survival step function.

    Returns
    -------
    TreeNodes
    """
    left = np.asarray(tree.children_left, dtype=np.int64)
    right = np.asarray(tree.children_right, dtype=np.int64)
    default_left = np.asarray(getattr(tree, "missing_go_to_left", np.zeros(len(left))), dtype=bool)
    values = np.asarray(tree.value, dtype=float)
    curve = None
    if survival is None:
        value = values[:, 0, 0]
    else:
        unique_times, is_event_time = survival
        value = values[:, np.asarray(is_event_time, dtype=bool), 0].sum(axis=1)
        if times is not None:
            idx = np.searchsorted(np.asarray(unique_times, dtype=float), times, side="right")  # grid points <= t
            padded = np.hstack([np.ones((len(left), 1)), values[:, :, 1]])
            curve = np.clip(padded[:, idx], 0.0, 1.0)
    return TreeNodes(left, right, default_left, np.asarray(tree.feature, dtype=np.int64),
                     np.asarray(tree.threshold, dtype=float), value,
                     np.asarray(tree.weighted_n_node_samples, dtype=float), curve)


def xgb_tree_nodes(booster: xgb.Booster) -> list[TreeNodes]:
    """Nodes of every tree of a fitted booster, read from its JSON model.

    Parameters
    ----------
    booster : xgboost.Booster
        A fitted booster with numerical splits only.

    Returns
    -------
    list of TreeNodes
        One per tree; a leaf's ``value`` is its margin (learning rate included, as xgboost stores it).
    """
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]
    out = []
    for tree in model["trees"]:
        if any(tree.get("split_type", [])):
            raise ValueError("categorical splits are not supported by the tree kernel")
        left = np.asarray(tree["left_children"], dtype=np.int64)
        condition = np.asarray(tree["split_conditions"], dtype=np.float32)
        # xgboost goes left when x < c (float32): for float32 x that is x <= the float32 just below c
        below = np.nextafter(condition, np.float32(-np.inf), dtype=np.float32).astype(float)
        leaf = left < 0
        out.append(TreeNodes(left, np.asarray(tree["right_children"], dtype=np.int64),
                             np.asarray(tree["default_left"], dtype=bool),
                             np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.int64)),
                             np.where(leaf, np.inf, below), np.where(leaf, condition.astype(float), 0.0),
                             np.asarray(tree["sum_hessian"], dtype=float)))
    return out


def ensemble_trees(estimator, times: np.ndarray | None = None) -> tuple[list[TreeNodes], np.ndarray]:
    """The trees of one fitted ensemble of ``TREE_FAMILIES``.

    Parameters
    ----------
    estimator : RSF, GBSA, XGBCox or XGBAFT
        A fitted ensemble.
    times : array of float, optional
        The grid of a forest's leaf survival curves (None: no curves).

    Returns
    -------
    trees : list of TreeNodes
    scale : array of float
        Per tree: the model's margin (a forest's risk score) is a constant offset plus the sum over its trees of
        scale x the value of the leaf reached (1 / n_trees for a forest, the learning rate for gbsa).
    """
    if isinstance(estimator, RSF):
        trees = [sklearn_tree_nodes(t.tree_, (estimator.unique_times_, t.is_event_time_), times)
                 for t in estimator.estimators_]
        return trees, np.full(len(trees), 1.0 / len(trees))
    if isinstance(estimator, GBSA):
        if estimator.estimators_.shape[1] != 1:
            raise ValueError("only single-output gradient boosting is supported")
        trees = [sklearn_tree_nodes(t.tree_) for t in estimator.estimators_[:, 0]]
        dropout = np.asarray(getattr(estimator, "_scale", np.ones(len(trees))), dtype=float)
        return trees, estimator.learning_rate * dropout[:len(trees)]
    if isinstance(estimator, XGBCox | XGBAFT):
        trees = xgb_tree_nodes(estimator.booster_)
        return trees, np.ones(len(trees))
    raise TypeError(f"{type(estimator).__name__} is not a supported tree ensemble")


def family(estimators: list) -> str | None:
    """The tree family the estimators share.

    Parameters
    ----------
    estimators : list
        Fitted model steps.

    Returns
    -------
    str or None
        "forest", "cox" or "aft"; None unless all are tree ensembles of one family.
    """
    kinds = {TREE_FAMILIES.get(type(e)) for e in estimators}
    return kinds.pop() if len(kinds) == 1 and None not in kinds else None


class TreeKernel:
    """Risk and survival of K fitted tree ensembles of one family on the same patients.

    Parameters
    ----------
    estimators : list
        Fitted ``RSF``, ``GBSA``, ``XGBCox`` or ``XGBAFT`` (all of one family; e.g. a refit and its bootstrap
        refits).
    times : array of float
        The curve grid (months, > 0) of ``survival``.
    """

    def __init__(self, estimators: list, times: np.ndarray):
        self.family = family(estimators)
        if self.family is None:
            raise TypeError("the tree kernel needs fitted tree ensembles of one family")
        self.estimators = list(estimators)
        self.times = np.asarray(times, dtype=float)
        self.refuses_missing = isinstance(self.estimators[0], GBSA)  # as scikit-learn's gradient boosting does
        self._build()

    def __getstate__(self) -> dict:
        return {"estimators": self.estimators, "times": self.times}

    def __setstate__(self, state: dict) -> None:
        TreeKernel.__init__(self, state["estimators"], state["times"])

    # ------------------------------------------------------------------ the flattened tables

    def _build(self) -> None:
        per_model = [ensemble_trees(e, self.times) for e in self.estimators]
        trees = [t for model_trees, _ in per_model for t in model_trees]
        sizes = np.array([len(t.left) for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.roots = offsets  # global id of each tree's root: trees are stored one after the other
        self.trees_per_model = np.array([len(m) for m, _ in per_model])
        self.model_starts = np.concatenate([[0], np.cumsum(self.trees_per_model)[:-1]])
        self.tree_model = np.repeat(np.arange(len(per_model)), self.trees_per_model)  # model of each tree
        leaf = np.concatenate([t.left < 0 for t in trees])
        node = np.arange(len(leaf))
        shift = np.repeat(offsets, sizes)
        left = np.concatenate([t.left for t in trees]) + shift
        right = np.concatenate([t.right for t in trees]) + shift
        # a leaf points to itself on both sides, so routing can run a fixed number of levels
        self.children = np.stack([np.where(leaf, node, left), np.where(leaf, node, right)], axis=1)
        self.tree_depth = _tree_depths(self.roots, self.children)
        self.depth = int(self.tree_depth.max(initial=0))
        self.default_left = np.concatenate([t.default_left for t in trees])
        self.feature = np.concatenate([t.feature for t in trees]).clip(min=0)
        self.threshold = np.where(leaf, np.inf, np.concatenate([t.threshold for t in trees]))
        scale = np.concatenate([s for _, s in per_model])
        self.leaf_value = np.concatenate([t.value for t in trees]) * np.repeat(scale, sizes)
        if self.family == "forest":
            self.leaf_row = np.cumsum(leaf) - 1  # node -> row of the leaf-curve table
            self.leaf_curves = np.concatenate([t.curve[t.left < 0] for t in trees if t.curve is not None])
        self.offset = np.zeros(len(self.estimators))
        if self.family != "forest":  # the models' constant start (xgboost's base score, sklearn's init)
            zeros = [np.zeros((1, e.n_features_in_)) for e in self.estimators]
            self.offset = np.array([_margin(e, z)[0] for e, z in zip(self.estimators, zeros, strict=True)]) - (
                self._margins(self._matrices(zeros))[0])
            if self.family == "cox":
                self.s0 = np.stack([_baseline_survival(e, self.times) for e in self.estimators])  # (K, T)
        self._last: tuple | None = None
        # whether ``evaluate`` keeps the last rows' answers (the stacked replicates' kernel is asked once per
        # rows: comparing and copying its (K, n, P) input each call would cost more than it saves)
        self.remember = True

    # ------------------------------------------------------------------ routing

    def _matrices(self, X) -> np.ndarray:
        """float32 input: (n, p) read by every model, or (K, n, p) from a list of K matrices, one per model (e.g.
        when each refit has its own preprocessing; narrower ones are padded, their models never read the pad),
        or such a (K, n, P) array itself (``crlm.stacked_features``)."""
        if isinstance(X, list | tuple):
            if len(X) != len(self.estimators):
                raise ValueError(f"{len(X)} model matrices for {len(self.estimators)} models")
            mats = [np.asarray(x, dtype=np.float32) for x in X]
            width = max(m.shape[1] for m in mats)
            return np.stack([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in mats])
        return np.asarray(X, dtype=np.float32)

    def apply(self, X) -> np.ndarray:
        """(n, n_trees) global node id of the leaf each patient reaches in every tree (``X`` as in
        ``evaluate``)."""
        X32 = self._matrices(X)
        if COMPILED_ROUTE:
            return _compiled().route(X32, self.tree_model, self.roots, self.feature, self.threshold,
                                     self.children, self.default_left, self.tree_depth)
        if X32.shape[-2] * len(self.roots) * max(self.depth, 1) <= NUMPY_ROUTE_MAX_CELLS:
            return self._route_numpy(X32)
        return self._route_per_tree(X32)

    def _route_numpy(self, X32: np.ndarray) -> np.ndarray:
        Xd = np.ascontiguousarray(X32, dtype=float)
        n, width = Xd.shape[-2], Xd.shape[-1]
        # one flat gather per step (np.take on the raveled arrays): where each (patient, tree) reads its model's
        # matrix, its node's feature and threshold, and its next node; fancy indexing with broadcast index arrays
        # cost several times more for the thousands of trees of a model and its bootstrap refits
        rows = np.arange(n)[:, None]
        base = rows * width if Xd.ndim == 2 else (self.tree_model[None, :] * n + rows) * width
        flat, children = Xd.reshape(-1), self.children.reshape(-1)  # children: (node, 0 left / 1 right)
        node = np.broadcast_to(self.roots, (n, len(self.roots)))
        has_missing = bool(np.isnan(Xd).any())
        for _ in range(self.depth):
            x = flat.take(base + self.feature.take(node))
            go_left = x <= self.threshold.take(node)
            if has_missing:
                go_left = np.where(np.isnan(x), self.default_left.take(node), go_left)
            node = children.take(2 * node + ~go_left)
        return node

    def _route_per_tree(self, X32: np.ndarray) -> np.ndarray:
        out = np.empty((X32.shape[-2], len(self.roots)), dtype=np.int64)
        for k, e in enumerate(self.estimators):
            start = self.model_starts[k]
            x = np.ascontiguousarray((X32 if X32.ndim == 2 else X32[k])[:, :e.n_features_in_])
            if isinstance(e, RSF | GBSA):
                for j, tree in enumerate(e.estimators_ if isinstance(e, RSF) else e.estimators_[:, 0]):
                    out[:, start + j] = tree.tree_.apply(x)
            else:
                data = xgb.DMatrix(x, feature_names=e.booster_.feature_names)
                out[:, start:start + self.trees_per_model[k]] = e.booster_.predict(data, pred_leaf=True)
        return out + self.roots[None, :]

    def split_features(self) -> np.ndarray:
        """Indices of the columns any tree of any model splits on."""
        internal = self.children[:, 0] != np.arange(len(self.children))
        return np.unique(self.feature[internal])

    def _sums(self, leaves: np.ndarray) -> np.ndarray:
        """(n, K) sum over each model's trees of the scaled leaf values."""
        return np.add.reduceat(self.leaf_value[leaves], self.model_starts, axis=1)

    def _margins(self, X32: np.ndarray) -> np.ndarray:
        """(n, K) ``_sums`` of the leaves the rows reach, added in the compiled routing loop where it runs (no
        table of leaves)."""
        if COMPILED_ROUTE:
            return _compiled().route_sums(X32, self.tree_model, self.roots, self.feature, self.threshold,
                                          self.children, self.default_left, self.leaf_value, self.tree_depth)
        return self._sums(self.apply(X32))

    # ------------------------------------------------------------------ outputs

    def evaluate(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(risk (n, K), survival (K, n, T)) of every model; risk is each model's ``predict``.

        ``X``: the model matrix (n, p) all models read, or a list of K matrices, one per model."""
        risk, surv = self._outputs(X, curves=True)
        assert surv is not None  # computed when the curves are asked for
        return risk, surv

    def _outputs(self, X, curves: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(risk, survival or None): boosting's curves (from its margin) only when ``curves`` is asked for."""
        X = self._matrices(X)
        remember = getattr(self, "remember", True)
        last = self._last if remember else None  # the Predictor asks for risk and curves of the same rows in turn
        if last is not None and not (last[0].shape == X.shape and np.array_equal(last[0], X, equal_nan=True)):
            last = None
        if last is not None:
            margin, risk, surv = last[1:]
        else:
            if self.refuses_missing and np.isnan(X).any():
                raise ValueError("the input contains missing values, which gradient boosting (gbsa) does not accept")
            if self.family == "forest":
                leaves = self.apply(X)
                margin = self._sums(leaves) + self.offset
                surv = self._forest_curves(leaves)
            else:
                margin, surv = self._margins(X) + self.offset, None
            risk = -margin if self.family == "aft" else margin
            risk.setflags(write=False)  # shared with the next call on the same rows: never changed in place
        if curves and surv is None:
            if self.family == "cox":
                surv = np.clip(self.s0[:, None, :] ** np.exp(margin.T)[:, :, None], 0.0, 1.0)
            else:
                surv = self._aft_curves(margin)
        if surv is not None:
            surv.setflags(write=False)
        if remember:
            self._last = (X.copy() if last is None else last[0], margin, risk, surv)
        return risk, surv

    def risk(self, X) -> np.ndarray:
        """(n, K) risk score of every model (its ``predict``: higher = worse)."""
        return self._outputs(X, curves=False)[0]

    def survival(self, X) -> np.ndarray:
        """(K, n, T) survival of every model at ``times``."""
        return self.evaluate(X)[1]

    def _forest_curves(self, leaves: np.ndarray) -> np.ndarray:
        if COMPILED_ROUTE:
            return _compiled().forest_curves(leaves, self.leaf_row, self.leaf_curves, self.model_starts,
                                             self.trees_per_model)
        n, K = len(leaves), len(self.estimators)
        # one sparse row per (patient, forest) holding 1/n_trees at the leaves it reaches
        weights = np.tile(np.repeat(1.0 / self.trees_per_model, self.trees_per_model), n)
        indptr = np.concatenate([[0], np.cumsum(np.tile(self.trees_per_model, n))])
        routing = sp.csr_matrix((weights, self.leaf_row[leaves].ravel(), indptr),
                                shape=(n * K, len(self.leaf_curves)))
        return np.asarray(routing @ self.leaf_curves).reshape(n, K, -1).transpose(1, 0, 2)

    def _aft_curves(self, mu: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.estimators), len(mu), len(self.times)))
        with np.errstate(divide="ignore"):
            log_t = np.log(self.times)
        for k, e in enumerate(self.estimators):
            out[k] = np.clip(e._dist().sf((log_t[None, :] - mu[:, k, None]) / float(e.sigma)), 0.0, 1.0)
        return out


def _compiled():
    """``crlm.tree_routing``."""
    # deferred: numba is imported (and the loops compiled, or loaded from its cache) on the first tree routed
    from crlm import tree_routing

    return tree_routing


def _margin(estimator, X: np.ndarray) -> np.ndarray:
    """The model's own margin (log hazard ratio; AFT: location of log time)."""
    names = getattr(estimator, "feature_names_in_", None)
    frame = X if names is None else pd.DataFrame(X, columns=list(names))
    if isinstance(estimator, XGBCox | XGBAFT):
        return estimator.margin(frame)
    return np.asarray(estimator.predict(frame), dtype=float)


def _baseline_survival(estimator, times) -> np.ndarray:
    if isinstance(estimator, XGBCox):
        return estimator.baseline_survival(times)
    baseline = estimator._get_baseline_model()  # scikit-survival's Breslow estimator of a GBSA
    values = baseline.baseline_survival_.y
    idx = np.searchsorted(baseline.baseline_survival_.x, times, side="right")
    return np.clip(np.concatenate([[1.0], values])[idx], 0.0, 1.0)


def _tree_depths(roots: np.ndarray, children: np.ndarray) -> np.ndarray:
    """Each tree's number of splits on its longest root-to-leaf path (global node ids; a leaf's children point
    to itself)."""
    depths = np.zeros(len(roots), dtype=np.int64)
    frontier, owner, level = np.asarray(roots), np.arange(len(roots)), 0
    while True:
        inner = children[frontier, 0] != frontier
        frontier, owner = frontier[inner], owner[inner]
        if len(frontier) == 0:
            return depths
        level += 1
        depths[owner] = level
        frontier, owner = children[frontier].T.ravel(), np.concatenate([owner, owner])
