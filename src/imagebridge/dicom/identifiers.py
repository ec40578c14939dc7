"""Imaging Document Source, the XDS identifiers of a study: referenceIdList, sourcePatientId/Info.

Used by :mod:`imagebridge.dicom.metadata` for the KOS manifest DocumentEntry
(``kos-manifest.md`` section 2):

* referenceIdList (CXi): ``<accession>^^^&<issuer OID>&ISO^urn:ihe:iti:xds:2013:accession``
  per distinct Accession Number, then ``<Study UID>^^^^urn:ihe:iti:xds:2016:studyInstanceUID``
  (no assigning authority for a UID);
* sourcePatientId (CX): the DICOM Patient ID with its issuer's OID;
* sourcePatientInfo: ``PID-3|<CX>``, ``PID-5|<XPN>``, ``PID-7|<birth date>``, ``PID-8|<sex>``.

Values are HL7 v2 escaped (``\\ | ^ & ~``) where they land in a component.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import PatientId, is_oid
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator, InstanceHeader
from imagebridge.wire.xds import vocabulary as v

logger = logging.getLogger(__name__)

_HL7_ESCAPES: Final = str.maketrans(
    {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
)


def hl7_escape(value: str) -> str:
    """HL7 v2 escaping of one component (``\\ | ^ & ~``)."""
    return value.translate(_HL7_ESCAPES)


def issuer_oid(
    issuer: HierarchicDesignator | None, namespaces: Mapping[str, str], default: str = ""
) -> str:
    """The OID of an issuer: its Universal Entity ID, its configured namespace, else *default*."""
    if issuer is not None:
        universal = issuer.universal_id.strip()
        if universal and is_oid(universal):
            return universal
        configured = namespaces.get(issuer.local_namespace.strip())
        if configured:
            return configured
    return default


def reference_ids(
    instances: Iterable[InstanceHeader],
    *,
    namespaces: Mapping[str, str] | None = None,
    accession_issuer: str = "",
) -> tuple[str, ...]:
    """referenceIdList: each distinct accession number (CXi), then each Study Instance UID.

    An accession number's assigning authority is the Issuer of Accession Number
    Sequence OID, its namespace in *namespaces*, else *accession_issuer*; with
    none, CX.4 stays empty.
    """
    accessions: set[str] = set()
    studies: set[str] = set()
    for header in instances:
        study = header.study
        studies.add(study.study_instance_uid)
        number = study.accession_number.strip()
        if not number:
            continue
        oid = issuer_oid(study.accession_issuer, namespaces or {}, accession_issuer)
        authority = f"&{oid}&ISO" if oid else ""
        accessions.add(f"{hl7_escape(number)}^^^{authority}^{v.REFERENCE_ID_ACCESSION}")
    uids = (f"{s}^^^^{v.REFERENCE_ID_STUDY_INSTANCE_UID}" for s in sorted(studies))
    return (*sorted(accessions), *uids)


def dicom_patient_id(
    patient: DicomPatient, *, namespaces: Mapping[str, str] | None = None, default_issuer: str = ""
) -> PatientId | None:
    """The DICOM Patient ID as an XDS CX (``None`` when it has no OID issuer or is unusable)."""
    oid = issuer_oid(patient.issuer, namespaces or {}, default_issuer)
    if not patient.id or not oid:
        logger.debug("DICOM Patient ID has no OID issuer")
        return None
    try:
        return PatientId(patient.id, oid)
    except InvalidValue as exc:
        logger.warning("DICOM Patient ID unusable as sourcePatientId: %s", exc.message)
        return None


def source_patient_info(source: PatientId, patient: DicomPatient) -> tuple[str, ...]:
    """``PID-3|cx``, ``PID-5|XPN``, ``PID-7|birth date``, ``PID-8|sex`` (empty ones left out).

    The DICOM PN (family^given^middle^prefix^suffix, alphabetic group) becomes
    an XPN (family^given^middle^suffix^prefix).
    """
    info = [f"PID-3|{source.cx}"]
    alphabetic = patient.name.split("=", 1)[0]
    parts = [hl7_escape(p.strip()) for p in alphabetic.split("^")]
    parts += [""] * (5 - len(parts))
    family, given, middle, prefix, suffix = parts[:5]
    xpn = "^".join((family, given, middle, suffix, prefix)).rstrip("^")
    if xpn:
        info.append(f"PID-5|{xpn}")
    birth = patient.birth_date.strip()
    if birth:
        info.append(f"PID-7|{hl7_escape(birth)}")
    sex = patient.sex.strip().upper()
    if sex in ("M", "F", "O", "U"):
        info.append(f"PID-8|{sex}")
    return tuple(info)
