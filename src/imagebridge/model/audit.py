"""Audit Trail and Node Authentication [ITI-20]: the DICOM PS3.15 A.5 audit message model.

Frozen dataclasses for ``AuditMessage`` as IHE actors emit it (DICOM 2017c,
IPF's ``dicom2017c.xsd``): EventIdentification, ActiveParticipants,
AuditSourceIdentification and ParticipantObjectIdentifications.  Base64
content (``ParticipantObjectQuery``, ``ParticipantObjectDetail/@value``) is
held decoded, as bytes.  Constructors validate; the codec is
:mod:`imagebridge.wire.audit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from imagebridge.errors import InvalidValue
from imagebridge.model.instant import Instant


class EventActionCode(Enum):
    """EventActionCode: what was done (Create, Read, Update, Delete, Execute)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class EventOutcomeIndicator(Enum):
    """EventOutcomeIndicator: 0 success, 4 minor, 8 serious, 12 major failure."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class NetworkAccessPointTypeCode(Enum):
    """NetworkAccessPointTypeCode of an ActiveParticipant."""

    MACHINE_NAME = "1"
    IP_ADDRESS = "2"
    TELEPHONE_NUMBER = "3"
    EMAIL_ADDRESS = "4"
    URI = "5"


class ParticipantObjectTypeCode(Enum):
    """ParticipantObjectTypeCode: Person, System object, Organization, Other."""

    PERSON = "1"
    SYSTEM_OBJECT = "2"
    ORGANIZATION = "3"
    OTHER = "4"


def _need(value: str, what: str) -> None:
    if not value.strip():
        raise InvalidValue(f"audit message: {what} is empty")


@dataclass(frozen=True, slots=True)
class AuditCode:
    """A DICOM audit coded value (``csd-code``, ``codeSystemName``, ``originalText``).

    ``EV(110112, DCM, "Query")`` is ``AuditCode("110112", "DCM", "Query")``.
    """

    code: str
    code_system_name: str
    original_text: str
    display_name: str | None = None

    def __post_init__(self) -> None:
        _need(self.code, "csd-code")
        _need(self.code_system_name, "codeSystemName")
        _need(self.original_text, "originalText")


@dataclass(frozen=True, slots=True)
class AuditSourceTypeCode:
    """AuditSourceTypeCode: a digit 1-9 (4 = application server) or any coded value."""

    code: str
    code_system_name: str | None = None
    original_text: str | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        _need(self.code, "AuditSourceTypeCode csd-code")


@dataclass(frozen=True, slots=True)
class EventIdentification:
    """EventIdentification: event id, action, time, outcome, transaction (type codes)."""

    event_id: AuditCode
    event_date_time: Instant
    event_outcome_indicator: EventOutcomeIndicator
    event_action_code: EventActionCode | None = None
    event_type_codes: tuple[AuditCode, ...] = ()
    event_outcome_description: str | None = None
    purposes_of_use: tuple[AuditCode, ...] = ()


@dataclass(frozen=True, slots=True)
class ActiveParticipant:
    """ActiveParticipant: a user, process or node taking part in the event."""

    user_id: str
    user_is_requestor: bool
    alternative_user_id: str | None = None
    user_name: str | None = None
    network_access_point_id: str | None = None
    network_access_point_type_code: NetworkAccessPointTypeCode | None = None
    role_id_codes: tuple[AuditCode, ...] = ()
    media_type: AuditCode | None = None

    def __post_init__(self) -> None:
        _need(self.user_id, "ActiveParticipant UserID")


@dataclass(frozen=True, slots=True)
class AuditSourceIdentification:
    """AuditSourceIdentification: who reports the event."""

    audit_source_id: str
    audit_enterprise_site_id: str | None = None
    type_codes: tuple[AuditSourceTypeCode, ...] = ()

    def __post_init__(self) -> None:
        _need(self.audit_source_id, "AuditSourceID")


@dataclass(frozen=True, slots=True)
class ParticipantObjectDetail:
    """ParticipantObjectDetail: a type and its value (decoded from base64)."""

    type: str
    value: bytes

    def __post_init__(self) -> None:
        _need(self.type, "ParticipantObjectDetail type")


@dataclass(frozen=True, slots=True)
class SopClass:
    """SOPClass in a DICOM object description: UID, instance count, instance UIDs."""

    number_of_instances: int
    uid: str | None = None
    instance_uids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.number_of_instances < 0:
            raise InvalidValue("audit message: SOPClass NumberOfInstances is negative")


@dataclass(frozen=True, slots=True)
class DicomObjectDescription:
    """ParticipantObjectDescription (DICOM): MPPS, accessions, SOP classes, studies."""

    mpps_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    sop_classes: tuple[SopClass, ...] = ()
    study_uids: tuple[str, ...] | None = None
    encrypted: bool | None = None
    anonymized: bool | None = None


@dataclass(frozen=True, slots=True)
class ParticipantObjectIdentification:
    """ParticipantObjectIdentification: a patient, query, document, study... in the event.

    ``name`` and ``query`` exclude each other (schema choice); ``query`` is the
    decoded ``ParticipantObjectQuery`` (for ITI-55 the QueryByParameter XML).
    """

    id_type_code: AuditCode
    object_id: str | None = None
    type_code: ParticipantObjectTypeCode | None = None
    type_code_role: int | None = None
    data_life_cycle: int | None = None
    sensitivity: str | None = None
    name: str | None = None
    query: bytes | None = None
    details: tuple[ParticipantObjectDetail, ...] = ()
    descriptions: tuple[DicomObjectDescription, ...] = ()

    def __post_init__(self) -> None:
        if self.type_code_role is not None and not 1 <= self.type_code_role <= 26:
            raise InvalidValue(
                f"audit message: ParticipantObjectTypeCodeRole {self.type_code_role} not in 1-26"
            )
        if self.data_life_cycle is not None and not 1 <= self.data_life_cycle <= 15:
            raise InvalidValue(
                f"audit message: ParticipantObjectDataLifeCycle {self.data_life_cycle} not in 1-15"
            )
        if self.name is not None and self.query is not None:
            raise InvalidValue(
                "audit message: ParticipantObjectName and ParticipantObjectQuery exclude each other"
            )


@dataclass(frozen=True, slots=True)
class AuditMessage:
    """Audit Trail and Node Authentication [ITI-20]: one DICOM ``AuditMessage``."""

    event_identification: EventIdentification
    active_participants: tuple[ActiveParticipant, ...]
    audit_source_identification: AuditSourceIdentification
    participant_objects: tuple[ParticipantObjectIdentification, ...] = ()

    def __post_init__(self) -> None:
        if not self.active_participants:
            raise InvalidValue("audit message: at least one ActiveParticipant is required")
