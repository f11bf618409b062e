"""Survival models with one interface: ``fit(X, y)``, ``predict(X)`` (risk, higher = worse) and
``predict_survival(X, times)`` ((n, len(times)) survival probabilities). Build them with ``make_model``."""

from crlm.models.base import SurvivalPipeline, step_survival
from crlm.models.ensemble import Ensemble
from crlm.models.introspect import feature_names, final_estimator, linear_coefficients, xgb_booster
from crlm.models.linear import Coxnet, CoxPH
from crlm.models.prior_cox import CoxPrior, FongPlus, LiteratureCox
from crlm.models.score_cox import ScoreCoxModel
from crlm.models.trees import GBSA, RSF
from crlm.models.xgb import XGBAFT, XGBCox
from crlm.models.zoo import (
    DEFAULT_BASELINES,
    DEFAULT_MODELS,
    LEARNED_MODEL_NAMES,
    MODEL_NAMES,
    SCORE_MODEL_NAMES,
    SEARCH_SPACES,
    is_score_model,
    make_model,
    model_family,
    set_endpoint,
)

__all__ = [
    "DEFAULT_BASELINES", "DEFAULT_MODELS", "GBSA", "LEARNED_MODEL_NAMES", "MODEL_NAMES", "RSF", "SCORE_MODEL_NAMES", "SEARCH_SPACES", "XGBAFT",
    "CoxPH", "CoxPrior", "Coxnet", "Ensemble", "FongPlus", "LiteratureCox", "ScoreCoxModel", "SurvivalPipeline",
    "XGBCox", "feature_names", "final_estimator",
    "is_score_model", "linear_coefficients", "make_model", "model_family", "set_endpoint", "step_survival",
    "xgb_booster",
]
