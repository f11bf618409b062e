"""The model card of a registered champion, in the spirit of TRIPOD+AI (Collins et al. BMJ 2024;385:e078378).

``build_model_card`` writes one Markdown document from what the pipeline already knows (the Predictor's
``ModelMetadata``, the benchmark that selected it and the subgroup table of ``crlm.evaluation.subgroups``) and
converts it to a self-contained HTML page (``crlm.reporting.card_markdown``). Nothing in the card is typed by hand:
every number is read from those objects, so the card cannot drift from the model; a dataset's own limitations
are the caveats its mapping declares (``Cohort.caveats``). The sections live in ``card_sections`` (what the model
is and how it was built) and ``card_results`` (how well it did). The TRIPOD+AI item numbers at the end are
paraphrased (``shared/references/software.md`` section 5); check the exact wording against the official checklist.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from crlm.cohort_kind import DEMONSTRATION_LABEL
from crlm.evaluation.benchmark import ORACLE, BenchmarkResult
from crlm.evaluation.plots import model_label
from crlm.model_metadata import ModelMetadata
from crlm.models import final_estimator, make_model
from crlm.reporting.card_markdown import markdown_to_html
from crlm.reporting.card_results import ResultSections
from crlm.reporting.card_sections import DescriptionSections
from crlm.reporting.formatting import MISSING_TEXT, headline_horizon
from crlm.schema import endpoint

SECTION_TITLES = (
    "Intended use", "Data source", "Participants and events", "Outcome and horizons", "Predictors",
    "Missing data", "Model", "Validation method", "Model selection", "Performance",
    "Comparison with the reference", "Calibration", "Subgroups", "Feature-block ablation",
    "Explanations, intervals and output", "Limitations", "Obtaining predictions",
    "Software and reproducibility", "TRIPOD+AI checklist",
)


def build_model_card(predictor_metadata: ModelMetadata | Mapping, res: BenchmarkResult, champion: str, subgroups: pd.DataFrame,
                     *, registered_name: str, version: str | None, selection_rule: str) -> tuple[str, str]:
    """The model card as (markdown, html).

    Parameters
    ----------
    predictor_metadata : ModelMetadata or mapping
        ``Predictor.metadata``.
    res : BenchmarkResult
        The benchmark that selected ``champion`` (a learned model or the reference score in ``res.oof``,
        ``crlm.selection``).
    champion : str
    subgroups : pandas.DataFrame
        The table of ``crlm.evaluation.subgroups.subgroup_performance``.
    registered_name, version, selection_rule : str
        The registry name and version the card is written for (``version`` None: an unregistered build) and the
        champion rule in words.

    Returns
    -------
    (str, str)
        Markdown and the self-contained HTML page.

    Raises
    ------
    ValueError
        A predictor and a benchmark of different models, endpoints or cohorts (the card would mix two models).
    """
    meta = ModelMetadata.coerce(predictor_metadata)
    if champion not in res.oof:
        raise ValueError(f"champion {champion!r} is not in the benchmark; it has {', '.join(res.oof)}")
    if champion == ORACLE:
        raise ValueError(f"champion {champion!r} must be a learned model or the reference score, not the oracle")
    checks = (("model_name", champion), ("endpoint", endpoint(res.spec.endpoint).name), ("cohort", res.cohort_name))
    for key, expected in checks:
        if key in meta and meta[key] != expected:
            raise ValueError(f"predictor metadata has {key} = {meta[key]!r} but the benchmark's is "
                             f"{expected!r}: the card would describe two different models")
    card = _Card(meta, res, champion, subgroups, registered_name, version, selection_rule)
    markdown = card.markdown()
    return markdown, markdown_to_html(markdown, title=card.title)


def headline_lines(meta: ModelMetadata | Mapping) -> list[str]:
    """The shipped model's headline (optimism-corrected) and, when the reference score is the champion, why.

    Parameters
    ----------
    meta : ModelMetadata or mapping
        ``Predictor.metadata``.

    Returns
    -------
    list of str
        Markdown lines (none when the metadata has neither a verdict nor a headline).
    """
    lines = []
    verdict = meta.get("champion_verdict")
    if verdict:
        lines += [f"**Champion decision:** {verdict}", ""]
    head = meta.get("headline")
    if head:
        parts = [f"{name} {head[key]['corrected']:.3f} (apparent {head[key]['apparent']:.3f}, optimism "
                 f"{head[key]['optimism']:.3f})" for key, name in
                 [("harrell_c", "Harrell's C"), ("uno_c", "Uno's C"), ("ibs", "IBS"),
                  *[(k, f"ICI at {k.removeprefix('ici_')} months") for k in head if k.startswith("ici_")]]
                 if isinstance(head.get(key), dict)]
        lines += [f"**Headline, the shipped model:** {head['label']}, {head['n_boot']} bootstrap refits on "
                  f"{head['patients']} patients: " + "; ".join(parts) + ". The benchmark tables below are "
                  "nested cross-validation, the comparison between models.", ""]
    return lines


class _Card(DescriptionSections, ResultSections):
    """One card: the inputs, what the sections share, and the document in section order."""

    def __init__(self, meta: ModelMetadata, res: BenchmarkResult, champion: str, subgroups: pd.DataFrame,
                 registered_name: str, version: str | None, selection_rule: str):
        self.meta, self.res, self.champion, self.subgroups = meta, res, champion, subgroups
        self.registered_name, self.version, self.selection_rule = registered_name, version, selection_rule
        self.spec = res.spec
        self.ep = endpoint(meta.endpoint or res.spec.endpoint)
        pop = res.population
        # declared, not guessed from the cohort's text: the simulator's truth, the cohort's and mapping's caveats
        self.simulated = pop.truth is not None or bool(meta.simulated)
        self.caveats = list(pop.caveats or meta.caveats or [])
        self.ref = self.spec.reference if self.spec.reference in res.oof else None
        self.ref_label = model_label(self.ref) if self.ref else "the reference score"
        self.h_cal = headline_horizon(res.horizons)
        self.fields = list(meta.fields_used or [])
        self.label = model_label(champion)
        self.version_text = f"version {version}" if version else "unregistered local build"
        self.title = f"Model card: {registered_name} ({self.version_text})"
        self.model_params = self._model_params()

    # ---------------------------------------------------------------- helpers

    def _model_params(self) -> dict:
        """The final estimator's settings as the registered predictor builds them (defaults + params)."""
        try:
            est = final_estimator(make_model(self.champion, endpoint=self.meta.get("endpoint"),
                                             **dict(self.meta.get("params") or {})))
        except (ValueError, TypeError):
            return {}
        return {k: v for k, v in est.get_params(deep=False).items()
                if v is None or isinstance(v, int | float | str | bool)}

    # ---------------------------------------------------------------- the document

    def markdown(self) -> str:
        sections = [self._intended_use, self._data_source, self._participants, self._outcome,
                    self._predictors, self._missing, self._model, self._validation, self._selection,
                    self._performance, self._comparison, self._calibration, self._subgroups, self._ablation,
                    self._explanations, self._limitations, self._obtaining, self._software, self._checklist]
        parts = [self._header()]
        for number, (title, section) in enumerate(zip(SECTION_TITLES, sections, strict=True), start=1):
            parts.append(f"## {number}. {title}\n\n" + "\n".join(section()).rstrip() + "\n")
        return "\n".join(parts)

    def _header(self) -> str:
        against = f"{self.ref_label} (`{self.ref}`)" if self.ref else "no reference score"
        lines = [f"# {self.title}", "",
                 f"**{self.ep.description.capitalize()}** after liver resection for colorectal liver "
                 f"metastases: {self.label} (`{self.champion}`), trained on the `{self.res.population.name}` "
                 f"cohort and benchmarked against {against}. Generated from the predictor's metadata "
                 f"(created {self.meta.get('created_at', MISSING_TEXT)}) and the benchmark results.", ""]
        if self.simulated:
            lines += [f"> **{DEMONSTRATION_LABEL.capitalize()}.** This model was trained and evaluated on a simulated cohort (no "
                      "real patients). It demonstrates the software; it is not a clinical model.", ""]
        return "\n".join(lines + headline_lines(self.meta))
