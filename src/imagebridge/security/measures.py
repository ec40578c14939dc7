"""Performance measures (QBD section 5): counters per partner and month, and ``/metrics``.

:class:`Measures` is a
:class:`~imagebridge.transport.events.TransactionObserver`: for every finished
transaction it adds, in memory, one request (and one error when the exchange
failed or the answer is an in-band Failure), the latency, the imaging studies
and the documents returned, under (month, partner, transaction, role).
Studies and documents are counted separately (the imaging IG asks for both):

=================  ====================================  ==================================
transaction        documents                             studies
=================  ====================================  ==================================
ITI-38             registry objects returned             KOS entries (one per study)
ITI-39             DocumentResponses                     KOS manifests (application/dicom)
RAD-69, RAD-75     DocumentResponses (SOP instances)     requested studies with an image back
ITI-55             -                                     -
=================  ====================================  ==================================

The partner is the partner's homeCommunityId: ours to call (initiator), the
XUA homeCommunityId of the caller (responder), else the caller's address.
:meth:`Measures.run` flushes the deltas to ``transaction_counters`` every
``flush_interval`` seconds (one UPSERT, in a worker thread).

:func:`metrics_route` serves the same counters as a Prometheus text
exposition (all-time totals per partner, transaction and role; Prometheus
does the time bucketing), read from the database plus what is not flushed yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import anyio
import anyio.abc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagebridge.errors import ImageBridgeError
from imagebridge.security.event_facts import EventFacts, Outcome, facts_of
from imagebridge.store.counters import CounterKey, CounterRow, CounterValues, TransactionCounters
from imagebridge.transport.events import Role, TransactionEvent

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def month_of(when: datetime) -> str:
    """``YYYY-MM`` of *when* in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m")


def partner_of(event: TransactionEvent, facts: EventFacts) -> str:
    """The partner's homeCommunityId (bare OID), or the caller's address when unknown."""
    if event.role is Role.INITIATOR and event.partner is not None:
        return event.partner.oid
    if facts.requestor is not None and facts.requestor.home_community_id:
        return facts.requestor.home_community_id
    if event.partner is not None:
        return event.partner.oid
    return event.peer or "unknown"


def counted(event: TransactionEvent, facts: EventFacts) -> tuple[CounterKey, CounterValues]:
    """The counter key of *event* and what it adds."""
    key = CounterKey(
        month_of(event.started),
        partner_of(event, facts),
        event.transaction.value,
        event.role.value,
    )
    failed = facts.outcome in (Outcome.FAILURE, Outcome.ERROR)
    return key, CounterValues(
        requests=1,
        errors=1 if failed else 0,
        latency_ms_total=event.elapsed * 1000.0,
        studies=facts.studies_returned,
        documents=facts.documents_returned,
    )


def _merge(target: dict[CounterKey, CounterValues], rows: Iterable[CounterRow]) -> None:
    for row in rows:
        target.setdefault(row.key, CounterValues()).add(row.values)


class Measures:
    """In-memory transaction counters flushed to the store (module docstring)."""

    def __init__(self, counters: TransactionCounters, *, flush_interval: float = 10.0) -> None:
        self._counters = counters
        self._flush_interval = flush_interval
        self._pending: dict[CounterKey, CounterValues] = {}
        self._in_flight: dict[CounterKey, CounterValues] = {}
        self._lock = anyio.Lock()
        """Held by a flush and by a read of the totals, so a scrape never sees a flush halfway."""

    @property
    def counters(self) -> TransactionCounters:
        return self._counters

    def observe(self, event: TransactionEvent) -> None:
        """Count one finished transaction (in memory; never blocks)."""
        self.record(event, facts_of(event))

    def record(self, event: TransactionEvent, facts: EventFacts) -> None:
        """Count *event* whose payloads are already decoded into *facts*."""
        key, values = counted(event, facts)
        self._pending.setdefault(key, CounterValues()).add(values)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush every ``flush_interval`` seconds until cancelled, then once more (shielded)."""
        task_status.started()
        try:
            while True:
                await anyio.sleep(self._flush_interval)
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await self.flush()

    async def flush(self) -> None:
        """Add the counted deltas to the store; on a store error they are kept for next time."""
        async with self._lock:
            if not self._pending:
                return
            self._in_flight, self._pending = self._pending, {}
            try:
                await anyio.to_thread.run_sync(self._counters.add, self._in_flight)
            except ImageBridgeError as exc:
                log.warning("performance counters not saved, kept for the next flush: %s", exc)
                for key, values in self._in_flight.items():
                    self._pending.setdefault(key, CounterValues()).add(values)
            finally:
                self._in_flight = {}

    def unsaved(self) -> list[CounterRow]:
        """Counted but not yet in the store (all-time view: ``month`` is empty)."""
        merged: dict[CounterKey, CounterValues] = {}
        for source in (self._in_flight, self._pending):
            for key, values in source.items():
                total = CounterKey("", key.partner, key.transaction, key.role)
                merged.setdefault(total, CounterValues()).add(values)
        return [CounterRow(k, v) for k, v in merged.items()]

    async def totals(self) -> list[CounterRow]:
        """All-time counters per (partner, transaction, role): the store plus the unsaved."""
        async with self._lock:  # no flush moves counts from memory to the store meanwhile
            unsaved = self.unsaved()
            stored = await anyio.to_thread.run_sync(self._counters.totals)
        merged: dict[CounterKey, CounterValues] = {}
        _merge(merged, stored)
        _merge(merged, unsaved)
        return [CounterRow(k, merged[k]) for k in sorted(merged)]


# --- Prometheus text exposition (format 0.0.4) ------------------------------------------

_METRICS: Final = (
    ("imagebridge_transactions_total", "counter", "Transactions finished.", "requests"),
    (
        "imagebridge_transaction_errors_total",
        "counter",
        "Transactions that failed (fault, unreachable partner, in-band Failure).",
        "errors",
    ),
    (
        "imagebridge_studies_returned_total",
        "counter",
        "Imaging studies returned (KOS manifests; studies with images retrieved).",
        "studies",
    ),
    (
        "imagebridge_documents_returned_total",
        "counter",
        "Documents returned (registry objects; DocumentResponses).",
        "documents",
    ),
)
_DURATION: Final = "imagebridge_transaction_duration_seconds"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: CounterKey) -> str:
    return (
        f'{{partner="{_escape(key.partner)}",transaction="{_escape(key.transaction)}",'
        f'role="{_escape(key.role)}"}}'
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_prometheus(rows: Iterable[CounterRow]) -> str:
    """The counters as Prometheus text: one family per measure, labelled by partner,
    transaction and role; latency as a summary (``_sum`` and ``_count``)."""
    chosen = list(rows)
    lines: list[str] = []
    for name, kind, help_text, field in _METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(r.key)} {getattr(r.values, field)}" for r in chosen]
    lines += [
        f"# HELP {_DURATION} Time to finish a transaction (both sides).",
        f"# TYPE {_DURATION} summary",
    ]
    for r in chosen:
        seconds = r.values.latency_ms_total / 1000.0
        lines.append(f"{_DURATION}_sum{_labels(r.key)} {_number(seconds)}")
        lines.append(f"{_DURATION}_count{_labels(r.key)} {r.values.requests}")
    return "\n".join(lines) + "\n"


def metrics_route(measures: Measures, path: str = "/metrics") -> Route:
    """A Starlette GET route serving :func:`render_prometheus` of *measures*' totals."""

    async def metrics(_request: Request) -> Response:
        try:
            rows = await measures.totals()
        except ImageBridgeError as exc:
            log.warning("metrics unavailable: %s", exc)
            return Response("metrics unavailable\n", status_code=503, media_type="text/plain")
        return Response(render_prometheus(rows), media_type=PROMETHEUS_CONTENT_TYPE)

    return Route(path, metrics, methods=["GET"])
