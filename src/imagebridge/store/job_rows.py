"""Imaging Document Consumer, import jobs: conversions between job rows and model values.

Also the read queries :class:`~imagebridge.store.jobs.JobStore` shares
between its methods (a job with its instance counts, the events).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.import_job import (
    ImportJob,
    InstanceState,
    JobEvent,
    JobInstance,
    JobRequest,
    JobState,
    JobVerification,
)
from imagebridge.store.batches import chunked
from imagebridge.store.schema import import_instances, import_job_events, import_jobs

Row = Mapping[Any, Any]


def request_values(request: JobRequest, now: datetime) -> dict[str, Any]:
    """The ``import_jobs`` row of a new job."""
    return {
        "created_at": now,
        "updated_at": now,
        "state": JobState.PENDING.value,
        "source_community_id": request.source_community.oid,
        "source_community_name": request.source_community_name,
        "imaging_community_id": request.imaging_community.oid,
        "foreign_patient_id": request.foreign_patient.id,
        "foreign_patient_issuer": request.foreign_patient.assigning_authority,
        "local_patient_id": request.local_patient_id,
        "local_patient_issuer": request.local_patient_issuer,
        "study_instance_uid": request.study_instance_uid,
        "kos_document_id": request.kos_document_id,
        "kos_repository_id": request.kos_repository_id,
        "target_name": request.target_name,
        "target_kind": request.target_kind,
        "reconciliation": dict(request.reconciliation),
        "attempts": 0,
    }


def key_condition(request: JobRequest) -> Any:
    """The job's identity: study, foreign patient and target."""
    return and_(
        import_jobs.c.study_instance_uid == request.study_instance_uid,
        import_jobs.c.foreign_patient_id == request.foreign_patient.id,
        import_jobs.c.foreign_patient_issuer == request.foreign_patient.assigning_authority,
        import_jobs.c.target_name == request.target_name,
    )


def job_record(row: Row, counts: Mapping[InstanceState, int]) -> ImportJob:
    """An :class:`ImportJob` from its row and instance counts."""
    request = JobRequest(
        source_community=HomeCommunityId(row["source_community_id"]),
        source_community_name=row["source_community_name"],
        imaging_community=HomeCommunityId(row["imaging_community_id"]),
        foreign_patient=PatientId(row["foreign_patient_id"], row["foreign_patient_issuer"]),
        study_instance_uid=row["study_instance_uid"],
        kos_document_id=row["kos_document_id"],
        kos_repository_id=row["kos_repository_id"],
        target_name=row["target_name"],
        target_kind=row["target_kind"],
        reconciliation=dict(row["reconciliation"] or {}),
        local_patient_id=row["local_patient_id"],
        local_patient_issuer=row["local_patient_issuer"],
    )
    verification = None
    if row["verified_at"] is not None:
        verification = JobVerification(
            row["expected_count"], row["found_count"], bool(row["verified_ok"]), row["verified_at"]
        )
    return ImportJob(
        id=row["id"],
        state=JobState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        request=request,
        verification=verification,
        last_error=row["last_error"],
        hold_reason=row["hold_reason"],
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        heartbeat_at=row["heartbeat_at"],
        finished_at=row["finished_at"],
        counts=counts,
    )


def instance_record(row: Row) -> JobInstance:
    """A :class:`JobInstance` from its ``import_instances`` row."""
    return JobInstance(
        sop_instance_uid=row["sop_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        repository_unique_id=row["repository_unique_id"],
        state=InstanceState(row["state"]),
        attempts=row["attempts"],
        error_code=row["error_code"],
        error_text=row["error_text"],
        bytes=row["bytes"],
        updated_at=row["updated_at"],
    )


def state_counts(conn: Connection, job_ids: Collection[int]) -> dict[int, dict[InstanceState, int]]:
    """Per job, how many of its instances are in each state (states with none left out)."""
    counts: dict[int, dict[InstanceState, int]] = {job_id: {} for job_id in job_ids}
    t = import_instances
    for batch in chunked(job_ids):
        query = (
            select(t.c.job_id, t.c.state, func.count())
            .where(t.c.job_id.in_(batch))
            .group_by(t.c.job_id, t.c.state)
        )
        for job_id, state, count in conn.execute(query):
            counts[job_id][InstanceState(state)] = count
    return counts


def jobs_with_counts(conn: Connection, found: list[Row]) -> list[ImportJob]:
    """Job records of *found* rows, each with its instance counts."""
    counts = state_counts(conn, [r["id"] for r in found])
    return [job_record(r, counts[r["id"]]) for r in found]


def job_row(conn: Connection, job_id: int) -> Row | None:
    """One job's row, or None."""
    return conn.execute(select(import_jobs).where(import_jobs.c.id == job_id)).mappings().first()


def events_of(conn: Connection, job_id: int, limit: int) -> list[JobEvent]:
    """The job's latest *limit* events, oldest first."""
    e = import_job_events
    query = select(e.c.at, e.c.message).where(e.c.job_id == job_id)
    latest = conn.execute(query.order_by(e.c.id.desc()).limit(limit)).all()
    return [JobEvent(at, message) for at, message in reversed(latest)]
