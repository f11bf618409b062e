"""``make demo``: the main job on the embedded default data, printed for a reader.

1. the simulator against the literature's targets; 2. the real TCIA cohort and its recorded Fong score;
3. the four training jobs (TCIA OS and DFS, simulated OS and RFS): nested benchmark, MLflow runs, champions
registered with aliases and exported to ``models/`` for serving; 4. where to look next.
"""

from __future__ import annotations

import time

from rich.console import Console

from crlm.cli_output import print_frame, run_training
from crlm.cohort import load_tcia
from crlm.cohort.simulate import simulate_cohort
from crlm.cohort.summary import completeness, endpoint_summary
from crlm.config import load_config
from crlm.evaluation.baselines import score_agreement, score_concordance
from crlm.evaluation.simulator_check import check_passes, check_table, format_check
from crlm.paths import checkout_root, project_root
from crlm.reporting.formatting import headline_horizon
from crlm.reporting.leaderboard import text_columns
from crlm.tracking import tracking_uri

JOBS = ("tcia-os", "tcia-dfs", "sim-os", "sim-rfs")
FAST = {"resampling": {"outer_repeats": 1, "n_boot": 50, "optimism_boot": 20}, "n_interval_models": 20}


def run_demo(console: Console, fast: bool = False) -> None:
    started = time.perf_counter()
    console.rule("[bold]1. Simulated cohort: generated against the literature's targets")
    sim = simulate_cohort(5000, seed=1)
    table = check_table(sim)
    console.print(format_check(table))
    console.print(f"{'all bands pass' if check_passes(table) else 'SOME BANDS FAIL'} "
                  f"(n={len(sim)}, seed=1; `crlm simulate --check` reproduces this)")

    console.rule("[bold]2. TCIA Colorectal-Liver-Metastases (real, 197 MSKCC patients, CC BY 4.0)")
    tcia = load_tcia()
    console.print(f"{tcia.source}\n{tcia.citation}\nLoad: {tcia.report.summary()}")
    print_frame(endpoint_summary(tcia), title="endpoints (Kaplan–Meier; rfs = DFS, recurrence or death)")
    comp = completeness(tcia)
    console.print("fields recorded: " + ", ".join(f"{r.field} {r.recorded}/{len(tcia)}" for r in comp.itertuples()))
    print_frame(score_concordance(tcia, endpoints=["os", "rfs"], n_boot=200, seed=0),
                title="TCIA: Harrell's C of each available score, 95% bootstrap CI (200 resamples)")
    console.print(score_agreement(tcia))

    console.rule("[bold]3. Training jobs: nested benchmark, MLflow tracking, champions in the registry")
    outcomes = []
    for job in JOBS:
        configs = (checkout_root() or project_root()) / "training" / "configs"
        config = load_config(configs / f"{job}.yaml", FAST if fast else None)
        outcome = run_training(config)
        board = outcome.result.leaderboard()
        cols = text_columns(outcome.result, board)
        print_frame(board[cols], title=f"{job}: leaderboard (95% bootstrap CIs; delta C vs {config.reference}, "
                                       "paired on the same patients)")
        if len(outcome.result.ablation):
            print_frame(outcome.result.ablation, title=f"{job}: feature-block ablation")
        meta = outcome.predictor.metadata
        console.print(f"{job}: champion decision: {meta.champion_verdict or outcome.champion}")
        head = meta.headline or {}
        if "harrell_c" in head:
            console.print(f"{job}: headline of the shipped model, {head['label']} ({head['n_boot']} refits): "
                          f"Harrell C {head['harrell_c']['corrected']:.3f} (apparent {head['harrell_c']['apparent']:.3f})")
        at = headline_horizon(meta.horizons or outcome.result.horizons)
        calib = (meta.calibration or {}).get(f"{at:g}", {})
        if calib:
            console.print(f"{job}: champion ICI at {at:g} months {calib['ici_before']:.3f} before recalibration, "
                          f"{calib['ici_after']:.3f} after (both on the same held-out halves); recalibration "
                          f"{'applied' if meta.recalibration_applied else 'not applied'}")
        outcomes.append(outcome)

    console.rule("[bold]4. Where to look")
    uri = tracking_uri()
    console.print(
        f"- tracking store: {uri}\n"
        f"  dashboard: .venv/bin/mlflow ui --backend-store-uri {uri} (then open http://127.0.0.1:5000)\n"
        f"- registered champions: " + ", ".join(f"models:/{o.registered_name}@champion (v{o.champion_version}, "
                                              f"{o.champion})" for o in outcomes) + "\n"
        f"- exported bundles for serving: {project_root() / 'models'}\n"
        f"- serve them: .venv/bin/crlm serve (calculator at http://127.0.0.1:3000/ui/)\n"
        f"- batch scoring: .venv/bin/crlm predict patients.csv --model models:/crlm-sim-os@champion -o scores.csv")
    console.print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
