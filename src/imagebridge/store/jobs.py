"""Imaging Document Consumer, durable import jobs: one study of one patient into one target.

:class:`JobStore` keeps the jobs, the state of every instance their KOS
lists, and a history of events, in the store's database (SQLAlchemy Core,
synchronous and thread-safe like :class:`~imagebridge.store.Store`; each
public method is one transaction, :meth:`JobStore.mark_instances` one per
batch).

Workers and leases: a worker *claims* a job with one conditional
``UPDATE ... WHERE state = 'pending' OR (state = 'running' AND lease expired)``
(the candidate is picked by a sub-select with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite has one writer, so the statement alone is atomic).  The
claim sets the owner and a lease expiry; the worker renews it with
:meth:`~JobStore.heartbeat`.  A worker that crashed stops renewing, its
lease expires, and another worker claims the job and retrieves only the
instances still missing.  Every write a worker makes is fenced by its
ownership (``state = 'running' AND lease_owner = owner``, in the same
transaction): a worker that lost its lease, or whose job was cancelled,
gets :class:`~imagebridge.errors.JobLeaseLost` /
:class:`~imagebridge.errors.JobCancelled` and stops.

A job finishes only when no instance is pending or retrieved; it ends
``completed`` when every instance is stored or already present (and a
recorded verification, if any, is ok), ``completed_with_errors`` otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select
from sqlalchemy.exc import IntegrityError

from imagebridge.errors import JobError, JobNotFound, JobStateError
from imagebridge.model.import_job import (
    OUTSTANDING,
    ImportJob,
    InstanceState,
    InstanceUpdate,
    JobEvent,
    JobInstance,
    JobRequest,
    JobState,
    JobVerification,
    KosInstance,
)
from imagebridge.store import database, job_rows, job_writes
from imagebridge.store.access import EngineAccess
from imagebridge.store.batches import CHUNK, chunked
from imagebridge.store.job_writes import FINAL
from imagebridge.store.leases import dead_local_owner
from imagebridge.store.schema import import_instances, import_jobs
from imagebridge.store.store import _translated

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CLAIM_RETRIES = 5
"""Claims lost to concurrent workers (PostgreSQL) before :meth:`JobStore.claim_next` gives up."""

_J = import_jobs
_I = import_instances


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default clock)."""
    return datetime.now(UTC)


class JobStore(EngineAccess):
    """Durable import jobs: creation, worker leases, per-instance progress, outcome."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        super().__init__(engine)
        self._clock = clock

    @classmethod
    def open(cls, database_url: str, *, migrate: bool = True, clock: Clock = utc_now) -> JobStore:
        """Open the database at *database_url* (engine settings and migrations as for Store)."""
        with _translated():
            engine = database.open_engine(database_url)
            if migrate:
                database.upgrade(engine)
        return cls(engine, clock=clock)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def _event(self, conn: Connection, job_id: int, message: str) -> None:
        job_writes.event(conn, job_id, self._clock(), message)
        logger.debug("import job %s: %s", job_id, message)

    # --- creation ---------------------------------------------------------------------

    def create_job(self, request: JobRequest) -> tuple[ImportJob, bool]:
        """The job for *request*'s (study, foreign patient, target), and True if made now.

        Idempotent: an existing job (whatever its state) is returned unchanged
        with False, also when another process created it concurrently.
        """
        find = select(_J.c.id).where(job_rows.key_condition(request))
        with _translated():
            try:
                with self._write_lock, self._engine.begin() as conn:
                    existing = conn.execute(find).scalar()
                    if existing is None:
                        values = job_rows.request_values(request, self._clock())
                        new_id = conn.execute(insert(_J).returning(_J.c.id), values).scalar_one()
                        self._event(conn, new_id, f"created for target {request.target_name}")
            except IntegrityError:  # a concurrent caller inserted it after our look-up
                with self._engine.connect() as conn:
                    existing = conn.execute(find).scalar()
                if existing is None:
                    raise
        if existing is not None:
            return self.get_job(existing), False
        return self.get_job(new_id), True

    def add_instances(self, job_id: int, instances: Iterable[KosInstance]) -> int:
        """Add the KOS's instances to a job; returns how many were new (listed ones are kept)."""
        wanted: dict[str, KosInstance] = {}
        for instance in instances:
            wanted.setdefault(instance.sop_instance_uid, instance)
        with self._writing() as conn:
            state = job_writes.state_of(conn, job_id)
            if state in FINAL:
                raise JobStateError(f"job {job_id} is {state}; no instances can be added")
            now = self._clock()
            added = job_writes.insert_instances(conn, job_id, wanted, now)
            if added:
                job_writes.update_job(conn, job_id, {}, now)
                self._event(conn, job_id, f"{added} instances listed")
        return added

    def set_local_patient(self, job_id: int, patient_id: str, issuer: str) -> None:
        """Record the local MRN and issuer the foreign patient was resolved to."""
        values = {"local_patient_id": patient_id, "local_patient_issuer": issuer}
        with self._writing() as conn:
            job_writes.update_job(conn, job_id, values, self._clock())

    def set_reconciliation(
        self, job_id: int, reconciliation: Mapping[str, Any], patient_id: str, issuer: str | None
    ) -> None:
        """Replace a held job's reconciliation snapshot and local patient (a review decision)."""
        values = {
            "reconciliation": dict(reconciliation),
            "local_patient_id": patient_id,
            "local_patient_issuer": issuer,
        }
        with self._writing() as conn:
            if job_writes.state_of(conn, job_id) is not JobState.HELD:
                raise JobStateError(f"job {job_id} is not held; it cannot be reviewed")
            job_writes.update_job(conn, job_id, values, self._clock())
            self._event(conn, job_id, "review: local patient and accepted conflicts recorded")

    # --- leases -----------------------------------------------------------------------

    def claim_next(self, owner: str, lease_seconds: float) -> ImportJob | None:
        """Claim the oldest pending job, or a running one whose lease expired; None if none."""
        job_writes.check_lease(owner, lease_seconds)
        for _ in range(CLAIM_RETRIES):
            now = self._clock()
            condition = _J.c.id == job_writes.next_claimable(now)
            with self._writing() as conn:
                claimed = job_writes.claim(conn, condition, owner, lease_seconds, now)
                if claimed is None:  # none left, or another worker won the race (PostgreSQL)
                    left = select(_J.c.id).where(job_writes.claimable(now)).limit(1)
                    if conn.execute(left).first() is None:
                        return None
                    continue
            return self.get_job(claimed)
        return None

    def claim(self, job_id: int, owner: str, lease_seconds: float) -> ImportJob | None:
        """Claim one job; None while another worker's lease is live or it is not pending.

        *owner* claiming the job it already runs renews its lease.
        """
        job_writes.check_lease(owner, lease_seconds)
        now = self._clock()
        mine = and_(_J.c.state == JobState.RUNNING.value, _J.c.lease_owner == owner)
        condition = and_(_J.c.id == job_id, job_writes.claimable(now) | mine)
        with self._writing() as conn:
            claimed = job_writes.claim(conn, condition, owner, lease_seconds, now)
            if claimed is None:
                job_writes.state_of(conn, job_id)  # JobNotFound for an unknown id
                return None
        return self.get_job(claimed)

    def unattended(self, pending_grace: float, limit: int = 20) -> list[int]:
        """Jobs no live worker runs, oldest first, for a sweeping worker to claim.

        A running job whose lease expired, or whose owner is an ended process of
        this host (released here, so it can be claimed at once); a pending job
        nobody touched for *pending_grace* seconds (its creator had its chance).
        """
        now = self._clock()
        stale_pending = and_(
            _J.c.state == JobState.PENDING.value,
            _J.c.updated_at < now - timedelta(seconds=pending_grace),
        )
        query = (
            select(_J.c.id, _J.c.state, _J.c.lease_owner, _J.c.lease_expires_at)
            .where(or_(stale_pending, _J.c.state == JobState.RUNNING.value))
            .order_by(_J.c.created_at, _J.c.id)
            .limit(limit * 5)
        )
        with self._reading() as conn:
            rows = conn.execute(query).all()
        found: list[int] = []
        for row in rows:
            if row.state == JobState.RUNNING.value:
                if dead_local_owner(row.lease_owner) and row.lease_expires_at >= now:
                    with contextlib.suppress(JobError):
                        self.release(row.id, row.lease_owner)
                elif row.lease_expires_at is None or row.lease_expires_at >= now:
                    continue  # a live worker runs it
            found.append(int(row.id))
        return found[:limit]

    def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> None:
        """Renew *owner*'s lease; JobLeaseLost/JobCancelled when it no longer runs the job."""
        job_writes.check_lease(owner, lease_seconds)
        with self._writing() as conn:
            now = self._clock()
            expires = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
            job_writes.fence(conn, job_id, owner, now, expires)

    def release(self, job_id: int, owner: str) -> None:
        """Give a running job back (pending, no lease), for example on a graceful shutdown."""
        with self._writing() as conn:
            unleased = job_writes.unleased(JobState.PENDING)
            job_writes.fence(conn, job_id, owner, self._clock(), unleased)
            self._event(conn, job_id, f"released by {owner}")

    def is_cancelled(self, job_id: int) -> bool:
        """True once the job was cancelled (a runner checks this between batches)."""
        with self._reading() as conn:
            return job_writes.state_of(conn, job_id) is JobState.CANCELLED

    # --- progress ---------------------------------------------------------------------

    def instances(
        self, job_id: int, states: Collection[InstanceState] | None = None
    ) -> list[JobInstance]:
        """The job's instances (optionally only those in *states*), by series then SOP UID."""
        query = select(_I).where(_I.c.job_id == job_id)
        if states is not None:
            query = query.where(_I.c.state.in_([s.value for s in states]))
        query = query.order_by(_I.c.series_instance_uid, _I.c.sop_instance_uid)
        with self._reading() as conn:
            job_writes.state_of(conn, job_id)
            return [job_rows.instance_record(r) for r in conn.execute(query).mappings()]

    def missing_instances(self, job_id: int) -> list[JobInstance]:
        """Instances still to retrieve: pending, or retrieved but not stored (lost in a crash).

        Stored, already present, failed and held instances are left out.
        """
        return self.instances(job_id, OUTSTANDING)

    def mark_instances(
        self, job_id: int, owner: str, updates: Iterable[InstanceUpdate], *, batch: int = CHUNK
    ) -> int:
        """Record new instance states, one transaction per *batch* updates; returns how many.

        Each transaction first checks that *owner* still runs the job
        (JobLeaseLost or JobCancelled otherwise; earlier batches stay written).
        An update for an instance the job does not list raises JobStateError
        and its batch is not written.
        """
        total = 0
        for group in chunked(updates, batch):
            with self._writing() as conn:
                now = self._clock()
                job_writes.fence(conn, job_id, owner, now, {})
                total += job_writes.mark(conn, job_id, group, now)
        return total

    def record_verification(
        self, job_id: int, expected: int, found: int, *, ok: bool | None = None
    ) -> JobVerification:
        """Record the target's count of the study (C-FIND/QIDO-RS); *ok* defaults to equality."""
        now = self._clock()
        result = JobVerification(expected, found, expected == found if ok is None else ok, now)
        values = {
            "expected_count": expected,
            "found_count": found,
            "verified_ok": result.ok,
            "verified_at": now,
        }
        with self._writing() as conn:
            job_writes.update_job(conn, job_id, values, now)
            verdict = "ok" if result.ok else "MISMATCH"
            self._event(conn, job_id, f"verified: {found} of {expected} found ({verdict})")
        return result

    # --- outcome ----------------------------------------------------------------------

    def finish(self, job_id: int, owner: str) -> JobState:
        """End *owner*'s running job: completed or completed_with_errors.

        Refused (JobStateError) while any instance is pending or retrieved.
        """
        with self._writing() as conn:
            state = job_writes.finish(conn, job_id, owner, self._clock())
            self._event(conn, job_id, f"finished: {state}")
        return state

    def fail(self, job_id: int, owner: str, error: str) -> None:
        """End *owner*'s running job as failed (the job as a whole could not be done)."""
        with self._writing() as conn:
            now = self._clock()
            values = {**job_writes.unleased(JobState.FAILED), "last_error": error}
            job_writes.fence(conn, job_id, owner, now, {**values, "finished_at": now})
            self._event(conn, job_id, f"failed: {error}")

    def hold(self, job_id: int, reason: str, *, owner: str | None = None) -> None:
        """Put a pending or running job on hold for a person (reconciliation conflicts...).

        With *owner*, only that worker's running job is held (the runner's case).
        """
        with self._writing() as conn:
            now = self._clock()
            values = {**job_writes.unleased(JobState.HELD), "hold_reason": reason}
            if owner is not None:
                job_writes.fence(conn, job_id, owner, now, values)
            else:
                allowed = (JobState.PENDING, JobState.RUNNING)
                job_writes.transition(
                    conn, job_id, allowed=allowed, values=values, now=now, what="held"
                )
            self._event(conn, job_id, f"held: {reason}")

    def requeue(self, job_id: int, *, retry_failed: bool = True) -> ImportJob:
        """Make a held, failed or completed_with_errors job pending again (``jobs resume``).

        With *retry_failed*, its failed and held instances become pending too.
        """
        allowed = (
            JobState.PENDING,
            JobState.HELD,
            JobState.FAILED,
            JobState.COMPLETED_WITH_ERRORS,
        )
        values = {
            **job_writes.unleased(JobState.PENDING),
            "hold_reason": None,
            "finished_at": None,
        }
        with self._writing() as conn:
            now = self._clock()
            job_writes.transition(
                conn, job_id, allowed=allowed, values=values, now=now, what="requeued"
            )
            retried = job_writes.retry_errors(conn, job_id, now) if retry_failed else 0
            self._event(conn, job_id, f"requeued ({retried} instances to retry)")
        return self.get_job(job_id)

    def cancel(self, job_id: int) -> ImportJob:
        """Cancel a job that has not completed (a running one stops at its next batch).

        Cancelling a cancelled job changes nothing; a completed one raises JobStateError.
        """
        allowed = [s for s in JobState if s not in FINAL]
        with self._writing() as conn:
            if job_writes.state_of(conn, job_id) is not JobState.CANCELLED:
                now = self._clock()
                values = {**job_writes.unleased(JobState.CANCELLED), "finished_at": now}
                job_writes.transition(
                    conn, job_id, allowed=allowed, values=values, now=now, what="cancelled"
                )
                self._event(conn, job_id, "cancelled")
        return self.get_job(job_id)

    # --- reading ----------------------------------------------------------------------

    def get_job(self, job_id: int) -> ImportJob:
        """One job with its instance counts; JobNotFound if there is none."""
        with self._reading() as conn:
            row = job_rows.job_row(conn, job_id)
            if row is None:
                raise JobNotFound(f"no import job {job_id}")
            return job_rows.jobs_with_counts(conn, [row])[0]

    def list_jobs(
        self,
        *,
        states: Collection[JobState] | None = None,
        study_instance_uid: str | None = None,
        limit: int = 50,
    ) -> list[ImportJob]:
        """Jobs, most recently updated first, optionally filtered."""
        query = select(_J)
        if states is not None:
            query = query.where(_J.c.state.in_([s.value for s in states]))
        if study_instance_uid is not None:
            query = query.where(_J.c.study_instance_uid == study_instance_uid)
        query = query.order_by(_J.c.updated_at.desc(), _J.c.id.desc()).limit(limit)
        with self._reading() as conn:
            return job_rows.jobs_with_counts(conn, list(conn.execute(query).mappings()))

    def events(self, job_id: int, limit: int = 20) -> list[JobEvent]:
        """The job's latest *limit* events, oldest first."""
        with self._reading() as conn:
            job_writes.state_of(conn, job_id)
            return job_rows.events_of(conn, job_id, limit)

    def add_event(self, job_id: int, message: str) -> None:
        """Add a line to the job's history (keep patient identifiers out of it)."""
        with self._writing() as conn:
            job_writes.state_of(conn, job_id)
            self._event(conn, job_id, message)
