"""Audit Trail and Node Authentication [ITI-20], Secure Node: one DICOM PS3.15 audit message
per transaction, on both sides, and for each import into the local PACS.

Pure: :func:`audit_message` maps a finished
:class:`~imagebridge.transport.events.TransactionEvent` and its decoded
:class:`~imagebridge.security.event_facts.EventFacts` to an
:class:`~imagebridge.model.audit.AuditMessage`; :func:`import_audit_message`
does the same for an import job's run.  The host name, process id and audit
source are passed in (:class:`AuditContext`).

Codes (DICOM PS3.16 CID 400/402/404, RFC 3881, IHE ITI TF-2 3.55.5 / 3.38.5 /
3.39.5, RAD TF-3 4.69 / 4.75 security considerations):

========================  =========================  ======  ================================
transaction / role        EventID                    Action  participant objects
========================  =========================  ======  ================================
ITI-55, ITI-38 both       110112 DCM "Query"         E       patients, query (base64 request)
ITI-39, RAD-69, RAD-75    110107 DCM "Import"        C       patient (XUA resource-id),
  initiator                                                  documents (RFC-3881 9 "Report
ITI-39, RAD-69, RAD-75    110106 DCM "Export"        R       Number" + repository and home
  responder                                                  details), studies (110180 DCM)
import into the PACS      110104 DCM "DICOM          C / R   study (110180), patients
                          Instances Transferred"
========================  =========================  ======  ================================

EventTypeCode: the transaction, ``EV("ITI-55", "IHE Transactions", "Cross
Gateway Patient Discovery")`` and so on.  Active participants follow the data:
for queries the initiating gateway is the Source (110153) and requestor, the
responding gateway the Destination (110152); for retrieves the responding
gateway is the Source and the initiating gateway (the requestor) the
Destination.  The human requestor is the XUA subject (``alias<user@issuer>``)
with the XUA role; the purpose of use goes to EventIdentification.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from imagebridge.model.audit import (
    ActiveParticipant,
    AuditCode,
    AuditMessage,
    AuditSourceIdentification,
    AuditSourceTypeCode,
    EventActionCode,
    EventIdentification,
    EventOutcomeIndicator,
    NetworkAccessPointTypeCode,
    ParticipantObjectDetail,
    ParticipantObjectIdentification,
    ParticipantObjectTypeCode,
)
from imagebridge.model.import_job import ImportJob, InstanceState, JobState
from imagebridge.model.instant import Instant
from imagebridge.security.event_facts import DocumentRef, EventFacts, Outcome, Requestor
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.events import Role, TransactionEvent

# --- vocabulary ------------------------------------------------------------------------

EV_QUERY: Final = AuditCode("110112", "DCM", "Query")
EV_EXPORT: Final = AuditCode("110106", "DCM", "Export")
EV_IMPORT: Final = AuditCode("110107", "DCM", "Import")
EV_INSTANCES_TRANSFERRED: Final = AuditCode("110104", "DCM", "DICOM Instances Transferred")
ROLE_SOURCE: Final = AuditCode("110153", "DCM", "Source Role ID")
ROLE_DESTINATION: Final = AuditCode("110152", "DCM", "Destination Role ID")
ID_PATIENT_NUMBER: Final = AuditCode("2", "RFC-3881", "Patient Number")
ID_REPORT_NUMBER: Final = AuditCode("9", "RFC-3881", "Report Number")
ID_STUDY_INSTANCE_UID: Final = AuditCode("110180", "DCM", "Study Instance UID")
SOURCE_APPLICATION_SERVER: Final = AuditSourceTypeCode(
    "4", "DCM", "Application Server Process or Thread"
)
IHE_TRANSACTIONS: Final = "IHE Transactions"
ANONYMOUS: Final = "http://www.w3.org/2005/08/addressing/anonymous"
"""wsa:ReplyTo of a synchronous exchange: the initiating gateway's UserID."""

DETAIL_HOME: Final = "ihe:homeCommunityID"
DETAIL_XCA_HOME: Final = "urn:ihe:iti:xca:2010:homeCommunityId"
DETAIL_REPOSITORY: Final = "Repository Unique Id"
DETAIL_QUERY_ENCODING: Final = "QueryEncoding"

# ParticipantObjectTypeCodeRole (RFC 3881): 1 patient, 3 report, 24 query.
ROLE_PATIENT: Final = 1
ROLE_REPORT: Final = 3
ROLE_QUERY: Final = 24

_QUERIES: Final = frozenset({Transaction.ITI_55, Transaction.ITI_38, Transaction.ITI_18})
_IMAGING: Final = frozenset({Transaction.RAD_69, Transaction.RAD_75})
_OUTCOMES: Final = {
    Outcome.SUCCESS: EventOutcomeIndicator.SUCCESS,
    Outcome.PARTIAL: EventOutcomeIndicator.MINOR_FAILURE,
    Outcome.FAILURE: EventOutcomeIndicator.SERIOUS_FAILURE,
    Outcome.ERROR: EventOutcomeIndicator.SERIOUS_FAILURE,
}


def transaction_code(transaction: Transaction) -> AuditCode:
    """EventTypeCode of *transaction*: ``EV("RAD-75", "IHE Transactions", <name>)``."""
    return AuditCode(transaction.value, IHE_TRANSACTIONS, spec_of(transaction).name)


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who we are in every message: audit source, our host, our process, our base URL."""

    audit_source_id: str
    host_name: str
    process_id: str
    home_community_id: str
    """Our community (bare OID)."""
    enterprise_site_id: str | None = None
    base_url: str | None = None
    """Our gateway's public base URL: a responder's UserID is ``base_url + endpoint``."""
    application: str = "imagebridge"

    @property
    def source(self) -> AuditSourceIdentification:
        return AuditSourceIdentification(
            audit_source_id=self.audit_source_id,
            audit_enterprise_site_id=self.enterprise_site_id,
            type_codes=(SOURCE_APPLICATION_SERVER,),
        )


def _access_point(host: str | None) -> tuple[str | None, NetworkAccessPointTypeCode | None]:
    if not host:
        return None, None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, NetworkAccessPointTypeCode.MACHINE_NAME
    return host, NetworkAccessPointTypeCode.IP_ADDRESS


def _participant(
    user_id: str,
    requestor: bool,
    role: AuditCode,
    host: str | None,
    alternative: str | None = None,
) -> ActiveParticipant:
    nap, nap_type = _access_point(host)
    return ActiveParticipant(
        user_id=user_id,
        user_is_requestor=requestor,
        alternative_user_id=alternative,
        network_access_point_id=nap,
        network_access_point_type_code=nap_type,
        role_id_codes=(role,),
    )


def _human(requestor: Requestor) -> ActiveParticipant:
    role = requestor.role
    return ActiveParticipant(
        user_id=requestor.user_id,
        user_is_requestor=True,
        user_name=requestor.user_name,
        role_id_codes=(AuditCode(*role),) if role is not None else (),
    )


def _participants(event: TransactionEvent, context: AuditContext) -> list[ActiveParticipant]:
    """Initiating gateway and responding gateway, in data-flow roles."""
    pid = context.process_id
    if event.role is Role.INITIATOR:
        initiator_host: str | None = context.host_name
        initiator_alt: str | None = pid
        responder_id = event.peer
        responder_host, responder_alt = urlsplit(event.peer).hostname, None
    else:
        initiator_host, initiator_alt = event.peer or None, None
        responder_id = (context.base_url or "").rstrip("/") + (event.endpoint or "")
        responder_host, responder_alt = context.host_name, pid
    responder_id = responder_id or context.application
    if event.transaction in _QUERIES:
        return [
            _participant(ANONYMOUS, True, ROLE_SOURCE, initiator_host, initiator_alt),
            _participant(responder_id, False, ROLE_DESTINATION, responder_host, responder_alt),
        ]
    return [
        _participant(responder_id, False, ROLE_SOURCE, responder_host, responder_alt),
        _participant(ANONYMOUS, True, ROLE_DESTINATION, initiator_host, initiator_alt),
    ]


def _patient(cx: str) -> ParticipantObjectIdentification:
    return ParticipantObjectIdentification(
        id_type_code=ID_PATIENT_NUMBER,
        object_id=cx,
        type_code=ParticipantObjectTypeCode.PERSON,
        type_code_role=ROLE_PATIENT,
    )


def _query(
    event: TransactionEvent, facts: EventFacts, context: AuditContext
) -> ParticipantObjectIdentification:
    home = facts.query_home
    if event.transaction is Transaction.ITI_55:
        if home is None and event.role is Role.INITIATOR:
            home = context.home_community_id
        if home is None and facts.requestor is not None:
            home = facts.requestor.home_community_id
        details = (
            [ParticipantObjectDetail(DETAIL_HOME, home.removeprefix("urn:oid:").encode())]
            if home
            else []
        )
    else:
        details = [ParticipantObjectDetail(DETAIL_QUERY_ENCODING, b"UTF-8")]
        if home:
            details.append(ParticipantObjectDetail(DETAIL_XCA_HOME, home.encode()))
    return ParticipantObjectIdentification(
        id_type_code=transaction_code(event.transaction),
        object_id=facts.query_id,
        type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
        type_code_role=ROLE_QUERY,
        query=facts.query if facts.query is not None else b"",
        details=tuple(details),
    )


def _document(doc: DocumentRef) -> ParticipantObjectIdentification:
    details: list[ParticipantObjectDetail] = []
    if doc.repository_unique_id:
        repository = doc.repository_unique_id.encode()
        details.append(ParticipantObjectDetail(DETAIL_REPOSITORY, repository))
    if doc.home_community_id:
        details.append(ParticipantObjectDetail(DETAIL_HOME, doc.home_community_id.encode()))
    return ParticipantObjectIdentification(
        id_type_code=ID_REPORT_NUMBER,
        object_id=doc.document_unique_id,
        type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
        type_code_role=ROLE_REPORT,
        details=tuple(details),
    )


def _study(uid: str) -> ParticipantObjectIdentification:
    return ParticipantObjectIdentification(
        id_type_code=ID_STUDY_INSTANCE_UID,
        object_id=uid,
        type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
        type_code_role=ROLE_REPORT,
    )


def _description(event: TransactionEvent, facts: EventFacts) -> str | None:
    codes = [event.error] if event.error else []
    codes.extend(facts.errors)
    if not codes:
        return None
    return ", ".join(dict.fromkeys(c for c in codes if c))[:500]


def event_action(transaction: Transaction, role: Role) -> tuple[AuditCode, EventActionCode]:
    """EventID and EventActionCode of *transaction* audited by *role*."""
    if transaction in _QUERIES:
        return EV_QUERY, EventActionCode.EXECUTE
    if role is Role.INITIATOR:
        return EV_IMPORT, EventActionCode.CREATE
    return EV_EXPORT, EventActionCode.READ


def audit_message(
    event: TransactionEvent, facts: EventFacts, context: AuditContext
) -> AuditMessage:
    """The ATNA audit message of one finished transaction (see the module table)."""
    event_id, action = event_action(event.transaction, event.role)
    requestor = facts.requestor
    participants = _participants(event, context)
    if requestor is not None:
        participants.insert(1, _human(requestor))
    objects = [_patient(cx) for cx in facts.patient_ids]
    if event.transaction in _QUERIES:
        objects.append(_query(event, facts, context))
    else:
        objects.extend(_document(d) for d in facts.documents)
        if event.transaction in _IMAGING:
            objects.extend(_study(uid) for uid in facts.studies)
    purpose = requestor.purpose_of_use if requestor is not None else None
    return AuditMessage(
        event_identification=EventIdentification(
            event_id=event_id,
            event_date_time=Instant.at(event.started + timedelta(seconds=event.elapsed)),
            event_outcome_indicator=_OUTCOMES[facts.outcome],
            event_action_code=action,
            event_type_codes=(transaction_code(event.transaction),),
            event_outcome_description=_description(event, facts),
            purposes_of_use=(AuditCode(*purpose),) if purpose is not None else (),
        ),
        active_participants=tuple(participants),
        audit_source_identification=context.source,
        participant_objects=tuple(objects),
    )


# --- import into the local PACS ------------------------------------------------------------

_JOB_OUTCOMES: Final = {
    JobState.COMPLETED: EventOutcomeIndicator.SUCCESS,
    JobState.COMPLETED_WITH_ERRORS: EventOutcomeIndicator.MINOR_FAILURE,
    JobState.HELD: EventOutcomeIndicator.MINOR_FAILURE,
    JobState.CANCELLED: EventOutcomeIndicator.MINOR_FAILURE,
    JobState.FAILED: EventOutcomeIndicator.SERIOUS_FAILURE,
}


def import_audit_message(
    job: ImportJob,
    context: AuditContext,
    *,
    when: datetime,
    target_host: str | None = None,
) -> AuditMessage:
    """DICOM Instances Transferred (110104) for one run of an import job into the local PACS.

    Action C (the target did not hold the instances) when anything was
    stored, R otherwise (everything was already present or nothing moved).
    Participants: imagebridge as Source and requestor, the import target as
    Destination; the study (110180) and the patient, foreign (CX) and local.
    """
    request = job.request
    stored = job.counts.get(InstanceState.STORED, 0)
    outcome = _JOB_OUTCOMES.get(job.state, EventOutcomeIndicator.MINOR_FAILURE)
    description = job.hold_reason or job.last_error
    if description is None and job.errors:
        description = f"{job.errors} of {job.total} instances not imported"
    patients = [_patient(request.foreign_patient.cx)]
    if request.local_patient_id:
        issuer = request.local_patient_issuer
        local = f"{request.local_patient_id}^^^{issuer}" if issuer else request.local_patient_id
        patients.append(_patient(local))
    return AuditMessage(
        event_identification=EventIdentification(
            event_id=EV_INSTANCES_TRANSFERRED,
            event_date_time=Instant.at(when),
            event_outcome_indicator=outcome,
            event_action_code=EventActionCode.CREATE if stored else EventActionCode.READ,
            event_outcome_description=description[:500] if description else None,
        ),
        active_participants=(
            _participant(
                context.application, True, ROLE_SOURCE, context.host_name, context.process_id
            ),
            _participant(request.target_name, False, ROLE_DESTINATION, target_host),
        ),
        audit_source_identification=context.source,
        participant_objects=(_study(request.study_instance_uid), *patients),
    )
