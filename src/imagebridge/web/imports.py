"""Staff page, import jobs started from the page and run in the background of the server.

:class:`ImportService` belongs to the application's lifespan: it owns an anyio
task group, the ``[import]`` target and an
:class:`~imagebridge.actors.initiating.importer.ImportRunner`.  A job is
started at most once per process at a time (a double click, a reload or two
operators importing the same study get the same running job; the job's lease
keeps other processes out).  Each job runs with :data:`current_operator` set
to the operator who started it, so the SAML assertion of its RAD-75 names them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import anyio
from anyio.abc import TaskGroup

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.import_plan import (
    LocalPatientChoice,
    create_jobs,
    local_patient_from,
    resolve_local_patient,
    reviewed,
)
from imagebridge.actors.initiating.importer import ImportRunner, RunnerSettings
from imagebridge.actors.initiating.pull import Demographics, StudyOffer
from imagebridge.config import Config
from imagebridge.errors import ImageBridgeError
from imagebridge.importing import ImportTarget, open_target
from imagebridge.importing.settings import ImportConfig
from imagebridge.model.directory import DirectorySnapshot
from imagebridge.model.imaging import HierarchicDesignator
from imagebridge.model.import_job import ImportJob, JobState
from imagebridge.model.reconcile import ACCEPTABLE, LocalPatient, PatientSource
from imagebridge.store.jobs import JobStore
from imagebridge.web.auth import current_operator

log = logging.getLogger(__name__)

PARALLEL_JOBS = 4
STARTABLE = (JobState.PENDING, JobState.RUNNING)
"""A running job is started only to be claimed if its worker's lease expired (the claim decides)."""


class ImportService:
    """Creates import jobs for the page and runs them in the server's task group."""

    def __init__(
        self,
        jobs: JobStore,
        *,
        clients: PartnerClients,
        directory: DirectorySnapshot,
        target: ImportTarget,
        importing: ImportConfig,
        tasks: TaskGroup,
    ) -> None:
        self.jobs = jobs
        self._target = target
        self._importing = importing
        self._tasks = tasks
        self._active: set[int] = set()
        self._limiter = anyio.CapacityLimiter(PARALLEL_JOBS)
        settings = RunnerSettings(
            batch_size=importing.batch_size,
            spool_dir=importing.spool_dir,
            lease_seconds=importing.workers.lease_seconds,
        )
        self._runner = ImportRunner(jobs, clients, directory, target, settings)

    @property
    def target_name(self) -> str:
        return self._importing.target.name

    def is_active(self, job_id: int) -> bool:
        """True while this process runs (or is about to run) the job."""
        return job_id in self._active

    async def create(
        self,
        offers: Sequence[StudyOffer],
        demographics: Demographics,
        *,
        mrn: str,
        issuer: str,
        operator: str,
    ) -> list[ImportJob]:
        """The jobs of *offers* (existing ones returned unchanged), started in the background."""
        choice = await resolve_local_patient(
            self._target, demographics, mrn=mrn or None, issuer=issuer or None
        )
        searched = {
            "family": demographics.family,
            "given": demographics.given,
            "birth_date": demographics.birth_date,
            "sex": demographics.gender.upper(),
        }
        made = await anyio.to_thread.run_sync(self._create, offers, choice, searched)
        for job in made:
            await anyio.to_thread.run_sync(
                self.jobs.add_event, job.id, f"import requested by {operator}"
            )
        self.start([j.id for j in made], operator)
        return made

    def _create(
        self, offers: Sequence[StudyOffer], choice: LocalPatientChoice, searched: dict[str, str]
    ) -> list[ImportJob]:
        return create_jobs(
            self.jobs,
            offers,
            target_name=self._importing.target.name,
            target_kind=type(self._importing.target).__name__,
            settings=self._importing.reconcile,
            choice=choice,
            extra={"searched": searched},
        )

    async def sweep_forever(self) -> None:
        """Take over, every ``sweep_interval`` seconds, the jobs no live worker runs.

        A worker that died (``kill -9``, a crashed host) leaves its jobs
        running under a lease nobody renews; once it expires any worker of
        the deployment claims the job and retrieves only the missing instances.
        Pending jobs nobody started (``fetch --queue``, a creator that died
        before starting them) are taken after ``pending_grace``.
        """
        settings = self._importing.workers
        while True:
            await anyio.sleep(settings.sweep_interval)
            try:
                found = await anyio.to_thread.run_sync(self.jobs.unattended, settings.pending_grace)
            except ImageBridgeError as exc:
                log.warning("looking for unattended import jobs failed: %s", exc.message)
                continue
            fresh = [job_id for job_id in found if job_id not in self._active]
            if fresh:
                log.info("taking over %d import job(s) no worker runs: %s", len(fresh), fresh)
                self.start(fresh, None)

    def start(self, job_ids: Sequence[int], operator: str | None) -> None:
        """Run the startable ones of *job_ids* in the background (each once per process).

        *operator* is who asked (their name goes into the SAML assertions);
        None for the gateway itself (the configured system user).
        """
        for job_id in job_ids:
            if job_id in self._active:
                continue
            self._active.add(job_id)
            self._tasks.start_soon(self._run, job_id, operator, name=f"import job {job_id}")

    async def _run(self, job_id: int, operator: str | None) -> None:
        token = current_operator.set(operator)
        try:
            async with self._limiter:
                job = await anyio.to_thread.run_sync(self.jobs.get_job, job_id)
                if job.state in STARTABLE:
                    await self._runner.run(job_id)
        except Exception:
            log.exception("import job %d stopped unexpectedly", job_id)
        finally:
            self._active.discard(job_id)
            current_operator.reset(token)

    async def accept(self, job_id: int, mrn: str, issuer: str, operator: str) -> ImportJob:
        """A reviewer files the held job under *mrn*, accepting its demographic conflicts."""
        job = await anyio.to_thread.run_sync(self.jobs.get_job, job_id)
        patient = _reviewed_patient(job, mrn, issuer)
        snapshot = reviewed(job, patient, ACCEPTABLE)
        issuer_text = issuer or None
        await anyio.to_thread.run_sync(
            self.jobs.set_reconciliation, job_id, snapshot, patient.mrn, issuer_text
        )
        await anyio.to_thread.run_sync(
            self.jobs.add_event, job_id, f"accepted by {operator} at review"
        )
        await anyio.to_thread.run_sync(self.jobs.requeue, job_id)
        self.start([job_id], operator)
        return await anyio.to_thread.run_sync(self.jobs.get_job, job_id)

    async def reject(self, job_id: int, operator: str) -> ImportJob:
        await anyio.to_thread.run_sync(
            self.jobs.add_event, job_id, f"rejected by {operator} at review"
        )
        return await anyio.to_thread.run_sync(self.jobs.cancel, job_id)

    async def retry(self, job_id: int, operator: str) -> ImportJob:
        """Run a failed or partly failed job again (its failed instances only)."""
        await anyio.to_thread.run_sync(self.jobs.requeue, job_id)
        await anyio.to_thread.run_sync(self.jobs.add_event, job_id, f"retried by {operator}")
        self.start([job_id], operator)
        return await anyio.to_thread.run_sync(self.jobs.get_job, job_id)


def _reviewed_patient(job: ImportJob, mrn: str, issuer: str) -> LocalPatient:
    """The local patient a reviewer chose: the MRN given, with the best demographics known."""
    known = local_patient_from(job)
    searched = job.request.reconciliation.get("searched") or {}
    if known is not None:
        name, birth, sex = known.name, known.birth_date, known.sex
    else:
        name = f"{searched.get('family', '')}^{searched.get('given', '')}".strip("^")
        birth, sex = str(searched.get("birth_date", "")), str(searched.get("sex", ""))
    return LocalPatient(
        mrn=mrn,
        source=PatientSource.OPERATOR,
        issuer=HierarchicDesignator(local_namespace=issuer) if issuer else None,
        name=name,
        birth_date=birth,
        sex=sex if sex in ("M", "F", "O") else "",
    )


@contextlib.asynccontextmanager
async def running_imports(
    config: Config, jobs: JobStore, clients: PartnerClients
) -> AsyncIterator[ImportService | None]:
    """The import service of ``serve`` (None without ``[import]``), sweeping for orphaned jobs.

    It owns the ``[import]`` target and a task group for the jobs it runs;
    leaving the context cancels them (their leases then expire or are taken
    back at once by a worker of this host).
    """
    if config.importing is None:
        yield None
        return
    target = open_target(config.importing.target)
    try:
        async with anyio.create_task_group() as tasks:
            service = ImportService(
                jobs,
                clients=clients,
                directory=config.communities,
                target=target,
                importing=config.importing,
                tasks=tasks,
            )
            tasks.start_soon(service.sweep_forever, name="import job sweeper")
            yield service
            tasks.cancel_scope.cancel()
    finally:
        await target.aclose()
