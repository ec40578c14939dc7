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

A crash loses at most the batch in flight: ``resume`` retrieves only what is
still pending.  When nothing is outstanding, the target is asked which SOP
Instance UIDs it holds for the study (QIDO-RS or C-FIND): it must hold
exactly the KOS's set; the job records the result and finishes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from pydicom import dcmread

from imagebridge.actors.initiating.client import PartnerClients, ReceivedDocument
from imagebridge.actors.initiating.import_plan import (
    local_patient_from,
    settings_from,
    target_objects,
)
from imagebridge.dicom.headers import parse_instance_header
from imagebridge.dicom.reconcile import plan_study, remap_uid
from imagebridge.dicom.reconcile_apply import apply_plan
from imagebridge.errors import ImageBridgeError, JobCancelled, JobLeaseLost
from imagebridge.importing.base import ImportStatus, ImportTarget
from imagebridge.model.directory import DirectorySnapshot
from imagebridge.model.imaging import ImagingDocumentLocator, InstanceHeader
from imagebridge.model.import_job import ImportJob, InstanceState, InstanceUpdate, JobInstance
from imagebridge.model.reconcile import (
    LocalPatient,
    PlanVerdict,
    ReconcilePlan,
    ReconcileSettings,
)
from imagebridge.model.retrieve import imaging_request_for
from imagebridge.store.jobs import JobStore
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
    owner: str = f"{os.uname().nodename}:{os.getpid()}"
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
    ) -> None:
        """*progress* is called with the job's fresh record after each batch."""
        self._progress = progress
        self._jobs = jobs
        self._clients = clients
        self._directory = directory
        self._target = target
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))

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
        return await anyio.to_thread.run_sync(self._jobs.get_job, job_id)

    async def _work(self, job: ImportJob) -> None:
        local = local_patient_from(job)
        if local is None:
            await self._hold(job, "no local patient: give the MRN or register the patient")
            return
        settings = settings_from(job)
        missing = await anyio.to_thread.run_sync(self._jobs.missing_instances, job.id)
        study = job.request.study_instance_uid
        held = await self._target.objects(study_instance_uid=study)
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
        for start in range(0, len(todo), self._settings.batch_size):
            await self._heartbeat(job)
            batch = todo[start : start + self._settings.batch_size]
            if not await self._batch(job, batch, local, settings):
                return  # held for review
            if self._progress is not None:
                self._progress(await anyio.to_thread.run_sync(self._jobs.get_job, job.id))
        await self._verify(job)
        await anyio.to_thread.run_sync(self._jobs.finish, job.id, self._settings.owner)

    async def _batch(
        self,
        job: ImportJob,
        batch: Sequence[JobInstance],
        local: LocalPatient,
        settings: ReconcileSettings,
    ) -> bool:
        """Retrieve, plan and store one batch; False when the job was held."""
        community = self._directory.get(job.request.imaging_community)
        if community is None:
            await self._fail_all(
                job, batch, "XDSUnknownCommunity", "imaging community not in the directory"
            )
            return True
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

        try:
            result = await client.retrieve_images(request, sink)
        except ImageBridgeError as exc:
            await self._fail_all(
                job, batch, exc.xds_error_code or "XDSUnavailableCommunity", exc.message
            )
            return True
        with result:
            wanted = {i.sop_instance_uid for i in batch}
            received = {d.response.document_unique_id: d for d in result.documents}
            updates = [
                InstanceUpdate(
                    sop_instance_uid=uid,
                    state=InstanceState.FAILED,
                    error_code=_error_for(result.errors, uid)[0],
                    error_text=_error_for(result.errors, uid)[1],
                    attempted=True,
                )
                for uid in sorted(wanted - received.keys())
            ]
            await self._mark(job, updates)
            if not received:
                return True
            headers = {uid: _header(d) for uid, d in received.items() if uid in wanted}
            target = await target_objects(self._target, list(headers.values()))
            plan = plan_study(
                list(headers.values()),
                local,
                settings,
                target,
                now=self._clock(),
                source=job.request.source_community_name[:64],
            )
            if plan.verdict is PlanVerdict.HOLD:
                reasons = sorted({i.text for p in plan.plans for i in p.conflicts})
                await self._mark(
                    job,
                    [
                        InstanceUpdate(sop_instance_uid=u, state=InstanceState.HELD, attempted=True)
                        for u in headers
                    ],
                )
                await self._hold(job, "; ".join(reasons)[:1000] or "held for review")
                return False
            await self._store(job, plan.plans, received)
        return True

    async def _store(
        self, job: ImportJob, plans: Sequence[ReconcilePlan], received: dict[str, ReceivedDocument]
    ) -> None:
        directory = self._settings.spool_dir
        with tempfile.TemporaryDirectory(prefix="imagebridge-import-", dir=directory) as tmp:
            paths: list[str] = []
            planned: list[ReconcilePlan] = []
            updates: list[InstanceUpdate] = []
            for plan in plans:
                if plan.verdict is PlanVerdict.ALREADY_STORED:
                    updates.append(
                        InstanceUpdate(
                            sop_instance_uid=plan.sop_instance_uid,
                            state=InstanceState.ALREADY_PRESENT,
                            attempted=True,
                        )
                    )
                    continue
                path = os.path.join(tmp, f"{len(paths)}.dcm")
                await anyio.to_thread.run_sync(
                    _rewrite, received[plan.sop_instance_uid], plan, path
                )
                paths.append(path)
                planned.append(plan)
            report = await self._target.store(paths)
            for outcome in report.outcomes:
                plan = planned[outcome.index]
                size = os.path.getsize(paths[outcome.index])
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
                else:
                    state = (
                        InstanceState.STORED
                        if outcome.status is ImportStatus.STORED
                        else InstanceState.ALREADY_PRESENT
                    )
                    updates.append(
                        InstanceUpdate(
                            sop_instance_uid=plan.sop_instance_uid,
                            state=state,
                            bytes=size,
                            attempted=True,
                        )
                    )
            await self._mark(job, updates)

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

    async def _fail_all(
        self, job: ImportJob, batch: Sequence[JobInstance], code: str, text: str
    ) -> None:
        await self._mark(
            job,
            [
                InstanceUpdate(
                    sop_instance_uid=i.sop_instance_uid,
                    state=InstanceState.FAILED,
                    error_code=code,
                    error_text=text[:500],
                    attempted=True,
                )
                for i in batch
            ],
        )

    async def _hold(self, job: ImportJob, reason: str) -> None:
        await anyio.to_thread.run_sync(
            lambda: self._jobs.hold(job.id, reason, owner=self._settings.owner)
        )

    async def _heartbeat(self, job: ImportJob) -> None:
        await anyio.to_thread.run_sync(
            self._jobs.heartbeat, job.id, self._settings.owner, self._settings.lease_seconds
        )


def _header(document: ReceivedDocument) -> InstanceHeader:
    with document.open() as stream:
        return parse_instance_header(stream, file_size=document.body.size)


def _rewrite(document: ReceivedDocument, plan: ReconcilePlan, path: str) -> None:
    """Apply *plan* to the received instance and write it to *path* (pixel data untouched)."""
    with document.open() as stream:
        dataset = dcmread(stream)
    apply_plan(dataset, plan)
    dataset.save_as(path, enforce_file_format=True)


def _error_for(errors: Sequence[Any], uid: str) -> tuple[str, str]:
    for error in errors:
        if uid in error.code_context:
            return error.error_code, error.code_context[:500]
    return "XDSDocumentUniqueIdError", f"{uid} was not returned"
