"""Cross Gateway Query [ITI-38] DocumentEntry classifications and external identifiers.

Codes (classCode, typeCode, formatCode, ...), authors, the limitedMetadata
flag, and the patientId / uniqueId ExternalIdentifiers of a DocumentEntry.
Classifications and identifiers with schemes this module does not know are
kept whole as generic RegistryObjects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lxml import etree

from imagebridge.errors import InvalidValue, MissingElement
from imagebridge.model.ids import PatientId
from imagebridge.model.xds import (
    Author,
    Code,
    DocumentEntry,
    InternationalString,
    RegistryObject,
    Slot,
)
from imagebridge.wire import ns
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.rim import (
    derived_id,
    normalise_id,
    parse_registry_object,
    render_registry_object,
)
from imagebridge.wire.xds.slots import (
    parse_international_string,
    parse_slots,
    render_international_string,
    render_slot,
    rim_children,
)
from imagebridge.wire.xml import Element, require_attr

logger = logging.getLogger(__name__)

# Single-valued code classifications: scheme -> DocumentEntry field.
SINGLE_CODES = {
    v.DE_CLASS_CODE: "class_code",
    v.DE_TYPE_CODE: "type_code",
    v.DE_FORMAT_CODE: "format_code",
    v.DE_HEALTHCARE_FACILITY_TYPE_CODE: "healthcare_facility_type_code",
    v.DE_PRACTICE_SETTING_CODE: "practice_setting_code",
}
MULTI_CODES = {
    v.DE_CONFIDENTIALITY_CODE: "confidentiality_code",
    v.DE_EVENT_CODE_LIST: "event_code_list",
}
_AUTHOR_SLOTS = frozenset(
    {
        v.SLOT_AUTHOR_PERSON,
        v.SLOT_AUTHOR_INSTITUTION,
        v.SLOT_AUTHOR_ROLE,
        v.SLOT_AUTHOR_SPECIALTY,
        v.SLOT_AUTHOR_TELECOMMUNICATION,
    }
)


def element_id(el: Element) -> str | None:
    """The element's id (normalised), or None when absent."""
    value = el.get("id")
    return normalise_id(value) if value and value.strip() else None


# --- parse -----------------------------------------------------------------------------------


def parse_code(el: Element, where: str) -> Code:
    """A coded classification: nodeRepresentation, one codingScheme value, Name as display."""
    slots = parse_slots(el)
    schemes = [s for s in slots if s.name == v.SLOT_CODING_SCHEME]
    if len(schemes) != 1 or len(schemes[0].values) != 1:
        raise InvalidValue(f"coded classification in {where} needs one codingScheme value")
    others = [s.name for s in slots if s.name != v.SLOT_CODING_SCHEME]
    if others:
        logger.warning("slots %s on a coded classification in %s are not kept", others, where)
    name = parse_international_string(next(iter(rim_children(el, "Name")), None))
    return Code(
        code=require_attr(el, "nodeRepresentation"),
        scheme=schemes[0].values[0],
        display_name=name.text if name is not None else None,
        id=element_id(el),
    )


def parse_author(el: Element) -> Author:
    """The author classification (its ``classifiedObject`` is not checked: partners err)."""
    slots = parse_slots(el)
    by_name: dict[str, tuple[str, ...]] = {}
    for s in slots:
        if s.name in _AUTHOR_SLOTS:
            by_name[s.name] = by_name.get(s.name, ()) + s.values
    persons = by_name.get(v.SLOT_AUTHOR_PERSON, ())
    if len(persons) > 1:
        raise InvalidValue("authorPerson takes one value")
    return Author(
        person=persons[0] if persons else None,
        institutions=by_name.get(v.SLOT_AUTHOR_INSTITUTION, ()),
        roles=by_name.get(v.SLOT_AUTHOR_ROLE, ()),
        specialties=by_name.get(v.SLOT_AUTHOR_SPECIALTY, ()),
        telecommunications=by_name.get(v.SLOT_AUTHOR_TELECOMMUNICATION, ()),
        extra_slots=tuple(s for s in slots if s.name not in _AUTHOR_SLOTS),
        id=element_id(el),
    )


def parse_classifications(classifications: Sequence[Element], where: str) -> dict[str, object]:
    """DocumentEntry fields from its Classification elements."""
    fields: dict[str, object] = {}
    authors: list[Author] = []
    multi: dict[str, list[Code]] = {key: [] for key in MULTI_CODES.values()}
    extra: list[RegistryObject] = []
    for c in classifications:
        scheme = (c.get("classificationScheme") or "").strip()
        node = (c.get("classificationNode") or "").strip()
        if node == v.LIMITED_METADATA_NODE and not scheme:
            fields["limited_metadata"] = True
        elif scheme == v.DE_AUTHOR:
            authors.append(parse_author(c))
        elif scheme in SINGLE_CODES:
            key = SINGLE_CODES[scheme]
            if key in fields:
                raise InvalidValue(f"{where} has more than one {key}")
            fields[key] = parse_code(c, where)
        elif scheme in MULTI_CODES:
            multi[MULTI_CODES[scheme]].append(parse_code(c, where))
        else:
            extra.append(parse_registry_object(c))
    fields["authors"] = tuple(authors)
    fields.update({key: tuple(codes) for key, codes in multi.items()})
    fields["extra_classifications"] = tuple(extra)
    return fields


def parse_identifiers(identifiers: Sequence[Element], where: str) -> dict[str, object]:
    """DocumentEntry fields from its ExternalIdentifier elements (uniqueId is required)."""
    fields: dict[str, object] = {}
    extra: list[RegistryObject] = []
    for x in identifiers:
        scheme = (x.get("identificationScheme") or "").strip()
        if scheme == v.DE_PATIENT_ID:
            if "patient_id" in fields:
                raise InvalidValue(f"{where} has more than one XDSDocumentEntry.patientId")
            try:
                fields["patient_id"] = PatientId.from_cx(require_attr(x, "value"))
            except InvalidValue as exc:  # InvalidOid stays InvalidOid
                raise type(exc)(f"XDSDocumentEntry.patientId: {exc.message}") from exc
            fields["patient_id_identifier_id"] = element_id(x)
        elif scheme == v.DE_UNIQUE_ID:
            if "unique_id" in fields:
                raise InvalidValue(f"{where} has more than one XDSDocumentEntry.uniqueId")
            fields["unique_id"] = require_attr(x, "value")
            fields["unique_id_identifier_id"] = element_id(x)
        else:
            extra.append(parse_registry_object(x))
    fields["extra_external_identifiers"] = tuple(extra)
    if "unique_id" not in fields:
        raise MissingElement(f"{where} has no XDSDocumentEntry.uniqueId ExternalIdentifier")
    return fields


# --- render ----------------------------------------------------------------------------------


def _classification(parent: Element, entry: DocumentEntry, scheme: str, cid: str) -> Element:
    el = etree.SubElement(parent, ns.q(ns.RIM, "Classification"))
    el.set("id", cid)
    el.set("classificationScheme", scheme)
    el.set("classifiedObject", entry.entry_uuid)
    return el


def _render_code(parent: Element, entry: DocumentEntry, scheme: str, code: Code, n: int) -> None:
    cid = code.id or derived_id(entry.entry_uuid, scheme, str(n))
    el = _classification(parent, entry, scheme, cid)
    el.set("nodeRepresentation", code.code)
    render_slot(el, Slot(v.SLOT_CODING_SCHEME, (code.scheme,)))
    if code.display_name is not None:
        render_international_string(el, "Name", InternationalString.of(code.display_name))


def _render_author(parent: Element, entry: DocumentEntry, author: Author, n: int) -> None:
    aid = author.id or derived_id(entry.entry_uuid, v.DE_AUTHOR, str(n))
    el = _classification(parent, entry, v.DE_AUTHOR, aid)
    el.set("nodeRepresentation", "")
    if author.person is not None:
        render_slot(el, Slot(v.SLOT_AUTHOR_PERSON, (author.person,)))
    for name, values in (
        (v.SLOT_AUTHOR_INSTITUTION, author.institutions),
        (v.SLOT_AUTHOR_ROLE, author.roles),
        (v.SLOT_AUTHOR_SPECIALTY, author.specialties),
        (v.SLOT_AUTHOR_TELECOMMUNICATION, author.telecommunications),
    ):
        if values:
            render_slot(el, Slot(name, values))
    for slot in author.extra_slots:
        render_slot(el, slot)


def render_classifications(el: Element, entry: DocumentEntry) -> None:
    """Append the entry's Classification elements (authors, codes, flags, extras)."""
    for n, author in enumerate(entry.authors):
        _render_author(el, entry, author, n)
    for scheme, key in SINGLE_CODES.items():
        code = getattr(entry, key)
        if code is not None:
            _render_code(el, entry, scheme, code, 0)
    for scheme, key in MULTI_CODES.items():
        for n, code in enumerate(getattr(entry, key)):
            _render_code(el, entry, scheme, code, n)
    if entry.limited_metadata:
        lm = etree.SubElement(el, ns.q(ns.RIM, "Classification"))
        lm.set("id", derived_id(entry.entry_uuid, v.LIMITED_METADATA_NODE))
        lm.set("classifiedObject", entry.entry_uuid)
        lm.set("classificationNode", v.LIMITED_METADATA_NODE)
    for extra in entry.extra_classifications:
        render_registry_object(extra, el)


def _render_identifier(
    parent: Element, entry: DocumentEntry, scheme: str, value: str, xid: str | None
) -> None:
    el = etree.SubElement(parent, ns.q(ns.RIM, "ExternalIdentifier"))
    el.set("id", xid or derived_id(entry.entry_uuid, scheme))
    el.set("registryObject", entry.entry_uuid)
    el.set("identificationScheme", scheme)
    el.set("value", value)
    name = v.DE_PATIENT_ID_NAME if scheme == v.DE_PATIENT_ID else v.DE_UNIQUE_ID_NAME
    render_international_string(el, "Name", InternationalString.of(name))


def render_identifiers(el: Element, entry: DocumentEntry) -> None:
    """Append patientId, uniqueId and any other ExternalIdentifier of the entry."""
    if entry.patient_id is not None:
        pid, xid = entry.patient_id.cx, entry.patient_id_identifier_id
        _render_identifier(el, entry, v.DE_PATIENT_ID, pid, xid)
    uid, xid = entry.unique_id, entry.unique_id_identifier_id
    _render_identifier(el, entry, v.DE_UNIQUE_ID, uid, xid)
    for extra in entry.extra_external_identifiers:
        render_registry_object(extra, el)
