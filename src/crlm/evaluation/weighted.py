"""Bootstrap resamples as patient weights: the headline metrics of many resamples in a few matrix products.

A bootstrap resample is a vector of counts w (patient i drawn w_i times). Pair-based metrics become
quadratic forms: Harrell's C = w'Kw / w'Aw with A the comparable-pair matrix and K its concordant part;
Uno's C and AUC(t) the same with IPCW pair weights. Per-patient metrics (Brier, IBS, IPA, O/E) are weighted
means. Evaluating all resamples at once (W of shape (B, n)) replaces B x (number of metrics) library calls.

The inverse-probability-of-censoring weights come from the Kaplan–Meier estimate of the censoring
distribution on the full evaluation set (as ``crlm.evaluation.metrics`` does with ``y_train``), and ties
follow scikit-survival (risk ties count 1/2; an event is comparable with a later time, or an equal censored one). ``tests/test_weighted.py``
checks that unit weights reproduce ``evaluate_predictions`` (to 1e-4) and one resample its duplicated rows.
"""

from __future__ import annotations

__all__ = ["bootstrap_metrics", "censoring_survival", "resample_weights", "weighted_harrell_c", "weighted_oe"]

import numpy as np

from crlm.kaplan_meier import censoring_curve


def _step(times_grid, values, at, side="right"):
    idx = np.searchsorted(times_grid, at, side=side) - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], 1.0)


def censoring_survival(y) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan–Meier of the censoring times (event = censored)."""
    return censoring_curve(y["time"], y["event"])


def _concordance(score: np.ndarray) -> np.ndarray:
    """conc[i, j] = 1 if score_i > score_j, 1/2 if tied, 0 otherwise (float32 to halve memory and time)."""
    s = score.astype(np.float64)
    return ((s[:, None] > s[None, :]) + 0.5 * np.isclose(s[:, None], s[None, :], rtol=0, atol=1e-8)).astype(
        np.float32)


def _weighted_km(time, event, W, at) -> np.ndarray:
    """KM survival at ``at`` for each weight vector in W (B, n)."""
    order = np.argsort(time, kind="stable")
    t, d, Wo = time[order], event[order], W[:, order]
    uniq, first = np.unique(t, return_index=True)
    at_risk = np.cumsum(Wo[:, ::-1], axis=1)[:, ::-1][:, first]
    deaths = np.add.reduceat(Wo * d, first, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1 - deaths / at_risk, 1.0)
    surv = np.cumprod(factor, axis=1)
    idx = np.searchsorted(uniq, at, side="right") - 1
    return np.where(idx[None, :] >= 0, surv[:, np.clip(idx, 0, None)], 1.0)


_TIED_TOL = 1e-8  # as sksurv's concordance_index_censored
_BLOCK_ROWS = 512  # event rows per block of the pairwise comparison (bounds memory)


def resample_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """(B, n) counts: how often each patient is drawn in each resample."""
    b = indices.shape[0]
    flat = (indices + (np.arange(b)[:, None] * n)).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def weighted_harrell_c(y, risk, weights: np.ndarray) -> np.ndarray:
    """Harrell's C per row of ``weights`` (B, n) (sksurv's definition: i is comparable with j when i has the
    event and j's time is later, or equal and censored; ties in risk count 1/2). NaN without comparable pairs.

    ``risk`` (n,) gives (B,); several risks (k, n) on the same resamples give (k, B) and share the work."""
    event = np.asarray(y["event"], dtype=bool)
    time = np.asarray(y["time"], dtype=float)
    risks = np.atleast_2d(np.asarray(risk, dtype=float))
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    num = np.zeros((len(risks), W.shape[0]))
    den = np.zeros(W.shape[0])
    for rows in _blocks(np.flatnonzero(event)):  # only an event starts a comparable pair
        t_i = time[rows, None]
        comparable = (time[None, :] > t_i) | ((time[None, :] == t_i) & ~event[None, :])
        Wi = W[:, rows]
        den += np.einsum("bi,bi->b", Wi, W @ comparable.T.astype(float))
        for k, r in enumerate(risks):
            diff = r[rows, None] - r[None, :]
            score = np.where(np.abs(diff) <= _TIED_TOL, 0.5, (diff > 0).astype(float)) * comparable
            num[k] += np.einsum("bi,bi->b", Wi, W @ score.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return c[0] if np.ndim(risk) == 1 else c


def _blocks(rows: np.ndarray):
    for start in range(0, len(rows), _BLOCK_ROWS):
        yield rows[start:start + _BLOCK_ROWS]


def weighted_oe(y, surv_at_t, t: float, weights: np.ndarray) -> np.ndarray:
    """Observed/expected event probability at t per row of ``weights``: (1 - weighted KM(t)) / weighted mean
    of 1 - S_i(t). NaN where ``calibration_in_the_large`` would refuse: t beyond the resample's follow-up, or
    no event at or before t."""
    event = np.asarray(y["event"], dtype=bool)
    time = np.asarray(y["time"], dtype=float)
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    u = np.unique(time[event & (time <= t)])
    if len(u) == 0:
        return np.full(W.shape[0], np.nan)
    deaths = W @ (event[:, None] & (time[:, None] == u[None, :])).astype(float)  # (B, U)
    at_risk = W @ (time[:, None] >= u[None, :]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        km = np.prod(np.where(at_risk > 0, 1.0 - deaths / np.where(at_risk > 0, at_risk, 1.0), 1.0), axis=1)
        expected = (W @ (1.0 - np.asarray(surv_at_t, dtype=float))) / W.sum(axis=1)
        oe = (1.0 - km) / expected
    drawn = W > 0
    last = np.where(drawn, time[None, :], -np.inf).max(axis=1)
    any_event = (drawn & (event & (time <= t))[None, :]).any(axis=1)
    return np.where((last >= t) & any_event & (expected > 0), oe, np.nan)


def bootstrap_metrics(y, risk, surv_h, horizons, surv_grid, grid, tau, km_grid, W) -> dict[str, np.ndarray]:
    """Metrics for every weight vector (row of W). ``surv_h``: (n, H) survival at the horizons; ``surv_grid``:
    (n, G) at the IBS ``grid``; ``km_grid``: the null model's survival at the grid (IPA's reference)."""
    time, event = y["time"].astype(float), y["event"].astype(bool)
    W = np.asarray(W, dtype=np.float32)
    ct, cs = censoring_survival(y)
    g_at_t = np.clip(_step(ct, cs, time, side="left"), 1e-8, None)  # G(T_i-)
    out: dict[str, np.ndarray] = {}

    def quad(M):  # w'Mw for every row of W
        return np.einsum("bi,bi->b", W @ M, W)

    out["harrell_c"] = weighted_harrell_c(y, risk, W)
    earlier = (time[:, None] < time[None, :]) & event[:, None]
    conc_risk = _concordance(risk)
    A_uno = (earlier & (time[:, None] < tau)) * (1 / g_at_t**2)[:, None]
    A_uno = A_uno.astype(np.float32)
    out["uno_c"] = quad(A_uno * conc_risk) / quad(A_uno)

    aucs = []
    for j, h in enumerate(horizons):
        case = (event & (time <= h)) / g_at_t
        control = (time > h).astype(float)
        M = (np.outer(case, control) * _concordance(1 - surv_h[:, j])).astype(np.float32)
        aucs.append(quad(M) / ((W @ case) * (W @ control)))
        out[f"auc_{h:g}"] = aucs[-1]
    km_h = _weighted_km(time, event, W, np.asarray(horizons, dtype=float))
    if len(horizons) == 1:
        out["mean_auc"] = aucs[0]
    else:  # scikit-survival's mean AUC: AUC(t) weighted by the drop of the KM estimate over the horizons
        s = np.hstack([np.ones((len(W), 1)), km_h])
        drop = -np.diff(s, axis=1)
        out["mean_auc"] = (np.stack(aucs, axis=1) * drop).sum(axis=1) / (1 - s[:, -1])

    total = W.sum(axis=1)

    def brier_terms(surv, t):
        g_t = max(_step(ct, cs, np.array([t]))[0], 1e-8)
        died = event & (time <= t)
        return died * surv**2 / g_at_t + (time > t) * (1 - surv) ** 2 / g_t

    for j, h in enumerate(horizons):
        out[f"brier_{h:g}"] = (W @ brier_terms(surv_h[:, j], h)) / total
        out[f"oe_{h:g}"] = (1 - km_h[:, j]) / ((W @ (1 - surv_h[:, j])) / total)
    span = grid[-1] - grid[0]
    model_terms = np.stack([brier_terms(surv_grid[:, k], t) for k, t in enumerate(grid)], axis=1)
    null_terms = np.stack([brier_terms(np.full(len(time), km_grid[k]), t) for k, t in enumerate(grid)], axis=1)
    ibs = np.trapezoid((W @ model_terms) / total[:, None], grid, axis=1) / span
    ibs_null = np.trapezoid((W @ null_terms) / total[:, None], grid, axis=1) / span
    out["ibs"], out["ipa_ibs"] = ibs, 1 - ibs / ibs_null
    return out
