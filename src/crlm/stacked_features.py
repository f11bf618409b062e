"""B fitted preprocessors as one transform: a request encoded for every bootstrap replicate at once.

Each bootstrap replicate of the confidence band (``crlm.bootstrap_curves``) refits the preprocessing of
``crlm.features`` (and the extra columns of ``crlm.models.extra_features``): medians, means and scales,
missing indicators, category levels and imputation values differ per replicate, and so can the output columns.
Transforming a request with each of ~50 replicate preprocessors in turn cost ~0.2-0.3 ms per replicate in
Python and pandas overhead. The encoders are simple per column, so every output column of every replicate is
one of a few operations on one *raw* input column (the same for all replicates):

- ``SCALE``: (median-imputed value - mean) / scale (numbers, log-numbers, ordinal ranks, the tumour burden score);
- ``MISSING``: a missing indicator;
- ``BOOL``: yes/no as 1/0, a missing value as the replicate's fill;
- ``LEVEL``: one-hot of a category level (missing is a level, or the training mode under plain imputation);
- ``IMPUTE``: the value, a missing one replaced (a published factor's prevalence, a score's median).

The raw columns are computed once per request (``_raw_values``), then every replicate's columns are one
gather and a few vectorised operations per kind: a (B, n, P) tensor, replicate b's p_b columns first in its
own order and zeros after them (its model never reads the padding). ``StackedPreprocessing.build`` returns
None for a preprocessor it does not know (e.g. the ensemble's ``CanonicalRows``, a score's ``ScoreInputs``):
those replicates keep the per-replicate path.
"""

from __future__ import annotations

import numpy as np

from crlm.cohort.base import CanonicalColumns, canonical_columns
from crlm.features import (
    BooleanEncoder,
    CategoryEncoder,
    FeaturePreprocessor,
    NumericEncoder,
    OrdinalRankEncoder,
    TumourBurdenScore,
    _as_float,
    ordinal_rank,
    tumour_burden_score,
)
from crlm.literature_prior import PRIOR_BY_NAME
from crlm.models.extra_features import AugmentedPreprocessor, LiteratureFeatures, ScoreFeature
from crlm.scores import score_total
from crlm.survival_kernel import SurvivalKernel

PAD, SCALE, MISSING, BOOL, LEVEL, IMPUTE = range(6)


class _Unstackable(TypeError):
    """A preprocessor (or encoder) this module does not know how to stack."""


def _encoder_columns(encoder, inputs: list[str], levels: dict) -> list[tuple]:
    """Output columns of one fitted ``crlm.features`` encoder, in its own order: (raw key, kind, a, b, c)."""
    if isinstance(encoder, NumericEncoder | OrdinalRankEncoder | TumourBurdenScore):
        if isinstance(encoder, TumourBurdenScore):
            keys: list[tuple] = [("tbs", *inputs)]
        elif isinstance(encoder, OrdinalRankEncoder):
            keys = [("ord", f) for f in inputs]
        else:
            keys = [("num", f, bool(encoder.log)) for f in inputs]
        out = [(key, SCALE, float(m), float(mu), float(s))
               for key, m, mu, s in zip(keys, encoder.medians_, encoder.mean_, encoder.scale_, strict=True)]
        return out + [(keys[i], MISSING, 0.0, 0.0, 1.0) for i in encoder.indicator_features_]
    if isinstance(encoder, BooleanEncoder):
        keys = [("bool", f) for f in inputs]
        out = [(key, BOOL, float(fill), 0.0, 1.0) for key, fill in zip(keys, encoder.fill_, strict=True)]
        return out + [(keys[i], MISSING, 0.0, 0.0, 1.0) for i in encoder.indicator_features_]
    if isinstance(encoder, CategoryEncoder):
        modes = getattr(encoder, "modes_", None) or [encoder.fill] * len(inputs)
        out = []
        for f, categories, mode in zip(inputs, encoder.categories_, modes, strict=True):
            key = ("cat", f, encoder.fill)
            known = levels.setdefault(key, {encoder.fill: 0})
            fill_code = 0.0
            for level in map(str, categories):
                code = float(known.setdefault(level, len(known)))
                # filled == level, where a missing value (the fill) is replaced by the mode when there is one
                out.append((key, LEVEL, code, fill_code, float(mode == level)))
        return out
    raise _Unstackable(type(encoder).__name__)


def _columns_of(pre, levels: dict) -> list[tuple]:
    """Output columns of one fitted replicate preprocessor, in the order of its ``transform``."""
    if isinstance(pre, FeaturePreprocessor):
        return [c for _, encoder, inputs in pre.encoders_ for c in _encoder_columns(encoder, inputs, levels)]
    if isinstance(pre, AugmentedPreprocessor):
        return [c for part in pre.parts_ for c in _columns_of(part, levels)]
    if isinstance(pre, LiteratureFeatures):
        return [(("prior", name), IMPUTE, float(p), 0.0, 1.0)
                for name, p in zip(pre.factors_, pre.prevalence_, strict=True)]
    if isinstance(pre, ScoreFeature):
        key = ("score", pre.score_)
        return [(key, IMPUTE, pre.median_, 0.0, 1.0)] + ([(key, MISSING, 0.0, 0.0, 1.0)] if pre.indicator_ else [])
    raise _Unstackable(type(pre).__name__)


class StackedPreprocessing:
    """The model matrices of B fitted replicate preprocessors for the same rows, computed together.

    Build with ``StackedPreprocessing.build(preprocessors)``; ``transform(rows)`` gives (B, n, P), equal to
    each replicate's own ``transform`` in its first p_b columns and zero after them.

    Parameters
    ----------
    columns : list of list of tuple
        Per replicate, its output columns as (raw key, kind, a, b, c) (see the module docstring).
    levels : dict
        Per category raw key, level -> code (code 0 is the missing level ``fill``).
    """

    def __init__(self, columns: list[list[tuple]], levels: dict):
        self.levels = levels
        self.widths = np.array([len(c) for c in columns])
        self.n_replicates, self.width = len(columns), int(self.widths.max())
        self.keys = list(dict.fromkeys(key for cols in columns for key, *_ in cols))
        where = {key: i for i, key in enumerate(self.keys)}
        size = self.n_replicates * self.width
        self.source = np.zeros(size, dtype=np.intp)
        self.kind = np.full(size, PAD)
        self.params = np.zeros((3, size))
        self.params[2] = 1.0
        for b, cols in enumerate(columns):
            for j, (key, kind, a, p, c) in enumerate(cols):
                k = b * self.width + j
                self.source[k], self.kind[k], self.params[:, k] = where[key], kind, (a, p, c)
        # per kind: the flat output positions, their raw columns and parameters (as (k, 1) for broadcasting)
        self.groups = []
        for kind in (SCALE, MISSING, BOOL, IMPUTE):
            at = np.flatnonzero(self.kind == kind)
            if len(at):
                self.groups.append((kind, at, self.source[at], *(self.params[:, at, None])))
        # one-hot levels: per category column, a table code -> every replicate's level columns (row 0: a code
        # no replicate knows), so encoding is one gather instead of comparisons over every level column
        self.level_tables = []
        for i, key in enumerate(self.keys):
            at = np.flatnonzero((self.kind == LEVEL) & (self.source == i))
            if len(at):
                a, b, c = self.params[:, at]
                x = np.arange(-1.0, len(self.levels[key]))[:, None]  # the codes -1 (unseen), 0 (missing), ...
                table = (((x == a) & (x != b)) | ((x == b) & (c != 0))).astype(float)
                self.level_tables.append((i, at, table))

    @classmethod
    def build(cls, preprocessors: list) -> StackedPreprocessing | None:
        """The stacked transform of these fitted preprocessors, or None if one of them cannot be stacked.

        Parameters
        ----------
        preprocessors : list
            Fitted ``FeaturePreprocessor`` or ``AugmentedPreprocessor`` (of features, literature factors or a
            score's total), one per bootstrap replicate.

        Returns
        -------
        StackedPreprocessing or None
        """
        levels: dict = {}
        try:
            columns = [_columns_of(pre, levels) for pre in preprocessors]
        except _Unstackable:
            return None
        if not preprocessors or min(len(c) for c in columns) == 0:
            return None
        return cls(columns, levels)

    def _raw_values(self, columns: CanonicalColumns) -> np.ndarray:
        """(m, n) the raw columns every replicate's encoders read, each computed once."""
        missing = np.full(columns.n_rows, np.nan)
        out = np.empty((len(self.keys), columns.n_rows))
        priors = [key[1] for key in self.keys if key[0] == "prior"]
        prior_values = dict(zip(priors, LiteratureFeatures._values([PRIOR_BY_NAME[p] for p in priors], columns).T,
                                strict=True)) if priors else {}
        for i, key in enumerate(self.keys):
            tag = key[0]
            if tag in ("num", "bool"):
                values = _as_float(columns.get(key[1], missing))
                out[i] = np.log1p(np.clip(values, 0, None)) if tag == "num" and key[2] else values
            elif tag == "ord":
                out[i] = ordinal_rank(key[1], columns.get(key[1], missing))
            elif tag == "tbs":
                out[i] = tumour_burden_score(_as_float(columns.get(key[1], missing)),
                                             _as_float(columns.get(key[2], missing)))
            elif tag == "cat":
                filled = CategoryEncoder(key[2])._filled(columns.get(key[1], missing))
                codes = self.levels[key]
                out[i] = [codes.get(v, -1.0) for v in filled]  # an unseen level matches no level column
            elif tag == "prior":
                out[i] = prior_values[key[1]]
            else:  # "score"
                out[i] = score_total(key[1], columns)
        return out

    def transform(self, rows) -> np.ndarray:
        """(B, n, P) every replicate's model matrix of ``rows`` (canonical records, a frame or
        ``CanonicalColumns``), zero-padded to the widest replicate."""
        columns = canonical_columns(rows)
        raw = self._raw_values(columns)
        out = np.zeros((self.n_replicates * self.width, columns.n_rows))
        for kind, at, source, a, b, c in self.groups:
            v = raw[source]
            if kind == SCALE:
                out[at] = (np.where(np.isnan(v), a, v) - b) / c
            elif kind == MISSING:
                out[at] = np.isnan(v)
            elif kind == BOOL:
                out[at] = np.where(np.isnan(v), a, v != 0)
            else:  # IMPUTE
                out[at] = np.where(np.isnan(v), a, v)
        for i, at, table in self.level_tables:  # LEVEL: ((v == a) & (v != b)) | ((v == b) & (c != 0))
            out[at] = table[raw[i].astype(np.intp) + 1].T
        return out.reshape(self.n_replicates, self.width, columns.n_rows).transpose(0, 2, 1)

    def linear(self, kernel: SurvivalKernel) -> StackedLinear:
        """Every replicate's linear predictor ``Z_b @ coef[:, b]`` as one product with a small basis of the raw
        columns (``StackedLinear``), without the (B, n, P) model matrices.

        Parameters
        ----------
        kernel : SurvivalKernel
            A stacked linear kernel of the same replicates (``SurvivalKernel.stack``): its ``coef`` (P, B) holds
            replicate b's coefficients over its own columns, zero over the padding.

        Returns
        -------
        StackedLinear
        """
        # every output column is affine in three rows of its raw column v: v (0 where missing), "missing" and
        # "known and non-zero", or one-hot in a category's codes; the constant is a column of its own
        m, size = len(self.keys), self.n_replicates * self.width
        offsets, q = {}, 3 * m
        for i, _, table in self.level_tables:
            offsets[i], q = q, q + table.shape[0]
        basis_map = np.zeros((size, q + 1))
        for kind, at, source, a, b, c in self.groups:
            a, b, c = a[:, 0], b[:, 0], c[:, 0]
            value, missing, nonzero = 3 * source, 3 * source + 1, 3 * source + 2
            if kind == SCALE:  # (v - b) / c, a missing v read as a
                basis_map[at, value], basis_map[at, missing], basis_map[at, q] = 1 / c, a / c, -b / c
            elif kind == MISSING:
                basis_map[at, missing] = 1.0
            elif kind == BOOL:  # 1 for a known non-zero value, a where missing
                basis_map[at, nonzero], basis_map[at, missing] = 1.0, a
            else:  # IMPUTE: v, a where missing
                basis_map[at, value], basis_map[at, missing] = 1.0, a
        for i, at, table in self.level_tables:
            basis_map[at, offsets[i]:offsets[i] + table.shape[0]] = table.T
        weights = np.einsum("bpq,pb->qb", basis_map.reshape(self.n_replicates, self.width, q + 1), kernel.coef)
        return StackedLinear(self, kernel, weights, offsets)


class StackedLinear:
    """The B replicates' linear predictors of a ``StackedPreprocessing`` and a stacked linear kernel's
    coefficients: ``log_hazard(rows)`` = ``einsum("knp,pk->nk", pre.transform(rows), coef)`` to rounding, as a
    product of a (n, Q) basis of the raw columns (Q: three per raw column and one per category code) with
    (Q, B) weights, instead of B model matrices of P columns. Build with ``StackedPreprocessing.linear``."""

    def __init__(self, pre: StackedPreprocessing, kernel: SurvivalKernel, weights: np.ndarray,
                 offsets: dict[int, int]):
        self.pre, self.kernel, self.weights, self.offsets = pre, kernel, weights, offsets
        m = len(pre.keys)
        self.rows = np.flatnonzero(np.any(weights[:3 * m] != 0, axis=1))  # the basis rows some replicate reads

    def log_hazard(self, rows) -> np.ndarray:
        """(n, B) every replicate's linear predictor (without the kernel's intercept) of ``rows``."""
        columns = canonical_columns(rows)
        raw = self.pre._raw_values(columns)  # (m, n)
        missing = np.isnan(raw)
        basis = np.empty((3 * len(raw), columns.n_rows))
        basis[0::3], basis[1::3], basis[2::3] = np.where(missing, 0.0, raw), missing, (raw != 0) & ~missing
        # the constant, then each basis row's term in a fixed order, summed along the first (outer) axis: numpy
        # adds whole slices one after the other there, so each patient's sum is the same sequence of operations
        # in a batch of any size (a matrix product's rounding depends on the batch's size); a few patients at
        # a time keep the (rows, patients, B) terms small
        terms, out = self.weights[self.rows], np.empty((columns.n_rows, self.weights.shape[1]))
        for start in range(0, columns.n_rows, PATIENTS_PER_SUM):
            part = basis[self.rows, start:start + PATIENTS_PER_SUM]
            constant = np.broadcast_to(self.weights[-1], (1, part.shape[1], terms.shape[1]))
            out[start:start + PATIENTS_PER_SUM] = np.add.reduce(
                np.concatenate([constant, part[:, :, None] * terms[:, None, :]]), axis=0)
        for i, at in self.offsets.items():  # one-hot: the row of the patient's code, codes -1 (a level no
            out += self.weights[at + raw[i].astype(np.intp) + 1]  # replicate knows), 0 (missing), ...
        return out


PATIENTS_PER_SUM = 64  # StackedLinear's terms summed for this many patients at a time
