"""Patient Location Query [ITI-56] codec: round trips, lenient input, refused input."""

from __future__ import annotations

import pytest

from imagebridge.errors import (
    InvalidOid,
    InvalidValue,
    MissingElement,
    PayloadError,
    TooManyElements,
    UnexpectedElement,
    WrongNamespace,
    XmlDtdForbidden,
    XmlEntityForbidden,
    XmlError,
    XmlTooDeep,
    XmlTooLarge,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.patient_location import (
    MAX_NOTES,
    PatientLocationQueryRequest,
    PatientLocationQueryResponse,
    PatientLocationResponse,
    says_not_health_data_locator,
)
from imagebridge.model.xcpd import II
from imagebridge.transactions import Transaction, spec_of
from imagebridge.wire import ns
from imagebridge.wire.xcpd_location import (
    parse_patient_location_query_request,
    parse_patient_location_query_response,
    render_patient_location_query_request,
    render_patient_location_query_response,
)
from imagebridge.wire.xml import XmlLimits, parse_xml, serialize

X = ns.XCPD
ASKED = II("1.2.840.114350.1.13.99998.8734", "34827K410")
HERE = PatientLocationResponse(
    HomeCommunityId("1.2.3.4"), II("1.2.3.4.5", "987"), requested_patient_id=ASKED
)
THERE = PatientLocationResponse(HomeCommunityId("2.16.840.1.113883.3.9"), II("2.16.1", "A-1"))


def _response(body: str) -> PatientLocationQueryResponse:
    xml = f'<x:PatientLocationQueryResponse xmlns:x="{X}">{body}</x:PatientLocationQueryResponse>'
    return parse_patient_location_query_response(parse_xml(xml.encode()))


def _location(hcid: str = "urn:oid:1.2.3.4", ext: str = "987") -> str:
    return (
        f"<x:PatientLocationResponse><x:HomeCommunityId>{hcid}</x:HomeCommunityId>"
        f'<x:CorrespondingPatientId root="1.2.3.4.5" extension="{ext}"/>'
        f'<x:RequestedPatientId root="{ASKED.root}" extension="{ASKED.extension}"/>'
        "</x:PatientLocationResponse>"
    )


# --- round trips --------------------------------------------------------------------------


def test_request_round_trip_through_bytes() -> None:
    request = PatientLocationQueryRequest.for_patient(PatientId("34827K410", ASKED.root))
    element = render_patient_location_query_request(request)
    assert element.tag == ns.q(X, "PatientLocationQueryRequest")
    assert element.nsmap.get("xcpd") == X and len(element.nsmap) == 1
    assert spec_of(Transaction.ITI_56).request_element == (ns.XCPD, "PatientLocationQueryRequest")
    (child,) = list(element)
    assert child.tag == ns.q(X, "RequestedPatientId")
    assert (child.get("root"), child.get("extension")) == (ASKED.root, "34827K410")
    assert len(child.attrib) == 2
    parsed = parse_patient_location_query_request(parse_xml(serialize(element)))
    assert parsed == request
    assert parsed.patient_id == PatientId("34827K410", ASKED.root)


def test_response_round_trip_keeps_order_and_writes_urn_oid() -> None:
    response = PatientLocationQueryResponse((HERE, THERE))
    element = render_patient_location_query_response(response)
    assert element.tag == ns.q(*spec_of(Transaction.ITI_56).response_element)
    first = element[0]
    assert [c.tag for c in first] == [
        ns.q(X, "HomeCommunityId"),
        ns.q(X, "CorrespondingPatientId"),
        ns.q(X, "RequestedPatientId"),
    ]
    assert first[0].text == "urn:oid:1.2.3.4"
    assert len(element[1]) == 2  # no RequestedPatientId when the model has none
    parsed = parse_patient_location_query_response(parse_xml(serialize(element)))
    assert parsed == response
    assert parsed.locations[0].patient_id == PatientId("987", "1.2.3.4.5")
    assert parsed.locations[0].answers(PatientLocationQueryRequest(ASKED))


def test_empty_response_round_trips_as_no_locations() -> None:
    element = render_patient_location_query_response(PatientLocationQueryResponse())
    parsed = parse_patient_location_query_response(parse_xml(serialize(element)))
    assert parsed == PatientLocationQueryResponse()
    assert not parsed.says_not_health_data_locator


# --- lenient input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hcid", ["1.2.3.4", "urn:oid:1.2.3.4", " URN:OID:urn:oid:1.2.3.4 ", "\n 1.2.3.4\t"]
)
def test_home_community_id_bare_or_urn(hcid: str) -> None:
    (location,) = _response(_location(hcid)).locations
    assert location.home_community_id == HomeCommunityId("1.2.3.4")


def test_unqualified_children_and_urn_oid_roots_are_read() -> None:
    parsed = _response(
        "<x:PatientLocationResponse><HomeCommunityId>1.2.3.4</HomeCommunityId>"
        '<CorrespondingPatientId root="urn:oid:1.2.3.4.5" extension=" 987 "/>'
        "</x:PatientLocationResponse>"
    )
    assert parsed.locations == (
        PatientLocationResponse(HomeCommunityId("1.2.3.4"), II("1.2.3.4.5", "987")),
    )
    assert parsed.locations[0].requested_patient_id is None


def test_bad_entry_is_kept_as_rejected_and_others_survive() -> None:
    parsed = _response(
        _location() + "<x:PatientLocationResponse><x:HomeCommunityId>1.2.9</x:HomeCommunityId>"
        '<x:CorrespondingPatientId root="1.2.9.1"/></x:PatientLocationResponse>'
        + _location(hcid="not an oid")
        + "<x:PatientLocationResponse><x:CorrespondingPatientId root='1.2' extension='1'/>"
        "</x:PatientLocationResponse>"
    )
    assert [loc.home_community_id.oid for loc in parsed.locations] == ["1.2.3.4"]
    assert [r.index for r in parsed.rejected] == [1, 2, 3]
    assert "no extension" in parsed.rejected[0].reason
    assert "not an OID" in parsed.rejected[1].reason
    assert "HomeCommunityId is missing" in parsed.rejected[2].reason


def test_unknown_elements_are_kept_as_notes_and_read_for_not_hdl() -> None:
    parsed = _response(
        '<hl7:detectedIssueEvent xmlns:hl7="urn:hl7-org:v3"><hl7:code code="NotHealthDataLocator"'
        ' codeSystem="1.3.6.1.4.1.19376.1.2.27.2"/></hl7:detectedIssueEvent>'
        "<x:Note>  responder is not a\n health data locator  </x:Note>"
    )
    assert parsed.notes == (
        "detectedIssueEvent: NotHealthDataLocator",
        "Note: responder is not a health data locator",
    )
    assert parsed.says_not_health_data_locator


def test_notes_are_bounded() -> None:
    parsed = _response("<x:Extra>" + "y" * 1000 + "</x:Extra>" * 1 + "<x:More/>" * 40)
    assert len(parsed.notes) == MAX_NOTES
    assert parsed.notes[-1] == f"and {41 - MAX_NOTES + 1} more elements"
    assert len(parsed.notes[0]) == 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NotHealthDataLocator", True),
        ("Responding gateway is NOT a Health-Data Locator for this patient", True),
        ("InternalError: MPI offline", False),
        ("SupportsHealthDataLocator", False),
    ],
)
def test_not_hdl_phrases(text: str, expected: bool) -> None:
    assert says_not_health_data_locator(text) is expected


# --- refused input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "error"),
    [
        (f'<x:PatientLocationQueryResponse xmlns:x="{X}"/>', UnexpectedElement),
        ('<x:PatientLocationQueryRequest xmlns:x="urn:other"/>', WrongNamespace),
        (f'<x:PatientLocationQueryRequest xmlns:x="{X}"/>', MissingElement),
        (
            f'<x:PatientLocationQueryRequest xmlns:x="{X}" xmlns:h="urn:hl7-org:v3">'
            '<h:RequestedPatientId root="1.2" extension="a"/></x:PatientLocationQueryRequest>',
            WrongNamespace,
        ),
        (
            f'<x:PatientLocationQueryRequest xmlns:x="{X}"><x:RequestedPatientId root="1.2" '
            'extension="a"/><x:RequestedPatientId root="1.2" extension="b"/>'
            "</x:PatientLocationQueryRequest>",
            UnexpectedElement,
        ),
        (
            f'<x:PatientLocationQueryRequest xmlns:x="{X}"><x:RequestedPatientId root="1.2"/>'
            "</x:PatientLocationQueryRequest>",
            InvalidValue,
        ),
        (
            f'<x:PatientLocationQueryRequest xmlns:x="{X}"><x:RequestedPatientId extension="a"/>'
            "</x:PatientLocationQueryRequest>",
            MissingElement,
        ),
        (
            f'<x:PatientLocationQueryRequest xmlns:x="{X}"><x:RequestedPatientId root="1..2" '
            'extension="a"/></x:PatientLocationQueryRequest>',
            InvalidOid,
        ),
    ],
)
def test_bad_requests_raise_payload_errors(xml: str, error: type[PayloadError]) -> None:
    with pytest.raises(error) as info:
        parse_patient_location_query_request(parse_xml(xml.encode()))
    assert isinstance(info.value, PayloadError)
    assert info.value.fault_code.value == "Sender"


def test_wrong_response_root_and_child_namespace() -> None:
    with pytest.raises(WrongNamespace):
        parse_patient_location_query_response(
            parse_xml(b'<PatientLocationQueryResponse xmlns="urn:other"/>')
        )
    with pytest.raises(UnexpectedElement):
        parse_patient_location_query_response(parse_xml(f'<a xmlns="{X}"/>'.encode()))
    with pytest.raises(WrongNamespace):
        _response('<o:PatientLocationResponse xmlns:o="urn:other"/>')


def test_too_many_locations_refused_before_reading() -> None:
    body = "".join(_location(ext=str(i)) for i in range(5))
    xml = f'<x:PatientLocationQueryResponse xmlns:x="{X}">{body}</x:PatientLocationQueryResponse>'
    with pytest.raises(TooManyElements) as info:
        parse_patient_location_query_response(parse_xml(xml.encode()), max_locations=4)
    assert (info.value.element, info.value.limit) == ("PatientLocationResponse", 4)


HOSTILE = [
    (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<x:PatientLocationQueryResponse xmlns:x="urn:ihe:iti:xcpd:2009">&x;'
        b"</x:PatientLocationQueryResponse>",
        XmlDtdForbidden,
    ),
    (
        b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<x:PatientLocationQueryRequest xmlns:x="urn:ihe:iti:xcpd:2009">&b;'
        b"</x:PatientLocationQueryRequest>",
        XmlDtdForbidden,
    ),
    (
        b'<x:PatientLocationQueryResponse xmlns:x="urn:ihe:iti:xcpd:2009">&ext;'
        b"</x:PatientLocationQueryResponse>",
        XmlEntityForbidden,
    ),
    (
        b'<x:PatientLocationQueryResponse xmlns:x="urn:ihe:iti:xcpd:2009">'
        + b"<x:Note>" * 200
        + b"</x:Note>" * 200
        + b"</x:PatientLocationQueryResponse>",
        XmlTooDeep,
    ),
]


@pytest.mark.parametrize(("data", "error"), HOSTILE)
def test_hostile_xml_is_refused_by_the_hardened_parser(data: bytes, error: type[XmlError]) -> None:
    with pytest.raises(error):
        parse_patient_location_query_response(parse_xml(data))


def test_oversized_response_is_refused() -> None:
    body = _location() * 200
    xml = f'<x:PatientLocationQueryResponse xmlns:x="{X}">{body}</x:PatientLocationQueryResponse>'
    with pytest.raises(XmlTooLarge):
        parse_xml(xml.encode(), XmlLimits(max_bytes=4096))


# --- constructors validate -----------------------------------------------------------------


def test_constructors_validate() -> None:
    with pytest.raises(InvalidValue, match="RequestedPatientId"):
        PatientLocationQueryRequest(II("1.2.3"))
    with pytest.raises(InvalidValue, match="CorrespondingPatientId"):
        PatientLocationResponse(HomeCommunityId("1.2"), II("1.2.3"))
    with pytest.raises(InvalidOid):
        PatientLocationResponse(HomeCommunityId("1.2"), II("not-an-oid", "1"))
    with pytest.raises(InvalidValue, match="at most"):
        PatientLocationQueryResponse(notes=("n",) * (MAX_NOTES + 1))
    with pytest.raises(InvalidValue, match="longer"):
        PatientLocationQueryResponse(notes=("n" * 201,))


def test_answers_refuses_another_patient() -> None:
    other = PatientLocationQueryRequest(II(ASKED.root, "someone-else"))
    assert not HERE.answers(other)
    assert THERE.answers(other)  # no RequestedPatientId: taken to answer what was asked
