"""``imagebridge jobs list|show|cancel|resume``: the durable import jobs, for an operator.

Reads the jobs from the store named by the configuration
(:class:`~imagebridge.store.jobs.JobStore`).  ``cancel`` stops a running job
at its next batch; ``resume`` hands jobs to the runner
(:func:`imagebridge.actors.initiating.jobs_runner.take_back` and ``run_jobs``).

Exit status: 0 on success, 1 for an unknown job or a refused change
(cancelling a completed job), 2 for a bad configuration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from imagebridge.actors.initiating import jobs_runner
from imagebridge.app import open_store
from imagebridge.cli import output
from imagebridge.cli.job_views import (
    event_json,
    instance_json,
    job_json,
    outcome_table,
    state_markup,
    when,
)
from imagebridge.cli.output import ConfigPath, JsonFlag, codes, epilog
from imagebridge.config import Config
from imagebridge.errors import ImageBridgeError, StoreError
from imagebridge.model.import_job import ERRORS, ImportJob, InstanceState, JobState
from imagebridge.store.jobs import JobStore

_CFG = "imagebridge.toml"

jobs_app = typer.Typer(
    help="Durable import jobs: list, show, cancel, resume.",
    epilog=epilog(
        [
            f"imagebridge jobs list -c {_CFG} --state failed",
            f"imagebridge jobs show 12 -c {_CFG}",
            f"imagebridge jobs resume -c {_CFG}",
            "imagebridge jobs COMMAND --help",
        ]
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=output.MARKUP_MODE,
)

JobId = Annotated[int, typer.Argument(help="Job id (see `imagebridge jobs list`).")]
_STORE = "incomplete or refused: the store cannot be read, or there is no such job"


@contextmanager
def _jobs(config: Config) -> Iterator[JobStore]:
    """The job store of *config*; store errors end the command with status 1."""
    try:
        store = open_store(config)
    except StoreError as exc:
        output.fail(exc.message, output.EXIT_INCOMPLETE, exc)
    try:
        yield JobStore(store.engine)
    except StoreError as exc:
        output.fail(exc.message, output.EXIT_INCOMPLETE, exc)
    finally:
        store.close()


@jobs_app.command(
    "list",
    epilog=epilog(
        [
            f"imagebridge jobs list -c {_CFG}",
            f"imagebridge jobs list -c {_CFG} --state failed --state held",
            f"imagebridge jobs list -c {_CFG} --limit 10 --json | jq '.jobs[].id'",
        ],
        codes(ok="the jobs were listed (also none)", incomplete="the store cannot be read"),
    ),
)
def list_jobs(
    *,
    config: ConfigPath,
    state: Annotated[
        list[JobState] | None, typer.Option("--state", help="Only jobs in this state (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
    json_mode: JsonFlag = False,
) -> None:
    """List import jobs, most recently updated first."""
    with _jobs(output.load(config)) as store:
        found = store.list_jobs(states=state or None, limit=limit)
    if json_mode:
        output.emit_json({"count": len(found), "jobs": [job_json(job) for job in found]})
        return
    table = Table(title=f"Import jobs ({len(found)})")
    for column in ("ID", "State", "Study", "Community", "Stored", "Errors", "Updated"):
        table.add_column(column, justify="right" if column in ("ID", "Errors") else "left")
    for job in found:
        request = job.request
        table.add_row(
            str(job.id),
            state_markup(job.state),
            request.study_instance_uid,
            escape(request.source_community_name or request.source_community.oid),
            f"{job.done}/{job.total}",
            str(job.errors),
            when(job.updated_at),
        )
    Console().print(table)


@jobs_app.command(
    epilog=epilog(
        [
            f"imagebridge jobs show 12 -c {_CFG}",
            f"imagebridge jobs show 12 -c {_CFG} --events 100",
            f"imagebridge jobs show 12 -c {_CFG} --json | jq .job.state",
        ],
        codes(ok="the job was shown", incomplete=_STORE),
    )
)
def show(
    job_id: JobId,
    *,
    config: ConfigPath,
    events: Annotated[int, typer.Option(min=0, help="Show this many latest events.")] = 20,
    json_mode: JsonFlag = False,
) -> None:
    """Show one job: details, instances by state, verification, errors and latest events."""
    with _jobs(output.load(config)) as store:
        job = store.get_job(job_id)
        history = store.events(job_id, events) if events else []
        failed = store.instances(job_id, ERRORS)[:20] if job.errors else []
    if json_mode:
        output.emit_json(
            {
                "job": job_json(job),
                "instances_with_errors": [instance_json(item) for item in failed],
                "events": [event_json(event) for event in history],
            }
        )
        return
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
            errors.add_row(
                item.sop_instance_uid, item.state.value, str(item.attempts), escape(error)
            )
        console.print(errors)
    if history:
        log = Table(title="Events")
        log.add_column("At")
        log.add_column("Event")
        for event in history:
            log.add_row(when(event.at), escape(event.message))
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
        lease = f"{job.lease_owner} until {when(job.lease_expires_at)}"
    verification = "not verified"
    if job.verification is not None:
        v = job.verification
        verdict = "[green]ok[/]" if v.ok else "[red]MISMATCH[/]"
        verification = f"{v.found} of {v.expected} found, {verdict} at {when(v.checked_at)}"
    rows = [
        ("State", state_markup(job.state)),
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
        ("Created", when(job.created_at)),
        ("Updated", when(job.updated_at)),
        ("Finished", when(job.finished_at)),
    ]
    if job.hold_reason:
        rows.append(("Held because", job.hold_reason))
    if job.last_error:
        rows.append(("Last error", job.last_error))
    for name, value in rows:
        table.add_row(name, value)
    return table


@jobs_app.command(
    epilog=epilog(
        [f"imagebridge jobs cancel 12 -c {_CFG}"],
        codes(
            ok="the job is cancelled (or already was)",
            incomplete="refused (a completed job) or no such job",
        ),
    )
)
def cancel(job_id: JobId, *, config: ConfigPath) -> None:
    """Cancel a job; a running job stops at its next batch."""
    with _jobs(output.load(config)) as store:
        before = store.get_job(job_id).state
        job = store.cancel(job_id)
    if before is JobState.CANCELLED:
        typer.echo(f"job {job.id} was already cancelled")
    elif before is JobState.RUNNING:
        typer.echo(f"job {job.id} cancelled; its runner stops at the next batch")
    else:
        typer.echo(f"job {job.id} cancelled")


@jobs_app.command(
    epilog=epilog(
        [
            f"imagebridge jobs resume -c {_CFG}",
            f"imagebridge jobs resume 12 13 -c {_CFG}",
        ],
        codes(
            ok="every resumed job completed (or there was nothing to resume)",
            incomplete="a job did not complete, or a job cannot be resumed",
            usage="usage or configuration error (no [import] table): nothing was done",
        ),
    )
)
def resume(
    job_ids: Annotated[
        list[int] | None, typer.Argument(help="Job ids; none resumes every resumable job.")
    ] = None,
    *,
    config: ConfigPath,
) -> None:
    """Resume jobs: retrieve only their missing instances, then verify.

    Named jobs that failed are retried with their failed instances; without ids,
    pending jobs and jobs whose worker process has ended are taken back.
    Held jobs wait for a reviewer and are not resumed.
    """
    settings = output.load(config)
    if settings.importing is None:
        output.fail(
            "configuration error: no [import] table: where should the images go?",
            output.EXIT_USAGE,
        )
    with _jobs(settings) as store:
        try:
            runnable = jobs_runner.take_back(store, list(job_ids or ()))
        except ImageBridgeError as exc:
            output.fail(f"cannot resume: {exc.message}", output.EXIT_INCOMPLETE, exc)
        before = [store.get_job(i) for i in runnable]
    if not runnable:
        typer.echo("nothing to resume")
        return
    finished = _run_with_progress(settings, before, Console())
    Console().print(outcome_table(finished, title="Resumed jobs"))
    if not all(job.state is JobState.COMPLETED for job in finished):
        raise typer.Exit(output.EXIT_INCOMPLETE)


def _run_with_progress(
    config: Config, jobs: Sequence[ImportJob], console: Console
) -> list[ImportJob]:
    """Run *jobs* with one progress bar each (instances done of total)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        bars: dict[int, TaskID] = {
            job.id: progress.add_task(
                escape(f"job {job.id} {job.request.source_community_name}"),
                total=job.total,
                completed=job.done,
            )
            for job in jobs
        }

        def show(job: ImportJob) -> None:
            if job.id in bars:
                progress.update(bars[job.id], completed=job.done + job.errors, total=job.total)

        return anyio.run(jobs_runner.run_jobs, config, [job.id for job in jobs], show)
