"""Hardened XML: the only place where untrusted bytes become an lxml tree.

Every untrusted document goes through :func:`parse_xml`.  It refuses DTDs
(so no entity expansion and no external entities), never touches the network,
caps the document size before parsing and the element depth after, and turns
each kind of refusal into its own typed error from :mod:`imagebridge.errors`.

The small accessors at the bottom are what the codecs use to walk a parsed
tree by namespace URI (never by prefix) and to raise precise structural errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lxml import etree

from imagebridge.errors import (
    MissingElement,
    UnexpectedElement,
    WrongNamespace,
    XmlDtdForbidden,
    XmlEntityForbidden,
    XmlMalformed,
    XmlTooDeep,
    XmlTooLarge,
)

Element = etree._Element

# libxml2 error codes (xmlerror.h) that deserve their own exception.
_XML_ERR_UNDECLARED_ENTITY = 26
_XML_WAR_UNDECLARED_ENTITY = 27
_XML_ERR_ENTITY_LOOP = 89
_XML_ERR_EXCESSIVE_DEPTH = 114  # reported for depth beyond libxml2's own cap (256)


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Ceilings applied to one untrusted XML document."""

    max_bytes: int = 32 * 1024 * 1024
    max_depth: int = 128

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or not 1 <= self.max_depth <= 255:
            raise ValueError("XmlLimits: max_bytes must be positive and max_depth in 1..255")


DEFAULT_LIMITS = XmlLimits()


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers are not safe to share across threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
        strip_cdata=True,
    )


def parse_xml(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> Element:
    """Parse untrusted *data* and return its root element.

    Raises :class:`XmlTooLarge`, :class:`XmlDtdForbidden`,
    :class:`XmlEntityForbidden`, :class:`XmlTooDeep` or :class:`XmlMalformed`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes")
    if len(data) > limits.max_bytes:
        raise XmlTooLarge(
            f"XML document of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes"
        )
    raw = bytes(data)
    # Cheap early refusal; the docinfo check below also catches other encodings.
    if b"<!DOCTYPE" in raw[:4096] or b"<!ENTITY" in raw[:4096]:
        raise XmlDtdForbidden("XML with a DOCTYPE/DTD is refused")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        raise _classify(exc) from exc
    if root is None:
        raise XmlMalformed("XML document has no root element")
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlDtdForbidden("XML with a DOCTYPE/DTD is refused")
    _check_depth(root, limits.max_depth)
    return root


def _classify(exc: etree.XMLSyntaxError) -> Exception:
    code = int(getattr(exc, "code", 0))
    msg = exc.msg or str(exc)
    if code in (_XML_ERR_UNDECLARED_ENTITY, _XML_WAR_UNDECLARED_ENTITY, _XML_ERR_ENTITY_LOOP):
        return XmlEntityForbidden(f"undeclared or forbidden entity reference: {msg}")
    if code == _XML_ERR_EXCESSIVE_DEPTH or "depth" in msg.lower():
        return XmlTooDeep(f"XML nesting is too deep: {msg}")
    if "huge" in msg.lower():
        return XmlTooLarge(f"XML node exceeds the parser's size limit: {msg}")
    if "DOCTYPE" in msg or "DTD" in msg:
        return XmlDtdForbidden(f"XML with a DTD is refused: {msg}")
    return XmlMalformed(f"XML is not well-formed: {msg}")


def _check_depth(root: Element, max_depth: int) -> None:
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > max_depth:
                raise XmlTooDeep(f"XML nesting exceeds {max_depth} levels")
        else:
            depth -= 1


# --- accessors used by the codecs ------------------------------------------------------


def qname_of(el: Element) -> tuple[str, str]:
    """``(namespace, local)`` of an element; namespace is ``""`` when unqualified."""
    qn = etree.QName(el)
    return (qn.namespace or "", qn.localname)


def expect(el: Element, namespace: str, local: str) -> Element:
    """Check that *el* is ``{namespace}local``; raise a precise error otherwise."""
    ns, name = qname_of(el)
    if name != local:
        raise UnexpectedElement(f"expected element {local}, found {name}")
    if ns != namespace:
        raise WrongNamespace(f"element {local} is in namespace {ns!r}, expected {namespace!r}")
    return el


def elements(el: Element) -> Iterator[Element]:
    """Child elements only (comments, PIs and entity nodes skipped)."""
    for child in el:
        if isinstance(child.tag, str):
            yield child


def children(el: Element, namespace: str, local: str) -> list[Element]:
    """All children named ``{namespace}local``."""
    tag = f"{{{namespace}}}{local}"
    return [c for c in elements(el) if c.tag == tag]


def child(el: Element, namespace: str, local: str) -> Element | None:
    """The first child named ``{namespace}local``, or None."""
    tag = f"{{{namespace}}}{local}"
    for c in elements(el):
        if c.tag == tag:
            return c
    return None


def require_child(el: Element, namespace: str, local: str) -> Element:
    """The first child ``{namespace}local``; a missing one raises :class:`MissingElement`.

    A child with the right local name in another namespace raises
    :class:`WrongNamespace` so that the sender learns what is wrong.
    """
    found = child(el, namespace, local)
    if found is not None:
        return found
    for c in elements(el):
        ns, name = qname_of(c)
        if name == local:
            raise WrongNamespace(
                f"element {local} under {qname_of(el)[1]} is in namespace {ns!r}, "
                f"expected {namespace!r}"
            )
    raise MissingElement(f"required element {local} is missing under {qname_of(el)[1]}")


def text_of(el: Element | None) -> str:
    """The element's text content with surrounding whitespace stripped ('' if None)."""
    if el is None:
        return ""
    return "".join(t for t in el.itertext() if isinstance(t, str)).strip()


def require_text(el: Element, namespace: str, local: str) -> str:
    """Stripped text of a required child; empty text counts as missing."""
    value = text_of(require_child(el, namespace, local))
    if not value:
        raise MissingElement(f"element {local} under {qname_of(el)[1]} is empty")
    return value


def require_attr(el: Element, name: str) -> str:
    """A required attribute, stripped; absent or empty raises :class:`MissingElement`."""
    value = el.get(name)
    if value is None or not value.strip():
        raise MissingElement(f"attribute {name} is missing on {qname_of(el)[1]}")
    return value.strip()


def serialize(el: Element) -> bytes:
    """UTF-8 bytes with an XML declaration, as sent on the wire."""
    return etree.tostring(el, xml_declaration=True, encoding="UTF-8")
