"""The model zoo: a name -> a survival pipeline ``preprocess -> model`` with one interface.

Every model is a ``SurvivalPipeline`` (an sklearn Pipeline: ``clone``, ``get_params``/``set_params`` and
grid search work) with two steps, ``"preprocess"`` and ``"model"``; tune with ``"model__<param>"`` (see
``SEARCH_SPACES``). Learned models read the canonical cohort rows through ``crlm.features``; score models
(``score:<name>``) read the canonical rows of the score's inputs (``"preprocess"`` is ``ScoreInputs``).
"""

from __future__ import annotations

__all__ = [
    "LEARNED_MODEL_NAMES", "MODEL_NAMES", "MODEL_STEP", "PREPROCESS_STEP", "RECORDED_PREFIX",
    "SCORE_MODEL_NAMES", "SCORE_PREFIX", "SEARCH_SPACES", "is_score_model", "make_model", "model_family",
    "set_endpoint",
]

from collections.abc import Callable, Sequence
from typing import Any

from crlm.features import make_preprocessor
from crlm.models.base import SurvivalPipeline
from crlm.models.ensemble import CanonicalRows, Ensemble
from crlm.models.extra_features import AugmentedPreprocessor, LiteratureFeatures, ScoreFeature
from crlm.models.linear import Coxnet, CoxPH
from crlm.models.prior_cox import CoxPrior, FongPlus, LiteratureCox
from crlm.models.score_cox import ScoreCoxModel, ScoreInputs
from crlm.models.trees import GBSA, RSF
from crlm.models.xgb import XGBAFT, XGBCox
from crlm.schema import DEFAULT_BLOCKS
from crlm.scores import SCORE_NAMES

PREPROCESS_STEP = "preprocess"
MODEL_STEP = "model"
SCORE_PREFIX = "score:"

# Defaults: stable on n ~ 200 and a fit in seconds on n = 2000 with ~40 features on one core.
_FACTORIES: dict[str, Callable[[int | None], object]] = {
    "coxph": lambda rs: CoxPH(alpha=1.0, ties="efron"),
    "coxnet": lambda rs: Coxnet(alpha=0.02, l1_ratio=0.5),
    # Forest and boosting sizes keep the full nested benchmark of n = 2000 inside its 10-minute budget on 2 cores:
    # 100 trees on half-size bootstrap samples, and 100 boosting rounds at learning rate 0.1.
    "rsf": lambda rs: RSF(n_estimators=100, min_samples_split=20, min_samples_leaf=10, max_features="sqrt",
                          max_samples=0.5, low_memory=False, n_jobs=1, random_state=rs),
    "gbsa": lambda rs: GBSA(loss="coxph", n_estimators=100, learning_rate=0.1, max_depth=2, subsample=0.8,
                            min_samples_leaf=10, random_state=rs),
    "xgb_cox": lambda rs: XGBCox(n_estimators=150, learning_rate=0.05, max_depth=2, random_state=rs, n_jobs=1),
    "xgb_aft": lambda rs: XGBAFT(distribution="normal", sigma=1.0, n_estimators=150, learning_rate=0.05,
                                 max_depth=2, random_state=rs, n_jobs=1),
    # Small-cohort models (crlm.models.prior_cox, crlm.models.ensemble); their inputs are set in make_model.
    "cox_prior": lambda rs: CoxPrior(prior_strength=0.1, alpha=30.0),
    "literature_cox": lambda rs: LiteratureCox(),
    "fong_plus": lambda rs: FongPlus(anchor_strength=1.0, alpha=30.0),
    "ensemble": lambda rs: Ensemble(random_state=rs, build=make_model),
}
_FAMILIES = {"coxph": "linear", "coxnet": "linear", "rsf": "tree", "gbsa": "tree", "xgb_cox": "tree",
             "xgb_aft": "tree", "cox_prior": "linear", "literature_cox": "linear", "fong_plus": "linear",
             "ensemble": "ensemble"}

LEARNED_MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)
SCORE_MODEL_NAMES: tuple[str, ...] = tuple(f"{SCORE_PREFIX}{s}" for s in SCORE_NAMES)
MODEL_NAMES: tuple[str, ...] = LEARNED_MODEL_NAMES + SCORE_MODEL_NAMES
# A job's defaults (``JobConfig``, ``BenchmarkSpec``; a job config overrides them): every learned model of the
# zoo, and every published score as a baseline (a score recorded in the cohort is named by the job itself).
DEFAULT_MODELS: tuple[str, ...] = LEARNED_MODEL_NAMES
DEFAULT_BASELINES: tuple[str, ...] = tuple(f"{SCORE_PREFIX}{s}" for s in SCORE_NAMES if s != "fong_recorded")

# Small grids for 3-fold inner tuning (quick on n = 200, feasible on n = 2000 on 2 cores).
SEARCH_SPACES: dict[str, dict[str, list]] = {
    "coxph": {"model__alpha": [10.0, 100.0, 1000.0]},
    "coxnet": {"model__l1_ratio": [0.5, 0.9], "model__alpha": [0.01, 0.03, 0.1]},
    "rsf": {"model__min_samples_leaf": [10, 30]},
    "gbsa": {"model__max_depth": [1, 2]},
    "xgb_cox": {"model__max_depth": [1, 2], "model__n_estimators": [100, 300]},
    "xgb_aft": {"model__sigma": [0.7, 1.2], "model__max_depth": [1, 2]},
    # prior strength from close to the plain ridge Cox (0.003 x the published precision) to the literature model
    # (1 = the published uncertainty at face value; TCIA chose both ends of 0.01-10); alpha: ridge of the columns
    # without a published effect
    "cox_prior": {"model__prior_strength": [0.003, 0.1, 3.0, 100.0], "model__alpha": [30.0, 300.0]},
    # the score's weight in units of its own score-only information (TCIA chose the top of 0.1-10)
    "fong_plus": {"model__anchor_strength": [1.0, 10.0, 100.0], "model__alpha": [30.0, 300.0]},
}


RECORDED_PREFIX = f"{SCORE_PREFIX}column:"  # a score recorded in the cohort: score:column:<field>


def is_score_model(name: str) -> bool:
    return name.startswith(SCORE_PREFIX)


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES and not (name.startswith(RECORDED_PREFIX) and len(name) > len(RECORDED_PREFIX)):
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")


def model_family(name: str) -> str:
    """``"linear"`` (Cox coefficients), ``"tree"`` (tree ensembles), ``"ensemble"`` (an average of zoo models)
    or ``"score"`` (a clinical score)."""
    _check_name(name)
    return "score" if is_score_model(name) else _FAMILIES[name]


def _preprocessor(name: str, blocks: Sequence[str], postoperative: bool, columns_present):
    """The first step: the schema-driven features, plus the literature coding (``cox_prior``) or the reference
    score (``fong_plus``); the literature coding alone (``literature_cox``); canonical rows (``ensemble``)."""
    where: dict[str, Any] = {"blocks": tuple(blocks), "postoperative": postoperative,
             "columns_present": None if columns_present is None else tuple(columns_present)}
    if name == "ensemble":
        return CanonicalRows(**where)
    if name == "literature_cox":
        pre = AugmentedPreprocessor(extra=LiteratureFeatures(**where))
    elif name in ("cox_prior", "fong_plus"):
        extra = LiteratureFeatures(**where) if name == "cox_prior" else ScoreFeature()
        pre = AugmentedPreprocessor(make_preprocessor(blocks, postoperative=postoperative,
                                                      columns_present=columns_present), extra)
    else:
        pre = make_preprocessor(blocks, postoperative=postoperative, columns_present=columns_present)
    return pre.set_output(transform="pandas")  # the model step sees readable feature names


def make_model(name: str, blocks: Sequence[str] = DEFAULT_BLOCKS, postoperative: bool = False,
               columns_present: Sequence[str] | None = None, random_state: int | None = 0,
               endpoint: str | None = None, **params) -> SurvivalPipeline:
    """An unfitted pipeline for a zoo name.

    ``params``: pipeline parameters (``model__alpha=...``, ``preprocess__blocks=...``) or bare parameters of
    the model step (``alpha=...``). ``blocks``, ``postoperative`` and ``columns_present`` go to
    ``crlm.features.make_preprocessor`` (ignored by score models, which read the rows directly). ``endpoint``
    reaches the models whose published effects depend on it (``cox_prior``, ``literature_cox``, ``ensemble``).
    """
    _check_name(name)
    if is_score_model(name):
        score = name[len(SCORE_PREFIX):]
        pipe = SurvivalPipeline([(PREPROCESS_STEP, ScoreInputs((score,))), (MODEL_STEP, ScoreCoxModel(score=score))])
    else:
        step = _FACTORIES[name](random_state)
        if isinstance(step, Ensemble):
            step.set_params(blocks=tuple(blocks), postoperative=postoperative)
        pipe = SurvivalPipeline([(PREPROCESS_STEP, _preprocessor(name, blocks, postoperative, columns_present)),
                                 (MODEL_STEP, step)])
        set_endpoint(pipe, endpoint)
    step_params = {k: v for k, v in params.items() if "__" not in k}
    pipe.set_params(**{f"{MODEL_STEP}__{k}": v for k, v in step_params.items()},
                    **{k: v for k, v in params.items() if "__" in k})
    return pipe


def set_endpoint(pipe: SurvivalPipeline, endpoint: str | None) -> SurvivalPipeline:
    """Tell the model step the endpoint when it needs it (the literature models); others are unchanged."""
    step = getattr(pipe, "named_steps", {}).get(MODEL_STEP)  # custom factories may return other estimators
    if endpoint is not None and step is not None and "endpoint" in step.get_params(deep=False):
        step.set_params(endpoint=endpoint)
    return pipe
