"""Tree ensembles from scikit-survival with ``predict_survival``: random survival forest (``rsf``; risk =
summed cumulative hazard; needs ``low_memory=False`` for curves) and gradient boosting with the Cox loss
(``gbsa``; risk = log hazard ratio, Breslow baseline)."""

from __future__ import annotations

__all__ = ["GBSA", "RSF"]

from sksurv.ensemble import GradientBoostingSurvivalAnalysis, RandomSurvivalForest

from crlm.models.base import SurvivalMixin


class RSF(SurvivalMixin, RandomSurvivalForest):
    """``RandomSurvivalForest`` with ``predict_survival``.

    Parameters as scikit-survival's (validated by it at ``fit``); the zoo's defaults are set by ``make_model``.
    """


class GBSA(SurvivalMixin, GradientBoostingSurvivalAnalysis):
    """``GradientBoostingSurvivalAnalysis`` with ``predict_survival``.

    Parameters as scikit-survival's (validated by it at ``fit``); use ``loss="coxph"``: the other losses have
    no survival function.
    """
