"""``imagebridge jobs list|show|cancel|resume``: the durable import jobs, for an operator.

Reads the jobs from the store named by the configuration
(:class:`~imagebridge.store.jobs.JobStore`).  ``cancel`` stops a running job
at its next batch; ``resume`` hands jobs to the runner
(:func:`imagebridge.actors.initiating.jobs_runner.resume_jobs`).

Exit status: 0 on success, 1 for an unknown job or a refused change
(cancelling a completed job), 2 for a bad configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imagebridge.actors.initiating import jobs_runner
from imagebridge.app import open_store
from imagebridge.config import Config, load_config
from imagebridge.errors import ConfigError, StoreError
from imagebridge.model.import_job import ERRORS, ImportJob, InstanceState, JobState
from imagebridge.store.jobs import JobStore

jobs_app = typer.Typer(
    help="Durable import jobs: list, show, cancel, resume.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="TOML configuration file.")]
JobId = Annotated[int, typer.Argument(help="Job id (see `imagebridge jobs list`).")]

_STYLE = {
    JobState.PENDING: "cyan",
    JobState.RUNNING: "blue",
    JobState.HELD: "magenta",
    JobState.COMPLETED: "green",
    JobState.COMPLETED_WITH_ERRORS: "yellow",
    JobState.FAILED: "red",
    JobState.CANCELLED: "dim",
}


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@contextmanager
def _jobs(config: Config) -> Iterator[JobStore]:
    """The job store of *config*; store errors end the command with status 1."""
    try:
        store = open_store(config)
    except StoreError as exc:
        typer.secho(exc.message, fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        yield JobStore(store.engine)
    except StoreError as exc:
        typer.secho(exc.message, fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def _state(state: JobState) -> str:
    return f"[{_STYLE[state]}]{state.value}[/]"


@jobs_app.command("list")
def list_jobs(
    *,
    config: ConfigPath,
    state: Annotated[
        list[JobState] | None, typer.Option("--state", help="Only jobs in this state (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
) -> None:
    """List import jobs, most recently updated first."""
    with _jobs(_load(config)) as store:
        found = store.list_jobs(states=state or None, limit=limit)
    table = Table(title=f"Import jobs ({len(found)})")
    for column in ("ID", "State", "Study", "Community", "Stored", "Errors", "Updated"):
        table.add_column(column, justify="right" if column in ("ID", "Errors") else "left")
    for job in found:
        request = job.request
        table.add_row(
            str(job.id),
            _state(job.state),
            request.study_instance_uid,
            request.source_community_name or request.source_community.oid,
            f"{job.done}/{job.total}",
            str(job.errors),
            _when(job.updated_at),
        )
    Console().print(table)


@jobs_app.command()
def show(
    job_id: JobId,
    *,
    config: ConfigPath,
    events: Annotated[int, typer.Option(min=0, help="Show this many latest events.")] = 20,
) -> None:
    """Show one job: details, instances by state, verification, errors and latest events."""
    with _jobs(_load(config)) as store:
        job = store.get_job(job_id)
        history = store.events(job_id, events) if events else []
        failed = store.instances(job_id, ERRORS)[:20] if job.errors else []
    console = Console()
    console.print(_details(job))
    counts = Table(title="Instances")
    counts.add_column("State")
    counts.add_column("Count", justify="right")
    for instance_state in InstanceState:
        counts.add_row(instance_state.value, str(job.counts.get(instance_state, 0)))
    counts.add_row("[bold]total", f"[bold]{job.total}")
    console.print(counts)
    if failed:
        errors = Table(title=f"Instances with errors (first {len(failed)} of {job.errors})")
        for column in ("SOP Instance UID", "State", "Attempts", "Error"):
            errors.add_column(column)
        for item in failed:
            error = " ".join(filter(None, (item.error_code, item.error_text)))
            errors.add_row(item.sop_instance_uid, item.state.value, str(item.attempts), error)
        console.print(errors)
    if history:
        log = Table(title="Events")
        log.add_column("At")
        log.add_column("Event")
        for event in history:
            log.add_row(_when(event.at), event.message)
        console.print(log)


def _details(job: ImportJob) -> Table:
    request = job.request
    table = Table(title=f"Import job {job.id}", show_header=False)
    table.add_column("Field", style="bold")
    table.add_column("Value")
    patient = request.foreign_patient
    local = "-"
    if request.local_patient_id is not None:
        local = f"{request.local_patient_id} ({request.local_patient_issuer or '-'})"
    lease = "-"
    if job.lease_owner is not None:
        lease = f"{job.lease_owner} until {_when(job.lease_expires_at)}"
    verification = "not verified"
    if job.verification is not None:
        v = job.verification
        verdict = "[green]ok[/]" if v.ok else "[red]MISMATCH[/]"
        verification = f"{v.found} of {v.expected} found, {verdict} at {_when(v.checked_at)}"
    rows = [
        ("State", _state(job.state)),
        ("Study", request.study_instance_uid),
        ("Source community", f"{request.source_community_name} ({request.source_community.oid})"),
        ("Imaging community", request.imaging_community.oid),
        ("Foreign patient", f"{patient.id} ({patient.assigning_authority})"),
        ("Local patient", local),
        ("KOS document", f"{request.kos_document_id} in {request.kos_repository_id}"),
        ("Target", f"{request.target_name} ({request.target_kind})"),
        ("Instances", f"{job.done} stored of {job.total}, {job.errors} with errors"),
        ("Verification", verification),
        ("Attempts", str(job.attempts)),
        ("Lease", lease),
        ("Created", _when(job.created_at)),
        ("Updated", _when(job.updated_at)),
        ("Finished", _when(job.finished_at)),
    ]
    if job.hold_reason:
        rows.append(("Held because", job.hold_reason))
    if job.last_error:
        rows.append(("Last error", job.last_error))
    for name, value in rows:
        table.add_row(name, value)
    return table


@jobs_app.command()
def cancel(job_id: JobId, *, config: ConfigPath) -> None:
    """Cancel a job; a running job stops at its next batch."""
    with _jobs(_load(config)) as store:
        before = store.get_job(job_id).state
        job = store.cancel(job_id)
    if before is JobState.CANCELLED:
        typer.echo(f"job {job.id} was already cancelled")
    elif before is JobState.RUNNING:
        typer.echo(f"job {job.id} cancelled; its runner stops at the next batch")
    else:
        typer.echo(f"job {job.id} cancelled")


@jobs_app.command()
def resume(
    job_ids: Annotated[
        list[int] | None, typer.Argument(help="Job ids; none resumes every resumable job.")
    ] = None,
    *,
    config: ConfigPath,
) -> None:
    """Resume jobs: retrieve only their missing instances, then verify."""
    settings = _load(config)
    raise typer.Exit(jobs_runner.resume_jobs(settings, list(job_ids or ())))
