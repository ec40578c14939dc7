"""Imaging Document Consumer, import jobs: the conditional writes behind JobStore.

Every state change is one ``UPDATE ... WHERE`` naming the states (and, for
a worker, the lease owner) it may start from, so concurrent callers cannot
both succeed, on SQLite (one writer) and PostgreSQL (row locks, the WHERE is
re-checked after a wait) alike.  When nothing matched, the caller is told
why with a typed :class:`~imagebridge.errors.JobError`.  The time is passed
in; these functions read no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)

from imagebridge.errors import JobCancelled, JobLeaseLost, JobNotFound, JobStateError
from imagebridge.model.import_job import (
    ERRORS,
    OUTSTANDING,
    InstanceState,
    InstanceUpdate,
    JobState,
    KosInstance,
)
from imagebridge.store.batches import chunked
from imagebridge.store.schema import import_instances, import_job_events, import_jobs

_J = import_jobs
_I = import_instances
FINAL = (JobState.COMPLETED, JobState.COMPLETED_WITH_ERRORS, JobState.CANCELLED)


def check_lease(owner: str, lease_seconds: float) -> None:
    """Refuse an empty owner or a lease that is not positive (programming errors)."""
    if not owner:
        raise ValueError("a job lease needs a non-empty owner")
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")


def unleased(state: JobState | None) -> dict[str, Any]:
    """Column values that drop the lease (and set *state*)."""
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if state is not None:
        values["state"] = state.value
    return values


def state_of(conn: Connection, job_id: int) -> JobState:
    """The job's state; JobNotFound when there is no such job."""
    state = conn.execute(select(_J.c.state).where(_J.c.id == job_id)).scalar()
    if state is None:
        raise JobNotFound(f"no import job {job_id}")
    return JobState(state)


def event(conn: Connection, job_id: int, now: datetime, message: str) -> None:
    """Add one line to the job's history."""
    conn.execute(insert(import_job_events), {"job_id": job_id, "at": now, "message": message})


# --- leases ---------------------------------------------------------------------------


def claimable(now: datetime) -> ColumnElement[bool]:
    """Pending jobs, and running jobs whose worker's lease has expired (it crashed or hung)."""
    expired = and_(_J.c.state == JobState.RUNNING.value, _J.c.lease_expires_at < now)
    return or_(_J.c.state == JobState.PENDING.value, expired)


def next_claimable(now: datetime) -> ColumnElement[Any]:
    """Sub-select of the oldest claimable job; PostgreSQL skips rows other claimers lock."""
    return (
        select(_J.c.id)
        .where(claimable(now))
        .order_by(_J.c.created_at, _J.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def claim(
    conn: Connection,
    condition: ColumnElement[bool],
    owner: str,
    lease_seconds: float,
    now: datetime,
) -> int | None:
    """Take the job matching *condition* for *owner*; its id, or None if none matched."""
    values = {
        "state": JobState.RUNNING.value,
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "heartbeat_at": now,
        "updated_at": now,
        "attempts": _J.c.attempts + 1,
    }
    statement = update(_J).where(condition).values(values).returning(_J.c.id, _J.c.attempts)
    row = conn.execute(statement).first()
    if row is None:
        return None
    event(conn, row.id, now, f"claimed by {owner} (attempt {row.attempts})")
    return int(row.id)


def owned(job_id: int, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The job runs under *owner*'s lease."""
    return (_J.c.id == job_id, _J.c.state == JobState.RUNNING.value, _J.c.lease_owner == owner)


def fence(
    conn: Connection, job_id: int, owner: str, now: datetime, values: Mapping[str, Any]
) -> None:
    """Update the job only if *owner* runs it; otherwise raise why not."""
    statement = update(_J).where(*owned(job_id, owner))
    if conn.execute(statement.values(updated_at=now, heartbeat_at=now, **values)).rowcount:
        return
    state = state_of(conn, job_id)
    if state is JobState.CANCELLED:
        raise JobCancelled(f"job {job_id} was cancelled")
    raise JobLeaseLost(f"job {job_id} is no longer run by {owner} (now {state})")


def transition(
    conn: Connection,
    job_id: int,
    *,
    allowed: Collection[JobState],
    values: Mapping[str, Any],
    now: datetime,
    what: str,
) -> None:
    """Update the job if its state is one of *allowed*; JobStateError otherwise."""
    statement = update(_J).where(_J.c.id == job_id, _J.c.state.in_([s.value for s in allowed]))
    if not conn.execute(statement.values(updated_at=now, **values)).rowcount:
        state = state_of(conn, job_id)
        raise JobStateError(f"job {job_id} is {state} and cannot be {what}")


def update_job(conn: Connection, job_id: int, values: Mapping[str, Any], now: datetime) -> None:
    """Update the job whatever its state; JobNotFound when there is none."""
    statement = update(_J).where(_J.c.id == job_id).values(updated_at=now, **values)
    if not conn.execute(statement).rowcount:
        raise JobNotFound(f"no import job {job_id}")


# --- instances ------------------------------------------------------------------------


def insert_instances(
    conn: Connection, job_id: int, wanted: Mapping[str, KosInstance], now: datetime
) -> int:
    """Insert the instances of *wanted* (by SOP Instance UID) the job does not list yet."""
    known: set[str] = set()
    for batch in chunked(wanted):
        query = select(_I.c.sop_instance_uid).where(
            _I.c.job_id == job_id, _I.c.sop_instance_uid.in_(batch)
        )
        known.update(conn.execute(query).scalars())
    new = [
        {
            "job_id": job_id,
            "sop_instance_uid": uid,
            "series_instance_uid": i.series_instance_uid,
            "sop_class_uid": i.sop_class_uid,
            "repository_unique_id": i.repository_unique_id,
            "state": InstanceState.PENDING.value,
            "attempts": 0,
            "updated_at": now,
        }
        for uid, i in wanted.items()
        if uid not in known
    ]
    if new:
        conn.execute(insert(_I), new)
    return len(new)


_MARK = (
    update(_I)
    .where(_I.c.job_id == bindparam("job"), _I.c.sop_instance_uid == bindparam("sop"))
    .values(
        state=bindparam("new_state"),
        error_code=bindparam("new_code"),
        error_text=bindparam("new_text"),
        bytes=func.coalesce(bindparam("new_bytes", type_=_I.c.bytes.type), _I.c.bytes),
        attempts=_I.c.attempts + bindparam("tried"),
        updated_at=bindparam("now", type_=_I.c.updated_at.type),
    )
)


def mark(conn: Connection, job_id: int, updates: Sequence[InstanceUpdate], now: datetime) -> int:
    """Write one batch of instance updates (JobStateError for an instance the job lacks)."""
    by_uid = {u.sop_instance_uid: u for u in updates}
    if not by_uid:
        return 0
    listed = select(func.count()).where(
        _I.c.job_id == job_id, _I.c.sop_instance_uid.in_(list(by_uid))
    )
    unknown = len(by_uid) - conn.execute(listed).scalar_one()
    if unknown:
        raise JobStateError(f"{unknown} updated instances are not listed by job {job_id}")
    params = [
        {
            "job": job_id,
            "sop": u.sop_instance_uid,
            "new_state": u.state.value,
            "new_code": u.error_code,
            "new_text": u.error_text,
            "new_bytes": u.bytes,
            "tried": 1 if u.attempted else 0,
            "now": now,
        }
        for u in by_uid.values()
    ]
    conn.execute(_MARK, params)
    return len(params)


def retry_errors(conn: Connection, job_id: int, now: datetime) -> int:
    """Failed and held instances become pending again; returns how many."""
    statement = (
        update(_I)
        .where(_I.c.job_id == job_id, _I.c.state.in_([s.value for s in ERRORS]))
        .values(state=InstanceState.PENDING.value, updated_at=now)
    )
    return int(conn.execute(statement).rowcount)


# --- outcome --------------------------------------------------------------------------


def finish(conn: Connection, job_id: int, owner: str, now: datetime) -> JobState:
    """End *owner*'s running job unless an instance is outstanding (JobStateError then).

    One statement decides: completed when no instance failed or is held and
    the verification (if recorded) is ok, completed_with_errors otherwise.
    """
    outstanding = (_I.c.job_id == job_id, _I.c.state.in_([s.value for s in OUTSTANDING]))
    errors = exists().where(_I.c.job_id == job_id, _I.c.state.in_([s.value for s in ERRORS]))
    final = case(
        (or_(errors, _J.c.verified_ok == false()), JobState.COMPLETED_WITH_ERRORS.value),
        else_=JobState.COMPLETED.value,
    )
    values = {**unleased(None), "state": final, "finished_at": now, "updated_at": now}
    statement = (
        update(_J)
        .where(*owned(job_id, owner), not_(exists().where(*outstanding)))
        .values(values)
        .returning(_J.c.state)
    )
    state = conn.execute(statement).scalar()
    if state is not None:
        return JobState(state)
    fence(conn, job_id, owner, now, {})  # raises when the job is not owner's (rolled back)
    count = conn.execute(select(func.count()).where(*outstanding)).scalar_one()
    raise JobStateError(f"job {job_id} has {count} instances outstanding")
