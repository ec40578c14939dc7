"""Imaging Document Consumer, import of pulled studies into the local PACS as durable jobs.

One job per study per patient (:mod:`imagebridge.store.jobs`) lists every
instance the KOS references.  Running a job claims it (a lease, so two
workers never run one job), then batch by batch:

1. instances the target already holds under the local patient are marked
   ``already_present`` without being retrieved (de-duplication by SOP
   Instance UID against the target);
2. the others are retrieved with Cross Gateway Retrieve Imaging Document Set
   [RAD-75] from the job's imaging community, parts spooled to disk as they
   arrive;
3. each batch is planned by the pure reconciliation planner
   (:mod:`imagebridge.dicom.reconcile`): local MRN, Original Attributes
   Sequence, accession and UID-collision policies; a conflict holds the job
   for review and nothing of the study is stored;
4. planned instances are rewritten and stored in the target; every
   instance's new state is written to the store before the next batch.
   A rewrite splices the reconciled elements into the received bytes
   (:mod:`imagebridge.dicom.reconcile_splice`; the result is the full
   pydicom read, apply and write's, which is done where splicing is not
   safe): the new head waits in memory and the pixel data is sent from
   the received part as it is, never decoded nor written out again.

The study is listed at the target once per run (the listing then learns what
each batch stored); SOP Instance UIDs it does not answer are looked up by UID
while their batch is retrieved.  Batches flow through three stages, one batch
in each: retrieve (k+2), plan and rewrite (k+1), store and mark (k); only the
last stage writes instance states, in batch order, after the target confirmed.

A crash loses at most the batches in flight: ``resume`` retrieves only what is
still pending.  When nothing is outstanding, the target is asked which SOP
Instance UIDs it holds for the study (QIDO-RS or C-FIND): it must hold
exactly the KOS's set; the job records the result and finishes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.import_plan import (
    accepted_from,
    held_by_sop_uid,
    local_patient_from,
    settings_from,
    target_objects,
)
from imagebridge.actors.initiating.import_stages import (
    Fetched,
    Listing,
    Prepared,
    error_for,
    failed,
    hand_over,
    identified,
    keeps_uids,
    parse_all,
    rewrite_all,
    size_of,
)
from imagebridge.dicom.reconcile import plan_study, remap_uid
from imagebridge.dicom.reconcile_checks import hierarchy
from imagebridge.errors import ImageBridgeError, JobCancelled, JobLeaseLost
from imagebridge.importing.base import (
    ImportInstance,
    ImportStatus,
    ImportTarget,
    StoreReport,
)
from imagebridge.model.directory import DirectorySnapshot
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.import_job import ImportJob, InstanceState, InstanceUpdate, JobInstance
from imagebridge.model.reconcile import (
    LocalPatient,
    PlanVerdict,
    ReconcileSettings,
)
from imagebridge.model.retrieve import imaging_request_for
from imagebridge.security.audit_trail import AuditTrail
from imagebridge.store.jobs import JobStore
from imagebridge.store.leases import worker_name
from imagebridge.wire.spool import SpoolingSink

log = logging.getLogger(__name__)

DEFAULT_SYNTAXES = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
)


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """How a worker runs jobs: batch size, lease, where parts spool, its owner name."""

    batch_size: int = 50
    lease_seconds: float = 300.0
    spool_dir: Path | None = None
    owner: str = field(default_factory=worker_name)
    transfer_syntaxes: tuple[str, ...] = DEFAULT_SYNTAXES


class ImportRunner:
    """Runs import jobs against one target with the partner clients of one process."""

    def __init__(
        self,
        jobs: JobStore,
        clients: PartnerClients,
        directory: DirectorySnapshot,
        target: ImportTarget,
        settings: RunnerSettings = RunnerSettings(),
        *,
        clock: Callable[[], datetime] | None = None,
        progress: Callable[[ImportJob], None] | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        """*progress* is called with the job's fresh record after each batch; *audit*
        records the import into the local PACS when a run ends."""
        self._progress = progress
        self._audit = audit
        self._jobs = jobs
        self._clients = clients
        self._directory = directory
        self._target = target
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        if settings.spool_dir is not None:  # received parts and rewrites wait here
            settings.spool_dir.mkdir(parents=True, exist_ok=True)

    async def run(self, job_id: int) -> ImportJob:
        """Run one job to its end (or until it is held, cancelled or fails); its final record."""
        owner = self._settings.owner
        job = await anyio.to_thread.run_sync(
            self._jobs.claim, job_id, owner, self._settings.lease_seconds
        )
        if job is None:
            return await anyio.to_thread.run_sync(self._jobs.get_job, job_id)
        try:
            await self._work(job)
        except (JobCancelled, JobLeaseLost) as exc:
            log.warning("import job %d stopped: %s", job_id, exc.message)
        except ImageBridgeError as exc:
            log.warning("import job %d failed: %s", job_id, exc.message)
            await anyio.to_thread.run_sync(self._jobs.fail, job_id, owner, exc.message)
        final = await anyio.to_thread.run_sync(self._jobs.get_job, job_id)
        if self._audit is not None:
            self._audit.audit_import(final)
        return final

    async def _work(self, job: ImportJob) -> None:
        local = local_patient_from(job)
        if local is None:
            await self._hold(job, "no local patient: give the MRN or register the patient")
            return
        settings = settings_from(job)
        missing = await anyio.to_thread.run_sync(self._jobs.missing_instances, job.id)
        study = job.request.study_instance_uid
        # The study is listed once per run; the listing is kept up to date as batches are stored.
        held = await self._target.objects(study_instance_uid=study)
        listing = Listing(study, {h.sop_instance_uid: h for h in held})
        present = {h.sop_instance_uid for h in held if h.patient_id == local.mrn}
        await self._mark(
            job,
            [
                InstanceUpdate(
                    sop_instance_uid=i.sop_instance_uid, state=InstanceState.ALREADY_PRESENT
                )
                for i in missing
                if i.sop_instance_uid in present
            ],
        )
        todo = [i for i in missing if i.sop_instance_uid not in present]
        size = self._settings.batch_size
        batches = [todo[start : start + size] for start in range(0, len(todo), size)]
        if not await self._pipeline(job, batches, local, settings, listing):
            return  # held for review
        await self._verify(job)
        await anyio.to_thread.run_sync(self._jobs.finish, job.id, self._settings.owner)

    async def _pipeline(
        self,
        job: ImportJob,
        batches: Sequence[Sequence[JobInstance]],
        local: LocalPatient,
        settings: ReconcileSettings,
        listing: Listing,
    ) -> bool:
        """Three stages, one batch in each: batch k is stored while batch k+1 is planned and
        rewritten and batch k+2 retrieved; False when the job was held.

        Parts and rewritten files wait on disk (at most one batch between two
        stages).  Only the last stage writes instance states, in batch order:
        an instance is marked stored only once the target confirmed it, and a
        batch held, failed or broken ahead waits until the batches before it are stored.
        """
        if not batches:
            return True
        fetched_tx, fetched_rx = anyio.create_memory_object_stream[Fetched](0)
        ready_tx, ready_rx = anyio.create_memory_object_stream[Prepared](0)
        raised: list[BaseException] = []
        go_on = True
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._retrieving, job, batches, listing, fetched_tx)
            tasks.start_soon(
                partial(
                    self._preparing,
                    job,
                    local,
                    settings,
                    listing,
                    receive=fetched_rx,
                    send=ready_tx,
                )
            )
            try:
                async with ready_rx:
                    waited = time.monotonic()
                    async for prepared in ready_rx:
                        started = time.monotonic()
                        with prepared:
                            await self._heartbeat(job)
                            go_on = await self._finish(job, prepared, listing, local)
                        log.debug(
                            "import job %d: a batch of %d stored in %.2f s, waited %.2f s",
                            job.id,
                            len(prepared.fetched.batch),
                            time.monotonic() - started,
                            started - waited,
                        )
                        if not go_on:
                            break
                        if self._progress is not None:
                            self._progress(
                                await anyio.to_thread.run_sync(self._jobs.get_job, job.id)
                            )
                        waited = time.monotonic()
            except Exception as exc:  # re-raised as it is below, not as an exception group
                raised.append(exc)
            finally:
                tasks.cancel_scope.cancel()
        if raised:
            raise raised[0]
        return go_on

    async def _preparing(
        self,
        job: ImportJob,
        local: LocalPatient,
        settings: ReconcileSettings,
        listing: Listing,
        *,
        receive: MemoryObjectReceiveStream[Fetched],
        send: MemoryObjectSendStream[Prepared],
    ) -> None:
        """Plan and rewrite each retrieved batch; a failure goes down the line, in order."""
        async with receive, send:
            async for fetched in receive:
                started = time.monotonic()
                try:
                    prepared = await self._prepare(job, fetched, local, settings, listing)
                except Exception as exc:  # raised by the last stage, after the batches before
                    prepared = Prepared(fetched, error=exc)
                except BaseException:
                    fetched.close()
                    raise
                log.debug(
                    "import job %d: a batch of %d prepared in %.2f s (%s)",
                    job.id,
                    len(fetched.batch),
                    time.monotonic() - started,
                    ", ".join(f"{k} {v:.2f} s" for k, v in prepared.timings.items()),
                )
                if not await hand_over(send, prepared):
                    return
                if prepared.error is not None or prepared.hold is not None:
                    return

    async def _retrieving(
        self,
        job: ImportJob,
        batches: Sequence[Sequence[JobInstance]],
        listing: Listing,
        send: MemoryObjectSendStream[Fetched],
    ) -> None:
        """Retrieve the batches one after the other, handing each over when it is wanted."""
        async with send:
            for batch in batches:
                started = time.monotonic()
                fetched = await self._retrieve(job, batch, listing)
                log.debug(
                    "import job %d: a batch of %d retrieved in %.2f s",
                    job.id,
                    len(batch),
                    time.monotonic() - started,
                )
                if not await hand_over(send, fetched):
                    return

    async def _retrieve(
        self, job: ImportJob, batch: Sequence[JobInstance], listing: Listing
    ) -> Fetched:
        """RAD-75 for one batch; a batch that failed as a whole carries why (never raises)."""
        community = self._directory.get(job.request.imaging_community)
        if community is None:
            return Fetched(
                batch, failure=("XDSUnknownCommunity", "imaging community not in the directory")
            )
        study = job.request.study_instance_uid
        locators = [
            ImagingDocumentLocator(
                i.repository_unique_id, study, i.series_instance_uid, i.sop_instance_uid
            )
            for i in batch
        ]
        request = imaging_request_for(
            locators, job.request.imaging_community, self._settings.transfer_syntaxes
        )
        client = self._clients.for_community(community)
        spool = self._settings.spool_dir

        def sink() -> SpoolingSink:
            return SpoolingSink(directory=spool)

        fetched = Fetched(batch)

        async def lookups() -> None:
            # Meanwhile: which of these SOP Instance UIDs the target holds in another study.
            unknown = [i.sop_instance_uid for i in batch if i.sop_instance_uid not in listing.held]
            try:
                fetched.looked_up = await held_by_sop_uid(self._target, unknown)
            except ImageBridgeError:
                fetched.looked_up = None  # asked again when the batch is planned

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lookups)
            try:
                fetched.result = await client.retrieve_images(request, sink)
            except ImageBridgeError as exc:
                fetched.failure = (exc.xds_error_code or "XDSUnavailableCommunity", exc.message)
        return fetched

    async def _prepare(
        self,
        job: ImportJob,
        fetched: Fetched,
        local: LocalPatient,
        settings: ReconcileSettings,
        listing: Listing,
    ) -> Prepared:
        """Plan one retrieved batch and rewrite what is to be stored (nothing is marked here)."""
        prepared = Prepared(fetched)
        batch, result = fetched.batch, fetched.result
        if result is None:
            code, text = fetched.failure or ("XDSRepositoryError", "not retrieved")
            prepared.updates = failed(batch, code, text)
            return prepared
        wanted = {i.sop_instance_uid for i in batch}
        received = {d.response.document_unique_id: d for d in result.documents}
        prepared.updates = [
            InstanceUpdate(
                sop_instance_uid=uid,
                state=InstanceState.FAILED,
                error_code=error_for(result.errors, uid)[0],
                error_text=error_for(result.errors, uid)[1],
                attempted=True,
            )
            for uid in sorted(wanted - received.keys())
        ]
        ours = {uid: d for uid, d in received.items() if uid in wanted}
        if not ours:
            return prepared
        started = time.monotonic()
        parsed = await anyio.to_thread.run_sync(parse_all, ours)
        prepared.timings["parse"] = time.monotonic() - started
        headers = {uid: p.header for uid, p in parsed.items()}
        uids = {u for h in headers.values() for u in hierarchy(h)}  # what the plan looks up
        namespace = settings.namespace
        target = await target_objects(
            self._target,
            list(headers.values()),
            listed=listing.listed(),
            looked_up=fetched.looked_up,
            uids=uids | {remap_uid(u, namespace) for u in uids},
        )
        plan = plan_study(
            list(headers.values()),
            local,
            settings,
            target,
            now=self._clock(),
            source=job.request.source_community_name[:64],
            accept=accepted_from(job),
        )
        prepared.timings["plan"] = time.monotonic() - started - prepared.timings["parse"]
        # ^ with the target's answers for the batch's UIDs
        if plan.verdict is PlanVerdict.HOLD:
            reasons = sorted({i.text for p in plan.plans for i in p.conflicts})
            prepared.updates += [
                InstanceUpdate(sop_instance_uid=u, state=InstanceState.HELD, attempted=True)
                for u in headers
            ]
            prepared.hold = "; ".join(reasons)[:1000] or "held for review"
            return prepared
        for plan_ in plan.plans:
            if plan_.verdict is PlanVerdict.ALREADY_STORED:
                prepared.updates.append(
                    InstanceUpdate(
                        sop_instance_uid=plan_.sop_instance_uid,
                        state=InstanceState.ALREADY_PRESENT,
                        attempted=True,
                    )
                )
            else:
                prepared.planned.append(plan_)
        if not prepared.planned:
            return prepared
        prepared.tmp = tempfile.TemporaryDirectory(
            prefix="imagebridge-import-", dir=self._settings.spool_dir
        )
        prepared.parsed = parsed
        folder = prepared.tmp.name  # for the instances that are written out whole
        work = [
            (ours[p.sop_instance_uid], parsed[p.sop_instance_uid], p, f"{folder}/{n}.dcm")
            for n, p in enumerate(prepared.planned)
        ]
        started = time.monotonic()
        prepared.instances = await anyio.to_thread.run_sync(rewrite_all, work)
        prepared.timings["rewrite"] = time.monotonic() - started
        return prepared

    async def _finish(
        self, job: ImportJob, prepared: Prepared, listing: Listing, local: LocalPatient
    ) -> bool:
        """Store a prepared batch and mark every instance of it; False when the job was held."""
        if prepared.error is not None:
            raise prepared.error
        updates = list(prepared.updates)
        if prepared.hold is not None:
            await self._mark(job, updates)
            await self._hold(job, prepared.hold)
            return False
        if prepared.instances:
            # The study's listing answers what the target holds, unless UIDs were remapped.
            kept = all(keeps_uids(p) for p in prepared.planned)
            files: list[ImportInstance] = list(prepared.instances)
            if kept:  # the identities are those just parsed: not read again by the target
                files = [
                    identified(item, prepared.parsed[p.sop_instance_uid].header)
                    if isinstance(item, str)
                    else item
                    for p, item in zip(prepared.planned, prepared.instances, strict=True)
                ]
            report = await self._target.store(
                files, known_present=listing.sop_uids() if kept else None
            )
            updates += self._outcomes(report, prepared, listing, local)
        await self._mark(job, updates)
        return True

    def _outcomes(
        self, report: StoreReport, prepared: Prepared, listing: Listing, local: LocalPatient
    ) -> list[InstanceUpdate]:
        updates: list[InstanceUpdate] = []
        for outcome in report.outcomes:
            plan = prepared.planned[outcome.index]
            if outcome.status is ImportStatus.FAILED:
                updates.append(
                    InstanceUpdate(
                        sop_instance_uid=plan.sop_instance_uid,
                        state=InstanceState.FAILED,
                        error_code="TargetRefused",
                        error_text=outcome.reason[:500],
                        attempted=True,
                    )
                )
                continue
            state = (
                InstanceState.STORED
                if outcome.status is ImportStatus.STORED
                else InstanceState.ALREADY_PRESENT
            )
            updates.append(
                InstanceUpdate(
                    sop_instance_uid=plan.sop_instance_uid,
                    state=state,
                    bytes=size_of(prepared.instances[outcome.index]),
                    attempted=True,
                )
            )
            if keeps_uids(plan):
                listing.add(prepared.parsed[plan.sop_instance_uid].header, local.mrn)
        return updates

    async def _verify(self, job: ImportJob) -> None:
        """The target must hold exactly the KOS's instances (under their new UIDs if remapped)."""
        done = await anyio.to_thread.run_sync(self._jobs.instances, job.id)
        expected = {
            i.sop_instance_uid
            for i in done
            if i.state in (InstanceState.STORED, InstanceState.ALREADY_PRESENT)
        }
        study = job.request.study_instance_uid
        present = await self._target.present(study)
        if not present and expected:
            # A remapped study lives under its new Study Instance UID.
            namespace = settings_from(job).namespace
            present = await self._target.present(remap_uid(study, namespace))
            expected = {remap_uid(u, namespace) for u in expected}
        ok = present == expected
        await anyio.to_thread.run_sync(
            lambda: self._jobs.record_verification(job.id, len(expected), len(present), ok=ok)
        )

    async def _mark(self, job: ImportJob, updates: list[InstanceUpdate]) -> None:
        if updates:
            await anyio.to_thread.run_sync(
                lambda: self._jobs.mark_instances(job.id, self._settings.owner, updates)
            )

    async def _hold(self, job: ImportJob, reason: str) -> None:
        await anyio.to_thread.run_sync(
            lambda: self._jobs.hold(job.id, reason, owner=self._settings.owner)
        )

    async def _heartbeat(self, job: ImportJob) -> None:
        await anyio.to_thread.run_sync(
            self._jobs.heartbeat, job.id, self._settings.owner, self._settings.lease_seconds
        )
