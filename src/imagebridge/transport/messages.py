"""What handlers receive and return: decoded SOAP requests and replies to encode."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
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
