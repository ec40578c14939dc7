"""Imaging Document Source index, batch writes of instances, representations and files.

Every function here runs inside one transaction on a SQLAlchemy Core
connection that the :class:`~imagebridge.store.Store` opened, writes in
batches (:mod:`.batches`) and ends with :func:`.aggregates.refresh`, so
patients and studies stay consistent with the instances.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, select

from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.index import FileResult, FileStamp, IndexedFile, UpsertResult
from imagebridge.store import rows
from imagebridge.store.aggregates import drop_bare_instances, refresh
from imagebridge.store.authority import AuthorityRule
from imagebridge.store.batches import chunked, upsert_rows
from imagebridge.store.schema import (
    indexed_files,
    instances,
    patients,
    representations,
    series,
    studies,
)


class FileColumns(NamedTuple):
    """The file columns of a stored representation (``path`` None for a PACS)."""

    path: str | None
    file_size: int | None
    mtime_ns: int | None


def write_instances(
    conn: Connection,
    repository_unique_id: str,
    items: Sequence[tuple[InstanceHeader, FileStamp | None]],
    rule: AuthorityRule,
    *,
    vanished: Collection[str] = (),
) -> UpsertResult:
    """Upsert instance headers (with the file each came from, if any) of one repository.

    A representation is keyed by (SOP Instance UID, Transfer Syntax UID).  When
    that key is already stored from another file that is not in *vanished*,
    the new file is a duplicate: the first file is kept and the new one is
    recorded as :attr:`FileResult.DUPLICATE`.  A path that held another
    instance before loses its old representation.
    """
    patient_ids = [rule.resolve(h.patient.id, h.patient.issuer) for h, _ in items]
    chosen: dict[tuple[str, str], tuple[InstanceHeader, FileStamp | None, PatientId]] = {}
    duplicates: list[FileStamp] = []
    for (header, stamp), patient_id in zip(items, patient_ids, strict=True):
        key = (header.sop_instance_uid, header.transfer_syntax_uid)
        if key in chosen and stamp is not None and chosen[key][1] is not None:
            duplicates.append(stamp)
            continue
        chosen[key] = (header, stamp, patient_id)
    touched_studies: set[int] = set()
    touched_patients: set[int] = set()
    stamps = {s.path: k for k, (_, s, _) in chosen.items() if s is not None}
    _drop_reused_paths(conn, repository_unique_id, stamps, touched_studies)
    existing = _representations_of(conn, repository_unique_id, {k[0] for k in chosen})
    for key, (_, stamp, _) in list(chosen.items()):
        old_path = existing[key].path if key in existing else None
        if stamp is not None and old_path not in (None, stamp.path) and old_path not in vanished:
            duplicates.append(stamp)
            del chosen[key]
    if not chosen:
        _record_files(conn, repository_unique_id, [], duplicates)
        refresh(conn, touched_studies, touched_patients, rule)
        return UpsertResult(0, tuple(d.path for d in duplicates))
    values = list(chosen.values())

    patient_pks = upsert_rows(
        conn,
        patients,
        ("assigning_authority", "patient_id"),
        [_empty_patient(p) for _, _, p in values],
    )
    touched_patients.update(patient_pks.values())
    study_rows: dict[str, dict[str, Any]] = {}
    for header, _, patient_id in values:
        study_rows[header.study.study_instance_uid] = {
            "repository_unique_id": repository_unique_id,
            "study_instance_uid": header.study.study_instance_uid,
            "patient_pk": patient_pks[(patient_id.assigning_authority, patient_id.id)],
            **rows.study_values(header),
        }
    for uids in chunked(study_rows):
        query = select(studies.c.patient_pk).where(
            studies.c.repository_unique_id == repository_unique_id,
            studies.c.study_instance_uid.in_(uids),
        )
        touched_patients.update(conn.execute(query).scalars())
    study_pks = upsert_rows(
        conn,
        studies,
        ("repository_unique_id", "study_instance_uid"),
        [_with_study_defaults(r) for r in study_rows.values()],
    )
    touched_studies.update(study_pks.values())

    def study_pk(header: InstanceHeader) -> int:
        return study_pks[(repository_unique_id, header.study.study_instance_uid)]

    series_pks = upsert_rows(
        conn,
        series,
        ("series_instance_uid", "study_pk"),
        [{"study_pk": study_pk(h), **rows.series_values(h)} for h, _, _ in values],
    )
    for sops in chunked({h.sop_instance_uid for h, _, _ in values}):
        query = select(instances.c.study_pk).where(
            instances.c.repository_unique_id == repository_unique_id,
            instances.c.sop_instance_uid.in_(sops),
        )
        touched_studies.update(conn.execute(query).scalars())
    instance_pks = upsert_rows(
        conn,
        instances,
        ("repository_unique_id", "sop_instance_uid"),
        [
            {
                "repository_unique_id": repository_unique_id,
                "study_pk": study_pk(h),
                "series_pk": series_pks[(h.series.series_instance_uid, study_pk(h))],
                **rows.instance_values(h),
            }
            for h, _, _ in values
        ],
    )
    upsert_rows(
        conn,
        representations,
        ("transfer_syntax_uid", "instance_pk"),
        [
            {
                "instance_pk": instance_pks[(repository_unique_id, h.sop_instance_uid)],
                "repository_unique_id": repository_unique_id,
                "transfer_syntax_uid": h.transfer_syntax_uid,
                **_file_columns(h, s, existing.get((h.sop_instance_uid, h.transfer_syntax_uid))),
            }
            for h, s, _ in values
        ],
    )
    indexed = [s for _, s, _ in values if s is not None]
    _record_files(conn, repository_unique_id, indexed, duplicates)
    refresh(conn, touched_studies, touched_patients, rule)
    return UpsertResult(len(values), tuple(d.path for d in duplicates))


def record_files(conn: Connection, repository_unique_id: str, files: Iterable[IndexedFile]) -> None:
    """Remember files that were looked at and not indexed (not DICOM, errors, duplicates)."""
    upsert_rows(
        conn,
        indexed_files,
        ("repository_unique_id", "path"),
        [
            {
                "repository_unique_id": repository_unique_id,
                "path": f.stamp.path,
                "size": f.stamp.size,
                "mtime_ns": f.stamp.mtime_ns,
                "result": f.result.value,
                "error": f.error,
            }
            for f in files
        ],
    )


def forget_files(
    conn: Connection, repository_unique_id: str, paths: Collection[str], rule: AuthorityRule
) -> None:
    """Drop files that vanished: their index entries and the representations they held."""
    touched: set[int] = set()
    orphan_candidates: set[int] = set()
    for batch in chunked(paths):
        held = select(representations.c.id, representations.c.instance_pk).where(
            representations.c.repository_unique_id == repository_unique_id,
            representations.c.path.in_(batch),
        )
        found = conn.execute(held).all()
        orphan_candidates.update(r.instance_pk for r in found)
        if found:
            conn.execute(
                delete(representations).where(representations.c.id.in_([r.id for r in found]))
            )
        conn.execute(
            delete(indexed_files).where(
                indexed_files.c.repository_unique_id == repository_unique_id,
                indexed_files.c.path.in_(batch),
            )
        )
    drop_bare_instances(conn, orphan_candidates, touched)
    refresh(conn, touched, set(), rule)


def remove_instances(
    conn: Connection,
    repository_unique_id: str,
    sop_instance_uids: Collection[str],
    rule: AuthorityRule,
) -> int:
    """Delete instances (every representation); their files are re-read by the next sync."""
    touched: set[int] = set()
    removed = 0
    for batch in chunked(sop_instance_uids):
        scope = (
            instances.c.repository_unique_id == repository_unique_id,
            instances.c.sop_instance_uid.in_(batch),
        )
        found = conn.execute(select(instances.c.id, instances.c.study_pk).where(*scope)).all()
        if not found:
            continue
        touched.update(r.study_pk for r in found)
        pks = [r.id for r in found]
        paths = select(representations.c.path).where(
            representations.c.instance_pk.in_(pks), representations.c.path.is_not(None)
        )
        conn.execute(
            delete(indexed_files).where(
                indexed_files.c.repository_unique_id == repository_unique_id,
                indexed_files.c.path.in_(paths),
            )
        )
        conn.execute(delete(representations).where(representations.c.instance_pk.in_(pks)))
        conn.execute(delete(instances).where(instances.c.id.in_(pks)))
        removed += len(pks)
    refresh(conn, touched, set(), rule)
    return removed


def prune_study(
    conn: Connection,
    repository_unique_id: str,
    study_uid: str,
    keep: Collection[tuple[str, str]],
    rule: AuthorityRule,
) -> None:
    """Delete a study's representations whose (SOP instance, transfer syntax) is not in *keep*."""
    query = (
        select(
            representations.c.id,
            representations.c.instance_pk,
            instances.c.sop_instance_uid,
            representations.c.transfer_syntax_uid,
        )
        .join(instances, representations.c.instance_pk == instances.c.id)
        .join(studies, instances.c.study_pk == studies.c.id)
        .where(
            studies.c.repository_unique_id == repository_unique_id,
            studies.c.study_instance_uid == study_uid,
        )
    )
    keep = set(keep)
    stale = [r for r in conn.execute(query) if (r[2], r[3]) not in keep]
    for batch in chunked(r.id for r in stale):
        conn.execute(delete(representations).where(representations.c.id.in_(batch)))
    touched: set[int] = set()
    drop_bare_instances(conn, {r.instance_pk for r in stale}, touched)
    refresh(conn, touched, set(), rule)


def _empty_patient(patient_id: PatientId) -> dict[str, Any]:
    """A ``patients`` row before :func:`refresh` fills its demographics."""
    return {
        "patient_id": patient_id.id,
        "assigning_authority": patient_id.assigning_authority,
        "given": [],
        "telephones": [],
        "other_ids": [],
    }


def _with_study_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """Aggregates are recomputed by :func:`refresh`; new rows need their NOT NULL values."""
    return {**row, "modalities": [], "body_parts": [], "fingerprint": ""}


def _representations_of(
    conn: Connection, repository_unique_id: str, sop_instance_uids: Collection[str]
) -> dict[tuple[str, str], FileColumns]:
    """(SOP Instance UID, Transfer Syntax UID) → file columns of the stored representations."""
    found: dict[tuple[str, str], FileColumns] = {}
    for batch in chunked(sop_instance_uids):
        query = (
            select(
                instances.c.sop_instance_uid,
                representations.c.transfer_syntax_uid,
                representations.c.path,
                representations.c.file_size,
                representations.c.mtime_ns,
            )
            .join(instances, representations.c.instance_pk == instances.c.id)
            .where(
                instances.c.repository_unique_id == repository_unique_id,
                instances.c.sop_instance_uid.in_(batch),
            )
        )
        for sop, transfer_syntax, path, size, mtime_ns in conn.execute(query):
            found[(sop, transfer_syntax)] = FileColumns(path, size, mtime_ns)
    return found


def _file_columns(
    header: InstanceHeader, stamp: FileStamp | None, stored: FileColumns | None
) -> dict[str, Any]:
    """Path, size and mtime of a representation: from its file, else as stored, else none."""
    if stamp is not None:
        return {"path": stamp.path, "file_size": stamp.size, "mtime_ns": stamp.mtime_ns}
    if stored is not None and stored.path is not None:
        return {"path": stored.path, "file_size": stored.file_size, "mtime_ns": stored.mtime_ns}
    return {"path": None, "file_size": header.file_size, "mtime_ns": None}


def _drop_reused_paths(
    conn: Connection,
    repository_unique_id: str,
    new_keys: dict[str, tuple[str, str]],
    touched_studies: set[int],
) -> None:
    """Delete representations whose path now holds another instance or transfer syntax."""
    stale: set[int] = set()
    holders: set[int] = set()
    for batch in chunked(new_keys):
        query = (
            select(
                representations.c.id,
                representations.c.instance_pk,
                representations.c.path,
                instances.c.sop_instance_uid,
                representations.c.transfer_syntax_uid,
            )
            .join(instances, representations.c.instance_pk == instances.c.id)
            .where(
                representations.c.repository_unique_id == repository_unique_id,
                representations.c.path.in_(batch),
            )
        )
        for row in conn.execute(query):
            if new_keys[row.path] != (row.sop_instance_uid, row.transfer_syntax_uid):
                stale.add(row.id)
                holders.add(row.instance_pk)
    for batch in chunked(stale):
        conn.execute(delete(representations).where(representations.c.id.in_(batch)))
    drop_bare_instances(conn, holders, touched_studies)


def _record_files(
    conn: Connection,
    repository_unique_id: str,
    indexed: Sequence[FileStamp],
    duplicates: Sequence[FileStamp],
) -> None:
    record_files(
        conn,
        repository_unique_id,
        [IndexedFile(s, FileResult.DICOM) for s in indexed]
        + [
            IndexedFile(
                s, FileResult.DUPLICATE, "same SOP instance and transfer syntax as another file"
            )
            for s in duplicates
        ],
    )
