"""A clinical score as a survival model: a one-covariate Cox model on the score's total.

``predict`` is the score total itself (higher = worse; monotone, so its C-index is the score's own) and
``predict_survival`` comes from the Cox fit (Breslow baseline), so scores are compared with the learned models
on probabilities too. Patients whose score cannot be computed (a missing component) get NaN from both:
the fit uses the patients with a score, and evaluation must be restricted to them by the caller.
"""

from __future__ import annotations

__all__ = ["COLUMN_PREFIX", "ScoreCoxModel", "ScoreInputs", "score_fields"]

import numbers

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from sksurv.linear_model import CoxPHSurvivalAnalysis

from crlm.cohort.base import canonical_columns
from crlm.models.base import check_times, event_time, step_survival
from crlm.scores import SCORES, compute_score

COLUMN_PREFIX = "column:"


class ScoreCoxModel(BaseEstimator):
    """A Cox model on one clinical score's total (the score baselines of the benchmark).

    The parameter ``score`` shadows sklearn's ``score(X, y)`` method, so this estimator has none: compute
    C-indices with ``crlm``'s evaluation on the patients with a score.

    Parameters
    ----------
    score : str
        A name of ``crlm.scores.compute_score`` (``"fong"``, ``"game"``, ...) or ``"column:<name>"`` to use a
        numeric column of X as the total (e.g. an externally computed score).
    alpha : float
        A negligible ridge penalty (sksurv's summed scale) that keeps the fit finite when the score separates
        perfectly.
    fallback : str or None
        Served models: the score computed where ``score`` (a recorded one) is missing.

    Attributes
    ----------
    coef_ : ndarray
        Log hazard ratio per score point; ``n_scored_`` the patients with a score at ``fit``.
    """

    _parameter_constraints = {
        "score": [str],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "fallback": [str, None],
    }

    def __init__(self, score: str = "fong", alpha: float = 1e-3, fallback: str | None = None):
        self.score = score
        self.alpha = alpha
        self.fallback = fallback  # served models: compute this score where ``score`` (a recorded one) is missing

    def total(self, X) -> np.ndarray:
        """The score total per row (NaN when it cannot be computed)."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ScoreCoxModel needs the cohort rows as a DataFrame")
        if self.score.startswith(COLUMN_PREFIX):
            column = self.score[len(COLUMN_PREFIX):]
            if column not in X:
                raise ValueError(f"column {column!r} is not in X")
            values = X[column]
        else:
            values = compute_score(self.score, X)["total"]
        total = pd.to_numeric(pd.Series(values).astype(object).where(pd.Series(values).notna(), np.nan),
                              errors="coerce").to_numpy(dtype=float)
        if self.fallback and np.isnan(total).any():
            computed = compute_score(self.fallback, X)["total"]
            total = np.where(np.isnan(total), np.asarray(computed, dtype=float), total)
        return total

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        total = self.total(X)
        ok = np.isfinite(total)
        event, _ = event_time(y)
        if ok.sum() < 2 or not event[ok].any():
            raise ValueError(f"score {self.score!r}: {int(ok.sum())} patients with a score and "
                             f"{int(event[ok].sum())} events; cannot fit")
        self.cox_ = CoxPHSurvivalAnalysis(alpha=self.alpha, ties="efron").fit(total[ok, None], y[ok])
        self.coef_ = np.asarray(self.cox_.coef_, dtype=float)  # log hazard ratio per score point
        self.n_scored_ = int(ok.sum())
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        check_is_fitted(self, "cox_")
        return self.total(X)

    def predict_survival(self, X, times):
        check_is_fitted(self, "cox_")
        times = check_times(times)
        total = self.total(X)
        ok = np.isfinite(total)
        out = np.full((len(total), len(times)), np.nan)
        if ok.any():
            values = self.cox_.predict_survival_function(total[ok, None], return_array=True)
            out[ok] = step_survival(self.cox_.unique_times_, values, times)
        return out


class ScoreInputs(TransformerMixin, BaseEstimator):
    """The preprocessing step of a score model: the canonical rows restricted to the inputs of ``scores``.

    A recorded score column passes unchanged. Nothing is learned from the data; ``columns_`` lists the fields
    read, as a learned model's preprocessor does.

    Parameters
    ----------
    scores : tuple of str
        Score names (``crlm.scores.SCORES``) or ``"column:<name>"``.
    """

    def __init__(self, scores: tuple[str, ...] = ("fong",)):
        self.scores = scores

    def fit(self, X, y=None):
        self.columns_ = score_fields(self.scores)
        return self

    def transform(self, X) -> pd.DataFrame:
        check_is_fitted(self, "columns_")
        frame = canonical_columns(X).frame(index=X.index if isinstance(X, pd.DataFrame) else None)
        return frame.reindex(columns=self.columns_)


def score_fields(scores) -> list[str]:
    """The input fields of the named scores (``column:<name>`` -> that column), in order, without repeats."""
    fields: list[str] = []
    for name in scores:
        fields += [name[len(COLUMN_PREFIX):]] if name.startswith(COLUMN_PREFIX) else list(SCORES[name].fields)
    return list(dict.fromkeys(fields))
