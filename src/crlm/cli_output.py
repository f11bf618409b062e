"""What the ``crlm`` command prints: the consoles, tables, a job run with progress bars, an evaluation's tables.

Shared by ``crlm.cli`` and ``crlm.demo`` (which the CLI starts), so that neither imports the other's helpers.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=140)
err_console = Console(stderr=True, width=140)


def print_frame(df, title: str | None = None, floatfmt: str = "{:.3f}") -> None:
    """Print a DataFrame as a rich table on the command's console.

    Parameters
    ----------
    df : pandas.DataFrame
        The rows to print (every value as text; floats through ``floatfmt``).
    title : str, optional
        The table's title (what the numbers are).
    floatfmt : str
        Format of float cells.
    """
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in df.columns:
        table.add_column(str(col))
    for _, row in df.iterrows():
        table.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def write_frame(df, out: Path) -> None:
    """Write a DataFrame as CSV or Parquet, chosen by the file's suffix (other suffixes: ``ValueError``).

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    out : Path
        ``.csv``, ``.parquet`` or ``.pq``; its folder is created.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(out, index=False)
    elif out.suffix.lower() == ".csv":
        df.to_csv(out, index=False)
    else:
        raise ValueError(f"unsupported output format {out.suffix!r}: use .csv or .parquet")


def run_training(job):
    """Run one job with progress bars; used by ``crlm train`` and ``crlm demo``.

    Parameters
    ----------
    job : crlm.config.JobConfig
        The validated job.

    Returns
    -------
    crlm.training.JobOutcome
        What the job produced (benchmark, champion, registered versions, bundle).
    """
    # deferred: MLflow, the training stack and rich's progress bars load only when a job runs (`crlm --help` fast)
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


def print_evaluation(ev) -> None:
    """Print an external evaluation's tables: model metrics, scores, paired differences, noise floor, decision
    curves.

    Parameters
    ----------
    ev : crlm.external.ExternalEvaluation
        The evaluation (``crlm.external.evaluate_external``).
    """
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
