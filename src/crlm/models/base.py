"""The one survival-model interface: ``fit(X, y)``, ``predict(X)`` = risk, ``predict_survival(X, times)``.

``SurvivalPipeline`` is an sklearn ``Pipeline`` (so ``clone``, ``get_params``/``set_params`` and grid search
work) whose final estimator provides ``predict_survival``; ``SurvivalMixin`` adds it to scikit-survival
estimators. Survival curves are right-continuous step functions evaluated at any ``times >= 0``: 1 before the
first time of their grid, constant after the last (no extrapolation of the tail).
"""

from __future__ import annotations

__all__ = ["SurvivalMixin", "SurvivalPipeline", "check_times", "event_time", "step_survival"]

from collections.abc import Callable

import numpy as np
from sklearn.pipeline import Pipeline


def check_times(times) -> np.ndarray:
    """Evaluation times as a 1-d float array; they must be finite and >= 0 (months since resection)."""
    times = np.atleast_1d(np.asarray(times, dtype=float)).ravel()
    if not np.all(np.isfinite(times)) or np.any(times < 0):
        raise ValueError(f"times must be finite and >= 0, got {times}")
    return times


def step_survival(grid, values, times) -> np.ndarray:
    """Evaluate step functions known at ``grid`` (sorted, shape (m,)) with ``values`` (n, m) at ``times``.

    S(t) = values[:, k] for grid[k] <= t < grid[k+1]; 1 before grid[0]; values[:, -1] after grid[-1].
    """
    times = check_times(times)
    grid = np.asarray(grid, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    idx = np.searchsorted(grid, times, side="right")  # number of grid points <= t
    padded = np.hstack([np.ones((values.shape[0], 1)), values])
    return np.clip(padded[:, idx], 0.0, 1.0)


def event_time(y) -> tuple[np.ndarray, np.ndarray]:
    """Event indicator and time from a structured outcome (fields in order event, time)."""
    name_event, name_time = y.dtype.names
    return np.asarray(y[name_event], dtype=bool), np.asarray(y[name_time], dtype=float)


class SurvivalMixin:
    """``predict_survival`` for scikit-survival estimators (their curves live on ``unique_times_``)."""

    # provided by the scikit-survival estimator this is mixed into
    predict_survival_function: Callable[..., np.ndarray]
    unique_times_: np.ndarray

    def predict_survival(self, X, times) -> np.ndarray:
        values = self.predict_survival_function(X, return_array=True)
        return step_survival(self.unique_times_, values, times)


class SurvivalPipeline(Pipeline):
    """A Pipeline (preprocess -> model) with ``predict_survival(X, times)`` -> (n, len(times))."""

    def predict_survival(self, X, times) -> np.ndarray:
        Xt = X
        for _, _, transformer in self._iter(with_final=False):
            Xt = transformer.transform(Xt)
        return self.steps[-1][1].predict_survival(Xt, times)
