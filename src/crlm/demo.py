"""``make demo``: the main job on the embedded default data, printed for a reader."""

from __future__ import annotations

import time

from rich.console import Console


def run_demo(console: Console, fast: bool = False) -> None:
    from crlm.cli import print_frame
    from crlm.cohort import load_tcia
    from crlm.cohort.simulate import check_passes, check_table, format_check, simulate_cohort
    from crlm.cohort.summary import completeness, endpoint_summary
    from crlm.evaluation.baselines import score_agreement, score_concordance

    started = time.perf_counter()
    console.rule("[bold]1. Simulated cohort: generated against the literature's targets")
    sim = simulate_cohort(2000 if fast else 5000, seed=1)
    table = check_table(sim)
    console.print(format_check(table))
    console.print(f"{'all bands pass' if check_passes(table) else 'SOME BANDS FAIL'} "
                  f"(n={len(sim)}, seed=1; `crlm simulate --check` reproduces this)")

    console.rule("[bold]2. TCIA Colorectal-Liver-Metastases (real, 197 MSKCC patients, CC BY 4.0)")
    tcia = load_tcia()
    console.print(f"{tcia.source}\nLoad: {tcia.report.summary()}")
    print_frame(endpoint_summary(tcia), title="endpoints (Kaplan–Meier)")
    comp = completeness(tcia)
    console.print("fields recorded: " + ", ".join(f"{r.field} {r.recorded}/{len(tcia)}" for r in comp.itertuples()))
    print_frame(score_concordance(tcia, endpoints=["os", "rfs"], n_boot=200, seed=0),
                title="TCIA: Harrell's C of each available score (rfs = DFS), 95% bootstrap CI (200 resamples)")
    console.print(score_agreement(tcia))
    console.print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
