"""Cross Gateway Patient Discovery [ITI-55], PRPA_IN201305UV02 / PRPA_IN201306UV02 codec.

Pure functions between the payload element (the SOAP Body child) and
:mod:`imagebridge.model.xcpd`.  Message ids and creation times are fields of
the models; nothing here reads a clock or draws random numbers.

Errors: :func:`parse_patient_discovery_query` raises only subclasses of
:class:`PatientDiscoveryQueryError` for bad input; each carries the HL7 codes
of the in-band AE answer that the Responding Gateway sends when
:func:`parse_patient_discovery_query_header` can still read the request's id
and sender (otherwise the transport answers with a SOAP ``Sender`` fault).
:func:`parse_patient_discovery_response` raises the plain payload errors.

Lenient on input (see also :mod:`.datatypes` and :mod:`.query_by_parameter`):
unqualified HL7 elements (Metriport's ``receiver``/``sender``), any
``typeCode``/``classCode`` on the wrapper, ``queryMatchObservation`` of any
class (OBS, COND, ALRT seen), ``telecom``/``asOtherIDs`` in any order, empty
``<id/>``/``<telecom/>``/``<reasonOf/>`` read as absent, ``asOtherIDs`` without
``scopingOrganization`` scoped by its id's root, extra ``patient/id`` values
kept as other ids.  A homeCommunityId that is not an OID (for example with a
stray ``}``) is refused with :class:`InvalidOid`: it routes later requests, so
it is never guessed; nor is one (a placeholder such as ``987654321``) that could
not be written back as an HL7 II root.  Strict on output: every rendering is
valid against the NE2008 schemas.
"""

from __future__ import annotations

from imagebridge.errors import (
    InvalidHl7Timestamp,
    InvalidOid,
    InvalidValue,
    MissingElement,
    PatientDiscoveryInvalidOid,
    PatientDiscoveryInvalidTimestamp,
    PatientDiscoveryInvalidValue,
    PatientDiscoveryMissingElement,
    PatientDiscoveryQueryError,
    PatientDiscoveryUnexpectedElement,
    PatientDiscoveryWrongNamespace,
    PayloadError,
    UnexpectedElement,
    WrongNamespace,
)
from imagebridge.model.xcpd import (
    HEALTH_DATA_LOCATOR_SYSTEM,
    HL7_INTERACTION_ID_ROOT,
    II,
    QUERY_MATCH_OBSERVATION_CODE,
    Acknowledgement,
    AcknowledgementDetail,
    AcknowledgementType,
    DetectedIssueEvent,
    Device,
    HealthDataLocator,
    MatchedPatient,
    OtherId,
    PatientDiscoveryQuery,
    PatientDiscoveryQueryHeader,
    PatientDiscoveryResponse,
    ProviderOrganization,
    QueryAck,
    QueryResponseCode,
    code_of,
)
from imagebridge.wire import ns
from imagebridge.wire.hl7v3.datatypes import (
    attr,
    hl7_child,
    hl7_children,
    iis,
    new_root,
    parse_ad,
    parse_code,
    parse_gender,
    parse_ii,
    parse_int,
    parse_pn,
    parse_tel,
    parse_ts,
    render_ad,
    render_code,
    render_ii,
    render_int,
    render_pn,
    render_tel,
    render_text,
    require_hl7_child,
    require_ii,
    sub,
    text,
)
from imagebridge.wire.hl7v3.query_by_parameter import (
    parse_query_by_parameter,
    render_query_by_parameter,
)
from imagebridge.wire.hl7v3.transmission import (
    parse_device,
    parse_home_community_id,
    render_device,
    require_code,
    require_single,
)
from imagebridge.wire.xml import Element, expect

QUERY = "PRPA_IN201305UV02"
RESPONSE = "PRPA_IN201306UV02"

# Generic payload errors -> the ITI-55 query error of the same kind (most specific first).
_QUERY_ERRORS: tuple[tuple[type[PayloadError], type[PatientDiscoveryQueryError]], ...] = (
    (InvalidHl7Timestamp, PatientDiscoveryInvalidTimestamp),
    (InvalidOid, PatientDiscoveryInvalidOid),
    (InvalidValue, PatientDiscoveryInvalidValue),
    (MissingElement, PatientDiscoveryMissingElement),
    (WrongNamespace, PatientDiscoveryWrongNamespace),
    (UnexpectedElement, PatientDiscoveryUnexpectedElement),
)


# --- query ----------------------------------------------------------------------------


def parse_patient_discovery_query_header(el: Element) -> PatientDiscoveryQueryHeader:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: what an AE answer needs.

    Reads only the request id, the sender device (its homeCommunityId is
    dropped if unreadable) and the queryId (None if unreadable).  Raises the
    plain payload errors when even that fails: then the answer is a SOAP fault.
    """
    expect(el, ns.HL7, QUERY)
    message_id = require_ii(el)
    sender = require_hl7_child(el, "sender")
    try:
        device = parse_device(sender, "sender")
    except PayloadError:
        device = Device(require_ii(require_hl7_child(sender, "device")))
    query_id: II | None
    try:
        cap = require_hl7_child(el, "controlActProcess")
        query_id = require_ii(require_hl7_child(cap, "queryByParameter"), "queryId")
    except PayloadError:
        query_id = None
    return PatientDiscoveryQueryHeader(message_id, device, query_id)


def parse_patient_discovery_query(el: Element) -> PatientDiscoveryQuery:
    """Cross Gateway Patient Discovery [ITI-55], decode a PRPA_IN201305UV02.

    Bad input raises a :class:`PatientDiscoveryQueryError` subclass (also an
    instance of the matching generic error, e.g. ``MissingElement``).
    """
    try:
        return _parse_query(el)
    except PatientDiscoveryQueryError:
        raise
    except PayloadError as exc:
        for generic, specific in _QUERY_ERRORS:
            if isinstance(exc, generic):
                raise specific(exc.message) from exc
        raise PatientDiscoveryQueryError(exc.message) from exc


def _parse_query(el: Element) -> PatientDiscoveryQuery:
    expect(el, ns.HL7, QUERY)
    cap = require_hl7_child(el, "controlActProcess")
    author = hl7_child(hl7_child(cap, "authorOrPerformer"), "assignedDevice")
    authority = parse_ii(hl7_child(author, "id"))
    respond_to = hl7_child(hl7_child(el, "respondTo"), "telecom")
    creation_time = parse_ts(require_hl7_child(el, "creationTime"), "creationTime")
    if creation_time is None:
        raise MissingElement("creationTime/@value is missing")
    return PatientDiscoveryQuery(
        message_id=require_ii(el),
        creation_time=creation_time,
        sender=parse_device(require_single(el, "sender"), "sender"),
        receiver=parse_device(require_single(el, "receiver"), "receiver"),
        query_by_parameter=parse_query_by_parameter(require_hl7_child(cap, "queryByParameter")),
        patient_id_assigning_authority=authority.root if authority else None,
        processing_code=require_code(el, "processingCode"),
        processing_mode_code=require_code(el, "processingModeCode"),
        accept_ack_code=require_code(el, "acceptAckCode"),
        respond_to=attr(respond_to, "value"),
    )


def render_patient_discovery_query(query: PatientDiscoveryQuery) -> Element:
    """Cross Gateway Patient Discovery [ITI-55], Initiating Gateway: encode the request."""
    root = new_root(QUERY)
    render_ii(root, "id", query.message_id)
    sub(root, "creationTime", value=query.creation_time)
    sub(root, "interactionId", root=HL7_INTERACTION_ID_ROOT, extension=QUERY)
    sub(root, "processingCode", code=query.processing_code)
    sub(root, "processingModeCode", code=query.processing_mode_code)
    sub(root, "acceptAckCode", code=query.accept_ack_code)
    render_device(root, "receiver", "RCV", query.receiver)
    if query.respond_to is not None:
        respond_to = sub(root, "respondTo", typeCode="RSP")
        sub(respond_to, "telecom", value=query.respond_to)
        entity = sub(respond_to, "entityRsp", classCode="ENT", determinerCode="INSTANCE")
        entity.set(ns.q(ns.XSI, "nil"), "true")
    render_device(root, "sender", "SND", query.sender)
    cap = sub(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(cap, "code", code="PRPA_TE201305UV02", codeSystem=HL7_INTERACTION_ID_ROOT)
    if query.patient_id_assigning_authority is not None:
        author = sub(cap, "authorOrPerformer", typeCode="AUT")
        device = sub(author, "assignedDevice", classCode="ASSIGNED")
        sub(device, "id", root=query.patient_id_assigning_authority)
    render_query_by_parameter(cap, query.query_by_parameter)
    return root


# --- response -------------------------------------------------------------------------


def parse_patient_discovery_response(el: Element) -> PatientDiscoveryResponse:
    """Cross Gateway Patient Discovery [ITI-55], Initiating Gateway: decode a PRPA_IN201306UV02."""
    expect(el, ns.HL7, RESPONSE)
    cap = require_hl7_child(el, "controlActProcess")
    query_ack = require_hl7_child(cap, "queryAck")
    qbp = hl7_child(cap, "queryByParameter")
    creation_time = parse_ts(require_hl7_child(el, "creationTime"), "creationTime")
    if creation_time is None:
        raise MissingElement("creationTime/@value is missing")
    return PatientDiscoveryResponse(
        message_id=require_ii(el),
        creation_time=creation_time,
        sender=parse_device(require_single(el, "sender"), "sender"),
        receiver=parse_device(require_single(el, "receiver"), "receiver"),
        acknowledgement=_parse_acknowledgement(require_single(el, "acknowledgement")),
        query_ack=QueryAck(
            query_response_code=code_of(
                QueryResponseCode, require_code(query_ack, "queryResponseCode"), "queryResponseCode"
            ),
            query_id=parse_ii(hl7_child(query_ack, "queryId")),
            status_code=attr(hl7_child(query_ack, "statusCode"), "code"),
        ),
        patients=tuple(
            _parse_registration_event(require_hl7_child(s, "registrationEvent"))
            for s in hl7_children(cap, "subject")
        ),
        detected_issues=tuple(
            _parse_detected_issue(d)
            for r in hl7_children(cap, "reasonOf")
            for d in hl7_children(r, "detectedIssueEvent")
        ),
        query_by_parameter=parse_query_by_parameter(qbp) if qbp is not None else None,
        processing_code=require_code(el, "processingCode"),
    )


def _parse_acknowledgement(ack: Element) -> Acknowledgement:
    target = require_hl7_child(ack, "targetMessage")
    details = tuple(
        AcknowledgementDetail(
            type_code=attr(d, "typeCode"),
            code=parse_code(hl7_child(d, "code")),
            text=text(hl7_child(d, "text")),
        )
        for d in hl7_children(ack, "acknowledgementDetail")
    )
    type_code = code_of(
        AcknowledgementType, require_code(ack, "typeCode"), "acknowledgement typeCode"
    )
    return Acknowledgement(type_code, require_ii(target), details)


def _parse_registration_event(event: Element) -> MatchedPatient:
    patient = require_hl7_child(require_hl7_child(event, "subject1"), "patient")
    if hl7_child(patient, "patientNonPersonLivingSubject") is not None:
        raise UnexpectedElement("patientNonPersonLivingSubject: an XCPD match must be a person")
    person = require_hl7_child(patient, "patientPerson")
    ids = iis(patient, "id")
    if not ids:
        raise MissingElement("registrationEvent/subject1/patient has no id with a root")
    other_ids = [OtherId(ii, ii.root) for ii in ids[1:]]
    for other in hl7_children(person, "asOtherIDs"):
        scoping = parse_ii(hl7_child(hl7_child(other, "scopingOrganization"), "id"))
        class_code = attr(other, "classCode") or "PAT"
        for ii in iis(other, "id"):
            other_ids.append(OtherId(ii, scoping.root if scoping else ii.root, class_code))
    entity = require_hl7_child(require_hl7_child(event, "custodian"), "assignedEntity")
    hdl = attr(hl7_child(entity, "code"), "code")
    observation = hl7_child(hl7_child(patient, "subjectOf1"), "queryMatchObservation")
    return MatchedPatient(
        patient_id=ids[0].patient_id,
        home_community_id=parse_home_community_id(hl7_child(entity, "id"), "custodian"),
        health_data_locator=code_of(HealthDataLocator, hdl, "Health Data Locator code")
        if hdl
        else None,
        names=tuple(n for n in (parse_pn(c) for c in hl7_children(person, "name")) if n),
        administrative_gender=parse_gender(hl7_child(person, "administrativeGenderCode")),
        birth_time=parse_ts(hl7_child(person, "birthTime"), "birthTime"),
        addresses=tuple(a for a in (parse_ad(c) for c in hl7_children(person, "addr")) if a),
        telecoms=tuple(t for t in (parse_tel(c) for c in hl7_children(person, "telecom")) if t),
        other_ids=tuple(other_ids),
        provider_organization=_parse_provider(hl7_child(patient, "providerOrganization")),
        match_degree=parse_int(hl7_child(observation, "value"), "queryMatchObservation value"),
    )


def _parse_provider(org: Element | None) -> ProviderOrganization | None:
    ids = iis(org, "id") if org is not None else ()
    if org is None or not ids:
        return None
    telecoms = tuple(
        t
        for party in hl7_children(org, "contactParty")
        for t in (parse_tel(c) for c in hl7_children(party, "telecom"))
        if t
    )
    return ProviderOrganization(ids[0], text(hl7_child(org, "name")), telecoms)


def _parse_detected_issue(event: Element) -> DetectedIssueEvent:
    code = parse_code(require_hl7_child(event, "code"))
    if code is None:
        raise MissingElement("detectedIssueEvent/code/@code is missing")
    triggers = (
        parse_code(hl7_child(hl7_child(t, "actOrderRequired"), "code"))
        for t in hl7_children(event, "triggerFor")
    )
    mitigations = (
        parse_code(hl7_child(hl7_child(m, "detectedIssueManagement"), "code"))
        for m in hl7_children(event, "mitigatedBy")
    )
    return DetectedIssueEvent(
        action_required=tuple(c for c in triggers if c),
        issue_management=tuple(c for c in mitigations if c),
        code=code,
        text=text(hl7_child(event, "text")),
    )


def render_patient_discovery_response(response: PatientDiscoveryResponse) -> Element:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: encode the response."""
    root = new_root(RESPONSE)
    render_ii(root, "id", response.message_id)
    sub(root, "creationTime", value=response.creation_time)
    sub(root, "interactionId", root=HL7_INTERACTION_ID_ROOT, extension=RESPONSE)
    sub(root, "processingCode", code=response.processing_code)
    sub(root, "processingModeCode", code="T")
    sub(root, "acceptAckCode", code="NE")
    render_device(root, "receiver", "RCV", response.receiver)
    render_device(root, "sender", "SND", response.sender)
    ack = sub(root, "acknowledgement")
    sub(ack, "typeCode", code=response.acknowledgement.type_code)
    render_ii(sub(ack, "targetMessage"), "id", response.acknowledgement.target_message_id)
    for detail in response.acknowledgement.details:
        d = sub(ack, "acknowledgementDetail", typeCode=detail.type_code)
        if detail.code is not None:
            render_code(d, "code", detail.code)
        if detail.text is not None:
            render_text(d, "text", detail.text)
    cap = sub(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(cap, "code", code="PRPA_TE201306UV02", codeSystem=HL7_INTERACTION_ID_ROOT)
    for patient in response.patients:
        _render_registration_event(sub(cap, "subject", typeCode="SUBJ"), patient)
    for issue in response.detected_issues:
        _render_detected_issue(sub(cap, "reasonOf", typeCode="RSON"), issue)
    qa = sub(cap, "queryAck")
    if response.query_ack.query_id is not None:
        render_ii(qa, "queryId", response.query_ack.query_id)
    if response.query_ack.status_code is not None:
        sub(qa, "statusCode", code=response.query_ack.status_code)
    sub(qa, "queryResponseCode", code=response.query_ack.query_response_code)
    if response.query_by_parameter is not None:
        render_query_by_parameter(cap, response.query_by_parameter)
    return root


def _render_registration_event(subject: Element, p: MatchedPatient) -> None:
    event = sub(subject, "registrationEvent", classCode="REG", moodCode="EVN")
    sub(event, "id", nullFlavor="NA")
    sub(event, "statusCode", code="active")
    patient = sub(sub(event, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
    render_ii(patient, "id", p.patient_ii)
    sub(patient, "statusCode", code="active")
    person = sub(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    for name in p.names:
        render_pn(person, "name", name)
    if not p.names:
        sub(person, "name", nullFlavor="NA")
    for telecom in p.telecoms:
        render_tel(person, "telecom", telecom)
    if p.administrative_gender is not None:
        sub(person, "administrativeGenderCode", code=p.administrative_gender)
    if p.birth_time is not None:
        sub(person, "birthTime", value=p.birth_time)
    for address in p.addresses:
        render_ad(person, "addr", address)
    for other in p.other_ids:
        other_el = sub(person, "asOtherIDs", classCode=other.class_code)
        render_ii(other_el, "id", other.id)
        scoping = sub(other_el, "scopingOrganization", classCode="ORG", determinerCode="INSTANCE")
        sub(scoping, "id", root=other.scoping_organization)
    if p.provider_organization is not None:
        org = sub(patient, "providerOrganization", classCode="ORG", determinerCode="INSTANCE")
        render_ii(org, "id", p.provider_organization.id)
        if p.provider_organization.name is not None:
            render_text(org, "name", p.provider_organization.name)
        party = sub(org, "contactParty", classCode="CON")  # the schema requires one
        for telecom in p.provider_organization.contact_telecoms:
            render_tel(party, "telecom", telecom)
    observation = sub(
        sub(patient, "subjectOf1", typeCode="SBJ"),
        "queryMatchObservation",
        classCode="COND",
        moodCode="EVN",
    )
    sub(observation, "code", code=QUERY_MATCH_OBSERVATION_CODE)
    render_int(observation, "value", p.match_degree)
    entity = sub(sub(event, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED")
    if p.home_community_id is not None:
        sub(entity, "id", root=p.home_community_id.oid)
    else:
        sub(entity, "id", nullFlavor="UNK")
    if p.health_data_locator is not None:
        sub(entity, "code", code=p.health_data_locator, codeSystem=HEALTH_DATA_LOCATOR_SYSTEM)


def _render_detected_issue(reason: Element, issue: DetectedIssueEvent) -> None:
    event = sub(reason, "detectedIssueEvent", classCode="ALRT", moodCode="EVN")
    render_code(event, "code", issue.code)
    if issue.text is not None:
        render_text(event, "text", issue.text)
    for code in issue.issue_management:
        mitigated = sub(event, "mitigatedBy", typeCode="MITGT")
        management = sub(mitigated, "detectedIssueManagement", classCode="ACT", moodCode="EVN")
        render_code(management, "code", code)
    for code in issue.action_required:
        trigger = sub(event, "triggerFor", typeCode="TRIG")
        render_code(sub(trigger, "actOrderRequired", classCode="ACT", moodCode="RQO"), "code", code)
