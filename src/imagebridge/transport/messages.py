"""What handlers receive and return: decoded SOAP requests and replies to encode."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from anyio.streams.memory import MemoryObjectSendStream

from imagebridge.model.caller import VerifiedCaller
from imagebridge.transactions import TransactionSpec
from imagebridge.transport.events import Decoded
from imagebridge.wire.mtom import Attachment, MtomPart
from imagebridge.wire.wsa import AddressingHeaders
from imagebridge.wire.xml import Element


@dataclass(frozen=True, slots=True)
class SoapRequest:
    """A decoded request: its transaction, addressing, payload and received attachments."""

    spec: TransactionSpec
    addressing: AddressingHeaders
    payload: Element
    header_blocks: tuple[Element, ...] = ()
    attachments: Mapping[str, MtomPart] = field(default_factory=dict)
    client_host: str | None = None
    caller: VerifiedCaller | None = None
    """The requester verified from the XUA assertion (None: no verifier, or none required)."""


@dataclass(frozen=True, slots=True)
class SoapReply:
    """A reply payload; sent as MTOM when the transaction uses MTOM.

    ``attachments`` may be an async iterable so that parts are produced while the
    response is already being written (imaging retrieves).
    """

    payload: Element
    attachments: Iterable[Attachment] | AsyncIterable[Attachment] = ()
    decoded: Decoded | None = None
    """The request and reply models behind *payload*, for the observers (audit, counters)."""


@dataclass(frozen=True, slots=True)
class StreamedReply:
    """An MTOM reply produced while it is sent; its payload is known only at the end.

    The server runs ``produce`` in a task of its own, handing it the sending
    end of a small bounded channel, and writes each attachment it puts there
    as soon as it arrives (so producers for several repositories can run
    concurrently).  When ``produce`` returns, ``payload`` is awaited for the
    root part, written last (RFC 2387 ``start`` names it): a retrieve reports
    every document that failed while it was streaming, and the MIME body is
    never truncated.  ``close`` runs in every case (end, error, client gone)
    to release spooled data.
    """

    produce: Callable[[MemoryObjectSendStream[Attachment]], Awaitable[None]]
    payload: Callable[[], Awaitable[Element]]
    close: Callable[[], Awaitable[None]]
    buffer: int = 4
