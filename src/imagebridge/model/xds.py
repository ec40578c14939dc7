"""Cross Gateway Query [ITI-38] domain model: DocumentEntry metadata and ebRIM pieces.

The stored queries and the query request/response live in
:mod:`imagebridge.model.xds_query`; this module holds what both a query
response and a submission (KOS metadata) carry: DocumentEntry
(``rim:ExtrinsicObject``), its codes, authors and slots, generic ebRIM
objects for everything that is not a DocumentEntry, and ObjectRef.

Enumerations whose values are XDS URNs (objectType, availability status) are
defined here and re-exported by :mod:`imagebridge.wire.xds.vocabulary`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import HomeCommunityId, PatientId

# --- enumerations -------------------------------------------------------------------------


class DocumentEntryType(Enum):
    """DocumentEntry ``objectType`` (ITI TF-3 4.2.5.2): stable or on-demand."""

    STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"

    @classmethod
    def parse(cls, value: str) -> DocumentEntryType:
        """Lenient: case-insensitive, ``urn:uuid:`` prefix optional."""
        text = value.strip().lower()
        for member in cls:
            if text in (member.value, member.value.removeprefix("urn:uuid:")):
                return member
        raise InvalidValue(f"unknown DocumentEntry objectType {value[:100]!r}")


class AvailabilityStatus(Enum):
    """ebRIM ``StatusType`` of a registry object (XDS uses Approved and Deprecated)."""

    SUBMITTED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"
    APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    WITHDRAWN = "urn:oasis:names:tc:ebxml-regrep:StatusType:Withdrawn"

    @classmethod
    def parse(cls, value: str) -> AvailabilityStatus:
        """Lenient: exact URN, or any URN/word ending in the status name."""
        tail = value.strip().rsplit(":", 1)[-1].lower()
        for member in cls:
            if member.value.rsplit(":", 1)[-1].lower() == tail:
                return member
        raise InvalidValue(f"unknown availability status {value[:100]!r}")


# --- time -----------------------------------------------------------------------------------

_DTM_STRICT = re.compile(r"^\d{4}(\d{2}){0,5}$", re.ASCII)
_DTM_LENIENT = re.compile(
    r"^(?P<digits>\d{4}(?:\d{2}){0,5})(?:\.\d{1,6})?(?P<tz>Z|[+-]\d{4})?$",
    re.IGNORECASE | re.ASCII,
)
_ISO_8601 = re.compile(
    r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,]\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE | re.ASCII,
)


def _offset(tz: str | None) -> timedelta:
    if tz is None or tz.upper() == "Z":
        return timedelta(0)
    digits = tz[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return -delta if tz[0] == "-" else delta


@dataclass(frozen=True, slots=True)
class Dtm:
    """An XDS time value: HL7 DTM in UTC, ``YYYY[MM[DD[hh[mm[ss]]]]]``.

    The precision is part of the value (``2024`` is the whole year).  Strict on
    construction; :meth:`parse` accepts what partners really send.
    """

    value: str

    def __post_init__(self) -> None:
        if not _DTM_STRICT.match(self.value):
            raise InvalidValue(f"not an XDS DTM (YYYY[MM[DD[hh[mm[ss]]]]]): {self.value[:40]!r}")
        self.to_datetime()  # checks the calendar

    @classmethod
    def parse(cls, text: str) -> Dtm:
        """Lenient: HL7 DTM with fraction or offset, or ISO 8601; converted to UTC.

        Fractional seconds are cut (XDS stops at seconds).  An offset on a value
        less precise than the hour cannot be applied and is ignored.
        """
        raw = text.strip()
        m = _DTM_LENIENT.match(raw)
        if m:
            digits = m.group("digits")
            tz = m.group("tz")
        else:
            iso = _ISO_8601.match(raw)
            if not iso:
                raise InvalidValue(f"not an HL7 DTM or ISO 8601 time: {raw[:40]!r}")
            digits = "".join(iso.group(k) or "" for k in ("y", "mo", "d", "h", "mi", "s"))
            tz = iso.group("tz")
        value = cls(digits)
        delta = _offset(tz)
        if not delta or len(digits) < 10:
            return value
        try:
            utc = value.to_datetime() - delta
        except OverflowError as exc:
            raise InvalidValue(f"time {raw[:40]!r} is out of range in UTC") from exc
        full = (
            f"{utc.year:04d}{utc.month:02d}{utc.day:02d}{utc.hour:02d}{utc.minute:02d}"
            f"{utc.second:02d}"
        )
        return cls(full[: len(digits)])

    def to_datetime(self) -> datetime:
        """The earliest instant the value covers, as an aware UTC datetime."""
        v = self.value
        parts = [int(v[0:4])] + [int(v[i : i + 2]) for i in range(4, len(v), 2)]
        defaults = [0, 1, 1, 0, 0, 0]
        y, mo, d, h, mi, s = parts + defaults[len(parts) :]
        try:
            return datetime(y, mo, d, h, mi, s, tzinfo=UTC)
        except ValueError as exc:
            raise InvalidValue(f"DTM {v!r} is not a valid date/time: {exc}") from exc

    def __str__(self) -> str:
        return self.value


# --- ebRIM pieces ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value: ``nodeRepresentation`` + ``codingScheme`` (+ display name).

    ``id`` is the Classification element's id when parsed (kept for
    pass-through, ignored by equality).
    """

    code: str
    scheme: str
    display_name: str | None = None
    id: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.code.strip() or not self.scheme.strip():
            raise InvalidValue(
                f"code and coding scheme are required: {self.code!r}^^{self.scheme!r}"
            )


@dataclass(frozen=True, slots=True)
class Slot:
    """An ebRIM ``Slot``: a name and its values, verbatim."""

    name: str
    values: tuple[str, ...] = ()
    slot_type: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidValue("a Slot needs a name")


@dataclass(frozen=True, slots=True)
class LocalizedString:
    """One ``LocalizedString`` (``xml:lang`` and ``charset`` only when given)."""

    value: str
    lang: str | None = None
    charset: str | None = None


@dataclass(frozen=True, slots=True)
class InternationalString:
    """``Name`` / ``Description``: one or more localized strings."""

    localized: tuple[LocalizedString, ...]

    @classmethod
    def of(cls, text: str) -> InternationalString:
        return cls((LocalizedString(text),))

    @property
    def text(self) -> str:
        """The first localized value ('' if none)."""
        return self.localized[0].value if self.localized else ""

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class Author:
    """The ``author`` classification of a DocumentEntry (nodeRepresentation "")."""

    person: str | None = None
    institutions: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()
    telecommunications: tuple[str, ...] = ()
    extra_slots: tuple[Slot, ...] = ()
    id: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryObject:
    """Any ebRIM object that is not a DocumentEntry, kept whole for pass-through.

    ``kind`` is the element name (RegistryPackage, Association, Classification,
    ExternalIdentifier, ExtrinsicObject of another objectType ...);
    ``attributes`` are the type-specific attributes (sourceObject,
    classifiedObject, value ...) in document order.
    """

    kind: str
    id: str
    home: HomeCommunityId | None = None
    lid: str | None = None
    object_type: str | None = None
    status: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    slots: tuple[Slot, ...] = ()
    name: InternationalString | None = None
    description: InternationalString | None = None
    version_name: str | None = None
    classifications: tuple[RegistryObject, ...] = ()
    external_identifiers: tuple[RegistryObject, ...] = ()

    def attribute(self, name: str) -> str | None:
        return next((v for k, v in self.attributes if k == name), None)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """``rim:ObjectRef``: the id (and community) of an object (ObjectRef return type)."""

    id: str
    home: HomeCommunityId | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidValue("an ObjectRef needs an id")


# --- DocumentEntry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentEntry:
    """Cross Gateway Query [ITI-38], XDSDocumentEntry metadata (``rim:ExtrinsicObject``).

    Field names follow ITI TF-3 4.2.3.2.  Slots, classifications and external
    identifiers this model has no field for are kept in the ``extra_*`` fields.
    """

    entry_uuid: str
    unique_id: str
    mime_type: str
    patient_id: PatientId | None = None
    object_type: DocumentEntryType = DocumentEntryType.STABLE
    status: AvailabilityStatus | None = None
    home: HomeCommunityId | None = None
    lid: str | None = None
    version_name: str | None = None
    title: InternationalString | None = None
    comments: InternationalString | None = None
    # classifications
    class_code: Code | None = None
    type_code: Code | None = None
    format_code: Code | None = None
    healthcare_facility_type_code: Code | None = None
    practice_setting_code: Code | None = None
    confidentiality_code: tuple[Code, ...] = ()
    event_code_list: tuple[Code, ...] = ()
    authors: tuple[Author, ...] = ()
    limited_metadata: bool = False
    # slots
    creation_time: Dtm | None = None
    service_start_time: Dtm | None = None
    service_stop_time: Dtm | None = None
    hash: str | None = None
    size: int | None = None
    language_code: str | None = None
    repository_unique_id: str | None = None
    source_patient_id: str | None = None
    source_patient_info: tuple[str, ...] = ()
    legal_authenticator: str | None = None
    reference_id_list: tuple[str, ...] = ()
    uri: str | None = None
    document_availability: str | None = None
    # whatever else the partner sent
    extra_slots: tuple[Slot, ...] = ()
    extra_classifications: tuple[RegistryObject, ...] = ()
    extra_external_identifiers: tuple[RegistryObject, ...] = ()
    # ids of the patientId / uniqueId ExternalIdentifier elements (pass-through only)
    patient_id_identifier_id: str | None = field(default=None, compare=False)
    unique_id_identifier_id: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.entry_uuid.strip():
            raise InvalidValue("DocumentEntry entryUUID is empty")
        if not self.unique_id.strip():
            raise InvalidValue("DocumentEntry uniqueId is empty")
        if not self.mime_type.strip():
            raise InvalidValue("DocumentEntry mimeType is empty")
        if self.size is not None and self.size < 0:
            raise InvalidValue(f"DocumentEntry size is negative: {self.size}")
