"""``ensemble``: the average survival curve of the best zoo models, chosen on the training data only.

At fit, each candidate (a zoo name, with its zoo defaults: no tuning inside, which would be a third level of
nesting) is cross-validated on the rows given to ``fit`` (``inner_splits`` folds); the ``n_members`` with the
highest pooled out-of-fold Harrell C become the members, are refitted on all those rows, and the ensemble's
survival is the mean of their curves. In the benchmark ``fit`` only ever sees an outer training fold, so the
members are never chosen on the outer test fold. Risk (for the C-index) is the summed cumulative hazard of
the mean curve over ``risk_times_`` (deciles of the training event times), as for the random survival forest.

The members read the canonical rows: the pipeline's first step is ``CanonicalRows`` (the model fields as
columns), so the explainer's field substitution and the Predictor work as for any other model. ``clone`` of a
fitted ensemble keeps its chosen members (``members``), so the Predictor's bootstrap refits for intervals
refit the members without choosing them again (the interval does not carry the selection's variability).
"""

from __future__ import annotations

__all__ = ["CanonicalRows", "DEFAULT_CANDIDATES", "Ensemble"]

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.model_selection import StratifiedKFold
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from sksurv.base import SurvivalAnalysisMixin

from crlm.cohort.base import canonical_columns
from crlm.evaluation.metrics import harrell_c
from crlm.features import model_columns
from crlm.models.base import check_times, event_time
from crlm.models.extra_features import canonical_inputs
from crlm.schema import DEFAULT_BLOCKS

DEFAULT_CANDIDATES = ("coxnet", "cox_prior", "xgb_cox")  # one per family; the forest costs 5x more at n = 2,000


class CanonicalRows(TransformerMixin, BaseEstimator):
    """Canonical rows -> a DataFrame of the model fields (numbers and yes/no as floats, categories as objects).

    Fields the training rows lack are left out (``columns_``).

    Parameters
    ----------
    blocks : sequence of str
        Feature blocks (``crlm.schema.PREDICTOR_BLOCKS``).
    postoperative : bool
        Whether postoperative fields are model fields.
    columns_present : sequence of str or None
        The columns of the training data (None: every field of the blocks).
    """

    def __init__(self, blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
                 columns_present: Sequence[str] | None = None):
        self.blocks = blocks
        self.postoperative = postoperative
        self.columns_present = columns_present

    def fit(self, X, y=None):
        columns = canonical_columns(X)
        self.columns_ = [c for c in model_columns(self.blocks, postoperative=self.postoperative,
                                                  columns_present=self.columns_present) if c in columns]
        if not self.columns_:
            raise ValueError("no model field among the rows' columns")
        return self

    def transform(self, X):
        check_is_fitted(self, "columns_")
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(canonical_inputs(X, self.columns_), index=index)  # absent fields: missing

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "columns_")
        return np.asarray(self.columns_, dtype=object)

    def set_output(self, *, transform=None):  # already a DataFrame
        return self


class Ensemble(SurvivalAnalysisMixin, BaseEstimator):
    """Mean survival of the best ``n_members`` of ``candidates`` (module docstring).

    Parameters
    ----------
    candidates : sequence of str
        Zoo names of learned models.
    n_members : int
        How many of the best candidates are averaged.
    inner_splits : int
        Folds of the cross-validation that ranks the candidates.
    members : sequence of str or None
        Fixed members (no ranking); set by ``clone`` of a fitted ensemble.
    build : callable
        ``build(name, blocks=..., postoperative=..., columns_present=..., random_state=..., endpoint=...)``
        -> an unfitted zoo pipeline (``crlm.models.make_model``).
    blocks : sequence of str
        Feature blocks, passed to ``build`` for every member.
    postoperative : bool
        Passed to ``build`` for every member.
    endpoint : str or None
        Passed to ``build`` (the literature models need it).
    random_state : int or None
        Seed of the ranking folds and of every member.

    Attributes
    ----------
    members_ : list of str
        The chosen members; ``candidate_c_`` their inner-CV Harrell C; ``models_`` the fitted members.
    """

    _parameter_constraints = {
        "n_members": [Interval(numbers.Integral, 1, None, closed="left")],
        "inner_splits": [Interval(numbers.Integral, 2, None, closed="left")],
    }

    def __init__(self, candidates: Sequence[str] = DEFAULT_CANDIDATES, n_members: int = 2, inner_splits: int = 3,
                 members: Sequence[str] | None = None, build: Callable | None = None,
                 blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False, endpoint: str | None = None,
                 random_state: int | None = 0):
        self.candidates = candidates
        self.n_members = n_members
        self.inner_splits = inner_splits
        self.members = members
        self.build = build
        self.blocks = blocks
        self.postoperative = postoperative
        self.endpoint = endpoint
        self.random_state = random_state

    def _member(self, name: str, X: pd.DataFrame):
        assert self.build is not None  # checked by fit
        return self.build(name, blocks=tuple(self.blocks), postoperative=self.postoperative,
                          columns_present=list(X.columns), random_state=self.random_state, endpoint=self.endpoint)

    def _rank(self, X: pd.DataFrame, y) -> dict[str, float]:
        event, _ = event_time(y)
        folds = list(StratifiedKFold(self.inner_splits, shuffle=True, random_state=self.random_state)
                     .split(X, event))
        c = {}
        for name in self.candidates:
            risk = np.full(len(y), np.nan)
            try:
                for train, test in folds:
                    model = self._member(name, X).fit(X.iloc[train], y[train])
                    risk[test] = model.predict(X.iloc[test])
                c[name] = harrell_c(y, risk) if np.isfinite(risk).all() else np.nan
            except (ValueError, np.linalg.LinAlgError):  # a candidate that cannot fit on a fold is not chosen
                c[name] = np.nan
        return c

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        if self.build is None:
            raise ValueError("Ensemble needs build (crlm.models.make_model)")
        if not isinstance(X, pd.DataFrame):
            raise TypeError("Ensemble needs the canonical rows as a DataFrame")
        if self.members is not None:
            self.members_, self.candidate_c_ = list(self.members), {}
        else:
            self.candidate_c_ = self._rank(X, y)
            ranked = sorted((m for m, c in self.candidate_c_.items() if np.isfinite(c)),
                            key=lambda m: -self.candidate_c_[m])
            if not ranked:
                raise ValueError(f"no ensemble candidate could be fitted: {list(self.candidates)}")
            self.members_ = ranked[: self.n_members]
        self.models_ = [self._member(name, X).fit(X, y) for name in self.members_]
        _, time = event_time(y)
        event_times = time[event_time(y)[0]]
        self.risk_times_ = np.unique(np.quantile(event_times, np.linspace(0.1, 0.9, 9)))
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict_survival(self, X, times) -> np.ndarray:
        check_is_fitted(self, "models_")
        times = check_times(times)
        return np.mean([m.predict_survival(X, times) for m in self.models_], axis=0)

    def predict(self, X) -> np.ndarray:
        surv = np.clip(self.predict_survival(X, self.risk_times_), 1e-12, 1.0)
        return -np.log(surv).sum(axis=1)

    def __sklearn_clone__(self):
        copy = super().__sklearn_clone__()
        if hasattr(self, "members_"):
            copy.set_params(members=list(self.members_))
        return copy
