"""``imagebridge fetch --into pacs``: the chosen studies become durable import jobs.

The local patient is the MRN the operator gave (``--mrn``), else the one
patient the local PACS finds for the demographics; none or several found
holds the jobs with that reason (``imagebridge jobs show``).  The jobs then
run with a progress bar each, and a table says what each job ended with.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.import_plan import (
    LocalPatientChoice,
    create_jobs,
    preview,
    resolve_local_patient,
)
from imagebridge.actors.initiating.importer import DEFAULT_SYNTAXES
from imagebridge.actors.initiating.jobs_runner import run_jobs
from imagebridge.actors.initiating.pull import Demographics, StudyOffer
from imagebridge.app import open_store
from imagebridge.config import Config
from imagebridge.dicom.reconcile import describe
from imagebridge.errors import ImageBridgeError
from imagebridge.importing import ImportTarget, open_target
from imagebridge.model.import_job import ImportJob, JobState
from imagebridge.model.reconcile import PlanVerdict
from imagebridge.store.jobs import JobStore


async def import_offers(
    config: Config,
    console: Console,
    demographics: Demographics,
    offers: Sequence[StudyOffer],
    *,
    mrn: str | None,
    mrn_issuer: str | None,
    clients: PartnerClients,
    dry_run: bool = False,
) -> int:
    """Create and run the import jobs of *offers*; 0 when every job completed cleanly.

    With *dry_run*, each study's first instance is retrieved and planned, the
    exact changes per attribute are printed, and nothing is stored or queued.
    """
    importing = config.importing
    if importing is None:
        console.print("[red]--into pacs needs an [import] table in the configuration")
        return 2
    target = open_target(importing.target)
    try:
        choice = await resolve_local_patient(target, demographics, mrn=mrn, issuer=mrn_issuer)
        if dry_run:
            return await _dry_run(
                config, console, clients=clients, target=target, offers=offers, choice=choice
            )
    finally:
        await target.aclose()
    if choice.patient is not None:
        who = choice.patient
        console.print(
            f"Local patient: MRN {who.mrn} ({who.source.value}), {who.name}, "
            f"born {who.birth_date or '?'}"
        )
    else:
        console.print(f"[magenta]Jobs held: {choice.reason}")
    store = open_store(config)
    try:
        jobs = create_jobs(
            JobStore(store.engine),
            offers,
            target_name=importing.target.name,
            target_kind=type(importing.target).__name__,
            settings=importing.reconcile,
            choice=choice,
        )
    finally:
        store.close()
    runnable = [j.id for j in jobs if j.state in (JobState.PENDING, JobState.FAILED)]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        bars: dict[int, TaskID] = {
            j.id: progress.add_task(f"job {j.id}", total=j.total, completed=j.done) for j in jobs
        }

        def show(job: ImportJob) -> None:
            progress.update(bars[job.id], completed=job.done + job.errors)

        finished = await run_jobs(config, runnable, show) if runnable else []
    by_id = {j.id: j for j in jobs} | {j.id: j for j in finished}
    _table(console, [by_id[j.id] for j in jobs])
    return 0 if all(j.state is JobState.COMPLETED for j in by_id.values()) else 1


async def _dry_run(
    config: Config,
    console: Console,
    *,
    clients: PartnerClients,
    target: ImportTarget,
    offers: Sequence[StudyOffer],
    choice: LocalPatientChoice,
) -> int:
    """Print what importing each study would change, attribute by attribute."""
    importing = config.importing
    if importing is None or choice.patient is None:
        console.print(f"[magenta]Dry run: the jobs would be held: {choice.reason}")
        return 1
    held = 0
    for offer in offers:
        console.print(f"[bold]Study {offer.study_instance_uids[0]} from {offer.community.name}")
        try:
            plan = await preview(
                clients,
                config.communities,
                target,
                offer,
                settings=importing.reconcile,
                patient=choice.patient,
                now=datetime.now(UTC),
                transfer_syntaxes=DEFAULT_SYNTAXES,
            )
        except ImageBridgeError as exc:
            console.print(f"  [red]cannot preview: {exc.message}")
            held += 1
            continue
        held += plan.verdict is PlanVerdict.HOLD
        console.print(f"  study verdict: {plan.verdict.value} ({len(offer.locators)} instances)")
        for line in describe(plan.plans[0]):
            console.print(f"  {line}", markup=False)
    console.print("Dry run: nothing was stored and no job was created.")
    return 1 if held else 0


def _table(console: Console, jobs: Sequence[ImportJob]) -> None:
    table = Table(title="Import jobs")
    for column in ("job", "community", "study", "state", "done", "errors", "verified"):
        table.add_column(column)
    for job in jobs:
        check = job.verification
        verified = (
            "-"
            if check is None
            else f"{check.found}/{check.expected}" + (" ok" if check.ok else " MISMATCH")
        )
        table.add_row(
            str(job.id),
            job.request.source_community_name,
            job.request.study_instance_uid,
            job.state.value + (f" ({job.hold_reason})" if job.hold_reason else ""),
            f"{job.done}/{job.total}",
            str(job.errors),
            verified,
        )
    console.print(table)
