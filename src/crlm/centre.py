"""Recalibration of a registered model for a new centre (``crlm recalibrate``).

The model's risk ranking is kept (the fitted pipeline, its bootstrap refits and its risk score are untouched);
only its calibration is refitted to the centre: a second per-time map (``crlm.recalibration.Recalibrator``)
applied after the model's own. ``baseline`` refits the baseline hazard only (one factor on every patient's
predicted cumulative hazard per time: calibration-in-the-large); ``baseline_slope`` also refits the
calibration slope (needs more events); ``auto`` takes the slope when the centre has at least
``SLOPE_MIN_EVENTS`` events. As in PLATO's ``5_recalibration.R``, the update is judged on the centre's own
patients, here on held-out folds: K-fold, the map fitted on K-1 folds and applied to the held-out fold; ICI and
O/E before and after are computed on each held-out fold alone (pooling the folds would judge each map partly on
the patients it was fitted to) and averaged; Harrell's C of the risk score before and after on all patients.
The recalibrated model is registered as ``crlm-<centre>-<endpoint>`` with lineage to the source model and
version, and ``@champion`` moves to it only when the held-out ICI fell on average over the horizons.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from crlm.cohort.base import Cohort
from crlm.evaluation.calibration import calibration_in_the_large, ici
from crlm.evaluation.metrics import harrell_c, usable_horizons
from crlm.external import ModelSource, ici_noise_floor, predict_survival
from crlm.model_metadata import LEGACY_REGISTRATION_KEYS, ModelMetadata, Registration
from crlm.paths import project_root
from crlm.predictor import Predictor
from crlm.recalibration import Recalibrator, SurvivalMap
from crlm.reporting.card_markdown import markdown_to_html

SLOPE_MIN_EVENTS = 100
METHODS = ("auto", "baseline", "baseline_slope")


class ChainedRecalibrator:
    """The source model's recalibration followed by the centre's (both per-time maps at the same times)."""

    def __init__(self, first: SurvivalMap, second: Recalibrator):
        self.first, self.second = first, second
        self.times = first.times

    @property
    def active(self) -> bool:
        return self.first.active or self.second.active

    def apply(self, surv: np.ndarray) -> np.ndarray:
        return self.second.apply(self.first.apply(surv))


@dataclass
class CentreRecalibration:
    predictor: Predictor  # the recalibrated model
    method: str
    held_out: pd.DataFrame  # per horizon: ICI, O/E before and after on held-out folds
    c_before: float
    c_after: float
    improved: bool
    n: int
    events: int
    folds: int
    registered_name: str = ""  # the centre's model in the registry, ``crlm-<centre>-<endpoint>``


def _method(method: str, events: int) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        return "baseline_slope" if events >= SLOPE_MIN_EVENTS else "baseline"
    return method


def recalibrate_for_centre(predictor: Predictor, cohort: Cohort, centre: str, source: ModelSource, *,
                           method: str = "auto", folds: int = 5, seed: int = 0) -> CentreRecalibration:
    """Refit the model's calibration to a centre's cohort, judged on held-out folds.

    Parameters
    ----------
    predictor : Predictor
        The source model (not changed).
    cohort : Cohort
        The centre's labelled cohort.
    centre : str
        The centre's name (``crlm-<centre>-<endpoint>``).
    source : ModelSource
        Lineage of the source model.
    method : str
        ``auto``, ``baseline`` or ``baseline_slope`` (module docstring).
    folds : int
        Held-out folds for the judgement.
    seed : int
        Fold assignment.

    Returns
    -------
    CentreRecalibration
    """
    population = cohort.with_outcome(predictor.endpoint)
    y = population.y(predictor.endpoint)
    events = int(y["event"].sum())
    if len(y) < 4 * folds or events < 2 * folds:
        raise ValueError(f"cohort {cohort.name!r}: {len(y)} patients with {events} {predictor.endpoint} events "
                         f"are too few to recalibrate and judge it on {folds} held-out folds")
    chosen = _method(method, events)
    risk, surv, times = predict_survival(predictor, population.data)
    horizons = usable_horizons(y, y, [h for h in predictor.horizons if np.isclose(times, h).any()])
    per_fold = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(surv, y["event"]):
        fold_map = Recalibrator.fit(y[train], surv[train], times, method=chosen)
        after = fold_map.apply(surv[test])
        for h in horizons:  # each fold judged alone: its patients never informed its map
            j = int(np.argmin(np.abs(times - h)))
            with contextlib.suppress(ValueError):  # a fold without an event by h cannot judge h
                per_fold.append({"horizon": h, "ici_before": ici(y[test], surv[test, j], h)["ici"],
                                 "ici_after": ici(y[test], after[:, j], h)["ici"],
                                 "oe_before": calibration_in_the_large(y[test], surv[test, j], h),
                                 "oe_after": calibration_in_the_large(y[test], after[:, j], h),
                                 # what a perfectly calibrated model shows on a fold this size
                                 "ici_noise_floor": ici_noise_floor(y[test], after, times, h, n_sim=20,
                                                                    seed=seed)[0]})
    rows = pd.DataFrame(per_fold).groupby("horizon", as_index=False).mean()
    held_out = rows
    improved = bool(held_out.ici_after.mean() < held_out.ici_before.mean())
    centre_map = Recalibrator.fit(y, surv, times, method=chosen)
    new = copy.copy(predictor)
    new.recalibrator = ChainedRecalibrator(predictor.recalibrator, centre_map)
    if predictor.replicates is not None:  # the confidence band's replicates get the centre's map too
        new.replicates = copy.copy(predictor.replicates)
        new.replicates.recalibrators = [ChainedRecalibrator(r, centre_map)
                                        for r in predictor.replicates.recalibrators]
    name = f"crlm-{centre}-{predictor.endpoint}"
    source_document = {k: v for k, v in predictor.metadata.to_dict().items()
                       if k not in LEGACY_REGISTRATION_KEYS}  # an old source bundle's own registry identity
    new.metadata = ModelMetadata.from_dict(source_document).replace(
        cohort=f"{predictor.metadata.cohort} (recalibrated for {centre})", recalibrated_for=centre,
        recalibration_cohort=cohort.name, recalibration_cohort_patients=len(y), recalibration_cohort_events=events,
        recalibration_method=chosen, source_model=source.name, source_version=source.version,
        source_uri=source.uri, recalibration_held_out=held_out.to_dict(orient="records"),
        recalibration_centre=(f"{chosen.replace('_', ' and ')} refitted per time on {len(y)} patients of "
                              f"{centre} ({events} events), after the source model's own calibration; the "
                              "risk ranking is the source model's"),
        model_card=None)
    c_after = harrell_c(y, predict_survival(new, population.data)[0])  # the served risk score, recomputed
    return CentreRecalibration(new, chosen, held_out, harrell_c(y, risk), c_after, improved, len(y), events, folds,
                               name)


def model_card(rec: CentreRecalibration) -> str:
    """A model card of the recalibrated model: what was refitted, why, and how it was judged."""
    m = rec.predictor.metadata
    lines = [f"# Model card: {rec.registered_name} (recalibrated for {m['recalibrated_for']})", "",
             f"Source model: `{m.get('source_model')}` version {m.get('source_version')} ({m.get('source_uri')}), "
             f"a {m.get('model_name')} model of {m.get('endpoint_description', m.get('endpoint'))} trained on "
             f"{m.get('patients')} patients of {str(m.get('cohort')).split(' (recalibrated')[0]}.", "",
             "## What was refitted and why", "",
             f"- Refitted: the {rec.method.replace('_', ' and ')} of the predicted survival at each time, on "
             f"{rec.n} patients ({rec.events} events) of the centre's cohort `{m['recalibration_cohort']}`. "
             "A model moved to a new centre usually ranks patients about as well but its absolute risks follow "
             "the old centre's baseline; updating calibration fixes that with far fewer events than refitting.",
             "- Kept: the model, its features, its risk score and ranking, its intervals' bootstrap refits, its "
             "explanations and the source model's own recalibration (applied first).",
             f"- Method rule: `auto` refits the slope only with at least {SLOPE_MIN_EVENTS} events; "
             "otherwise the baseline only.", "",
             f"## Judged on held-out patients ({rec.folds}-fold: map fitted on the other folds)", "",
             "Means over the held-out folds; the noise floor is the median ICI a perfectly calibrated model shows "
             "on a fold of this size (an ICI near it is not evidence of miscalibration).", "",
             "| horizon (months) | ICI before | ICI after | ICI noise floor | O/E before | O/E after |",
             "|---|---|---|---|---|---|"]
    for r in rec.held_out.itertuples():
        lines.append(f"| {r.horizon:g} | {r.ici_before:.3f} | {r.ici_after:.3f} | {r.ici_noise_floor:.3f} | "
                     f"{r.oe_before:.2f} | {r.oe_after:.2f} |")
    lines += ["", f"Harrell's C of the risk score on the centre's patients: {rec.c_before:.3f} before, "
              f"{rec.c_after:.3f} after (unchanged by construction).",
              f"Held-out ICI {'fell' if rec.improved else 'did not fall'} on average over the horizons, so the "
              f"`champion` alias {'moves to' if rec.improved else 'is not given to'} this version.", "",
              "Not for clinical use without local validation."]
    return "\n".join(lines) + "\n"


def register(rec: CentreRecalibration, cohort: Cohort) -> tuple[str, str]:
    """Log the recalibrated model (models-from-code pyfunc), register it with lineage, export its bundle;
    ``@champion`` only when the held-out ICI fell. Returns (registered name, version)."""
    # deferred: MLflow loads only when a recalibration is registered (recalibrate_for_centre does not need it)
    import mlflow

    from crlm import tracking

    predictor, meta = rec.predictor, rec.predictor.metadata
    name = rec.registered_name
    tracking.setup(name)
    card = model_card(rec)
    with mlflow.start_run(run_name=f"recalibrate {meta.get('source_model')} v{meta.get('source_version')} for "
                                   f"{meta['recalibrated_for']}") as run:
        mlflow.set_tags({"crlm_role": "recalibration", "crlm_source_model": str(meta.get("source_model")),
                         "crlm_source_version": str(meta.get("source_version")),
                         "crlm_centre": meta["recalibrated_for"], "crlm_method": rec.method})
        mlflow.log_metrics({f"{k}_{r['horizon']:g}": float(r[k]) for r in meta["recalibration_held_out"]
                            for k in ("ici_before", "ici_after", "ici_noise_floor", "oe_before", "oe_after")}
                           | {"harrell_c_before": rec.c_before, "harrell_c_after": rec.c_after})
        mlflow.log_text(card, "model_card/model_card.md")
        predictor.metadata = predictor.metadata.replace(model_card=card)  # the registry's copy and the bundle's
        info = tracking.log_predictor(predictor, tracking.input_example(cohort.data))
        version = tracking.register(info.model_uri, name, {
            "source_model": str(meta.get("source_model")), "source_version": str(meta.get("source_version")),
            "centre": meta["recalibrated_for"], "recalibration_run_id": run.info.run_id,
            "method": rec.method})
        if rec.improved:
            tracking.set_aliases(name, version, None)
    export_bundle(predictor, (card, markdown_to_html(card, f"Model card: {name}")), project_root() / "models" / name,
                  Registration(name, version, "champion" if rec.improved else None))
    return name, version


def export_bundle(predictor, card, target: Path, registration: Registration | None = None) -> Path:
    """Write a Predictor bundle (its model card: (markdown, html), and its ``registration.json`` when registered)
    beside ``target``, then swap it in: the old bundle is moved aside before the new one takes its name, so a
    reader never finds half a bundle."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    predictor.save(staging)
    if registration is not None:
        registration.write(staging)
    if card:
        (staging / "model_card.md").write_text(card[0])
        (staging / "model_card.html").write_text(card[1])
    old = None
    if target.is_symlink() or target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        if old.is_symlink() or old.is_file():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    return target
