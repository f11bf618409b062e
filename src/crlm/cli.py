"""The ``crlm`` command. Each command is a thin shell over the library; errors are one clear line.

Each command imports the part of the library it needs inside its function (each such import is marked
"deferred: CLI start-up"): importing this module loads typer and rich only, not pandas, scikit-survival or
MLflow, so that ``crlm --help`` and a command's own start stay fast. What it prints lives in
``crlm.cli_output`` (shared with ``crlm.demo``).
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from crlm.cli_output import console, err_console, print_evaluation, print_frame, run_training, write_frame

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Prognostic models for colorectal liver metastases: cohorts, scores, training, serving.")


def friendly_errors(fn):
    """Known failures (missing file, bad mapping, bad input) end with one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # deferred: CLI start-up (module docstring)
        from crlm.cohort import CohortValidationError
        from crlm.parallel import ClusterError

        try:
            return fn(*args, **kwargs)
        except CohortValidationError as err:
            err_console.print(f"[red]strict validation failed[/red]\n{err}")
            raise typer.Exit(1) from None
        except ClusterError as err:
            err_console.print(f"[red]cluster error:[/red] {err}")
            raise typer.Exit(3) from None
        except (FileNotFoundError, ValueError, KeyError) as err:
            err_console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None

    return wrapper


def _load(file: Path, mapping: Path | None, strict: bool = False):
    # deferred: CLI start-up (module docstring)
    from crlm.cohort import load_cohort

    return load_cohort(file, mapping, strict=strict)


@app.command()
@friendly_errors
def simulate(
    n: Annotated[int, typer.Option("--n", help="number of patients")] = 2000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same cohort)")] = 1,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="write the cohort (.csv or .parquet)")] = None,
    check: Annotated[bool, typer.Option("--check", help="print the target table and fail if a band is missed")
                     ] = False,
):
    """Generate a synthetic cohort from the literature-calibrated generative model."""
    # deferred: CLI start-up (module docstring)
    from crlm.cohort.simulate import simulate_cohort
    from crlm.evaluation.simulator_check import check_passes, check_table, format_check

    if n < 1:
        raise ValueError("--n must be at least 1")
    cohort = simulate_cohort(n, seed)
    if out is not None:
        write_frame(cohort.data, out)
        console.print(f"wrote {len(cohort)} simulated patients to {out}")
    if check:
        table = check_table(cohort)
        console.print(format_check(table))
        if not check_passes(table):
            raise typer.Exit(1)
    elif out is None:
        console.print(cohort.data.head(10).to_string())


@app.command()
@friendly_errors
def validate(
    file: Annotated[Path, typer.Argument(help="cohort file (.csv, .tsv or .parquet)")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m", help="YAML mapping onto the schema")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="fail the whole load on any bad cell")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="write the bad cells to this CSV")] = None,
):
    """Validate a cohort against the schema and report every bad cell (row, field, value, rule)."""
    # deferred: CLI start-up (module docstring)
    from crlm.cohort import CohortValidationError

    try:
        cohort = _load(file, mapping, strict=strict)
        rep = cohort.report
    except CohortValidationError as err:
        rep = err.report
        if report:
            rep.to_frame().to_csv(report, index=False)
        raise
    for w in rep.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if rep.problems:
        print_frame(rep.to_frame().astype(str), title="bad cells (rows set aside; value after the mapping, "
                                                      "and as written in the file)")
    if len(rep.fields):
        print_frame(rep.fields, title="per field: recorded and missing among accepted rows, rejected cells")
    if report:
        rep.to_frame().to_csv(report, index=False)
    console.print(rep.summary())


@app.command()
@friendly_errors
def scores(
    file: Annotated[Path, typer.Argument(help="cohort file")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals")] = 200,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="write the per-patient score table (CSV)")
                   ] = None,
):
    """The clinical scores of every patient and each score's Harrell C (95% bootstrap CI) per endpoint."""
    # deferred: CLI start-up (module docstring)
    from crlm.evaluation.baselines import score_agreement, score_concordance
    from crlm.scores import score_coverage, score_table

    cohort = _load(file, mapping)
    coverage = score_coverage(cohort.data)
    print_frame(coverage, title=f"which scores this cohort can compute ({len(cohort)} accepted patients; "
                                "'lacking': factor (inputs): patients without it)")
    table = score_table(cohort.data)
    for f in cohort.recorded_scores:
        table[f.name] = cohort.data[f.name].to_numpy()
    if table.dropna(axis=1, how="all").empty:
        console.print("[yellow]no score is computable for any patient[/yellow]: see 'lacking' above; a score "
                      "the export records can be declared in the mapping under recorded_scores")
    if out:
        table.insert(0, "patient_id", cohort.data.get("patient_id"))
        write_frame(table, out)
        console.print(f"wrote the score table to {out}")
    else:
        console.print(table.head(10).to_string())
    print_frame(score_concordance(cohort, n_boot=n_boot, seed=seed), title="Harrell's C of each score")
    agreement = score_agreement(cohort)
    if agreement:
        console.print(agreement)


@app.command()
@friendly_errors
def init(
    directory: Annotated[Path, typer.Argument(help="the workspace folder (created)")],
    source: Annotated[Path | None, typer.Option("--from", help="a centre's export: draft a mapping from it")] = None,
    name: Annotated[str | None, typer.Option(help="cohort name (default: the folder's name)")] = None,
):
    """Create a workspace: config and mapping templates; with --from, a draft mapping of every source column."""
    # deferred: CLI start-up (module docstring)
    from crlm.workspace import init_workspace

    written = init_workspace(directory, source, name)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"workspace {directory}: runs, models and results of commands started in it stay in it. Next: "
                  "check the mapping, then `crlm validate` and `crlm scores` on your export, then `crlm train`.")


@app.command()
@friendly_errors
def dictionary(
    out: Annotated[Path, typer.Option("-o", "--out")] = Path("data/DATA_DICTIONARY.md"),
    check: Annotated[bool, typer.Option("--check", help="fail if the file is not up to date")] = False,
):
    """Write the data dictionary generated from the schema."""
    # deferred: CLI start-up (module docstring)
    from crlm.schema_artefacts import data_dictionary_markdown

    text = data_dictionary_markdown()
    if check:
        if not out.exists() or out.read_text() != text:
            err_console.print(f"[red]{out} is out of date: run `crlm dictionary`[/red]")
            raise typer.Exit(1)
        return
    out.write_text(text)
    console.print(f"wrote {out}")


@app.command()
@friendly_errors
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="job config, e.g. training/configs/tcia-os.yaml")],
    n_jobs: Annotated[int | None, typer.Option(help="parallel workers (overrides the config)")] = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="run the fits on Dask: local:N (a LocalCluster of N workers) or a scheduler address "
                          "(tcp://host:8786); overrides the config's cluster.address")] = None,
):
    """Run a training job: nested benchmark, MLflow runs, champion Predictor, registry alias, export."""
    # deferred: CLI start-up (module docstring)
    from crlm.config import ConfigError, load_config
    from crlm.reporting.leaderboard import text_columns

    overrides = ({"n_jobs": n_jobs} if n_jobs else {}) | ({"cluster": {"address": cluster}} if cluster else {})
    try:
        job = load_config(config, overrides or None)
    except ConfigError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    outcome = run_training(job)
    board = outcome.result.leaderboard()
    columns = text_columns(outcome.result, board)
    reference = outcome.result.spec.reference
    versus = f"delta C vs {reference}, paired" if reference else "no reference: IPA is the gain over Kaplan–Meier"
    print_frame(board[columns], title=f"{job.job}: leaderboard (95% bootstrap CIs; {versus})")


@app.command()
@friendly_errors
def predict(
    file: Annotated[Path, typer.Argument(help="patients to score (.csv or .parquet, schema field names)")],
    model: Annotated[str, typer.Option("--model", help="models:/<name>@champion, or a bundle directory")],
    out: Annotated[Path, typer.Option("-o", "--out", help="where to write the scores (.csv or .parquet)")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m")] = None,
):
    """Batch scoring: the validation report for bad rows, the rest scored."""
    # deferred: CLI start-up (module docstring)
    from crlm.predictor import Predictor

    cohort = _load(file, mapping)
    for problem in cohort.report.problems:
        console.print(f"[yellow]set aside[/yellow] {problem}")
    if model.startswith("models:/"):
        # deferred: CLI start-up (module docstring)
        import mlflow

        from crlm import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        predictor = mlflow.pyfunc.load_model(model).unwrap_python_model().predictor
    else:
        predictor = Predictor.load(model)
    if len(cohort) == 0:
        raise ValueError("no valid patients to score")
    scores = predictor.predict_frame(cohort.data)
    if "patient_id" in cohort.data:
        scores.insert(0, "patient_id", cohort.data["patient_id"].to_numpy())
    write_frame(scores, out)
    console.print(f"scored {len(scores)} patients with {predictor.model_name} ({predictor.endpoint}); "
                  f"{cohort.report.n_rejected} rows set aside; wrote {out}")


@app.command()
@friendly_errors
def evaluate(
    file: Annotated[Path, typer.Argument(help="a labelled cohort (.csv, .tsv or .parquet)")],
    model: Annotated[str, typer.Option("--model", help="models:/<name>@<alias>, models:/<name>/<version> or a "
                                                       "bundle directory")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals")] = 200,
    seed: Annotated[int, typer.Option()] = 0,
    log: Annotated[bool, typer.Option(help="log an MLflow evaluation run linked to the model version")] = True,
):
    """External validation: the model scored on a new labelled cohort without refitting, beside the scores."""
    # deferred: CLI start-up (module docstring)
    from crlm.external import evaluate_external, load_model

    predictor, source = load_model(model)
    cohort = _load(file, mapping)
    console.print(f"{cohort.name}: {cohort.report.summary()}")
    ev = evaluate_external(predictor, cohort, source, n_boot=n_boot, seed=seed)
    print_evaluation(ev)
    if log:
        run_id = log_run(ev)
        console.print(f"evaluation run {run_id} (experiment crlm-evaluations-{source.name or predictor.model_name})")


@app.command()
@friendly_errors
def recalibrate(
    file: Annotated[Path, typer.Argument(help="the centre's labelled cohort")],
    model: Annotated[str, typer.Option("--model", help="models:/<name>@<alias>, models:/<name>/<version> or a "
                                                       "bundle directory")],
    name: Annotated[str, typer.Option("--name", help="the centre's name: registers crlm-<name>-<endpoint>")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m")] = None,
    method: Annotated[str, typer.Option(help="auto, baseline or baseline_slope")] = "auto",
    folds: Annotated[int, typer.Option(help="held-out folds judging the recalibration")] = 5,
    seed: Annotated[int, typer.Option()] = 0,
):
    """Keep a model's risk ranking and refit its calibration to a centre; judged on held-out folds."""
    # deferred: CLI start-up (module docstring)
    from crlm.centre import recalibrate_for_centre, register
    from crlm.external import load_model

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ValueError(f"--name {name!r}: use lower-case letters, digits, '-' and '_' (it names the model)")
    predictor, source = load_model(model)
    cohort = _load(file, mapping)
    console.print(f"{cohort.name}: {cohort.report.summary()}")
    rec = recalibrate_for_centre(predictor, cohort, name, source, method=method, folds=folds, seed=seed)
    print_frame(rec.held_out, title=f"held-out calibration ({rec.folds}-fold) of {source.uri}, before and after "
                                    f"refitting the {rec.method.replace('_', ' and ')} for {name}")
    console.print(f"Harrell's C of the risk score: {rec.c_before:.3f} before, {rec.c_after:.3f} after")
    registered, version = register(rec, cohort)
    alias = "@champion" if rec.improved else "(no alias: the held-out ICI did not fall)"
    console.print(f"[green]registered {registered} v{version} {alias}[/green], lineage {source.name} "
                  f"v{source.version}")


def log_run(ev) -> str:
    # deferred: CLI start-up (module docstring)
    from crlm.external import log_evaluation

    return log_evaluation(ev)


@app.command()
@friendly_errors
def compare(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="one experiment (default: all crlm)")
                          ] = None,
    history: Annotated[bool, typer.Option("--history", help="every published run of each job, not the latest")
                       ] = False,
):
    """The leaderboard across runs in the tracking store (published jobs; killed or failed ones registered nothing)."""
    # deferred: CLI start-up (module docstring)
    from crlm import tracking

    table = tracking.compare_runs(experiment, history=history)
    if table.empty:
        console.print(f"no crlm runs in {tracking.tracking_uri()}")
        return
    print_frame(table.drop(columns=["job_run", "started"], errors="ignore"),
                title=f"runs in {tracking.tracking_uri()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 3000,
    models_dir: Annotated[Path | None, typer.Option(help="bundles exported by `make demo` (default: models/)")
                          ] = None,
    workers: Annotated[int | None, typer.Option(help="server worker processes (default: one per CPU)")] = None,
):
    """Start the online API and web calculator (BentoML) on the OS and RFS champions.

    Models come from the registry alias when MLFLOW_TRACKING_URI is set, else from the exported bundles.
    Set CRLM_API_KEY to require an API key (kept out of the command line, where `ps` would show it)."""
    # deferred: CLI start-up (module docstring)
    from crlm.serving.launch import serve as run_server
    from crlm.serving.settings import SettingsError

    console.print(f"serving on http://{host}:{port} (calculator at /ui/, OpenAPI at /docs.json)")
    try:
        run_server(host, port, models_dir=models_dir, workers=workers)
    except SettingsError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


@app.command("tracking-server")
@friendly_errors
def tracking_server(
    backend_store_uri: Annotated[str, typer.Option(
        help="the database: sqlite:///path.db for one machine; postgresql://user@host/db or mysql://... for a team")
    ] = "sqlite:///mlflow-server/mlflow.db",
    artifacts_destination: Annotated[str, typer.Option(
        help="where the server keeps artifacts: a directory, s3://bucket/path, gs://..., or a shared disk")
    ] = "mlflow-server/artifacts",
    host: Annotated[str, typer.Option(help="interface to bind (0.0.0.0 for the team's network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5000,
    workers: Annotated[int, typer.Option(help="server worker processes")] = 2,
):
    """Start a shared MLflow tracking server (database store + artifact root); point users at it with
    MLFLOW_TRACKING_URI=http://HOST:PORT."""
    # deferred: CLI start-up (module docstring)
    from crlm.tracking_server import exec_server

    console.print(f"tracking server on http://{host}:{port} (store {backend_store_uri}, artifacts "
                  f"{artifacts_destination}); users: export MLFLOW_TRACKING_URI=http://{host}:{port}")
    exec_server(backend_store_uri, artifacts_destination, host, port, workers)


@app.command()
@friendly_errors
def demo(
    fast: Annotated[bool, typer.Option("--fast", help="smaller runs, for a quick look")] = False,
):
    """The main job on the embedded data: simulator targets, the TCIA cohort and its scores."""
    # deferred: CLI start-up (module docstring)
    from crlm.demo import run_demo

    run_demo(console, fast=fast)


def main() -> None:  # pragma: no cover
    sys.exit(app())
