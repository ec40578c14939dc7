"""What handlers receive and return: decoded SOAP requests and replies to encode."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from imagebridge.transactions import TransactionSpec
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


@dataclass(frozen=True, slots=True)
class SoapReply:
    """A reply payload; sent as MTOM when the transaction uses MTOM.

    ``attachments`` may be an async iterable so that parts are produced while the
    response is already being written (imaging retrieves).
    """

    payload: Element
    attachments: Iterable[Attachment] | AsyncIterable[Attachment] = ()


@dataclass(frozen=True, slots=True)
class StreamedReply:
    """An MTOM reply whose payload is known only after its attachments were sent.

    The server streams ``attachments`` as they are produced and then awaits
    ``payload`` for the root part, which it writes last (RFC 2387 ``start``
    names it).  A retrieve can so report every document that failed while it
    was being streamed, without ever truncating the MIME body.
    """

    attachments: AsyncIterable[Attachment]
    payload: Callable[[], Awaitable[Element]]
