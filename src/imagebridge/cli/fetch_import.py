"""``imagebridge fetch --into pacs``: the chosen studies become durable import jobs.

The local patient is the MRN the operator gave (``--mrn``), else the one
patient the local PACS finds for the demographics; none or several found
holds the jobs with that reason (``imagebridge jobs show``).  The jobs then
run with a progress bar each, and a table says what each job ended with.
:class:`ImportReport` keeps the same for ``fetch --json`` (local MRN, jobs,
dry-run verdicts; no other local demographics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

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
from imagebridge.cli.job_views import job_json, outcome_table
from imagebridge.config import Config
from imagebridge.dicom.reconcile import describe
from imagebridge.errors import ImageBridgeError
from imagebridge.importing import ImportTarget, open_target
from imagebridge.model.import_job import ImportJob, JobState
from imagebridge.model.reconcile import LocalPatient, PlanVerdict
from imagebridge.store.jobs import JobStore


@dataclass(slots=True)
class ImportReport:
    """What ``fetch --into pacs`` did with the chosen studies."""

    status: int
    dry_run: bool = False
    local_patient: LocalPatient | None = None
    held_reason: str | None = None
    jobs: list[ImportJob] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        patient = self.local_patient
        return {
            "dry_run": self.dry_run,
            "local_patient": None
            if patient is None
            else {"mrn": patient.mrn, "source": patient.source.value},
            "held_reason": self.held_reason or None,
            "jobs": [job_json(job) for job in self.jobs],
            "previews": self.previews,
        }


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
    queue: bool = False,
) -> ImportReport:
    """Create and run the import jobs of *offers*; status 0 when every job completed cleanly.

    With *dry_run*, each study's first instance is retrieved and planned, the
    exact changes per attribute are printed, and nothing is stored or queued.
    With *queue*, the jobs are created and left to the gateway's workers
    (``imagebridge serve`` takes pending jobs after ``[import] pending_grace``).
    """
    importing = config.importing
    if importing is None:
        console.print("[red]--into pacs needs an \\[import] table in the configuration")
        return ImportReport(2, dry_run)
    target = open_target(importing.target)
    try:
        choice = await resolve_local_patient(target, demographics, mrn=mrn, issuer=mrn_issuer)
        report = ImportReport(1, dry_run, choice.patient, choice.reason or None)
        if dry_run:
            report.status = await _dry_run(
                config,
                console,
                report,
                clients=clients,
                target=target,
                offers=offers,
                choice=choice,
            )
            return report
    finally:
        await target.aclose()
    if choice.patient is not None:
        who = choice.patient
        console.print(
            f"Local patient: MRN {who.mrn} ({who.source.value}), {who.name}, "
            f"born {who.birth_date or '?'}",
            markup=False,
        )
    else:
        console.print(f"Jobs held: {choice.reason}", style="magenta", markup=False)
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
    if queue:
        report.jobs = list(jobs)
        console.print(outcome_table(report.jobs))
        console.print(
            f"{len(runnable)} job(s) queued for the gateway's workers (imagebridge serve); "
            "follow them with `imagebridge jobs list`.",
            markup=False,
        )
        report.status = 0
        return report
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
    report.jobs = [by_id[j.id] for j in jobs]
    console.print(outcome_table(report.jobs))
    report.status = 0 if all(j.state is JobState.COMPLETED for j in report.jobs) else 1
    return report


async def _dry_run(
    config: Config,
    console: Console,
    report: ImportReport,
    *,
    clients: PartnerClients,
    target: ImportTarget,
    offers: Sequence[StudyOffer],
    choice: LocalPatientChoice,
) -> int:
    """Print what importing each study would change, attribute by attribute."""
    importing = config.importing
    if importing is None or choice.patient is None:
        why = f"Dry run: the jobs would be held: {choice.reason}"
        console.print(why, style="magenta", markup=False)
        return 1
    held = 0
    for offer in offers:
        study = offer.study_instance_uids[0]
        console.print(f"[bold]Study {study} from {escape(offer.community.name)}")
        preview_json: dict[str, Any] = {
            "study_instance_uid": study,
            "community": offer.community.home_community_id.oid,
        }
        report.previews.append(preview_json)
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
            console.print(f"  cannot preview: {exc.message}", style="red", markup=False)
            preview_json |= {"verdict": None, "error": exc.message}
            held += 1
            continue
        held += plan.verdict is PlanVerdict.HOLD
        preview_json |= {"verdict": plan.verdict.value, "instances": len(offer.locators)}
        console.print(f"  study verdict: {plan.verdict.value} ({len(offer.locators)} instances)")
        for line in describe(plan.plans[0]):
            console.print(f"  {line}", markup=False)
    console.print("Dry run: nothing was stored and no job was created.")
    return 1 if held else 0
