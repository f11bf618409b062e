"""What explanations need from a fitted zoo pipeline: feature names, linear coefficients, the booster."""

from __future__ import annotations

__all__ = ["LINEAR_COX", "feature_names", "final_estimator", "linear_coefficients", "xgb_booster"]

import pandas as pd
import xgboost as xgb
from sklearn.utils.validation import check_is_fitted

from crlm.models.linear import Coxnet, CoxPH
from crlm.models.prior_cox import CoxPrior, FongPlus, LiteratureCox
from crlm.models.score_cox import ScoreCoxModel
from crlm.models.xgb import XGBAFT, XGBCox

LINEAR_COX = CoxPH | Coxnet | CoxPrior | FongPlus | LiteratureCox  # coef_ = log-HR per model-matrix column


def final_estimator(model):
    return model.steps[-1][1]


def feature_names(model) -> list[str]:
    """Names of the columns the model step sees (for a score model: its total)."""
    est = final_estimator(model)
    if isinstance(est, ScoreCoxModel):
        return [f"{est.score} total"]
    pre = model.steps[0][1]
    check_is_fitted(pre)
    return [str(n) for n in pre.get_feature_names_out()]


def linear_coefficients(model) -> pd.Series:
    """Log hazard ratios by feature name (per unit of the model matrix: per SD for scaled numbers)."""
    est = final_estimator(model)
    if not isinstance(est, LINEAR_COX | ScoreCoxModel):
        raise TypeError(f"{type(est).__name__} is not a linear model")
    check_is_fitted(est, "coef_")
    return pd.Series(est.coef_, index=feature_names(model), name="log_hazard_ratio")


def xgb_booster(model) -> xgb.Booster:
    """The fitted booster (margin = log hazard ratio for xgb_cox, location of log time for xgb_aft)."""
    est = final_estimator(model)
    if not isinstance(est, XGBCox | XGBAFT):
        raise TypeError(f"{type(est).__name__} is not an xgboost model")
    check_is_fitted(est, "booster_")
    return est.booster_
