"""Cross Gateway Query [ITI-38] stored queries, AdhocQueryRequest and AdhocQueryResponse.

FindDocuments, FindDocumentsByReferenceId and GetDocuments have typed
parameters; every other IHE stored query is a :class:`GenericStoredQuery`
whose parameters are kept verbatim, so nothing a partner sent is dropped.
Constructors enforce the parameter rules of ITI TF-2 3.18.4.1.2.3.7 and raise
the stored-query errors that carry their XDS error code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from imagebridge.errors import (
    InvalidValue,
    MissingHomeCommunityId,
    StoredQueryMissingParam,
    StoredQueryParamNumber,
    UnknownStoredQuery,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import RegistryError, Status
from imagebridge.model.xds import Code, DocumentEntry, Dtm, ObjectRef, RegistryObject


class StoredQueryType(Enum):
    """Stored query ids (ITI TF-2 3.18.4.1.2.4; IPF ``QueryType``)."""

    FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    FIND_SUBMISSION_SETS = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9"
    FIND_FOLDERS = "urn:uuid:958f3006-baad-4929-a4de-ff1114824431"
    GET_ALL = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3"
    GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
    GET_FOLDERS = "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4"
    GET_ASSOCIATIONS = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155"
    GET_DOCUMENTS_AND_ASSOCIATIONS = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a"
    GET_SUBMISSION_SETS = "urn:uuid:51224314-5390-4169-9b91-b1980040715a"
    GET_SUBMISSION_SET_AND_CONTENTS = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83"
    GET_FOLDER_AND_CONTENTS = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7"
    GET_FOLDERS_FOR_DOCUMENT = "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578"
    GET_RELATED_DOCUMENTS = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6"
    FIND_DOCUMENTS_BY_REFERENCE_ID = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492"

    @classmethod
    def parse(cls, value: str) -> StoredQueryType:
        """Lenient: case-insensitive, ``urn:uuid:`` prefix optional; unknown raises."""
        text = value.strip().lower()
        if not text.startswith("urn:uuid:"):
            text = "urn:uuid:" + text
        for member in cls:
            if member.value == text:
                return member
        raise UnknownStoredQuery(f"unknown stored query id {value[:100]!r}")


class ReturnType(Enum):
    """``ResponseOption/@returnType`` (XCA uses ObjectRef and LeafClass)."""

    OBJECT_REF = "ObjectRef"
    LEAF_CLASS = "LeafClass"
    REGISTRY_OBJECT = "RegistryObject"
    LEAF_CLASS_WITH_REPOSITORY_ITEM = "LeafClassWithRepositoryItem"

    @classmethod
    def parse(cls, value: str) -> ReturnType:
        text = value.strip().lower()
        for member in cls:
            if member.value.lower() == text:
                return member
        raise InvalidValue(f"unknown returnType {value[:60]!r}")


@dataclass(frozen=True, slots=True)
class QueryParameter:
    """One stored-query Slot kept verbatim: its name and the text of each ``rim:Value``."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``…From`` ≤ value < ``…To``; either bound may be absent."""

    from_: Dtm | None = None
    to: Dtm | None = None

    def __bool__(self) -> bool:
        return self.from_ is not None or self.to is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class FindDocumentsFilters:
    """The FindDocuments parameters, shared with FindDocumentsByReferenceId.

    Codes in one tuple are ORed; ``event_code_list`` and
    ``confidentiality_code`` hold one OR-group per Slot, and the groups are ANDed.
    ``status`` and ``document_entry_type`` keep unknown URNs (a registry ignores them).
    """

    patient_id: PatientId
    status: tuple[str, ...]
    class_code: tuple[Code, ...] = ()
    type_code: tuple[Code, ...] = ()
    practice_setting_code: tuple[Code, ...] = ()
    healthcare_facility_type_code: tuple[Code, ...] = ()
    format_code: tuple[Code, ...] = ()
    event_code_list: tuple[tuple[Code, ...], ...] = ()
    confidentiality_code: tuple[tuple[Code, ...], ...] = ()
    author_person: tuple[str, ...] = ()
    creation_time: TimeRange = TimeRange()
    service_start_time: TimeRange = TimeRange()
    service_stop_time: TimeRange = TimeRange()
    document_entry_type: tuple[str, ...] = ()
    extra_parameters: tuple[QueryParameter, ...] = ()

    def __post_init__(self) -> None:
        if not self.status:
            raise StoredQueryMissingParam("$XDSDocumentEntryStatus is required")
        if any(not group for group in self.event_code_list + self.confidentiality_code):
            raise InvalidValue("an AND group of codes must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class FindDocumentsQuery(FindDocumentsFilters):
    """Cross Gateway Query [ITI-38], FindDocuments stored query."""

    query_type: ClassVar[StoredQueryType] = StoredQueryType.FIND_DOCUMENTS


@dataclass(frozen=True, slots=True, kw_only=True)
class FindDocumentsByReferenceIdQuery(FindDocumentsFilters):
    """Cross Gateway Query [ITI-38], FindDocumentsByReferenceId (Reference ID option)."""

    query_type: ClassVar[StoredQueryType] = StoredQueryType.FIND_DOCUMENTS_BY_REFERENCE_ID
    reference_id_list: tuple[str, ...]

    def __post_init__(self) -> None:
        FindDocumentsFilters.__post_init__(self)
        if not self.reference_id_list:
            raise StoredQueryMissingParam("$XDSDocumentEntryReferenceIdList is required")


@dataclass(frozen=True, slots=True, kw_only=True)
class GetDocumentsQuery:
    """Cross Gateway Query [ITI-38], GetDocuments: by entryUUIDs or by uniqueIds (not both)."""

    query_type: ClassVar[StoredQueryType] = StoredQueryType.GET_DOCUMENTS
    entry_uuid: tuple[str, ...] = ()
    unique_id: tuple[str, ...] = ()
    extra_parameters: tuple[QueryParameter, ...] = ()

    def __post_init__(self) -> None:
        if self.entry_uuid and self.unique_id:
            raise StoredQueryParamNumber(
                "GetDocuments takes $XDSDocumentEntryEntryUUID or $XDSDocumentEntryUniqueId, "
                "not both"
            )
        if not self.entry_uuid and not self.unique_id:
            raise StoredQueryMissingParam(
                "GetDocuments needs $XDSDocumentEntryEntryUUID or $XDSDocumentEntryUniqueId"
            )


_TYPED = frozenset(
    {
        StoredQueryType.FIND_DOCUMENTS,
        StoredQueryType.FIND_DOCUMENTS_BY_REFERENCE_ID,
        StoredQueryType.GET_DOCUMENTS,
    }
)
# Parameters that carry a patient id; a query without one is routed by homeCommunityId.
PATIENT_ID_PARAMETERS = frozenset(
    {
        "$XDSDocumentEntryPatientId",
        "$XDSSubmissionSetPatientId",
        "$XDSFolderPatientId",
        "$patientId",
    }
)


@dataclass(frozen=True, slots=True)
class GenericStoredQuery:
    """Cross Gateway Query [ITI-38], any other IHE stored query, parameters verbatim."""

    query_type: StoredQueryType
    parameters: tuple[QueryParameter, ...] = ()

    def __post_init__(self) -> None:
        if self.query_type in _TYPED:
            raise InvalidValue(f"{self.query_type.name} has a typed model; use it")

    def values(self, name: str) -> tuple[str, ...]:
        """All raw values of parameter *name* (over every Slot of that name)."""
        return tuple(v for p in self.parameters if p.name == name for v in p.values)


StoredQuery = (
    FindDocumentsQuery | FindDocumentsByReferenceIdQuery | GetDocumentsQuery | GenericStoredQuery
)


def has_patient_id(query: StoredQuery) -> bool:
    """True if the query names a patient (so it needs no homeCommunityId to be routed)."""
    if isinstance(query, FindDocumentsFilters):
        return True
    if isinstance(query, GenericStoredQuery):
        return any(p.name in PATIENT_ID_PARAMETERS for p in query.parameters)
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class AdhocQueryRequest:
    """Cross Gateway Query [ITI-38] request (``query:AdhocQueryRequest``)."""

    query: StoredQuery
    return_type: ReturnType = ReturnType.LEAF_CLASS
    home_community_id: HomeCommunityId | None = None
    return_composed_objects: bool = True

    def require_home_community_id(self) -> None:
        """ITI-38 3.38.4.1.2.1: a query without a patient id must carry ``AdhocQuery/@home``."""
        if self.home_community_id is None and not has_patient_id(self.query):
            raise MissingHomeCommunityId(
                f"{self.query.query_type.name} has no patient id, so AdhocQuery/@home "
                "(homeCommunityId) is required"
            )


ResponseObject = DocumentEntry | ObjectRef | RegistryObject


@dataclass(frozen=True, slots=True, kw_only=True)
class AdhocQueryResponse:
    """Cross Gateway Query [ITI-38] response: status, registry objects, errors."""

    status: Status
    registry_objects: tuple[ResponseObject, ...] = ()
    errors: tuple[RegistryError, ...] = ()

    @property
    def document_entries(self) -> tuple[DocumentEntry, ...]:
        return tuple(o for o in self.registry_objects if isinstance(o, DocumentEntry))

    @property
    def object_refs(self) -> tuple[ObjectRef, ...]:
        return tuple(o for o in self.registry_objects if isinstance(o, ObjectRef))

    def ids_without_home(self) -> tuple[str, ...]:
        """Ids of ExtrinsicObjects, RegistryPackages and ObjectRefs that lack ``home``.

        ITI-38 3.38.4.1.3: an Initiating Gateway reports these to its consumer as
        ``XDSMissingHomeCommunityId`` (with the element ids in the context).
        """
        return tuple(
            o.id if not isinstance(o, DocumentEntry) else o.entry_uuid
            for o in self.registry_objects
            if o.home is None and (not isinstance(o, RegistryObject) or o.kind in _HOME_KINDS)
        )


_HOME_KINDS = frozenset({"ExtrinsicObject", "RegistryPackage"})
