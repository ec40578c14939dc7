"""Cross-Enterprise User Assertion [ITI-40], X-Service User and Provider: SAML 2.0 codec.

:func:`parse_assertion` / :func:`render_assertion` for the ``saml2:Assertion``
(soap-transport.md 6.2-6.3); the ``wsse:Security`` header around it is
:mod:`imagebridge.wire.wsse`.  Pure and unsigned: no clock, no randomness, no
signing.  A parsed assertion keeps its source element so the signature
verifier can check the very node that was read.

Lenient on input (IDs that are not NCNames, prefixed or default-namespace HL7
values, any ``xsi:type`` spelling or none, missing NameFormat, whitespace
around values); strict on output (the rendered assertion validates against
``saml-schema-assertion-2.0.xsd`` with the HL7 datatypes in the schema set).
A malformed assertion raises :class:`InvalidSecurityToken` with the precise
reason, an unsupported one :class:`UnsupportedSecurityToken`.
"""

from __future__ import annotations

import copy
import re

from lxml import etree

from imagebridge.errors import (
    InvalidSecurityToken,
    InvalidValue,
    PayloadError,
    QName,
    UnsupportedSecurityToken,
)
from imagebridge.model.instant import Instant
from imagebridge.model.saml import (
    HL7_NS,
    XS_NS,
    Assertion,
    Attribute,
    AttributeStatement,
    AttributeValue,
    AuthnStatement,
    AuthzAction,
    AuthzDecisionStatement,
    CodedValue,
    Conditions,
    Decision,
    NameId,
    Subject,
    SubjectConfirmation,
    ValueKind,
)
from imagebridge.wire import ns
from imagebridge.wire.xml import (
    Element,
    child,
    children,
    elements,
    expect,
    qname_of,
    require_attr,
    require_child,
    text_of,
)

SAML1: str = "urn:oasis:names:tc:SAML:1.0:assertion"
_NCNAME = re.compile(r"^[^\W\d][\w.\-]*$")
_TRUE = ("1", "true")


def _q(local: str) -> str:
    return ns.q(ns.SAML2, local)


def _opt(el: Element, name: str) -> str | None:
    value = el.get(name)
    return value.strip() if value is not None and value.strip() else None


def _instant(el: Element, name: str) -> Instant | None:
    value = el.get(name)
    if value is None or not value.strip():
        return None
    return Instant.parse(value, f"{qname_of(el)[1]} {name}")


# --- parse: saml2:Assertion -----------------------------------------------------------


def parse_assertion(el: Element) -> Assertion:
    """Decode a ``saml2:Assertion``; the result keeps *el* as ``source``.

    Raises :class:`InvalidSecurityToken` (with the precise reason) for a
    malformed assertion and :class:`UnsupportedSecurityToken` for a Version
    other than 2.0 or encrypted parts.
    """
    try:
        return _assertion(el)
    except PayloadError as exc:
        raise InvalidSecurityToken(f"SAML assertion: {exc.message}") from exc


def _assertion(el: Element) -> Assertion:
    expect(el, ns.SAML2, "Assertion")
    version = require_attr(el, "Version")
    if version != "2.0":
        raise UnsupportedSecurityToken(f"SAML assertion Version {version[:10]!r} is not 2.0")
    subject = child(el, ns.SAML2, "Subject")
    conditions = child(el, ns.SAML2, "Conditions")
    return Assertion(
        id=require_attr(el, "ID"),
        issue_instant=Instant.parse(require_attr(el, "IssueInstant"), "IssueInstant"),
        issuer=_name_id(require_child(el, ns.SAML2, "Issuer")),
        subject=_subject(subject) if subject is not None else None,
        conditions=_conditions(conditions) if conditions is not None else None,
        authn_statements=tuple(_authn(s) for s in children(el, ns.SAML2, "AuthnStatement")),
        attribute_statements=tuple(
            _attribute_statement(s) for s in children(el, ns.SAML2, "AttributeStatement")
        ),
        authz_decision_statements=tuple(
            _authz(s) for s in children(el, ns.SAML2, "AuthzDecisionStatement")
        ),
        version=version,
        signed=child(el, ns.DS, "Signature") is not None,
        advice=child(el, ns.SAML2, "Advice"),
        other_statements=tuple(children(el, ns.SAML2, "Statement")),
        source=el,
    )


def _name_id(el: Element) -> NameId:
    return NameId(
        value=text_of(el),
        format=_opt(el, "Format"),
        name_qualifier=_opt(el, "NameQualifier"),
        sp_name_qualifier=_opt(el, "SPNameQualifier"),
        sp_provided_id=_opt(el, "SPProvidedID"),
    )


def _subject(el: Element) -> Subject:
    if child(el, ns.SAML2, "EncryptedID") is not None:
        raise UnsupportedSecurityToken("an encrypted Subject NameID is not supported")
    name_id = child(el, ns.SAML2, "NameID")
    return Subject(
        name_id=_name_id(name_id) if name_id is not None else None,
        confirmations=tuple(
            _confirmation(c) for c in children(el, ns.SAML2, "SubjectConfirmation")
        ),
    )


def _confirmation(el: Element) -> SubjectConfirmation:
    name_id = child(el, ns.SAML2, "NameID")
    method = require_attr(el, "Method")
    data = child(el, ns.SAML2, "SubjectConfirmationData")
    if data is None:
        return SubjectConfirmation(method, _name_id(name_id) if name_id is not None else None)
    key_info = child(data, ns.DS, "KeyInfo")
    cert = None
    if key_info is not None:
        found = key_info.find(f"{ns.q(ns.DS, 'X509Data')}/{ns.q(ns.DS, 'X509Certificate')}")
        cert = "".join(text_of(found).split()) or None
    return SubjectConfirmation(
        method=method,
        name_id=_name_id(name_id) if name_id is not None else None,
        not_before=_instant(data, "NotBefore"),
        not_on_or_after=_instant(data, "NotOnOrAfter"),
        recipient=_opt(data, "Recipient"),
        in_response_to=_opt(data, "InResponseTo"),
        address=_opt(data, "Address"),
        certificate=cert,
        key_info=key_info,
        other_data=tuple(c for c in elements(data) if c is not key_info),
    )


def _conditions(el: Element) -> Conditions:
    restrictions = tuple(
        tuple(text_of(a) for a in children(r, ns.SAML2, "Audience"))
        for r in children(el, ns.SAML2, "AudienceRestriction")
    )
    known = {_q("AudienceRestriction"), _q("OneTimeUse")}
    return Conditions(
        not_before=_instant(el, "NotBefore"),
        not_on_or_after=_instant(el, "NotOnOrAfter"),
        audience_restrictions=restrictions,
        one_time_use=child(el, ns.SAML2, "OneTimeUse") is not None,
        other=tuple(c for c in elements(el) if c.tag not in known),
    )


def _authn(el: Element) -> AuthnStatement:
    context = require_child(el, ns.SAML2, "AuthnContext")
    if child(context, ns.SAML2, "AuthnContextDecl") is not None:
        raise UnsupportedSecurityToken("an inline AuthnContextDecl is not supported")
    locality = child(el, ns.SAML2, "SubjectLocality")
    return AuthnStatement(
        authn_instant=Instant.parse(require_attr(el, "AuthnInstant"), "AuthnInstant"),
        context_class_ref=text_of(child(context, ns.SAML2, "AuthnContextClassRef")) or None,
        context_decl_ref=text_of(child(context, ns.SAML2, "AuthnContextDeclRef")) or None,
        session_index=_opt(el, "SessionIndex"),
        session_not_on_or_after=_instant(el, "SessionNotOnOrAfter"),
        locality_address=_opt(locality, "Address") if locality is not None else None,
        locality_dns_name=_opt(locality, "DNSName") if locality is not None else None,
        authenticating_authorities=tuple(
            text_of(a) for a in children(context, ns.SAML2, "AuthenticatingAuthority")
        ),
    )


def _attribute_statement(el: Element) -> AttributeStatement:
    if child(el, ns.SAML2, "EncryptedAttribute") is not None:
        raise UnsupportedSecurityToken("encrypted SAML attributes are not supported")
    return AttributeStatement(
        tuple(
            Attribute(
                name=require_attr(a, "Name"),
                values=tuple(_value(v) for v in children(a, ns.SAML2, "AttributeValue")),
                name_format=_opt(a, "NameFormat"),
                friendly_name=_opt(a, "FriendlyName"),
            )
            for a in children(el, ns.SAML2, "Attribute")
        )
    )


def _value(el: Element) -> AttributeValue:
    """One AttributeValue: text, an HL7 code, other XML, or nothing."""
    if (el.get(ns.q(ns.XSI, "nil")) or "").strip().lower() in _TRUE:
        return AttributeValue(ValueKind.EMPTY)
    value_type = _xsi_type(el)
    kids = list(elements(el))
    if not kids:
        text = text_of(el)
        kind = ValueKind.TEXT if text else ValueKind.EMPTY
        return AttributeValue(kind, text=text, value_type=value_type)
    element = QName(*qname_of(kids[0])) if len(kids) == 1 else None
    code = (kids[0].get("code") or "").strip()
    if element is not None and element.namespace == HL7_NS and code:
        k = kids[0]
        coded = CodedValue(
            code, _opt(k, "codeSystem"), _opt(k, "codeSystemName"), _opt(k, "displayName")
        )
        # An xsi:type on the AttributeValue itself (Metriport's hl7:CE wrapper)
        # describes the child, so it is not kept.
        return AttributeValue(ValueKind.CODED, coded=coded, element=element)
    return AttributeValue(ValueKind.XML, value_type=value_type, element=element, raw=el)


def _xsi_type(el: Element) -> QName | None:
    """The ``xsi:type`` of *el* resolved in its scope (any prefix, or the default namespace)."""
    raw = el.get(ns.q(ns.XSI, "type"))
    if raw is None or not raw.strip():
        return None
    prefix, _, local = raw.strip().rpartition(":")
    namespace = el.nsmap.get(prefix or None)
    if not namespace or not local:
        raise InvalidValue(f"xsi:type {raw.strip()[:60]!r} does not resolve to a namespace")
    return QName(namespace, local)


def _authz(el: Element) -> AuthzDecisionStatement:
    resource = el.get("Resource")
    if resource is None:
        raise InvalidValue("AuthzDecisionStatement has no Resource")
    decision = require_attr(el, "Decision")
    try:
        kind = Decision(decision)
    except ValueError as exc:
        raise InvalidValue(f"unknown AuthzDecisionStatement Decision {decision[:20]!r}") from exc
    evidence = child(el, ns.SAML2, "Evidence")
    if evidence is not None and (
        child(evidence, ns.SAML2, "EncryptedAssertion") is not None
        or child(evidence, ns.SAML2, "AssertionURIRef") is not None
    ):
        raise UnsupportedSecurityToken("Evidence by URI or encrypted assertion is not supported")
    return AuthzDecisionStatement(
        resource=resource.strip(),
        decision=kind,
        actions=tuple(
            AuthzAction(text_of(a), require_attr(a, "Namespace"))
            for a in children(el, ns.SAML2, "Action")
        ),
        evidence=tuple(_assertion(a) for a in children(evidence, ns.SAML2, "Assertion"))
        if evidence is not None
        else (),
        evidence_refs=tuple(text_of(r) for r in children(evidence, ns.SAML2, "AssertionIDRef"))
        if evidence is not None
        else (),
    )


# --- render ---------------------------------------------------------------------------


def render_assertion(assertion: Assertion) -> Element:
    """Encode an unsigned ``saml2:Assertion`` in schema order.

    Raises :class:`InvalidValue` for an ID that is not an NCName (``xs:ID``),
    which partners send but a schema-valid assertion cannot carry.
    """
    a = assertion
    el = etree.Element(_q("Assertion"), nsmap={"saml2": ns.SAML2, "xs": XS_NS, "xsi": ns.XSI})
    el.set("ID", ncname(a.id, "Assertion ID"))
    el.set("IssueInstant", a.issue_instant.text)
    el.set("Version", a.version)
    _render_name_id(el, "Issuer", a.issuer)
    if a.subject is not None:
        _render_subject(el, a.subject)
    if a.conditions is not None:
        _render_conditions(el, a.conditions)
    if a.advice is not None:
        el.append(copy.deepcopy(a.advice))
    for s in a.authn_statements:
        _render_authn(el, s)
    for st in a.attribute_statements:
        st_el = etree.SubElement(el, _q("AttributeStatement"))
        for attr in st.attributes:
            _render_attribute(st_el, attr)
    for z in a.authz_decision_statements:
        _render_authz(el, z)
    for raw in a.other_statements:
        el.append(copy.deepcopy(raw))
    return el


def ncname(value: str, what: str) -> str:
    """*value* if it is an NCName (``xs:ID``), else :class:`InvalidValue` naming *what*."""
    if not _NCNAME.match(value):
        raise InvalidValue(f"{what} {value[:60]!r} is not an NCName (xs:ID)")
    return value


def _set(el: Element, name: str, value: str | Instant | None) -> None:
    if value is not None:
        el.set(name, value.text if isinstance(value, Instant) else value)


def _render_name_id(parent: Element, local: str, n: NameId) -> None:
    el = etree.SubElement(parent, _q(local))
    _set(el, "NameQualifier", n.name_qualifier)
    _set(el, "SPNameQualifier", n.sp_name_qualifier)
    _set(el, "Format", n.format)
    _set(el, "SPProvidedID", n.sp_provided_id)
    el.text = n.value


def _render_subject(parent: Element, s: Subject) -> None:
    el = etree.SubElement(parent, _q("Subject"))
    if s.name_id is not None:
        _render_name_id(el, "NameID", s.name_id)
    for c in s.confirmations:
        c_el = etree.SubElement(el, _q("SubjectConfirmation"))
        c_el.set("Method", c.method)
        if c.name_id is not None:
            _render_name_id(c_el, "NameID", c.name_id)
        attrs = (c.not_before, c.not_on_or_after, c.recipient, c.in_response_to, c.address)
        if not any((*attrs, c.certificate, c.key_info is not None, c.other_data)):
            continue
        data = etree.SubElement(c_el, _q("SubjectConfirmationData"))
        for name, value in zip(
            ("NotBefore", "NotOnOrAfter", "Recipient", "InResponseTo", "Address"),
            attrs,
            strict=True,
        ):
            _set(data, name, value)
        if c.key_info is not None:
            data.append(copy.deepcopy(c.key_info))
        elif c.certificate is not None:
            key_info = etree.SubElement(data, ns.q(ns.DS, "KeyInfo"), nsmap={"ds": ns.DS})
            x509 = etree.SubElement(key_info, ns.q(ns.DS, "X509Data"))
            etree.SubElement(x509, ns.q(ns.DS, "X509Certificate")).text = c.certificate
        for raw in c.other_data:
            data.append(copy.deepcopy(raw))


def _render_conditions(parent: Element, c: Conditions) -> None:
    el = etree.SubElement(parent, _q("Conditions"))
    _set(el, "NotBefore", c.not_before)
    _set(el, "NotOnOrAfter", c.not_on_or_after)
    for restriction in c.audience_restrictions:
        r_el = etree.SubElement(el, _q("AudienceRestriction"))
        for audience in restriction:
            etree.SubElement(r_el, _q("Audience")).text = audience
    if c.one_time_use:
        etree.SubElement(el, _q("OneTimeUse"))
    for raw in c.other:
        el.append(copy.deepcopy(raw))


def _render_authn(parent: Element, s: AuthnStatement) -> None:
    el = etree.SubElement(parent, _q("AuthnStatement"))
    _set(el, "AuthnInstant", s.authn_instant)
    _set(el, "SessionIndex", s.session_index)
    _set(el, "SessionNotOnOrAfter", s.session_not_on_or_after)
    if s.locality_address is not None or s.locality_dns_name is not None:
        loc = etree.SubElement(el, _q("SubjectLocality"))
        _set(loc, "Address", s.locality_address)
        _set(loc, "DNSName", s.locality_dns_name)
    ctx = etree.SubElement(el, _q("AuthnContext"))
    if s.context_class_ref is not None:
        etree.SubElement(ctx, _q("AuthnContextClassRef")).text = s.context_class_ref
    if s.context_decl_ref is not None:
        etree.SubElement(ctx, _q("AuthnContextDeclRef")).text = s.context_decl_ref
    for authority in s.authenticating_authorities:
        etree.SubElement(ctx, _q("AuthenticatingAuthority")).text = authority


def _render_attribute(parent: Element, attr: Attribute) -> None:
    el = etree.SubElement(parent, _q("Attribute"))
    el.set("Name", attr.name)
    _set(el, "NameFormat", attr.name_format)
    _set(el, "FriendlyName", attr.friendly_name)
    for v in attr.values:
        if v.kind is ValueKind.CODED and v.coded is not None and v.element is not None:
            value_el = etree.SubElement(el, _q("AttributeValue"))
            code_el = etree.SubElement(
                value_el, v.element.clark, nsmap={"hl7": v.element.namespace}
            )
            code_el.set(ns.q(ns.XSI, "type"), "hl7:CE")
            code_el.set("code", v.coded.code)
            _set(code_el, "codeSystem", v.coded.code_system)
            _set(code_el, "codeSystemName", v.coded.code_system_name)
            _set(code_el, "displayName", v.coded.display_name)
            continue
        value_el = _typed_value(el, v.value_type)
        if v.kind is ValueKind.TEXT:
            value_el.text = v.text
        elif v.kind is ValueKind.XML and v.raw is not None:
            value_el.text = v.raw.text
            for raw in elements(v.raw):
                value_el.append(copy.deepcopy(raw))


def _typed_value(parent: Element, value_type: QName | None) -> Element:
    if value_type is None:
        return etree.SubElement(parent, _q("AttributeValue"))
    known = {XS_NS: "xs", HL7_NS: "hl7"}
    prefix = known.get(value_type.namespace, "vt")
    nsmap = {} if prefix == "xs" else {prefix: value_type.namespace}
    el = etree.SubElement(parent, _q("AttributeValue"), nsmap=nsmap)
    el.set(ns.q(ns.XSI, "type"), f"{prefix}:{value_type.local}")
    return el


def _render_authz(parent: Element, z: AuthzDecisionStatement) -> None:
    el = etree.SubElement(parent, _q("AuthzDecisionStatement"))
    el.set("Resource", z.resource)
    el.set("Decision", z.decision.value)
    for action in z.actions:
        a_el = etree.SubElement(el, _q("Action"))
        a_el.set("Namespace", action.namespace)
        a_el.text = action.value
    if z.evidence or z.evidence_refs:
        ev = etree.SubElement(el, _q("Evidence"))
        for ref in z.evidence_refs:
            etree.SubElement(ev, _q("AssertionIDRef")).text = ref
        for nested in z.evidence:
            ev.append(render_assertion(nested))
