"""Cross Gateway Query [ITI-38] generic ebRIM objects: ids, ObjectRef, any RegistryObject.

Everything in a RegistryObjectList that is not a DocumentEntry (submission
sets, folders, associations, stand-alone classifications) is decoded into a
:class:`~imagebridge.model.xds.RegistryObject` and encoded back unchanged.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from lxml import etree

from imagebridge.errors import InvalidValue, UnexpectedElement
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.xds import InternationalString, ObjectRef, RegistryObject
from imagebridge.wire import ns
from imagebridge.wire.xds.slots import (
    parse_international_string,
    parse_slots,
    render_international_string,
    render_slot,
    rim_children,
)
from imagebridge.wire.xml import Element, elements, qname_of, require_attr

_BARE_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
# Namespace of the deterministic ids given to sub-objects that have none (uuid5).
_ID_NAMESPACE = uuid.UUID("6d1b8d3e-4a60-5b8e-9f7c-2a1c0e9d4b37")

# Attributes every RegistryObject may carry; the rest are type-specific.
_COMMON_ATTRIBUTES = frozenset({"id", "home", "lid", "objectType", "status"})
_REGISTRY_OBJECT_CHILDREN = frozenset(
    {"Slot", "Name", "Description", "VersionInfo", "Classification", "ExternalIdentifier"}
)


P = ParamSpec("P")
R = TypeVar("R")


def xml_compatible(render: Callable[P, R]) -> Callable[P, R]:
    """Turn lxml's ValueError for text XML cannot carry (control characters) into InvalidValue."""

    @functools.wraps(render)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return render(*args, **kwargs)
        except ValueError as exc:
            raise InvalidValue(f"a value cannot be written as XML: {exc}") from exc

    return checked


def normalise_id(value: str) -> str:
    """An object id or reference: a bare UUID gets its ``urn:uuid:`` prefix, others are kept."""
    text = value.strip()
    if _BARE_UUID.match(text):
        return "urn:uuid:" + text
    return text


def derived_id(*parts: str) -> str:
    """A deterministic ``urn:uuid:`` for a sub-object that has no id of its own."""
    return "urn:uuid:" + str(uuid.uuid5(_ID_NAMESPACE, "|".join(parts)))


def parse_home(el: Element) -> HomeCommunityId | None:
    """``@home`` as a homeCommunityId (bare OIDs and repeated ``urn:oid:`` accepted)."""
    value = el.get("home")
    if value is None or not value.strip():
        return None
    return HomeCommunityId.parse(value)


def check_children(el: Element, allowed: frozenset[str]) -> None:
    """Refuse child elements an ebRIM object of this kind cannot carry."""
    for c in elements(el):
        child_ns, name = qname_of(c)
        if child_ns == ns.RIM and name in allowed:
            continue
        raise UnexpectedElement(f"unexpected element {name} in {qname_of(el)[1]}")


def version_name_of(el: Element) -> str | None:
    found = rim_children(el, "VersionInfo")
    return found[0].get("versionName") if found else None


def parse_registry_object(el: Element) -> RegistryObject:
    """Any ``rim:*`` RegistryObject (RegistryPackage, Association, Classification ...)."""
    kind = qname_of(el)[1]
    check_children(el, _REGISTRY_OBJECT_CHILDREN | {"ContentVersionInfo"})
    attributes = tuple(
        (str(k), str(v)) for k, v in el.attrib.items() if str(k) not in _COMMON_ATTRIBUTES
    )
    return RegistryObject(
        kind=kind,
        id=normalise_id(require_attr(el, "id")),
        home=parse_home(el),
        lid=el.get("lid"),
        object_type=el.get("objectType"),
        status=el.get("status"),
        attributes=attributes,
        slots=parse_slots(el),
        name=parse_international_string(_first(el, "Name")),
        description=parse_international_string(_first(el, "Description")),
        version_name=version_name_of(el),
        classifications=tuple(parse_registry_object(c) for c in rim_children(el, "Classification")),
        external_identifiers=tuple(
            parse_registry_object(c) for c in rim_children(el, "ExternalIdentifier")
        ),
    )


def _first(el: Element, local: str) -> Element | None:
    found = rim_children(el, local)
    return found[0] if found else None


@xml_compatible
def render_registry_object(obj: RegistryObject, parent: Element | None = None) -> Element:
    """Encode a generic RegistryObject in schema order (appended to *parent* if given)."""
    tag = ns.q(ns.RIM, obj.kind)
    el = (
        etree.SubElement(parent, tag)
        if parent is not None
        else etree.Element(tag, nsmap={"rim": ns.RIM})
    )
    el.set("id", obj.id)
    if obj.home is not None:
        el.set("home", obj.home.urn)
    if obj.lid is not None:
        el.set("lid", obj.lid)
    if obj.object_type is not None:
        el.set("objectType", obj.object_type)
    if obj.status is not None:
        el.set("status", obj.status)
    for key, value in obj.attributes:
        el.set(key, value)
    for slot in obj.slots:
        render_slot(el, slot)
    render_common_tail(el, obj.name, obj.description, obj.version_name)
    for c in obj.classifications:
        render_registry_object(c, el)
    for x in obj.external_identifiers:
        render_registry_object(x, el)
    return el


def render_common_tail(
    el: Element,
    name: InternationalString | None,
    description: InternationalString | None,
    version_name: str | None,
) -> None:
    """Name, Description and VersionInfo, in that order (they follow the Slots)."""
    if name is not None:
        render_international_string(el, "Name", name)
    if description is not None:
        render_international_string(el, "Description", description)
    if version_name is not None:
        etree.SubElement(el, ns.q(ns.RIM, "VersionInfo")).set("versionName", version_name)


def parse_object_ref(el: Element) -> ObjectRef:
    """``rim:ObjectRef`` (id normalised, home lenient)."""
    return ObjectRef(normalise_id(require_attr(el, "id")), parse_home(el))


@xml_compatible
def render_object_ref(ref: ObjectRef, parent: Element | None = None) -> Element:
    tag = ns.q(ns.RIM, "ObjectRef")
    el = (
        etree.SubElement(parent, tag)
        if parent is not None
        else etree.Element(tag, nsmap={"rim": ns.RIM})
    )
    el.set("id", ref.id)
    if ref.home is not None:
        el.set("home", ref.home.urn)
    return el
