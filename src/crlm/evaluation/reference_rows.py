"""The two reference rows of simulated cohorts (``crlm.evaluation.benchmark``'s docstring): the oracle (the
generating model's truth) and the observed-information ceiling (a model fitted on a large independent cohort)."""

from __future__ import annotations

__all__ = [
    "CEILING", "CEILING_MODEL", "CEILING_PARAMS", "CEILING_SEED_OFFSET", "ORACLE", "ceiling_oof",
    "ceiling_seed", "oracle_oof",
]

from typing import Any

import numpy as np
import pandas as pd

from crlm.cohort.base import Cohort, predictors_frame
from crlm.cohort.simulate import simulate_cohort
from crlm.evaluation.oof import OOF
from crlm.models import make_model

ORACLE = "oracle"
CEILING = "ceiling"
CEILING_MODEL = "xgb_cox"
CEILING_PARAMS: dict[str, Any] = {"model__n_estimators": 400, "model__max_depth": 3}
CEILING_SEED_OFFSET = 10**6  # the ceiling's training cohort: simulate_cohort(ceiling_n, CEILING_SEED_OFFSET + seed)


def oracle_oof(population: Cohort, spec, grid) -> OOF:
    """The generating model's true risk and S(t|x), as out-of-fold-like predictions for every repeat."""
    truth = population.truth
    assert truth is not None, "the oracle needs a simulated cohort"
    risk = np.asarray(truth.risk(spec.endpoint), dtype=float)
    surv = np.asarray(truth.survival(spec.endpoint, grid), dtype=float)
    reps = spec.outer_repeats
    return OOF(np.tile(risk, (reps, 1)), np.tile(surv, (reps, 1, 1)), np.ones(len(risk), dtype=bool))


def ceiling_seed(cohort: Cohort, spec) -> int:
    """The ceiling's training seed, never the evaluated cohort's own (the seed its ``SimulationTruth`` records)."""
    seed = CEILING_SEED_OFFSET + spec.seed
    drawn_with = cohort.truth.seed if cohort.truth is not None else None
    return seed + 1 if drawn_with == seed else seed


def ceiling_oof(cohort: Cohort, X: pd.DataFrame, spec, grid) -> tuple[OOF, str]:
    """The observed-information ceiling: xgb_cox fitted on an independent simulated cohort of ``ceiling_n``."""
    seed = ceiling_seed(cohort, spec)
    train = simulate_cohort(spec.ceiling_n, seed).with_outcome(spec.endpoint)
    X_train = predictors_frame(train.data)[list(X.columns)]  # only what the evaluated cohort records
    model = make_model(CEILING_MODEL, blocks=tuple(spec.blocks), postoperative=spec.postoperative,
                       columns_present=list(X.columns), random_state=seed, **CEILING_PARAMS)
    model.fit(X_train, train.y(spec.endpoint))
    risk = np.asarray(model.predict(X), dtype=float)
    surv = np.asarray(model.predict_survival(X, grid), dtype=float)
    reps = spec.outer_repeats
    oof = OOF(np.tile(risk, (reps, 1)), np.tile(surv, (reps, 1, 1)), np.ones(len(risk), dtype=bool))
    params = ", ".join(f"{k.removeprefix('model__')}={v}" for k, v in CEILING_PARAMS.items())
    note = (f"{CEILING}: {CEILING_MODEL} ({params}) fitted on {len(train)} independent simulated patients "
            f"(seed {seed}) from the recorded fields only; the best a model can do with this information")
    return oof, note
