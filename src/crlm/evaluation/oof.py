"""Out-of-fold (OOF) predictions of one model and their evaluation: the point estimate (metrics per repeat,
averaged) and the bootstrap over patients (``crlm.evaluation.benchmark`` explains the design)."""

from __future__ import annotations

__all__ = ["OOF", "bootstrap_oof", "evaluate_oof"]

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crlm.evaluation.calibration import ici
from crlm.evaluation.metrics import evaluate_predictions, evaluation_grid, km_reference, survival_from_matrix
from crlm.evaluation.weighted import bootstrap_metrics, resample_weights


@dataclass
class OOF:
    """Out-of-fold predictions of one model: risk (repeats, n) and survival (repeats, n, len(grid))."""

    risk: np.ndarray
    survival: np.ndarray
    valid: np.ndarray  # (n,) patients the model could score (scores need their inputs)


def evaluate_oof(y, oof: OOF, grid, horizons, rows=None) -> dict[str, float]:
    """Metrics of one model's OOF predictions averaged over repeats (optionally on resampled rows)."""
    rows = np.arange(len(y)) if rows is None else rows
    rows = rows[oof.valid[rows]]
    per_repeat = []
    for r in range(oof.risk.shape[0]):
        surv = oof.survival[r][rows]
        per_repeat.append(evaluate_predictions(y, y[rows], oof.risk[r][rows], survival_from_matrix(surv, grid),
                                               horizons))
    out = pd.DataFrame(per_repeat).mean(axis=0, skipna=False).to_dict()
    out["n"] = float(len(rows))
    return out


def bootstrap_oof(y, oof: OOF, grid, horizons, indices, point: dict, n_ici: int = 50) -> pd.DataFrame:
    """Bootstrap replicates of the headline metrics, centred on the point estimate.

    Resamples evaluate the repeat-averaged OOF predictions (the patients, not the CV splits, are the unit
    resampled), all at once as patient weights (``crlm.evaluation.weighted``); ICI needs a spline fit per
    resample and gets the first ``n_ici``. Averaged predictions behave like a small ensemble and score a little
    better than the per-repeat mean that is the point estimate, so each replicate is shifted by
    (point estimate - the averaged predictions' value on the full sample): the intervals then describe the
    sampling spread around the reported estimate."""
    horizons = list(horizons)
    # patients a score cannot rate carry zero weight; neutral values keep the arrays finite
    risk = np.where(oof.valid, oof.risk.mean(axis=0), 0.0)
    surv = np.where(oof.valid[:, None], oof.survival.mean(axis=0), 1.0)
    at = survival_from_matrix(surv, grid)
    eval_grid = evaluation_grid(y, y, 50, t_max=horizons[-1])
    full = np.ones((1, len(y)), dtype=np.float32)  # row 0: the full sample, the centre of the replicates
    W = np.vstack([full, resample_weights(indices, len(y))]) * oof.valid[None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = bootstrap_metrics(y, risk, at(np.asarray(horizons)), horizons, at(eval_grid), eval_grid,
                                horizons[-1], km_reference(y, eval_grid), W)
        frame = pd.DataFrame(out)
        s_h = at(np.asarray(horizons))
        all_rows = np.flatnonzero(oof.valid)
        for j, h in enumerate(horizons):
            values = np.full(len(indices) + 1, np.nan)
            for b, idx in enumerate([all_rows, *indices[:n_ici]]):
                rows = idx[oof.valid[idx]]
                with contextlib.suppress(ValueError, np.linalg.LinAlgError):  # an undefined resample stays NaN
                    values[b] = ici(y[rows], s_h[rows, j], h)["ici"]
            frame[f"ici_{h:g}"] = values
    centre, replicates = frame.iloc[0], frame.iloc[1:].reset_index(drop=True)
    shift = pd.Series({k: point.get(k, np.nan) for k in frame.columns}) - centre
    return replicates + shift
