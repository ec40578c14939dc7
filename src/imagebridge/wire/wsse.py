"""Cross-Enterprise User Assertion [ITI-40], X-Service User and Provider: the wsse:Security codec.

:func:`parse_security` / :func:`render_security` for the WS-Security header
block that carries the SAML 2.0 assertion (soap-transport.md 6.1).  Children
are read in any order (CONNECT puts the Timestamp first, Metriport last);
``ds:Signature`` children and anything else are kept as raw elements for the
signature verifier.  Pure and unsigned: nothing is signed or verified here.
"""

from __future__ import annotations

import copy

from lxml import etree

from imagebridge.errors import (
    InvalidSecurity,
    PayloadError,
    UnsupportedSecurityToken,
)
from imagebridge.model.instant import Instant
from imagebridge.model.saml import Assertion
from imagebridge.model.wsse import SecurityHeader, Timestamp
from imagebridge.wire import ns
from imagebridge.wire.saml import SAML1, ncname, parse_assertion, render_assertion
from imagebridge.wire.xml import Element, child, elements, expect, qname_of, text_of


def parse_security(el: Element) -> SecurityHeader:
    """Decode a ``wsse:Security`` header block (children in any order).

    Raises :class:`InvalidSecurity` for a malformed header (wrong element, two
    Timestamps or two assertions, bad Created/Expires),
    :class:`UnsupportedSecurityToken` for SAML 1.x or encrypted assertions, and
    :class:`InvalidSecurityToken` for a malformed assertion.
    """
    try:
        expect(el, ns.WSSE, "Security")
    except PayloadError as exc:
        raise InvalidSecurity(f"not a wsse:Security header: {exc.message}") from exc
    timestamp: Timestamp | None = None
    assertion: Assertion | None = None
    signatures: list[Element] = []
    other: list[Element] = []
    for c in elements(el):
        if c.tag == ns.q(ns.WSU, "Timestamp"):
            if timestamp is not None:
                raise InvalidSecurity("wsse:Security holds more than one wsu:Timestamp")
            timestamp = _timestamp(c)
        elif c.tag == ns.q(ns.SAML2, "Assertion"):
            if assertion is not None:
                raise InvalidSecurity("wsse:Security holds more than one SAML assertion")
            assertion = parse_assertion(c)
        elif c.tag == ns.q(ns.SAML2, "EncryptedAssertion"):
            raise UnsupportedSecurityToken("encrypted SAML assertions are not supported")
        elif qname_of(c)[0] == SAML1:
            raise UnsupportedSecurityToken("SAML 1.x tokens are not supported, only SAML 2.0")
        elif c.tag == ns.q(ns.DS, "Signature"):
            signatures.append(c)
        else:
            other.append(c)
    return SecurityHeader(timestamp, assertion, tuple(signatures), tuple(other), source=el)


def parse_timestamp(el: Element) -> Timestamp:
    """Decode one ``wsu:Timestamp``; :class:`InvalidSecurity` if Created/Expires are malformed."""
    return _timestamp(el)


def _timestamp(el: Element) -> Timestamp:
    try:
        created = child(el, ns.WSU, "Created")
        expires = child(el, ns.WSU, "Expires")
        return Timestamp(
            created=Instant.parse(text_of(created), "wsu:Created") if created is not None else None,
            expires=Instant.parse(text_of(expires), "wsu:Expires") if expires is not None else None,
            id=(el.get(ns.q(ns.WSU, "Id")) or "").strip() or None,
        )
    except PayloadError as exc:
        raise InvalidSecurity(f"wsu:Timestamp: {exc.message}") from exc


def render_security(header: SecurityHeader, must_understand: bool = True) -> Element:
    """Encode ``wsse:Security``: Timestamp, assertion, other children, then signatures.

    ``soap:mustUnderstand="true"`` is set unless told otherwise (soap-transport.md
    6.1).  Raw children (signatures, others) are deep copies; nothing is signed here.
    """
    nsmap = {"wsse": ns.WSSE, "wsu": ns.WSU} | ({"soap": ns.SOAP12} if must_understand else {})
    el = etree.Element(ns.q(ns.WSSE, "Security"), nsmap=nsmap)
    if must_understand:
        el.set(ns.q(ns.SOAP12, "mustUnderstand"), "true")
    ts = header.timestamp
    if ts is not None:
        ts_el = etree.SubElement(el, ns.q(ns.WSU, "Timestamp"))
        if ts.id is not None:
            ts_el.set(ns.q(ns.WSU, "Id"), ncname(ts.id, "wsu:Id"))
        if ts.created is not None:
            etree.SubElement(ts_el, ns.q(ns.WSU, "Created")).text = ts.created.text
        if ts.expires is not None:
            etree.SubElement(ts_el, ns.q(ns.WSU, "Expires")).text = ts.expires.text
    if header.assertion is not None:
        el.append(render_assertion(header.assertion))
    for raw in (*header.other, *header.signatures):
        el.append(copy.deepcopy(raw))
    return el
