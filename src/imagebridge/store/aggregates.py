"""Imaging Document Source index, derived rows kept consistent after instances change.

:func:`refresh` recomputes the aggregates and fingerprint of each touched
study, deletes empty series, studies and patients, and takes each touched
patient's demographics from the patient's latest study (by Study Date/Time,
then the most recently created row).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, bindparam, delete, exists, func, insert, select, update

from imagebridge.store import rows
from imagebridge.store.authority import AuthorityRule
from imagebridge.store.batches import chunked
from imagebridge.store.schema import (
    instances,
    patient_other_ids,
    patients,
    representations,
    series,
    studies,
)


def refresh(
    conn: Connection, study_pks: Collection[int], patient_pks: Collection[int], rule: AuthorityRule
) -> None:
    """Recompute touched studies, then touched patients; delete what became empty."""
    patient_pks = set(patient_pks)
    for batch in chunked(study_pks):
        conn.execute(
            delete(series).where(
                series.c.study_pk.in_(batch),
                ~exists().where(instances.c.series_pk == series.c.id),
            )
        )
        members: dict[int, list[tuple[str, str, str]]] = {pk: [] for pk in batch}
        query = (
            select(
                instances.c.study_pk,
                series.c.series_instance_uid,
                instances.c.sop_class_uid,
                instances.c.sop_instance_uid,
            )
            .join(series, instances.c.series_pk == series.c.id)
            .where(instances.c.study_pk.in_(batch))
        )
        for row in conn.execute(query):
            members[row[0]].append((row[1], row[2], row[3]))
        size_query = (
            select(instances.c.study_pk, func.sum(representations.c.file_size))
            .join(instances, representations.c.instance_pk == instances.c.id)
            .where(instances.c.study_pk.in_(batch))
            .group_by(instances.c.study_pk)
        )
        sizes = {pk: total for pk, total in conn.execute(size_query)}
        series_info: dict[int, list[tuple[str, str]]] = {pk: [] for pk in batch}
        query_series = select(series.c.study_pk, series.c.modality, series.c.body_part_examined)
        for study_pk, modality, body_part in conn.execute(
            query_series.where(series.c.study_pk.in_(batch))
        ):
            series_info[study_pk].append((modality, body_part))
        study_rows = conn.execute(
            select(studies.c.id, studies.c.study_instance_uid, studies.c.patient_pk).where(
                studies.c.id.in_(batch)
            )
        ).all()
        empty = [r.id for r in study_rows if not members[r.id]]
        patient_pks.update(r.patient_pk for r in study_rows)
        if empty:
            conn.execute(delete(series).where(series.c.study_pk.in_(empty)))
            conn.execute(delete(studies).where(studies.c.id.in_(empty)))
        updates = [
            {
                "pk_": r.id,
                "number_of_series": len(series_info[r.id]),
                "number_of_instances": len({m[2] for m in members[r.id]}),
                "total_size": int(sizes.get(r.id) or 0),
                "modalities": sorted({m for m, _ in series_info[r.id] if m}),
                "body_parts": sorted({b for _, b in series_info[r.id] if b}),
                "fingerprint": rows.instance_set_fingerprint(r.study_instance_uid, members[r.id]),
            }
            for r in study_rows
            if members[r.id]
        ]
        if updates:
            conn.execute(update(studies).where(studies.c.id == bindparam("pk_")), updates)
    _refresh_patients(conn, patient_pks, rule)


def _refresh_patients(conn: Connection, patient_pks: Collection[int], rule: AuthorityRule) -> None:
    for batch in chunked(patient_pks):
        latest: dict[int, tuple[tuple[str, str, int], Any]] = {}
        query = select(
            studies.c.patient_pk,
            studies.c.study_date,
            studies.c.study_time,
            studies.c.id,
            studies.c.patient_module,
        ).where(studies.c.patient_pk.in_(batch))
        for row in conn.execute(query):
            order = (row.study_date, row.study_time, row.id)
            if row.patient_pk not in latest or order > latest[row.patient_pk][0]:
                latest[row.patient_pk] = (order, row.patient_module)
        gone = [pk for pk in batch if pk not in latest]
        if gone:
            conn.execute(delete(patients).where(patients.c.id.in_(gone)))
        updates = [
            {"pk_": pk, **rows.patient_values(rows.patient_module_from_json(module), rule)}
            for pk, (_, module) in latest.items()
        ]
        if updates:
            conn.execute(update(patients).where(patients.c.id == bindparam("pk_")), updates)
        conn.execute(delete(patient_other_ids).where(patient_other_ids.c.patient_pk.in_(batch)))
        other_ids = [
            {"patient_pk": u["pk_"], "other_id": other, "assigning_authority": authority}
            for u in updates
            for other, authority in u["other_ids"]
        ]
        if other_ids:
            conn.execute(insert(patient_other_ids), other_ids)


def drop_bare_instances(
    conn: Connection, instance_pks: Collection[int], touched_studies: set[int]
) -> None:
    """Delete the instances among *instance_pks* left without any representation."""
    for batch in chunked(instance_pks):
        bare = conn.execute(
            select(instances.c.id, instances.c.study_pk).where(
                instances.c.id.in_(batch),
                ~exists().where(representations.c.instance_pk == instances.c.id),
            )
        ).all()
        touched_studies.update(r.study_pk for r in bare)
        if bare:
            conn.execute(delete(instances).where(instances.c.id.in_([r.id for r in bare])))
