"""Compiled loops of the tree kernel (numba): the leaf each patient reaches in every tree, and the forests'
averaged leaf curves.

In machine code: a patient walks each tree from its root to a leaf (a dozen comparisons), where the
vectorised numpy route (``TreeKernel._route_numpy``) gathers whole (patients x trees) arrays once per tree
level, and a forest's curve adds its trees' leaf curves directly, where the numpy path builds a sparse
routing matrix per call.

A lone patient walks the trees one after the other, branching at each node. Several patients go tree by tree,
``LANES`` of them through the same tree at once, each step without a branch and for as many steps as that
tree is deep (a leaf points to itself, so a patient who has arrived stays): the walks of one tree are
independent, so the processor overlaps their loads instead of waiting on a mispredicted branch at every
node, and the tree's nodes and the patients' rows of its matrix stay in cache. Measured on the 50 bootstrap
forests x 100 trees of an RSF (``benchmarks/serving.py``'s forest, 1,000 patients): 240 -> 110 ms. Same rules
as the other routes: float32 inputs compared as float64 with ``x <= threshold`` (xgboost's ``x < c`` is stored
as the float32 just below ``c``), a missing value follows the node's default direction. Each patient's result
depends only on that patient, so an answer does not change with the batch it is computed in.

Compiled on first use and cached on disk (``cache=True``: next to this file, or numba's user-wide cache when
that is not writable); ``nogil``: a call in a worker thread leaves the event loop the GIL.
"""

from __future__ import annotations

__all__ = ["LANES", "forest_curves", "route", "route_sums"]

import numba
import numpy as np

# Patients routed through one tree together (a compile-time constant: the step loop is unrolled over them).
# 8, 16 and 32 within 3% of each other on 1,000 patients (scratch measurement); 4: 16% slower.
LANES = 16


@numba.njit(cache=True, nogil=True)
def _leaf(X, m, i, node, feature, threshold, children, default_left):  # pragma: no cover (compiled)
    """The leaf patient ``i`` of matrix ``m`` reaches from ``node`` (a tree's root)."""
    left = children[node, 0]
    while left != node:  # a leaf points to itself
        x = X[m, i, feature[node]]
        go_left = default_left[node] if np.isnan(x) else np.float64(x) <= threshold[node]
        node = left if go_left else children[node, 1]
        left = children[node, 0]
    return node


@numba.njit(cache=True, nogil=True)
def _route(X, tree_matrix, roots, feature, threshold, children, default_left, out):  # pragma: no cover (compiled)
    for i in range(X.shape[1]):
        for t in range(roots.shape[0]):
            out[i, t] = _leaf(X, tree_matrix[t], i, roots[t], feature, threshold, children, default_left)


@numba.njit(inline="always", nogil=True)
def _walk_lanes(X, m, i0, lanes, root, depth, feature, threshold, children, default_left,
                nodes):  # pragma: no cover (compiled)
    """Patients ``i0`` to ``i0 + lanes - 1`` of matrix ``m`` through one tree (``root``, ``depth`` steps): their
    leaves in ``nodes``. Inlined where it is called (numba's IR): as a call of its own, the loop ran 2x slower."""
    for g in range(lanes):
        nodes[g] = root
    for _ in range(depth):
        for g in range(lanes):  # no branch but the missing value's: the walks overlap
            node = nodes[g]
            x = X[m, i0 + g, feature[node]]
            right = not (default_left[node] if np.isnan(x) else np.float64(x) <= threshold[node])
            nodes[g] = children[node, 1 if right else 0]


@numba.njit(cache=True, nogil=True)
def _route_lanes(X, tree_matrix, roots, depths, feature, threshold, children, default_left,
                 out):  # pragma: no cover (compiled)
    n = X.shape[1]
    nodes = np.empty(LANES, dtype=np.int64)
    for t in range(roots.shape[0]):
        for i0 in range(0, n, LANES):
            lanes = min(LANES, n - i0)
            _walk_lanes(X, tree_matrix[t], i0, lanes, roots[t], depths[t], feature, threshold, children,
                        default_left, nodes)
            for g in range(lanes):
                out[i0 + g, t] = nodes[g]


@numba.njit(cache=True, nogil=True)
def _route_sums_lanes(X, tree_matrix, tree_model, roots, depths, feature, threshold, children, default_left,
                      leaf_value, out):  # pragma: no cover (compiled)
    n = X.shape[1]
    nodes = np.empty(LANES, dtype=np.int64)
    for t in range(roots.shape[0]):
        k = tree_model[t]
        for i0 in range(0, n, LANES):
            lanes = min(LANES, n - i0)
            _walk_lanes(X, tree_matrix[t], i0, lanes, roots[t], depths[t], feature, threshold, children,
                        default_left, nodes)
            for g in range(lanes):  # tree by tree, as for a lone patient: the same sum to the last bit
                out[i0 + g, k] += leaf_value[nodes[g]]


@numba.njit(cache=True, nogil=True)
def _route_sums(X, tree_matrix, tree_model, roots, feature, threshold, children, default_left, leaf_value,
                out):  # pragma: no cover (compiled)
    for i in range(X.shape[1]):
        for t in range(roots.shape[0]):
            node = _leaf(X, tree_matrix[t], i, roots[t], feature, threshold, children, default_left)
            out[i, tree_model[t]] += leaf_value[node]


@numba.njit(cache=True, nogil=True)
def _forest_curves(leaves, leaf_row, leaf_curves, tree_model, trees_per_model, out):  # pragma: no cover
    # tree by tree (a tree's few leaf curves stay in cache), each (forest, patient) sum still in tree order
    n_times = leaf_curves.shape[1]
    for t in range(leaves.shape[1]):
        k = tree_model[t]
        weight = 1.0 / trees_per_model[k]
        for i in range(leaves.shape[0]):
            row = leaf_row[leaves[i, t]]
            for s in range(n_times):
                out[k, i, s] += weight * leaf_curves[row, s]


def route(X32: np.ndarray, tree_model: np.ndarray, roots: np.ndarray, feature: np.ndarray,
          threshold: np.ndarray, children: np.ndarray, default_left: np.ndarray,
          depths: np.ndarray) -> np.ndarray:
    """Global node id of the leaf each patient reaches in every tree.

    Parameters
    ----------
    X32 : ndarray of float32
        (n, p), read by every tree, or (K, n, P), model k's trees reading ``X32[k]``.
    tree_model : ndarray of int
        The model of each tree (ignored for a 2-D ``X32``).
    roots, feature, threshold, children, default_left : ndarray
        The flattened node table (``TreeKernel``): each tree's root, each node's split feature and threshold,
        its (left, right) children (a leaf's both point to itself) and its direction for a missing value.
    depths : ndarray of int
        Each tree's number of splits on its longest path (``TreeKernel.tree_depth``).

    Returns
    -------
    ndarray of int64, shape (n, n_trees)
        The same leaves whichever loop runs (one patient, or several in lanes).
    """
    X3, matrices, (roots_, feature_, threshold_, children_, default_left_) = _tables(
        X32, tree_model, roots, feature, threshold, children, default_left)
    out = np.empty((X3.shape[1], len(roots)), dtype=np.int64)
    if X3.shape[1] == 1:
        _route(X3, matrices, roots_, feature_, threshold_, children_, default_left_, out)
    else:
        _route_lanes(X3, matrices, roots_, _depths(depths), feature_, threshold_, children_, default_left_, out)
    return out


def _depths(depths: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(depths, dtype=np.int64)


def _tables(X32, tree_model, roots, feature, threshold, children,
            default_left) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """The compiled loops' arguments: the (K, n, P) float32 input, the matrix each tree reads (0 for a 2-D
    ``X32``), and the node table as contiguous arrays of fixed types."""
    X3 = np.ascontiguousarray(X32[None] if X32.ndim == 2 else X32, dtype=np.float32)
    matrices = (np.zeros(len(roots), dtype=np.int64) if X32.ndim == 2
                else np.ascontiguousarray(tree_model, dtype=np.int64))
    tables = (np.ascontiguousarray(roots, dtype=np.int64), np.ascontiguousarray(feature, dtype=np.int64),
              np.ascontiguousarray(threshold, dtype=np.float64), np.ascontiguousarray(children, dtype=np.int64),
              np.ascontiguousarray(default_left, dtype=np.bool_))
    return X3, matrices, tables


def route_sums(X32: np.ndarray, tree_model: np.ndarray, roots: np.ndarray, feature: np.ndarray,
               threshold: np.ndarray, children: np.ndarray, default_left: np.ndarray,
               leaf_value: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Each model's sum of the values of the leaves a patient reaches in its trees (boosting's margin), in the
    routing loop itself: no (patients x trees) table of leaves is written and read back.

    Parameters
    ----------
    X32, tree_model, roots, feature, threshold, children, default_left : as for ``route``
        ``tree_model`` is also the column of each tree's model in the output.
    leaf_value : ndarray
        Node id -> the (scaled) value of a leaf.
    depths : ndarray of int
        As for ``route``.

    Returns
    -------
    ndarray, shape (n, K)
        Added tree by tree in order, from 0, whichever loop runs.
    """
    X3, matrices, (roots_, feature_, threshold_, children_, default_left_) = _tables(
        X32, tree_model, roots, feature, threshold, children, default_left)
    models = np.ascontiguousarray(tree_model, dtype=np.int64)
    out = np.zeros((X3.shape[1], int(models.max()) + 1))
    values = np.ascontiguousarray(leaf_value, dtype=np.float64)
    if X3.shape[1] == 1:
        _route_sums(X3, matrices, models, roots_, feature_, threshold_, children_, default_left_, values, out)
    else:
        _route_sums_lanes(X3, matrices, models, roots_, _depths(depths), feature_, threshold_, children_,
                          default_left_, values, out)
    return out


def forest_curves(leaves: np.ndarray, leaf_row: np.ndarray, leaf_curves: np.ndarray, model_starts: np.ndarray,
                  trees_per_model: np.ndarray) -> np.ndarray:
    """Each forest's survival curve: the mean of its trees' leaf curves.

    Parameters
    ----------
    leaves : ndarray of int, shape (n, n_trees)
        ``route``'s output.
    leaf_row : ndarray of int
        Node id -> row of ``leaf_curves``.
    leaf_curves : ndarray, shape (n_leaves, T)
        Every leaf's survival on the curve grid.
    model_starts, trees_per_model : ndarray of int
        Each forest's first tree and number of trees.

    Returns
    -------
    ndarray, shape (K, n, T)
    """
    out = np.zeros((len(model_starts), leaves.shape[0], leaf_curves.shape[1]))
    tree_model = np.repeat(np.arange(len(model_starts)), trees_per_model)  # the forests' trees are consecutive
    ints = [np.ascontiguousarray(a, dtype=np.int64) for a in (leaves, leaf_row, tree_model, trees_per_model)]
    _forest_curves(ints[0], ints[1], np.ascontiguousarray(leaf_curves, dtype=np.float64), ints[2], ints[3], out)
    return out
