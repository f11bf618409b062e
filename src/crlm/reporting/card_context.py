"""What the model card's sections share: the inputs of ``crlm.reporting.model_card._Card`` and the values derived
from them once, declared here so that the section mixins (``card_sections``, ``card_results``) are typed against
them, plus the few helpers both kinds of section use."""

from __future__ import annotations

import pandas as pd

from crlm.evaluation.benchmark import ORACLE, BenchmarkResult
from crlm.evaluation.benchmark_result import BenchmarkSpec
from crlm.model_metadata import ModelMetadata
from crlm.reporting.formatting import MISSING_TEXT, format_estimate
from crlm.schema import Endpoint


class CardContext:
    """The attributes ``_Card.__init__`` sets (declared, not assigned here) and the helpers built on them."""

    # the inputs of ``build_model_card``
    meta: ModelMetadata
    res: BenchmarkResult
    champion: str
    subgroups: pd.DataFrame
    registered_name: str
    version: str | None
    selection_rule: str
    # derived once
    spec: BenchmarkSpec
    ep: Endpoint
    simulated: bool
    caveats: list[str]
    ref: str | None
    ref_label: str
    h_cal: float
    fields: list[str]
    label: str
    version_text: str
    title: str
    model_params: dict

    def _tuned(self) -> dict[str, pd.Series]:
        """The champion's hyperparameters chosen by inner tuning, per outer fold."""
        cp = self.res.chosen_params
        if cp is None or cp.empty or "model" not in cp:
            return {}
        rows = cp[cp.model == self.champion]
        return {c: rows[c].dropna() for c in rows.columns if "__" in c and rows[c].notna().any()}

    def _models(self) -> list[str]:
        return [m for m in (self.champion, self.ref, ORACLE if ORACLE in self.res.oof else None) if m]

    def _metric_text(self, model: str, metric: str, horizon: float | None = None) -> str:
        row = self.res.metric_row(model, metric, horizon)
        return MISSING_TEXT if row is None else format_estimate(row.estimate, row.ci_low, row.ci_high)
