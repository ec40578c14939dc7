"""ATNA audit messages per transaction and role: EventID, action, type code, participants,
participant objects, outcome; each one valid against the DICOM audit schema (dicom2017c.xsd)
and parsed back to the same model."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from imagebridge.model.audit import (
    AuditMessage,
    EventActionCode,
    EventOutcomeIndicator,
    NetworkAccessPointTypeCode,
    ParticipantObjectIdentification,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.import_job import ImportJob, InstanceState, JobRequest, JobState
from imagebridge.model.outcome import RegistryError, RegistryResponse, Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
    XopInclude,
)
from imagebridge.model.wsse import SecurityHeader
from imagebridge.model.xcpd import II, Acknowledgement, AcknowledgementType
from imagebridge.model.xds import Code, DocumentEntry
from imagebridge.model.xds_query import AdhocQueryRequest, AdhocQueryResponse, FindDocumentsQuery
from imagebridge.security.audit_events import (
    ANONYMOUS,
    AuditContext,
    audit_message,
    import_audit_message,
)
from imagebridge.security.event_facts import facts_of
from imagebridge.transactions import Transaction
from imagebridge.transport.events import Role, TransactionEvent
from imagebridge.wire.audit import parse_audit_message, render_audit_message
from imagebridge.wire.hl7v3 import render_patient_discovery_query, render_patient_discovery_response
from imagebridge.wire.wsse import render_security
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import render_adhoc_query_request, render_adhoc_query_response
from imagebridge.wire.xds.retrieve import (
    render_retrieve_document_set_request,
    render_retrieve_document_set_response,
)
from imagebridge.wire.xml import parse_xml, serialize
from tests.conformance_data import assert_valid
from tests.unit.wire.test_patient_discovery import JANE, MINIMAL_QUERY, response
from tests.unit.wire.test_saml import carequality_assertion

US = "1.3.6.1.4.1.21367.13.70.1"
PARTNER = HomeCommunityId("1.3.6.1.4.1.21367.13.70.101")
CONTEXT = AuditContext(
    audit_source_id=US,
    host_name="gw.example.org",
    process_id="4242",
    home_community_id=US,
    enterprise_site_id="Example Hospital",
    base_url="https://gw.example.org/",
)
STARTED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
REPO = "1.3.6.1.4.1.21367.13.71.101"
STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
SERIES = "1.2.826.0.1.3680043.8.498.11"
SOP_1, SOP_2 = "1.2.826.0.1.3680043.8.498.111", "1.2.826.0.1.3680043.8.498.112"
PATIENT = PatientId("P-77", "1.3.6.1.4.1.21367.13.20.1000")
XUA_USER = "jd<UID=jdoe@CN=sts.example.org>"
XUA_PATIENT = "P1^^^&1.2.840.1&ISO"


@pytest.fixture(autouse=True)
def _schemas(schema_dir: Path) -> None:
    """Every test validates against dicom2017c.xsd (skipped without the conformance folder)."""


def security() -> tuple[etree._Element, ...]:
    return (render_security(SecurityHeader(assertion=carequality_assertion())),)


def event(
    transaction: Transaction,
    role: Role,
    request: etree._Element | None,
    reply: etree._Element | None,
    **changes: object,
) -> TransactionEvent:
    initiator = role is Role.INITIATOR
    base = TransactionEvent(
        transaction=transaction,
        role=role,
        started=STARTED,
        elapsed=0.25,
        peer="https://partner.example.org:8443/xcpd" if initiator else "192.0.2.7",
        request=request,
        reply=reply,
        message_id="urn:uuid:1",
        partner=PARTNER if initiator else None,
        endpoint=None if initiator else "/xcpd",
        header_blocks=security(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def audited(e: TransactionEvent) -> AuditMessage:
    """The message of *e*, checked against the schema and the parser."""
    message = audit_message(e, facts_of(e), CONTEXT)
    element = render_audit_message(message)
    assert_valid("audit", element)
    assert parse_audit_message(parse_xml(serialize(element))) == message
    return message


def objects(message: AuditMessage, id_type: str) -> list[ParticipantObjectIdentification]:
    return [o for o in message.participant_objects if o.id_type_code.code == id_type]


def test_iti55_initiator_is_a_query_with_patients_and_the_query() -> None:
    msg = audited(
        event(
            Transaction.ITI_55,
            Role.INITIATOR,
            render_patient_discovery_query(MINIMAL_QUERY),
            render_patient_discovery_response(response()),
        )
    )
    ev = msg.event_identification
    assert (ev.event_id.code, ev.event_id.code_system_name) == ("110112", "DCM")
    assert ev.event_action_code is EventActionCode.EXECUTE
    assert ev.event_outcome_indicator is EventOutcomeIndicator.SUCCESS
    assert [(c.code, c.code_system_name, c.original_text) for c in ev.event_type_codes] == [
        ("ITI-55", "IHE Transactions", "Cross Gateway Patient Discovery")
    ]
    assert ev.event_date_time.text == "2026-03-14T09:26:53.250Z"
    assert [p.code for p in ev.purposes_of_use] == ["TREATMENT"]
    source, human, destination = msg.active_participants
    assert (source.user_id, source.user_is_requestor, source.role_id_codes[0].code) == (
        ANONYMOUS,
        True,
        "110153",
    )
    assert source.alternative_user_id == "4242"
    assert source.network_access_point_id == "gw.example.org"
    assert source.network_access_point_type_code is NetworkAccessPointTypeCode.MACHINE_NAME
    assert (human.user_id, human.user_name, human.role_id_codes[0].code) == (
        XUA_USER,
        "Jane Doe",
        "112247003",
    )
    assert destination.user_id == "https://partner.example.org:8443/xcpd"
    assert destination.network_access_point_id == "partner.example.org"
    assert (destination.user_is_requestor, destination.role_id_codes[0].code) == (False, "110152")
    assert msg.audit_source_identification.audit_source_id == US
    [patient] = objects(msg, "2")
    assert (patient.object_id, patient.type_code_role) == (JANE.patient_id.cx, 1)
    [query] = objects(msg, "ITI-55")
    assert query.type_code_role == 24
    assert query.object_id == "q-0001@2.25.4711"
    assert query.query is not None and b"queryByParameter" in query.query
    assert [(d.type, d.value) for d in query.details] == [("ihe:homeCommunityID", b"1.2.3.928.955")]


def test_iti55_responder_fault_is_a_serious_failure_with_the_code() -> None:
    msg = audited(
        event(
            Transaction.ITI_55,
            Role.RESPONDER,
            render_patient_discovery_query(MINIMAL_QUERY),
            None,
            error="InvalidSecurity",
            detail="assertion expired",
        )
    )
    ev = msg.event_identification
    assert ev.event_outcome_indicator is EventOutcomeIndicator.SERIOUS_FAILURE
    assert ev.event_outcome_description == "InvalidSecurity"
    source, _human, destination = msg.active_participants
    assert source.network_access_point_id == "192.0.2.7"
    assert source.network_access_point_type_code is NetworkAccessPointTypeCode.IP_ADDRESS
    assert source.alternative_user_id is None
    assert destination.user_id == "https://gw.example.org/xcpd"
    assert destination.alternative_user_id == "4242"
    assert objects(msg, "2") == []  # no patient matched, none queried by id
    assert len(objects(msg, "ITI-55")) == 1


def test_xcpd_error_acknowledgement_is_a_failure() -> None:
    reply = response(
        acknowledgement=Acknowledgement(AcknowledgementType.AE, II("2.25.4711", "msg-0001")),
        patients=(),
    )
    msg = audited(
        event(
            Transaction.ITI_55,
            Role.INITIATOR,
            render_patient_discovery_query(MINIMAL_QUERY),
            render_patient_discovery_response(reply),
        )
    )
    assert msg.event_identification.event_outcome_indicator is EventOutcomeIndicator.SERIOUS_FAILURE


def _iti38_request() -> etree._Element:
    query = FindDocumentsQuery(patient_id=PATIENT, status=(v.STATUS_APPROVED,))
    return render_adhoc_query_request(AdhocQueryRequest(query=query, home_community_id=PARTNER))


def test_iti38_responder_partial_success_with_query_and_patient() -> None:
    kos = DocumentEntry(
        entry_uuid="urn:uuid:0b9e5b1e-0a6f-4f39-8a55-2e0b8b2a0001",
        unique_id=STUDY_A + ".9",
        mime_type=v.MIME_DICOM,
        format_code=Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME),
    )
    reply = AdhocQueryResponse(
        status=Status.PARTIAL_SUCCESS,
        registry_objects=(kos,),
        errors=(RegistryError("XDSRegistryBusy", "one source did not answer"),),
    )
    e = event(
        Transaction.ITI_38,
        Role.RESPONDER,
        _iti38_request(),
        render_adhoc_query_response(reply),
        endpoint="/xca/query",
    )
    msg = audited(e)
    ev = msg.event_identification
    assert (ev.event_id.code, ev.event_action_code) == ("110112", EventActionCode.EXECUTE)
    assert ev.event_type_codes[0].code == "ITI-38"
    assert ev.event_outcome_indicator is EventOutcomeIndicator.MINOR_FAILURE
    assert ev.event_outcome_description == "XDSRegistryBusy"
    [patient] = objects(msg, "2")
    assert patient.object_id == PATIENT.cx
    [query] = objects(msg, "ITI-38")
    assert query.object_id == "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    assert query.query is not None and b"AdhocQueryRequest" in query.query
    details = {d.type: d.value for d in query.details}
    assert details == {
        "QueryEncoding": b"UTF-8",
        "urn:ihe:iti:xca:2010:homeCommunityId": PARTNER.urn.encode(),
    }
    facts = facts_of(e)
    assert (facts.documents_returned, facts.studies_returned) == (1, 1)


def _iti39() -> tuple[etree._Element, etree._Element]:
    request = RetrieveDocumentSetRequest(
        (
            DocumentRequest(REPO, STUDY_A + ".9", PARTNER),
            DocumentRequest(REPO, STUDY_B + ".9", PARTNER),
        )
    )
    reply = RetrieveDocumentSetResponse(
        RegistryResponse(
            Status.PARTIAL_SUCCESS, (RegistryError("XDSDocumentUniqueIdError", "gone"),)
        ),
        (
            DocumentResponse(
                REPO, STUDY_A + ".9", v.MIME_DICOM, XopInclude("cid:1@x"), home_community_id=PARTNER
            ),
        ),
    )
    return render_retrieve_document_set_request(request), render_retrieve_document_set_response(
        reply
    )


@pytest.mark.parametrize(
    ("role", "event_id", "action"),
    [
        (Role.INITIATOR, "110107", EventActionCode.CREATE),
        (Role.RESPONDER, "110106", EventActionCode.READ),
    ],
)
def test_iti39_import_or_export_by_role_with_documents(
    role: Role, event_id: str, action: EventActionCode
) -> None:
    request, reply = _iti39()
    msg = audited(event(Transaction.ITI_39, role, request, reply, endpoint="/xca/retrieve"))
    ev = msg.event_identification
    assert (ev.event_id.code, ev.event_action_code) == (event_id, action)
    assert ev.event_type_codes[0].original_text == "Cross Gateway Retrieve"
    source, _human, destination = msg.active_participants
    # documents flow from the responding gateway (Source) to the initiating one (Destination)
    assert (source.role_id_codes[0].code, source.user_is_requestor) == ("110153", False)
    assert (destination.user_id, destination.user_is_requestor) == (ANONYMOUS, True)
    assert destination.role_id_codes[0].code == "110152"
    [document] = objects(msg, "9")  # only the one returned
    assert (document.object_id, document.type_code_role) == (STUDY_A + ".9", 3)
    assert {d.type: d.value for d in document.details} == {
        "Repository Unique Id": REPO.encode(),
        "ihe:homeCommunityID": PARTNER.urn.encode(),
    }
    [patient] = objects(msg, "2")  # from the XUA resource-id
    assert patient.object_id == XUA_PATIENT


def _imaging() -> tuple[etree._Element, etree._Element]:
    request = RetrieveImagingDocumentSetRequest(
        (
            StudyRequest(
                STUDY_A,
                (
                    SeriesRequest(
                        SERIES,
                        (
                            DocumentRequest(REPO, SOP_1, PARTNER),
                            DocumentRequest(REPO, SOP_2, PARTNER),
                        ),
                    ),
                ),
            ),
            StudyRequest(
                STUDY_B,
                (SeriesRequest(SERIES + ".2", (DocumentRequest(REPO, SOP_2 + ".9", PARTNER),)),),
            ),
        ),
        ("1.2.840.10008.1.2.1",),
    )
    reply = RetrieveDocumentSetResponse(
        RegistryResponse(Status.SUCCESS),
        tuple(
            DocumentResponse(REPO, uid, v.MIME_DICOM, XopInclude(f"cid:{n}@x"), PARTNER)
            for n, uid in enumerate((SOP_1, SOP_2))
        ),
    )
    return render_retrieve_imaging_document_set_request(
        request
    ), render_retrieve_document_set_response(reply)


@pytest.mark.parametrize("transaction", [Transaction.RAD_75, Transaction.RAD_69])
@pytest.mark.parametrize(
    ("role", "event_id"), [(Role.INITIATOR, "110107"), (Role.RESPONDER, "110106")]
)
def test_imaging_retrieve_lists_documents_and_studies(
    transaction: Transaction, role: Role, event_id: str
) -> None:
    request, reply = _imaging()
    e = event(transaction, role, request, reply, endpoint="/xcai/retrieve")
    msg = audited(e)
    ev = msg.event_identification
    assert ev.event_id.code == event_id
    assert ev.event_type_codes[0].code == transaction.value
    assert [o.object_id for o in objects(msg, "9")] == [SOP_1, SOP_2]
    studies = objects(msg, "110180")
    assert [o.object_id for o in studies] == [STUDY_A, STUDY_B]
    assert {o.id_type_code.code_system_name for o in studies} == {"DCM"}
    facts = facts_of(e)
    assert (facts.documents_returned, facts.studies_returned) == (2, 1)


def test_undecodable_payload_is_still_audited() -> None:
    garbage = etree.Element("{urn:example}Nonsense")
    msg = audited(event(Transaction.RAD_75, Role.RESPONDER, garbage, None, error="Receiver"))
    assert msg.event_identification.event_outcome_indicator is EventOutcomeIndicator.SERIOUS_FAILURE
    assert objects(msg, "9") == []
    assert [o.object_id for o in objects(msg, "2")] == [XUA_PATIENT]


def test_without_a_saml_assertion_there_is_no_human_requestor() -> None:
    request, reply = _iti39()
    msg = audited(event(Transaction.ITI_39, Role.RESPONDER, request, reply, header_blocks=()))
    assert len(msg.active_participants) == 2
    assert msg.event_identification.purposes_of_use == ()


def _job(state: JobState, counts: dict[InstanceState, int]) -> ImportJob:
    request = JobRequest(
        source_community=PARTNER,
        source_community_name="Partner",
        imaging_community=PARTNER,
        foreign_patient=PATIENT,
        study_instance_uid=STUDY_A,
        kos_document_id=STUDY_A + ".9",
        kos_repository_id=REPO,
        target_name="local-pacs",
        target_kind="stow",
        local_patient_id="MRN-1",
        local_patient_issuer="HOSP",
    )
    return ImportJob(
        id=7,
        state=state,
        created_at=STARTED,
        updated_at=STARTED,
        request=request,
        verification=None,
        last_error=None,
        hold_reason=None,
        attempts=1,
        lease_owner=None,
        lease_expires_at=None,
        heartbeat_at=None,
        finished_at=STARTED,
        counts=counts,
    )


def test_import_into_the_pacs_is_dicom_instances_transferred() -> None:
    job = _job(JobState.COMPLETED_WITH_ERRORS, {InstanceState.STORED: 3, InstanceState.FAILED: 1})
    message = import_audit_message(job, CONTEXT, when=STARTED, target_host="pacs.local")
    element = render_audit_message(message)
    assert_valid("audit", element)
    ev = message.event_identification
    assert (ev.event_id.code, ev.event_id.original_text) == (
        "110104",
        "DICOM Instances Transferred",
    )
    assert ev.event_action_code is EventActionCode.CREATE
    assert ev.event_outcome_indicator is EventOutcomeIndicator.MINOR_FAILURE
    assert ev.event_outcome_description == "1 of 4 instances not imported"
    source, destination = message.active_participants
    assert (source.user_id, source.user_is_requestor, source.alternative_user_id) == (
        "imagebridge",
        True,
        "4242",
    )
    assert (destination.user_id, destination.network_access_point_id) == (
        "local-pacs",
        "pacs.local",
    )
    assert [o.object_id for o in objects(message, "110180")] == [STUDY_A]
    assert [o.object_id for o in objects(message, "2")] == [PATIENT.cx, "MRN-1^^^HOSP"]


def test_import_with_everything_already_present_is_a_read() -> None:
    job = _job(JobState.COMPLETED, {InstanceState.ALREADY_PRESENT: 4})
    message = import_audit_message(job, CONTEXT, when=STARTED)
    assert message.event_identification.event_action_code is EventActionCode.READ
    assert message.event_identification.event_outcome_indicator is EventOutcomeIndicator.SUCCESS
    assert_valid("audit", render_audit_message(message))


def test_query_is_carried_base64_in_the_rendered_xml() -> None:
    msg = audited(
        event(
            Transaction.ITI_55, Role.INITIATOR, render_patient_discovery_query(MINIMAL_QUERY), None
        )
    )
    text = etree.tostring(render_audit_message(msg))
    [query] = objects(msg, "ITI-55")
    assert query.query is not None
    assert base64.b64encode(query.query) in text
