"""Cross Gateway Query [ITI-38] DocumentEntry codec: ``rim:ExtrinsicObject`` <-> DocumentEntry.

Used by the ITI-38 response codec, by the KOS metadata code and for
submission metadata.  Lenient on input (ids without ``urn:uuid:``, ISO 8601
times, a ``home`` without ``urn:oid:``, classifications outside the entry,
an author whose ``classifiedObject`` points elsewhere, slots in any order);
strict on output (schema order, every id present, values within the
schema's lengths).  Slots without a DocumentEntry field are kept in
``extra_slots``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from lxml import etree

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import strip_urn_oid, validate_oid
from imagebridge.model.xds import AvailabilityStatus, DocumentEntry, DocumentEntryType, Dtm, Slot
from imagebridge.wire import ns
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.classification import (
    parse_classifications,
    parse_identifiers,
    render_classifications,
    render_identifiers,
)
from imagebridge.wire.xds.rim import (
    check_children,
    normalise_id,
    parse_home,
    render_common_tail,
    version_name_of,
    xml_compatible,
)
from imagebridge.wire.xds.slots import (
    parse_international_string,
    parse_slots,
    render_slot,
    rim_children,
)
from imagebridge.wire.xml import Element, expect, require_attr

T = TypeVar("T")

_EXTRINSIC_CHILDREN = frozenset(
    {
        "Slot",
        "Name",
        "Description",
        "VersionInfo",
        "ContentVersionInfo",
        "Classification",
        "ExternalIdentifier",
    }
)
_DIGITS = re.compile(r"^[0-9]+$")
_DEFAULT_MIME_TYPE = "application/octet-stream"  # rim.xsd default of ExtrinsicObject/@mimeType


def is_document_entry(el: Element) -> bool:
    """True for an ExtrinsicObject whose objectType is a DocumentEntry type (or absent)."""
    object_type = el.get("objectType")
    if object_type is None or not object_type.strip():
        return True
    try:
        DocumentEntryType.parse(object_type)
    except InvalidValue:
        return False
    return True


# --- slots -------------------------------------------------------------------------------------

Reader = Callable[[Slot, str], tuple[str, object]]


def _converted(what: str, convert: Callable[[str], T], value: str) -> T:
    """Apply *convert*; its InvalidValue (or subclass) gains *what* as context."""
    try:
        return convert(value)
    except InvalidValue as exc:
        raise type(exc)(f"{what}: {exc.message}") from exc


def _single(slot: Slot, where: str) -> str:
    if len(slot.values) != 1 or not slot.values[0]:
        raise InvalidValue(f"slot {slot.name} of {where} needs exactly one value")
    return slot.values[0]


def _dtm(key: str) -> Reader:
    return lambda s, where: (key, _converted(s.name, Dtm.parse, _single(s, where)))


def _text(key: str) -> Reader:
    return lambda s, where: (key, _single(s, where))


def _values(key: str) -> Reader:
    return lambda s, where: (key, s.values)


def _size(s: Slot, where: str) -> tuple[str, object]:
    text = _single(s, where)
    if not _DIGITS.match(text):
        raise InvalidValue(f"slot size of {where} is not a non-negative integer: {text[:40]!r}")
    return "size", int(text)


def _repository(s: Slot, where: str) -> tuple[str, object]:
    oid = strip_urn_oid(_single(s, where))
    return "repository_unique_id", validate_oid(oid, f"repositoryUniqueId of {where}")


_SLOT_READERS: dict[str, Reader] = {
    v.SLOT_CREATION_TIME: _dtm("creation_time"),
    v.SLOT_SERVICE_START_TIME: _dtm("service_start_time"),
    v.SLOT_SERVICE_STOP_TIME: _dtm("service_stop_time"),
    v.SLOT_HASH: _text("hash"),
    v.SLOT_SIZE: _size,
    v.SLOT_LANGUAGE_CODE: _text("language_code"),
    v.SLOT_REPOSITORY_UNIQUE_ID: _repository,
    v.SLOT_SOURCE_PATIENT_ID: _text("source_patient_id"),
    v.SLOT_SOURCE_PATIENT_INFO: _values("source_patient_info"),
    v.SLOT_LEGAL_AUTHENTICATOR: _text("legal_authenticator"),
    v.SLOT_REFERENCE_ID_LIST: _values("reference_id_list"),
    v.SLOT_URI: _text("uri"),
    v.SLOT_DOCUMENT_AVAILABILITY: _text("document_availability"),
}


def _parse_slots(slots: Sequence[Slot], where: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    extra: list[Slot] = []
    for s in slots:
        reader = _SLOT_READERS.get(s.name)
        if reader is None:
            extra.append(s)
            continue
        key, value = reader(s, where)
        if key in fields:
            raise InvalidValue(f"slot {s.name} appears twice in {where}")
        fields[key] = value
    fields["extra_slots"] = tuple(extra)
    return fields


def _slots_of(entry: DocumentEntry) -> list[Slot]:
    single: list[tuple[str, object]] = [
        (v.SLOT_CREATION_TIME, entry.creation_time),
        (v.SLOT_HASH, entry.hash),
        (v.SLOT_LANGUAGE_CODE, entry.language_code),
        (v.SLOT_LEGAL_AUTHENTICATOR, entry.legal_authenticator),
        (v.SLOT_REPOSITORY_UNIQUE_ID, entry.repository_unique_id),
        (v.SLOT_SERVICE_START_TIME, entry.service_start_time),
        (v.SLOT_SERVICE_STOP_TIME, entry.service_stop_time),
        (v.SLOT_SIZE, entry.size),
        (v.SLOT_SOURCE_PATIENT_ID, entry.source_patient_id),
        (v.SLOT_URI, entry.uri),
        (v.SLOT_DOCUMENT_AVAILABILITY, entry.document_availability),
    ]
    slots = [Slot(name, (str(value),)) for name, value in single if value is not None]
    if entry.source_patient_info:
        slots.append(Slot(v.SLOT_SOURCE_PATIENT_INFO, entry.source_patient_info))
    if entry.reference_id_list:
        slots.append(Slot(v.SLOT_REFERENCE_ID_LIST, entry.reference_id_list))
    return slots + list(entry.extra_slots)


# --- ExtrinsicObject ---------------------------------------------------------------------------


def parse_document_entry(el: Element, detached: Sequence[Element] = ()) -> DocumentEntry:
    """Decode a ``rim:ExtrinsicObject`` DocumentEntry.

    *detached* are Classification / ExternalIdentifier elements found outside
    the ExtrinsicObject that refer to it (ebRIM allows both placements).
    Raises :class:`MissingElement` (no id, no uniqueId), :class:`InvalidValue`
    (bad time, size, code, objectType, status), :class:`InvalidOid` (home,
    repositoryUniqueId), :class:`WrongNamespace` / :class:`UnexpectedElement`.
    """
    expect(el, ns.RIM, "ExtrinsicObject")
    check_children(el, _EXTRINSIC_CHILDREN)
    entry_uuid = normalise_id(require_attr(el, "id"))
    where = f"ExtrinsicObject {entry_uuid[:80]}"
    object_type = (el.get("objectType") or "").strip()
    status = (el.get("status") or "").strip()
    fields: dict[str, object] = {
        "entry_uuid": entry_uuid,
        "mime_type": (el.get("mimeType") or _DEFAULT_MIME_TYPE).strip(),
        "object_type": (
            DocumentEntryType.parse(object_type) if object_type else DocumentEntryType.STABLE
        ),
        "status": AvailabilityStatus.parse(status) if status else None,
        "home": parse_home(el),
        "lid": el.get("lid"),
        "version_name": version_name_of(el),
        "title": parse_international_string(next(iter(rim_children(el, "Name")), None)),
        "comments": parse_international_string(next(iter(rim_children(el, "Description")), None)),
    }
    fields.update(_parse_slots(parse_slots(el), where))
    rim_classification = ns.q(ns.RIM, "Classification")
    outside = [d for d in detached if d.tag == rim_classification]
    fields.update(parse_classifications(rim_children(el, "Classification") + outside, where))
    rim_identifier = ns.q(ns.RIM, "ExternalIdentifier")
    outside = [d for d in detached if d.tag == rim_identifier]
    fields.update(parse_identifiers(rim_children(el, "ExternalIdentifier") + outside, where))
    return DocumentEntry(**fields)  # type: ignore[arg-type]


@xml_compatible
def render_document_entry(entry: DocumentEntry, parent: Element | None = None) -> Element:
    """Encode a DocumentEntry as ``rim:ExtrinsicObject`` (appended to *parent* if given).

    Sub-objects without an id get a deterministic ``urn:uuid:`` derived from
    the entryUUID, so the output is reproducible (no randomness).
    """
    tag = ns.q(ns.RIM, "ExtrinsicObject")
    el = (
        etree.SubElement(parent, tag)
        if parent is not None
        else etree.Element(tag, nsmap={"rim": ns.RIM})
    )
    el.set("id", entry.entry_uuid)
    if entry.home is not None:
        el.set("home", entry.home.urn)
    if entry.lid is not None:
        el.set("lid", entry.lid)
    el.set("objectType", entry.object_type.value)
    if entry.status is not None:
        el.set("status", entry.status.value)
    el.set("mimeType", entry.mime_type)
    for slot in _slots_of(entry):
        render_slot(el, slot)
    render_common_tail(el, entry.title, entry.comments, entry.version_name)
    render_classifications(el, entry)
    render_identifiers(el, entry)
    return el
