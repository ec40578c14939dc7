"""Cross-Enterprise User Assertion [ITI-40]: SAML 2.0 assertion and wsse:Security codecs."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from imagebridge.errors import (
    InvalidSecurity,
    InvalidSecurityToken,
    InvalidTimestamp,
    InvalidValue,
    QName,
    UnsupportedSecurityToken,
    XuaAttributeInvalid,
    XuaAttributeMissing,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.instant import Instant
from imagebridge.model.saml import (
    AC_X509,
    BEARER,
    HOLDER_OF_KEY,
    HOME_COMMUNITY_ID,
    NAME_FORMAT_URI,
    NAMEID_X509_SUBJECT,
    NHIN_HOME_COMMUNITY_ID,
    NPI,
    ORGANIZATION,
    ORGANIZATION_ID,
    PURPOSE_OF_USE,
    RESOURCE_ID,
    ROLE,
    SUBJECT_ID,
    XS_ANY_URI,
    XS_NS,
    XS_STRING,
    Assertion,
    Attribute,
    AttributeStatement,
    AttributeValue,
    AuthnStatement,
    CodedValue,
    Conditions,
    NameId,
    Subject,
    SubjectConfirmation,
    ValueKind,
)
from imagebridge.model.wsse import SecurityHeader, Timestamp
from imagebridge.wire import ns
from imagebridge.wire.saml import parse_assertion, render_assertion
from imagebridge.wire.soap import fault_for, parse_envelope, render_envelope
from imagebridge.wire.wsa import AddressingHeaders
from imagebridge.wire.wsse import parse_security, render_security
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import assert_valid, assert_xua_valid

T0 = Instant.parse("2024-05-01T10:00:00Z")
T5 = Instant.parse("2024-05-01T10:05:00Z")
CERT = base64.b64encode(b"0\x82\x01\x0a not a real certificate").decode()
TREATMENT = CodedValue("TREATMENT", "2.16.840.1.113883.3.18.7.1", "nhin-purpose", "Treatment")
DOCTOR = CodedValue("112247003", "2.16.840.1.113883.6.96", "SNOMED_CT", "Medical doctor")


def _attrs() -> tuple[Attribute, ...]:
    def text(name: str, value: str, value_type: QName = XS_STRING) -> Attribute:
        return Attribute(name, (AttributeValue.string(value, value_type),), NAME_FORMAT_URI)

    return (
        text(SUBJECT_ID, "Jane Doe"),
        text(ORGANIZATION, "Example Hospital"),
        text(ORGANIZATION_ID, "urn:oid:1.2.3.4", XS_ANY_URI),
        text(HOME_COMMUNITY_ID, "urn:oid:1.2.3", XS_ANY_URI),
        Attribute(ROLE, (AttributeValue.hl7_code("Role", DOCTOR),), NAME_FORMAT_URI),
        Attribute(
            PURPOSE_OF_USE, (AttributeValue.hl7_code("PurposeOfUse", TREATMENT),), NAME_FORMAT_URI
        ),
        text(NPI, "1234567893"),
        text(RESOURCE_ID, "P1^^^&1.2.840.1&ISO"),
    )


def carequality_assertion(method: str = HOLDER_OF_KEY) -> Assertion:
    confirmation = SubjectConfirmation(
        method, certificate=CERT if method == HOLDER_OF_KEY else None
    )
    return Assertion(
        id="_a1b2c3",
        issue_instant=T0,
        issuer=NameId("CN=sts.example.org", NAMEID_X509_SUBJECT),
        subject=Subject(
            NameId("UID=jdoe", NAMEID_X509_SUBJECT, sp_provided_id="jd"), (confirmation,)
        ),
        conditions=Conditions(T0, T5, (("https://rg.example.org",),)),
        authn_statements=(AuthnStatement(T0, AC_X509),),
        attribute_statements=(AttributeStatement(_attrs()),),
    )


def xml_assertion(attributes: str = "", *, id_: str = "_x", version: str = "2.0") -> bytes:
    statement = f"<s:AttributeStatement>{attributes}</s:AttributeStatement>" if attributes else ""
    return (
        f"<s:Assertion xmlns:s='{ns.SAML2}' xmlns:xsi='{ns.XSI}' xmlns:xs='{XS_NS}' "
        f"ID='{id_}' IssueInstant='2024-05-01T10:00:00Z' Version='{version}'>"
        "<s:Issuer>issuer</s:Issuer><s:Subject><s:NameID>user</s:NameID></s:Subject>"
        f"{statement}</s:Assertion>"
    ).encode()


def parse(data: bytes) -> Assertion:
    return parse_assertion(parse_xml(data))


def attr(name: str, *values: str) -> str:
    return f"<s:Attribute Name='{name}'>{''.join(values)}</s:Attribute>"


# --- render: our own assertion -------------------------------------------------------------


@pytest.mark.parametrize("method", [HOLDER_OF_KEY, BEARER])
def test_rendered_assertion_is_schema_valid_and_round_trips(method: str) -> None:
    assertion = carequality_assertion(method)
    element = render_assertion(assertion)
    assert_valid("saml2", _without_hl7_types(element))
    assert_xua_valid(element)
    again = parse_assertion(parse_xml(etree.tostring(element)))
    assert again == assertion
    assert again.purpose_of_use() == TREATMENT
    assert again.role() == DOCTOR


def _without_hl7_types(element: etree._Element) -> etree._Element:
    # The bare SAML schema cannot resolve hl7:CE; everything else must pass it.
    copy = etree.fromstring(etree.tostring(element))
    for el in copy.iter(f"{{{ns.HL7}}}*"):
        del el.attrib[ns.q(ns.XSI, "type")]
    return copy


def test_rendered_holder_of_key_carries_the_certificate() -> None:
    element = render_assertion(carequality_assertion())
    data = f".//{{{ns.SAML2}}}SubjectConfirmationData"
    path = f"{data}/{{{ns.DS}}}KeyInfo/{{{ns.DS}}}X509Data/{{{ns.DS}}}X509Certificate"
    assert element.findtext(path) == CERT
    code = element.find(f".//{{{ns.HL7}}}PurposeOfUse")
    assert code is not None
    assert code.get(ns.q(ns.XSI, "type")) == "hl7:CE"
    assert code.get("code") == "TREATMENT"


def test_render_refuses_an_id_that_is_not_an_ncname() -> None:
    assertion = dataclasses.replace(carequality_assertion(), id="0a7e2d9f-7990")
    with pytest.raises(InvalidValue, match="NCName"):
        render_assertion(assertion)


def test_render_never_signs() -> None:
    parsed = parse(xml_assertion())
    assert not parsed.signed
    element = render_assertion(carequality_assertion())
    assert element.find(ns.q(ns.DS, "Signature")) is None


# --- parse: attribute forms seen in the samples --------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "<s:AttributeValue xsi:type='xs:string'>Jane Doe</s:AttributeValue>",
        "<s:AttributeValue xmlns:xsd='http://www.w3.org/2001/XMLSchema' "
        "xsi:type='xsd:string'>Jane Doe\n   </s:AttributeValue>",
        "<s:AttributeValue ns6:type='ns7:string' xmlns:ns6='http://www.w3.org/2001/XMLSchema-"
        "instance' xmlns:ns7='http://www.w3.org/2001/XMLSchema'>\n Jane Doe\n</s:AttributeValue>",
        "<s:AttributeValue>Jane Doe</s:AttributeValue>",
    ],
)
def test_simple_values_in_every_spelling(value: str) -> None:
    assertion = parse(xml_assertion(attr(SUBJECT_ID, value)))
    assert assertion.subject_id() == "Jane Doe"
    (parsed,) = assertion.values(SUBJECT_ID)
    assert parsed.kind is ValueKind.TEXT
    assert parsed.value_type in (XS_STRING, None)


def test_names_wrapped_over_lines_collapse_in_subject_id_but_stay_raw() -> None:
    value = "<s:AttributeValue>Rosa\n                Sestak\n  </s:AttributeValue>"
    assertion = parse(xml_assertion(attr(SUBJECT_ID, value)))
    assert assertion.subject_id() == "Rosa Sestak"
    assert assertion.text_values(SUBJECT_ID) == ("Rosa\n                Sestak",)


HL7_FORMS = [
    # prefixed, xsi:type on the HL7 element (CONNECT, Carequality table)
    "<s:AttributeValue><hl7:{e} xmlns:hl7='urn:hl7-org:v3' xsi:type='hl7:CE' code='{c}' "
    "codeSystem='2.16.840.1.113883.3.18.7.1' codeSystemName='nhin-purpose' "
    "displayName='Treatment'/></s:AttributeValue>",
    # default namespace, xsi:type resolved through it (IHE XUA, Swiss EPR)
    "<s:AttributeValue><{e} xmlns='urn:hl7-org:v3' xsi:type='CE' code='{c}' "
    "codeSystem='2.16.840.1.113883.3.18.7.1' codeSystemName='nhin-purpose' "
    "displayName='Treatment'/></s:AttributeValue>",
    # Metriport: xsi:type on the AttributeValue itself, wrapping the child
    "<s:AttributeValue xmlns:hl7='urn:hl7-org:v3' xsi:type='hl7:CE'><hl7:{e} code='{c}' "
    "codeSystem='2.16.840.1.113883.3.18.7.1' codeSystemName='nhin-purpose' "
    "displayName='Treatment'/></s:AttributeValue>",
]


@pytest.mark.parametrize("form", HL7_FORMS)
@pytest.mark.parametrize("element", ["PurposeOfUse", "PurposeForUse"])
def test_purpose_of_use_in_every_form(form: str, element: str) -> None:
    value = form.format(e=element, c="TREATMENT")
    assertion = parse(xml_assertion(attr(PURPOSE_OF_USE, value)))
    assert assertion.purpose_of_use() == TREATMENT
    (parsed,) = assertion.values(PURPOSE_OF_USE)
    assert parsed.element == QName(ns.HL7, element)
    assert parsed.value_type is None  # the wrapper type describes the child; not kept


@pytest.mark.parametrize("form", HL7_FORMS)
def test_role_in_every_form(form: str) -> None:
    value = form.format(e="Role", c="112247003")
    assert parse(xml_assertion(attr(ROLE, value))).role().code == "112247003"


def test_purpose_for_use_is_rendered_back_under_its_own_name() -> None:
    value = HL7_FORMS[0].format(e="PurposeForUse", c="OPERATIONS")
    assertion = parse(xml_assertion(attr(PURPOSE_OF_USE, value)))
    element = render_assertion(assertion)
    assert_xua_valid(element)
    assert element.find(f".//{{{ns.HL7}}}PurposeForUse") is not None


def test_multi_valued_attributes_across_statements() -> None:
    orgs = attr(
        ORGANIZATION,
        "<s:AttributeValue>Org 1</s:AttributeValue><s:AttributeValue>Org 2</s:AttributeValue>",
    )
    data = xml_assertion(orgs).replace(
        b"</s:AttributeStatement>",
        b"</s:AttributeStatement><s:AttributeStatement>"
        + attr(ORGANIZATION, "<s:AttributeValue>Org 3</s:AttributeValue>").encode()
        + b"</s:AttributeStatement>",
    )
    assertion = parse(data)
    assert assertion.text_values(ORGANIZATION) == ("Org 1", "Org 2", "Org 3")
    with pytest.raises(XuaAttributeInvalid, match="3 values") as info:
        assertion.organization()
    assert info.value.attribute_name == ORGANIZATION
    assert len(assertion.attribute_statements) == 2


def test_home_community_id_under_either_name() -> None:
    ihe = attr(HOME_COMMUNITY_ID, "<s:AttributeValue>urn:oid:1.2.3</s:AttributeValue>")
    nhin = attr(NHIN_HOME_COMMUNITY_ID, "<s:AttributeValue>1.2.3\n</s:AttributeValue>")
    other = attr(NHIN_HOME_COMMUNITY_ID, "<s:AttributeValue>urn:oid:9.9</s:AttributeValue>")
    assert parse(xml_assertion(ihe)).home_community_id() == HomeCommunityId("1.2.3")
    assert parse(xml_assertion(nhin)).home_community_id() == HomeCommunityId("1.2.3")
    assert parse(xml_assertion(ihe + ihe)).home_community_id() == HomeCommunityId("1.2.3")
    with pytest.raises(XuaAttributeInvalid, match="2 values"):
        parse(xml_assertion(ihe + other)).home_community_id()


def test_stray_brace_in_home_community_id_is_kept_raw_and_refused_typed() -> None:
    value = "<s:AttributeValue>urn:oid:2.16.840.1.113883.3.9621}</s:AttributeValue>"
    assertion = parse(xml_assertion(attr(NHIN_HOME_COMMUNITY_ID, value)))
    assert assertion.text_values(NHIN_HOME_COMMUNITY_ID) == ("urn:oid:2.16.840.1.113883.3.9621}",)
    with pytest.raises(XuaAttributeInvalid, match="not urn:oid") as info:
        assertion.home_community_id()
    assert info.value.fault_subcode == QName(ns.WSSE, "InvalidSecurityToken")


def test_optional_attributes() -> None:
    npi2 = attr(
        "urn:oasis:names:tc:xspa:2.0:subject:npi", "<s:AttributeValue>123</s:AttributeValue>"
    )
    pid = attr(RESOURCE_ID, "<s:AttributeValue>\n P1^^^&amp;1.2.840.1&amp;ISO\n</s:AttributeValue>")
    assertion = parse(xml_assertion(npi2 + pid))
    assert assertion.npi() == "123"
    assert assertion.resource_id() == PatientId("P1", "1.2.840.1")
    bare = parse(xml_assertion())
    assert bare.npi() is None
    assert bare.resource_id() is None


def test_bad_resource_id_does_not_echo_the_patient_id() -> None:
    value = "<s:AttributeValue>SECRET-PATIENT-42</s:AttributeValue>"
    with pytest.raises(XuaAttributeInvalid, match="resource-id") as info:
        parse(xml_assertion(attr(RESOURCE_ID, value))).resource_id()
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "<s:AttributeValue/>",
        "<s:AttributeValue xsi:nil='true'/>",
        "<s:AttributeValue> </s:AttributeValue>",
    ],
)
def test_empty_values_count_as_missing(value: str) -> None:
    assertion = parse(xml_assertion(attr(SUBJECT_ID, value) + attr(PURPOSE_OF_USE, value)))
    with pytest.raises(XuaAttributeMissing) as info:
        assertion.subject_id()
    assert info.value.fault_subcode == QName(ns.WSSE, "InvalidSecurity")
    with pytest.raises(XuaAttributeMissing):
        assertion.purpose_of_use()


def test_missing_required_attributes() -> None:
    assertion = parse(xml_assertion())
    for accessor in (
        assertion.subject_id,
        assertion.organization,
        assertion.organization_id,
        assertion.home_community_id,
        assertion.role,
        assertion.purpose_of_use,
    ):
        with pytest.raises(XuaAttributeMissing):
            accessor()


def test_purpose_of_use_must_be_exactly_one_hl7_code() -> None:
    one = HL7_FORMS[0].format(e="PurposeOfUse", c="TREATMENT")
    with pytest.raises(XuaAttributeInvalid, match="2 values"):
        parse(xml_assertion(attr(PURPOSE_OF_USE, one, one))).purpose_of_use()
    role = HL7_FORMS[0].format(e="Role", c="1")
    with pytest.raises(XuaAttributeInvalid, match="Role"):
        parse(xml_assertion(attr(PURPOSE_OF_USE, role))).purpose_of_use()
    garbage = (
        "<s:AttributeValue><PurposeOfUse xmlns='urn:hl7-org:v0000' code='1'/></s:AttributeValue>"
    )
    parsed = parse(xml_assertion(attr(PURPOSE_OF_USE, garbage)))
    assert parsed.values(PURPOSE_OF_USE)[0].kind is ValueKind.XML
    with pytest.raises(XuaAttributeInvalid, match="v0000"):
        parsed.purpose_of_use()
    text = "<s:AttributeValue>TREATMENT</s:AttributeValue>"
    with pytest.raises(XuaAttributeInvalid, match="text"):
        parse(xml_assertion(attr(PURPOSE_OF_USE, text))).purpose_of_use()


def test_other_xml_values_are_kept_and_rendered_back() -> None:
    ii = (
        "<s:AttributeValue><hl7:id xmlns:hl7='urn:hl7-org:v3' root='1.2.3' extension='X'/>"
        "</s:AttributeValue>"
    )
    name = "urn:ihe:iti:xua:2017:subject:provider-identifier"
    assertion = parse(xml_assertion(attr(name, ii)))
    (value,) = assertion.values(name)
    assert value.kind is ValueKind.XML
    assert value.element == QName(ns.HL7, "id")
    with pytest.raises(XuaAttributeInvalid, match="XML element"):
        assertion.text_values(name)
    element = render_assertion(assertion)
    assert_xua_valid(element)
    copied = element.find(f".//{{{ns.HL7}}}id")
    assert copied is not None
    assert copied.get("extension") == "X"


def test_missing_name_format_and_friendly_name_round_trip() -> None:
    value = "<s:AttributeValue>v</s:AttributeValue>"
    data = xml_assertion(f"<s:Attribute Name='n' FriendlyName='f'>{value}</s:Attribute>")
    (attribute,) = parse(data).attributes("n")
    assert attribute.name_format is None
    assert attribute.friendly_name == "f"
    assert parse_assertion(render_assertion(parse(data))) == parse(data)


# --- parse: the assertion structure --------------------------------------------------------


def test_lenient_on_ids_and_keeps_the_source_element() -> None:
    root = parse_xml(xml_assertion(id_="0a7e2d9f-7990-4bee"))
    assertion = parse_assertion(root)
    assert assertion.id == "0a7e2d9f-7990-4bee"
    assert assertion.source is root
    assert assertion.audit_user_id() == "<user@issuer>"


def test_holder_of_key_key_info_and_certificate() -> None:
    data = (
        f"<s:Assertion xmlns:s='{ns.SAML2}' xmlns:ds='{ns.DS}' ID='_1' "
        "IssueInstant='2024-05-01T10:00:00Z' Version='2.0'><s:Issuer Format='f'> iss \n</s:Issuer>"
        "<s:Subject><s:NameID SPProvidedID='alias'>jdoe</s:NameID>"
        f"<s:SubjectConfirmation Method='{HOLDER_OF_KEY}'><s:SubjectConfirmationData>"
        "<ds:KeyInfo><ds:KeyValue><ds:RSAKeyValue><ds:Modulus>AQAB</ds:Modulus>"
        "<ds:Exponent>AQAB</ds:Exponent></ds:RSAKeyValue></ds:KeyValue>"
        "<ds:X509Data><ds:X509Certificate>QUJD\n  REVG</ds:X509Certificate></ds:X509Data>"
        "</ds:KeyInfo></s:SubjectConfirmationData></s:SubjectConfirmation></s:Subject>"
        "</s:Assertion>"
    ).encode()
    assertion = parse(data)
    assert assertion.subject is not None
    (confirmation,) = assertion.subject.confirmations
    assert confirmation.is_holder_of_key
    assert confirmation.certificate == "QUJDREVG"
    assert confirmation.key_info is not None
    assert assertion.audit_user_id() == "alias<jdoe@iss>"
    element = render_assertion(assertion)
    assert_xua_valid(element)
    assert element.find(f".//{{{ns.DS}}}RSAKeyValue") is not None  # KeyInfo copied whole


def test_conditions_keep_each_audience_restriction() -> None:
    data = xml_assertion().replace(
        b"</s:Subject>",
        b"</s:Subject><s:Conditions NotBefore='2024-05-01T10:00:00Z' "
        b"NotOnOrAfter='2024-05-01T10:05:00+02:00'><s:AudienceRestriction><s:Audience>a</s:Audience>"
        b"<s:Audience> b\n</s:Audience></s:AudienceRestriction><s:AudienceRestriction>"
        b"<s:Audience>c</s:Audience></s:AudienceRestriction><s:OneTimeUse/></s:Conditions>",
    )
    conditions = parse(data).conditions
    assert conditions is not None
    assert conditions.audience_restrictions == (("a", "b"), ("c",))
    assert conditions.audiences == ("a", "b", "c")
    assert conditions.one_time_use
    assert conditions.not_on_or_after is not None
    assert conditions.not_on_or_after.value == datetime(2024, 5, 1, 8, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (xml_assertion(version="1.1"), UnsupportedSecurityToken, "Version"),
        (
            xml_assertion().replace(b"<s:Issuer>issuer</s:Issuer>", b""),
            InvalidSecurityToken,
            "Issuer",
        ),
        (
            xml_assertion().replace(b"2024-05-01T10", b"2024-13-01T10"),
            InvalidSecurityToken,
            "IssueInstant",
        ),
        (xml_assertion().replace(b"ID='_x'", b""), InvalidSecurityToken, "ID"),
        (xml_assertion().replace(b"s:Assertion", b"s:Response"), InvalidSecurityToken, "Assertion"),
        (
            xml_assertion(
                attr(SUBJECT_ID, "<s:AttributeValue xsi:type='nope:string'>x</s:AttributeValue>")
            ),
            InvalidSecurityToken,
            "xsi:type",
        ),
        (
            xml_assertion().replace(
                b"</s:Subject>",
                b"</s:Subject><s:AuthnStatement AuthnInstant='2024-05-01T10:00:00Z'>"
                b"<s:AuthnContext/></s:AuthnStatement>",
            ),
            InvalidSecurityToken,
            "AuthnContextClassRef",
        ),
        (
            xml_assertion().replace(
                b"</s:Subject>",
                b"</s:Subject><s:AttributeStatement><s:EncryptedAttribute/></s:AttributeStatement>",
            ),
            UnsupportedSecurityToken,
            "encrypted",
        ),
    ],
)
def test_malformed_assertions_are_refused_precisely(
    data: bytes, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        parse(data)


def test_token_errors_become_wsse_faults() -> None:
    with pytest.raises(InvalidSecurityToken) as info:
        parse(xml_assertion().replace(b"<s:Issuer>issuer</s:Issuer>", b""))
    fault = fault_for(info.value)
    assert fault.subcodes == (QName(ns.WSSE, "InvalidSecurityToken"),)
    assert fault.code.value == "Sender"
    unsupported = fault_for(UnsupportedSecurityToken("x"))
    assert unsupported.subcodes == (QName(ns.WSSE, "UnsupportedSecurityToken"),)


# --- wsse:Security --------------------------------------------------------------------------


def _header_xml(*children: str) -> bytes:
    return (
        f"<wsse:Security xmlns:wsse='{ns.WSSE}' xmlns:wsu='{ns.WSU}' xmlns:ds='{ns.DS}' "
        f"xmlns:wsse11='{ns.WSSE11}'>{''.join(children)}</wsse:Security>"
    ).encode()


TS = (
    "<wsu:Timestamp wsu:Id='TS-1'><wsu:Created>2024-05-01T10:00:00Z</wsu:Created>"
    "<wsu:Expires>2024-05-01T10:05:00Z</wsu:Expires></wsu:Timestamp>"
)
SIG = "<ds:Signature><ds:SignedInfo/></ds:Signature>"


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0), (2, 0, 1)])
def test_security_header_children_in_any_order(order: tuple[int, int, int]) -> None:
    parts = [TS, xml_assertion().decode(), SIG]
    header = parse_security(parse_xml(_header_xml(*(parts[i] for i in order))))
    assert header.timestamp == Timestamp(T0, T5, "TS-1")
    assert header.assertion is not None
    assert header.assertion.issuer.value == "issuer"
    assert len(header.signatures) == 1
    assert header.signatures[0].tag == ns.q(ns.DS, "Signature")
    assert header.source is not None


def test_security_header_keeps_other_children() -> None:
    confirmation = "<wsse11:SignatureConfirmation Value='abc'/>"
    header = parse_security(parse_xml(_header_xml(TS, confirmation)))
    assert header.assertion is None
    assert [e.tag for e in header.other] == [ns.q(ns.WSSE11, "SignatureConfirmation")]
    element = render_security(header)
    assert_valid("wsse", element)
    assert element.find(ns.q(ns.WSSE11, "SignatureConfirmation")) is not None


@pytest.mark.parametrize(
    ("children", "error", "reason"),
    [
        ((TS, TS), InvalidSecurity, "Timestamp"),
        ((xml_assertion().decode(), xml_assertion().decode()), InvalidSecurity, "assertion"),
        ((TS.replace("2024-05-01T10:00:00Z", "yesterday"),), InvalidSecurity, "Created"),
        (
            ("<saml:Assertion xmlns:saml='urn:oasis:names:tc:SAML:1.0:assertion'/>",),
            UnsupportedSecurityToken,
            "SAML 1",
        ),
        (
            (f"<s:EncryptedAssertion xmlns:s='{ns.SAML2}'/>",),
            UnsupportedSecurityToken,
            "encrypted",
        ),
        ((xml_assertion(version="3.0").decode(),), UnsupportedSecurityToken, "Version"),
    ],
)
def test_malformed_security_headers(
    children: tuple[str, ...], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        parse_security(parse_xml(_header_xml(*children)))


def test_not_a_security_header() -> None:
    with pytest.raises(InvalidSecurity, match="Security"):
        parse_security(parse_xml(f"<x:Security xmlns:x='{ns.WSSE11}'/>".encode()))
    assert fault_for(InvalidSecurity("x")).subcodes == (QName(ns.WSSE, "InvalidSecurity"),)


def test_rendered_security_header_validates_and_round_trips() -> None:
    header = SecurityHeader(Timestamp(T0, T5, "TS-1"), carequality_assertion())
    element = render_security(header)
    assert_valid("wsse", _without_hl7_types(element))
    assert_xua_valid(element)
    assert element.get(ns.q(ns.SOAP12, "mustUnderstand")) == "true"
    assert parse_security(parse_xml(etree.tostring(element))) == header
    assert (
        render_security(header, must_understand=False).get(ns.q(ns.SOAP12, "mustUnderstand"))
        is None
    )


def test_security_header_travels_in_a_soap_envelope() -> None:
    header = SecurityHeader(Timestamp(T0, T5), carequality_assertion())
    addressing = AddressingHeaders(
        action="urn:ihe:iti:2007:CrossGatewayQuery",
        message_id="urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11",
        to="https://rg.example.org",
    )
    payload = etree.Element(ns.q(ns.QUERY, "AdhocQueryRequest"))
    envelope = render_envelope(addressing, payload, [render_security(header)])
    message = parse_envelope(parse_xml(etree.tostring(envelope)))
    (block,) = [b for b in message.header_blocks if b.tag == ns.q(ns.WSSE, "Security")]
    assert parse_security(block) == header


# --- instants ------------------------------------------------------------------------------


def test_instants() -> None:
    assert Instant.parse(" 2024-05-01T10:00:00Z\n").text == "2024-05-01T10:00:00Z"
    assert Instant.parse("2024-05-01T10:00:00").value.tzinfo is UTC  # naive means UTC
    offset = Instant.parse("2024-05-01T12:00:00.1234567+02:00")
    assert offset.value == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert offset.value.utcoffset() == timedelta(hours=2)
    for bad in ("2024-05-01", "2024-02-30T10:00:00Z", "2024-05-01T24:00:00Z", "now", ""):
        with pytest.raises(InvalidTimestamp):
            Instant.parse(bad)
    assert Instant.at(
        datetime(2024, 5, 1, 12, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))
    ).text == ("2024-05-01T10:00:00Z")
    assert Instant.at(datetime(2024, 5, 1, 10, 0, 0, 123999, tzinfo=UTC)).text == (
        "2024-05-01T10:00:00.123Z"
    )
    with pytest.raises(InvalidTimestamp):
        Instant.at(datetime(2024, 5, 1))  # naive on purpose


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(1000, 1, 1)))
def test_instant_text_parses_back(value: datetime) -> None:
    written = Instant.at(value)
    assert Instant.parse(written.text) == written
