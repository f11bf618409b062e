"""Linear Cox models: ridge-stabilised Cox (``coxph``) and the elastic-net Cox at one chosen alpha
(``coxnet``). Both expose ``coef_`` (one per feature, log hazard ratio per unit of the model matrix)."""

from __future__ import annotations

__all__ = ["CoxPH", "Coxnet"]

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from sksurv.base import SurvivalAnalysisMixin
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis

from crlm.models.base import SurvivalMixin, step_survival


def _proportional_survival(baseline, lp, times) -> np.ndarray:
    """S(t | x) = S0(t) ** exp(lp) from a fitted Breslow baseline, vectorised (no per-patient step functions:
    online predictions evaluate dozens of bootstrap models per request)."""
    s0 = step_survival(baseline.baseline_survival_.x, baseline.baseline_survival_.y[None, :], times)[0]
    return np.clip(s0[None, :] ** np.exp(np.asarray(lp, dtype=float))[:, None], 0.0, 1.0)


class CoxPH(SurvivalMixin, CoxPHSurvivalAnalysis):
    """The Cox model of scikit-survival with ``predict_survival``; Breslow baseline.

    Parameters as ``sksurv.linear_model.CoxPHSurvivalAnalysis`` (validated by it at ``fit``). ``alpha`` is a
    ridge penalty on the summed partial log-likelihood scale (sksurv divides both by n), so alpha = 1 is
    negligible shrinkage that still makes the one-hot columns (which sum to 1, collinear with the baseline
    hazard) identifiable.
    """

    def predict_survival(self, X, times) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return _proportional_survival(self._baseline_model, self.predict(X), times)

    def baseline_survival(self, times) -> np.ndarray:
        """S0(t): survival at a linear predictor of 0 (``predict_survival`` = S0 ** exp(predict))."""
        return _proportional_survival(self._baseline_model, np.zeros(1), times)[0]


class Coxnet(SurvivalAnalysisMixin, BaseEstimator):
    """Elastic-net Cox at one ``alpha`` (glmnet scale: penalty on the mean partial log-likelihood).

    Wraps ``CoxnetSurvivalAnalysis(alphas=[alpha], fit_baseline_model=True)`` so that ``predict`` and the
    survival curves use exactly that alpha (by default sksurv would use the last alpha of a path, P15) and
    ``alpha`` is an ordinary tunable parameter.

    Parameters
    ----------
    alpha : float
        Penalty weight (> 0).
    l1_ratio : float
        Lasso share of the penalty, in (0, 1] (1 = lasso; the rest is ridge).
    max_iter : int
        Maximum coordinate-descent iterations.
    tol : float
        Convergence tolerance.

    Attributes
    ----------
    coef_ : ndarray
        Log hazard ratio per model-matrix column.
    estimator_ : CoxnetSurvivalAnalysis
        The fitted scikit-survival estimator.
    """

    _parameter_constraints = {
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "l1_ratio": [Interval(numbers.Real, 0, 1, closed="right")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, alpha: float = 0.02, l1_ratio: float = 0.5, max_iter: int = 100_000, tol: float = 1e-7):
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_iter = max_iter
        self.tol = tol

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        self.estimator_ = CoxnetSurvivalAnalysis(alphas=[self.alpha], l1_ratio=self.l1_ratio,
                                                 fit_baseline_model=True, max_iter=self.max_iter, tol=self.tol)
        with warnings.catch_warnings():
            # a strong alpha may zero every coefficient: a legitimate (null) model during tuning
            warnings.filterwarnings("ignore", message="all coefficients are zero")
            self.estimator_.fit(X, y)
        self.coef_ = np.asarray(self.estimator_.coef_[:, 0], dtype=float)
        self.n_features_in_ = self.estimator_.n_features_in_
        if hasattr(self.estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.estimator_.feature_names_in_
        return self

    def predict(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X, alpha=self.estimator_.alphas_[0])

    def predict_survival(self, X, times):
        check_is_fitted(self, "estimator_")
        return _proportional_survival(self._baseline(), self.predict(X), times)

    def _baseline(self):
        return self.estimator_._get_baseline_model(self.estimator_.alphas_[0])

    def baseline_survival(self, times) -> np.ndarray:
        """S0(t): survival at a linear predictor of 0 (``predict_survival`` = S0 ** exp(predict))."""
        return _proportional_survival(self._baseline(), np.zeros(1), times)[0]
