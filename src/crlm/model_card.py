"""The model card of a registered champion, in the spirit of TRIPOD+AI (Collins et al. BMJ 2024;385:e078378).

``build_model_card`` writes one Markdown document from what the pipeline already knows (the Predictor's
metadata, the benchmark that selected it and the subgroup table of ``crlm.evaluation.subgroups``) and
converts it to a self-contained HTML page (inline CSS; the only links are the data citation and licence).
Nothing in the card is typed by hand: every number is read from those objects, so the card cannot drift from
the model. The TRIPOD+AI item numbers at the end are paraphrased (``shared/references/software.md`` §5);
check the exact wording against the official checklist.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sksurv.nonparametric import kaplan_meier_estimator

from crlm.cohort.simulate import ACCRUAL_MONTHS, CLOSING_MONTHS
from crlm.cohort_kind import DEMONSTRATION_LABEL, is_simulated
from crlm.evaluation import decision_curves
from crlm.evaluation.benchmark import ORACLE, BenchmarkResult
from crlm.evaluation.plots import model_label
from crlm.literature_prior import prior_card_lines
from crlm.models import SEARCH_SPACES, final_estimator, make_model, model_family
from crlm.schema import FIELDS_BY_NAME, endpoint

MISSING_TEXT = "n/a"
SECTION_TITLES = (
    "Intended use", "Data source", "Participants and events", "Outcome and horizons", "Predictors",
    "Missing data", "Model", "Validation method", "Model selection", "Performance",
    "Comparison with the reference", "Calibration", "Subgroups", "Feature-block ablation",
    "Explanations, intervals and output", "Limitations", "Obtaining predictions",
    "Software and reproducibility", "TRIPOD+AI checklist",
)
METRIC_LABELS = {"harrell_c": "Harrell's C", "uno_c": "Uno's C", "mean_auc": "mean AUC",
                 "ibs": "integrated Brier score", "ipa_ibs": "IPA (integrated)"}


# ------------------------------------------------------------------------------------------- formatting


def _num(value, digits: int = 3) -> str:
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and np.isnan(value)):
        return MISSING_TEXT
    return f"{float(value):.{digits}f}"


def _with_ci(est, low, high, digits: int = 3) -> str:
    """``0.712 (0.680, 0.745)``: a comma, not a dash, so negative bounds read unambiguously."""
    text = _num(est, digits)
    if text != MISSING_TEXT and low is not None and not pd.isna(low):
        text += f" ({_num(low, digits)}, {_num(high, digits)})"
    return text


def _cell(value) -> str:
    return str(value).replace("\n", " ").replace("|", "\\|")


def _table(headers: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _frame_table(frame: pd.DataFrame) -> list[str]:
    rows = [[_num(v) if isinstance(v, float | np.floating) else v for v in r]
            for r in frame.itertuples(index=False)]
    return _table([str(c) for c in frame.columns], rows)


def _metric(res: BenchmarkResult, model: str, metric: str, horizon: float | None = None):
    m = res.metrics
    if m.empty:
        return None
    sel = (m.model == model) & (m.metric == metric)
    sel &= m.horizon.isna() if horizon is None else np.isclose(m.horizon.astype(float), float(horizon))
    return m[sel].iloc[0] if sel.any() else None


def _metric_text(res: BenchmarkResult, model: str, metric: str, horizon: float | None = None) -> str:
    row = _metric(res, model, metric, horizon)
    return MISSING_TEXT if row is None else _with_ci(row.estimate, row.ci_low, row.ci_high)


def _boot_p(p: float, n_boot: int) -> str:
    if pd.isna(p):
        return MISSING_TEXT
    floor = 2.0 / max(n_boot, 1)  # a bootstrap p-value cannot resolve below ~2 / n_boot
    return f"<{floor:.2g}" if p < floor else f"{p:.2f}"


def _cohort_kind(res: BenchmarkResult) -> str:
    pop = res.population
    text = " ".join([pop.name, pop.source, pop.licence]).lower()
    if pop.truth is not None or is_simulated(text):
        return "simulated"
    return "tcia" if "tcia" in text else "other"


def _median_follow_up(y) -> float:
    """Median follow-up by reverse Kaplan–Meier (censoring as the event)."""
    t, s = kaplan_meier_estimator(~np.asarray(y["event"], bool), np.asarray(y["time"], float))
    below = np.flatnonzero(s <= 0.5)
    return float(t[below[0]]) if len(below) else float("nan")


def _data_digest(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()[:16]


def _same(a, b) -> bool:
    """Equal as numbers when both are (tuned ints come back as floats from a DataFrame), else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _params_text(params: dict) -> str:
    return ", ".join(f"`{k}` = {v}" for k, v in params.items()) if params else "none (the zoo's defaults)"


# ------------------------------------------------------------------------------------------- the card


def build_model_card(predictor_metadata: dict, res: BenchmarkResult, champion: str, subgroups: pd.DataFrame,
                     *, registered_name: str, version: str | None, selection_rule: str) -> tuple[str, str]:
    """The model card as (markdown, html).

    ``predictor_metadata`` is ``Predictor.metadata``; ``res`` the benchmark that selected ``champion`` (a
    learned model or the reference score in ``res.oof``, ``crlm.selection``); ``subgroups`` the table of ``subgroup_performance``. A predictor and a
    benchmark of different models, endpoints or cohorts are refused (the card would mix two models)."""
    meta = dict(predictor_metadata)
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


def headline_lines(meta: dict) -> list[str]:
    """The shipped model's headline (optimism-corrected) and, when the reference score is the champion, why."""
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


class _Card:
    def __init__(self, meta, res, champion, subgroups, registered_name, version, selection_rule):
        self.meta, self.res, self.champion, self.subgroups = meta, res, champion, subgroups
        self.registered_name, self.version, self.selection_rule = registered_name, version, selection_rule
        self.spec = res.spec
        self.ep = endpoint(meta.get("endpoint", res.spec.endpoint))
        self.kind = _cohort_kind(res)
        self.ref = self.spec.reference if self.spec.reference in res.oof else None
        self.ref_label = model_label(self.ref) if self.ref else "the reference score"
        self.h_cal = 36.0 if 36.0 in res.horizons else float(res.horizons[-1])
        self.fields = list(meta.get("fields_used", []))
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

    def _tuned(self) -> dict[str, pd.Series]:
        """The champion's hyperparameters chosen by inner tuning, per outer fold."""
        cp = self.res.chosen_params
        if cp is None or cp.empty or "model" not in cp:
            return {}
        rows = cp[cp.model == self.champion]
        return {c: rows[c].dropna() for c in rows.columns if "__" in c and rows[c].notna().any()}

    def _models(self) -> list[str]:
        return [m for m in (self.champion, self.ref, ORACLE if ORACLE in self.res.oof else None) if m]

    # ---------------------------------------------------------------- sections

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
        if self.kind == "simulated":
            lines += [f"> **{DEMONSTRATION_LABEL.capitalize()}.** This model was trained and evaluated on a simulated cohort (no "
                      "real patients). It demonstrates the software; it is not a clinical model.", ""]
        return "\n".join(lines + headline_lines(self.meta))

    def _intended_use(self) -> list[str]:
        horizons = ", ".join(f"{h:g}" for h in self.meta.get("horizons", self.res.horizons))
        if self.meta.get("postoperative"):
            when = ("after the liver resection (the model uses postoperative pathology and operative "
                    "fields), for follow-up and adjuvant-treatment discussions")
        else:
            when = ("before the liver resection, when the multidisciplinary team decides whether to resect: "
                    "the model uses only fields known preoperatively")
        lines = [
            "- **Who:** hepatobiliary multidisciplinary teams (surgeons, oncologists) caring for adults with "
            "colorectal liver metastases considered for hepatectomy.",
            f"- **When:** {when}.",
            f"- **What it gives:** the probability of {self.ep.description} at {horizons} months after the "
            "resection with 95% confidence intervals of the model's estimate (its estimation uncertainty, not "
            "the range of the patient's outcome), the survival curve, a risk group and per-patient contributions.",
            "- **Associational, not causal:** the model describes how outcomes were associated with patient "
            "characteristics in the development cohort. Its contributions are not treatment effects, and it "
            "must not be used by itself to choose a treatment (e.g. chemotherapy or the extent of "
            "resection).",
            "- **Not for use without local validation:** before any clinical use it must be validated, and "
            "recalibrated if needed, on patients of the centre that uses it. It is decision support, not a "
            "substitute for clinical judgement, and it is not a certified medical device.",
        ]
        if self.kind == "simulated":
            lines.append("- **Synthetic training data:** for demonstration and software testing only; not "
                         "for any clinical use.")
        return lines

    def _data_source(self) -> list[str]:
        pop, m = self.res.population, self.meta
        source = pop.source or m.get("cohort_source", "")
        licence = pop.licence or m.get("licence", "")
        citation = pop.citation or m.get("citation", "")
        lines = [f"- **Cohort:** `{pop.name}`", f"- **Source:** {source or MISSING_TEXT}",
                 f"- **Licence:** {licence or MISSING_TEXT}",
                 f"- **Citation:** {citation or 'none given'}", ""]
        if self.kind == "simulated":
            lines.append(
                "**This cohort is synthetic.** It was generated by crlm's literature-calibrated simulator "
                f"(`{source}`; see docs/SIMULATOR.md): no real patient's data are included. Simulated "
                f"accrual is uniform over {ACCRUAL_MONTHS / 12:g} years with a common closing date (the end "
                f"of follow-up) {CLOSING_MONTHS / 12:g} years after the first entry. The generating model's "
                "true survival is known, which gives the oracle in the performance tables.")
        elif self.kind == "tcia":
            lines += [
                "**Attribution (CC BY 4.0).** Data from The Cancer Imaging Archive (TCIA), "
                "Colorectal-Liver-Metastases collection, used under the Creative Commons Attribution 4.0 "
                f"International licence. Please cite: {citation or 'the TCIA collection and its paper.'}", "",
                "Patients resected at a single centre (Memorial Sloan Kettering Cancer Center). The "
                "released clinical sheets carry no dates of surgery or of the end of follow-up; the data "
                "release dates are those of the source above."]
        else:
            lines.append("Dates of surgery and of the end of follow-up are not recorded in the cohort file; "
                         "state them with the registration.")
        return lines

    def _participants(self) -> list[str]:
        y, m = self.res.y, self.meta
        rows = []
        if "patients" in m:
            rows.append(["predictor training (all patients with the endpoint)", m["patients"],
                         m.get("events", MISSING_TEXT), MISSING_TEXT, _num(m.get("max_follow_up_months"), 1)])
        rows.append([f"benchmark (patients with a computable {self.ref or 'reference'})", len(y),
                     int(y["event"].sum()), _num(_median_follow_up(y), 1), _num(float(np.max(y["time"])), 1)])
        lines = ["Follow-up in months; median follow-up by reverse Kaplan–Meier.", ""]
        lines += _table(["analysis set", "patients", "events", "median follow-up", "maximum follow-up"], rows)
        by_h = [[f"{h:g}", int((y["event"] & (y["time"] <= h)).sum()), int((y["time"] > h).sum())]
                for h in self.res.horizons]
        lines += ["Benchmark population at each horizon:", ""]
        lines += _table(["horizon (months)", "events by the horizon", "still followed after it"], by_h)
        if self.res.notes:
            lines += ["Exclusions and notes:", ""] + [f"- {n}" for n in self.res.notes] + [""]
        return lines

    def _outcome(self) -> list[str]:
        time_f, event_f = FIELDS_BY_NAME.get(self.ep.time), FIELDS_BY_NAME.get(self.ep.event)
        tau = _metric(self.res, self.champion, "uno_tau")
        tau_text = _num(tau.estimate, 0) if tau is not None else MISSING_TEXT
        return [
            f"- **Endpoint:** `{self.ep.name}`, {self.ep.description}; event = "
            f"{self.meta.get('event', 'event')}.",
            f"- **Time:** `{self.ep.time}`: {time_f.description if time_f else ''} Months.",
            f"- **Event indicator:** `{self.ep.event}`: {event_f.description if event_f else ''}",
            "- **Prediction horizons (predictor):** "
            + ", ".join(f"{h:g}" for h in self.meta.get("horizons", [])) + " months.",
            "- **Horizons evaluated (benchmark):** " + ", ".join(f"{h:g}" for h in self.res.horizons)
            + f" months; Uno's C truncated at tau = {tau_text} months; calibration summarised at "
            f"{self.h_cal:g} months.",
        ]

    def _predictors(self) -> list[str]:
        data = self.res.population.data
        rows, unknown = [], []
        own = {f["name"]: f for f in self.meta.get("extra_fields", [])}
        for name in self.fields:
            f = FIELDS_BY_NAME.get(name)
            if f is None and name in own:
                e = own[name]
                rows.append([f"`{name}`", f"{name} (this centre's field)", e["block"], e["timing"], e["kind"],
                             e.get("unit") or "", "", "", e["description"]])
                continue
            if f is None:
                unknown.append(name)
                continue
            if name in data:
                col = data[name]
                missing = col.isna() | ((col.astype(object) == "unknown") if f.block == "genomic" else False)
                miss = f"{100 * float(missing.mean()):.0f}%"
            else:
                miss = "absent"
            rows.append([f"`{name}`", f.label, f.block, f.timing, f.kind, f.unit or "", miss,
                         "yes" if f.required_for_prediction else "", f.description])
        post = [r[0] for r in rows if r[3] != "preoperative"]
        blocks = ", ".join(self.meta.get("feature_blocks", self.spec.blocks))
        timing = "postoperative model" if self.meta.get("postoperative") else "preoperative model"
        lines = [f"{len(self.fields)} fields from the blocks {blocks} ({timing}). Timing and block come from "
                 "the schema (`crlm.schema`). Missing is the share of the benchmark population without the "
                 "value (for genomic markers: missing or `unknown`).", ""]
        lines += _table(["field", "label", "block", "timing", "type", "unit", "missing", "required",
                         "description"], rows)
        lines.append("The feature pipeline adds the Tumour Burden Score sqrt(largest size^2 + number^2) from "
                     "`largest_metastasis_cm` and `n_liver_metastases`.")
        if post and not self.meta.get("postoperative"):
            lines.append(f"Warning: non-preoperative fields in a preoperative model: {', '.join(post)}.")
        if unknown:
            lines.append(f"Fields not in the schema: {', '.join(unknown)}.")
        return lines

    def _missing(self) -> list[str]:
        return [
            "- Inside the cross-validation pipeline (fitted on each training part only, so no test patient "
            "informs it): numbers get median imputation plus a missing indicator; yes/no fields get 0 plus a "
            "missing indicator; other categories get their own `missing` level.",
            "- Genomic markers (KRAS, NRAS, BRAF, PIK3CA, RAS, MMR): `unknown` is its own level and a "
            "missing marker is `unknown` (not tested is information, not an error).",
            "- Fields absent from the training data, entirely missing or constant are dropped at fit.",
            "- At prediction time missing optional inputs are imputed the same way and each one produces a "
            "warning in the answer; values outside the training range produce an extrapolation warning; the "
            "API refuses a patient without a required field (table above).",
            f"- Patients without the outcome, or without a computable {self.ref or 'reference score'}, are "
            "excluded from the benchmark (see Participants and events).",
        ]

    def _model(self) -> list[str]:
        family = model_family(self.champion)
        estimator = type(final_estimator(make_model(self.champion))).__name__
        params = _params_text(self.meta.get("params") or {})
        lines = [f"- **Model:** {self.label} (`{self.champion}`, {family} family, estimator `{estimator}`) "
                 "in a pipeline: schema-driven preprocessing, then the survival model.",
                 f"- **Hyperparameters given to the registered predictor:** {params}.", ""]
        if self.model_params:
            lines += ["Final estimator settings of the registered predictor:", ""]
            lines += _table(["parameter", "value"], [[f"`{k}`", v] for k, v in self.model_params.items()])
        grid = (self.spec.search_spaces or {}).get(self.champion, SEARCH_SPACES.get(self.champion, {}))
        if grid and self.spec.tune:
            lines.append("- **Benchmark tuning grid:** "
                         + "; ".join(f"`{k}` in {v}" for k, v in grid.items()) + ".")
        for key, values in self._tuned().items():
            counts = values.astype(str).value_counts()
            lines.append(f"- **Chosen by inner tuning (`{key}`):** " + ", ".join(
                f"{v} ({c} of {len(values)} outer folds)" for v, c in counts.items()) + ".")
        lines.append("- **Recalibration and intervals:** see Calibration and Explanations, intervals and "
                     "output.")
        return lines + prior_card_lines(self.champion, self.meta.get("endpoint", "os"),
                                        bool(self.meta.get("postoperative")))

    def _validation(self) -> list[str]:
        s = self.spec
        inner = (f"{s.inner_splits}-fold grid search on the outer training part only, tuning criterion "
                 "Harrell's C." if s.tune else "tuning disabled (fixed hyperparameters).")
        return [
            f"- **Internal validation:** nested resampling. Outer loop: {s.outer_repeats} repeat(s) x "
            f"{s.outer_splits}-fold cross-validation stratified by event; every patient is predicted once "
            f"per repeat by a model that never saw them (out-of-fold predictions). Inner loop: {inner}",
            "- **Point estimates:** metrics of the out-of-fold predictions of each repeat, averaged over "
            "repeats. IPCW metrics use the censoring distribution of the whole benchmark population "
            "(outcomes only).",
            f"- **Intervals:** 95% bootstrap over patients ({s.n_boot} resamples, stratified by event; "
            "percentile interval recentred on the estimate, so every estimate lies inside); every model is "
            "re-evaluated on the same resamples, so differences against the reference "
            "are paired. Models are not refitted inside the bootstrap.",
            f"- **Seed:** {s.seed}. **Feature blocks:** {', '.join(s.blocks)}"
            + (" + postoperative" if s.postoperative else "") + ".",
            "- **Registered predictor:** refitted on all patients with the endpoint; its recalibration map "
            "is fitted on 5-fold out-of-fold predictions and judged by ICI before and after on the same "
            "held-out halves (see Calibration). Its headline is optimism-corrected (see the top of this card).",
        ]

    def _selection(self) -> list[str]:
        comp = self.res.comparisons
        rows = []
        for _, r in self.res.leaderboard().iterrows():
            sel = (comp.model == r.model) & (comp.metric == "harrell_c") if not comp.empty else None
            if r.model == self.ref:
                delta = "reference"
            elif sel is None or not sel.any():
                delta = MISSING_TEXT
            else:
                c = comp[sel].iloc[0]
                delta = _with_ci(c.delta, c.ci_low, c.ci_high)
            name = model_label(r.model)
            name = f"**{name}** (champion)" if r.model == self.champion else name
            metrics = [_metric_text(self.res, r.model, k) for k in ("harrell_c", "uno_c", "ibs")]
            rows.append([name, f"`{r.model}`", r.kind, int(r.n), *metrics, delta])
        lines = [f"Selection rule: {self.selection_rule}", "",
                 "All candidates of the benchmark (estimate and 95% interval):", ""]
        return lines + _table(["model", "name", "kind", "n", "Harrell C", "Uno C", "IBS",
                               f"difference in Harrell C vs {self.ref_label}"], rows)

    def _performance(self) -> list[str]:
        models, hs = self._models(), self.res.horizons
        tau = _metric(self.res, self.champion, "uno_tau")
        tau_text = f"tau = {_num(tau.estimate, 0)} months" if tau is not None else "tau = last horizon"
        spec_rows = [("Harrell's C", "harrell_c", None), (f"Uno's C ({tau_text})", "uno_c", None),
                     ("mean time-dependent AUC", "mean_auc", None)]
        spec_rows += [(f"AUC at {h:g} months", "auc", h) for h in hs]
        spec_rows += [("integrated Brier score (lower is better)", "ibs", None),
                      ("IPA (integrated)", "ipa_ibs", None)]
        spec_rows += [(f"ICI at {h:g} months (lower is better)", "ici", h) for h in hs]
        spec_rows += [(f"O/E at {h:g} months (1 = calibrated)", "oe", h) for h in hs]
        spec_rows += [(f"calibration slope at {h:g} months (no interval)", "slope", h) for h in hs]
        rows = [[label] + [_metric_text(self.res, m, metric, h) for m in models]
                for label, metric, h in spec_rows]
        rows.append(["patients evaluated"] + [str(int(self.res.oof[m].valid.sum())) for m in models])
        roles = {self.champion: " (champion)", self.ref: " (reference)"}
        headers = ["metric"] + [model_label(m) + roles.get(m, "") for m in models]
        oracle = (" The oracle is the true generating model of the simulation: the ceiling no model can beat."
                  if ORACLE in models else "")
        lines = ["Out-of-fold performance in the benchmark, estimate (95% interval). The learned model's "
                 "survival probabilities here are before the registered predictor's recalibration."
                 + oracle, ""]
        return lines + _table(headers, rows)

    def _comparison(self) -> list[str]:
        return self._paired_comparison() + _decision_curve_lines(self.res, self.champion)

    def _paired_comparison(self) -> list[str]:
        comp = self.res.comparisons
        if not self.ref or comp.empty:
            return ["No paired comparison with a reference score in this benchmark (reference: "
                    f"{self.meta.get('reference', 'none')}; models are compared with Kaplan–Meier through IPA)."]
        rows = []
        for model in [m for m in self._models() if m != self.ref]:
            for _, r in comp[comp.model == model].iterrows():
                rows.append([model_label(model), METRIC_LABELS.get(r.metric, r.metric),
                             _with_ci(r.delta, r.ci_low, r.ci_high), _boot_p(r.get("p_holm", r.p_value), self.spec.n_boot),
                             "yes" if bool(r.better_than_reference) else "no", int(r.n)])
        lines = [f"Paired differences model - {self.ref_label} (`{self.ref}`) on identical patients and "
                 "identical bootstrap resamples (for the integrated Brier score a negative difference is "
                 "better). Better = the 95% interval excludes 0 in the model's favour.", ""]
        return lines + _table(["model", "metric", "difference (95% interval)", "bootstrap p (Holm)", "better", "n"],
                              rows)

    def _calibration(self) -> list[str]:
        m = self.meta
        cal = m.get("calibration") or {}
        applied = m.get("recalibration_applied")
        applied_text = MISSING_TEXT if applied is None else "yes" if applied else "no"
        lines = [f"- **Recalibration applied:** {applied_text}.",
                 f"- **Rule:** {m.get('recalibration', MISSING_TEXT)}.", ""]
        if cal:
            rows = [[k, _num(v.get("ici_before")), _num(v.get("ici_after")),
                     _num(v.get("ici_after", np.nan) - v.get("ici_before", np.nan))] for k, v in cal.items()]
            lines += ["Integrated calibration index (ICI) of the predictor's out-of-fold survival, before "
                      "and after recalibration, both on the same held-out halves (map fitted on the other half; "
                      "2-fold x 5 repeats):", ""]
            lines += _table(["horizon (months)", "ICI before", "ICI after", "change"], rows)
        at = self.h_cal
        floor = (m.get("ici_noise_floor") or {}).get(self.champion)
        if floor:
            lines.append(f"ICI noise floor at this n (ICI of predictions calibrated by construction, "
                         f"{floor['n_resamples']} resamples): mean {_num(floor['mean'])}, 95th percentile "
                         f"{_num(floor['q95'])}; an ICI below it is indistinguishable from perfect calibration.")
        lines.append(f"Benchmark calibration of the unrecalibrated pipeline at {at:g} months: O/E "
                     f"{_metric_text(self.res, self.champion, 'oe', at)}, ICI "
                     f"{_metric_text(self.res, self.champion, 'ici', at)}, slope "
                     f"{_metric_text(self.res, self.champion, 'slope', at)}.")
        return lines

    def _subgroups(self) -> list[str]:
        sg = self.subgroups
        if sg is None or sg.empty:
            return ["Subgroup performance was not computed."]
        named = [r for r in sg.get("reference", pd.Series(dtype=object)).dropna().astype(str) if r]
        ref = sg.attrs.get("reference") or (named[0] if named else None)
        horizon = float(sg["horizon"].iloc[0])
        model = sg.attrs.get("model", self.champion)
        rows = []
        for _, r in sg.iterrows():
            row = [r.grouping, r.subgroup, int(r.patients), int(r.events),
                   _with_ci(r.harrell_c, r.harrell_c_low, r.harrell_c_high),
                   _with_ci(r.oe, r.oe_low, r.oe_high)]
            if ref:
                row += [_with_ci(r.ref_harrell_c, r.ref_harrell_c_low, r.ref_harrell_c_high),
                        _with_ci(r.delta_c, r.delta_c_low, r.delta_c_high)]
            rows.append(row + [r.note])
        headers = ["grouping", "subgroup", "patients", "events", f"Harrell C of {model_label(model)}",
                   f"O/E at {horizon:g} months"]
        if ref:
            headers += [f"Harrell C of {model_label(ref)}", "difference in C"]
        interval = sg.attrs.get("interval", "95% percentile bootstrap within the subgroup")
        lines = [f"Out-of-fold predictions of `{model}` in the benchmark population, by subgroup "
                 f"(TRIPOD+AI fairness). Intervals: {interval}. Subgroups with fewer than 20 patients or 5 "
                 "events are not estimated. Subgroup estimates are imprecise and descriptive, not tests.", ""]
        return lines + _table(headers + ["note"], rows)

    def _ablation(self) -> list[str]:
        ab = self.res.ablation
        if ab is None or ab.empty:
            return [f"Not run in this benchmark (ablation_models = {self.spec.ablation_models})."]
        return ["Feature blocks added one at a time (out-of-fold predictions on the same folds; intervals "
                "from the benchmark's bootstrap over patients where shown):", ""] + _frame_table(ab)

    def _explanations(self) -> list[str]:
        m = self.meta
        horizons = ", ".join(f"{h:g}" for h in m.get("horizons", []))
        return [
            f"- **Output:** the probability of {self.ep.description} at {horizons} months with a 95% "
            "confidence interval of the model's estimated survival (estimation uncertainty, not the range of "
            "the patient's outcome), the survival curve with its band, the median survival time when reached, the raw risk "
            "score, a risk group and warnings.",
            f"- **Risk groups:** {m.get('risk_groups', MISSING_TEXT)} (descriptive cut-offs, not decision "
            "thresholds).",
            f"- **Intervals:** {m.get('interval_method', MISSING_TEXT)}.",
            f"- **Explanations:** {m.get('explainer', MISSING_TEXT)}. They describe the model's associations "
            "for this patient, not causal effects.",
        ]

    def _limitations(self) -> list[str]:
        m, y = self.meta, self.res.y
        events = int(m.get("events", int(y["event"].sum())))
        patients = int(m.get("patients", len(y)))
        per_field = events / max(len(self.fields), 1)
        lines = [
            f"- **Sample size:** {patients} patients and {events} events for {len(self.fields)} candidate "
            f"predictor fields (about {per_field:.1f} events per field; the encoded features, with one-hot "
            "levels and missing indicators, are more). Intervals are wide at this size; see Riley et al. BMJ "
            "2020;368:m441 for sample-size guidance.",
            f"- **Single cohort, internal validation only:** developed and validated in "
            f"`{self.res.population.name}` with no external (temporal or geographic) validation. Performance "
            "elsewhere is unknown until checked.",
            "- **Intervals** come from resampling patients with the cross-validated predictions held fixed: "
            "they do not include the variability of refitting the model.",
            "- **Harrell's C** depends on the censoring pattern; Uno's C is reported alongside.",
            "- **Subgroups** are small, so their estimates are imprecise and not adjusted for multiplicity.",
        ]
        if self.kind == "tcia":
            if self.ref and "fong_recorded" in self.ref:
                fong = ("the reference is the Fong score as recorded by the institution "
                        "(`fong_score_recorded`); recomputing it from the released components is unreliable.")
            else:
                fong = ("the reference is recomputed from the released components, which is unreliable in "
                        "this cohort (`synchronous_crlm` is not 'disease-free interval < 12 months' and the "
                        "size is pathological); the institution's recorded Fong score is the fairer "
                        "baseline.")
            lines += [
                "- **Single centre (TCIA / MSKCC):** one institution's practice and referral pattern.",
                f"- **Fong reference:** {fong}",
                "- **Pathological size:** `largest_metastasis_cm` comes from `max_tumor_size`, likely a "
                "pathological (post-chemotherapy) size, 0 for complete responders, not the preoperative "
                "imaging size the model is meant for.",
                "- **No RAS/BRAF/PIK3CA and no RECIST response** in this cohort: the genomic and response "
                "blocks are largely empty, so the model cannot learn their effects.",
                "- **Non-random v2 subset:** several fields come from a 127-patient subset (mostly multiple "
                "metastases) and are missing for the other 70 patients.",
            ]
        elif self.kind == "simulated":
            lines.append("- **Synthetic data:** the cohort is simulated from published effect sizes; the "
                         "figures describe the method on synthetic data and say nothing about real patients.")
        params = m.get("params") or {}
        for key, values in self._tuned().items():
            name = key.split("__", 1)[1]
            used = params.get(key, params.get(name, self.model_params.get(name)))
            if used is not None and not any(_same(used, v) for v in values):
                chosen = ", ".join(sorted(set(values.astype(str))))
                lines.append("- **Hyperparameters differ from the benchmark:** the registered predictor "
                             f"uses `{name}` = {used}, while inner tuning chose {chosen} in the benchmark, "
                             "so the benchmark figures describe the tuned pipeline, not exactly this model.")
        if "patients" in m and int(m["patients"]) != len(y):
            lines.append(f"- **Different patient sets:** the predictor was trained on {m['patients']} "
                         f"patients, the benchmark compared models on {len(y)} (those with a computable "
                         "reference score).")
        return lines

    def _obtaining(self) -> list[str]:
        uri = f"models:/{self.registered_name}/{self.version or '<version>'}"
        return [
            f"- **Registered model:** `{self.registered_name}`, {self.version_text}. Load it with "
            f"`mlflow.pyfunc.load_model(\"{uri}\")` (or through its `@champion` alias); the predictor "
            "bundle (`predictor.joblib` + `metadata.json`) loads with "
            "`crlm.predictor.Predictor.load(directory)`. The answer format is documented in "
            "docs/PREDICTOR.md.",
            "- Inputs are patient records with the schema's field names; the API refuses unknown fields, "
            "wrong types and out-of-range values with the field's name and rule.",
        ]

    def _software(self) -> list[str]:
        m = self.meta
        versions = m.get("package_versions") or {}
        t = self.res.timings or {}
        lines = [f"- **Predictor created:** {m.get('created_at', MISSING_TEXT)}.",
                 "- **Benchmark data digest** (SHA-256 of the benchmark population, first 16 hex digits): "
                 f"`{_data_digest(self.res.population.data)}`.",
                 f"- **Benchmark run time:** {_num(t.get('total'), 1)} s (seed {self.spec.seed}).", ""]
        if versions:
            lines += _table(["package", "version"], [[k, v] for k, v in versions.items()])
        return lines

    def _checklist(self) -> list[str]:
        items = [
            ("3c, 14, 23a", "fairness and subgroup performance with intervals", "Subgroups"),
            ("5b, 8", "data source and dates, end of follow-up, outcome and horizons",
             "Data source; Outcome and horizons"),
            ("7, 11", "data preparation and missing-data handling", "Predictors; Missing data"),
            ("9", "predictor definitions and timing", "Predictors"),
            ("10, 21", "sample size, participants and events", "Participants and events; Limitations"),
            ("12a-c", "data use, predictor handling, model type, tuning, internal validation",
             "Model; Validation method"),
            ("12e", "performance measures and model comparison",
             "Performance; Comparison with the reference; Model selection"),
            ("12f, 24", "model updating (recalibration)", "Calibration"),
            ("12g, 22", "how predictions are obtained; full model access", "Obtaining predictions"),
            ("15", "model output, risk groups and cut-offs", "Explanations, intervals and output"),
            ("18e-f", "code, versions, data availability", "Software and reproducibility; Data source"),
            ("27a-b", "handling of missing or poor inputs at use", "Missing data"),
        ]
        return ["TRIPOD+AI items (Collins et al. BMJ 2024;385:e078378; paraphrased) and where this card "
                "covers them:", ""] + _table(["item", "content", "section"], items)


# ------------------------------------------------------------------------------------------- markdown -> html


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1a1a1a;margin:24px auto;
max-width:1100px;line-height:1.45;padding:0 16px}
h1{font-size:21px;margin-bottom:6px}
h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:2px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 14px}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
code{font-family:SFMono-Regular,Consolas,monospace;font-size:12px;background:#f5f5f5;padding:0 3px}
blockquote{margin:10px 0;padding:8px 12px;background:#fff4e5;border-left:4px solid #e69f00}
ul{padding-left:22px}li{margin:3px 0}p,li{font-size:14px}
@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}table{page-break-inside:avoid}}
"""

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_URL = re.compile(r"(?<![\"'=>])\bhttps?://[^\s<>()\"']+[^\s<>()\"'.,;:]")
_DOI = re.compile(r"\bdoi:\s*(10\.\d{4,9}/[^\s<>()\"']+[^\s<>()\"'.,;:])", re.IGNORECASE)
_TABLE_RULE = re.compile(r"\|?(\s*:?-+:?\s*\|)+\s*")
_BLOCK_START = re.compile(r"^(#{1,6}\s|\||- |>)")


def _decision_curve_lines(res: BenchmarkResult, champion: str) -> list[str]:
    """The champion's decision curves against the scores' high-risk groups, treat all and treat none."""
    lines = []
    curves = decision_curves.summary(decision_curves.benchmark_curves(res, [champion]))
    if len(curves):
        lines += ["", "Decision curves (out-of-fold predictions): net benefit of acting when the predicted risk "
                  "by the horizon is at least the threshold, against each score's high-risk group (for Fong: "
                  "3-5, the usual rule for neoadjuvant chemotherapy), treat all and treat none; n/a = too "
                  "few patients above the threshold to estimate.", ""]
        curves = curves.copy()
        curves["horizon"] = curves["horizon"].map(lambda h: f"{h:g}")
        lines += _table(list(curves.columns), [[_num(v) if isinstance(v, float) else v for v in r]
                                               for r in curves.itertuples(index=False)])
    return lines


def _inline(text: str) -> str:
    """Escape, then code spans, bold, links, bare URLs and DOIs (the citation's links)."""
    out = []
    for piece in re.split(r"(`[^`]*`)", text):
        if len(piece) >= 2 and piece.startswith("`") and piece.endswith("`"):
            out.append(f"<code>{html.escape(piece[1:-1])}</code>")
            continue
        s = html.escape(piece, quote=False).replace("\\|", "|")
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', s)
        s = _URL.sub(lambda m: f'<a href="{html.escape(m.group(0))}">{m.group(0)}</a>', s)
        s = _DOI.sub(lambda m: f'<a href="https://doi.org/{html.escape(m.group(1))}">doi:{m.group(1)}</a>', s)
        out.append(s)
    return "".join(out)


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def markdown_to_html(markdown: str, title: str = "Model card") -> str:
    """The subset of Markdown the card uses (headings, paragraphs, lists, block quotes, pipe tables, code
    spans, bold, links) as a self-contained HTML page: inline CSS, no scripts, no external resources."""
    lines = markdown.splitlines()
    body: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped:
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in _split_row(block[0]))
            rows = [_split_row(b) for b in block[1:] if not _TABLE_RULE.fullmatch(b)]
            trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif stripped.startswith("- "):
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(f"<li>{_inline(lines[i].strip()[2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        elif stripped.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip()[1:].strip())
                i += 1
            body.append(f"<blockquote>{_inline(' '.join(quote))}</blockquote>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not _BLOCK_START.match(lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            body.append(f"<p>{_inline(' '.join(para))}</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
