"""Fast evaluation of many fitted survival models on the same patients (the Predictor's point estimate and
its bootstrap refits), so that an online request does not pay scikit-learn's per-call input checks dozens
of times.

Proportional-hazards models (``coxph``, ``coxnet``, ``xgb_cox``) give S_k(t | x) = S0_k(t) ** exp(lp_k(x)):
linear models stack their coefficients (one matrix product for all models), boosters predict in place;
baselines are precomputed on the curve grid. Anything else falls back to each model's ``predict_survival``.
The kernel checks itself against the models' own predictions when it is built.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crlm.models.introspect import LINEAR_COX
from crlm.models.xgb import XGBCox


class SurvivalKernel:
    def __init__(self, estimators: list, times: np.ndarray, check_rows: pd.DataFrame):
        self.times = np.asarray(times, dtype=float)
        self.estimators = estimators
        self.kind = "generic"
        if all(isinstance(e, LINEAR_COX) for e in estimators):
            self.kind = "linear"
            self.coef = np.stack([np.asarray(e.coef_, dtype=float) for e in estimators], axis=1)  # (p, K)
            # predict() may centre the linear predictor (coxnet subtracts the training mean's x'beta)
            first = check_rows.iloc[:1]
            self.intercept = np.array([float(e.predict(first)[0]) for e in estimators]) - (
                first.to_numpy(dtype=float) @ self.coef)[0]
        elif all(isinstance(e, XGBCox) for e in estimators):
            self.kind = "xgb"
        if self.kind != "generic":
            self.s0 = np.stack([e.baseline_survival(self.times) for e in estimators])  # (K, T)
            expected = np.stack([e.predict_survival(check_rows, self.times) for e in estimators])
            if not np.allclose(self.survival(check_rows), expected, atol=1e-8):
                self.kind = "generic"  # never trade correctness for speed

    def linear_predictors(self, Z: pd.DataFrame) -> np.ndarray:
        """(n, K) log-hazard of every model."""
        values = Z.to_numpy(dtype=float)
        if self.kind == "linear":
            return values @ self.coef + self.intercept
        return np.stack([np.asarray(e.booster_.inplace_predict(values, predict_type="margin"), dtype=float)
                         for e in self.estimators], axis=1)

    def survival(self, Z: pd.DataFrame) -> np.ndarray:
        """(K, n, T) survival of every model at ``times``."""
        if self.kind == "generic":
            return np.stack([e.predict_survival(Z, self.times) for e in self.estimators])
        lp = self.linear_predictors(Z)  # (n, K)
        return np.clip(self.s0[:, None, :] ** np.exp(lp.T)[:, :, None], 0.0, 1.0)
