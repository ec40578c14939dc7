"""Imaging Document Source index, the read queries behind the :class:`~imagebridge.store.Store`.

Each function takes an open connection and returns model values.  A study is
identified by its Study Instance UID and, where the same study lives in more
than one repository, by the repositoryUniqueId; without one the first
repository in sort order answers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Select, func, select

from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.index import (
    FileResult,
    FileStamp,
    IndexedFile,
    InstanceLocation,
    ManifestRecord,
    RepositoryCounts,
    StudyRecord,
)
from imagebridge.model.patient import PatientRecord
from imagebridge.store import rows
from imagebridge.store.names import normalise_name
from imagebridge.store.schema import (
    indexed_files,
    instances,
    manifests,
    patient_other_ids,
    patients,
    representations,
    series,
    studies,
)


def _studies_query() -> Select[Any]:
    return (
        select(studies, patients.c.patient_id, patients.c.assigning_authority)
        .join(patients, studies.c.patient_pk == patients.c.id)
        .order_by(
            studies.c.repository_unique_id,
            studies.c.study_date,
            studies.c.study_time,
            studies.c.study_instance_uid,
        )
    )


def patient_candidates(
    conn: Connection, *, birth_date: str | None, family_key: str | None
) -> list[PatientRecord]:
    """Patients born on (or in: a shorter prefix) *birth_date* and/or with this family name."""
    query = select(patients).order_by(patients.c.patient_id, patients.c.assigning_authority)
    if birth_date and len(birth_date) >= 8:
        query = query.where(patients.c.birth_date == birth_date)
    elif birth_date:
        query = query.where(patients.c.birth_date.startswith(birth_date, autoescape=True))
    if family_key is not None:
        query = query.where(patients.c.family_key == normalise_name(family_key))
    return [rows.patient_record(r) for r in conn.execute(query).mappings()]


def patients_by_identifier(
    conn: Connection, patient_ids: Collection[PatientId]
) -> list[PatientRecord]:
    """Patients whose own id, or one of whose Other Patient IDs, is among *patient_ids*."""
    wanted = {(p.id, p.assigning_authority) for p in patient_ids}
    if not wanted:
        return []
    values = sorted({p for p, _ in wanted})
    own = select(patients.c.id, patients.c.patient_id, patients.c.assigning_authority).where(
        patients.c.patient_id.in_(values)
    )
    other = select(
        patient_other_ids.c.patient_pk,
        patient_other_ids.c.other_id,
        patient_other_ids.c.assigning_authority,
    ).where(patient_other_ids.c.other_id.in_(values))
    pks = {pk for query in (own, other) for pk, i, a in conn.execute(query) if (i, a) in wanted}
    if not pks:
        return []
    query = (
        select(patients)
        .where(patients.c.id.in_(sorted(pks)))
        .order_by(patients.c.patient_id, patients.c.assigning_authority)
    )
    return [rows.patient_record(r) for r in conn.execute(query).mappings()]


def patient(conn: Connection, patient_id: PatientId) -> PatientRecord | None:
    """One patient of the index by community identifier."""
    query = select(patients).where(
        patients.c.patient_id == patient_id.id,
        patients.c.assigning_authority == patient_id.assigning_authority,
    )
    found = conn.execute(query).mappings().first()
    return rows.patient_record(found) if found is not None else None


def studies_for_patient(
    conn: Connection,
    *,
    patient_id: PatientId | None = None,
    dicom_patient_id: str | None = None,
    repository_unique_ids: Collection[str] | None = None,
) -> list[StudyRecord]:
    """Studies of a patient (community id, or bare DICOM Patient ID under any authority)."""
    query = _studies_query()
    if patient_id is not None:
        query = query.where(
            patients.c.patient_id == patient_id.id,
            patients.c.assigning_authority == patient_id.assigning_authority,
        )
    if dicom_patient_id is not None:
        query = query.where(patients.c.patient_id == dicom_patient_id)
    if repository_unique_ids is not None:
        query = query.where(studies.c.repository_unique_id.in_(list(repository_unique_ids)))
    return [rows.study_record(r) for r in conn.execute(query).mappings()]


def study_row(
    conn: Connection, study_uid: str, repository_unique_id: str | None
) -> dict[str, Any] | None:
    """The ``studies`` row (with patient id and authority) of one study, or None."""
    query = _studies_query().where(studies.c.study_instance_uid == study_uid).limit(1)
    if repository_unique_id is not None:
        query = query.where(studies.c.repository_unique_id == repository_unique_id)
    found = conn.execute(query).mappings().first()
    return dict(found) if found is not None else None


def repository_study_uids(conn: Connection, repository_unique_id: str) -> list[str]:
    """Study Instance UIDs of one repository, sorted."""
    query = (
        select(studies.c.study_instance_uid)
        .where(studies.c.repository_unique_id == repository_unique_id)
        .order_by(studies.c.study_instance_uid)
    )
    return list(conn.execute(query).scalars())


def study_instances(conn: Connection, study: dict[str, Any]) -> list[InstanceHeader]:
    """Every instance of a study, each once, with its preferred representation.

    Series by Series Number then UID, instances by Instance Number then UID.
    """
    query = (
        select(
            instances,
            series.c.series_instance_uid,
            series.c.modality,
            series.c.series_number,
            series.c.body_part_examined,
            series.c.description,
            representations.c.id.label("representation_pk"),
            representations.c.transfer_syntax_uid,
            representations.c.file_size,
        )
        .join(series, instances.c.series_pk == series.c.id)
        .join(representations, representations.c.instance_pk == instances.c.id)
        .where(instances.c.study_pk == study["id"])
    )
    chosen: dict[int, Any] = {}
    for row in conn.execute(query).mappings():
        rank = rows.representation_rank(row["transfer_syntax_uid"], row["representation_pk"])
        if row["id"] not in chosen or rank < chosen[row["id"]][0]:
            chosen[row["id"]] = (rank, row)
    patient_module = rows.patient_module_from_json(study["patient_module"])
    dicom_study = rows.dicom_study(study)
    series_models: dict[str, Any] = {}
    headers = []
    for _, row in chosen.values():
        uid = row["series_instance_uid"]
        if uid not in series_models:
            series_models[uid] = rows.dicom_series(row)
        headers.append(rows.instance_header(patient_module, dicom_study, series_models[uid], row))
    headers.sort(
        key=lambda h: (
            h.series.series_number is None,
            h.series.series_number or 0,
            h.series.series_instance_uid,
            h.instance_number is None,
            h.instance_number or 0,
            h.sop_instance_uid,
        )
    )
    return headers


def instance_locations(
    conn: Connection, sop_instance_uid: str, repository_unique_id: str | None
) -> list[InstanceLocation]:
    """Every stored representation of an instance, preferred first."""
    return instance_locations_many(conn, [sop_instance_uid], repository_unique_id).get(
        sop_instance_uid, []
    )


_IN_BATCH = 500  # bound parameters per IN list (SQLite allows 999 in old builds)


def instance_locations_many(
    conn: Connection, sop_instance_uids: Collection[str], repository_unique_id: str | None
) -> dict[str, list[InstanceLocation]]:
    """Every stored representation of each instance, preferred first, in one pass per batch."""
    wanted = list(dict.fromkeys(sop_instance_uids))
    out: dict[str, list[InstanceLocation]] = {}
    for start in range(0, len(wanted), _IN_BATCH):
        for location in _locations(conn, wanted[start : start + _IN_BATCH], repository_unique_id):
            out.setdefault(location.sop_instance_uid, []).append(location)
    return out


def _locations(
    conn: Connection, sop_instance_uids: list[str], repository_unique_id: str | None
) -> list[InstanceLocation]:
    query = (
        select(
            instances.c.repository_unique_id,
            instances.c.sop_instance_uid,
            instances.c.sop_class_uid,
            studies.c.study_instance_uid,
            series.c.series_instance_uid,
            representations.c.id.label("representation_pk"),
            representations.c.transfer_syntax_uid,
            representations.c.path,
            representations.c.file_size,
        )
        .join(representations, representations.c.instance_pk == instances.c.id)
        .join(series, instances.c.series_pk == series.c.id)
        .join(studies, instances.c.study_pk == studies.c.id)
        .where(instances.c.sop_instance_uid.in_(sop_instance_uids))
    )
    if repository_unique_id is not None:
        query = query.where(instances.c.repository_unique_id == repository_unique_id)
    found = list(conn.execute(query).mappings())
    found.sort(
        key=lambda r: (
            r["sop_instance_uid"],
            r["repository_unique_id"],
            rows.representation_rank(r["transfer_syntax_uid"], r["representation_pk"]),
        )
    )
    return [rows.instance_location(r) for r in found]


def indexed_files_of(conn: Connection, repository_unique_id: str) -> dict[str, IndexedFile]:
    """Every file a folder source has looked at, by relative path."""
    query = select(
        indexed_files.c.path,
        indexed_files.c.size,
        indexed_files.c.mtime_ns,
        indexed_files.c.result,
        indexed_files.c.error,
    ).where(indexed_files.c.repository_unique_id == repository_unique_id)
    return {
        path: IndexedFile(FileStamp(path, size, mtime_ns), FileResult(result), error)
        for path, size, mtime_ns, result, error in conn.execute(query)
    }


def repository_counts(conn: Connection, repository_unique_id: str) -> RepositoryCounts:
    """How many studies, instances, representations and files one repository has."""

    def count(table: Any) -> int:
        query = select(func.count()).where(table.c.repository_unique_id == repository_unique_id)
        return int(conn.execute(query).scalar_one())

    return RepositoryCounts(
        studies=count(studies),
        instances=count(instances),
        representations=count(representations),
        files=count(indexed_files),
    )


def manifest_for_version(
    conn: Connection, repository_unique_id: str, study_uid: str, fingerprint: str
) -> ManifestRecord | None:
    """The manifest built for one version (fingerprint) of a study, or None."""
    query = select(manifests).where(
        manifests.c.repository_unique_id == repository_unique_id,
        manifests.c.study_instance_uid == study_uid,
        manifests.c.fingerprint == fingerprint,
    )
    found = conn.execute(query.order_by(manifests.c.id).limit(1)).mappings().first()
    return rows.manifest_record(found) if found is not None else None


def manifest_by_uid(conn: Connection, sop_instance_uid: str) -> ManifestRecord | None:
    """A manifest of any study version by its KOS SOP Instance UID."""
    query = select(manifests).where(manifests.c.sop_instance_uid == sop_instance_uid)
    found = conn.execute(query).mappings().first()
    return rows.manifest_record(found) if found is not None else None
