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

Cost: with the preprocessing refitted, every replicate has its own model matrix. ``survival`` computes them all
at once (``crlm.stacked_features``: the B preprocessors' medians, means, scales, indicators and levels
stacked, one (B, n, P) tensor), evaluates every replicate's model in one pass (``SurvivalKernel.stack``:
a padded (P, B) coefficient matrix for linear models, one leaf table of all trees for the ensembles) and
applies the B recalibration maps together (``recalibration.apply_each``). The band itself is formed on the
cloglog scale, and proportional-hazards replicates (linear or Cox-loss ensembles) reach that scale without a
survival curve in between (``cloglog``, ``interval``): their models give log(-log S) = log-hazard + log
baseline cumulative hazard, and the maps are affine on it (``recalibration.StackedMaps``); linear replicates'
log-hazards come from a small basis of the raw columns (``StackedLinear``), without the (B, n, P) tensor. For
1,000 patients x 50 coxnet replicates per endpoint (2026-12-02): the maps 54 -> 16 ms, a whole
``Engine.answer`` 334 -> 230 ms. The stacked path is checked
against the per-replicate reference (``survival_per_replicate``) on its first rows and is kept only if it
agrees; replicates it cannot stack (the ensemble, a served score) take the reference path. The band's quantiles
come from one sort of each (patient, time)'s replicates (``replicate_quantiles``, equal to ``np.quantile``). Measured in
process (``Predictor.predict`` of an OS and an RFS model, 50 replicates, one patient, p50 of 90; a 2-core
machine at load average ~7 shared with other jobs, so upper bounds): coxnet 26 ms stacked vs 401 ms per
replicate, gbsa 37 vs 472 ms, rsf 64 vs 538 ms; a batch of 300 patients 571 vs 173 (coxnet), 202 vs 149
(gbsa), 84 vs 85 (rsf) patients/s. ``refit_preprocessing=False`` keeps the full-data preprocessing for every
replicate (the model and the map are still refitted); the interval then omits the preprocessing's own
(small, unsupervised) estimation uncertainty.
"""

from __future__ import annotations

__all__ = ["BootstrapCurves", "EPS", "INTERVAL_METHODS", "replicate_quantiles"]

from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone

from crlm import parallel
from crlm.cohort.base import CanonicalColumns, canonical_columns
from crlm.evaluation.intervals import bootstrap_indices
from crlm.models import final_estimator
from crlm.recalibration import Recalibrator, StackedMaps, SurvivalMap, apply_each
from crlm.stacked_features import StackedLinear, StackedPreprocessing
from crlm.survival_kernel import SurvivalKernel

INTERVAL_METHODS = ("centred", "percentile", "basic")
EPS = 1e-9


def _cloglog(s: np.ndarray) -> np.ndarray:
    return np.log(-np.log(np.clip(s, EPS, 1 - EPS)))


# _cloglog's range (survival clipped to [EPS, 1 - EPS]), where replicates come as log(-log S) already
CLOGLOG_BOUNDS = (float(np.log(-np.log1p(-EPS))), float(np.log(-np.log(EPS))))


def _clip_cloglog(z: np.ndarray) -> np.ndarray:
    return np.clip(z, *CLOGLOG_BOUNDS)


def _inverse_cloglog(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.exp(z))


def replicate_quantiles(replicates: np.ndarray, quantiles, transform=None, decreasing: bool = False) -> np.ndarray:
    """``np.quantile(transform(replicates), quantiles, axis=0)`` (numpy's default ``linear`` method), from one
    sort of the replicates and ``transform`` applied to the order statistics only.

    numpy's quantile partitions the (B, ...) array along its first, strided axis for every quantile's two
    neighbouring order statistics (about 40 ms for 50 x 1,000 patients x 40 times); sorting the replicates of
    each (patient, time) as one contiguous row is ~10x faster. A monotone ``transform`` maps order statistics to
    order statistics (reversed when ``decreasing``), so it is applied to those only, and the interpolation is
    numpy's own arithmetic: the result equals numpy's bit for bit (tested).

    Parameters
    ----------
    replicates : ndarray
        Shape (B, ...): the replicates along the first axis.
    quantiles : sequence of float
        Probabilities in [0, 1].
    transform : callable, optional
        A monotone element-wise map (non-decreasing, or non-increasing with ``decreasing=True``).
    decreasing : bool, default False
        Whether ``transform`` is non-increasing.

    Returns
    -------
    ndarray
        Shape (len(quantiles), ...).
    """
    values = np.asarray(replicates, dtype=float)
    if np.isnan(values).any():  # numpy's NaN rules (a NaN slice gives NaN), on the generic path
        return np.quantile(values if transform is None else transform(values), quantiles, axis=0)
    count = values.shape[0]
    ordered = np.sort(np.ascontiguousarray(np.moveaxis(values, 0, -1)), axis=-1)  # (..., B) ascending
    q = np.asarray(quantiles, dtype=float)
    # numpy's linear method: virtual index (n - 1) q, neighbours floor and floor + 1 (both the last past the end)
    virtual = (count - 1) * q
    previous = np.floor(virtual)
    following = previous + 1
    previous[virtual >= count - 1], following[virtual >= count - 1] = -1, -1
    previous, following = previous.astype(np.intp) % count, following.astype(np.intp) % count
    gamma = virtual - np.where(virtual >= count - 1, -1, previous)
    picks = np.unique(np.concatenate([previous, following]))
    # the k-th smallest of transform(x) is transform of the k-th smallest (decreasing: the k-th largest) of x
    at = {int(k): ordered[..., count - 1 - k if decreasing else k] for k in picks}
    if transform is not None:
        at = {k: transform(v) for k, v in at.items()}
    out = []
    for j, t in enumerate(gamma):
        a, b = at[int(previous[j])], at[int(following[j])]
        diff = b - a  # numpy's _lerp, operation for operation
        result = np.add(a, diff * t, out=np.empty(np.shape(a)))
        np.subtract(b, diff * (1 - t), out=result, where=t >= 0.5)
        out.append(result)
    return np.stack(out)


def _first_rows(rows, m: int = 25) -> CanonicalColumns:
    """At most the first ``m`` of ``rows`` (what a fast path is checked on against its reference)."""
    columns = canonical_columns(rows)
    m = min(m, columns.n_rows)
    return CanonicalColumns({name: values[:m] for name, values in columns.items()}, m)


def _frame(Z) -> pd.DataFrame:
    return Z if isinstance(Z, pd.DataFrame) else pd.DataFrame(Z)


@parallel.isolated
def _replicate(template, data, y, surv_oof, times, idx, recalibrate: bool, refit_preprocessing: bool):
    """One bootstrap replicate: (preprocessor, kernel, map) when the preprocessing is refitted, else
    (None, the refitted model step, map). Seeded by the template's own random_state, as the refit."""
    recal = Recalibrator.fit(y[idx], surv_oof[idx], times) if recalibrate else Recalibrator.identity(times)
    if not refit_preprocessing:
        return None, clone(template).fit(data.iloc[idx], y[idx]), recal
    fitted = clone(template).fit(data.iloc[idx], y[idx])
    pre = fitted.steps[0][1]
    kernel = SurvivalKernel([final_estimator(fitted)], times, _frame(pre.transform(data.iloc[idx[:25]])))
    return pre, kernel, recal


@dataclass
class BootstrapCurves:
    """B refitted pipelines (preprocessing + model) and their recalibration maps, evaluated together."""

    preprocessors: list
    kernels: list[SurvivalKernel]
    recalibrators: list[SurvivalMap]
    method: str = "centred"
    level: float = 0.95
    shared: bool = False  # one preprocessor and one kernel over every replicate (refit_preprocessing=False)

    @classmethod
    def fit(cls, pipeline, X: pd.DataFrame, y: np.ndarray, surv_oof: np.ndarray, times: np.ndarray, *,
            recalibrate: bool, n_boot: int, seed: int, method: str = "centred",
            refit_preprocessing: bool = True, n_jobs: int = 1) -> BootstrapCurves:
        """Refit ``pipeline`` (an unfitted or fitted ``SurvivalPipeline``: it is cloned) on ``n_boot`` bootstrap
        samples; refit the recalibration map on the same samples of ``surv_oof`` when ``recalibrate``.

        Parameters
        ----------
        pipeline : SurvivalPipeline
            The chosen pipeline with its hyperparameters.
        X, y : the training rows and outcomes.
        surv_oof : (n, len(times)) out-of-fold survival, the recalibration map's data.
        times : the curve grid (positive times).
        recalibrate, n_boot, seed, method, refit_preprocessing : see the module docstring.
        n_jobs : joblib workers for the replicates (the job's backend, ``crlm.parallel``: local or Dask).

        Returns
        -------
        BootstrapCurves
        """
        if method not in INTERVAL_METHODS:
            raise ValueError(f"interval method must be one of {INTERVAL_METHODS}, got {method!r}")
        shared_pre = pipeline.steps[0][1]  # fitted on all patients (used when the preprocessing is shared)
        Z_all = None if refit_preprocessing else _frame(shared_pre.transform(X))
        data = X if refit_preprocessing else Z_all
        template = pipeline if refit_preprocessing else final_estimator(pipeline)
        parallel.scatter(data, y, surv_oof)  # sent to a cluster's workers once, not with every replicate
        fitted = Parallel(n_jobs=n_jobs)(
            delayed(_replicate)(template, data, y, surv_oof, times, idx, recalibrate, refit_preprocessing)
            for idx in bootstrap_indices(len(y), n_boot, seed, strata=y["event"]))
        recalibrators = [r for _, _, r in fitted]
        if refit_preprocessing:
            preprocessors, kernels = [p for p, _, _ in fitted], [k for _, k, _ in fitted]
        else:
            preprocessors = [shared_pre]
            assert Z_all is not None  # built above when the preprocessing is shared
            kernels = [SurvivalKernel([est for _, est, _ in fitted], times, Z_all.head(25))]
        return cls(preprocessors, kernels, recalibrators, method, shared=not refit_preprocessing)

    def survival(self, rows) -> np.ndarray:
        """(B, n, T) recalibrated survival of every replicate for the rows (canonical columns or a frame)."""
        evaluated = self._kernel_and_matrix(rows)
        if evaluated is None:
            return self.survival_per_replicate(rows)
        kernel, Z = evaluated
        # proportional-hazards replicates give log(-log S), which the maps read, directly
        cloglog = kernel.log_cumulative_hazard(Z)
        return apply_each(self.recalibrators, kernel.survival(Z) if cloglog is None else None, cloglog)  # (B, n, T)

    def cloglog(self, rows) -> np.ndarray | None:
        """(B, n, T) log(-log S) of ``survival(rows)``, computed on that scale without the curves, or None.

        Proportional-hazards replicates (linear Cox, Cox-loss boosting) give log(-log S) directly and the
        recalibration maps are affine on that scale (``recalibration.StackedMaps``): the band's scale is
        reached without an exponential or a logarithm per replicate value (None for other models, a centre's
        chained maps, or replicates on the reference path)."""
        linear = None if self.shared else self.stacked_linear(rows)
        cloglog: np.ndarray | None
        if linear is not None:  # linear replicates: the log-hazards without the model matrices
            cloglog = linear.kernel.linear_log_cumulative_hazard(linear.log_hazard(rows) + linear.kernel.intercept)
        else:
            evaluated = self._kernel_and_matrix(rows)
            if evaluated is None:
                return None
            cloglog = evaluated[0].log_cumulative_hazard(evaluated[1])
        maps = self.stacked_maps()
        return None if cloglog is None or maps is None else maps.cloglog(cloglog)

    def stacked_maps(self) -> StackedMaps | None:
        """The recalibration maps stacked for the cloglog scale (``recalibration.StackedMaps``), built on first use
        and again when ``recalibrators`` is replaced (None for a centre's chained maps); not stored in bundles."""
        cached = getattr(self, "_maps", None)
        if cached is None or cached[0] is not self.recalibrators:
            self._maps = cached = (self.recalibrators, StackedMaps.of(self.recalibrators))
        return cached[1]

    def stacked_linear(self, rows=None) -> StackedLinear | None:
        """Linear replicates' log-hazards as one product with a basis of the raw columns
        (``StackedPreprocessing.linear``), or None for other replicates. Built on first use with ``stacked`` and
        checked then against the stacked kernel's own log-hazards on (at most 25 of) ``rows``; not stored in
        bundles."""
        if not hasattr(self, "_linear"):
            stacked, fast = self.stacked(rows), None
            if stacked is not None and stacked[1].kind == "linear" and rows is not None:
                pre, kernel = stacked
                linear = pre.linear(kernel)
                check = _first_rows(rows)
                if np.allclose(linear.log_hazard(check) + kernel.intercept, kernel.risk(pre.transform(check)),
                               rtol=0, atol=1e-10):
                    fast = linear
            self._linear = fast
        return self._linear

    def _kernel_and_matrix(self, rows) -> tuple[SurvivalKernel, pd.DataFrame | np.ndarray] | None:
        """The kernel evaluating every replicate at once and its model matrix of ``rows`` (a (B, n, P) tensor
        when stacked), or None for replicates on the reference path."""
        if self.shared:
            return self.kernels[0], _frame(self.preprocessors[0].transform(rows))
        stacked = self.stacked(rows)
        if stacked is None:
            return None
        pre, kernel = stacked
        return kernel, pre.transform(rows)  # (B, n, P): every replicate in one pass

    def interval(self, point: np.ndarray, rows) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper curves (n, T) of the point estimate (n, T) of ``rows``: ``band(point, survival(rows))``,
        from the replicates' log(-log S) directly where they give it (``cloglog``)."""
        cloglog = self.cloglog(rows)
        if cloglog is None:
            return self.band(point, self.survival(rows))
        return self.band(point, cloglog, cloglog=True)

    def stacked(self, rows=None) -> tuple[StackedPreprocessing, SurvivalKernel] | None:
        """The replicates' preprocessing and models stacked (``crlm.stacked_features``,
        ``SurvivalKernel.stack``), or None where they cannot be (the reference path ``survival_per_replicate``
        then answers: e.g. the ensemble, whose members' curves have no fast kernel, or a served score).

        Built on first use and checked then against ``survival_per_replicate`` on (at most 25 of) ``rows``: a
        mismatch keeps the reference path (never trade correctness for speed). Not stored in bundles."""
        if not hasattr(self, "_stacked"):
            fast = None
            pre = StackedPreprocessing.build(self.preprocessors)
            kernel = SurvivalKernel.stack(self.kernels) if pre is not None else None
            if pre is not None and kernel is not None and rows is not None:  # kernel is None when pre is
                check = _first_rows(rows)
                reference = np.stack([k.survival(_frame(p.transform(check)))[0]
                                      for p, k in zip(self.preprocessors, self.kernels, strict=True)])
                if np.allclose(kernel.survival(pre.transform(check)), reference, rtol=0, atol=1e-10):
                    fast = (pre, kernel)
            self._stacked = fast
        return self._stacked

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_stacked", "_linear", "_maps")}

    def survival_per_replicate(self, rows) -> np.ndarray:
        """(B, n, T) as ``survival``, each replicate transforming the rows and evaluating its model in turn (the
        reference the stacked path is checked against, and the path of replicates that cannot be stacked)."""
        out = []
        for pre, kernel, recal in zip(self.preprocessors, self.kernels, self.recalibrators, strict=True):
            Z = pre.transform(rows)
            out.append(recal.apply(kernel.survival(Z)[0]))
        return np.stack(out)

    def band(self, point: np.ndarray, replicates: np.ndarray, cloglog: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper curves (n, T) for the point estimate (n, T) from replicates (B, n, T): their survival,
        or with ``cloglog`` their log(-log S) (``BootstrapCurves.cloglog``)."""
        alpha = (1 - self.level) / 2
        # survival falls as cloglog rises: the upper survival bound is the lower cloglog quantile
        z_point = _cloglog(point)
        qs = [alpha, 0.5, 1 - alpha]
        q_low, q_mid, q_high = (replicate_quantiles(replicates, qs, _clip_cloglog) if cloglog else
                                replicate_quantiles(replicates, qs, _cloglog, decreasing=True))
        if self.method == "percentile":
            z_lo, z_hi = q_low, q_high
        elif self.method == "basic":
            z_lo, z_hi = 2 * z_point - q_high, 2 * z_point - q_low
        else:
            z_lo, z_hi = z_point - (q_mid - q_low), z_point + (q_high - q_mid)
        upper, lower = _inverse_cloglog(z_lo), _inverse_cloglog(z_hi)
        return lower, upper
