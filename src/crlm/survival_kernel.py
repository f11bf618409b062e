"""Fast evaluation of many fitted survival models on the same patients (the Predictor's point estimate and
its bootstrap refits), so that an online request does not pay scikit-learn's per-call input checks dozens
of times.

Linear Cox models (``coxph``, ``coxnet``) give S_k(t | x) = S0_k(t) ** exp(lp_k(x)) with their coefficients
stacked (one matrix product for all models) and baselines precomputed on the curve grid. Tree ensembles (``rsf``,
``gbsa``, ``xgb_cox``, ``xgb_aft``) are evaluated from leaf tables, all trees of all models together
(``crlm.tree_kernel``). Anything else falls back to each model's ``predict_survival``. The kernel checks itself
against the models' own predictions (curves and risk) when it is built.
"""

from __future__ import annotations

__all__ = ["SurvivalKernel"]

import numpy as np
import pandas as pd

from crlm.models.introspect import LINEAR_COX
from crlm.tree_kernel import TreeKernel, family


class SurvivalKernel:
    """Survival and risk of K fitted models (the refit first, then its bootstrap refits) on the same patients.

    Parameters
    ----------
    estimators : list
        Fitted model steps (any that have ``predict`` and ``predict_survival``).
    times : array of float
        The curve grid (months, > 0).
    check_rows : DataFrame
        Model-matrix rows on which the fast path is checked against the models' own predictions.
    """

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
            self.s0 = np.stack([e.baseline_survival(self.times) for e in estimators])  # (K, T)
        elif family(estimators) is not None:
            self.kind = "trees"
            self.trees = TreeKernel(estimators, self.times)
        if self.kind != "generic":
            expected = np.stack([e.predict_survival(check_rows, self.times) for e in estimators])
            expected_risk = np.stack([np.asarray(e.predict(check_rows), dtype=float) for e in estimators], axis=1)
            # xgboost adds its leaves in float32, the kernel in float64: they agree to float32 rounding
            tolerance = 1e-5 if self.kind == "trees" else 1e-8
            if not (np.allclose(self.survival(check_rows), expected, atol=tolerance)
                    and np.allclose(self.risk(check_rows), expected_risk, rtol=1e-5, atol=tolerance)):
                self.kind = "generic"  # never trade correctness for speed

    @classmethod
    def stack(cls, kernels: list[SurvivalKernel]) -> SurvivalKernel | None:
        """One kernel for K single-model kernels (each checked when it was built), fed one model matrix per
        model: ``survival`` and ``risk`` of a (K, n, P) tensor, model k reading its own ``Z[k]`` (its columns
        first, zero padding after them). None unless all are linear, or all tree ensembles of one family.

        Parameters
        ----------
        kernels : list of SurvivalKernel
            E.g. the bootstrap replicates' kernels, each over its own preprocessing's columns.

        Returns
        -------
        SurvivalKernel or None
        """
        kinds = {k.kind for k in kernels}
        if len(kinds) != 1 or kinds == {"generic"} or any(len(k.estimators) != 1 for k in kernels):
            return None
        out = cls.__new__(cls)
        out.times, out.kind = kernels[0].times, kernels[0].kind
        out.estimators = [k.estimators[0] for k in kernels]
        if out.kind == "linear":
            width = max(k.coef.shape[0] for k in kernels)
            out.coef = np.hstack([np.pad(k.coef, ((0, width - k.coef.shape[0]), (0, 0))) for k in kernels])
            out.intercept = np.concatenate([k.intercept for k in kernels])
            out.s0 = np.concatenate([k.s0 for k in kernels])
        elif family(out.estimators) is not None:
            out.trees = TreeKernel(out.estimators, out.times)
            out.trees.remember = False  # one call per rows (the band's replicates)
        else:
            return None
        return out

    def risk(self, Z) -> np.ndarray:
        """(n, K) risk score of every model (its ``predict``: higher = worse); ``Z`` (n, p) read by every model,
        or (K, n, P), one matrix per model (a ``stack``ed kernel)."""
        if self.kind == "trees":
            return self.trees.risk(Z)
        if self.kind == "linear":
            # einsum, not BLAS: a BLAS product's rounding depends on the batch's size, so a patient's answer
            # would change in the last bit with the requests it was batched with
            if isinstance(Z, np.ndarray) and Z.ndim == 3:
                return np.einsum("knp,pk->nk", Z, self.coef) + self.intercept
            return np.einsum("np,pk->nk", np.asarray(Z, dtype=float), self.coef) + self.intercept
        return np.stack([np.asarray(e.predict(Z), dtype=float) for e in self.estimators], axis=1)

    def linear_predictors(self, Z: pd.DataFrame) -> np.ndarray:
        """(n, K) log-hazard of every model (proportional-hazards models; for others, their risk score)."""
        return self.risk(Z)

    def log_cumulative_hazard(self, Z) -> np.ndarray | None:
        """(K, n, T) log(-log S) of every model at ``times``, computed directly where the models are proportional
        hazards (linear Cox; tree ensembles with the Cox loss): log-hazard + log baseline cumulative hazard, as
        the recalibration maps read the curves (``recalibration.apply_each``); None for the other kinds.
        ``Z`` as in ``risk``."""
        if self.kind == "trees" and self.trees.family == "cox":
            return _with_baseline(self.trees.risk(Z), self.trees.s0)
        if self.kind == "linear":
            return self.linear_log_cumulative_hazard(self.risk(Z))
        return None

    def linear_log_cumulative_hazard(self, log_hazard: np.ndarray) -> np.ndarray:
        """(K, n, T) log(-log S) of a linear kernel's models from their (n, K) log-hazard (``risk``; e.g. computed
        without the model matrices, ``crlm.stacked_features.StackedLinear`` plus this kernel's ``intercept``)."""
        return _with_baseline(log_hazard, self.s0)

    def survival(self, Z) -> np.ndarray:
        """(K, n, T) survival of every model at ``times`` (``Z`` as in ``risk``)."""
        if self.kind == "trees":
            return self.trees.survival(Z)
        if self.kind == "generic":
            return np.stack([e.predict_survival(Z, self.times) for e in self.estimators])
        lp = self.risk(Z)  # (n, K)
        surv = self.s0[:, None, :] ** np.exp(lp.T)[:, :, None]
        return np.clip(surv, 0.0, 1.0, out=surv)


def _with_baseline(log_hazard: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """(K, n, T) log-hazard (n, K) + log baseline cumulative hazard (K, T): log(-log S) of Cox models."""
    with np.errstate(divide="ignore"):  # s0 = 1 (no event yet): -inf, S = 1
        log_h0 = np.log(-np.log(np.clip(s0, 0.0, 1.0)))
    return np.add(log_hazard.T[:, :, None], log_h0[:, None, :])
