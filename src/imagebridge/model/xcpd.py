"""Cross Gateway Patient Discovery [ITI-55], the query (PRPA_IN201305UV02) and its answer.

Frozen values for both directions: the Initiating Gateway builds a
:class:`PatientDiscoveryQuery` and reads a :class:`PatientDiscoveryResponse`; the
Responding Gateway does the reverse.  Every XCPD code lives here.  HL7 v3 data
types are reduced to what XCPD uses (:class:`II`, :class:`PersonName`,
:class:`PostalAddress`, :class:`Telecom`, :class:`CodedValue`,
:class:`TimeInterval`); timestamps stay HL7 ``TS`` strings exactly as sent.
Constructors validate, so whatever a parser builds can be rendered again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeVar

from imagebridge.errors import (
    InvalidHl7Timestamp,
    InvalidOid,
    InvalidValue,
    PatientDiscoveryMissingParameter,
    PatientDiscoveryQueryError,
)
from imagebridge.model.ids import HomeCommunityId, PatientId, validate_oid

# --- code systems and fixed codes -------------------------------------------------------
HL7_INTERACTION_ID_ROOT: Final = "2.16.840.1.113883.1.6"
ADMINISTRATIVE_GENDER_SYSTEM: Final = "2.16.840.1.113883.5.1"
ACT_CODE_SYSTEM: Final = "2.16.840.1.113883.5.4"
ACKNOWLEDGEMENT_DETAIL_SYSTEM: Final = "2.16.840.1.113883.5.1100"
REQUESTED_ATTRIBUTE_SYSTEM: Final = "1.3.6.1.4.1.19376.1.2.27.1"
HEALTH_DATA_LOCATOR_SYSTEM: Final = "1.3.6.1.4.1.19376.1.2.27.2"
ISSUE_MANAGEMENT_SYSTEM: Final = "1.3.6.1.4.1.19376.1.2.27.3"
DETECTED_ISSUE_EVENT_CODE: Final = "ActAdministrativeDetectedIssueCode"
QUERY_MATCH_OBSERVATION_CODE: Final = "IHE_PDQ"


class AcknowledgementType(StrEnum):
    """HL7 AcknowledgementType; XCPD answers with AA or AE."""

    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"


class QueryResponseCode(StrEnum):
    """HL7 QueryResponse (queryAck/queryResponseCode); XCPD uses OK, NF and AE."""

    OK = "OK"
    NF = "NF"
    AE = "AE"
    QE = "QE"


class AdministrativeGender(StrEnum):
    """HL7 AdministrativeGender (2.16.840.1.113883.5.1)."""

    MALE = "M"
    FEMALE = "F"
    UNDIFFERENTIATED = "UN"


class HealthDataLocator(StrEnum):
    """custodian/assignedEntity/code (1.3.6.1.4.1.19376.1.2.27.2), ITI TF-2 3.55.4.2.2.5."""

    NOT_HEALTH_DATA_LOCATOR = "NotHealthDataLocator"
    SUPPORTS_HEALTH_DATA_LOCATOR = "SupportsHealthDataLocator"


class RequestedAttribute(StrEnum):
    """triggerFor/actOrderRequired codes (1.3.6.1.4.1.19376.1.2.27.1): more data wanted."""

    LIVING_SUBJECT_ADMINISTRATIVE_GENDER = "LivingSubjectAdministrativeGenderRequested"
    PATIENT_ADDRESS = "PatientAddressRequested"
    PATIENT_TELECOM = "PatientTelecomRequested"
    LIVING_SUBJECT_BIRTH_PLACE_NAME = "LivingSubjectBirthPlaceNameRequested"
    LIVING_SUBJECT_BIRTH_PLACE_ADDRESS = "LivingSubjectBirthPlaceAddressRequested"
    MOTHERS_MAIDEN_NAME = "MothersMaidenNameRequested"
    SSN = "SSNRequested"  # CONNECT's addition, not in the IHE list


class IssueManagement(StrEnum):
    """mitigatedBy/detectedIssueManagement codes (1.3.6.1.4.1.19376.1.2.27.3)."""

    RESPONDER_BUSY = "ResponderBusy"
    ANSWER_NOT_AVAILABLE = "AnswerNotAvailable"
    INTERNAL_ERROR = "InternalError"


# Known misspellings seen from partners, read as the code they mean.
_CODE_ALIASES: Final = {"patientadressrequested": "PatientAddressRequested"}

# HL7 'use' code sets (voc.xsd, NE2008), for the set-valued use attributes.
POSTAL_ADDRESS_USES: Final = frozenset(
    ["ABC", "BAD", "DIR", "H", "HP", "HV", "IDE", "PHYS", "PST", "PUB", "SYL", "TMP", "WP"]
)
TELECOM_USES: Final = frozenset(
    ["AS", "BAD", "DIR", "EC", "H", "HP", "HV", "MC", "PG", "PUB", "TMP", "WP"]
)
ENTITY_NAME_USES: Final = frozenset(
    ["A", "ABC", "ASGN", "C", "I", "IDE", "L", "OR", "P", "PHON", "R", "SNDX", "SRCH", "SYL"]
)

_TS_RE = re.compile(r"^(?:[0-9]{1,8}|(?:[0-9]{9,14}|[0-9]{14}\.[0-9]+)(?:[+\-][0-9]{1,4})?)$")
_UID_RE = re.compile(
    r"^(?:[0-2](?:\.(?:0|[1-9][0-9]*))*"  # OID (HL7 allows a single arc)
    r"|[0-9a-zA-Z]{8}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{12}"  # UUID
    r"|[A-Za-z][A-Za-z0-9\-]*)$"  # RUID
)
_TOKEN_RE = re.compile(r"^\S+$")

E = TypeVar("E", bound=StrEnum)


def validate_ts(value: str, what: str = "timestamp") -> str:
    """Return *value* if it is an HL7 v3 TS, else raise :class:`InvalidHl7Timestamp`."""
    if not _TS_RE.match(value):
        raise InvalidHl7Timestamp(f"{what} is not an HL7 TS (YYYYMMDD[HHMMSS...]): {value[:80]!r}")
    return value


def _token(value: str, what: str) -> str:
    if not _TOKEN_RE.match(value):
        raise InvalidValue(f"{what} is not a code token: {value[:80]!r}")
    return value


def _uses(value: str | None, allowed: frozenset[str], what: str) -> None:
    if value is None:
        return
    words = value.split()
    if not words or any(w not in allowed for w in words):
        raise InvalidValue(f"{what} use {value[:40]!r} is not in {sorted(allowed)}")


def _hl7_root(value: str | None, what: str) -> None:
    """An id written as an HL7 II root must match the HL7 ``oid`` pattern (schema-valid output)."""
    if value is not None and not _UID_RE.match(value):
        raise InvalidOid(f"{what} {value[:80]!r} is not usable as an HL7 II root (OID)")


def code_of(enum: type[E], value: str, what: str) -> E:
    """Lenient enum look-up: case-insensitive, known misspellings mapped."""
    text = value.strip()
    text = _CODE_ALIASES.get(text.lower(), text)
    for member in enum:
        if member.value.lower() == text.lower():
            return member
    raise InvalidValue(f"unknown {what} {text[:80]!r}")


# --- HL7 v3 data types ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class II:
    """HL7 v3 instance identifier: ``root`` (OID, UUID or RUID) plus optional ``extension``."""

    root: str
    extension: str | None = None

    def __post_init__(self) -> None:
        if not _UID_RE.match(self.root):
            raise InvalidOid(f"II root is not an OID, UUID or RUID: {self.root[:80]!r}")
        if self.extension is not None and not self.extension.strip():
            raise InvalidValue("II extension is empty (omit it instead)")

    @classmethod
    def from_patient_id(cls, pid: PatientId) -> II:
        """The II form of an XDS CX patient id (root = assigning authority)."""
        return cls(pid.assigning_authority, pid.id)

    @property
    def patient_id(self) -> PatientId:
        """The XDS CX form; needs an OID root and an extension."""
        if self.extension is None:
            raise InvalidValue(f"II {self.root!r} has no extension, so it is not a patient id")
        return PatientId.from_ii(self.root, self.extension)


@dataclass(frozen=True, slots=True)
class CodedValue:
    """HL7 v3 CE/CD reduced to code, code system and display name."""

    code: str
    code_system: str | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        _token(self.code, "code")
        if self.code_system is not None and not _UID_RE.match(self.code_system):
            raise InvalidOid(f"codeSystem is not an OID/UID: {self.code_system[:80]!r}")


@dataclass(frozen=True, slots=True)
class PersonName:
    """HL7 v3 PN; parts exactly as sent, in order within each kind."""

    given: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    suffix: tuple[str, ...] = ()
    use: str | None = None
    text: str | None = None  # unstructured name text, if any

    def __post_init__(self) -> None:
        _uses(self.use, ENTITY_NAME_USES, "name")
        if not (self.given or self.family or self.prefix or self.suffix or self.text):
            raise InvalidValue("a person name needs at least one part")

    @property
    def family_name(self) -> str | None:
        return " ".join(self.family) or None


@dataclass(frozen=True, slots=True)
class PostalAddress:
    """HL7 v3 AD reduced to the parts XCPD uses.  Postal codes stay strings (``05080``)."""

    street_address_lines: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    use: str | None = None

    def __post_init__(self) -> None:
        _uses(self.use, POSTAL_ADDRESS_USES, "address")


@dataclass(frozen=True, slots=True)
class Telecom:
    """HL7 v3 TEL: a URL such as ``tel:+1-555-0100`` or ``mailto:a@b``."""

    value: str
    use: str | None = None

    def __post_init__(self) -> None:
        if not self.value.strip():
            raise InvalidValue("telecom value is empty")
        _uses(self.use, TELECOM_USES, "telecom")


@dataclass(frozen=True, slots=True)
class TimeInterval:
    """HL7 v3 IVL<TS>: an exact ``value``, or a ``low``/``high`` range (partial dates allowed)."""

    value: str | None = None
    low: str | None = None
    high: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.low is None and self.high is None):
            raise InvalidValue("a time interval has either a value or low/high bounds")
        for ts in (self.value, self.low, self.high):
            if ts is not None:
                validate_ts(ts, "birth time")


# --- the query ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    """Cross Gateway Patient Discovery [ITI-55], a sender or receiver device.

    ``home_community_id`` is ``device/asAgent/representedOrganization/id/@root``;
    ``telecom`` is the device's endpoint URL (Carequality puts it on the receiver).
    """

    id: II
    home_community_id: HomeCommunityId | None = None
    telecom: str | None = None

    def __post_init__(self) -> None:
        hcid = self.home_community_id
        _hl7_root(hcid.oid if hcid else None, "homeCommunityId")


@dataclass(frozen=True, slots=True)
class ParameterList:
    """Cross Gateway Patient Discovery [ITI-55], queryByParameter/parameterList.

    Repeating parameters are flattened: several ``patientAddress`` elements or
    values all land in ``patient_addresses`` (they are OR'ed either way).
    """

    living_subject_administrative_gender: str | None = None
    living_subject_birth_place_addresses: tuple[PostalAddress, ...] = ()
    living_subject_birth_place_names: tuple[str, ...] = ()
    living_subject_birth_time: TimeInterval | None = None
    living_subject_ids: tuple[II, ...] = ()
    living_subject_names: tuple[PersonName, ...] = ()
    mothers_maiden_name: PersonName | None = None
    patient_addresses: tuple[PostalAddress, ...] = ()
    patient_telecoms: tuple[Telecom, ...] = ()
    principal_care_provider_ids: tuple[II, ...] = ()

    def __post_init__(self) -> None:
        if self.living_subject_administrative_gender is not None:
            _token(self.living_subject_administrative_gender, "administrative gender")
        for name in (*self.living_subject_names, self.mothers_maiden_name):
            if name is not None and name.use is not None and "SRCH" in name.use.split():
                raise InvalidValue("a queried name must not have use SRCH")


@dataclass(frozen=True, slots=True)
class QueryByParameter:
    """Cross Gateway Patient Discovery [ITI-55], controlActProcess/queryByParameter.

    ``None`` modality/priority codes mean absent (seen in partners' echoed copies).
    """

    query_id: II
    parameters: ParameterList
    response_modality_code: str | None = "R"
    response_priority_code: str | None = "I"  # I immediate, D deferred
    match_algorithm: str | None = None
    minimum_degree_match: int | None = None

    def __post_init__(self) -> None:
        for code in (self.response_modality_code, self.response_priority_code):
            if code is not None:
                _token(code, "queryByParameter code")
        if self.minimum_degree_match is not None and not 0 <= self.minimum_degree_match <= 100:
            raise InvalidValue(f"minimumDegreeMatch {self.minimum_degree_match} is not 0..100")


@dataclass(frozen=True, slots=True)
class PatientDiscoveryQueryHeader:
    """Cross Gateway Patient Discovery [ITI-55], what an in-band error answer needs.

    Read from a query whose body could not be used: the request message id
    (acknowledgement/targetMessage), the sender (the answer's receiver) and the
    queryId (queryAck), which may be absent.
    """

    message_id: II
    sender: Device
    query_id: II | None = None


@dataclass(frozen=True, slots=True)
class PatientDiscoveryQuery:
    """Cross Gateway Patient Discovery [ITI-55], the PRPA_IN201305UV02 request.

    ``patient_id_assigning_authority`` is authorOrPerformer/assignedDevice/id/@root:
    the authority of the initiator's patient id for a reverse ITI-38.
    """

    message_id: II
    creation_time: str
    sender: Device
    receiver: Device
    query_by_parameter: QueryByParameter
    patient_id_assigning_authority: str | None = None
    processing_code: str = "P"
    processing_mode_code: str = "T"
    accept_ack_code: str = "AL"
    respond_to: str | None = None  # deferred mode only

    def __post_init__(self) -> None:
        validate_ts(self.creation_time, "creationTime")
        for code in (self.processing_code, self.processing_mode_code, self.accept_ack_code):
            _token(code, "transmission wrapper code")
        if self.patient_id_assigning_authority is not None:
            validate_oid(self.patient_id_assigning_authority, "assignedDevice id root")
            _hl7_root(self.patient_id_assigning_authority, "assignedDevice id root")
        p = self.query_by_parameter.parameters
        if not p.living_subject_ids and not (
            p.living_subject_names and p.living_subject_birth_time
        ):
            raise PatientDiscoveryMissingParameter(
                "parameterList needs a livingSubjectId, or both livingSubjectName and "
                "livingSubjectBirthTime (ITI TF-2 3.55.4.1.2)"
            )

    @property
    def header(self) -> PatientDiscoveryQueryHeader:
        return PatientDiscoveryQueryHeader(
            self.message_id, self.sender, self.query_by_parameter.query_id
        )


# --- the response ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcknowledgementDetail:
    """acknowledgement/acknowledgementDetail: type E/W/I, code (e.g. INTERR) and text."""

    type_code: str | None = None
    code: CodedValue | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.type_code is not None and self.type_code not in ("E", "W", "I"):
            raise InvalidValue(f"acknowledgementDetail typeCode {self.type_code!r} is not E/W/I")


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The one acknowledgement of a PRPA_IN201306UV02: AA or AE, and the request id."""

    type_code: AcknowledgementType
    target_message_id: II
    details: tuple[AcknowledgementDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class OtherId:
    """patientPerson/asOtherIDs: an additional id and its scoping organization OID."""

    id: II
    scoping_organization: str
    class_code: str = "PAT"

    def __post_init__(self) -> None:
        if not _UID_RE.match(self.scoping_organization):
            raise InvalidOid(f"scopingOrganization id is not an OID: {self.scoping_organization!r}")
        _token(self.class_code, "asOtherIDs classCode")


@dataclass(frozen=True, slots=True)
class ProviderOrganization:
    """patient/providerOrganization: id, name and contact telecoms."""

    id: II
    name: str | None = None
    contact_telecoms: tuple[Telecom, ...] = ()


@dataclass(frozen=True, slots=True)
class MatchedPatient:
    """Cross Gateway Patient Discovery [ITI-55], one registrationEvent: a matching record.

    ``patient_id`` is the id to use in ITI-38/ITI-39 with this community;
    ``home_community_id`` is custodian/assignedEntity/id/@root.  Both the
    community and the Health Data Locator flag are required by IHE; ``None``
    only records that a partner left them out.
    """

    patient_id: PatientId
    home_community_id: HomeCommunityId | None
    health_data_locator: HealthDataLocator | None = HealthDataLocator.NOT_HEALTH_DATA_LOCATOR
    names: tuple[PersonName, ...] = ()
    administrative_gender: str | None = None
    birth_time: str | None = None
    addresses: tuple[PostalAddress, ...] = ()
    telecoms: tuple[Telecom, ...] = ()
    other_ids: tuple[OtherId, ...] = ()
    provider_organization: ProviderOrganization | None = None
    match_degree: int | None = None  # queryMatchObservation value, 0..100 like minimumDegreeMatch

    def __post_init__(self) -> None:
        _hl7_root(self.patient_id.assigning_authority, "patient id assigning authority")
        hcid = self.home_community_id
        _hl7_root(hcid.oid if hcid else None, "custodian homeCommunityId")
        if self.birth_time is not None:
            validate_ts(self.birth_time, "birthTime")
        if self.administrative_gender is not None:
            _token(self.administrative_gender, "administrative gender")

    @property
    def patient_ii(self) -> II:
        return II.from_patient_id(self.patient_id)


@dataclass(frozen=True, slots=True)
class DetectedIssueEvent:
    """controlActProcess/reasonOf/detectedIssueEvent.

    ``action_required`` holds triggerFor/actOrderRequired codes (more data wanted,
    1.3.6.1.4.1.19376.1.2.27.1); ``issue_management`` holds mitigatedBy/
    detectedIssueManagement codes (why no answer, 1.3.6.1.4.1.19376.1.2.27.3).
    Partners' codes are kept verbatim.
    """

    action_required: tuple[CodedValue, ...] = ()
    issue_management: tuple[CodedValue, ...] = ()
    code: CodedValue = CodedValue(DETECTED_ISSUE_EVENT_CODE, ACT_CODE_SYSTEM)
    text: str | None = None

    @classmethod
    def requesting(cls, *attributes: RequestedAttribute) -> DetectedIssueEvent:
        """Case 3: ask the initiator for more demographics."""
        return cls(
            action_required=tuple(CodedValue(a, REQUESTED_ATTRIBUTE_SYSTEM) for a in attributes)
        )

    @classmethod
    def managed_by(cls, *codes: IssueManagement, text: str | None = None) -> DetectedIssueEvent:
        """Case 5: the responder cannot answer (busy, internal error, ...)."""
        return cls(
            issue_management=tuple(CodedValue(c, ISSUE_MANAGEMENT_SYSTEM) for c in codes), text=text
        )


@dataclass(frozen=True, slots=True)
class QueryAck:
    """controlActProcess/queryAck: response code, echoed queryId, optional status code."""

    query_response_code: QueryResponseCode
    query_id: II | None = None
    status_code: str | None = None  # e.g. deliveredResponse, aborted

    def __post_init__(self) -> None:
        if self.status_code is not None:
            _token(self.status_code, "queryAck statusCode")


@dataclass(frozen=True, slots=True)
class PatientDiscoveryResponse:
    """Cross Gateway Patient Discovery [ITI-55], the PRPA_IN201306UV02 response."""

    message_id: II
    creation_time: str
    sender: Device
    receiver: Device
    acknowledgement: Acknowledgement
    query_ack: QueryAck
    patients: tuple[MatchedPatient, ...] = ()
    detected_issues: tuple[DetectedIssueEvent, ...] = ()
    query_by_parameter: QueryByParameter | None = None
    processing_code: str = "P"

    def __post_init__(self) -> None:
        validate_ts(self.creation_time, "creationTime")
        _token(self.processing_code, "processingCode")

    @property
    def requested_attributes(self) -> tuple[RequestedAttribute, ...]:
        """Known 'more attributes requested' codes, from any detectedIssueEvent."""
        return _known(
            RequestedAttribute, (c for e in self.detected_issues for c in e.action_required)
        )

    @property
    def issue_management_codes(self) -> tuple[IssueManagement, ...]:
        """Known detectedIssueManagement codes (ResponderBusy, InternalError, ...)."""
        return _known(
            IssueManagement, (c for e in self.detected_issues for c in e.issue_management)
        )


def _known(enum: type[E], codes: Iterable[CodedValue]) -> tuple[E, ...]:
    out: list[E] = []
    for coded in codes:
        try:
            out.append(code_of(enum, coded.code, enum.__name__))
        except InvalidValue:
            continue  # unknown partner codes stay available in detected_issues
    return tuple(out)


def response_for_query_error(
    header: PatientDiscoveryQueryHeader,
    error: PatientDiscoveryQueryError,
    *,
    message_id: II,
    creation_time: str,
    sender: Device,
) -> PatientDiscoveryResponse:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: the in-band AE answer.

    Uses the codes carried by *error* (acknowledgement, queryResponseCode,
    acknowledgementDetail code and the detectedIssueManagement code).
    """
    detail = AcknowledgementDetail(
        "E",
        CodedValue(error.hl7_acknowledgement_detail_code, ACKNOWLEDGEMENT_DETAIL_SYSTEM),
        error.message,
    )
    issue = error.hl7_detected_issue_management_code
    return PatientDiscoveryResponse(
        message_id=message_id,
        creation_time=creation_time,
        sender=sender,
        receiver=header.sender,
        acknowledgement=Acknowledgement(
            AcknowledgementType(error.hl7_acknowledgement_type_code), header.message_id, (detail,)
        ),
        query_ack=QueryAck(
            QueryResponseCode(error.hl7_query_response_code), header.query_id, "aborted"
        ),
        detected_issues=(
            (DetectedIssueEvent(issue_management=(CodedValue(issue, ISSUE_MANAGEMENT_SYSTEM),)),)
            if issue
            else ()
        ),
    )
