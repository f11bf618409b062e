"""The model card's result sections: model selection, performance, the comparison with the reference,
calibration, subgroups and the feature-block ablation (mixed into ``crlm.reporting.model_card._Card``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crlm.evaluation import decision_curves
from crlm.evaluation.benchmark import ORACLE, BenchmarkResult
from crlm.evaluation.plots import model_label
from crlm.reporting.card_context import CardContext
from crlm.reporting.card_markdown import frame_table, table
from crlm.reporting.formatting import METRIC_LABELS, MISSING_TEXT, format_estimate, format_number, format_p


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
        lines += table(list(curves.columns), [[format_number(v) if isinstance(v, float) else v for v in r]
                                               for r in curves.itertuples(index=False)])
    return lines


class ResultSections(CardContext):
    """Sections 9-14 of the card."""

    def _selection(self) -> list[str]:
        rows = []
        for _, r in self.res.leaderboard().iterrows():
            c = self.res.comparison(r.model, "harrell_c")
            if r.model == self.ref:
                delta = "reference"
            elif c is None:
                delta = MISSING_TEXT
            else:
                delta = format_estimate(c.delta, c.ci_low, c.ci_high)
            name = model_label(r.model)
            name = f"**{name}** (champion)" if r.model == self.champion else name
            metrics = [self._metric_text(r.model, k) for k in ("harrell_c", "uno_c", "ibs")]
            rows.append([name, f"`{r.model}`", r.kind, int(r.n), *metrics, delta])
        lines = [f"Selection rule: {self.selection_rule}", "",
                 "All candidates of the benchmark (estimate and 95% interval):", ""]
        return lines + table(["model", "name", "kind", "n", "Harrell C", "Uno C", "IBS",
                              f"difference in Harrell C vs {self.ref_label}"], rows)

    def _performance(self) -> list[str]:
        models, hs = self._models(), self.res.horizons
        tau = self.res.metric_row(self.champion, "uno_tau")
        tau_text = f"tau = {format_number(tau.estimate, 0)} months" if tau is not None else "tau = last horizon"
        spec_rows: list[tuple[str, str, float | None]] = [("Harrell's C", "harrell_c", None), (f"Uno's C ({tau_text})", "uno_c", None),
                     ("mean time-dependent AUC", "mean_auc", None)]
        spec_rows += [(f"AUC at {h:g} months", "auc", h) for h in hs]
        spec_rows += [("integrated Brier score (lower is better)", "ibs", None),
                      ("IPA (integrated)", "ipa_ibs", None)]
        spec_rows += [(f"ICI at {h:g} months (lower is better)", "ici", h) for h in hs]
        spec_rows += [(f"O/E at {h:g} months (1 = calibrated)", "oe", h) for h in hs]
        spec_rows += [(f"calibration slope at {h:g} months (no interval)", "slope", h) for h in hs]
        rows = [[label] + [self._metric_text(m, metric, h) for m in models]
                for label, metric, h in spec_rows]
        rows.append(["patients evaluated"] + [str(int(self.res.oof[m].valid.sum())) for m in models])
        roles = {self.champion: " (champion)", self.ref: " (reference)"}
        headers = ["metric"] + [model_label(m) + roles.get(m, "") for m in models]
        oracle = (" The oracle is the true generating model of the simulation: the ceiling no model can beat."
                  if ORACLE in models else "")
        lines = ["Out-of-fold performance in the benchmark, estimate (95% interval). The learned model's "
                 "survival probabilities here are before the registered predictor's recalibration."
                 + oracle, ""]
        return lines + table(headers, rows)

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
                             format_estimate(r.delta, r.ci_low, r.ci_high), format_p(r.get("p_holm", r.p_value), self.spec.n_boot),
                             "yes" if bool(r.better_than_reference) else "no", int(r.n)])
        lines = [f"Paired differences model - {self.ref_label} (`{self.ref}`) on identical patients and "
                 "identical bootstrap resamples (for the integrated Brier score a negative difference is "
                 "better). Better = the 95% interval excludes 0 in the model's favour.", ""]
        return lines + table(["model", "metric", "difference (95% interval)", "bootstrap p (Holm)", "better", "n"],
                              rows)

    def _calibration(self) -> list[str]:
        m = self.meta
        cal = m.get("calibration") or {}
        applied = m.get("recalibration_applied")
        applied_text = MISSING_TEXT if applied is None else "yes" if applied else "no"
        lines = [f"- **Recalibration applied:** {applied_text}.",
                 f"- **Rule:** {m.get('recalibration', MISSING_TEXT)}.", ""]
        if cal:
            rows = [[k, format_number(v.get("ici_before")), format_number(v.get("ici_after")),
                     format_number(v.get("ici_after", np.nan) - v.get("ici_before", np.nan))] for k, v in cal.items()]
            lines += ["Integrated calibration index (ICI) of the predictor's out-of-fold survival, before "
                      "and after recalibration, both on the same held-out halves (map fitted on the other half; "
                      "2-fold x 5 repeats):", ""]
            lines += table(["horizon (months)", "ICI before", "ICI after", "change"], rows)
        at = self.h_cal
        floor = (m.get("ici_noise_floor") or {}).get(self.champion)
        if floor:
            lines.append(f"ICI noise floor at this n (ICI of predictions calibrated by construction, "
                         f"{floor['n_resamples']} resamples): mean {format_number(floor['mean'])}, 95th percentile "
                         f"{format_number(floor['q95'])}; an ICI below it is indistinguishable from perfect calibration.")
        lines.append(f"Benchmark calibration of the unrecalibrated pipeline at {at:g} months: O/E "
                     f"{self._metric_text(self.champion, 'oe', at)}, ICI "
                     f"{self._metric_text(self.champion, 'ici', at)}, slope "
                     f"{self._metric_text(self.champion, 'slope', at)}.")
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
                   format_estimate(r.harrell_c, r.harrell_c_low, r.harrell_c_high),
                   format_estimate(r.oe, r.oe_low, r.oe_high)]
            if ref:
                row += [format_estimate(r.ref_harrell_c, r.ref_harrell_c_low, r.ref_harrell_c_high),
                        format_estimate(r.delta_c, r.delta_c_low, r.delta_c_high)]
            rows.append(row + [r.note])
        headers = ["grouping", "subgroup", "patients", "events", f"Harrell C of {model_label(model)}",
                   f"O/E at {horizon:g} months"]
        if ref:
            headers += [f"Harrell C of {model_label(ref)}", "difference in C"]
        interval = sg.attrs.get("interval", "95% percentile bootstrap within the subgroup")
        lines = [f"Out-of-fold predictions of `{model}` in the benchmark population, by subgroup "
                 f"(TRIPOD+AI fairness). Intervals: {interval}. Subgroups with fewer than 20 patients or 5 "
                 "events are not estimated. Subgroup estimates are imprecise and descriptive, not tests.", ""]
        return lines + table(headers + ["note"], rows)

    def _ablation(self) -> list[str]:
        ab = self.res.ablation
        if ab is None or ab.empty:
            return [f"Not run in this benchmark (ablation_models = {self.spec.ablation_models})."]
        return ["Feature blocks added one at a time (out-of-fold predictions on the same folds; intervals "
                "from the benchmark's bootstrap over patients where shown):", ""] + frame_table(ab)
