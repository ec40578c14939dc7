"""WS-Addressing 1.0 headers (Action, MessageID, To, ReplyTo, RelatesTo) for SOAP 1.2.

Input is lenient (values wrapped in whitespace, MessageID without ``urn:uuid:``,
mustUnderstand in any spelling); output is what IHE Appendix V shows: Action
and To carry ``mustUnderstand="1"``, ReplyTo never does.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from imagebridge.errors import (
    ActionNotSupported,
    AddressingError,
    AddressingHeaderRequired,
    OnlyAnonymousAddressSupported,
)
from imagebridge.transactions import TransactionSpec, by_request_action
from imagebridge.wire import ns
from imagebridge.wire.xml import Element, child, elements, qname_of, text_of

ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
NONE_ADDRESS = "http://www.w3.org/2005/08/addressing/none"
FAULT_ACTION = "http://www.w3.org/2005/08/addressing/fault"
SOAP_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"

# The header blocks this module consumes (for the mustUnderstand check).
UNDERSTOOD_HEADERS = frozenset(
    ns.q(ns.WSA, name) for name in ("Action", "MessageID", "To", "ReplyTo", "RelatesTo", "From")
)
_SINGLE = ("Action", "MessageID", "To", "ReplyTo", "RelatesTo", "From", "FaultTo")


@dataclass(frozen=True, slots=True)
class AddressingHeaders:
    """The WS-Addressing headers of one SOAP message."""

    action: str
    message_id: str | None = None
    to: str | None = None
    reply_to: str | None = None
    relates_to: str | None = None


def normalise_message_id(value: str) -> str:
    """Compare-form of a MessageID: stripped, lower case, without ``urn:uuid:``."""
    text = value.strip().lower()
    return text[len("urn:uuid:") :] if text.startswith("urn:uuid:") else text


def parse_addressing(header: Element | None) -> AddressingHeaders:
    """Read the WS-Addressing blocks of a ``soap:Header`` (None when it is absent).

    Raises :class:`AddressingHeaderRequired` without ``wsa:Action`` and
    :class:`AddressingError` (InvalidAddressingHeader) for a duplicated or empty block.
    """
    found: dict[str, Element] = {}
    if header is not None:
        for block in elements(header):
            namespace, local = qname_of(block)
            if namespace != ns.WSA or local not in _SINGLE:
                continue
            if local in found:
                raise AddressingError(f"duplicate wsa:{local} header")
            found[local] = block
    if "Action" not in found:
        raise AddressingHeaderRequired("the wsa:Action header is required")
    values: dict[str, str | None] = {}
    for local in ("Action", "MessageID", "To", "RelatesTo"):
        present = found.get(local)
        # URIs never contain whitespace; some stacks wrap or even split them.
        values[local] = "".join(text_of(present).split()) if present is not None else None
        if present is not None and not values[local]:
            raise AddressingError(f"wsa:{local} header is empty")
    reply_to: str | None = None
    if "ReplyTo" in found:
        address = child(found["ReplyTo"], ns.WSA, "Address")
        reply_to = "".join(text_of(address).split())
        if not reply_to:
            raise AddressingError("wsa:ReplyTo has no wsa:Address")
    return AddressingHeaders(
        action=values["Action"] or "",
        message_id=values["MessageID"],
        to=values["To"],
        reply_to=reply_to,
        relates_to=values["RelatesTo"],
    )


def render_addressing(headers: AddressingHeaders) -> list[Element]:
    """The header blocks for *headers*, in the order IHE samples use."""
    out: list[Element] = []
    must = ns.q(ns.SOAP12, "mustUnderstand")

    def block(local: str, value: str, must_understand: bool = False) -> Element:
        el = etree.Element(ns.q(ns.WSA, local), nsmap={"wsa": ns.WSA})
        if must_understand:
            el.set(must, "1")
        el.text = value
        return el

    out.append(block("Action", headers.action, must_understand=True))
    if headers.message_id is not None:
        out.append(block("MessageID", headers.message_id))
    if headers.reply_to is not None:
        reply = etree.Element(ns.q(ns.WSA, "ReplyTo"), nsmap={"wsa": ns.WSA})
        etree.SubElement(reply, ns.q(ns.WSA, "Address")).text = headers.reply_to
        out.append(reply)
    if headers.to is not None:
        out.append(block("To", headers.to, must_understand=True))
    if headers.relates_to is not None:
        out.append(block("RelatesTo", headers.relates_to))
    return out


def request_headers(spec: TransactionSpec, message_id: str, to: str) -> AddressingHeaders:
    """Headers of a synchronous request for *spec* (ReplyTo is anonymous)."""
    return AddressingHeaders(
        action=spec.request_action, message_id=message_id, to=to, reply_to=ANONYMOUS
    )


def response_headers(
    spec: TransactionSpec, request: AddressingHeaders, message_id: str | None = None
) -> AddressingHeaders:
    """Headers of the synchronous reply to *request* (RelatesTo = its MessageID, no To)."""
    return AddressingHeaders(
        action=spec.response_action, message_id=message_id, relates_to=request.message_id
    )


def check_request(
    headers: AddressingHeaders, served: tuple[TransactionSpec, ...]
) -> TransactionSpec:
    """Validate a request's addressing for an endpoint that serves *served*.

    Returns the matching transaction.  Raises :class:`ActionNotSupported` for
    an action not served here and :class:`OnlyAnonymousAddressSupported` when
    ReplyTo asks for an asynchronous reply (Carequality forbids those).
    """
    spec = by_request_action(headers.action)
    if spec is None or spec not in served:
        raise ActionNotSupported(f"action {headers.action[:200]!r} is not supported here")
    if headers.reply_to is not None and headers.reply_to.strip() not in (ANONYMOUS, ""):
        raise OnlyAnonymousAddressSupported(
            "only the anonymous wsa:ReplyTo address is supported (synchronous exchange)"
        )
    return spec


def check_response(
    headers: AddressingHeaders, spec: TransactionSpec, request_message_id: str
) -> None:
    """Check a reply's Action and RelatesTo against the request we sent.

    Fault replies are detected from the body by the SOAP layer before this runs.
    """
    if headers.action.strip() != spec.response_action:
        raise ActionNotSupported(
            f"response action {headers.action[:200]!r} is not {spec.response_action!r}"
        )
    if headers.relates_to is None:
        raise AddressingHeaderRequired("the response has no wsa:RelatesTo")
    if normalise_message_id(headers.relates_to) != normalise_message_id(request_message_id):
        raise AddressingError("wsa:RelatesTo does not match the request's wsa:MessageID")
