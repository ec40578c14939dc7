"""Audit and counters for command-line pulls (``fetch``, ``jobs resume``): same observers
as ``serve``, in a short-lived process.

The process writes audit messages to the store's outbox only (``send=False``):
the running gateway's sender delivers them, so two processes never send the
same message.  Counters and queued audit messages are flushed when the block
ends, whatever happened inside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from imagebridge.config import Config
from imagebridge.security.audit_trail import AuditTrail
from imagebridge.security.event_facts import DecodedObservers
from imagebridge.security.measures import Measures
from imagebridge.store.counters import TransactionCounters


@dataclass(slots=True)
class ProcessObservers:
    """What a command's partner clients and import runner report to."""

    observer: DecodedObservers
    audit: AuditTrail | None


@asynccontextmanager
async def process_observers(config: Config, engine: Engine) -> AsyncIterator[ProcessObservers]:
    """Observers for this process, flushed to the store at the end of the block."""
    measures = Measures(TransactionCounters(engine))
    audit = (
        AuditTrail.open(
            config.audit,
            engine,
            home_community_id=config.community.home_community_id.oid,
            community_name=config.community.name,
            send=False,
        )
        if config.audit.enabled
        else None
    )
    observers = DecodedObservers([c for c in (audit, measures) if c is not None])
    try:
        yield ProcessObservers(observers, audit)
    finally:
        await measures.flush()
        if audit is not None:
            await audit.drain()
