"""XGBoost survival models through the native API (``xgb.train``), as sklearn estimators.

- ``XGBCox`` (``survival:cox``): risk = margin (log hazard ratio); survival curves from a Breslow baseline
  estimated on the training margins (xgboost stores none): S(t|x) = S0(t) ** exp(margin).
- ``XGBAFT`` (``survival:aft``): labels are bounds (event [t, t], censored [t, inf]); the margin mu is the
  location of log T, so S(t|x) = 1 - F((ln t - mu) / sigma) and risk = -mu. The sklearn wrapper cannot pass
  bounds (P16). The boosting starts from the intercept-only AFT fit (``base_score``), since xgboost's
  default start (time 0.5) is far from typical survival times in months.

Both keep the fitted ``booster_`` (with feature names when fitted on a DataFrame) for explanations.
"""

from __future__ import annotations

__all__ = ["AFT_DISTRIBUTIONS", "MIN_TIME", "XGBAFT", "XGBCox"]

import numbers

import numpy as np
import pandas as pd
import xgboost as xgb
from scipy import optimize, stats
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from sksurv.base import SurvivalAnalysisMixin
from sksurv.linear_model.coxph import BreslowEstimator

from crlm.models.base import check_times, event_time, step_survival

MIN_TIME = 1e-3  # months; survival:cox reads a negative label as censored, so a time of 0 would be ambiguous
AFT_DISTRIBUTIONS = {"normal": stats.norm, "logistic": stats.logistic, "extreme": stats.gumbel_l}


def _matrix(X) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(X, pd.DataFrame):
        return X.to_numpy(dtype=float), [str(c) for c in X.columns]
    return np.asarray(X, dtype=float), None


class _XGBSurvival(SurvivalAnalysisMixin, BaseEstimator):
    objective = ""
    _parameter_constraints: dict = {
        "n_estimators": [Interval(numbers.Integral, 0, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_depth": [Interval(numbers.Integral, 1, None, closed="left")],
        "min_child_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "subsample": [Interval(numbers.Real, 0, 1, closed="right")],
        "colsample_bytree": [Interval(numbers.Real, 0, 1, closed="right")],
        "reg_lambda": [Interval(numbers.Real, 0, None, closed="left")],
        "random_state": [Interval(numbers.Integral, 0, None, closed="left"), None],
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, max_depth: int = 2,
                 min_child_weight: float = 5.0, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 reg_lambda: float = 1.0, random_state: int | None = 0, n_jobs: int = 1):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _params(self) -> dict:
        return {"objective": self.objective, "eta": self.learning_rate, "max_depth": self.max_depth,
                "min_child_weight": self.min_child_weight, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree, "lambda": self.reg_lambda, "tree_method": "hist",
                "seed": 0 if self.random_state is None else int(self.random_state), "nthread": self.n_jobs,
                "verbosity": 0}

    def _train(self, dtrain: xgb.DMatrix, params: dict) -> None:
        self.booster_ = xgb.train(params, dtrain, num_boost_round=self.n_estimators)

    def _setup(self, X):
        values, names = _matrix(X)
        self.n_features_in_ = values.shape[1]
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        return values, names

    def margin(self, X) -> np.ndarray:
        check_is_fitted(self, "booster_")
        values, names = _matrix(X)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {values.shape[1]} features, the model was fitted with {self.n_features_in_}")
        fitted = self.booster_.feature_names
        if names is not None and fitted is not None and list(names) != list(fitted):
            raise ValueError("X's columns differ from the features the model was fitted with")
        # inplace_predict skips building a DMatrix (milliseconds per call), which matters for online serving
        return np.asarray(self.booster_.inplace_predict(values, predict_type="margin"), dtype=float)


class XGBCox(_XGBSurvival):  # numpydoc ignore=PR02
    """XGBoost ``survival:cox`` with a Breslow baseline; ``predict`` = log hazard ratio.

    The parameters are those of the shared ``__init__`` (inherited, hence the PR02 exemption).

    Parameters
    ----------
    n_estimators : int
        Boosting rounds.
    learning_rate : float
        Shrinkage per round (xgboost's ``eta``).
    max_depth : int
        Depth of each tree.
    min_child_weight : float
        Minimum Hessian weight in a leaf.
    subsample : float
        Share of the rows sampled per tree, in (0, 1].
    colsample_bytree : float
        Share of the columns sampled per tree, in (0, 1].
    reg_lambda : float
        L2 penalty on the leaf weights.
    random_state : int or None
        Seed (None: 0).
    n_jobs : int
        Threads.

    Attributes
    ----------
    booster_ : xgboost.Booster
        The fitted booster (feature names kept when fitted on a DataFrame).
    baseline_ : BreslowEstimator
        The baseline survival at a margin of 0.
    """

    objective = "survival:cox"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        values, names = self._setup(X)
        event, time = event_time(y)
        time = np.maximum(time, MIN_TIME)
        dtrain = xgb.DMatrix(values, label=np.where(event, time, -time), feature_names=names)
        self._train(dtrain, {**self._params(), "eval_metric": "cox-nloglik"})
        self.baseline_ = BreslowEstimator().fit(self.booster_.predict(dtrain, output_margin=True), event, time)
        return self

    def predict(self, X):
        return self.margin(X)

    def baseline_survival(self, times) -> np.ndarray:
        """S0(t): survival at a margin of 0 (``predict_survival`` = S0 ** exp(margin))."""
        return step_survival(self.baseline_.unique_times_, self.baseline_.baseline_survival_.y, times)[0]

    def predict_survival(self, X, times):
        return np.clip(self.baseline_survival(times)[None, :] ** np.exp(self.margin(X))[:, None], 0.0, 1.0)


class XGBAFT(_XGBSurvival):
    """XGBoost ``survival:aft``: an accelerated failure time model on log time.

    Parameters
    ----------
    distribution : {"normal", "logistic", "extreme"}
        Distribution of the log-time residual.
    sigma : float
        Its scale (> 0).
    n_estimators : int
        Boosting rounds.
    learning_rate : float
        Shrinkage per round (xgboost's ``eta``).
    max_depth : int
        Depth of each tree.
    min_child_weight : float
        Minimum Hessian weight in a leaf.
    subsample : float
        Share of the rows sampled per tree, in (0, 1].
    colsample_bytree : float
        Share of the columns sampled per tree, in (0, 1].
    reg_lambda : float
        L2 penalty on the leaf weights.
    random_state : int or None
        Seed (None: 0).
    n_jobs : int
        Threads.

    Attributes
    ----------
    booster_ : xgboost.Booster
        The fitted booster.
    intercept_ : float
        The intercept-only AFT location the boosting starts from.
    """

    objective = "survival:aft"
    _parameter_constraints: dict = {
        **_XGBSurvival._parameter_constraints,
        "distribution": [StrOptions(set(AFT_DISTRIBUTIONS))],
        "sigma": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, distribution: str = "normal", sigma: float = 1.0, n_estimators: int = 300,
                 learning_rate: float = 0.05, max_depth: int = 2, min_child_weight: float = 5.0,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                 random_state: int | None = 0, n_jobs: int = 1):
        super().__init__(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth,
                         min_child_weight=min_child_weight, subsample=subsample,
                         colsample_bytree=colsample_bytree, reg_lambda=reg_lambda, random_state=random_state,
                         n_jobs=n_jobs)
        self.distribution = distribution
        self.sigma = sigma

    def _dist(self):
        if self.distribution not in AFT_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {sorted(AFT_DISTRIBUTIONS)}, got {self.distribution!r}")
        return AFT_DISTRIBUTIONS[self.distribution]

    def _intercept(self, event, log_time) -> float:
        """Maximum-likelihood location of the intercept-only AFT model (right censoring, fixed sigma)."""
        dist, sigma = self._dist(), float(self.sigma)

        def nll(mu):
            z = (log_time - mu) / sigma
            return -(np.sum(dist.logpdf(z[event]) - np.log(sigma)) + np.sum(dist.logsf(z[~event])))

        lo, hi = log_time.min() - 5 * sigma, log_time.max() + 10 * sigma
        return float(optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded").x)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        values, names = self._setup(X)
        event, time = event_time(y)
        time = np.maximum(time, MIN_TIME)
        self.intercept_ = self._intercept(event, np.log(time))
        dtrain = xgb.DMatrix(values, label_lower_bound=time, label_upper_bound=np.where(event, time, np.inf),
                             feature_names=names)
        self._train(dtrain, {**self._params(), "eval_metric": "aft-nloglik",
                             "aft_loss_distribution": self.distribution,
                             "aft_loss_distribution_scale": float(self.sigma),
                             "base_score": float(np.exp(self.intercept_))})
        return self

    def predict(self, X):
        return -self.margin(X)

    def predict_survival(self, X, times):
        times = check_times(times)
        mu = self.margin(X)
        with np.errstate(divide="ignore"):
            log_t = np.log(times)  # t = 0 -> -inf -> S = 1
        return np.clip(self._dist().sf((log_t[None, :] - mu[:, None]) / float(self.sigma)), 0.0, 1.0)
