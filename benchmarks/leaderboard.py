"""The benchmark leaderboards: a simulated cohort (OS) and the real TCIA cohort (OS and DFS), with statements.

For each run: the leaderboard (every model and score with 95% bootstrap intervals; delta Harrell C vs the
reference on the patients both score, with its paired interval, n and Holm-adjusted bootstrap p; ICI beside
its noise floor at this n), the champion decision with its reason (``crlm.selection``), the feature-block
ablation, the wall time per stage, and sentences computed from the results. The simulated cohort also has the ``oracle`` (true risk) and the
``ceiling`` (xgb_cox fitted on 50,000 independent simulated patients from the recorded fields); see
``crlm.evaluation.benchmark``.

Usage: ``.venv/bin/python benchmarks/leaderboard.py [--quick]`` (default: 2 x 5-fold outer, 200 bootstrap
resamples; ``--quick``: 1 x 5-fold outer, 50 bootstrap resamples). Tidy tables go to ``benchmarks/results/`` (gitignored) as CSV, with the printed text.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crlm.cohort import load_tcia
from crlm.cohort.simulate import simulate_cohort
from crlm.config import Selection
from crlm.evaluation.benchmark import CEILING, ORACLE, BenchmarkResult, BenchmarkSpec, run_benchmark
from crlm.models import DEFAULT_BASELINES, DEFAULT_MODELS
from crlm.schema import FIELDS_BY_NAME
from crlm.selection import Decision, choose_champion, noise_floors

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SECONDS = 600.0  # the full simulated benchmark should finish within this on the 2-core machine
TOTAL_TARGET_SECONDS = 900.0  # the whole run (three cohorts) within 15 minutes on the 2-core machine
SIM_N, SIM_SEED = 2000, 1

_out: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    _out.append(text)


def base_spec(quick: bool) -> BenchmarkSpec:
    return BenchmarkSpec(models=DEFAULT_MODELS, outer_splits=5, outer_repeats=1 if quick else 2, inner_splits=3,
                         n_boot=50 if quick else 200, n_jobs=2)


def describe(spec: BenchmarkSpec, simulated: bool) -> str:
    return (f"models {', '.join(spec.models)}; baselines {', '.join(spec.baselines)}; reference {spec.reference}; "
            f"blocks {'+'.join(spec.blocks)}{' + postoperative' if spec.postoperative else ''}; "
            f"{spec.outer_repeats}x{spec.outer_splits}-fold outer, {spec.inner_splits}-fold inner tuning "
            f"({'on' if spec.tune else 'off'}); {spec.n_boot} bootstrap resamples; n_jobs={spec.n_jobs}; "
            f"seed {spec.seed}; horizons {', '.join(f'{h:g}' for h in spec.horizons)} months"
            + (f"; oracle and ceiling ({'on, n=' + str(spec.ceiling_n) if spec.ceiling else 'off'})"
               if simulated else "; no oracle or ceiling (real cohort, no truth)"))


def progress_printer(tag: str):
    last: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        step = max(1, total // 4)
        if done == total or done // step != last.get(stage, -1):
            last[stage] = done // step
            print(f"  [{tag}] {stage}: {done}/{total}", file=sys.stderr, flush=True)

    return report


def p_clause(p: float, n_boot: int) -> str:
    text = p_text(p, n_boot)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def p_text(p: float, n_boot: int) -> str:
    """A bootstrap p cannot resolve below ~2 / n_boot: shown as a bound rather than 0."""
    floor = 2.0 / max(n_boot, 1)
    return "-" if pd.isna(p) else f"< {floor:.2g}" if p < floor else f"{p:.3f}"


def _ci(low: float, high: float) -> str:
    return "" if pd.isna(low) else f"[{low:.3f}, {high:.3f}]"


def metric_row(res: BenchmarkResult, model: str, metric: str, horizon: float | None = None) -> pd.Series:
    m = res.metrics
    sel = (m.model == model) & (m.metric == metric)
    sel &= m.horizon.isna() if horizon is None else np.isclose(m.horizon.astype(float), horizon)
    return m[sel].iloc[0]


def with_ci(res: BenchmarkResult, model: str, metric: str, horizon: float | None = None) -> str:
    r = metric_row(res, model, metric, horizon)
    return f"{r.estimate:.3f} {_ci(r.ci_low, r.ci_high)}".rstrip()


def comparison(res: BenchmarkResult, model: str, metric: str = "harrell_c") -> pd.Series | None:
    c = res.comparisons
    sel = (c.model == model) & (c.metric == metric)
    return c[sel].iloc[0] if sel.any() else None


def print_board(res: BenchmarkResult) -> Decision:
    """The leaderboard, then the champion decision (the default ``crlm.config.Selection``) with its reason."""
    board = res.leaderboard()
    h = 36 if 36.0 in res.horizons else int(res.horizons[-1])
    sel = Selection()
    decision = choose_champion(res, res.spec.models, res.spec.reference, metric=sel.metric, ici_horizon=sel.ici_horizon,
                               tie_tolerance=sel.tie_tolerance, noise_floor_resamples=sel.noise_floor_resamples,
                               seed=res.spec.seed)
    floors = decision.noise_floor | noise_floors(res, [m for m in res.oof if m not in decision.noise_floor], h,
                                                 sel.noise_floor_resamples, res.spec.seed)
    rows = []
    for r in board.itertuples():
        p = getattr(r, "p_holm", np.nan)
        rows.append({"model": r.model, "kind": r.kind, "n": r.n,
                     "Harrell C [95% CI]": f"{r.harrell_c:.3f} {r.harrell_c_ci}",
                     "Uno C [95% CI]": f"{r.uno_c:.3f} {r.uno_c_ci}",
                     "IBS [95% CI]": f"{r.ibs:.3f} {r.ibs_ci}",
                     f"ICI {h} mo [95% CI]": f"{getattr(r, f'ici_{h}'):.3f} {getattr(r, f'ici_{h}_ci')}",
                     "ICI noise floor (mean / q95)": f"{floors[r.model]['mean']:.3f} / {floors[r.model]['q95']:.3f}",
                     f"O/E {h} mo": f"{getattr(r, f'oe_{h}'):.2f}",
                     f"dC vs {res.spec.reference} [95% CI]": (
                         "reference" if r.model == res.spec.reference else
                         f"{r.delta_c_vs_ref:+.3f} {r.delta_c_ci}" if pd.notna(getattr(r, "delta_c_vs_ref", np.nan))
                         else "-"),
                     "n vs ref": "-" if pd.isna(getattr(r, "n_vs_ref", np.nan)) else int(r.n_vs_ref),
                     "p (Holm)": p_text(p, res.spec.n_boot)})
    say(pd.DataFrame(rows).to_string(index=False))
    say(f"(p: bootstrap two-sided p of delta Harrell C vs {res.spec.reference}, Holm-adjusted across the "
        f"{int((res.comparisons.metric == 'harrell_c').sum() - sum(m in res.oof for m in (ORACLE, CEILING)))} "
        "compared models and scores; intervals: 95% bootstrap over patients, percentile recentred on the "
        "estimate; ICI noise floor: ICI of calibrated-by-construction predictions at this n, "
        f"{sel.noise_floor_resamples} resamples)")
    say(f"Champion decision: {decision.champion}. {decision.verdict}")
    say(f"Rule: {decision.rule}")
    return decision


def print_ablation(res: BenchmarkResult) -> None:
    if res.ablation.empty:
        say("(no ablation)")
        return
    a = res.ablation
    cols = [c for c in ("model", "blocks", "harrell_c", "harrell_c_ci", "uno_c", "uno_c_ci", "ibs", "ibs_ci")
            if c in a]
    say(a[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    data = res.population.data
    for block in dict.fromkeys(b.split(" + ")[-1] for b in a.blocks):
        fields = [f.name for f in FIELDS_BY_NAME.values() if f.block == block and f.name in data]
        known = [c for c in fields if (data[c].notna() & (data[c].astype(str) != "unknown")).any()]
        if not known:
            say(f"(block '{block}': no recorded field in this cohort, so adding it changes nothing)")
    say("(the last step of each model is the full model of the leaderboard; earlier steps were cross-validated "
        "on the same folds with fewer feature blocks)")


def print_timings(res: BenchmarkResult, load_seconds: float) -> None:
    parts = [f"load {load_seconds:.1f} s"] + [f"{k} {v:.1f} s" for k, v in res.timings.items() if k != "total"]
    say(f"wall time per stage: {'; '.join(parts)}; benchmark total {res.timings['total']:.1f} s")


def best_learned(res: BenchmarkResult) -> str:
    """The leaderboard's top learned model (ranked by Uno's C, as the leaderboard and champion rule are)."""
    learned = [m for m in res.spec.models if m in res.oof]
    return max(learned, key=lambda m: res.estimate(m, "uno_c"))


def save(res: BenchmarkResult, tag: str, load_seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    res.leaderboard().to_csv(RESULTS / f"{tag}_leaderboard.csv", index=False)
    res.metrics.to_csv(RESULTS / f"{tag}_metrics.csv", index=False)
    res.comparisons.to_csv(RESULTS / f"{tag}_comparisons.csv", index=False)
    res.ablation.to_csv(RESULTS / f"{tag}_ablation.csv", index=False)
    res.chosen_params.to_csv(RESULTS / f"{tag}_chosen_params.csv", index=False)
    timings = {"load": load_seconds, **res.timings}
    pd.DataFrame({"stage": list(timings), "seconds": list(timings.values())}).to_csv(
        RESULTS / f"{tag}_timings.csv", index=False)


def header(title: str, res: BenchmarkResult) -> None:
    n_events = int(res.y["event"].sum())
    say("=" * 100)
    say(f"{title}: {len(res.y)} patients, {n_events} events (endpoint {res.spec.endpoint}); "
        f"horizons {', '.join(f'{h:g}' for h in res.horizons)} months")
    say(f"spec: {describe(res.spec, res.population.truth is not None)}")
    for note in res.notes:
        say(f"note: {note}")
    say("=" * 100)


def simulated(spec: BenchmarkSpec, prefix: str) -> float:
    t0 = time.perf_counter()
    cohort = simulate_cohort(SIM_N, SIM_SEED)
    load = time.perf_counter() - t0
    spec = dataclasses.replace(spec, endpoint="os", baselines=DEFAULT_BASELINES, reference="score:fong")
    res = run_benchmark(cohort, spec, progress=progress_printer("sim os"))
    header(f"Simulated cohort (simulate_cohort({SIM_N}, seed={SIM_SEED}))", res)
    say("Leaderboard (sorted by Uno's C; oracle and ceiling are simulation-only reference rows):")
    print_board(res)
    say()
    say("Ablation (feature blocks added one at a time, best two learned models):")
    print_ablation(res)
    say()
    say("Oracle and ceiling (what the gap between the learned models and the truth is made of):")
    rows = [m for m in (ORACLE, CEILING) if m in res.oof]
    say(res.leaderboard().set_index("model").loc[rows, ["kind", "n", "harrell_c", "harrell_c_ci", "uno_c",
                                                        "uno_c_ci", "delta_c_vs_ref", "delta_c_ci"]]
        .to_string(float_format=lambda v: f"{v:.3f}"))
    say()
    print_timings(res, load)
    best = best_learned(res)
    c = {m: res.estimate(m, "harrell_c") for m in res.oof}
    h = 36.0 if 36.0 in res.horizons else res.horizons[-1]
    say()
    say("Statements (Harrell's C, out-of-fold, 95% bootstrap intervals):")
    say(f"- best learned model (highest Uno's C) {best}: C = {with_ci(res, best, 'harrell_c')} "
        f"(Uno's C {with_ci(res, best, 'uno_c')})")
    if ORACLE in c:
        say(f"- oracle C = {with_ci(res, ORACLE, 'harrell_c')}; gap best-to-oracle = {c[ORACLE] - c[best]:.3f}")
    if CEILING in c:
        say(f"- ceiling C = {with_ci(res, CEILING, 'harrell_c')}; gap to ceiling (finite-sample learning) = "
            f"{c[CEILING] - c[best]:.3f}; ceiling to oracle (information the records lack) = "
            f"{c[ORACLE] - c[CEILING]:.3f}")
    ref = res.spec.reference
    comp = comparison(res, best)
    say(f"- Fong C = {with_ci(res, ref, 'harrell_c')}; delta {best} vs Fong = {comp.delta:+.3f} "
        f"{_ci(comp.ci_low, comp.ci_high)}, Holm-adjusted bootstrap {p_clause(comp.p_holm, res.spec.n_boot)}")
    say(f"- ICI at {h:g} months of {best} = {with_ci(res, best, 'ici', h)} "
        f"(O/E {res.estimate(best, 'oe', h):.2f})")
    total = res.timings["total"]
    say(f"- full benchmark wall time = {total:.0f} s (target < {TARGET_SECONDS:.0f} s: "
        f"{'met' if total < TARGET_SECONDS else 'NOT met'}); of which ceiling {res.timings.get('ceiling', 0):.1f} s")
    save(res, f"{prefix}sim_os", load)
    return total


def tcia(spec: BenchmarkSpec, endpoint_name: str, prefix: str) -> float:
    t0 = time.perf_counter()
    cohort = load_tcia()
    load = time.perf_counter() - t0
    ref = "score:fong_recorded"
    spec = dataclasses.replace(spec, endpoint=endpoint_name, baselines=(ref,), reference=ref)
    res = run_benchmark(cohort, spec, progress=progress_printer(f"tcia {endpoint_name}"))
    header(f"TCIA Colorectal-Liver-Metastases ({endpoint_name.upper()})", res)
    say(f"Leaderboard (sorted by Uno's C; reference {ref}):")
    print_board(res)
    say()
    say("Ablation (feature blocks added one at a time, best two learned models):")
    print_ablation(res)
    say()
    print_timings(res, load)
    best = best_learned(res)
    comp = comparison(res, best)
    n_ref = int(res.oof[ref].valid.sum())
    if comp.better_than_reference:
        verdict = "beats"
    elif comp.ci_high < 0:
        verdict = "is worse than"
    else:
        verdict = "does not beat"
    say()
    say("Statements (Harrell's C, out-of-fold, 95% bootstrap intervals):")
    say(f"- recorded Fong C ({endpoint_name.upper()}) = {with_ci(res, ref, 'harrell_c')} on n={n_ref} patients")
    say(f"- best learned model (highest Uno's C) {best}: C = {with_ci(res, best, 'harrell_c')}; delta vs Fong = "
        f"{comp.delta:+.3f} {_ci(comp.ci_low, comp.ci_high)}, Holm-adjusted bootstrap {p_clause(comp.p_holm, res.spec.n_boot)}, "
        f"so {best} {verdict} the recorded Fong score (the paired 95% interval "
        f"{'excludes' if comp.ci_low > 0 or comp.ci_high < 0 else 'includes'} 0)")
    better = [m for m in res.spec.models if m in res.oof and comparison(res, m).better_than_reference]
    say(f"- learned models whose delta-C interval excludes 0 in their favour: {', '.join(better) or 'none'} "
        f"(of {len([m for m in res.spec.models if m in res.oof])})")
    say(f"- benchmark wall time = {res.timings['total']:.0f} s")
    save(res, f"{prefix}tcia_{endpoint_name}", load)
    return res.timings["total"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 outer repeat and 50 bootstrap resamples")
    args = parser.parse_args(argv)
    spec = base_spec(args.quick)
    prefix = "quick_" if args.quick else ""
    started = time.perf_counter()
    totals = {"sim os": simulated(spec, prefix)}
    for endpoint_name in ("os", "dfs"):
        say()
        totals[f"tcia {endpoint_name}"] = tcia(spec, endpoint_name, prefix)
    wall = time.perf_counter() - started
    say()
    say("=" * 100)
    say(f"total wall time {wall:.0f} s ({'; '.join(f'{k} {v:.0f} s' for k, v in totals.items())}; the rest is "
        f"loading and writing){' [quick spec]' if args.quick else ''}; target < {TOTAL_TARGET_SECONDS:.0f} s: "
        f"{'met' if wall < TOTAL_TARGET_SECONDS else 'NOT met'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    say(f"tables written to {RESULTS}/{prefix}*.csv, this text to {prefix}leaderboard.txt")
    (RESULTS / f"{prefix}leaderboard.txt").write_text("\n".join(_out) + "\n")


if __name__ == "__main__":
    main()
