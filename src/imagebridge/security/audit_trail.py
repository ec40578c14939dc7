"""Audit Trail and Node Authentication [ITI-20], Secure Node: the audit trail of the gateway.

:class:`AuditTrail` is a
:class:`~imagebridge.transport.events.TransactionObserver`.  For every
finished transaction (both sides) and every import job run it builds the
DICOM audit message at once (:mod:`imagebridge.security.audit_events`; the
payload elements are only valid during the call) and appends it to a bounded
in-memory queue: it never blocks, never touches the network or the database
on the caller's path.  If the queue is full the message is dropped, counted
(:attr:`AuditTrail.dropped`) and a WARNING is logged.

:meth:`AuditTrail.run` is the background part, started by the composition
root in its task group:

* the writer moves queued messages into the durable outbox (``audit_outbox``,
  one multi-row insert per batch, in a worker thread) every ``flush_interval``;
* the sender takes due messages from the outbox and sends them over syslog
  (:mod:`imagebridge.security.syslog`), each connect/send bounded by
  ``send_timeout``; a message that could not be sent keeps its row, its
  attempt count goes up and its next attempt is backed off.  A dead or slow
  audit repository therefore only delays the outbox.

The messages hold patient data: they are never logged; log lines name the
transaction, counts and the repository address only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import anyio
import anyio.abc
from sqlalchemy import Engine

from imagebridge.errors import ImageBridgeError
from imagebridge.model.audit import AuditMessage
from imagebridge.model.directory import TlsSettings
from imagebridge.model.import_job import ImportJob
from imagebridge.security.audit_config import AuditConfig
from imagebridge.security.audit_events import AuditContext, audit_message, import_audit_message
from imagebridge.security.event_facts import EventFacts, facts_of
from imagebridge.security.syslog import SyslogSender, TlsSyslog, UdpSyslog, syslog_frame
from imagebridge.security.tls import client_context
from imagebridge.store.audit_outbox import (
    AuditOutbox,
    OutboxEntry,
    PendingMessage,
    backoff,
)
from imagebridge.store.leases import ServiceLeases, worker_name
from imagebridge.transport.events import TransactionEvent
from imagebridge.wire.audit import render_audit_message
from imagebridge.wire.xml import serialize

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SEND_ERRORS: Final = (OSError, ssl.SSLError, anyio.BrokenResourceError, TimeoutError)
PURGE_EVERY: Final = timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Queued:
    created_at: datetime
    event: str
    message: AuditMessage


def audit_context(config: AuditConfig, home_community_id: str, community_name: str) -> AuditContext:
    """Our identity in audit messages, from ``[audit]`` and ``[community]``."""
    return AuditContext(
        audit_source_id=config.audit_source_id or home_community_id,
        host_name=config.host_name or socket.gethostname(),
        process_id=str(os.getpid()),
        home_community_id=home_community_id,
        enterprise_site_id=config.enterprise_site_id or community_name or None,
        base_url=config.base_url or None,
        application=config.app_name,
    )


def syslog_sender(config: AuditConfig) -> SyslogSender:
    """The transport ``[audit]`` names (raises ConfigError for unreadable TLS material)."""
    if config.transport == "udp":
        return UdpSyslog(config.host, config.port)
    tls = TlsSettings(config.ca_bundle, config.client_certificate, config.client_key)
    return TlsSyslog(config.host, config.port, client_context(tls))


SENDER_LEASE = "audit-sender"
"""The service lease that makes one worker of a deployment the audit sender."""
SENDER_LEASE_SECONDS = 60.0
"""How long the sender lease lasts without renewal (renewed before every pass)."""


class AuditTrail:
    """Observer, outbox writer and syslog sender of ATNA audit messages (module docstring)."""

    def __init__(
        self,
        outbox: AuditOutbox,
        config: AuditConfig,
        context: AuditContext,
        *,
        sender: SyslogSender | None = None,
        send: bool = True,
        clock: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        """*sender* defaults to the one *config* names; with ``send=False`` or
        auditing disabled messages only go to the outbox.  *owner* names this
        sender in the sender lease (default: this process)."""
        self._outbox = outbox
        self._leases = ServiceLeases(outbox.engine)
        self._owner = owner or worker_name()
        self._config = config
        self._context = context
        if sender is None and send and config.enabled:
            sender = syslog_sender(config)
        self._sender = sender if send else None
        self._clock = clock
        self._queue: deque[_Queued] = deque()
        self._failing = False
        self._last_purge: datetime | None = None
        self.dropped = 0
        """Messages lost because the in-memory queue was full."""

    @classmethod
    def open(
        cls,
        config: AuditConfig,
        engine: Engine,
        *,
        home_community_id: str,
        community_name: str = "",
        send: bool = True,
    ) -> AuditTrail:
        """The trail of one process, writing to the store's database.

        ``send=False`` only fills the outbox (short-lived CLI processes): the
        ``serve`` process, sharing the database, sends those messages too.
        """
        context = audit_context(config, home_community_id, community_name)
        return cls(AuditOutbox(engine), config, context, send=send)

    @property
    def outbox(self) -> AuditOutbox:
        return self._outbox

    @property
    def queued(self) -> int:
        """Messages waiting in memory for the outbox."""
        return len(self._queue)

    # --- the caller's path: build and enqueue, nothing else -------------------------------

    def observe(self, event: TransactionEvent) -> None:
        """Audit one finished transaction (never blocks, never raises for a bad payload)."""
        self.record(event, facts_of(event))

    def record(self, event: TransactionEvent, facts: EventFacts) -> None:
        """Audit *event* whose payloads are already decoded into *facts*."""
        self._enqueue(event.transaction.value, audit_message(event, facts, self._context))

    def audit_import(self, job: ImportJob, *, target_host: str | None = None) -> None:
        """Audit one run of an import job into the local PACS (DICOM Instances Transferred)."""
        now = self._clock()
        message = import_audit_message(job, self._context, when=now, target_host=target_host)
        self._enqueue("import", message, now)

    def _enqueue(self, event: str, message: AuditMessage, now: datetime | None = None) -> None:
        if len(self._queue) >= self._config.queue_size:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "audit queue full (%d messages): dropped the %s audit message "
                    "(%d dropped so far); is the outbox writer running?",
                    len(self._queue),
                    event,
                    self.dropped,
                )
            return
        self._queue.append(_Queued(now or self._clock(), event, message))

    # --- background: outbox writer and sender ------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued messages to the outbox and send due ones, until cancelled.

        On cancellation whatever is still queued is written to the outbox
        (shielded, bounded by ``send_timeout``) and the connection is closed.
        """
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._write_loop)
                if self._sender is not None:
                    tasks.start_soon(self._send_loop)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._config.send_timeout):
                await self.drain()
                if self._sender is not None:
                    await self._sender.aclose()

    async def _write_loop(self) -> None:
        while True:
            await anyio.sleep(self._config.flush_interval)
            await self.drain()

    async def _send_loop(self) -> None:
        """Send passes while this worker holds the sender lease (one sender per database)."""
        idle = min(1.0, self._config.flush_interval * 2)
        try:
            while True:
                try:
                    if not await anyio.to_thread.run_sync(
                        self._leases.hold, SENDER_LEASE, self._owner, SENDER_LEASE_SECONDS
                    ):
                        await anyio.sleep(idle)  # another worker sends; be ready to take over
                        continue
                    sent, due = await self.send_due()
                except ImageBridgeError as exc:  # the outbox itself failed: try again later
                    log.warning("audit sender pass failed: %s", exc)
                    sent, due = 0, 0
                if not due or sent < due:
                    await anyio.sleep(idle)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(ImageBridgeError):
                await anyio.to_thread.run_sync(self._leases.release, SENDER_LEASE, self._owner)

    async def drain(self) -> int:
        """Move every queued message to the outbox now; how many were written."""
        written = 0
        while self._queue:
            batch = [
                self._queue.popleft() for _ in range(min(self._config.batch_size, len(self._queue)))
            ]
            try:
                written += await anyio.to_thread.run_sync(self._write, batch)
            except ImageBridgeError as exc:
                log.warning("audit outbox write failed, %d messages kept: %s", len(batch), exc)
                for item in reversed(batch):  # keep them for the next pass, oldest first
                    if len(self._queue) < self._config.queue_size:
                        self._queue.appendleft(item)
                    else:
                        self.dropped += 1
                break
        return written

    def _write(self, batch: list[_Queued]) -> int:
        entries = [
            OutboxEntry(q.created_at, q.event, serialize(render_audit_message(q.message)).decode())
            for q in batch
        ]
        return self._outbox.add(entries)

    async def send_due(self) -> tuple[int, int]:
        """One sender pass: send the due messages, oldest first; (sent, due) counts.

        A failed connect or send stops the pass: that message and the rest of
        the batch count one attempt and are backed off.
        """
        if self._sender is None:
            return 0, 0
        now = self._clock()
        await self._purge(now)
        due = await anyio.to_thread.run_sync(self._outbox.due, now, self._config.batch_size)
        if not due:
            return 0, 0
        sent: list[int] = []
        failed: list[PendingMessage] = []
        error = ""
        for index, message in enumerate(due):
            frame = self._frame(message)
            try:
                with anyio.fail_after(self._config.send_timeout):
                    await self._sender.send(frame)
            except SEND_ERRORS as exc:
                failed = due[index:]
                error = _describe(exc)
                break
            sent.append(message.id)
        done = self._clock()
        await anyio.to_thread.run_sync(self._outbox.mark_sent, sent, done)
        if failed:
            c = self._config
            retries = [
                (m, done + backoff(m.attempts + 1, c.retry_initial, c.retry_max)) for m in failed
            ]
            await anyio.to_thread.run_sync(self._outbox.mark_failed, retries, error)
            if not self._failing:
                log.warning(
                    "audit repository %s:%d (%s) not reachable: %s; %d messages wait in the outbox",
                    c.host,
                    c.port,
                    c.transport,
                    error,
                    len(failed),
                )
            self._failing = True
        elif self._failing:
            log.info("audit repository %s:%d reachable again", self._config.host, self._config.port)
            self._failing = False
        return len(sent), len(due)

    def _frame(self, message: PendingMessage) -> bytes:
        return syslog_frame(
            message.message.encode("utf-8"),
            timestamp=message.created_at,
            hostname=self._context.host_name,
            app_name=self._config.app_name,
            procid=self._context.process_id,
            bom=self._config.include_bom,
        )

    async def _purge(self, now: datetime) -> None:
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        before = now - timedelta(days=self._config.retention_days)
        try:
            await anyio.to_thread.run_sync(self._outbox.purge_sent, before)
        except ImageBridgeError as exc:
            log.warning("purging sent audit messages failed: %s", exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
