"""The Predictor's confidence interval: bootstrap replicates of every step the training data influence.

What the interval is: a 95% confidence interval of the *model's estimated* survival for this patient, i.e.
the estimation uncertainty of the fitted pipeline (how much the curve would move if the same pipeline were
trained on another cohort of the same size from the same population). It is not a prediction interval of
the patient's own fate, which is a single event time.

Each replicate b refits, on a bootstrap sample of the patients (stratified by event):
- the preprocessing (imputation, scaling, encodings: ``crlm.features``), then
- the model step with the chosen hyperparameters (no re-tuning), and
- the recalibration map, on the same bootstrap sample of the out-of-fold predictions (only when the
  Predictor recalibrates at all).
The band is formed on the complementary log-log scale (so it stays inside [0, 1]) from the replicates'
spread about their median, placed around the point estimate (``method="centred"``): refits on resamples
with duplicated patients can be shifted as a whole (e.g. forests), and shifting the band, not clipping it,
keeps its width honest while the estimate always lies inside. ``"percentile"`` (the plain 2.5-97.5
percentiles) and ``"basic"`` (2 x estimate - percentiles, Efron's bias-corrected reflection) are available
for ``benchmarks/coverage.py``, which measures the coverage of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from crlm.evaluation.intervals import bootstrap_indices
from crlm.models import final_estimator
from crlm.recalibration import Recalibrator
from crlm.survival_kernel import SurvivalKernel

INTERVAL_METHODS = ("centred", "percentile", "basic")
EPS = 1e-9


def _cloglog(s: np.ndarray) -> np.ndarray:
    return np.log(-np.log(np.clip(s, EPS, 1 - EPS)))


def _inverse_cloglog(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.exp(z))


@dataclass
class BootstrapCurves:
    """B refitted pipelines (preprocessing + model) and their recalibration maps, evaluated together."""

    preprocessors: list
    kernels: list[SurvivalKernel]
    recalibrators: list[Recalibrator]
    method: str = "centred"
    level: float = 0.95

    @classmethod
    def fit(cls, pipeline, X: pd.DataFrame, y: np.ndarray, surv_oof: np.ndarray, times: np.ndarray, *,
            recalibrate: bool, n_boot: int, seed: int, method: str = "centred") -> BootstrapCurves:
        """Refit ``pipeline`` (an unfitted or fitted ``SurvivalPipeline``: it is cloned) on ``n_boot`` bootstrap
        samples; refit the recalibration map on the same samples of ``surv_oof`` when ``recalibrate``.

        Parameters
        ----------
        pipeline : SurvivalPipeline
            The chosen pipeline with its hyperparameters.
        X, y : the training rows and outcomes.
        surv_oof : (n, len(times)) out-of-fold survival, the recalibration map's data.
        times : the curve grid (positive times).
        recalibrate, n_boot, seed, method : see the module docstring.

        Returns
        -------
        BootstrapCurves
        """
        if method not in INTERVAL_METHODS:
            raise ValueError(f"interval method must be one of {INTERVAL_METHODS}, got {method!r}")
        preprocessors, kernels, recalibrators = [], [], []
        for idx in bootstrap_indices(len(y), n_boot, seed, strata=y["event"]):
            fitted = clone(pipeline).fit(X.iloc[idx], y[idx])
            pre = fitted.steps[0][1]
            Z = pre.transform(X.iloc[idx[:25]])
            preprocessors.append(pre)
            kernels.append(SurvivalKernel([final_estimator(fitted)], times, Z))
            recalibrators.append(Recalibrator.fit(y[idx], surv_oof[idx], times) if recalibrate
                                 else Recalibrator.identity(times))
        return cls(preprocessors, kernels, recalibrators, method)

    def survival(self, rows) -> np.ndarray:
        """(B, n, T) recalibrated survival of every replicate for the rows (canonical columns or a frame)."""
        out = []
        for pre, kernel, recal in zip(self.preprocessors, self.kernels, self.recalibrators, strict=True):
            Z = pre.transform(rows)
            out.append(recal.apply(kernel.survival(Z)[0]))
        return np.stack(out)

    def band(self, point: np.ndarray, replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper curves (n, T) for the point estimate (n, T) from replicates (B, n, T)."""
        alpha = (1 - self.level) / 2
        # survival falls as cloglog rises: the upper survival bound is the lower cloglog quantile
        z_point, z = _cloglog(point), _cloglog(replicates)
        q_low, q_mid, q_high = np.quantile(z, [alpha, 0.5, 1 - alpha], axis=0)
        if self.method == "percentile":
            z_lo, z_hi = q_low, q_high
        elif self.method == "basic":
            z_lo, z_hi = 2 * z_point - q_high, 2 * z_point - q_low
        else:
            z_lo, z_hi = z_point - (q_mid - q_low), z_point + (q_high - q_mid)
        upper, lower = _inverse_cloglog(z_lo), _inverse_cloglog(z_hi)
        return lower, upper
