"""Audit Trail and Node Authentication [ITI-20]: DICOM PS3.15 audit message codec."""

from __future__ import annotations

import dataclasses

import pytest
from lxml import etree

from imagebridge.errors import InvalidTimestamp, InvalidValue, MissingElement, WrongNamespace
from imagebridge.model.audit import (
    ActiveParticipant,
    AuditCode,
    AuditMessage,
    AuditSourceIdentification,
    AuditSourceTypeCode,
    DicomObjectDescription,
    EventActionCode,
    EventIdentification,
    EventOutcomeIndicator,
    NetworkAccessPointTypeCode,
    ParticipantObjectDetail,
    ParticipantObjectIdentification,
    ParticipantObjectTypeCode,
    SopClass,
)
from imagebridge.model.instant import Instant
from imagebridge.wire.audit import parse_audit_message, render_audit_message
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import assert_valid

QUERY = AuditCode("110112", "DCM", "Query")
ITI_55 = AuditCode("ITI-55", "IHE Transactions", "Cross Gateway Patient Discovery")
SOURCE = AuditCode("110153", "DCM", "Source Role ID")
DESTINATION = AuditCode("110152", "DCM", "Destination Role ID")
TREATMENT = AuditCode("TREATMENT", "2.16.840.1.113883.3.18.7.1", "Treatment")


def iti55_audit() -> AuditMessage:
    """An ITI-55 responder audit as soap-transport.md 7 describes it."""
    return AuditMessage(
        event_identification=EventIdentification(
            event_id=QUERY,
            event_date_time=Instant.parse("2024-05-01T10:00:00.123Z"),
            event_outcome_indicator=EventOutcomeIndicator.SUCCESS,
            event_action_code=EventActionCode.EXECUTE,
            event_type_codes=(ITI_55,),
            purposes_of_use=(TREATMENT,),
        ),
        active_participants=(
            ActiveParticipant(
                user_id="http://www.w3.org/2005/08/addressing/anonymous",
                user_is_requestor=True,
                alternative_user_id="4711",
                network_access_point_id="192.0.2.10",
                network_access_point_type_code=NetworkAccessPointTypeCode.IP_ADDRESS,
                role_id_codes=(SOURCE,),
            ),
            ActiveParticipant(
                user_id="jd<UID=jdoe@CN=sts.example.org>",
                user_is_requestor=True,
                user_name="Jane Doe",
            ),
            ActiveParticipant(
                user_id="https://gw.example.org/xcpd",
                user_is_requestor=False,
                network_access_point_id="gw.example.org",
                network_access_point_type_code=NetworkAccessPointTypeCode.MACHINE_NAME,
                role_id_codes=(DESTINATION,),
            ),
        ),
        audit_source_identification=AuditSourceIdentification(
            "imagebridge", "1.2.3", (AuditSourceTypeCode("4", "DCM", "Application Server"),)
        ),
        participant_objects=(
            ParticipantObjectIdentification(
                id_type_code=AuditCode("2", "RFC-3881", "Patient Number"),
                object_id="P1^^^&1.2.840.1&ISO",
                type_code=ParticipantObjectTypeCode.PERSON,
                type_code_role=1,
            ),
            ParticipantObjectIdentification(
                id_type_code=ITI_55,
                object_id="urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11",
                type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
                type_code_role=24,
                query=b"<queryByParameter>\n <queryId/>\n</queryByParameter>",
                details=(ParticipantObjectDetail("ihe:homeCommunityID", b"urn:oid:1.2.3"),),
            ),
        ),
    )


def test_rendered_audit_validates_and_round_trips() -> None:
    message = iti55_audit()
    element = render_audit_message(message)
    assert_valid("audit", element)
    assert parse_audit_message(parse_xml(etree.tostring(element))) == message


def test_base64_content_is_encoded_on_output() -> None:
    element = render_audit_message(iti55_audit())
    assert element.findtext(".//ParticipantObjectQuery") == (
        "PHF1ZXJ5QnlQYXJhbWV0ZXI+CiA8cXVlcnlJZC8+CjwvcXVlcnlCeVBhcmFtZXRlcj4="
    )
    detail = element.find(".//ParticipantObjectDetail")
    assert detail is not None
    assert detail.get("value") == "dXJuOm9pZDoxLjIuMw=="


def test_dicom_instances_transferred_description_round_trips() -> None:
    study = ParticipantObjectIdentification(
        id_type_code=AuditCode("110180", "DCM", "Study Instance UID"),
        object_id="1.2.3.4.5",
        type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
        type_code_role=3,
        data_life_cycle=6,
        sensitivity="N",
        name="CT chest",
        descriptions=(
            DicomObjectDescription(
                mpps_uids=("1.2.3.9",),
                accession_numbers=("ACC1",),
                sop_classes=(
                    SopClass(2, "1.2.840.10008.5.1.4.1.1.2", ("1.2.3.4.5.1", "1.2.3.4.5.2")),
                ),
                study_uids=("1.2.3.4.5",),
                encrypted=False,
                anonymized=True,
            ),
        ),
    )
    message = dataclasses.replace(iti55_audit(), participant_objects=(study,))
    element = render_audit_message(message)
    assert_valid("audit", element)
    assert parse_audit_message(element) == message


def test_media_identifier_round_trips() -> None:
    participant = ActiveParticipant(
        "CD-1", False, media_type=AuditCode("110033", "DCM", "DVD"), role_id_codes=()
    )
    message = dataclasses.replace(iti55_audit(), active_participants=(participant,))
    element = render_audit_message(message)
    assert_valid("audit", element)
    assert parse_audit_message(element) == message


def _audit(body: str, event: str | None = None) -> bytes:
    event = event or (
        "<EventIdentification EventActionCode='E' EventDateTime='2024-05-01T10:00:00Z' "
        "EventOutcomeIndicator='0'><EventID csd-code='110112' codeSystemName='DCM' "
        "originalText='Query'/></EventIdentification>"
    )
    return (
        f"<AuditMessage>{event}{body}<AuditSourceIdentification AuditSourceID='s'/></AuditMessage>"
    ).encode()


PARTICIPANT = "<ActiveParticipant UserID='u' UserIsRequestor='false'/>"


def test_rfc3881_attribute_names_are_read() -> None:
    event = (
        "<EventIdentification EventDateTime='2024-05-01T10:00:00' EventOutcomeIndicator='4'>"
        "<EventID code='110112' codeSystemName='DCM' displayName='Query'/></EventIdentification>"
    )
    message = parse_audit_message(parse_xml(_audit("<ActiveParticipant UserID='u'/>", event)))
    ev = message.event_identification
    assert ev.event_id == AuditCode("110112", "DCM", "Query", "Query")
    assert ev.event_action_code is None
    assert ev.event_outcome_indicator is EventOutcomeIndicator.MINOR_FAILURE
    assert message.active_participants[0].user_is_requestor  # RFC 3881 default
    assert_valid("audit", render_audit_message(message))


def test_whitespace_in_base64_is_ignored() -> None:
    obj = (
        "<ParticipantObjectIdentification><ParticipantObjectIDTypeCode csd-code='ITI-55' "
        "codeSystemName='IHE Transactions' originalText='x'/>"
        "<ParticipantObjectQuery>PHE+\n  PC9xPg==</ParticipantObjectQuery>"
        "</ParticipantObjectIdentification>"
    )
    data = _audit(PARTICIPANT).replace(b"</AuditMessage>", obj.encode() + b"</AuditMessage>")
    (parsed,) = parse_audit_message(parse_xml(data)).participant_objects
    assert parsed.query == b"<q></q>"


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (_audit(PARTICIPANT).replace(b"<EventID", b"<EventIDX"), MissingElement, "EventID"),
        (_audit(PARTICIPANT).replace(b"Indicator='0'", b"Indicator='3'"), InvalidValue, "Outcome"),
        (
            _audit(PARTICIPANT).replace(b"'2024-05-01T10:00:00Z'", b"'today'"),
            InvalidTimestamp,
            "Event",
        ),
        (
            _audit(PARTICIPANT).replace(b" codeSystemName='DCM'", b""),
            MissingElement,
            "codeSystemName",
        ),
        (_audit(PARTICIPANT).replace(b"originalText='Query'", b""), MissingElement, "originalText"),
        (_audit(PARTICIPANT).replace(b"'false'", b"'maybe'"), InvalidValue, "UserIsRequestor"),
        (_audit(PARTICIPANT).replace(b"UserID='u' ", b""), MissingElement, "UserID"),
        (_audit(""), InvalidValue, "ActiveParticipant"),
        (_audit(PARTICIPANT).replace(b" AuditSourceID='s'", b""), MissingElement, "AuditSourceID"),
        (
            _audit(PARTICIPANT).replace(b"<AuditMessage>", b"<AuditMessage xmlns='urn:x'>"),
            WrongNamespace,
            "AuditMessage",
        ),
    ],
)
def test_malformed_audit_messages_are_refused_precisely(
    data: bytes, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        parse_audit_message(parse_xml(data))


@pytest.mark.parametrize(
    ("attributes", "content", "reason"),
    [
        ("ParticipantObjectTypeCodeRole='27'", "", "1-26"),
        ("ParticipantObjectTypeCodeRole='x'", "", "integer"),
        ("ParticipantObjectTypeCode='9'", "", "ParticipantObjectTypeCode"),
        ("", "<ParticipantObjectQuery>***</ParticipantObjectQuery>", "base64"),
        ("", "<ParticipantObjectDetail type='t' value='%%'/>", "base64"),
        (
            "",
            "<ParticipantObjectName>n</ParticipantObjectName>"
            "<ParticipantObjectQuery>AA==</ParticipantObjectQuery>",
            "exclude",
        ),
    ],
)
def test_malformed_participant_objects(attributes: str, content: str, reason: str) -> None:
    obj = (
        f"<ParticipantObjectIdentification {attributes}><ParticipantObjectIDTypeCode "
        f"csd-code='2' codeSystemName='RFC-3881' originalText='Patient Number'/>{content}"
        "</ParticipantObjectIdentification>"
    )
    data = _audit(PARTICIPANT).replace(b"</AuditMessage>", obj.encode() + b"</AuditMessage>")
    with pytest.raises(InvalidValue, match=reason):
        parse_audit_message(parse_xml(data))


def test_constructors_validate() -> None:
    with pytest.raises(InvalidValue, match="originalText"):
        AuditCode("110112", "DCM", " ")
    with pytest.raises(InvalidValue, match="UserID"):
        ActiveParticipant("", True)
    with pytest.raises(InvalidValue, match="NumberOfInstances"):
        SopClass(-1)
