"""Calibration of survival predictions at a horizon t (software.md §5).

Also holds the shared input checks, Kaplan–Meier evaluation and a small Cox fitter (Breslow ties) so that
the calibration slope and Austin's ICI use one implementation and no lifelines (P5, P17).
"""

from __future__ import annotations

__all__ = [
    "CoxFit", "binned_calibration", "calibration_in_the_large", "calibration_slope", "check_surv", "check_y",
    "d_calibration", "fit_cox", "ici", "rcs_basis", "survival_at_own_time",
]

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from crlm.kaplan_meier import km_at

# Predictions of exactly 0 or 1 have no cloglog; clip just inside.
_EPS = 1e-10
# Harrell's default knot quantiles for restricted cubic splines (rms::rcspline.eval).
_KNOT_QUANTILES = {3: (0.10, 0.50, 0.90), 4: (0.05, 0.35, 0.65, 0.95), 5: (0.05, 0.275, 0.50, 0.725, 0.95)}


# --------------------------------------------------------------------------- shared checks


def check_y(y, name: str = "y", *, need_events: bool = False) -> np.ndarray:
    """Validate a structured outcome array (``crlm.cohort.base.make_y``); fail early with a readable message."""
    names = getattr(getattr(y, "dtype", None), "names", None) or ()
    if "event" not in names or "time" not in names:
        raise ValueError(f"{name} must be a structured array with fields 'event' and 'time' "
                         "(build it with crlm.cohort.base.make_y)")
    if len(y) == 0:
        raise ValueError(f"{name} is empty")
    time = np.asarray(y["time"], dtype=float)
    if not np.isfinite(time).all() or (time < 0).any():
        raise ValueError(f"{name}: times must be finite and non-negative")
    if need_events and not np.asarray(y["event"], dtype=bool).any():
        raise ValueError(f"{name} has no events (all {len(y)} patients censored): "
                         "concordance, AUC and calibration are undefined")
    return y


def check_surv(surv, n: int, name: str = "survival", ncols: int | None = None) -> np.ndarray:
    """Survival probabilities as float array of n rows (and ncols columns when given), within [0, 1]."""
    s = np.asarray(surv, dtype=float)
    if s.shape[0] != n or (ncols is not None and (s.ndim != 2 or s.shape[1] != ncols)):
        want = f"({n}, {ncols})" if ncols is not None else f"({n},)"
        raise ValueError(f"{name} has shape {s.shape}, expected {want}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (s < -1e-9).any() or (s > 1 + 1e-9).any():
        raise ValueError(f"{name} must hold survival probabilities in [0, 1]")
    return np.clip(s, 0.0, 1.0)


def _check_horizon(y, t: float) -> float:
    t = float(t)
    if not t > 0:
        raise ValueError(f"horizon must be positive, got {t}")
    if t > y["time"].max():
        raise ValueError(f"horizon {t:g} is beyond the follow-up of the data (max time {y['time'].max():g})")
    if not (y["event"] & (y["time"] <= t)).any():
        raise ValueError(f"no events at or before horizon {t:g}: calibration at this horizon is undefined")
    return t


# --------------------------------------------------------------------------- Cox fitter


@dataclass(frozen=True)
class CoxFit:
    """Cox model on covariates X: coefficients, their covariance and the Breslow baseline at X = center."""

    coef: np.ndarray
    cov: np.ndarray
    center: np.ndarray
    event_times: np.ndarray
    cumhaz0: np.ndarray
    converged: bool

    def cumhaz_baseline(self, t) -> np.ndarray:
        idx = np.searchsorted(self.event_times, np.atleast_1d(t), side="right") - 1
        return np.where(idx >= 0, self.cumhaz0[np.clip(idx, 0, None)], 0.0)

    def survival_at(self, X, t: float) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(-1, len(self.coef))
        return np.exp(-self.cumhaz_baseline(t)[0] * np.exp((X - self.center) @ self.coef))


def _rcumsum(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a[::-1], axis=0)[::-1]


def fit_cox(X, time, event, *, ridge: float = 1e-6, max_iter: int = 50, tol: float = 1e-9) -> CoxFit:
    """Cox partial likelihood by damped Newton–Raphson, Breslow ties.

    Covariates are standardised internally and a tiny ridge keeps the Hessian invertible for collinear or
    constant spline columns; with ``ridge`` ~1e-6 against a log-likelihood of order n it does not move the fit.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    X = np.asarray(X, dtype=float).reshape(len(time), -1)
    if not event.any():
        raise ValueError("cannot fit a Cox model without events")
    center, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale == 0] = 1.0
    order = np.argsort(time, kind="stable")
    t, d, Z = time[order], event[order], ((X - center) / scale)[order]
    start = np.searchsorted(t, t, side="left")  # Breslow: tied times share the risk set {j: t_j >= t_i}
    p = Z.shape[1]
    ZZ = Z[:, :, None] * Z[:, None, :]

    def evaluate(beta):
        eta = Z @ beta
        shift = eta.max()
        w = np.exp(eta - shift)
        s0 = _rcumsum(w)[start][d]
        s1 = _rcumsum(w[:, None] * Z)[start][d]
        s2 = _rcumsum(w[:, None, None] * ZZ)[start][d]
        m = s1 / s0[:, None]
        ll = np.sum(eta[d] - shift - np.log(s0)) - 0.5 * ridge * beta @ beta
        grad = (Z[d] - m).sum(axis=0) - ridge * beta
        hess = -(s2 / s0[:, None, None] - m[:, :, None] * m[:, None, :]).sum(axis=0) - ridge * np.eye(p)
        return ll, grad, hess

    beta = np.zeros(p)
    ll, grad, hess = evaluate(beta)
    converged = False
    for _ in range(max_iter):
        step = np.linalg.solve(-hess, grad)
        size = 1.0
        while True:  # step halving keeps the likelihood from decreasing
            new = beta + size * step
            ll_new, grad_new, hess_new = evaluate(new)
            if ll_new >= ll - 1e-12 or size < 1e-6:
                break
            size /= 2
        change = ll_new - ll
        beta, ll, grad, hess = new, ll_new, grad_new, hess_new
        if np.max(np.abs(size * step)) < tol or abs(change) < tol:
            converged = True
            break

    if not converged:
        warnings.warn(f"Cox fit did not converge in {max_iter} iterations", RuntimeWarning, stacklevel=2)
    # Breslow baseline cumulative hazard (covariates at their means) at each distinct event time.
    eta = Z @ beta
    s0_all = _rcumsum(np.exp(eta))[start]
    event_times, first = np.unique(t[d], return_index=True)
    n_events = np.bincount(np.searchsorted(event_times, t[d]), minlength=len(event_times))
    cumhaz0 = np.cumsum(n_events / s0_all[d][first])
    cov = np.linalg.inv(-hess) / np.outer(scale, scale)
    return CoxFit(beta / scale, cov, center, event_times, cumhaz0, converged)


# --------------------------------------------------------------------------- calibration at a horizon


def _cloglog_f(surv: np.ndarray) -> np.ndarray:
    """cloglog of the predicted event probability F = 1 - S: log(-log S)."""
    return np.log(-np.log(np.clip(surv, _EPS, 1 - _EPS)))


def calibration_in_the_large(y, surv_at_t, t: float) -> float:
    """Observed/expected event probability at t: (1 - KM(t)) / mean(1 - S_i(t)). 1 is ideal; <1 over-predicts."""
    y = check_y(y)
    s = check_surv(surv_at_t, len(y), "surv_at_t").reshape(-1)
    t = _check_horizon(y, t)
    expected = np.mean(1.0 - s)
    if expected <= 0:
        raise ValueError("predicted event probabilities at t are all zero: O/E is undefined")
    return float((1.0 - km_at(y["time"], y["event"], t)) / expected)


def calibration_slope(y, surv_at_t, t: float) -> float:
    """Cox regression of the outcome, administratively censored at t, on cloglog(F_i(t)); 1 ideal, <1 overfit.

    NaN when all predictions are equal (no spread to regress on).
    """
    y = check_y(y)
    s = check_surv(surv_at_t, len(y), "surv_at_t").reshape(-1)
    t = _check_horizon(y, t)
    x = _cloglog_f(s)
    if np.ptp(x) == 0:
        return float("nan")
    time = np.minimum(y["time"], t)
    event = y["event"] & (y["time"] <= t)
    return float(fit_cox(x, time, event).coef[0])


def rcs_basis(x, knots) -> np.ndarray:
    """Harrell's restricted cubic spline basis (linear column first), normalised by (k_K - k_1)^2."""
    x = np.asarray(x, dtype=float)
    k = np.asarray(knots, dtype=float)
    cols = [x]
    if len(k) >= 3:
        def cube(v):
            return np.clip(v, 0, None) ** 3
        span = k[-1] - k[-2]
        for kj in k[:-2]:
            cols.append((cube(x - kj) - cube(x - k[-2]) * (k[-1] - kj) / span
                         + cube(x - k[-1]) * (k[-2] - kj) / span) / (k[-1] - k[0]) ** 2)
    return np.column_stack(cols)


def ici(y, surv_at_t, t: float, knots: int = 3) -> dict:
    """Integrated calibration index at t (Austin, Harrell & van Klaveren 2020, Stat Med 39:2714).

    A Cox model of (T, delta) on a restricted cubic spline of cloglog(F_i(t)) gives smoothed observed
    O_i = 1 - S_cal(t | F_i); ICI, E50, E90, Emax summarise |O_i - F_i|. As in the paper the calibration model
    uses the full follow-up, not data censored at t. Returns the curve too, sorted by predicted F.
    """
    y = check_y(y)
    s = check_surv(surv_at_t, len(y), "surv_at_t").reshape(-1)
    t = _check_horizon(y, t)
    if knots not in _KNOT_QUANTILES:
        raise ValueError(f"knots must be one of {sorted(_KNOT_QUANTILES)}, got {knots}")
    f = 1.0 - s
    x = _cloglog_f(s)
    knot_at = np.unique(np.quantile(x, _KNOT_QUANTILES[knots]))
    # Few distinct predictions (e.g. a risk-group score) collapse the knots; fall back to a linear term.
    basis = rcs_basis(x, knot_at if len(knot_at) >= 3 else [])
    fit = fit_cox(basis, y["time"], y["event"])
    observed = 1.0 - fit.survival_at(basis, t)
    gap = np.abs(observed - f)
    order = np.argsort(f, kind="stable")
    return {"ici": float(gap.mean()), "e50": float(np.median(gap)), "e90": float(np.quantile(gap, 0.9)),
            "emax": float(gap.max()), "predicted": f[order], "observed": observed[order]}


def survival_at_own_time(survival: Callable[[np.ndarray], np.ndarray], time, chunk: int = 256) -> np.ndarray:
    """S_i(T_i) from a callable ``survival(times) -> (n, len(times))``, in chunks of times to bound memory."""
    time = np.asarray(time, dtype=float)
    grid, pos = np.unique(time, return_inverse=True)
    out = np.empty(len(time))
    rows = np.arange(len(time))
    for lo in range(0, len(grid), chunk):
        sel = (pos >= lo) & (pos < lo + chunk)
        block = check_surv(survival(grid[lo:lo + chunk]), len(time), "survival(times)",
                           len(grid[lo:lo + chunk]))
        out[sel] = block[rows[sel], pos[sel] - lo]
    return out


def d_calibration(y, survival_at_own_time, bins: int = 10) -> tuple[float, float]:
    """D-calibration (Haider et al. 2020, JMLR 21(85)): Pearson chi2 of u_i = S_i(T_i) against uniform.

    An event adds 1 to the bin holding u_i; a censored patient with s = S_i(c_i) is known only to have
    U <= s, so spreads mass 1 uniformly over [0, s]. Returns (chi2, p) with bins - 1 df; p > 0.05 is
    "D-calibrated" (a conservative test under heavy censoring).
    """
    y = check_y(y)
    u = check_surv(survival_at_own_time, len(y), "survival_at_own_time").reshape(-1)
    if bins < 2:
        raise ValueError("bins must be at least 2")
    event = np.asarray(y["event"], dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.clip((u[event] * bins).astype(int), 0, bins - 1), minlength=bins).astype(float)
    s = u[~event][:, None]
    lower, upper = edges[:-1][None, :], edges[1:][None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.clip(np.minimum(s, upper) - lower, 0, None) / s
    spread[s[:, 0] == 0] = np.eye(1, bins)[0]  # S(c) = 0: all mass at the bottom
    counts += spread.sum(axis=0)
    expected = len(y) / bins
    chi2 = float(np.sum((counts - expected) ** 2) / expected)
    return chi2, float(stats.chi2.sf(chi2, bins - 1))


def binned_calibration(y, surv_at_t, t: float, groups: int = 10) -> pd.DataFrame:
    """Kaplan–Meier observed vs mean predicted event probability at t per group of predicted risk."""
    y = check_y(y)
    s = check_surv(surv_at_t, len(y), "surv_at_t").reshape(-1)
    t = _check_horizon(y, t)
    f = 1.0 - s
    rows = []
    for g, idx in enumerate(np.array_split(np.argsort(f, kind="stable"), groups)):
        if len(idx) == 0:
            continue
        sub = y[idx]
        rows.append({"group": g + 1, "n": len(idx), "events": int(sub["event"].sum()),
                     "predicted": float(f[idx].mean()), "observed": float(1.0 - km_at(sub["time"], sub["event"], t))})
    return pd.DataFrame(rows)
