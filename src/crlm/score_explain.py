"""Explanations of a served clinical score (the reference score as champion): the score's own points.

Each factor of the score contributes its points times the Cox model's log hazard ratio per point, relative to
the training cohort's mean points for that factor (so, as for the learned models, positive = raises the risk
against the average patient). A recorded total (``fong_score_recorded``) has one "factor", the total itself;
where the recorded total is missing and the score is computed from the fields (the ``fallback``), the
computed score's factors explain it.
"""

from __future__ import annotations

__all__ = ["ScoreExplainer"]


import numpy as np
import pandas as pd

from crlm.answer import Contribution, direction_of
from crlm.explain import EVENT_WORDS, value_text
from crlm.models import final_estimator
from crlm.schema import FIELDS_BY_NAME
from crlm.scores import SCORES, compute_score


class ScoreExplainer:
    """The ``Explainer`` interface (``method``, ``features``, ``field_names``, ``feature_contributions``,
    ``explain``) for a ``ScoreCoxModel`` pipeline."""

    def __init__(self, model, Z_train: pd.DataFrame, endpoint: str):
        est = final_estimator(model)
        self.features = list(Z_train.columns)
        self.endpoint = endpoint
        self.coef = float(est.coef_[0])  # log hazard ratio per score point
        self.names = [n for n in (est.score, est.fallback) if n and n in SCORES]
        self.factors = {n: [f.name for f in SCORES[n].factors] for n in self.names}
        self.field_of = {(n, f.name): f.fields[0] for n in self.names for f in SCORES[n].factors}
        self.field_names = list(dict.fromkeys(self.field_of.values()))
        self.mean = {n: compute_score(n, Z_train)[self.factors[n]].mean(axis=0) for n in self.names}
        labels = " or ".join(SCORES[n].label for n in self.names)
        self.method = (f"the score's points ({labels}) x the Cox model's log hazard ratio per point "
                       f"({self.coef:.3f}), relative to the training cohort's mean points")

    def _per_row(self, Z: pd.DataFrame):
        """For each row: which score answered it and its factor points."""
        tables = {n: compute_score(n, Z) for n in self.names}
        for i in range(len(Z)):
            for n in self.names:
                if np.isfinite(tables[n]["total"].iloc[i]):
                    yield n, tables[n][self.factors[n]].iloc[i]
                    break
            else:
                yield None, None

    def feature_contributions(self, Z: pd.DataFrame) -> np.ndarray:
        """(n, n_fields) contributions on the log-hazard scale (0 where no score could be computed)."""
        out = np.zeros((len(Z), len(self.field_names)))
        for i, (name, points) in enumerate(self._per_row(Z)):
            if name is None:
                continue
            for factor, value in points.items():
                k = self.field_names.index(self.field_of[(name, factor)])
                out[i, k] += self.coef * (float(value) - float(self.mean[name][factor]))
        return out

    def explain(self, Z: pd.DataFrame, rows: list[dict], top: int = 6) -> list[list[Contribution]]:
        """Per patient: each factor's points and what they do to the risk, largest effect first."""
        event = EVENT_WORDS.get(self.endpoint, "the event")
        answers = []
        for (name, points), row in zip(self._per_row(Z), rows, strict=True):
            items: list[Contribution] = []
            if name is not None:
                for factor, value in points.items():
                    field = self.field_of[(name, factor)]
                    size = self.coef * (float(value) - float(self.mean[name][factor]))
                    f = FIELDS_BY_NAME.get(field)
                    label = f.label if f else field.replace("_", " ")
                    text = value_text(field, row.get(field), row)
                    direction = direction_of(size)
                    items.append({"field": field, "label": label, "value_text": text,
                                  "value": None if text.startswith("unknown (") else row.get(field),
                                  "direction": direction, "size": size, "points": float(value),
                                  "sentence": f"{label} {text}: {float(value):g} {SCORES[name].label} "
                                              f"point(s), which {direction} the risk of {event}"})
            items.sort(key=lambda d: -abs(d["size"]))
            answers.append(items[:top])
        return answers
