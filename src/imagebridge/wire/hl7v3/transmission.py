"""Cross Gateway Patient Discovery [ITI-55], the HL7 v3 transmission wrapper parts.

Sender and receiver devices (MCCI_MT000100UV01 / MCCI_MT000300UV01) with the
community's homeCommunityId on ``asAgent/representedOrganization/id/@root``,
and the required single elements and codes of the wrapper.
"""

from __future__ import annotations

from imagebridge.errors import InvalidOid, MissingElement, UnexpectedElement
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.xcpd import Device
from imagebridge.wire.hl7v3.datatypes import (
    attr,
    hl7_child,
    hl7_children,
    parse_tel,
    render_ii,
    require_hl7_child,
    require_ii,
    sub,
)
from imagebridge.wire.xml import Element


def parse_home_community_id(el: Element | None, where: str) -> HomeCommunityId | None:
    """A homeCommunityId from ``id/@root``: bare OID, ``urn:oid:`` tolerated, nothing guessed."""
    root = attr(el, "root")
    if root is None:
        return None
    try:
        return HomeCommunityId.parse(root)
    except InvalidOid as exc:
        raise InvalidOid(f"{where} homeCommunityId is not an OID: {root[:80]!r}") from exc


def parse_device(comm: Element, where: str) -> Device:
    """The ``device`` of a ``sender`` or ``receiver``; ``where`` names it in errors."""
    device = require_hl7_child(comm, "device")
    org = hl7_child(hl7_child(device, "asAgent"), "representedOrganization")
    telecoms = [t for t in (parse_tel(c) for c in hl7_children(device, "telecom")) if t]
    return Device(
        id=require_ii(device),
        home_community_id=parse_home_community_id(hl7_child(org, "id"), where),
        telecom=telecoms[0].value if telecoms else None,
    )


def require_single(el: Element, local: str) -> Element:
    """A child that must occur exactly once."""
    found = hl7_children(el, local)
    if len(found) > 1:
        raise UnexpectedElement(f"{len(found)} {local} elements; ITI-55 allows exactly one")
    return require_hl7_child(el, local)


def render_device(parent: Element, local: str, type_code: str, device: Device) -> None:
    """``sender``/``receiver`` with device id, endpoint telecom and homeCommunityId."""
    comm = sub(parent, local, typeCode=type_code)
    dev = sub(comm, "device", classCode="DEV", determinerCode="INSTANCE")
    render_ii(dev, "id", device.id)
    if device.telecom is not None:
        sub(dev, "telecom", value=device.telecom)
    if device.home_community_id is not None:
        agent = sub(dev, "asAgent", classCode="AGNT")
        org = sub(agent, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
        sub(org, "id", root=device.home_community_id.oid)


def require_code(el: Element, local: str) -> str:
    """The ``code`` attribute of a required child (processingCode, typeCode, ...)."""
    code = attr(require_hl7_child(el, local), "code")
    if code is None:
        raise MissingElement(f"{local}/@code is missing")
    return code
