"""The reference a benchmark compares against: whatever the cohort can compute.

``reference`` in a job config is one of
- ``score:<name>``: a published score computed from its factors (``crlm.scores``);
- ``recorded:<field>``: a score column the cohort records, declared in the mapping's ``recorded_scores``
  (its name, label and meaning travel with it); internally the model ``score:column:<field>``;
- ``auto``: the published score computable for the most patients (at least half of them), else the first
  recorded score, else none;
- ``none``: no reference; the models are compared with each other and with Kaplan–Meier (IPA).
A score that cannot be computed is listed with the factors it lacks and how many patients lack them.
"""

from __future__ import annotations

__all__ = ["coverage_table", "fit_spec", "is_valid", "model_name", "recorded_models", "resolve"]

from dataclasses import replace

import pandas as pd

from crlm.cohort.base import Cohort
from crlm.models.zoo import RECORDED_PREFIX, SCORE_PREFIX
from crlm.scores import SCORES, coverage_notes, score_coverage

AUTO, NONE, RECORDED = "auto", "none", "recorded:"


def model_name(reference: str) -> str:
    """The zoo model of a config's reference ("" for none; ``auto`` is resolved by ``resolve``)."""
    if reference in (NONE, ""):
        return ""
    if reference.startswith(RECORDED):
        return RECORDED_PREFIX + reference[len(RECORDED):]
    return reference


def is_valid(reference: str) -> bool:
    """Whether a config value names a reference (existence of a recorded column is checked on the data)."""
    if reference in (AUTO, NONE):
        return True
    if reference.startswith(RECORDED):
        return len(reference) > len(RECORDED)
    return reference.startswith(SCORE_PREFIX) and reference[len(SCORE_PREFIX):] in SCORES


def recorded_models(cohort: Cohort) -> list[str]:
    return [RECORDED_PREFIX + f.name for f in cohort.recorded_scores]


def resolve(reference: str, population: Cohort, baselines: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The reference model for these patients and notes saying how it was chosen.

    Parameters
    ----------
    reference : str
        The config value (see the module docstring).
    population : Cohort
        Patients with the endpoint recorded.
    baselines : tuple of str
        Candidate scores for ``auto``, in order of preference (default: every published score).

    Returns
    -------
    (str, list of str)
        The zoo model name ("" for none) and notes.

    Raises
    ------
    ValueError
        The reference named cannot be computed for any patient (the message names what is missing).
    """
    coverage = score_coverage(population.data)
    n = len(population)
    if reference == AUTO:
        candidates = [b for b in (baselines or [f"{SCORE_PREFIX}{s}" for s in SCORES]) if b.startswith(SCORE_PREFIX)
                      and b[len(SCORE_PREFIX):] in SCORES]
        counts = coverage.set_index("score")["computable"]
        best = max(candidates, key=lambda b: counts[b[len(SCORE_PREFIX):]], default=None)
        if best is not None and counts[best[len(SCORE_PREFIX):]] >= max(1, n / 2):
            return best, [f"reference (auto): {best}, computable for {counts[best[len(SCORE_PREFIX):]]} of {n}"]
        if population.recorded_scores:
            f = population.recorded_scores[0]
            return RECORDED_PREFIX + f.name, [f"reference (auto): the recorded score {f.name} ({f.description})"]
        return "", ["reference (auto): none, as no published score is computable for half the patients and the "
                    "mapping declares no recorded score; models are compared with each other and with "
                    "Kaplan–Meier (IPA)"]
    name = model_name(reference)
    if not name:
        return "", ["no reference: models are compared with each other and with Kaplan–Meier (IPA)"]
    if name.startswith(RECORDED_PREFIX):
        column = name[len(RECORDED_PREFIX):]
        declared = [f.name for f in population.recorded_scores]
        if column not in declared:
            raise ValueError(f"reference {reference!r}: the mapping declares no recorded score {column!r} "
                             f"(declared: {', '.join(declared) or 'none'}); add it under 'recorded_scores' "
                             "in the mapping, or set reference to auto or none")
        known = int(pd.to_numeric(population.data[column], errors="coerce").notna().sum())
        if known == 0:
            raise ValueError(f"reference {reference!r}: the recorded score {column!r} is missing for all {n} "
                             "patients with the outcome")
        return name, []
    row = coverage.set_index("score").loc[name[len(SCORE_PREFIX):]]
    if row["computable"] == 0:
        computable = [f"{SCORE_PREFIX}{r.score}" for r in coverage.itertuples() if r.computable > 0]
        raise ValueError(f"the reference {row['label']} ({name}) cannot be computed for any of the {n} patients "
                         f"with the outcome: lacking {row['lacking']}. Set 'reference' in the job config to a "
                         f"computable score ({', '.join(computable) or 'none is'}), to a recorded score declared "
                         "in the mapping (recorded:<field>), to auto, or to none")
    return name, []


def coverage_table(population: Cohort) -> tuple[pd.DataFrame, list[str]]:
    """Score coverage of the population (``crlm.scores.score_coverage``) and its notes."""
    coverage = score_coverage(population.data)
    return coverage, coverage_notes(coverage)



def fit_spec(spec, cohort: Cohort):
    """A benchmark spec fitted to the cohort: the reference resolved (``auto``, ``recorded:``, ``none``), the
    declared recorded scores added as baselines, the cohort's own fields given to the feature pipelines.

    Returns
    -------
    (BenchmarkSpec, list of str)
        The spec and the notes on the reference.
    """
    notes: list[str] = []
    if spec.reference in (AUTO, NONE) or spec.reference.startswith(RECORDED):
        with_outcome = cohort.with_outcome(spec.endpoint) if len(cohort) else cohort
        resolved, notes = resolve(spec.reference, with_outcome, spec.baselines)
        spec = replace(spec, reference=resolved)
    if cohort.extra_fields and not spec.extra_fields:
        spec = replace(spec, extra_fields=tuple(f for f in cohort.extra_fields if f.block != "score"))
    recorded = [m for m in recorded_models(cohort) if m not in spec.baselines]
    return replace(spec, baselines=(*spec.baselines, *recorded)), notes
