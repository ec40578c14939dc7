"""DICOM JSON Model (PS3.18 F.2) read into imaging models: QIDO-RS matches and WADO-RS metadata.

:func:`instance_header_from_json` reads one instance object (a WADO-RS
metadata item or a QIDO-RS instance match) into an
:class:`~imagebridge.model.imaging.InstanceHeader`; :func:`study_summary_from_json`
reads a QIDO-RS study match.  Only the attributes a header holds are read,
straight from the JSON (no pydicom Dataset in between: a 5,000-instance
study converts in well under a second, on the event loop), with the same
lenient rules as the Part-10 reader in :mod:`imagebridge.dicom.headers`:
absent or malformed type 2/3 attributes become empty values, multi-values
are joined by ``\\``, a person name is its ``=``-joined component groups.

The JSON says nothing of the stored bytes: ``has_pixel_data`` is true when a
pixel data attribute is present (inline or as a BulkDataURI); the transfer
syntax is (0002,0010) when the server includes it, else the first (0008,3002)
Available Transfer Syntax UID, else ``""`` (unknown); ``file_size`` is None.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from imagebridge.dicom.query import StudySummary
from imagebridge.errors import DicomMissingUid, NotDicom
from imagebridge.model.imaging import (
    ContentKind,
    DicomCode,
    DicomPatient,
    DicomSeries,
    DicomStudy,
    HierarchicDesignator,
    InstanceHeader,
)

logger = logging.getLogger(__name__)

_PIXEL_TAGS: Final = ("7FE00010", "7FE00008", "7FE00009")
_WAVEFORM_SEQUENCE: Final = "54000100"
_PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")

JsonObject = Mapping[str, Any]


def instance_header_from_json(item: JsonObject) -> InstanceHeader:
    """Read one DICOM JSON instance object into an :class:`InstanceHeader`.

    Raises :class:`~imagebridge.errors.NotDicom` when *item* is not a JSON
    object and :class:`~imagebridge.errors.DicomMissingUid` when the Study,
    Series, SOP Class or SOP Instance UID is missing.
    """
    if not isinstance(item, Mapping):
        raise NotDicom("a DICOM JSON instance is not a JSON object")
    ds = _upper(item)
    photometric = text(ds, "00280004")
    has_pixels = any(tag in ds for tag in _PIXEL_TAGS)
    if photometric or has_pixels:
        kind = ContentKind.IMAGE
    elif _WAVEFORM_SEQUENCE in ds:
        kind = ContentKind.WAVEFORM
    else:
        kind = ContentKind.COMPOSITE
    return InstanceHeader(
        patient=_patient(ds),
        study=_study(ds),
        series=DicomSeries(
            series_instance_uid=_required_uid(ds, "0020000E", "SeriesInstanceUID"),
            modality=text(ds, "00080060"),
            series_number=integer(ds, "00200011"),
            body_part_examined=text(ds, "00180015"),
            description=text(ds, "0008103E"),
        ),
        sop_class_uid=_required_uid(ds, "00080016", "SOPClassUID"),
        sop_instance_uid=_required_uid(ds, "00080018", "SOPInstanceUID"),
        instance_number=integer(ds, "00200013"),
        transfer_syntax_uid=first_string(ds, "00020010") or first_string(ds, "00083002"),
        kind=kind,
        has_pixel_data=has_pixels,
        photometric_interpretation=photometric,
        number_of_frames=max(integer(ds, "00280008") or 1, 1),
        file_size=None,
    )


def study_summary_from_json(item: JsonObject) -> StudySummary:
    """Read a QIDO-RS study match: Study Instance UID, instance count, Patient ID."""
    ds = _upper(item)
    return StudySummary(
        study_instance_uid=_required_uid(ds, "0020000D", "StudyInstanceUID"),
        number_of_instances=integer(ds, "00201208"),
        patient_id=text(ds, "00100020"),
    )


def first_string(item: JsonObject, tag: str) -> str:
    """The first value of attribute *tag* (8 upper-case hex digits) as a string ('' if none)."""
    values = _values(item, tag)
    return _value_text(values[0]) if values else ""


def text(item: JsonObject, tag: str) -> str:
    """All values of attribute *tag* as one string, joined by ``\\`` ('' when absent)."""
    return "\\".join(_value_text(v) for v in _values(item, tag)).strip(" \x00")


def integer(item: JsonObject, tag: str) -> int | None:
    """An IS/US attribute as int, None when absent or not a number."""
    value = first_string(item, tag)
    try:
        return int(float(value)) if value else None
    except ValueError:
        logger.debug("attribute %s is not a number: %r", tag, value[:40])
        return None


def items(item: JsonObject, tag: str) -> list[JsonObject]:
    """The items of a sequence attribute, tags upper-cased ([] when absent or malformed)."""
    return [_upper(v) for v in _values(item, tag) if isinstance(v, Mapping)]


def _values(item: JsonObject, tag: str) -> list[Any]:
    element = item.get(tag)
    if not isinstance(element, Mapping):
        return []
    values = element.get("Value")
    return values if isinstance(values, list) else []


def _value_text(value: Any) -> str:
    if isinstance(value, Mapping):  # a person name: component groups joined by '='
        groups = [str(value.get(g) or "") for g in _PN_GROUPS]
        return "=".join(groups).rstrip("=")
    if value is None or isinstance(value, list | bool):
        return ""
    return str(value).strip(" \x00")


def _upper(item: JsonObject) -> JsonObject:
    """The object with its tags in upper case (PS3.18 asks for it; some servers differ)."""
    if all(key == key.upper() for key in item):
        return item
    return {key.upper(): value for key, value in item.items()}


def _required_uid(item: JsonObject, tag: str, keyword: str) -> str:
    value = first_string(item, tag)
    if not value:
        raise DicomMissingUid(f"DICOM JSON object has no {keyword}", keyword)
    return value


def _designator(item: JsonObject | None) -> HierarchicDesignator | None:
    """An HL7 v2 Hierarchic Designator Macro item, or None when empty."""
    if item is None:
        return None
    local, universal = text(item, "00400031"), text(item, "00400032")
    if not local and not universal:
        return None
    return HierarchicDesignator(local, universal, text(item, "00400033"))


def _patient(ds: JsonObject) -> DicomPatient:
    qualifiers = next(iter(items(ds, "00100024")), None)
    local = text(ds, "00100021")
    universal = text(qualifiers, "00400032") if qualifiers is not None else ""
    universal_type = text(qualifiers, "00400033") if qualifiers is not None else ""
    return DicomPatient(
        name=text(ds, "00100010"),
        id=text(ds, "00100020"),
        issuer=HierarchicDesignator(local, universal, universal_type)
        if local or universal
        else None,
        birth_date=text(ds, "00100030"),
        sex=text(ds, "00100040"),
    )


def _study(ds: JsonObject) -> DicomStudy:
    return DicomStudy(
        study_instance_uid=_required_uid(ds, "0020000D", "StudyInstanceUID"),
        study_date=text(ds, "00080020"),
        study_time=text(ds, "00080030"),
        description=text(ds, "00081030"),
        accession_number=text(ds, "00080050"),
        accession_issuer=_designator(next(iter(items(ds, "00080051")), None)),
        referring_physician_name=text(ds, "00080090"),
        study_id=text(ds, "00200010"),
        procedure_codes=_codes(ds, "00081032"),
    )


def _codes(ds: JsonObject, tag: str) -> tuple[DicomCode, ...]:
    """Coded entries of a code sequence; items lacking value or scheme are skipped (logged)."""
    found: list[DicomCode] = []
    for item in items(ds, tag):
        value = text(item, "00080100") or text(item, "00080119") or text(item, "00080120")
        scheme = text(item, "00080102")
        if not value or not scheme:
            logger.debug("code sequence %s item without code value or scheme ignored", tag)
            continue
        found.append(DicomCode(value, scheme, text(item, "00080104"), text(item, "00080103")))
    return tuple(found)
