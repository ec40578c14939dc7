"""Imaging Document Source index, conversions between index rows and model values.

Structured DICOM values live in JSON columns with a fixed shape: an issuer
(Hierarchic Designator) is ``[local, universal, universal_type]`` or null,
a coded entry ``[value, scheme, meaning, version]``, the Patient module an
object with the :class:`~imagebridge.model.imaging.DicomPatient` fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import (
    ContentKind,
    DicomCode,
    DicomPatient,
    DicomSeries,
    DicomStudy,
    HierarchicDesignator,
    InstanceHeader,
    OtherPatientId,
)
from imagebridge.model.index import InstanceLocation, ManifestRecord, StudyRecord
from imagebridge.model.patient import PatientRecord
from imagebridge.store.authority import AuthorityRule
from imagebridge.store.names import normalise_name, split_person_name

Row = Mapping[Any, Any]

NATIVE_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
)


def representation_rank(transfer_syntax_uid: str, representation_pk: int) -> tuple[int, int]:
    """Order of preference among representations: native syntaxes first, then first indexed."""
    try:
        rank = NATIVE_TRANSFER_SYNTAXES.index(transfer_syntax_uid)
    except ValueError:
        rank = len(NATIVE_TRANSFER_SYNTAXES)
    return rank, representation_pk


def instance_set_fingerprint(study_uid: str, members: Iterable[tuple[str, str, str]]) -> str:
    """SHA-256 (hex) of a study's set of (series UID, SOP class UID, SOP instance UID)."""
    digest = hashlib.sha256(f"imagebridge instance-set\n{study_uid}\n".encode())
    for series_uid, sop_class, sop_instance in sorted(set(members)):
        digest.update(f"{series_uid}\t{sop_class}\t{sop_instance}\n".encode())
    return digest.hexdigest()


# --- JSON shapes ------------------------------------------------------------------------


def designator_json(issuer: HierarchicDesignator | None) -> list[str] | None:
    if issuer is None:
        return None
    return [issuer.local_namespace, issuer.universal_id, issuer.universal_id_type]


def designator_from_json(value: Any) -> HierarchicDesignator | None:
    if not value:
        return None
    local, universal, universal_type = value
    return HierarchicDesignator(local, universal, universal_type)


def codes_json(codes: Iterable[DicomCode]) -> list[list[str]]:
    return [
        [c.code_value, c.coding_scheme_designator, c.code_meaning, c.coding_scheme_version]
        for c in codes
    ]


def codes_from_json(value: Any) -> tuple[DicomCode, ...]:
    return tuple(DicomCode(*item) for item in value or ())


def patient_module_json(patient: DicomPatient) -> dict[str, Any]:
    return {
        "name": patient.name,
        "id": patient.id,
        "issuer": designator_json(patient.issuer),
        "birth_date": patient.birth_date,
        "sex": patient.sex,
        "address": patient.address,
        "telephones": list(patient.telephones),
        "other_ids": [[o.id, designator_json(o.issuer)] for o in patient.other_ids],
    }


def patient_module_from_json(value: Any) -> DicomPatient:
    return DicomPatient(
        name=value["name"],
        id=value["id"],
        issuer=designator_from_json(value["issuer"]),
        birth_date=value["birth_date"],
        sex=value["sex"],
        address=value["address"],
        telephones=tuple(value["telephones"]),
        other_ids=tuple(
            OtherPatientId(other, designator_from_json(issuer))
            for other, issuer in value["other_ids"]
        ),
    )


# --- header → row values ------------------------------------------------------------------


def patient_values(patient: DicomPatient, rule: AuthorityRule) -> dict[str, Any]:
    """Demographic columns of ``patients`` from one study's Patient module."""
    family, given = split_person_name(patient.name)
    other_ids = [rule.resolve_other(o) for o in patient.other_ids]
    return {
        "family": family,
        "given": list(given),
        "family_key": normalise_name(family),
        "given_key": normalise_name(" ".join(given)),
        "birth_date": patient.birth_date,
        "sex": patient.sex,
        "address": patient.address,
        "telephones": list(patient.telephones),
        "other_ids": [[o.id, o.assigning_authority] for o in other_ids if o is not None],
    }


def study_values(header: InstanceHeader) -> dict[str, Any]:
    """Study-level columns of ``studies`` (without keys, patient and aggregates)."""
    study = header.study
    return {
        "patient_module": patient_module_json(header.patient),
        "study_date": study.study_date,
        "study_time": study.study_time,
        "description": study.description,
        "accession_number": study.accession_number,
        "accession_issuer": designator_json(study.accession_issuer),
        "referring_physician_name": study.referring_physician_name,
        "study_id": study.study_id,
        "procedure_codes": codes_json(study.procedure_codes),
    }


def series_values(header: InstanceHeader) -> dict[str, Any]:
    series = header.series
    return {
        "series_instance_uid": series.series_instance_uid,
        "modality": series.modality,
        "series_number": series.series_number,
        "body_part_examined": series.body_part_examined,
        "description": series.description,
    }


def instance_values(header: InstanceHeader) -> dict[str, Any]:
    return {
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "instance_number": header.instance_number,
        "kind": header.kind.value,
        "has_pixel_data": header.has_pixel_data,
        "photometric_interpretation": header.photometric_interpretation,
        "number_of_frames": header.number_of_frames,
    }


# --- rows → models ------------------------------------------------------------------------


def dicom_study(row: Row) -> DicomStudy:
    return DicomStudy(
        study_instance_uid=row["study_instance_uid"],
        study_date=row["study_date"],
        study_time=row["study_time"],
        description=row["description"],
        accession_number=row["accession_number"],
        accession_issuer=designator_from_json(row["accession_issuer"]),
        referring_physician_name=row["referring_physician_name"],
        study_id=row["study_id"],
        procedure_codes=codes_from_json(row["procedure_codes"]),
    )


def dicom_series(row: Row) -> DicomSeries:
    return DicomSeries(
        series_instance_uid=row["series_instance_uid"],
        modality=row["modality"],
        series_number=row["series_number"],
        body_part_examined=row["body_part_examined"],
        description=row["description"],
    )


def instance_header(
    patient: DicomPatient, study: DicomStudy, series: DicomSeries, row: Row
) -> InstanceHeader:
    """An instance row joined with its chosen representation (transfer syntax, file size)."""
    return InstanceHeader(
        patient=patient,
        study=study,
        series=series,
        sop_class_uid=row["sop_class_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        instance_number=row["instance_number"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        kind=ContentKind(row["kind"]),
        has_pixel_data=bool(row["has_pixel_data"]),
        photometric_interpretation=row["photometric_interpretation"],
        number_of_frames=row["number_of_frames"],
        file_size=row["file_size"],
    )


def study_record(row: Row) -> StudyRecord:
    """A ``studies`` row joined with its patient's ``patient_id``/``assigning_authority``."""
    study = dicom_study(row)
    return StudyRecord(
        repository_unique_id=row["repository_unique_id"],
        study_instance_uid=study.study_instance_uid,
        patient_id=PatientId(row["patient_id"], row["assigning_authority"]),
        patient=patient_module_from_json(row["patient_module"]),
        study_date=study.study_date,
        study_time=study.study_time,
        description=study.description,
        accession_number=study.accession_number,
        accession_issuer=study.accession_issuer,
        referring_physician_name=study.referring_physician_name,
        study_id=study.study_id,
        procedure_codes=study.procedure_codes,
        modalities=tuple(row["modalities"]),
        body_parts=tuple(row["body_parts"]),
        number_of_series=row["number_of_series"],
        number_of_instances=row["number_of_instances"],
        total_size=row["total_size"],
        fingerprint=row["fingerprint"],
    )


def patient_record(row: Row) -> PatientRecord:
    return PatientRecord(
        patient_id=PatientId(row["patient_id"], row["assigning_authority"]),
        family=row["family"],
        given=tuple(row["given"]),
        birth_date=row["birth_date"],
        sex=row["sex"],
        address=row["address"],
        telephones=tuple(row["telephones"]),
        other_ids=tuple(PatientId(i, a) for i, a in row["other_ids"]),
    )


def manifest_values(record: ManifestRecord) -> dict[str, Any]:
    return {
        "repository_unique_id": record.repository_unique_id,
        "study_instance_uid": record.study_instance_uid,
        "sop_instance_uid": record.sop_instance_uid,
        "series_instance_uid": record.series_instance_uid,
        "content_datetime": record.content_datetime.isoformat(),
        "fingerprint": record.fingerprint,
        "size": record.size,
        "sha1": record.sha1,
        "document": record.document,
    }


def manifest_record(row: Row) -> ManifestRecord:
    return ManifestRecord(
        repository_unique_id=row["repository_unique_id"],
        study_instance_uid=row["study_instance_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        content_datetime=datetime.fromisoformat(row["content_datetime"]),
        fingerprint=row["fingerprint"],
        size=row["size"],
        sha1=row["sha1"],
        document=bytes(row["document"]),
    )


def instance_location(row: Row) -> InstanceLocation:
    return InstanceLocation(
        repository_unique_id=row["repository_unique_id"],
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        path=row["path"],
        file_size=row["file_size"],
    )
