"""SOAP 1.2 envelopes and faults.

:func:`parse_envelope` turns a root element into a :class:`SoapMessage`
(addressing headers, the other header blocks, and the single Body payload or
a :class:`SoapFault`), applying the SOAP 1.2 mustUnderstand rule for the
header blocks imagebridge processes.  :func:`fault_for` maps any
:class:`~imagebridge.errors.ImageBridgeError` to the fault it becomes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lxml import etree

from imagebridge.errors import (
    FaultCode,
    ImageBridgeError,
    QName,
    SoapMustUnderstand,
    SoapNotEnvelope,
    SoapVersionMismatch,
)
from imagebridge.wire import ns
from imagebridge.wire.wsa import (
    FAULT_ACTION,
    SOAP_FAULT_ACTION,
    UNDERSTOOD_HEADERS,
    AddressingHeaders,
    parse_addressing,
    render_addressing,
)
from imagebridge.wire.xml import Element, child, children, elements, qname_of, text_of

# Header blocks imagebridge understands: WS-Addressing plus WS-Security (XUA).
DEFAULT_UNDERSTOOD = UNDERSTOOD_HEADERS | {ns.q(ns.WSSE, "Security")}
_TRUE = ("1", "true")


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.2 fault: code, subcodes (outermost first), reason and optional detail."""

    code: FaultCode
    reason: str
    subcodes: tuple[QName, ...] = ()
    lang: str = "en"
    detail: str | None = None
    not_understood: tuple[QName, ...] = ()


@dataclass(frozen=True, slots=True)
class SoapMessage:
    """A decoded SOAP 1.2 message."""

    addressing: AddressingHeaders | None
    """None for a fault, or a reply decoded with ``require_addressing=False``, without them."""
    header_blocks: tuple[Element, ...]
    """Header blocks other than WS-Addressing (for example wsse:Security)."""
    payload: Element | None
    fault: SoapFault | None


def parse_envelope(
    root: Element,
    understood: frozenset[str] = DEFAULT_UNDERSTOOD,
    *,
    require_addressing: bool = True,
) -> SoapMessage:
    """Decode a SOAP 1.2 envelope whose root element is *root*.

    Raises :class:`SoapVersionMismatch` for SOAP 1.1 or another envelope
    namespace, :class:`SoapNotEnvelope` when the Body is missing or does not
    hold exactly one element, :class:`SoapMustUnderstand` for a header block
    marked mustUnderstand that is not in *understood*, and the WS-Addressing
    errors of :func:`~imagebridge.wire.wsa.parse_addressing` for a request.
    With ``require_addressing=False`` (replies: some stacks omit WS-Addressing
    on synchronous responses) a message without ``wsa:Action`` decodes with
    ``addressing`` None; malformed addressing headers still raise.
    """
    namespace, local = qname_of(root)
    if local != "Envelope":
        raise SoapNotEnvelope(f"root element is {local}, not a SOAP Envelope")
    if namespace != ns.SOAP12:
        raise SoapVersionMismatch(f"envelope namespace {namespace!r} is not SOAP 1.2")
    header = child(root, ns.SOAP12, "Header")
    body = child(root, ns.SOAP12, "Body")
    if body is None:
        raise SoapNotEnvelope("the SOAP Envelope has no Body")
    _check_must_understand(header, understood)
    payloads = list(elements(body))
    if len(payloads) != 1:
        raise SoapNotEnvelope(f"the SOAP Body holds {len(payloads)} elements, expected one")
    payload = payloads[0]
    others = tuple(
        b for b in (elements(header) if header is not None else ()) if qname_of(b)[0] != ns.WSA
    )
    if payload.tag == ns.q(ns.SOAP12, "Fault"):
        fault = parse_fault(payload)
        try:
            addressing: AddressingHeaders | None = parse_addressing(header)
        except ImageBridgeError:
            addressing = None  # initiators must not depend on a fault's addressing
        return SoapMessage(addressing, others, None, fault)
    if not require_addressing and not _has_action(header):
        return SoapMessage(None, others, payload, None)
    return SoapMessage(parse_addressing(header), others, payload, None)


def _has_action(header: Element | None) -> bool:
    return header is not None and child(header, ns.WSA, "Action") is not None


def _check_must_understand(header: Element | None, understood: frozenset[str]) -> None:
    if header is None:
        return
    attr = ns.q(ns.SOAP12, "mustUnderstand")
    missing: list[QName] = []
    for block in elements(header):
        # Only the namespace-qualified attribute counts; the unqualified form
        # some partners send is not the SOAP attribute and is ignored.
        flag = (block.get(attr) or "").strip().lower()
        if flag in _TRUE and block.tag not in understood:
            namespace, local = qname_of(block)
            missing.append(QName(namespace, local))
    if missing:
        names = ", ".join(q.clark for q in missing)
        raise SoapMustUnderstand(f"header blocks not understood: {names}", tuple(missing))


def render_envelope(
    addressing: AddressingHeaders,
    payload: Element,
    extra_headers: Sequence[Element] = (),
) -> Element:
    """Build a SOAP 1.2 envelope with WS-Addressing headers, extra header blocks and *payload*."""
    env = etree.Element(ns.q(ns.SOAP12, "Envelope"), nsmap={"soap": ns.SOAP12, "wsa": ns.WSA})
    header = etree.SubElement(env, ns.q(ns.SOAP12, "Header"))
    for block in [*render_addressing(addressing), *extra_headers]:
        header.append(block)
    body = etree.SubElement(env, ns.q(ns.SOAP12, "Body"))
    body.append(payload)
    return env


# --- faults ------------------------------------------------------------------------------


def _qname_text(el: Element, value: str) -> QName:
    """Resolve a QName-valued text like ``wsa:ActionNotSupported`` in *el*'s scope."""
    prefix, sep, local = value.strip().rpartition(":")
    namespace = el.nsmap.get(prefix if sep else None) or ""
    return QName(namespace, local)


def parse_fault(el: Element) -> SoapFault:
    """Decode a ``soap:Fault``.  Unknown fault codes are read as Receiver."""
    code_el = child(el, ns.SOAP12, "Code")
    value_el = child(code_el, ns.SOAP12, "Value") if code_el is not None else None
    code_q = _qname_text(value_el, text_of(value_el)) if value_el is not None else None
    code = FaultCode.RECEIVER
    if code_q is not None:
        for member in FaultCode:
            if member.value == code_q.local:
                code = member
    subcodes: list[QName] = []
    cursor = code_el
    while cursor is not None:
        sub = child(cursor, ns.SOAP12, "Subcode")
        if sub is None:
            break
        sub_value = child(sub, ns.SOAP12, "Value")
        if sub_value is not None and text_of(sub_value):
            subcodes.append(_qname_text(sub_value, text_of(sub_value)))
        cursor = sub
    reason_el = child(el, ns.SOAP12, "Reason")
    texts = children(reason_el, ns.SOAP12, "Text") if reason_el is not None else []
    reason = text_of(texts[0]) if texts else ""
    lang = (texts[0].get(ns.q(ns.XML, "lang")) if texts else None) or "en"
    detail_el = child(el, ns.SOAP12, "Detail")
    return SoapFault(
        code=code,
        reason=reason,
        subcodes=tuple(subcodes),
        lang=lang,
        detail=text_of(detail_el) or None if detail_el is not None else None,
    )


def render_fault(fault: SoapFault, relates_to: str | None = None) -> Element:
    """A complete SOAP 1.2 fault envelope (with NotUnderstood blocks when relevant)."""
    action = FAULT_ACTION if any(s.namespace == ns.WSA for s in fault.subcodes) else None
    headers = AddressingHeaders(action=action or SOAP_FAULT_ACTION, relates_to=relates_to)
    env = etree.Element(ns.q(ns.SOAP12, "Envelope"), nsmap={"soap": ns.SOAP12, "wsa": ns.WSA})
    header = etree.SubElement(env, ns.q(ns.SOAP12, "Header"))
    for block in render_addressing(headers):
        header.append(block)
    for i, missing in enumerate(fault.not_understood):
        nu = etree.SubElement(
            header, ns.q(ns.SOAP12, "NotUnderstood"), nsmap={f"nu{i}": missing.namespace}
        )
        nu.set("qname", f"nu{i}:{missing.local}")
    body = etree.SubElement(env, ns.q(ns.SOAP12, "Body"))
    f = etree.SubElement(body, ns.q(ns.SOAP12, "Fault"))
    code = etree.SubElement(f, ns.q(ns.SOAP12, "Code"))
    etree.SubElement(code, ns.q(ns.SOAP12, "Value")).text = f"soap:{fault.code.value}"
    parent = code
    for i, sub in enumerate(fault.subcodes):
        sub_el = etree.SubElement(parent, ns.q(ns.SOAP12, "Subcode"))
        prefix = _prefix_for(sub.namespace, i)
        value = etree.SubElement(sub_el, ns.q(ns.SOAP12, "Value"), nsmap={prefix: sub.namespace})
        value.text = f"{prefix}:{sub.local}"
        parent = sub_el
    reason = etree.SubElement(f, ns.q(ns.SOAP12, "Reason"))
    text = etree.SubElement(reason, ns.q(ns.SOAP12, "Text"))
    text.set(ns.q(ns.XML, "lang"), fault.lang)
    text.text = fault.reason
    if fault.detail:
        etree.SubElement(f, ns.q(ns.SOAP12, "Detail")).text = fault.detail
    return env


def _prefix_for(namespace: str, index: int) -> str:
    known = {ns.WSA: "wsa", ns.WSSE: "wsse", ns.SOAP12: "soap"}
    return known.get(namespace, f"sc{index}")


def fault_for(error: ImageBridgeError) -> SoapFault:
    """The SOAP fault an error becomes when it is answered with a fault."""
    subcodes = (error.fault_subcode,) if error.fault_subcode is not None else ()
    not_understood: Iterable[QName] = ()
    if isinstance(error, SoapMustUnderstand):
        not_understood = error.not_understood
    return SoapFault(
        code=error.fault_code,
        reason=error.message,
        subcodes=subcodes,
        not_understood=tuple(not_understood),
    )
