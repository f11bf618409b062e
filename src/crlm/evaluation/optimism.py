"""The headline of the shipped model: optimism-corrected performance (Harrell's bootstrap).

The registered model is refitted on every patient, so the nested cross-validation (whose outer training sets
hold 80% of the patients, and whose models are tuned per fold) describes the *procedure*, not the model that
is shipped. Harrell's bootstrap (Harrell, Lee & Mark 1996, Stat Med 15:361; Steyerberg 2019, ch. 17) does:
1. apparent performance: the shipped pipeline (chosen hyperparameters) fitted on all n and evaluated on them;
2. for b = 1..B: the same pipeline refitted on a bootstrap sample (stratified by event), evaluated on that
   sample (its own apparent performance) and on the original patients; optimism_b = the difference;
3. optimism-corrected = apparent - mean optimism.
Metrics: Harrell's C, Uno's C (truncated at the last horizon), the integrated Brier score and the ICI at each
horizon. The hyperparameters are not re-tuned inside the bootstrap (they were chosen by the inner CV on all
patients), so the small optimism of tuning itself is not included; the nested CV numbers stay the comparison
between models. The nested-CV and optimism-corrected figures are labelled as such wherever they appear.
"""

from __future__ import annotations

__all__ = ["HEADLINE_LABEL", "optimism_corrected", "performance"]

import contextlib
import warnings
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from crlm.evaluation.calibration import ici
from crlm.evaluation.intervals import bootstrap_indices
from crlm.evaluation.metrics import evaluation_grid, harrell_c, integrated_brier, uno_c
from crlm.models import make_model
from crlm.schema import DEFAULT_BLOCKS

HEADLINE_LABEL = "optimism-corrected (Harrell's bootstrap) performance of the shipped model"


def performance(model, X: pd.DataFrame, y: np.ndarray, y_ref: np.ndarray, horizons) -> dict[str, float]:
    """Harrell C, Uno C, IBS and ICI at each horizon of a fitted pipeline on (X, y); the censoring weights
    come from ``y_ref`` (the original cohort, the same for every evaluation)."""
    horizons = [float(h) for h in horizons]
    risk = np.asarray(model.predict(X), dtype=float)
    ok = np.isfinite(risk)
    X, y, risk = X[ok], y[ok], risk[ok]
    out = {"harrell_c": harrell_c(y, risk), "uno_c": uno_c(y_ref, y, risk, horizons[-1])}
    grid = evaluation_grid(y_ref, y, 50, t_max=horizons[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["ibs"] = integrated_brier(y_ref, y, model.predict_survival(X, grid), grid)
        s_h = model.predict_survival(X, horizons)
        for j, h in enumerate(horizons):
            out[f"ici_{h:g}"] = np.nan
            with contextlib.suppress(ValueError, np.linalg.LinAlgError):
                out[f"ici_{h:g}"] = ici(y, s_h[:, j], h)["ici"]
    return out


def _one(model_name, params, build, X, y, idx, horizons):
    model = make_model(model_name, **build, **params).fit(X.iloc[idx], y[idx])
    own = performance(model, X.iloc[idx], y[idx], y, horizons)
    original = performance(model, X, y, y, horizons)
    return {k: own[k] - original[k] for k in own}


def optimism_corrected(model_name: str, params: dict, X: pd.DataFrame, y: np.ndarray, horizons, *,
                       blocks=DEFAULT_BLOCKS, postoperative: bool = False, n_boot: int = 200,
                       seed: int = 0, n_jobs: int = 1, endpoint: str = "os") -> dict:
    """Harrell's optimism-corrected performance of ``model_name`` with fixed ``params`` (module docstring).

    Parameters
    ----------
    model_name, params : the shipped pipeline (zoo name, bare or ``model__`` hyperparameters).
    X, y : all training patients and their structured outcome (patients the model cannot rate, e.g. without
        the score's inputs, are left out and ``patients`` says how many remain).
    horizons : months for ICI (Uno's C and the IBS stop at the last).
    blocks, postoperative : the feature blocks, as in training.
    n_boot : bootstrap refits B (0: apparent performance only, labelled so).
    seed, n_jobs : resampling seed; joblib workers.
    endpoint : the endpoint (models with published effects read the endpoint's prior).

    Returns
    -------
    dict
        ``label``, ``n_boot``, ``patients``, ``events`` and per metric ``{"apparent", "optimism",
        "corrected"}`` (``corrected`` = apparent - mean optimism over successful refits; ``n_ok`` of them).
    """
    build: dict[str, Any] = {"blocks": tuple(blocks), "postoperative": postoperative, "columns_present": list(X.columns),
             "random_state": seed, "endpoint": endpoint}
    shipped = make_model(model_name, **build, **params).fit(X, y)
    rated = np.isfinite(np.asarray(shipped.predict(X), dtype=float))  # a score cannot rate every patient
    if not rated.all():
        X, y = X[rated], y[rated]
        shipped = make_model(model_name, **build, **params).fit(X, y)
    apparent = performance(shipped, X, y, y, horizons)
    optimism = []
    if n_boot:
        jobs = (delayed(_one)(model_name, params, build, X, y, idx, horizons)
                for idx in bootstrap_indices(len(y), n_boot, seed + 7, strata=y["event"]))
        optimism = [o for o in Parallel(n_jobs=n_jobs)(jobs) if o is not None]
    frame = pd.DataFrame(optimism, columns=list(apparent))
    out = {"label": HEADLINE_LABEL if n_boot else "apparent performance (no optimism bootstrap: n_boot = 0)",
           "n_boot": int(n_boot), "patients": int(len(y)), "events": int(y["event"].sum()),
           "model": model_name}
    for k, value in apparent.items():
        mean_opt = float(frame[k].mean()) if len(frame) else 0.0
        out[k] = {"apparent": float(value), "optimism": mean_opt, "corrected": float(value) - mean_opt,
                  "n_ok": int(frame[k].notna().sum()) if len(frame) else 0}
    return out
