"""Imaging Document Source index: the store of patients, studies, instances and KOS manifests.

One :class:`Store` per process, opened by the composition root with the
database URL and the community's default assigning authority.  It is
synchronous SQLAlchemy Core and thread-safe, so async code calls it through
``anyio.to_thread.run_sync``.  Each public method is one transaction.  On
SQLite, writes are serialised by a lock inside the process (SQLite has one
writer; the busy timeout covers other processes); an in-memory database
serialises reads too, as its one connection is shared.  Database errors
become :class:`~imagebridge.errors.StoreError` without SQL or values in the
message (the values may be patient data); the detail goes to DEBUG.

Manifests: a KOS is stored per study version (the study's ``fingerprint``).
:meth:`Store.save_manifest` keeps the first record saved for a KOS SOP
Instance UID, so the content date/time of the first build is the one every
later build of that version must reuse to be byte-identical.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from alembic.util import CommandError
from sqlalchemy import Connection, Engine, delete, exists, insert, select, update
from sqlalchemy.exc import SQLAlchemyError, StatementError

from imagebridge.errors import StoreError
from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.index import (
    FileStamp,
    IndexedFile,
    InstanceLocation,
    ManifestRecord,
    RepositoryCounts,
    StudyRecord,
    UpsertResult,
)
from imagebridge.model.patient import PatientRecord
from imagebridge.store import batches, database, indexing, queries, rows
from imagebridge.store.authority import AuthorityRule
from imagebridge.store.names import normalise_name as _normalise_name
from imagebridge.store.schema import index_generation, manifests, studies

logger = logging.getLogger(__name__)

RepresentationKey = tuple[str, str]
"""(SOP Instance UID, Transfer Syntax UID): one stored representation of an instance."""


SHARED_GENERATION_POLL = 1.0
"""Seconds between two reads of the shared index generation (see :attr:`Store.generation`)."""
_READ_GENERATION = select(index_generation.c.generation).where(index_generation.c.id == 1)
_BUMP_GENERATION = (
    update(index_generation)
    .where(index_generation.c.id == 1)
    .values(generation=index_generation.c.generation + 1)
)


class Store:
    """Imaging Document Source index of every image source, and the KOS manifests built from it."""

    def __init__(self, engine: Engine, rule: AuthorityRule) -> None:
        self._engine = engine
        self._rule = rule
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if database.is_sqlite(engine) else contextlib.nullcontext()
        )
        self._read_lock: contextlib.AbstractContextManager[Any] = (
            self._write_lock if database.is_memory(engine) else contextlib.nullcontext()
        )
        self._generation = 0
        self._shared_generation = 0
        self._shared_read_at = -SHARED_GENERATION_POLL

    @classmethod
    def open(
        cls,
        database_url: str,
        *,
        default_assigning_authority: str | None = None,
        assigning_authorities: Mapping[str, str] | None = None,
        migrate: bool = True,
    ) -> Store:
        """Open the database at *database_url* and upgrade its schema to the head revision.

        *default_assigning_authority* is the OID given to Patient IDs whose
        images carry no ISO issuer; *assigning_authorities* maps local Issuer
        of Patient ID values to OIDs (see :mod:`imagebridge.store.authority`).
        """
        rule = AuthorityRule(default_assigning_authority, dict(assigning_authorities or {}))
        try:
            engine = database.open_engine(database_url)
            if migrate:
                database.upgrade(engine)
        except SQLAlchemyError as exc:
            logger.debug("opening the store failed", exc_info=True)
            raise StoreError(f"store database cannot be opened: {_reason(exc)}") from exc
        except CommandError as exc:  # e.g. a database migrated by a newer imagebridge
            raise StoreError(f"store database cannot be migrated: {exc}") from exc
        return cls(engine, rule)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for the ``imagebridge db`` command and tests)."""
        return self._engine

    @staticmethod
    def normalise_name(text: str) -> str:
        """Search key of a name: casefolded, without diacritics, whitespace collapsed."""
        return _normalise_name(text)

    def patient_id_of(self, header: InstanceHeader) -> PatientId:
        """The community identifier of an instance's patient (raises PatientIdUnresolved)."""
        return self._rule.resolve(header.patient.id, header.patient.issuer)

    @property
    def generation(self) -> int:
        """A number that changes after every write to the index, by any process.

        Callers cache what they read and reuse it while the generation is the
        same.  This process's own writes change it at once; writes by other
        workers on the same database (the ``index_generation`` row every
        write increments) are seen within :data:`SHARED_GENERATION_POLL` seconds.
        """
        now = time.monotonic()
        if now - self._shared_read_at >= SHARED_GENERATION_POLL:
            self._shared_read_at = now
            try:
                with self._reading() as conn:
                    self._shared_generation = int(conn.execute(_READ_GENERATION).scalar() or 0)
            except StoreError:  # the reader of the index will report the database itself
                logger.debug("index generation not readable", exc_info=True)
        return self._generation + self._shared_generation

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        try:
            with self._write_lock, _translated(), self._engine.begin() as conn:
                yield conn
                conn.execute(_BUMP_GENERATION)  # last: the shared row is locked only briefly
        finally:
            self._generation += 1

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._read_lock, _translated(), self._engine.connect() as conn:
            yield conn

    # --- writes -----------------------------------------------------------------------

    def upsert_instances(
        self,
        repository_unique_id: str,
        headers: Iterable[InstanceHeader],
        files: Mapping[RepresentationKey, FileStamp] | None = None,
    ) -> UpsertResult:
        """Add or update instances of one repository, in one transaction.

        *files* gives, per (SOP Instance UID, Transfer Syntax UID), the file
        the header was read from (folder sources); without it the
        representation has no path and the header's ``file_size``.
        Raises :class:`PatientIdUnresolved` (nothing written) when a header's
        Patient ID cannot get an assigning authority.
        """
        stamps = files or {}
        items = [(h, stamps.get((h.sop_instance_uid, h.transfer_syntax_uid))) for h in headers]
        with self._writing() as conn:
            return indexing.write_instances(conn, repository_unique_id, items, self._rule)

    def index_files(
        self,
        repository_unique_id: str,
        indexed: Sequence[tuple[InstanceHeader, FileStamp]] = (),
        rejected: Iterable[IndexedFile] = (),
        *,
        vanished: Collection[str] = (),
    ) -> UpsertResult:
        """Folder source, record one batch of files read: DICOM ones and the rest.

        *vanished* are paths the current sync found gone: an instance
        indexed from such a path moves to its new file instead of the new
        file counting as a duplicate (a rename keeps the instance in the index).
        """
        with self._writing() as conn:
            indexing.record_files(conn, repository_unique_id, rejected)
            return indexing.write_instances(
                conn, repository_unique_id, indexed, self._rule, vanished=vanished
            )

    def forget_files(self, repository_unique_id: str, paths: Collection[str]) -> None:
        """Folder source, drop vanished files and what was indexed from them."""
        with self._writing() as conn:
            indexing.forget_files(conn, repository_unique_id, paths, self._rule)

    def remove_instances(
        self, repository_unique_id: str, sop_instance_uids: Collection[str]
    ) -> int:
        """Delete instances (all representations); returns how many were found."""
        with self._writing() as conn:
            return indexing.remove_instances(
                conn, repository_unique_id, sop_instance_uids, self._rule
            )

    def replace_study(
        self, repository_unique_id: str, study_uid: str, headers: Iterable[InstanceHeader]
    ) -> UpsertResult:
        """Make the index hold exactly *headers* for one study (a PACS refresh).

        Instances and representations not among *headers* are deleted; an
        empty *headers* deletes the study.  Raises ``StoreError`` if a header
        belongs to another study.
        """
        items = list(headers)
        for header in items:
            if header.study.study_instance_uid != study_uid:
                raise StoreError(
                    f"replace_study({study_uid}) got an instance of study "
                    f"{header.study.study_instance_uid}"
                )
        for header in items:
            self.patient_id_of(header)
        keep = {(h.sop_instance_uid, h.transfer_syntax_uid) for h in items}
        with self._writing() as conn:
            indexing.prune_study(conn, repository_unique_id, study_uid, keep, self._rule)
            return indexing.write_instances(
                conn, repository_unique_id, [(h, None) for h in items], self._rule
            )

    # --- patients ---------------------------------------------------------------------

    def patient_candidates(
        self, *, birth_date: str | None = None, family_key: str | None = None
    ) -> list[PatientRecord]:
        """Patients matching a birth date and/or a family name key (the XCPD candidates).

        *birth_date* is ``YYYYMMDD`` or a shorter prefix (``1963``, ``196308``:
        every patient born then); *family_key* is normalised with
        :meth:`normalise_name` (idempotent).  At least one non-empty criterion
        is required (``TypeError`` otherwise).
        """
        if not birth_date and family_key is None:
            raise TypeError("patient_candidates needs birth_date or family_key")
        with self._reading() as conn:
            return queries.patient_candidates(conn, birth_date=birth_date, family_key=family_key)

    def patients_by_identifier(self, patient_ids: Collection[PatientId]) -> list[PatientRecord]:
        """Patients whose id or one of whose Other Patient IDs is among *patient_ids* (XCPD)."""
        with self._reading() as conn:
            return queries.patients_by_identifier(conn, patient_ids)

    def patient(self, patient_id: PatientId) -> PatientRecord | None:
        """One patient by community identifier, or None."""
        with self._reading() as conn:
            return queries.patient(conn, patient_id)

    # --- studies and instances --------------------------------------------------------

    def studies_for_patient(
        self, patient_id: PatientId, repository_unique_ids: Collection[str] | None = None
    ) -> list[StudyRecord]:
        """Studies of a patient, optionally only in some repositories."""
        with self._reading() as conn:
            return queries.studies_for_patient(
                conn, patient_id=patient_id, repository_unique_ids=repository_unique_ids
            )

    def studies_for_dicom_patient_id(
        self, dicom_patient_id: str, repository_unique_ids: Collection[str] | None = None
    ) -> list[StudyRecord]:
        """Studies whose DICOM Patient ID is *dicom_patient_id*, whatever its authority."""
        with self._reading() as conn:
            return queries.studies_for_patient(
                conn, dicom_patient_id=dicom_patient_id, repository_unique_ids=repository_unique_ids
            )

    def study(self, study_uid: str, repository_unique_id: str | None = None) -> StudyRecord | None:
        """One study, or None."""
        with self._reading() as conn:
            found = queries.study_row(conn, study_uid, repository_unique_id)
        return rows.study_record(found) if found is not None else None

    def study_instances(
        self, study_uid: str, repository_unique_id: str | None = None
    ) -> list[InstanceHeader]:
        """Every instance of a study, once each, with its preferred representation.

        The transfer syntax and file size of each header are those of the
        preferred representation (native syntaxes first, then first indexed).
        """
        with self._reading() as conn:
            found = queries.study_row(conn, study_uid, repository_unique_id)
            return queries.study_instances(conn, found) if found is not None else []

    def repository_study_uids(self, repository_unique_id: str) -> list[str]:
        """Study Instance UIDs of one repository, sorted."""
        with self._reading() as conn:
            return queries.repository_study_uids(conn, repository_unique_id)

    def repository_counts(self, repository_unique_id: str) -> RepositoryCounts:
        """How big one repository's index is."""
        with self._reading() as conn:
            return queries.repository_counts(conn, repository_unique_id)

    def instance_locations(
        self, sop_instance_uid: str, repository_unique_id: str | None = None
    ) -> list[InstanceLocation]:
        """Every stored representation of an instance, preferred first (RAD-69/RAD-75)."""
        with self._reading() as conn:
            return queries.instance_locations(conn, sop_instance_uid, repository_unique_id)

    def instance_locations_many(
        self, sop_instance_uids: Collection[str], repository_unique_id: str | None = None
    ) -> dict[str, list[InstanceLocation]]:
        """:meth:`instance_locations` for many instances at once, by SOP Instance UID."""
        with self._reading() as conn:
            return queries.instance_locations_many(conn, sop_instance_uids, repository_unique_id)

    def instance_location(
        self,
        sop_instance_uid: str,
        *,
        transfer_syntax_uid: str | None = None,
        repository_unique_id: str | None = None,
    ) -> InstanceLocation | None:
        """One representation: the one in *transfer_syntax_uid* if stored, else the preferred."""
        found = self.instance_locations(sop_instance_uid, repository_unique_id)
        for location in found:
            if location.transfer_syntax_uid == transfer_syntax_uid:
                return location
        return found[0] if found else None

    def indexed_files(self, repository_unique_id: str) -> dict[str, IndexedFile]:
        """Folder source, every file looked at, by relative path."""
        with self._reading() as conn:
            return queries.indexed_files_of(conn, repository_unique_id)

    # --- manifests --------------------------------------------------------------------

    def manifest_for_study(
        self, study_uid: str, repository_unique_id: str | None = None
    ) -> ManifestRecord | None:
        """The manifest of the study's current version, or None (unknown study or not built)."""
        with self._reading() as conn:
            found = queries.study_row(conn, study_uid, repository_unique_id)
            if found is None:
                return None
            return queries.manifest_for_version(
                conn, found["repository_unique_id"], study_uid, found["fingerprint"]
            )

    def manifest_by_uid(self, kos_sop_instance_uid: str) -> ManifestRecord | None:
        """A manifest of any study version by its KOS SOP Instance UID."""
        with self._reading() as conn:
            return queries.manifest_by_uid(conn, kos_sop_instance_uid)

    def save_manifest(self, record: ManifestRecord) -> ManifestRecord:
        """Store a built manifest; returns the stored one (the first saved for that KOS UID)."""
        with self._writing() as conn:
            existing = queries.manifest_by_uid(conn, record.sop_instance_uid)
            if existing is not None:
                if existing.sha1 != record.sha1:
                    logger.debug(
                        "manifest %s rebuilt differently; first build kept", record.sop_instance_uid
                    )
                return existing
            conn.execute(insert(manifests), [rows.manifest_values(record)])
        return record

    def prune_manifests(self) -> int:
        """Delete manifests of study versions no longer indexed; returns how many."""
        current = exists().where(
            studies.c.repository_unique_id == manifests.c.repository_unique_id,
            studies.c.study_instance_uid == manifests.c.study_instance_uid,
            studies.c.fingerprint == manifests.c.fingerprint,
        )
        with self._writing() as conn:
            stale = list(conn.execute(select(manifests.c.id).where(~current)).scalars())
            for batch in batches.chunked(stale):
                conn.execute(delete(manifests).where(manifests.c.id.in_(batch)))
        return len(stale)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Database errors become StoreError once, at this boundary."""
    try:
        yield
    except SQLAlchemyError as exc:
        logger.debug("store operation failed", exc_info=True)
        raise StoreError(f"store database error: {_reason(exc)}") from exc


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message without SQL or parameters (they may carry patient data)."""
    original = getattr(exc, "orig", None)
    if original is None and isinstance(exc, StatementError):
        return type(exc).__name__
    source = original if original is not None else exc
    lines = str(source).splitlines()
    return f"{type(source).__name__}: {lines[0][:200] if lines else ''}"
