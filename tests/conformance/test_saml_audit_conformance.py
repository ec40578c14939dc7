"""XUA SAML assertions, wsse:Security headers and ATNA audit records from real projects.

* every file in ``samples/*/xua-saml`` (a bare Assertion, a ``wsse:Security``
  element, or a SOAP envelope whose header holds one) parses; the XUA
  attributes read as the table below says, or are refused by the typed
  accessor with the stated error; the model renders back, validates against
  the SAML 2.0 / WSS schemas (with the HL7 datatypes in the set, so
  ``xsi:type="hl7:CE"`` resolves) and parses back to an equal model.  Where a
  sample's own content cannot be schema-valid (IDs starting with a digit, the
  IPF sample's made-up ``urn:hl7-org:xxxx`` values), rendering is shown to
  refuse it or to reproduce it, and the test then fixes just that part;
* every other plain-XML sample envelope carrying ``wsse:Security`` parses
  (requests: the purpose of use; responses: Timestamp + SignatureConfirmation);
* every IPF ATNA record in ``samples/ipf/atna-audit`` parses, renders back
  valid against ``dicom2017c.xsd`` and parses back to an equal model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from imagebridge.errors import InvalidValue, XuaAttributeInvalid, XuaAttributeMissing
from imagebridge.model.audit import EventOutcomeIndicator
from imagebridge.model.saml import Assertion, AttributeStatement, ValueKind
from imagebridge.model.wsse import SecurityHeader
from imagebridge.wire import ns
from imagebridge.wire.audit import parse_audit_message, render_audit_message
from imagebridge.wire.saml import parse_assertion, render_assertion
from imagebridge.wire.wsse import parse_security, render_security
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import assert_valid, assert_xua_valid

pytestmark = pytest.mark.conformance

SECURITY = ns.q(ns.WSSE, "Security")
ASSERTION = ns.q(ns.SAML2, "Assertion")
# accessor name -> expected value (CodedValue accessors: the code) or the error it raises
XUA_SAMPLES: dict[str, dict[str, Any]] = {
    "connect/xua-saml/authFrameworkAssertion.xml": {
        "subject_id": "Karl S Skagerberg",
        "organization": "InternalTest2",
        "organization_id": "urn:oid:2.2",
        "home_community_id": "urn:oid:1.1",
        "role": "307969004",
        "purpose_of_use": "PUBLICHEALTHKIERAN",
        "npi": "1234567890",
        "resource_id": "500000000^^^&1.1&ISO",
        "audit_user_id": "<UID=kskagerb@CN=SAML User,OU=SU,O=SAML User,L=Los Angeles,ST=CA,C=US>",
    },
    "connect/xua-saml/complete_saml.xml": {
        "subject_id": "Interop IT Testcase",
        "organization_id": "2.16.840.1.113883.3.424",
        "home_community_id": "urn:oid:2.16.840.1.113883.3.424",
        "role": "46255001",
        "purpose_of_use": "OPERATIONS",  # CONNECT's PurposeForUse
        "npi": None,
        "resource_id": "RI1.101.00043^^^&2.16.840.1.113883.3.424&ISO",
    },
    "connect/xua-saml/saml_missingValues.xml": {
        "subject_id": XuaAttributeMissing,
        "organization": XuaAttributeMissing,
        "organization_id": XuaAttributeMissing,
        "home_community_id": XuaAttributeMissing,
        "role": XuaAttributeMissing,
        "purpose_of_use": XuaAttributeMissing,
        "resource_id": None,
    },
    "ipf/xua-saml/saml2-assertion-for-xua.xml": {
        "subject_id": "Dr. Klaus-Peter Kohlrabi",
        "role": XuaAttributeInvalid,  # six values across two statements
        "purpose_of_use": XuaAttributeInvalid,
        "home_community_id": XuaAttributeMissing,
        "resource_id": "543797436^^^&1.2.840.113619.6.197&ISO",
        "audit_user_id": "alias2<lipse@demo.com>",
    },
    "ipf/xua-saml/xua-assertion.xml": {
        "subject_id": "Rosa Sestak",
        "organization": XuaAttributeInvalid,  # "Org 1 AG" and "Org 2 SA"
        "organization_id": XuaAttributeInvalid,
        "home_community_id": "urn:oid:1.3.6.1.4.1.21367.2017.2.6.19",
        "role": "HCP",
        "purpose_of_use": "NORM",
        "resource_id": "761337610411353650^^^&2.16.756.5.30.1.127.3.10.3&ISO",
    },
    "metriport/xua-saml/valid-saml.xml": {
        "subject_id": "Administrative AND/OR managerial worker",
        "organization": "Metriport",
        "home_community_id": "urn:oid:1.16.840.1.113883.3.9621.5.219",
        "role": "106331006",  # xsi:type="hl7:CE" on the AttributeValue itself
        "purpose_of_use": "TREATMENT",
        "resource_id": None,
    },
}


def load(path: Path) -> tuple[Assertion, SecurityHeader | None]:
    """The assertion of a sample and, when it has one, its wsse:Security header."""
    root = parse_xml(path.read_bytes())
    security = root if root.tag == SECURITY else next(root.iter(SECURITY), None)
    if security is not None:
        header = parse_security(security)
        assert header.assertion is not None
        return header.assertion, header
    found = root if root.tag == ASSERTION else next(root.iter(ASSERTION))
    return parse_assertion(found), None


def read(assertion: Assertion, accessor: str) -> object:
    value = getattr(assertion, accessor)()
    code = getattr(value, "code", None)
    return code if isinstance(code, str) else (None if value is None else str(value))


def schema_fixable(assertion: Assertion) -> Assertion:
    """Prefix IDs that are not NCNames with ``_`` (also inside Evidence)."""
    fixed_id = assertion.id if not assertion.id[0].isdigit() else "_" + assertion.id
    statements = tuple(
        dataclasses.replace(z, evidence=tuple(schema_fixable(e) for e in z.evidence))
        for z in assertion.authz_decision_statements
    )
    return dataclasses.replace(assertion, id=fixed_id, authz_decision_statements=statements)


def without_foreign_values(assertion: Assertion) -> Assertion:
    """Drop XML values whose element is not HL7 v3 (IPF's made-up test namespaces)."""
    statements = []
    for statement in assertion.attribute_statements:
        attributes = tuple(
            dataclasses.replace(
                a,
                values=tuple(
                    v
                    for v in a.values
                    if v.kind is not ValueKind.XML
                    or (v.element is not None and v.element.namespace == ns.HL7)
                ),
            )
            for a in statement.attributes
        )
        statements.append(AttributeStatement(attributes))
    return dataclasses.replace(assertion, attribute_statements=tuple(statements))


def test_every_xua_sample_is_covered(conformance_dir: Path) -> None:
    found = {
        str(p.relative_to(conformance_dir / "samples"))
        for p in (conformance_dir / "samples").glob("*/xua-saml/*")
    }
    assert found == set(XUA_SAMPLES)


@pytest.mark.parametrize("name", sorted(XUA_SAMPLES))
def test_xua_sample_reads_as_expected(conformance_dir: Path, name: str) -> None:
    assertion, _ = load(conformance_dir / "samples" / name)
    assert assertion.source is not None
    for accessor, expected in XUA_SAMPLES[name].items():
        if isinstance(expected, type) and issubclass(expected, Exception):
            with pytest.raises(expected):
                read(assertion, accessor)
        else:
            assert read(assertion, accessor) == expected, accessor


@pytest.mark.parametrize("name", sorted(XUA_SAMPLES))
def test_xua_sample_renders_back_schema_valid(conformance_dir: Path, name: str) -> None:
    assertion, header = load(conformance_dir / "samples" / name)
    fixed = schema_fixable(assertion)
    if fixed != assertion:  # CONNECT: bare UUIDs as IDs
        with pytest.raises(InvalidValue, match="NCName"):
            render_assertion(assertion)
    clean = without_foreign_values(fixed)
    if clean != fixed:  # IPF: reproduced raw, so as invalid as the sample
        with pytest.raises(AssertionError, match="xxxx"):
            assert_xua_valid(render_assertion(fixed))
    element = render_assertion(clean)
    assert_xua_valid(element)
    assert parse_assertion(parse_xml(etree.tostring(element))) == clean
    if header is not None:
        rendered = render_security(dataclasses.replace(header, assertion=clean))
        assert_xua_valid(rendered)
        again = parse_security(parse_xml(etree.tostring(rendered)))
        assert again.timestamp == header.timestamp
        assert len(again.signatures) == len(header.signatures)


def test_structure_of_the_richer_samples(conformance_dir: Path) -> None:
    samples = conformance_dir / "samples"
    connect, _ = load(samples / "connect/xua-saml/complete_saml.xml")
    assert connect.subject is not None
    methods = [c.method.rsplit(":", 1)[-1] for c in connect.subject.confirmations]
    assert methods == ["holder-of-key", "sender-vouches", "bearer"]
    (authz,) = connect.authz_decision_statements
    (evidence,) = authz.evidence
    assert [a.name for a in evidence.attributes("AccessConsentPolicy")] == ["AccessConsentPolicy"]
    assert connect.conditions is None
    assert connect.authn_statements[0].context_class_ref == (
        "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
    )

    metriport, header = load(samples / "metriport/xua-saml/valid-saml.xml")
    assert header is not None and header.timestamp is not None
    assert header.timestamp.created is not None
    assert header.timestamp.created.text == "2024-04-09T18:19:22.811Z"
    assert len(header.signatures) == 1
    assert metriport.signed
    assert metriport.issuer.format == "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    assert metriport.subject is not None
    (hok,) = metriport.subject.confirmations
    assert hok.is_holder_of_key
    assert hok.certificate is not None and hok.certificate.startswith("MIIBxDCCAW6g")

    swiss, _ = load(samples / "ipf/xua-saml/xua-assertion.xml")
    assert swiss.text_values("urn:oasis:names:tc:xspa:1.0:subject:organization") == (
        "Org 1\n                AG",
        "Org 2\n                SA",
    )
    assert swiss.conditions is not None
    assert swiss.conditions.audiences == ("urn:e-health-suisse:token-audience:all-communities",)


# --- other envelopes that carry wsse:Security --------------------------------------------

# purpose-of-use code of a request, or None for a response (Timestamp + SignatureConfirmation)
SECURED_ENVELOPES: dict[str, str | None] = {
    "connect/iti-39/saml_header_diff_order.xml": "PUBLICHEALTH",
    "metriport/iti-38/epic-iti-38-request.xml": "TREATMENT",
    "metriport/iti-39/epic-iti-39-request.xml": "TREATMENT",
    "metriport/iti-55/epic-iti-55-request.xml": "TREATMENT",
    "metriport/iti-38/dq_empty.xml": None,
    "metriport/iti-38/dq_multiple_docs.xml": None,
    "metriport/iti-39/dr_empty.xml": None,
    "metriport/iti-39/dr_registry_error.xml": None,
    "metriport/iti-39/dr_success.xml": None,
    "metriport/iti-55/xcpd_error.xml": None,
    "metriport/iti-55/xcpd_match.xml": None,
    "metriport/iti-55/xcpd_match_multi_addr_name.xml": None,
    "metriport/iti-55/xcpd_match_no_addresses.xml": None,
    "metriport/iti-55/xcpd_no_match.xml": None,
}


def test_every_secured_xml_envelope_is_covered(conformance_dir: Path) -> None:
    found = {
        str(p.relative_to(conformance_dir / "samples"))
        for p in (conformance_dir / "samples").glob("*/*/*.xml")
        if "xua-saml" not in p.parts and b"wssecurity-secext" in p.read_bytes()
    }
    assert found == set(SECURED_ENVELOPES)


@pytest.mark.parametrize("name", sorted(SECURED_ENVELOPES))
def test_secured_envelope_header_parses(conformance_dir: Path, name: str) -> None:
    root = parse_xml((conformance_dir / "samples" / name).read_bytes())
    (security,) = root.iter(SECURITY)
    header = parse_security(security)
    assert header.timestamp is not None
    purpose = SECURED_ENVELOPES[name]
    if purpose is None:
        assert header.assertion is None
        assert [e.tag for e in header.other] == [ns.q(ns.WSSE11, "SignatureConfirmation")]
        return
    assert header.assertion is not None
    assert header.assertion.purpose_of_use().code == purpose
    assert len(header.signatures) == 1
    if name.endswith("epic-iti-55-request.xml"):  # stray "}" after the OID
        with pytest.raises(XuaAttributeInvalid, match="urn:oid"):
            header.assertion.home_community_id()
    else:
        header.assertion.home_community_id()
    element = render_assertion(schema_fixable(header.assertion))
    assert_xua_valid(element)


# --- ATNA ----------------------------------------------------------------------------------

AUDIT_SAMPLES = {
    # file: (participants, object roles, homeCommunityID detail)
    "ipf/atna-audit/xcpd.xml": (2, (1, 24), b"1.3.6.1.4.1.21367.2011.2.6.181"),
    "ipf/atna-audit/audit-message-iti55.xml": (2, (24, 26), None),
}


def test_every_audit_sample_is_covered(conformance_dir: Path) -> None:
    found = {
        str(p.relative_to(conformance_dir / "samples"))
        for p in (conformance_dir / "samples" / "ipf" / "atna-audit").glob("*")
    }
    assert found == set(AUDIT_SAMPLES)


@pytest.mark.parametrize("name", sorted(AUDIT_SAMPLES))
def test_audit_sample_round_trips_valid(conformance_dir: Path, name: str) -> None:
    root = parse_xml((conformance_dir / "samples" / name).read_bytes())
    assert_valid("audit", root)  # the sample itself, as the conformance README says
    message = parse_audit_message(root)
    participants, roles, hcid = AUDIT_SAMPLES[name]
    event = message.event_identification
    assert event.event_id.code == "110112"
    assert [c.code for c in event.event_type_codes] == ["ITI-55"]
    assert event.event_outcome_indicator is EventOutcomeIndicator.SUCCESS
    assert event.event_date_time.value.tzinfo is not None
    assert len(message.active_participants) == participants
    assert [p.user_is_requestor for p in message.active_participants] == [True, False]
    assert tuple(o.type_code_role for o in message.participant_objects) == roles
    (query,) = [o.query for o in message.participant_objects if o.query is not None]
    assert query.startswith(b"<queryByParameter>")
    details = [d.value for o in message.participant_objects for d in o.details]
    assert details == ([hcid] if hcid else [])
    element = render_audit_message(message)
    assert_valid("audit", element)
    assert parse_audit_message(parse_xml(etree.tostring(element))) == message
