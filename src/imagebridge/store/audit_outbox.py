"""Audit Trail and Node Authentication [ITI-20], Secure Node: the durable audit outbox.

Every ATNA audit message is written to ``audit_outbox`` before anything tries
to send it; the sender (:mod:`imagebridge.security.audit_trail`) takes the
messages that are due, sends them to the audit repository and marks each one
sent, or counts the attempt and sets the next one (backoff).  A message stays
until it is sent; sent messages are purged after a retention period.

Synchronous SQLAlchemy Core, thread-safe like :class:`~imagebridge.store.Store`
(async code calls it through ``anyio.to_thread.run_sync``).  The messages hold
patient data by nature: nothing here logs them, and database errors become
:class:`~imagebridge.errors.StoreError` without values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, update

from imagebridge.store.access import EngineAccess
from imagebridge.store.schema import audit_outbox

_O = audit_outbox


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One audit message to write: when it was made, what it audits, its XML text."""

    created_at: datetime
    event: str
    message: str


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """One unsent message taken from the outbox."""

    id: int
    created_at: datetime
    event: str
    message: str
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """How many messages are waiting, and how many were sent (still kept)."""

    pending: int
    sent: int
    failing: int
    """Pending messages that were tried at least once."""


class AuditOutbox(EngineAccess):
    """The ``audit_outbox`` table: add, take due, mark sent or failed, purge."""

    def add(self, entries: Sequence[OutboxEntry]) -> int:
        """Write *entries* in one transaction (one multi-row insert); how many were written."""
        if not entries:
            return 0
        rows = [
            {
                "created_at": e.created_at,
                "event": e.event,
                "message": e.message,
                "attempts": 0,
                "next_attempt_at": e.created_at,
            }
            for e in entries
        ]
        with self._writing() as conn:
            conn.execute(insert(_O), rows)
        return len(rows)

    def due(self, now: datetime, limit: int) -> list[PendingMessage]:
        """Unsent messages whose next attempt is due, oldest first."""
        query = (
            select(_O.c.id, _O.c.created_at, _O.c.event, _O.c.message, _O.c.attempts)
            .where(and_(_O.c.sent_at.is_(None), _O.c.next_attempt_at <= now))
            .order_by(_O.c.id)
            .limit(limit)
        )
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return [PendingMessage(r.id, r.created_at, r.event, r.message, r.attempts) for r in rows]

    def next_due(self) -> datetime | None:
        """When the earliest unsent message is due (None: nothing is waiting)."""
        query = select(func.min(_O.c.next_attempt_at)).where(_O.c.sent_at.is_(None))
        with self._reading() as conn:
            value: datetime | None = conn.execute(query).scalar()
        return value

    def mark_sent(self, ids: Iterable[int], now: datetime) -> None:
        """Record that the messages *ids* reached the audit repository."""
        chosen = list(ids)
        if not chosen:
            return
        with self._writing() as conn:
            conn.execute(update(_O).where(_O.c.id.in_(chosen)).values(sent_at=now, last_error=None))

    def mark_failed(self, attempts: Sequence[tuple[PendingMessage, datetime]], error: str) -> None:
        """Count one more attempt for each message, with its next attempt time and *error*."""
        if not attempts:
            return
        with self._writing() as conn:
            for message, next_at in attempts:
                conn.execute(
                    update(_O)
                    .where(_O.c.id == message.id)
                    .values(
                        attempts=_O.c.attempts + 1,
                        next_attempt_at=next_at,
                        last_error=error[:500],
                    )
                )

    def purge_sent(self, before: datetime) -> int:
        """Delete messages sent before *before*; how many were deleted."""
        with self._writing() as conn:
            done = conn.execute(
                delete(_O).where(and_(_O.c.sent_at.is_not(None), _O.c.sent_at < before))
            )
        return int(done.rowcount or 0)

    def counts(self) -> OutboxCounts:
        """Pending, sent and failing message counts (for health checks and tests)."""
        pending = func.sum(_case(_O.c.sent_at.is_(None)))
        sent = func.sum(_case(_O.c.sent_at.is_not(None)))
        failing = func.sum(_case(and_(_O.c.sent_at.is_(None), _O.c.attempts > 0)))
        with self._reading() as conn:
            row = conn.execute(select(pending, sent, failing)).one()
        return OutboxCounts(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))


def _case(condition: Any) -> Any:
    return case((condition, 1), else_=0)


def backoff(attempts: int, initial: float, ceiling: float) -> timedelta:
    """Delay after the *attempts*-th failed attempt: *initial*, doubled per attempt, capped."""
    seconds = initial * 2 ** min(max(attempts - 1, 0), 30)
    return timedelta(seconds=min(seconds, ceiling))
