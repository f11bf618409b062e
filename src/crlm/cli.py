"""The ``crlm`` command. Each command is a thin shell over the library; errors are one clear line."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Prognostic models for colorectal liver metastases: cohorts, scores, training, serving.")
console = Console(width=140)
err_console = Console(stderr=True, width=140)


def friendly_errors(fn):
    """Known failures (missing file, bad mapping, bad input) end with one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
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


def print_frame(df, title: str | None = None, floatfmt: str = "{:.3f}") -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in df.columns:
        table.add_column(str(col))
    for _, row in df.iterrows():
        table.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def _load(file: Path, mapping: Path | None, strict: bool = False):
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
    from crlm.cohort.simulate import check_passes, check_table, format_check, simulate_cohort

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


def write_frame(df, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(out, index=False)
    elif out.suffix.lower() == ".csv":
        df.to_csv(out, index=False)
    else:
        raise ValueError(f"unsupported output format {out.suffix!r}: use .csv or .parquet")


@app.command()
@friendly_errors
def validate(
    file: Annotated[Path, typer.Argument(help="cohort file (.csv, .tsv or .parquet)")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m", help="YAML mapping onto the schema")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="fail the whole load on any bad cell")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="write the bad cells to this CSV")] = None,
):
    """Validate a cohort against the schema and report every bad cell (row, field, value, rule)."""
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
    from crlm.schema import data_dictionary_markdown

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
    from crlm.config import ConfigError, load_config  # commands import their modules when run (start-up time)
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


def run_training(job):
    """Run one job with progress bars; used by ``crlm train`` and ``crlm demo``."""
    import mlflow
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crlm.tracking import dashboard_url
    from crlm.training import run_job

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bars:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            key = stage.split(" [")[0]  # "models [dask 4 workers]": one bar per stage, the workers as they change
            if key not in tasks:
                tasks[key] = bars.add_task(f"{job.job}: {stage}", total=total)
            bars.update(tasks[key], completed=done, description=f"{job.job}: {stage}")

        outcome = run_job(job, progress=progress, log=console.print)
    console.print(f"[green]{job.job}[/green]: champion {outcome.champion} registered as "
                  f"{outcome.registered_name} v{outcome.champion_version} @champion"
                  + (f" (challenger: {outcome.runner_up} v{outcome.challenger_version})" if outcome.runner_up else "")
                  + f"; bundle exported to {outcome.export_dir}; tracking store {outcome.tracking_uri}; "
                  f"{outcome.timings['total']:.0f} s")
    experiment = mlflow.get_experiment_by_name(job.experiment_name)
    if experiment is not None:
        console.print(f"compare the models: {dashboard_url(experiment.experiment_id)}")
    return outcome


@app.command()
@friendly_errors
def predict(
    file: Annotated[Path, typer.Argument(help="patients to score (.csv or .parquet, schema field names)")],
    model: Annotated[str, typer.Option("--model", help="models:/<name>@champion, or a bundle directory")],
    out: Annotated[Path, typer.Option("-o", "--out", help="where to write the scores (.csv or .parquet)")],
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m")] = None,
):
    """Batch scoring: the validation report for bad rows, the rest scored."""
    from crlm.predictor import Predictor

    cohort = _load(file, mapping)
    for problem in cohort.report.problems:
        console.print(f"[yellow]set aside[/yellow] {problem}")
    if model.startswith("models:/"):
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
    import re

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
    from crlm.external import log_evaluation

    return log_evaluation(ev)


def print_evaluation(ev) -> None:
    """The evaluation's tables: model metrics, scores, paired differences, noise floor, decision curves."""
    console.print(f"[bold]{ev.predictor.model_name}[/bold] ({ev.predictor.endpoint}, from {ev.source.uri}) on "
                  f"{ev.cohort_name}: {ev.n} patients, {ev.events} events; horizons {ev.horizons}")
    for w in ev.field_warnings + ev.notes:
        console.print(f"[yellow]warning:[/yellow] {w}")
    board = ev.headline()
    board["horizon"] = board["horizon"].map(lambda h: "" if h != h else f"{h:g}")
    print_frame(board, title="discrimination, accuracy and calibration (95% percentile bootstrap intervals over "
                             "patients; scores: discrimination only, on the patients each score rates)")
    if len(ev.comparisons):
        print_frame(ev.comparisons[["model", "reference", "metric", "delta", "ci_low", "ci_high", "n"]],
                    title="paired difference model - score on identical patients (95% bootstrap interval)")
    print_frame(ev.noise_floor, title="ICI noise floor: a perfectly calibrated model on this many patients "
                                      "(median and 95th percentile of 50 simulations)")
    nb = ev.decision_summary
    if len(nb):
        nb = nb.assign(cell=[f"{r.net_benefit:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low == r.ci_low
                             else ("n/a" if r.net_benefit != r.net_benefit else f"{r.net_benefit:.3f}")
                             for r in nb.itertuples()])
        table = nb.pivot_table(index=["horizon", "model"], columns="threshold", values="cell", aggfunc="first",
                               sort=False)
        table.columns = [f"threshold {t:g}" for t in table.columns]
        table = table.reset_index()
        table["horizon"] = table["horizon"].map(lambda h: f"{h:g}")
        print_frame(table, title="decision curves: net benefit of 'act if predicted risk by the horizon >= "
                                 "threshold' (95% bootstrap interval; n/a: too few acted on to estimate)")
    lacking = ev.score_coverage[ev.score_coverage.computable < ev.score_coverage.patients]
    if len(lacking):
        print_frame(lacking, title="scores not computable for every patient")


@app.command()
@friendly_errors
def compare(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="one experiment (default: all crlm)")
                          ] = None,
    history: Annotated[bool, typer.Option("--history", help="every published run of each job, not the latest")
                       ] = False,
):
    """The leaderboard across runs in the tracking store (published jobs; killed or failed ones registered nothing)."""
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
    from crlm.demo import run_demo

    run_demo(console, fast=fast)


def main() -> None:  # pragma: no cover
    sys.exit(app())
