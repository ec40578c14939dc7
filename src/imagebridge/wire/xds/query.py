"""Cross Gateway Query [ITI-38] codec: ``AdhocQueryRequest`` and ``AdhocQueryResponse``.

Pure functions between the ebRS payload element (the SOAP Body child, as
returned by :func:`imagebridge.wire.xml.parse_xml`) and the model in
:mod:`imagebridge.model.xds_query`.  Elements are matched by namespace URI,
never by prefix.  DocumentEntries are decoded by
:mod:`imagebridge.wire.xds.metadata` (re-exported here).
"""

from __future__ import annotations

from lxml import etree

from imagebridge.errors import (
    ImageBridgeError,
    MissingElement,
    UnexpectedElement,
    UnknownCommunity,
)
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, Status
from imagebridge.model.xds import DocumentEntry, ObjectRef, Slot
from imagebridge.model.xds_query import (
    AdhocQueryRequest,
    AdhocQueryResponse,
    QueryParameter,
    ResponseObject,
    ReturnType,
)
from imagebridge.wire import ns
from imagebridge.wire.xds.metadata import (
    is_document_entry,
    parse_document_entry,
    render_document_entry,
)
from imagebridge.wire.xds.registry_response import (
    parse_registry_error_list,
    render_registry_error_list,
)
from imagebridge.wire.xds.rim import (
    normalise_id,
    parse_object_ref,
    parse_registry_object,
    render_object_ref,
    render_registry_object,
    xml_compatible,
)
from imagebridge.wire.xds.slots import parse_slots, render_slot, rim_children
from imagebridge.wire.xds.stored_query import parse_stored_query, render_stored_query
from imagebridge.wire.xml import Element, elements, expect, qname_of, require_attr, require_child

__all__ = [
    "parse_adhoc_query_request",
    "parse_adhoc_query_response",
    "parse_document_entry",
    "parse_registry_object_list",
    "render_adhoc_query_request",
    "render_adhoc_query_response",
    "render_document_entry",
    "render_registry_object_list",
]

_REQUEST_NSMAP = {"query": ns.QUERY, "rim": ns.RIM}
_RESPONSE_NSMAP = {"query": ns.QUERY, "rim": ns.RIM, "rs": ns.RS}
_TRUE = frozenset({"true", "1"})

# --- request -----------------------------------------------------------------------------------


def parse_adhoc_query_request(el: Element) -> AdhocQueryRequest:
    """Decode ``query:AdhocQueryRequest`` (ITI-38 / ITI-18).

    Lenient: any prefixes, ``home`` without ``urn:oid:``, stored-query ids
    without ``urn:uuid:``, stray attributes (``lid``/``objectType``/``status``
    on AdhocQuery, ``federated``/``maxResults``/``startIndex`` on the request)
    are ignored.  Raises :class:`UnknownStoredQuery`,
    :class:`StoredQueryMissingParam`, :class:`StoredQueryParamNumber`,
    :class:`StoredQueryParamSyntax`, :class:`UnknownCommunity` (malformed
    ``home``) or the structural payload errors.
    """
    expect(el, ns.QUERY, "AdhocQueryRequest")
    option = require_child(el, ns.QUERY, "ResponseOption")
    queries = rim_children(el, "AdhocQuery")
    if not queries:
        raise MissingElement("required element AdhocQuery is missing under AdhocQueryRequest")
    if len(queries) > 1:
        raise UnexpectedElement("AdhocQueryRequest carries more than one AdhocQuery")
    adhoc = queries[0]
    return_type = ReturnType.parse(option.get("returnType") or "RegistryObject")
    home = _request_home(adhoc.get("home"))
    composed = (option.get("returnComposedObjects") or "").strip().lower() in _TRUE
    params = tuple(QueryParameter(s.name, s.values) for s in parse_slots(adhoc))
    return AdhocQueryRequest(
        query=parse_stored_query(require_attr(adhoc, "id"), params),
        return_type=return_type,
        home_community_id=home,
        return_composed_objects=composed,
    )


def _request_home(value: str | None) -> HomeCommunityId | None:
    if value is None or not value.strip():
        return None
    try:
        return HomeCommunityId.parse(value)
    except ImageBridgeError as exc:
        raise UnknownCommunity(
            f"AdhocQuery home {value.strip()[:80]!r} is not a homeCommunityId: {exc.message}"
        ) from exc


@xml_compatible
def render_adhoc_query_request(request: AdhocQueryRequest) -> Element:
    """Encode ``query:AdhocQueryRequest`` (valid against query.xsd)."""
    root = etree.Element(ns.q(ns.QUERY, "AdhocQueryRequest"), nsmap=_REQUEST_NSMAP)
    option = etree.SubElement(root, ns.q(ns.QUERY, "ResponseOption"))
    option.set("returnType", request.return_type.value)
    option.set("returnComposedObjects", "true" if request.return_composed_objects else "false")
    adhoc = etree.SubElement(root, ns.q(ns.RIM, "AdhocQuery"))
    query_id, params = render_stored_query(request.query)
    adhoc.set("id", query_id)
    if request.home_community_id is not None:
        adhoc.set("home", request.home_community_id.urn)
    for p in params:
        render_slot(adhoc, Slot(p.name, p.values))
    return root


# --- response ----------------------------------------------------------------------------------


def parse_registry_object_list(el: Element) -> tuple[ResponseObject, ...]:
    """Decode ``rim:RegistryObjectList``.

    ExtrinsicObjects of a DocumentEntry objectType become DocumentEntries;
    Classifications and ExternalIdentifiers that sit beside an entry and point
    at it are folded into it; ObjectRefs become ObjectRefs; anything else is
    kept as a generic RegistryObject.
    """
    expect(el, ns.RIM, "RegistryObjectList")
    items = list(elements(el))
    for item in items:
        item_ns, name = qname_of(item)
        if item_ns != ns.RIM:
            raise UnexpectedElement(f"{name} in namespace {item_ns!r} inside RegistryObjectList")
    entry_ids = {
        normalise_id(require_attr(i, "id"))
        for i in items
        if i.tag == ns.q(ns.RIM, "ExtrinsicObject") and is_document_entry(i)
    }
    detached: dict[str, list[Element]] = {}
    kept: list[Element] = []
    for item in items:
        target = _detached_target(item)
        if target is not None and normalise_id(target) in entry_ids:
            detached.setdefault(normalise_id(target), []).append(item)
        else:
            kept.append(item)
    out: list[ResponseObject] = []
    for item in kept:
        name = qname_of(item)[1]
        if name == "ExtrinsicObject" and is_document_entry(item):
            entry_id = normalise_id(require_attr(item, "id"))
            out.append(parse_document_entry(item, detached.get(entry_id, ())))
        elif name == "ObjectRef":
            out.append(parse_object_ref(item))
        else:
            out.append(parse_registry_object(item))
    return tuple(out)


def _detached_target(item: Element) -> str | None:
    if item.tag == ns.q(ns.RIM, "Classification"):
        return item.get("classifiedObject")
    if item.tag == ns.q(ns.RIM, "ExternalIdentifier"):
        return item.get("registryObject")
    return None


@xml_compatible
def render_registry_object_list(
    objects: tuple[ResponseObject, ...], parent: Element | None = None
) -> Element:
    """Encode ``rim:RegistryObjectList`` (appended to *parent* if given)."""
    tag = ns.q(ns.RIM, "RegistryObjectList")
    el = (
        etree.SubElement(parent, tag)
        if parent is not None
        else etree.Element(tag, nsmap={"rim": ns.RIM})
    )
    for obj in objects:
        if isinstance(obj, DocumentEntry):
            render_document_entry(obj, el)
        elif isinstance(obj, ObjectRef):
            render_object_ref(obj, el)
        else:
            render_registry_object(obj, el)
    return el


def parse_adhoc_query_response(el: Element) -> AdhocQueryResponse:
    """Decode ``query:AdhocQueryResponse``.

    Lenient: a missing ``RegistryObjectList`` is an empty result, ``RegistryError``
    without ``location`` is accepted, ``totalResultCount``/``startIndex`` are ignored.
    """
    expect(el, ns.QUERY, "AdhocQueryResponse")
    errors: tuple[RegistryError, ...] = ()
    for child in elements(el):
        child_ns, name = qname_of(child)
        if name == "RegistryErrorList":
            errors += parse_registry_error_list(child)  # checks the rs namespace
        elif name not in ("RegistryObjectList", "ResponseSlotList"):
            raise UnexpectedElement(f"unexpected element {name} in AdhocQueryResponse")
        elif child_ns not in (ns.RIM, ns.RS):
            raise UnexpectedElement(f"{name} in namespace {child_ns!r} in AdhocQueryResponse")
    lists = rim_children(el, "RegistryObjectList")
    if len(lists) > 1:
        raise UnexpectedElement("AdhocQueryResponse carries more than one RegistryObjectList")
    return AdhocQueryResponse(
        status=Status.parse(require_attr(el, "status")),
        registry_objects=parse_registry_object_list(lists[0]) if lists else (),
        errors=errors,
    )


@xml_compatible
def render_adhoc_query_response(response: AdhocQueryResponse) -> Element:
    """Encode ``query:AdhocQueryResponse`` (valid against query.xsd)."""
    root = etree.Element(ns.q(ns.QUERY, "AdhocQueryResponse"), nsmap=_RESPONSE_NSMAP)
    root.set("status", response.status.value)
    if response.errors:
        root.append(render_registry_error_list(response.errors))
    render_registry_object_list(response.registry_objects, root)
    return root
