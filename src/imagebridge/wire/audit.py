"""Audit Trail and Node Authentication [ITI-20], Secure Node: DICOM PS3.15 audit message codec.

:func:`parse_audit_message` and :func:`render_audit_message` convert between
``AuditMessage`` XML (no namespace) and :class:`~imagebridge.model.audit.AuditMessage`.
Pure: the event time, ids and every value are passed in.

Lenient on input: the RFC 3881 attribute names ``code``/``displayName`` are
read where ``csd-code``/``originalText`` are missing, whitespace in base64 is
ignored, an absent ``UserIsRequestor`` means true (RFC 3881 default), unknown
elements and attributes are ignored.  Strict on output: the rendered message
validates against IPF's ``dicom2017c.xsd`` (conformance README: not dcm4che's).
Errors are :class:`MissingElement`, :class:`InvalidValue` (and
:class:`InvalidTimestamp`) with the element that is wrong.
"""

from __future__ import annotations

import base64
import binascii
from enum import Enum
from typing import TypeVar

from lxml import etree

from imagebridge.errors import InvalidValue, MissingElement
from imagebridge.model.audit import (
    ActiveParticipant,
    AuditCode,
    AuditMessage,
    AuditSourceIdentification,
    AuditSourceTypeCode,
    DicomObjectDescription,
    EventActionCode,
    EventIdentification,
    EventOutcomeIndicator,
    NetworkAccessPointTypeCode,
    ParticipantObjectDetail,
    ParticipantObjectIdentification,
    ParticipantObjectTypeCode,
    SopClass,
)
from imagebridge.model.instant import Instant
from imagebridge.wire.xml import Element, elements, expect, text_of

_E = TypeVar("_E", bound=Enum)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


# --- small readers (audit elements have no namespace) -----------------------------------


def _kids(el: Element, local: str) -> list[Element]:
    return [c for c in elements(el) if c.tag == local]


def _one(el: Element, local: str) -> Element:
    found = _kids(el, local)
    if not found:
        raise MissingElement(f"audit message: {local} is missing under {el.tag}")
    return found[0]


def _opt_one(el: Element, local: str) -> Element | None:
    found = _kids(el, local)
    return found[0] if found else None


def _attr(el: Element, name: str) -> str | None:
    value = el.get(name)
    return value.strip() if value is not None and value.strip() else None


def _req(el: Element, name: str) -> str:
    value = _attr(el, name)
    if value is None:
        raise MissingElement(f"audit message: attribute {name} is missing on {el.tag}")
    return value


def _enum(kind: type[_E], value: str, what: str) -> _E:
    try:
        return kind(value)
    except ValueError as exc:
        raise InvalidValue(f"audit message: {what} {value[:20]!r} is not a known code") from exc


def _opt_enum(kind: type[_E], value: str | None, what: str) -> _E | None:
    return None if value is None else _enum(kind, value, what)


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidValue(f"audit message: {what} {value[:20]!r} is not an integer") from exc


def _opt_int(value: str | None, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _bool(value: str | None, what: str, default: bool | None = None) -> bool | None:
    if value is None:
        return default
    if value.lower() not in _BOOLEANS:
        raise InvalidValue(f"audit message: {what} {value[:20]!r} is not an xs:boolean")
    return _BOOLEANS[value.lower()]


def _base64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidValue(f"audit message: {what} is not valid base64") from exc


def _code(el: Element) -> AuditCode:
    """A coded value; RFC 3881's ``code``/``displayName`` stand in for DICOM's names."""
    code = _attr(el, "csd-code") or _attr(el, "code")
    if code is None:
        raise MissingElement(f"audit message: {el.tag} has no csd-code")
    system = _attr(el, "codeSystemName")
    if system is None:
        raise MissingElement(f"audit message: {el.tag} {code} has no codeSystemName")
    display = _attr(el, "displayName")
    text = _attr(el, "originalText") or display
    if text is None:
        raise MissingElement(f"audit message: {el.tag} {code} has no originalText")
    return AuditCode(code, system, text, display)


# --- parse ---------------------------------------------------------------------------------


def parse_audit_message(el: Element) -> AuditMessage:
    """Decode an ``AuditMessage`` element (DICOM 2017c / RFC 3881 names)."""
    expect(el, "", "AuditMessage")
    return AuditMessage(
        event_identification=_event(_one(el, "EventIdentification")),
        active_participants=tuple(_participant(p) for p in _kids(el, "ActiveParticipant")),
        audit_source_identification=_source(_one(el, "AuditSourceIdentification")),
        participant_objects=tuple(_object(o) for o in _kids(el, "ParticipantObjectIdentification")),
    )


def _event(el: Element) -> EventIdentification:
    outcome = _enum(
        EventOutcomeIndicator, _req(el, "EventOutcomeIndicator"), "EventOutcomeIndicator"
    )
    description = _opt_one(el, "EventOutcomeDescription")
    return EventIdentification(
        event_id=_code(_one(el, "EventID")),
        event_date_time=Instant.parse(_req(el, "EventDateTime"), "EventDateTime"),
        event_outcome_indicator=outcome,
        event_action_code=_opt_enum(
            EventActionCode, _attr(el, "EventActionCode"), "EventActionCode"
        ),
        event_type_codes=tuple(_code(c) for c in _kids(el, "EventTypeCode")),
        event_outcome_description=text_of(description) if description is not None else None,
        purposes_of_use=tuple(_code(c) for c in _kids(el, "PurposeOfUse")),
    )


def _participant(el: Element) -> ActiveParticipant:
    media = _opt_one(el, "MediaIdentifier")
    media_type = _one(media, "MediaType") if media is not None else None
    return ActiveParticipant(
        user_id=_req(el, "UserID"),
        user_is_requestor=bool(_bool(_attr(el, "UserIsRequestor"), "UserIsRequestor", True)),
        alternative_user_id=_attr(el, "AlternativeUserID"),
        user_name=_attr(el, "UserName"),
        network_access_point_id=_attr(el, "NetworkAccessPointID"),
        network_access_point_type_code=_opt_enum(
            NetworkAccessPointTypeCode,
            _attr(el, "NetworkAccessPointTypeCode"),
            "NetworkAccessPointTypeCode",
        ),
        role_id_codes=tuple(_code(c) for c in _kids(el, "RoleIDCode")),
        media_type=_code(media_type) if media_type is not None else None,
    )


def _source(el: Element) -> AuditSourceIdentification:
    return AuditSourceIdentification(
        audit_source_id=_req(el, "AuditSourceID"),
        audit_enterprise_site_id=_attr(el, "AuditEnterpriseSiteID"),
        type_codes=tuple(
            AuditSourceTypeCode(
                code=_attr(c, "csd-code") or _attr(c, "code") or _req(c, "csd-code"),
                code_system_name=_attr(c, "codeSystemName"),
                original_text=_attr(c, "originalText"),
                display_name=_attr(c, "displayName"),
            )
            for c in _kids(el, "AuditSourceTypeCode")
        ),
    )


def _object(el: Element) -> ParticipantObjectIdentification:
    name = _opt_one(el, "ParticipantObjectName")
    query = _opt_one(el, "ParticipantObjectQuery")
    return ParticipantObjectIdentification(
        id_type_code=_code(_one(el, "ParticipantObjectIDTypeCode")),
        object_id=_attr(el, "ParticipantObjectID"),
        type_code=_opt_enum(
            ParticipantObjectTypeCode,
            _attr(el, "ParticipantObjectTypeCode"),
            "ParticipantObjectTypeCode",
        ),
        type_code_role=_opt_int(
            _attr(el, "ParticipantObjectTypeCodeRole"), "ParticipantObjectTypeCodeRole"
        ),
        data_life_cycle=_opt_int(
            _attr(el, "ParticipantObjectDataLifeCycle"), "ParticipantObjectDataLifeCycle"
        ),
        sensitivity=_attr(el, "ParticipantObjectSensitivity"),
        name=text_of(name) if name is not None else None,
        query=_base64(text_of(query), "ParticipantObjectQuery") if query is not None else None,
        details=tuple(
            ParticipantObjectDetail(
                _req(d, "type"), _base64(d.get("value") or "", "ParticipantObjectDetail value")
            )
            for d in _kids(el, "ParticipantObjectDetail")
        ),
        descriptions=tuple(_description(d) for d in _kids(el, "ParticipantObjectDescription")),
    )


def _description(el: Element) -> DicomObjectDescription:
    study = _opt_one(el, "ParticipantObjectContainsStudy")
    encrypted = _opt_one(el, "Encrypted")
    anonymized = _opt_one(el, "Anonymized")
    return DicomObjectDescription(
        mpps_uids=tuple(_req(m, "UID") for m in _kids(el, "MPPS")),
        accession_numbers=tuple(_req(a, "Number") for a in _kids(el, "Accession")),
        sop_classes=tuple(
            SopClass(
                number_of_instances=_int(_req(s, "NumberOfInstances"), "NumberOfInstances"),
                uid=_attr(s, "UID"),
                instance_uids=tuple(_req(i, "UID") for i in _kids(s, "Instance")),
            )
            for s in _kids(el, "SOPClass")
        ),
        study_uids=tuple(_req(s, "UID") for s in _kids(study, "StudyIDs"))
        if study is not None
        else None,
        encrypted=_bool(text_of(encrypted), "Encrypted") if encrypted is not None else None,
        anonymized=_bool(text_of(anonymized), "Anonymized") if anonymized is not None else None,
    )


# --- render ----------------------------------------------------------------------------------


def render_audit_message(msg: AuditMessage) -> Element:
    """Encode an ``AuditMessage`` (DICOM 2017c element and attribute names)."""
    root = etree.Element("AuditMessage")
    ev = msg.event_identification
    ev_el = etree.SubElement(root, "EventIdentification")
    _set(ev_el, "EventActionCode", ev.event_action_code.value if ev.event_action_code else None)
    ev_el.set("EventDateTime", ev.event_date_time.text)
    ev_el.set("EventOutcomeIndicator", ev.event_outcome_indicator.value)
    _render_code(ev_el, "EventID", ev.event_id)
    for code in ev.event_type_codes:
        _render_code(ev_el, "EventTypeCode", code)
    if ev.event_outcome_description is not None:
        etree.SubElement(ev_el, "EventOutcomeDescription").text = ev.event_outcome_description
    for code in ev.purposes_of_use:
        _render_code(ev_el, "PurposeOfUse", code)
    for p in msg.active_participants:
        _render_participant(root, p)
    src = msg.audit_source_identification
    src_el = etree.SubElement(root, "AuditSourceIdentification")
    _set(src_el, "AuditEnterpriseSiteID", src.audit_enterprise_site_id)
    src_el.set("AuditSourceID", src.audit_source_id)
    for t in src.type_codes:
        t_el = etree.SubElement(src_el, "AuditSourceTypeCode")
        t_el.set("csd-code", t.code)
        _set(t_el, "codeSystemName", t.code_system_name)
        _set(t_el, "displayName", t.display_name)
        _set(t_el, "originalText", t.original_text)
    for o in msg.participant_objects:
        _render_object(root, o)
    return root


def _set(el: Element, name: str, value: str | None) -> None:
    if value is not None:
        el.set(name, value)


def _render_code(parent: Element, local: str, code: AuditCode) -> None:
    el = etree.SubElement(parent, local)
    el.set("csd-code", code.code)
    el.set("codeSystemName", code.code_system_name)
    _set(el, "displayName", code.display_name)
    el.set("originalText", code.original_text)


def _render_participant(parent: Element, p: ActiveParticipant) -> None:
    el = etree.SubElement(parent, "ActiveParticipant")
    el.set("UserID", p.user_id)
    _set(el, "AlternativeUserID", p.alternative_user_id)
    _set(el, "UserName", p.user_name)
    el.set("UserIsRequestor", "true" if p.user_is_requestor else "false")
    _set(el, "NetworkAccessPointID", p.network_access_point_id)
    if p.network_access_point_type_code is not None:
        el.set("NetworkAccessPointTypeCode", p.network_access_point_type_code.value)
    for code in p.role_id_codes:
        _render_code(el, "RoleIDCode", code)
    if p.media_type is not None:
        _render_code(etree.SubElement(el, "MediaIdentifier"), "MediaType", p.media_type)


def _render_object(parent: Element, o: ParticipantObjectIdentification) -> None:
    el = etree.SubElement(parent, "ParticipantObjectIdentification")
    _set(el, "ParticipantObjectID", o.object_id)
    _set(el, "ParticipantObjectTypeCode", o.type_code.value if o.type_code else None)
    _set(el, "ParticipantObjectTypeCodeRole", _str(o.type_code_role))
    _set(el, "ParticipantObjectDataLifeCycle", _str(o.data_life_cycle))
    _set(el, "ParticipantObjectSensitivity", o.sensitivity)
    _render_code(el, "ParticipantObjectIDTypeCode", o.id_type_code)
    if o.name is not None:
        etree.SubElement(el, "ParticipantObjectName").text = o.name
    if o.query is not None:
        etree.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(o.query).decode()
    for d in o.details:
        d_el = etree.SubElement(el, "ParticipantObjectDetail")
        d_el.set("type", d.type)
        d_el.set("value", base64.b64encode(d.value).decode())
    for desc in o.descriptions:
        _render_description(el, desc)


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


def _render_description(parent: Element, d: DicomObjectDescription) -> None:
    el = etree.SubElement(parent, "ParticipantObjectDescription")
    for uid in d.mpps_uids:
        etree.SubElement(el, "MPPS").set("UID", uid)
    for number in d.accession_numbers:
        etree.SubElement(el, "Accession").set("Number", number)
    for sop in d.sop_classes:
        s_el = etree.SubElement(el, "SOPClass")
        _set(s_el, "UID", sop.uid)
        s_el.set("NumberOfInstances", str(sop.number_of_instances))
        for uid in sop.instance_uids:
            etree.SubElement(s_el, "Instance").set("UID", uid)
    if d.study_uids is not None:
        study = etree.SubElement(el, "ParticipantObjectContainsStudy")
        for uid in d.study_uids:
            etree.SubElement(study, "StudyIDs").set("UID", uid)
    if d.encrypted is not None:
        etree.SubElement(el, "Encrypted").text = "true" if d.encrypted else "false"
    if d.anonymized is not None:
        etree.SubElement(el, "Anonymized").text = "true" if d.anonymized else "false"
