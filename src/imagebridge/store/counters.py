"""Performance measures (QBD section 5): the ``transaction_counters`` table.

One row per (month, partner, transaction, role) with requests, errors, the
latency sum (so a mean over any period is exact), imaging studies and
documents returned.  :meth:`TransactionCounters.add` adds deltas with one
UPSERT (``INSERT ... ON CONFLICT (month, partner, transaction, role) DO UPDATE
SET requests = requests + excluded.requests, ...``), written with SQLAlchemy's
SQLite and PostgreSQL dialect inserts, so concurrent processes add up
correctly on either database.

Synchronous and thread-safe like :class:`~imagebridge.store.Store`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, func, select
from sqlalchemy.dialects import postgresql, sqlite

from imagebridge.store.access import EngineAccess
from imagebridge.store.schema import transaction_counters

_C = transaction_counters
_KEY = ("month", "partner", "transaction", "role")
_VALUES = ("requests", "errors", "latency_ms_total", "studies", "documents")


@dataclass(frozen=True, slots=True, order=True)
class CounterKey:
    """Which counters: month (``YYYY-MM``, UTC), partner, transaction code, role."""

    month: str
    partner: str
    transaction: str
    role: str


@dataclass(slots=True)
class CounterValues:
    """The counters of one key (or the deltas to add to them)."""

    requests: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    studies: int = 0
    documents: int = 0

    def add(self, other: CounterValues) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_ms_total += other.latency_ms_total
        self.studies += other.studies
        self.documents += other.documents

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_total / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class CounterRow:
    key: CounterKey
    values: CounterValues


def upsert_statement(dialect: str) -> Insert:
    """The adding UPSERT for *dialect* (``sqlite`` or ``postgresql``), executemany-ready."""
    if dialect == "postgresql":
        pg = postgresql.insert(_C)
        return pg.on_conflict_do_update(
            index_elements=[_C.c[k] for k in _KEY],
            set_={k: _C.c[k] + pg.excluded[k] for k in _VALUES},
        )
    if dialect == "sqlite":
        lite = sqlite.insert(_C)
        return lite.on_conflict_do_update(
            index_elements=[_C.c[k] for k in _KEY],
            set_={k: _C.c[k] + lite.excluded[k] for k in _VALUES},
        )
    raise NotImplementedError(f"no UPSERT for the {dialect} dialect")


class TransactionCounters(EngineAccess):
    """Per-month, per-partner transaction counters: add deltas, read a month, read totals."""

    def add(self, deltas: Mapping[CounterKey, CounterValues]) -> None:
        """Add *deltas* to the stored counters, in one transaction."""
        if not deltas:
            return
        rows = [
            {
                "month": k.month,
                "partner": k.partner,
                "transaction": k.transaction,
                "role": k.role,
                "requests": v.requests,
                "errors": v.errors,
                "latency_ms_total": v.latency_ms_total,
                "studies": v.studies,
                "documents": v.documents,
            }
            for k, v in sorted(deltas.items(), key=lambda kv: kv[0])
        ]
        statement = upsert_statement(self._engine.dialect.name)
        with self._writing() as conn:
            conn.execute(statement, rows)

    def month(self, month: str) -> list[CounterRow]:
        """Every counter row of *month* (``YYYY-MM``), by partner, transaction, role."""
        query = (
            select(_C)
            .where(_C.c.month == month)
            .order_by(_C.c.partner, _C.c.transaction, _C.c.role)
        )
        with self._reading() as conn:
            return [_row(r._mapping) for r in conn.execute(query)]

    def totals(self) -> list[CounterRow]:
        """All-time sums per (partner, transaction, role); ``month`` is empty."""
        columns = [func.sum(_C.c[k]).label(k) for k in _VALUES]
        group = [_C.c.partner, _C.c.transaction, _C.c.role]
        query = select(*group, *columns).group_by(*group).order_by(*group)
        with self._reading() as conn:
            return [_row({"month": "", **r._mapping}) for r in conn.execute(query)]


def _row(m: Mapping[Any, Any]) -> CounterRow:
    return CounterRow(
        CounterKey(m["month"], m["partner"], m["transaction"], m["role"]),
        CounterValues(
            int(m["requests"] or 0),
            int(m["errors"] or 0),
            float(m["latency_ms_total"] or 0.0),
            int(m["studies"] or 0),
            int(m["documents"] or 0),
        ),
    )
