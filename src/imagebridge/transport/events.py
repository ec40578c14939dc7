"""One event per finished transaction, on both sides: what audit and metrics observe.

The SOAP server (:class:`~imagebridge.transport.server.SoapDispatcher`,
responding side) and the partner client
(:class:`~imagebridge.actors.initiating.client.PartnerClient`, initiating
side) report every exchange they finish, successful or not, as a
:class:`TransactionEvent` to a :class:`TransactionObserver`.  The ATNA audit
trail and the performance counters are observers.

An observer must be quick and must not fail the transaction: it is called
inline, after the exchange, and :class:`Observers` logs and swallows
whatever an observer raises.  Events carry the request and reply payload
elements (the SOAP body children, never the MTOM attachments), so an
observer can decode patient ids, queries and document UIDs with the codecs;
they are held only for the call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from imagebridge.model.ids import HomeCommunityId
from imagebridge.transactions import Transaction
from imagebridge.wire.xml import Element

log = logging.getLogger(__name__)


class Role(Enum):
    """Which side of the exchange we were."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass(frozen=True, slots=True)
class Decoded:
    """The models a side already had for the request and reply, so observers need not
    decode the payload elements again (they must describe the same messages)."""

    request: object | None = None
    reply: object | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionEvent:
    """A finished exchange: what, who, when, how it ended.

    ``peer`` is the partner's URL (initiator) or the client's address
    (responder).  ``error`` is set when the exchange failed as a whole (a
    fault sent or received, a partner unreachable): the spec error code or
    fault code, with ``detail``.  In-band RegistryErrors are in ``reply``.
    ``endpoint`` is our path (responder) or ``None``.
    """

    transaction: Transaction
    role: Role
    started: datetime
    elapsed: float
    peer: str
    request: Element | None
    reply: Element | None
    message_id: str | None = None
    partner: HomeCommunityId | None = None
    endpoint: str | None = None
    error: str | None = None
    detail: str = ""
    user: str | None = None
    """The requesting user (SAML subject) when one is known."""
    header_blocks: tuple[Element, ...] = ()
    """SOAP header blocks of the request (the wsse:Security header, for the audit's user)."""
    decoded: Decoded | None = None
    """The request and reply as models, when the side that reports had them."""

    @property
    def failed(self) -> bool:
        return self.error is not None


class TransactionObserver(Protocol):
    """Something told about every finished transaction (audit trail, counters)."""

    def observe(self, event: TransactionEvent) -> None: ...


class Observers:
    """Several observers as one; an observer that raises is logged and skipped."""

    def __init__(self, observers: Iterable[TransactionObserver] = ()) -> None:
        self._observers = list(observers)

    def add(self, observer: TransactionObserver) -> None:
        self._observers.append(observer)

    def observe(self, event: TransactionEvent) -> None:
        for observer in self._observers:
            try:
                observer.observe(event)
            except Exception:
                log.exception(
                    "observer %s failed on a %s event", type(observer).__name__, event.transaction
                )


NO_OBSERVER = Observers()
"""Observes nothing (the default)."""
