"""Patient Location Query [ITI-56], Initiating Gateway and Health Data Locator: the codec.

Pure: model values to ``xcpd:PatientLocationQueryRequest`` /
``xcpd:PatientLocationQueryResponse`` elements (namespace ``urn:ihe:iti:xcpd:2009``)
and back.  No official schema for these elements is in the conformance set,
so the shapes follow the spec digest (xcpd-iti55.md section 8, after IPF's
``XCPD_PLQ.xsd``)::

    <xcpd:PatientLocationQueryRequest>
      <xcpd:RequestedPatientId root="..." extension="..."/>        (hl7:II, 1..1)
    </xcpd:PatientLocationQueryRequest>
    <xcpd:PatientLocationQueryResponse>
      <xcpd:PatientLocationResponse>                                (0..n read, see below)
        <xcpd:HomeCommunityId>urn:oid:...</xcpd:HomeCommunityId>   (xs:anyURI)
        <xcpd:CorrespondingPatientId root="..." extension="..."/>
        <xcpd:RequestedPatientId root="..." extension="..."/>
      </xcpd:PatientLocationResponse>
    </xcpd:PatientLocationQueryResponse>

Lenient on input, strict on output: child elements may also be unqualified;
a homeCommunityId may be a bare OID or ``urn:oid:``; an empty response is "no
locations" (the schema digest says 1..n, Carequality names the empty list as a
flow); one unreadable PatientLocationResponse is kept as a
:class:`~imagebridge.model.patient_location.RejectedLocation` rather than
failing the others; elements the schema does not define are kept as notes.
Output always writes ``urn:oid:`` and qualified elements.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from imagebridge.errors import (
    MissingElement,
    PayloadError,
    TooManyElements,
    UnexpectedElement,
    WrongNamespace,
)
from imagebridge.model.ids import HomeCommunityId, strip_urn_oid
from imagebridge.model.patient_location import (
    MAX_NOTE_LENGTH,
    MAX_NOTES,
    PatientLocationQueryRequest,
    PatientLocationQueryResponse,
    PatientLocationResponse,
    RejectedLocation,
)
from imagebridge.model.xcpd import II
from imagebridge.wire import ns
from imagebridge.wire.xml import Element, elements, expect, qname_of, require_attr, text_of

REQUEST: Final = "PatientLocationQueryRequest"
RESPONSE: Final = "PatientLocationQueryResponse"
LOCATION: Final = "PatientLocationResponse"
HOME_COMMUNITY_ID: Final = "HomeCommunityId"
CORRESPONDING_PATIENT_ID: Final = "CorrespondingPatientId"
REQUESTED_PATIENT_ID: Final = "RequestedPatientId"
DEFAULT_MAX_LOCATIONS: Final = 1000
"""More PatientLocationResponse elements than this are refused before any is read."""

_ACCEPTED_NS: Final = (ns.XCPD, "")
_NSMAP: Final = {"xcpd": ns.XCPD}


# --- rendering ---------------------------------------------------------------------------


def _sub(parent: Element, local: str) -> Element:
    return etree.SubElement(parent, ns.q(ns.XCPD, local))


def _render_ii(parent: Element, local: str, value: II) -> None:
    el = _sub(parent, local)
    el.set("root", value.root)
    if value.extension is not None:
        el.set("extension", value.extension)


def render_patient_location_query_request(request: PatientLocationQueryRequest) -> Element:
    """The ``xcpd:PatientLocationQueryRequest`` element for *request*."""
    root = etree.Element(ns.q(ns.XCPD, REQUEST), nsmap=_NSMAP)
    _render_ii(root, REQUESTED_PATIENT_ID, request.requested_patient_id)
    return root


def render_patient_location_query_response(response: PatientLocationQueryResponse) -> Element:
    """The ``xcpd:PatientLocationQueryResponse`` element (locations only; notes are input-side)."""
    root = etree.Element(ns.q(ns.XCPD, RESPONSE), nsmap=_NSMAP)
    for location in response.locations:
        el = _sub(root, LOCATION)
        _sub(el, HOME_COMMUNITY_ID).text = location.home_community_id.urn
        _render_ii(el, CORRESPONDING_PATIENT_ID, location.corresponding_patient_id)
        if location.requested_patient_id is not None:
            _render_ii(el, REQUESTED_PATIENT_ID, location.requested_patient_id)
    return root


# --- parsing -----------------------------------------------------------------------------


def _expect_root(el: Element, local: str) -> None:
    namespace, name = qname_of(el)
    if name == local and namespace != ns.XCPD:
        raise WrongNamespace(f"element {local} is in namespace {namespace!r}, expected {ns.XCPD!r}")
    expect(el, ns.XCPD, local)


def _named(el: Element, local: str) -> list[Element]:
    """Children named *local* in the xcpd namespace or unqualified; another namespace refused."""
    found: list[Element] = []
    for c in elements(el):
        namespace, name = qname_of(c)
        if name != local:
            continue
        if namespace not in _ACCEPTED_NS:
            raise WrongNamespace(
                f"element {local} under {qname_of(el)[1]} is in namespace {namespace!r}, "
                f"expected {ns.XCPD!r}"
            )
        found.append(c)
    return found


def _optional(el: Element, local: str) -> Element | None:
    found = _named(el, local)
    if len(found) > 1:
        raise UnexpectedElement(f"element {local} is repeated under {qname_of(el)[1]}")
    return found[0] if found else None


def _required(el: Element, local: str) -> Element:
    found = _optional(el, local)
    if found is None:
        raise MissingElement(f"required element {local} is missing under {qname_of(el)[1]}")
    return found


def _parse_ii(el: Element) -> II:
    root = strip_urn_oid(require_attr(el, "root"))
    extension = (el.get("extension") or "").strip() or None
    return II(root, extension)


def parse_patient_location_query_request(el: Element) -> PatientLocationQueryRequest:
    """Decode ``xcpd:PatientLocationQueryRequest``; a :class:`PayloadError` on bad input."""
    _expect_root(el, REQUEST)
    return PatientLocationQueryRequest(_parse_ii(_required(el, REQUESTED_PATIENT_ID)))


def _parse_location(el: Element) -> PatientLocationResponse:
    hcid_el = _required(el, HOME_COMMUNITY_ID)
    hcid_text = text_of(hcid_el)
    if not hcid_text:
        raise MissingElement(f"element {HOME_COMMUNITY_ID} under {LOCATION} is empty")
    requested = _optional(el, REQUESTED_PATIENT_ID)
    return PatientLocationResponse(
        home_community_id=HomeCommunityId.parse(hcid_text),
        corresponding_patient_id=_parse_ii(_required(el, CORRESPONDING_PATIENT_ID)),
        requested_patient_id=None if requested is None else _parse_ii(requested),
    )


def _note(el: Element) -> str:
    """What an element the schema does not define says: its name, codes and text."""
    parts: list[str] = []
    for node in el.iter():
        if not isinstance(node.tag, str):
            continue
        for attr in ("code", "displayName", "value"):
            value = (node.get(attr) or "").strip()
            if value:
                parts.append(value)
        text = (node.text or "").strip()
        if text:
            parts.append(text)
    note = f"{qname_of(el)[1]}: {'; '.join(parts)}" if parts else qname_of(el)[1]
    return " ".join(note.split())[:MAX_NOTE_LENGTH]


def parse_patient_location_query_response(
    el: Element, *, max_locations: int = DEFAULT_MAX_LOCATIONS
) -> PatientLocationQueryResponse:
    """Decode ``xcpd:PatientLocationQueryResponse`` leniently (see the module docstring).

    The root element must be right (:class:`UnexpectedElement`,
    :class:`WrongNamespace`); more than *max_locations* entries raise
    :class:`TooManyElements`.  A bad entry becomes a ``RejectedLocation``.
    """
    _expect_root(el, RESPONSE)
    entries = _named(el, LOCATION)
    if len(entries) > max_locations:
        raise TooManyElements(
            f"{len(entries)} {LOCATION} elements exceed the limit of {max_locations}",
            LOCATION,
            max_locations,
        )
    locations: list[PatientLocationResponse] = []
    rejected: list[RejectedLocation] = []
    for index, entry in enumerate(entries):
        try:
            locations.append(_parse_location(entry))
        except PayloadError as exc:
            rejected.append(RejectedLocation(index, exc.message))
    notes = [_note(c) for c in elements(el) if qname_of(c)[1] != LOCATION]
    if len(notes) > MAX_NOTES:
        notes[MAX_NOTES - 1 :] = [f"and {len(notes) - MAX_NOTES + 1} more elements"]
    return PatientLocationQueryResponse(tuple(locations), tuple(rejected), tuple(notes))
