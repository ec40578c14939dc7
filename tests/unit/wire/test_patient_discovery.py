"""Cross Gateway Patient Discovery [ITI-55]: PRPA_IN201305UV02 / PRPA_IN201306UV02 codec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from lxml import etree

from imagebridge import errors
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.xcpd import (
    ACKNOWLEDGEMENT_DETAIL_SYSTEM,
    II,
    ISSUE_MANAGEMENT_SYSTEM,
    REQUESTED_ATTRIBUTE_SYSTEM,
    Acknowledgement,
    AcknowledgementDetail,
    AcknowledgementType,
    CodedValue,
    DetectedIssueEvent,
    Device,
    HealthDataLocator,
    IssueManagement,
    MatchedPatient,
    OtherId,
    ParameterList,
    PatientDiscoveryQuery,
    PatientDiscoveryResponse,
    PersonName,
    PostalAddress,
    ProviderOrganization,
    QueryAck,
    QueryByParameter,
    QueryResponseCode,
    RequestedAttribute,
    Telecom,
    TimeInterval,
    response_for_query_error,
    validate_ts,
)
from imagebridge.wire.hl7v3 import (
    parse_patient_discovery_query,
    parse_patient_discovery_query_header,
    parse_patient_discovery_response,
    render_patient_discovery_query,
    render_patient_discovery_response,
)
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import assert_valid

HL7 = "urn:hl7-org:v3"

OUR_DEVICE = Device(II("1.2.3.928.955.1"), HomeCommunityId("1.2.3.928.955"))
THEIR_DEVICE = Device(
    II("1.2.3.999.1"), HomeCommunityId("1.2.3.999"), telecom="https://responder.example/xcpd"
)

MINIMAL_QUERY = PatientDiscoveryQuery(
    message_id=II("2.25.4711", "msg-0001"),
    creation_time="20240501100000",
    sender=Device(II("1.2.3.928.955.1"), HomeCommunityId("1.2.3.928.955")),
    receiver=Device(II("1.2.3.999.1"), HomeCommunityId("1.2.3.999")),
    query_by_parameter=QueryByParameter(
        query_id=II("2.25.4711", "q-0001"),
        parameters=ParameterList(
            living_subject_birth_time=TimeInterval("19630804"),
            living_subject_names=(PersonName(given=("Jane",), family=("Doe",)),),
        ),
    ),
)

GOLDEN_MINIMAL_QUERY = """\
<PRPA_IN201305UV02 xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ITSVersion="XML_1.0">
  <id root="2.25.4711" extension="msg-0001"/>
  <creationTime value="20240501100000"/>
  <interactionId root="2.16.840.1.113883.1.6" extension="PRPA_IN201305UV02"/>
  <processingCode code="P"/>
  <processingModeCode code="T"/>
  <acceptAckCode code="AL"/>
  <receiver typeCode="RCV">
    <device classCode="DEV" determinerCode="INSTANCE">
      <id root="1.2.3.999.1"/>
      <asAgent classCode="AGNT">
        <representedOrganization classCode="ORG" determinerCode="INSTANCE">
          <id root="1.2.3.999"/>
        </representedOrganization>
      </asAgent>
    </device>
  </receiver>
  <sender typeCode="SND">
    <device classCode="DEV" determinerCode="INSTANCE">
      <id root="1.2.3.928.955.1"/>
      <asAgent classCode="AGNT">
        <representedOrganization classCode="ORG" determinerCode="INSTANCE">
          <id root="1.2.3.928.955"/>
        </representedOrganization>
      </asAgent>
    </device>
  </sender>
  <controlActProcess classCode="CACT" moodCode="EVN">
    <code code="PRPA_TE201305UV02" codeSystem="2.16.840.1.113883.1.6"/>
    <queryByParameter>
      <queryId root="2.25.4711" extension="q-0001"/>
      <statusCode code="new"/>
      <responseModalityCode code="R"/>
      <responsePriorityCode code="I"/>
      <parameterList>
        <livingSubjectBirthTime>
          <value value="19630804"/>
          <semanticsText>LivingSubject.birthTime</semanticsText>
        </livingSubjectBirthTime>
        <livingSubjectName>
          <value>
            <given>Jane</given>
            <family>Doe</family>
          </value>
          <semanticsText>LivingSubject.name</semanticsText>
        </livingSubjectName>
      </parameterList>
    </queryByParameter>
  </controlActProcess>
</PRPA_IN201305UV02>
"""  # noqa: E501

FULL_PARAMETERS = ParameterList(
    living_subject_administrative_gender="F",
    living_subject_birth_place_addresses=(PostalAddress(city="Springfield", country="US"),),
    living_subject_birth_place_names=("Springfield General",),
    living_subject_birth_time=TimeInterval(low="1963", high="19640101"),
    living_subject_ids=(
        II("1.2.840.114350.1.13.99997.2.3412", "1234"),
        II("2.16.840.1.113883.4.1", "999-88-6345"),
    ),
    living_subject_names=(
        PersonName(given=("Jane", "Q"), family=("Doe",), prefix=("Dr",), suffix=("III",)),
        PersonName(given=("Janet",), family=("Doe", "Smith"), use="L"),
    ),
    mothers_maiden_name=PersonName(family=("Roe",)),
    patient_addresses=(
        PostalAddress(("1 Main St", "Apt 2"), "Springfield", "IL", "05080", "US", use="H"),
        PostalAddress(city="Chicago", state="IL"),
    ),
    patient_telecoms=(Telecom("tel:+1-555-0100", "HP"), Telecom("mailto:jane@example.org")),
    principal_care_provider_ids=(II("2.16.840.1.113883.4.6", "1689055451"),),
)

FULL_QUERY = dataclasses.replace(
    MINIMAL_QUERY,
    receiver=THEIR_DEVICE,
    patient_id_assigning_authority="1.2.840.114350.1.13.99997.2.3412",
    query_by_parameter=QueryByParameter(
        query_id=II("2.25.4711", "q-0001"),
        parameters=FULL_PARAMETERS,
        match_algorithm="hund",
        minimum_degree_match=90,
    ),
)

JANE = MatchedPatient(
    patient_id=PatientId("34827K410", "1.2.840.114350.1.13.99998.8734"),
    home_community_id=HomeCommunityId("1.2.840.114350.1.13.99998.8734"),
    names=(PersonName(given=("Jane",), family=("Doe",)),),
    administrative_gender="F",
    birth_time="19630804",
    addresses=(PostalAddress(("1 Main St",), "Springfield", "IL", "05080", "US"),),
    telecoms=(Telecom("tel:+1-555-0100", "HP"),),
    other_ids=(
        OtherId(II("2.16.840.1.113883.4.1", "999-88-6345"), "2.16.840.1.113883.4.1", "CIT"),
    ),
    provider_organization=ProviderOrganization(
        II("1.2.840.114350.1.13.99998.8734"), "Good Health Clinic", (Telecom("tel:+1-555-0199"),)
    ),
    match_degree=92,
)


def response(**changes: object) -> PatientDiscoveryResponse:
    base = PatientDiscoveryResponse(
        message_id=II("2.25.815", "resp-0001"),
        creation_time="20240501100001",
        sender=THEIR_DEVICE,
        receiver=OUR_DEVICE,
        acknowledgement=Acknowledgement(AcknowledgementType.AA, II("2.25.4711", "msg-0001")),
        query_ack=QueryAck(QueryResponseCode.OK, II("2.25.4711", "q-0001"), "deliveredResponse"),
        patients=(JANE,),
        query_by_parameter=MINIMAL_QUERY.query_by_parameter,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def xml(el: etree._Element) -> bytes:
    return etree.tostring(el)


def query_round_trip(query: PatientDiscoveryQuery) -> PatientDiscoveryQuery:
    return parse_patient_discovery_query(parse_xml(xml(render_patient_discovery_query(query))))


def response_round_trip(resp: PatientDiscoveryResponse) -> PatientDiscoveryResponse:
    el = render_patient_discovery_response(resp)
    return parse_patient_discovery_response(parse_xml(xml(el)))


def parse_query_text(text: str) -> PatientDiscoveryQuery:
    return parse_patient_discovery_query(parse_xml(text.encode()))


# --- rendering and round trips ----------------------------------------------------------


def test_golden_minimal_query() -> None:
    el = render_patient_discovery_query(MINIMAL_QUERY)
    assert etree.tostring(el, pretty_print=True).decode() == GOLDEN_MINIMAL_QUERY


def test_golden_minimal_query_parses_back() -> None:
    assert parse_query_text(GOLDEN_MINIMAL_QUERY) == MINIMAL_QUERY


@pytest.mark.parametrize(
    "query",
    [
        MINIMAL_QUERY,
        FULL_QUERY,
        dataclasses.replace(
            MINIMAL_QUERY,
            processing_mode_code="I",
            respond_to="https://initiator.example/deferred",
            query_by_parameter=dataclasses.replace(
                MINIMAL_QUERY.query_by_parameter, response_priority_code="D"
            ),
        ),
        dataclasses.replace(
            MINIMAL_QUERY,
            query_by_parameter=QueryByParameter(
                II("2.25.1", "q"), ParameterList(living_subject_ids=(II("1.2.3", "P1"),))
            ),
        ),
    ],
    ids=["minimal", "all-parameters", "deferred", "id-only"],
)
def test_query_round_trip(query: PatientDiscoveryQuery, schema_dir: Path) -> None:
    assert query_round_trip(query) == query
    assert_valid("PRPA_IN201305UV02", render_patient_discovery_query(query))


def test_full_query_parameter_order_follows_schema() -> None:
    el = render_patient_discovery_query(FULL_QUERY)
    names = [etree.QName(c).localname for c in el.find(f".//{{{HL7}}}parameterList")]
    order = [
        "livingSubjectAdministrativeGender",
        "livingSubjectBirthPlaceAddress",
        "livingSubjectBirthPlaceName",
        "livingSubjectBirthTime",
        "livingSubjectId",
        "livingSubjectName",
        "mothersMaidenName",
        "patientAddress",
        "patientTelecom",
        "principalCareProviderId",
    ]
    assert names == sorted(names, key=order.index)
    assert names.count("patientAddress") == 1  # every address value in one element
    assert names.count("livingSubjectName") == 2  # one value per name element


def test_match_response_round_trip(schema_dir: Path) -> None:
    resp = response()
    assert response_round_trip(resp) == resp
    assert_valid("PRPA_IN201306UV02", render_patient_discovery_response(resp))


def test_several_candidates_in_several_communities(schema_dir: Path) -> None:
    other = dataclasses.replace(
        JANE,
        patient_id=PatientId("X9", "1.2.3.4.5"),
        home_community_id=HomeCommunityId("1.2.3.4"),
        health_data_locator=HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR,
        provider_organization=None,
        match_degree=None,
        names=(),
    )
    resp = response(patients=(JANE, other))
    parsed = response_round_trip(resp)
    assert parsed == resp
    assert [p.home_community_id for p in parsed.patients] == [
        HomeCommunityId("1.2.840.114350.1.13.99998.8734"),
        HomeCommunityId("1.2.3.4"),
    ]
    el = render_patient_discovery_response(resp)
    assert el.find(f".//{{{HL7}}}name[@nullFlavor='NA']") is not None
    assert_valid("PRPA_IN201306UV02", el)


def test_no_match_response(schema_dir: Path) -> None:
    resp = response(
        patients=(), query_ack=QueryAck(QueryResponseCode.NF, II("2.25.4711", "q-0001"))
    )
    assert response_round_trip(resp) == resp
    assert_valid("PRPA_IN201306UV02", render_patient_discovery_response(resp))


@pytest.mark.parametrize("code", list(IssueManagement))
def test_error_response_with_each_issue_management_code(
    code: IssueManagement, schema_dir: Path
) -> None:
    resp = response(
        patients=(),
        acknowledgement=Acknowledgement(
            AcknowledgementType.AE,
            II("2.25.4711", "msg-0001"),
            (
                AcknowledgementDetail(
                    "E", CodedValue("INTERR", ACKNOWLEDGEMENT_DETAIL_SYSTEM), "MPI offline"
                ),
            ),
        ),
        query_ack=QueryAck(QueryResponseCode.AE, II("2.25.4711", "q-0001"), "aborted"),
        detected_issues=(DetectedIssueEvent.managed_by(code, text="try later"),),
    )
    parsed = response_round_trip(resp)
    assert parsed == resp
    assert parsed.issue_management_codes == (code,)
    assert parsed.detected_issues[0].issue_management[0].code_system == ISSUE_MANAGEMENT_SYSTEM
    assert_valid("PRPA_IN201306UV02", render_patient_discovery_response(resp))


@pytest.mark.parametrize("attribute", list(RequestedAttribute))
def test_more_attributes_requested_each_code(
    attribute: RequestedAttribute, schema_dir: Path
) -> None:
    resp = response(patients=(), detected_issues=(DetectedIssueEvent.requesting(attribute),))
    parsed = response_round_trip(resp)
    assert parsed == resp
    assert parsed.requested_attributes == (attribute,)
    coded = parsed.detected_issues[0].action_required[0]
    assert coded.code_system == REQUESTED_ATTRIBUTE_SYSTEM
    assert_valid("PRPA_IN201306UV02", render_patient_discovery_response(resp))


def test_query_error_response(schema_dir: Path) -> None:
    resp = response(
        patients=(),
        acknowledgement=Acknowledgement(AcknowledgementType.AE, II("2.25.4711", "msg-0001")),
        query_ack=QueryAck(QueryResponseCode.QE, II("2.25.4711", "q-0001")),
        query_by_parameter=None,
    )
    assert response_round_trip(resp) == resp
    assert_valid("PRPA_IN201306UV02", render_patient_discovery_response(resp))


@pytest.mark.parametrize("hdl", [*HealthDataLocator, None])
def test_health_data_locator_indication(hdl: HealthDataLocator | None) -> None:
    resp = response(patients=(dataclasses.replace(JANE, health_data_locator=hdl),))
    assert response_round_trip(resp).patients[0].health_data_locator is hdl


# --- identifiers -----------------------------------------------------------------------------


def test_ii_and_cx_forms() -> None:
    pid = PatientId("34827K410", "1.2.840.114350.1.13.99998.8734")
    ii = II.from_patient_id(pid)
    assert ii == II("1.2.840.114350.1.13.99998.8734", "34827K410")
    assert ii.patient_id == pid
    assert pid.cx == "34827K410^^^&1.2.840.114350.1.13.99998.8734&ISO"
    assert JANE.patient_ii == ii
    assert PatientId.from_cx(pid.cx) == JANE.patient_id


def test_root_only_ii_is_not_a_patient_id() -> None:
    with pytest.raises(errors.InvalidValue, match="no extension"):
        _ = II("1.2.3").patient_id


def test_ii_roots_may_be_uuids_and_ruids_but_not_garbage() -> None:
    assert II("57e77e59-1743-4d36-a8a2-de1735793e52").root.startswith("57e7")
    assert II("SSA-id", "x").root == "SSA-id"
    with pytest.raises(errors.InvalidOid):
        II("1.2.3}")
    with pytest.raises(errors.InvalidValue):
        II("1.2.3", "")


def test_long_base64_patient_id_survives() -> None:
    value = "ODFmMmVjNGUtYzcxYy00MDkwLWJmMWMtOWQ4NTI5ZjY1YjVhLzAxOGUxMDU4LTllMWEtN2MzMy1hMm=="
    patient = dataclasses.replace(JANE, patient_id=PatientId(value, "2.16.840.1.113883.3.9621"))
    parsed = response_round_trip(response(patients=(patient,)))
    assert parsed.patients[0].patient_id.id == value


# --- model validation ------------------------------------------------------------------------


def test_timestamps() -> None:
    for ok in ("2024", "20240501", "20240501100000", "20240501100000.123-0500", "19849711"):
        assert validate_ts(ok) == ok
    for bad in ("2024-05-01", "2024-04-09T18:19:22.811Z", "", "1.3.6.1"):
        with pytest.raises(errors.InvalidHl7Timestamp):
            validate_ts(bad)


def test_time_interval_needs_value_or_bounds() -> None:
    with pytest.raises(errors.InvalidValue):
        TimeInterval()
    with pytest.raises(errors.InvalidValue):
        TimeInterval("1963", low="1962")


def test_query_needs_id_or_name_and_birth_time() -> None:
    with pytest.raises(errors.PatientDiscoveryMissingParameter):
        dataclasses.replace(
            MINIMAL_QUERY,
            query_by_parameter=QueryByParameter(
                II("2.25.1", "q"),
                ParameterList(
                    living_subject_names=MINIMAL_QUERY.query_by_parameter.parameters.living_subject_names
                ),
            ),
        )


def test_uses_are_checked() -> None:
    with pytest.raises(errors.InvalidValue):
        Telecom("tel:1", use="Home")
    with pytest.raises(errors.InvalidValue):
        ParameterList(living_subject_names=(PersonName(family=("Doe",), use="SRCH"),))
    with pytest.raises(errors.InvalidValue):
        QueryByParameter(II("1.2", "q"), ParameterList(), minimum_degree_match=101)


# --- lenient input ---------------------------------------------------------------------------


def rendered_response(**changes: object) -> etree._Element:
    return parse_xml(xml(render_patient_discovery_response(response(**changes))))


def find(el: etree._Element, path: str) -> etree._Element:
    found = el.find(path.replace("hl7:", f"{{{HL7}}}"))
    assert found is not None, path
    return found


def metriport_style(el: etree._Element, unqualified: bool = False) -> etree._Element:
    """Copy *el* with HL7 elements under a ``urn:`` prefix and receiver/sender unqualified."""
    local = etree.QName(el).localname
    unqualified = unqualified or local in ("receiver", "sender")
    tag = local if unqualified else f"{{{HL7}}}{local}"
    copy = etree.Element(tag, dict(el.attrib), nsmap={"urn": HL7})
    copy.text = el.text
    for child in el:
        copy.append(metriport_style(child, unqualified))
    return copy


def test_metriport_unqualified_receiver_and_sender_are_read_as_hl7() -> None:
    original = render_patient_discovery_query(MINIMAL_QUERY)
    el = parse_xml(etree.tostring(metriport_style(original)))
    assert el.find(f"{{{HL7}}}sender") is None
    assert el.find("sender/device/asAgent") is not None
    assert el.find(f"{{{HL7}}}controlActProcess") is not None
    assert parse_patient_discovery_query(el) == MINIMAL_QUERY


def test_sender_in_a_foreign_namespace_is_refused() -> None:
    text = GOLDEN_MINIMAL_QUERY.replace(
        '<sender typeCode="SND">', '<x:sender xmlns:x="urn:example" typeCode="SND">'
    ).replace("</sender>", "</x:sender>")
    with pytest.raises(errors.PatientDiscoveryWrongNamespace, match="sender"):
        parse_query_text(text)


def test_other_prefixes_and_urn_oid_roots_and_semantics_text_are_tolerated() -> None:
    text = (
        GOLDEN_MINIMAL_QUERY.replace(
            '<id root="1.2.3.928.955"/>', '<id root="urn:oid:1.2.3.928.955"/>'
        )
        .replace("LivingSubject.birthTime", "LivingSubject..birthTime")
        .replace(
            "</livingSubjectName>",
            "</livingSubjectName><patientTelecom><value/></patientTelecom>",
        )
    )
    assert parse_query_text(text) == MINIMAL_QUERY


def test_repeated_address_and_telecom_elements_are_flattened() -> None:
    el = render_patient_discovery_query(FULL_QUERY)
    pl = find(el, ".//hl7:parameterList")
    address = find(pl, "hl7:patientAddress")
    second = etree.SubElement(pl, f"{{{HL7}}}patientAddress")
    second.append(address[1])  # move the second value into its own element
    parsed = parse_patient_discovery_query(parse_xml(xml(el)))
    assert parsed == FULL_QUERY


def test_postal_code_with_leading_zero_stays_a_string() -> None:
    parsed = response_round_trip(response())
    assert parsed.patients[0].addresses[0].postal_code == "05080"


def test_telecom_and_other_ids_out_of_schema_order() -> None:
    el = rendered_response()
    person = find(el, ".//hl7:patientPerson")
    telecom = find(person, "hl7:telecom")
    person.remove(telecom)
    person.append(telecom)  # after asOtherIDs, as Metriport writes it
    assert parse_patient_discovery_response(el) == response()


@pytest.mark.parametrize("class_code", ["OBS", "COND", "ALRT"])
def test_query_match_observation_of_any_class(class_code: str) -> None:
    el = rendered_response()
    find(el, ".//hl7:queryMatchObservation").set("classCode", class_code)
    assert parse_patient_discovery_response(el).patients[0].match_degree == 92


def test_empty_other_id_telecom_and_reason_are_absent() -> None:
    el = rendered_response()
    person = find(el, ".//hl7:patientPerson")
    empty = etree.SubElement(person, f"{{{HL7}}}asOtherIDs", classCode="PAT")
    etree.SubElement(empty, f"{{{HL7}}}id")
    etree.SubElement(person, f"{{{HL7}}}telecom")
    cap = find(el, "hl7:controlActProcess")
    find(cap, "hl7:queryAck").addprevious(etree.Element(f"{{{HL7}}}reasonOf"))
    assert parse_patient_discovery_response(el) == response()


def test_other_ids_without_scoping_organization_and_extra_patient_ids() -> None:
    el = rendered_response()
    other = find(el, ".//hl7:asOtherIDs")
    other.remove(find(other, "hl7:scopingOrganization"))
    patient_id = find(el, ".//hl7:patient/hl7:id")
    patient_id.addnext(etree.Element(f"{{{HL7}}}id", root="1.2.3.4", extension="EXTRA"))
    parsed = parse_patient_discovery_response(el).patients[0]
    assert parsed.patient_id == JANE.patient_id
    assert parsed.other_ids == (
        OtherId(II("1.2.3.4", "EXTRA"), "1.2.3.4"),
        OtherId(II("2.16.840.1.113883.4.1", "999-88-6345"), "2.16.840.1.113883.4.1", "CIT"),
    )


def test_empty_target_message_extension_reads_as_root_only() -> None:
    el = rendered_response()
    find(el, "hl7:acknowledgement/hl7:targetMessage/hl7:id").set("extension", "")
    parsed = parse_patient_discovery_response(el)
    assert parsed.acknowledgement.target_message_id == II("2.25.4711")


def test_misspelt_patient_address_requested_is_understood() -> None:
    issue = DetectedIssueEvent(
        action_required=(CodedValue("PatientAdressRequested", REQUESTED_ATTRIBUTE_SYSTEM),)
    )
    parsed = response_round_trip(response(patients=(), detected_issues=(issue,)))
    assert parsed.requested_attributes == (RequestedAttribute.PATIENT_ADDRESS,)
    assert parsed.detected_issues == (issue,)  # kept verbatim


def test_unknown_detected_issue_codes_are_kept_but_not_interpreted() -> None:
    issue = DetectedIssueEvent(issue_management=(CodedValue("PartnerSpecific", "1.2.3"),))
    parsed = response_round_trip(response(patients=(), detected_issues=(issue,)))
    assert parsed.detected_issues == (issue,)
    assert parsed.issue_management_codes == ()


def test_missing_custodian_community_and_hdl_are_recorded_as_absent(schema_dir: Path) -> None:
    el = rendered_response()
    entity = find(el, ".//hl7:custodian/hl7:assignedEntity")
    entity.remove(find(entity, "hl7:code"))
    find(entity, "hl7:id").attrib.pop("root")
    parsed = parse_patient_discovery_response(el)
    assert parsed.patients[0].home_community_id is None
    assert parsed.patients[0].health_data_locator is None
    assert response_round_trip(parsed) == parsed
    assert_valid("PRPA_IN201306UV02", render_patient_discovery_response(parsed))


# --- refused input: queries ------------------------------------------------------------------


def edit(old: str, new: str) -> str:
    assert old in GOLDEN_MINIMAL_QUERY, old
    return GOLDEN_MINIMAL_QUERY.replace(old, new)


BIRTH_TIME = """<livingSubjectBirthTime>
          <value value="19630804"/>
          <semanticsText>LivingSubject.birthTime</semanticsText>
        </livingSubjectBirthTime>"""


@pytest.mark.parametrize(
    ("text", "error", "detail"),
    [
        (
            edit('xmlns="urn:hl7-org:v3"', 'xmlns="urn:example"'),
            errors.PatientDiscoveryWrongNamespace,
            "SYN",
        ),
        (
            edit(
                '<controlActProcess classCode="CACT" moodCode="EVN">',
                '<controlActProcess xmlns="urn:example" classCode="CACT" moodCode="EVN">',
            ),
            errors.PatientDiscoveryWrongNamespace,
            "SYN",
        ),
        (
            edit("<livingSubjectName>", "<livingSubjectNameX>").replace(
                "</livingSubjectName>", "</livingSubjectNameX>"
            ),
            errors.PatientDiscoveryMissingParameter,
            "SYN105",
        ),
        (edit(BIRTH_TIME, ""), errors.PatientDiscoveryMissingParameter, "SYN105"),
        (
            edit('<id root="2.25.4711" extension="msg-0001"/>', ""),
            errors.PatientDiscoveryMissingElement,
            "SYN105",
        ),
        (edit('<processingCode code="P"/>', ""), errors.PatientDiscoveryMissingElement, "SYN105"),
        (
            edit('<queryId root="2.25.4711" extension="q-0001"/>', '<queryId extension="q-0001"/>'),
            errors.PatientDiscoveryMissingElement,
            "SYN105",
        ),
        (
            edit('<id root="1.2.3.928.955"/>', '<id root="1.2.3.928.955}"/>'),
            errors.PatientDiscoveryInvalidOid,
            "SYN102",
        ),
        (
            edit('<id root="1.2.3.999.1"/>', '<id root="not an oid"/>'),
            errors.PatientDiscoveryInvalidOid,
            "SYN102",
        ),
        (
            edit("20240501100000", "2024-05-01T10:00:00Z"),
            errors.PatientDiscoveryInvalidTimestamp,
            "SYN102",
        ),
        (
            edit('value="19630804"', 'value="1963-08-04"'),
            errors.PatientDiscoveryInvalidTimestamp,
            "SYN102",
        ),
        (
            edit(
                "<parameterList>",
                "<parameterList><livingSubjectAdministrativeGender>"
                '<value code="M"/><value code="F"/>'
                "<semanticsText>x</semanticsText></livingSubjectAdministrativeGender>",
            ),
            errors.PatientDiscoveryUnexpectedElement,
            "SYN",
        ),
        (
            edit(
                '<receiver typeCode="RCV">',
                '<receiver typeCode="RCV"><device classCode="DEV" determinerCode="INSTANCE">'
                '<id root="9.9"/></device></receiver><receiver typeCode="RCV">',
            ),
            errors.PatientDiscoveryUnexpectedElement,
            "SYN",
        ),
        (
            edit(
                "</parameterList>",
                "<livingSubjectDeceasedTime><value value='2020'/>"
                "<semanticsText>x</semanticsText></livingSubjectDeceasedTime></parameterList>",
            ),
            errors.PatientDiscoveryUnexpectedElement,
            "SYN",
        ),
        (
            edit(
                "<parameterList>",
                "<matchCriterionList><minimumDegreeMatch><value value='high'/>"
                "<semanticsText>x</semanticsText></minimumDegreeMatch></matchCriterionList>"
                "<parameterList>",
            ),
            errors.PatientDiscoveryInvalidValue,
            "SYN102",
        ),
        (
            edit(
                "<given>Jane</given>",
                "<given>Jane</given></value><value use='SRCH'><given>J</given>",
            ),
            errors.PatientDiscoveryInvalidValue,
            "SYN102",
        ),
    ],
    ids=[
        "root-namespace",
        "child-namespace",
        "no-name",
        "no-birth-time",
        "no-message-id",
        "no-processing-code",
        "query-id-without-root",
        "hcid-stray-brace",
        "device-root-not-oid",
        "creation-time-iso8601",
        "birth-time-iso8601",
        "two-genders",
        "two-receivers",
        "unsupported-parameter",
        "degree-not-int",
        "name-use-srch",
    ],
)
def test_refused_query(
    text: str, error: type[errors.PatientDiscoveryQueryError], detail: str
) -> None:
    with pytest.raises(error) as caught:
        parse_query_text(text)
    exc = caught.value
    assert isinstance(exc, errors.PatientDiscoveryQueryError)
    assert exc.hl7_acknowledgement_detail_code == detail
    assert exc.hl7_acknowledgement_type_code == "AE"
    assert exc.hl7_query_response_code == "AE"
    assert exc.hl7_detected_issue_management_code == "AnswerNotAvailable"
    assert exc.fault_code is errors.FaultCode.SENDER


def test_specific_errors_are_also_the_generic_ones() -> None:
    with pytest.raises(errors.MissingElement):
        parse_query_text(edit(BIRTH_TIME, ""))
    with pytest.raises(errors.InvalidOid):
        parse_query_text(edit('<id root="1.2.3.928.955"/>', '<id root="1.2.3.928.955}"/>'))
    with pytest.raises(errors.InvalidHl7Timestamp):
        parse_query_text(edit("20240501100000", "yesterday"))


def test_response_is_not_a_query() -> None:
    with pytest.raises(errors.PatientDiscoveryUnexpectedElement):
        parse_patient_discovery_query(rendered_response())


def test_stray_brace_message_names_the_place() -> None:
    with pytest.raises(errors.InvalidOid, match=r"sender homeCommunityId.*955\}"):
        parse_query_text(edit('<id root="1.2.3.928.955"/>', '<id root="1.2.3.928.955}"/>'))


# --- in-band error answers -------------------------------------------------------------------


def test_header_of_an_unusable_query_gives_an_in_band_answer(schema_dir: Path) -> None:
    text = edit('<id root="1.2.3.928.955"/>', '<id root="1.2.3.928.955}"/>').replace(BIRTH_TIME, "")
    el = parse_xml(text.encode())
    with pytest.raises(errors.PatientDiscoveryQueryError) as caught:
        parse_patient_discovery_query(el)
    header = parse_patient_discovery_query_header(el)
    assert header.message_id == MINIMAL_QUERY.message_id
    assert header.sender == Device(II("1.2.3.928.955.1"))  # unreadable community dropped
    assert header.query_id == II("2.25.4711", "q-0001")
    answer = response_for_query_error(
        header,
        caught.value,
        message_id=II("2.25.815", "resp-0002"),
        creation_time="20240501100002",
        sender=THEIR_DEVICE,
    )
    assert answer.acknowledgement.type_code is AcknowledgementType.AE
    assert answer.acknowledgement.target_message_id == MINIMAL_QUERY.message_id
    assert answer.acknowledgement.details[0].code == CodedValue(
        "SYN102", ACKNOWLEDGEMENT_DETAIL_SYSTEM
    )
    assert answer.query_ack == QueryAck(QueryResponseCode.AE, II("2.25.4711", "q-0001"), "aborted")
    assert answer.issue_management_codes == (IssueManagement.ANSWER_NOT_AVAILABLE,)
    el_out = render_patient_discovery_response(answer)
    assert_valid("PRPA_IN201306UV02", el_out)
    assert parse_patient_discovery_response(parse_xml(xml(el_out))) == answer


def test_header_of_a_valid_query() -> None:
    el = parse_xml(GOLDEN_MINIMAL_QUERY.encode())
    assert parse_patient_discovery_query_header(el) == MINIMAL_QUERY.header


def test_no_header_means_soap_fault() -> None:
    for text in (
        edit('<id root="2.25.4711" extension="msg-0001"/>', ""),
        edit('xmlns="urn:hl7-org:v3"', 'xmlns="urn:example"'),
    ):
        with pytest.raises(errors.PayloadError) as caught:
            parse_patient_discovery_query_header(parse_xml(text.encode()))
        assert not isinstance(caught.value, errors.PatientDiscoveryQueryError)


def test_header_without_query_id() -> None:
    text = edit('<queryId root="2.25.4711" extension="q-0001"/>', "")
    header = parse_patient_discovery_query_header(parse_xml(text.encode()))
    assert header.query_id is None


# --- refused input: responses ----------------------------------------------------------------


def test_response_without_acknowledgement() -> None:
    el = rendered_response()
    el.remove(find(el, "hl7:acknowledgement"))
    with pytest.raises(errors.MissingElement, match="acknowledgement"):
        parse_patient_discovery_response(el)


def test_response_with_two_acknowledgements() -> None:
    el = rendered_response()
    ack = find(el, "hl7:acknowledgement")
    ack.addnext(etree.fromstring(etree.tostring(ack)))
    with pytest.raises(errors.UnexpectedElement, match="acknowledgement"):
        parse_patient_discovery_response(el)


@pytest.mark.parametrize(
    ("path", "attribute", "value", "error"),
    [
        (".//hl7:queryResponseCode", "code", "XX", errors.InvalidValue),
        ("hl7:acknowledgement/hl7:typeCode", "code", "OK", errors.InvalidValue),
        (".//hl7:custodian/hl7:assignedEntity/hl7:code", "code", "Maybe", errors.InvalidValue),
        (".//hl7:custodian/hl7:assignedEntity/hl7:id", "root", "1.2.3}", errors.InvalidOid),
        (".//hl7:patient/hl7:id", "extension", "A^B", errors.InvalidValue),
        (".//hl7:patientPerson/hl7:birthTime", "value", "1963-08-04", errors.InvalidHl7Timestamp),
        ("hl7:creationTime", "value", "now", errors.InvalidHl7Timestamp),
        (".//hl7:queryMatchObservation/hl7:value", "value", "high", errors.InvalidValue),
    ],
)
def test_refused_response_values(
    path: str, attribute: str, value: str, error: type[errors.PayloadError]
) -> None:
    el = rendered_response()
    find(el, path).set(attribute, value)
    with pytest.raises(error):
        parse_patient_discovery_response(el)


def test_patient_without_usable_id() -> None:
    el = rendered_response()
    patient_id = find(el, ".//hl7:patient/hl7:id")
    del patient_id.attrib["extension"]
    with pytest.raises(errors.InvalidValue, match="no extension"):
        parse_patient_discovery_response(el)
    patient_id.attrib.pop("root")
    with pytest.raises(errors.MissingElement, match="patient has no id"):
        parse_patient_discovery_response(el)


def test_non_person_match_is_refused() -> None:
    el = rendered_response()
    person = find(el, ".//hl7:patientPerson")
    person.addnext(etree.Element(f"{{{HL7}}}patientNonPersonLivingSubject"))
    with pytest.raises(errors.UnexpectedElement, match="person"):
        parse_patient_discovery_response(el)


def test_gender_codes_are_normalised_or_kept() -> None:
    text = edit(
        "<parameterList>",
        "<parameterList><livingSubjectAdministrativeGender><value code='f'/>"
        "<semanticsText>LivingSubject.administrativeGender</semanticsText>"
        "</livingSubjectAdministrativeGender>",
    )
    assert (
        parse_query_text(text).query_by_parameter.parameters.living_subject_administrative_gender
        == "F"
    )
    el = rendered_response()
    find(el, ".//hl7:administrativeGenderCode").set("code", "U")
    assert parse_patient_discovery_response(el).patients[0].administrative_gender == "U"


def test_health_data_locator_code_is_case_insensitive() -> None:
    el = rendered_response()
    find(el, ".//hl7:custodian/hl7:assignedEntity/hl7:code").set(
        "code", "supportsHealthDataLocator"
    )
    parsed = parse_patient_discovery_response(el)
    assert parsed.patients[0].health_data_locator is HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR


@pytest.mark.parametrize("root", ["987654321", "01.2.3", "9.1.2"])
def test_community_ids_must_be_writable_as_hl7_roots(root: str) -> None:
    # HomeCommunityId itself is lenient (placeholders like 987654321 appear in XCA), but
    # XCPD writes it back as an II root, whose schema pattern is [0-2](.(0|[1-9][0-9]*))*.
    with pytest.raises(errors.PatientDiscoveryInvalidOid, match="HL7 II root"):
        parse_query_text(edit('<id root="1.2.3.928.955"/>', f'<id root="{root}"/>'))
    el = rendered_response()
    find(el, ".//hl7:custodian/hl7:assignedEntity/hl7:id").set("root", root)
    with pytest.raises(errors.InvalidOid):
        parse_patient_discovery_response(el)
