"""Imaging Document Source, the folder archive: DICOM Part-10 files under one directory tree.

The index in the store is the truth for a folder: :meth:`FolderSource.sync`
brings it up to date and every query (:meth:`~FolderSource.patient_studies`,
:meth:`~FolderSource.study_instances`, :meth:`~FolderSource.iter_instances`)
answers from it.  Only :meth:`~FolderSource.read_instance` touches the files.

Indexing rules:

* Every regular file under the root is considered, whatever its name, except
  names starting with ``.`` (hidden files, and the temporary files of rsync
  and most copy tools while they write).  Symbolic links to files are
  followed; directory links are not.
* A file is read (header only, ``stop_before_pixels``) when it is new or its
  size or mtime changed since the last sync.  Files that are not DICOM, or
  DICOM that cannot be indexed (no UIDs, no usable Patient ID), are recorded
  with the reason and not read again until they change.  A file that cannot
  be opened (permissions, removed meanwhile) is not recorded and is retried
  by the next sync.
* With ``min_age`` set, a new or changed file is read only once it has not
  been modified for that many seconds, so files still being copied in are
  left for a later round (reported as ``settling``).
* A file that vanished takes its representation with it; an instance left
  without representation, a study without instances and a patient without
  studies leave the index.  A renamed file keeps its instance indexed.
* **Duplicates**: an instance is keyed by SOP Instance UID *and* Transfer
  Syntax UID, so one instance may have several files in different transfer
  syntaxes (the NIST image folders store each instance up to four times:
  ``<sop>/<transferSyntaxUID>``); all are kept as representations.  A second
  file with the same SOP instance *and* transfer syntax is a duplicate: the
  file indexed first is kept, the other is recorded as a duplicate (logged at
  DEBUG, counted at INFO) and looked at again when a sync finds files
  removed, so it takes over if the first one goes.
* **Safety**: a root that is missing or unreadable raises
  :class:`SourceUnavailable` and leaves the index as it was; so does a root
  that is suddenly empty while the index holds files (an unmounted share
  looks like that) unless ``sync(allow_empty=True)``.

Watching: :meth:`FolderSource.watch` polls, re-syncing every *interval*
seconds.  Polling is portable (inotify and friends differ per platform and
miss changes on network shares, where archives often live) and cheap: one
directory walk and one index read per round; unchanged files are not opened.

Reading: :meth:`FolderSource.read_instance` streams the file in 1 MiB chunks.
Its optional ``transfer_syntax_uid`` picks that representation when stored,
else the preferred one (native syntaxes first); call
``store.instance_locations(sop_instance_uid)`` to see every representation
and choose (RAD-75 transfer syntax negotiation).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from imagebridge.dicom.headers import read_instance_header
from imagebridge.errors import (
    DicomError,
    ImageBridgeError,
    InstanceNotFound,
    NotDicom,
    PatientIdUnresolved,
    SourceUnavailable,
)
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.index import FileResult, FileStamp, IndexedFile, InstanceLocation
from imagebridge.sources.base import ProbeResult, StudyVersion
from imagebridge.store import Store

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
WHOLE_READ_LIMIT = 2 << 20
"""Files up to this size are read in one piece (one instance held at a time)."""
"""Bytes per chunk when streaming a stored instance."""
DEFAULT_BATCH_SIZE = 200
"""Files read and written per batch (one thread hop and one transaction)."""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """Folder source, what one :meth:`FolderSource.sync` did (counts of files)."""

    seen: int = 0
    """Files found under the root."""
    unchanged: int = 0
    """Files skipped because size and mtime are as indexed."""
    read: int = 0
    """Files opened and parsed."""
    indexed: int = 0
    """Representations written (new or changed)."""
    not_dicom: int = 0
    errors: int = 0
    """DICOM files that cannot be indexed, and files that could not be opened."""
    duplicates: int = 0
    removed: int = 0
    """Vanished files forgotten."""
    settling: int = 0
    """New or changed files left for a later sync: modified less than ``min_age`` ago."""


@dataclass(slots=True)
class _Tally:
    read: int = 0
    indexed: int = 0
    not_dicom: int = 0
    errors: int = 0
    duplicates: int = 0


class FolderSource:
    """Imaging Document Source, a tree of DICOM Part-10 files behind one repositoryUniqueId."""

    def __init__(
        self,
        repository_unique_id: str,
        path: str | os.PathLike[str],
        store: Store,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        min_age: float = 0.0,
    ) -> None:
        """*min_age*: seconds a file must be unmodified before it is read (0: read at once)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if min_age < 0:
            raise ValueError(f"min_age must be >= 0, not {min_age}")
        self._min_age_ns = int(min_age * 1e9)
        self._repository_unique_id = repository_unique_id
        self._root = Path(path)
        self._store = store
        self._batch_size = batch_size
        self._sync_lock = anyio.Lock()

    @property
    def repository_unique_id(self) -> str:
        """The repositoryUniqueId (Retrieve Location UID) of this source."""
        return self._repository_unique_id

    @property
    def kind(self) -> str:
        """Always ``folder``."""
        return "folder"

    @property
    def root(self) -> Path:
        """The directory the archive lives in."""
        return self._root

    # --- indexing ---------------------------------------------------------------------

    async def sync(self, *, allow_empty: bool = False) -> SyncReport:
        """Re-index new, changed and removed files; blocking work runs in worker threads.

        Raises :class:`SourceUnavailable` when the root is missing or unreadable
        (or suddenly empty, unless *allow_empty*); the index is then unchanged.
        """
        async with self._sync_lock:
            on_disk = await anyio.to_thread.run_sync(self._scan)
            known = await anyio.to_thread.run_sync(
                self._store.indexed_files, self._repository_unique_id
            )
            if not on_disk and known and not allow_empty:
                raise SourceUnavailable(
                    f"folder source {self._repository_unique_id}: the folder is empty but "
                    f"{len(known)} files are indexed (unmounted?); not clearing the index"
                )
            vanished = {p for p in known if p not in on_disk}
            settled_before = time.time_ns() - self._min_age_ns
            todo = [s for p, s in on_disk.items() if _changed(known.get(p), s)]
            settling = (
                sum(1 for s in todo if s.mtime_ns > settled_before) if self._min_age_ns else 0
            )
            if settling:
                todo = [s for s in todo if s.mtime_ns <= settled_before]
            if vanished:
                todo += [
                    s
                    for p, s in on_disk.items()
                    if known.get(p) is not None
                    and known[p].result is FileResult.DUPLICATE
                    and not _changed(known[p], s)
                ]
            tally = _Tally()
            for start in range(0, len(todo), self._batch_size):
                batch = todo[start : start + self._batch_size]
                await anyio.to_thread.run_sync(self._index_batch, batch, vanished, tally)
            if vanished:
                await anyio.to_thread.run_sync(
                    self._store.forget_files, self._repository_unique_id, vanished
                )
        report = SyncReport(
            seen=len(on_disk),
            unchanged=len(on_disk) - len({s.path for s in todo}) - settling,
            settling=settling,
            read=tally.read,
            indexed=tally.indexed,
            not_dicom=tally.not_dicom,
            errors=tally.errors,
            duplicates=tally.duplicates,
            removed=len(vanished),
        )
        logger.info(
            "folder source %s synced: %d files, %d unchanged, %d read, %d indexed, "
            "%d not DICOM, %d errors, %d duplicates, %d removed, %d settling",
            self._repository_unique_id,
            report.seen,
            report.unchanged,
            report.read,
            report.indexed,
            report.not_dicom,
            report.errors,
            report.duplicates,
            report.removed,
            report.settling,
        )
        return report

    async def watch(self, interval: float = 60.0) -> None:
        """Re-sync every *interval* seconds until cancelled (run :meth:`sync` once first).

        A sync that fails (folder unavailable, database error) is logged as a
        warning and tried again at the next round.
        """
        if interval <= 0:
            raise ValueError(f"watch interval must be > 0, not {interval}")
        while True:
            await anyio.sleep(interval)
            try:
                await self.sync()
            except ImageBridgeError as exc:
                logger.warning(
                    "folder source %s: sync failed: %s", self._repository_unique_id, exc.message
                )

    def _scan(self) -> dict[str, FileStamp]:
        """Walk the tree: relative POSIX path → stamp, for every regular non-hidden file."""
        if not self._root.is_dir() or not os.access(self._root, os.R_OK | os.X_OK):
            raise SourceUnavailable(
                f"folder source {self._repository_unique_id}: folder {self._root} is missing "
                "or unreadable"
            )
        found: dict[str, FileStamp] = {}

        def failed(exc: OSError) -> None:
            logger.warning(
                "folder source %s: cannot list a folder: %s",
                self._repository_unique_id,
                exc.strerror,
            )

        for directory, subdirectories, names in os.walk(self._root, onerror=failed):
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
            base = Path(directory)
            for name in sorted(names):
                if name.startswith("."):
                    continue
                full = base / name
                try:
                    stat = full.stat()
                except OSError:
                    logger.debug("cannot stat %s", full)
                    continue
                if not full.is_file():
                    continue
                relative = full.relative_to(self._root).as_posix()
                found[relative] = FileStamp(relative, stat.st_size, stat.st_mtime_ns)
        return found

    def _index_batch(
        self, batch: Sequence[FileStamp], vanished: Collection[str], tally: _Tally
    ) -> None:
        """Read the headers of one batch of files and write them to the store (worker thread)."""
        indexed: list[tuple[InstanceHeader, FileStamp]] = []
        rejected: list[IndexedFile] = []
        for stamp in batch:
            try:
                header = read_instance_header(self._root / stamp.path)
                self._store.patient_id_of(header)
            except NotDicom as exc:
                rejected.append(IndexedFile(stamp, FileResult.NOT_DICOM, exc.message))
                logger.debug("not DICOM: %s", stamp.path)
            except (DicomError, PatientIdUnresolved) as exc:
                rejected.append(IndexedFile(stamp, FileResult.ERROR, exc.message))
                logger.debug("not indexable: %s: %s", stamp.path, exc.message)
            except OSError as exc:
                tally.errors += 1
                logger.debug("cannot read %s: %s", stamp.path, exc)
                continue
            else:
                indexed.append((header, stamp))
            tally.read += 1
        result = self._store.index_files(
            self._repository_unique_id, indexed, rejected, vanished=vanished
        )
        for path in result.duplicates:
            logger.debug("duplicate of an indexed instance, first file kept: %s", path)
        tally.indexed += result.instances
        tally.duplicates += len(result.duplicates)
        tally.not_dicom += sum(1 for r in rejected if r.result is FileResult.NOT_DICOM)
        tally.errors += sum(1 for r in rejected if r.result is FileResult.ERROR)

    # --- ImageSource ------------------------------------------------------------------

    async def patient_studies(self, patient_id: str) -> Sequence[StudyVersion]:
        """The studies of one DICOM Patient ID, from the index."""
        records = await anyio.to_thread.run_sync(
            self._store.studies_for_dicom_patient_id, patient_id, [self._repository_unique_id]
        )
        return [
            StudyVersion(r.study_instance_uid, r.number_of_instances, r.patient.id) for r in records
        ]

    async def study_instances(self, study_instance_uid: str) -> Sequence[InstanceHeader]:
        """Headers of every instance of one study, from the index (empty if unknown)."""
        return await anyio.to_thread.run_sync(
            self._store.study_instances, study_instance_uid, self._repository_unique_id
        )

    async def iter_instances(self) -> AsyncIterator[InstanceHeader]:
        """Every indexed instance, study by study."""
        study_uids = await anyio.to_thread.run_sync(
            self._store.repository_study_uids, self._repository_unique_id
        )
        for study_uid in study_uids:
            for header in await self.study_instances(study_uid):
                yield header

    async def read_instance(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The stored Part-10 bytes of one instance in 1 MiB chunks.

        *transfer_syntax_uid* picks that representation when stored, else the
        preferred one is streamed.  Raises :class:`InstanceNotFound` when the
        index has no such instance in that study and series, and
        :class:`SourceUnavailable` when the file or folder has vanished.
        """
        location = await anyio.to_thread.run_sync(
            partial(
                self._store.instance_location,
                sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                repository_unique_id=self._repository_unique_id,
            )
        )
        if (
            location is None
            or location.path is None
            or location.study_instance_uid != study_instance_uid
            or location.series_instance_uid != series_instance_uid
        ):
            raise InstanceNotFound(
                f"repository {self._repository_unique_id} has no instance {sop_instance_uid} "
                f"in study {study_instance_uid}, series {series_instance_uid}"
            )
        try:
            stream = await anyio.open_file(self._root / location.path, "rb")
        except OSError as exc:
            logger.debug("cannot open %s: %s", location.path, exc)
            raise SourceUnavailable(
                f"folder source {self._repository_unique_id}: the file of instance "
                f"{sop_instance_uid} cannot be read ({exc.strerror}); re-sync the folder"
            ) from exc
        async with stream:
            while chunk := await stream.read(CHUNK_SIZE):
                yield chunk

    async def read_location(self, location: InstanceLocation) -> AsyncIterator[bytes]:
        """The bytes of one indexed representation whose location the caller already holds.

        A file up to :data:`WHOLE_READ_LIMIT` is read in one worker-thread trip
        (most DICOM instances); a larger one streams in 1 MiB chunks.
        """
        if location.path is None or location.repository_unique_id != self._repository_unique_id:
            raise InstanceNotFound(
                f"repository {self._repository_unique_id} has no file for instance "
                f"{location.sop_instance_uid}"
            )
        path = self._root / location.path
        size = location.file_size
        if size is not None and size <= WHOLE_READ_LIMIT:
            try:
                data = await anyio.to_thread.run_sync(path.read_bytes)
            except OSError as exc:
                raise self._vanished(location.sop_instance_uid, exc) from exc
            yield data
            return
        try:
            stream = await anyio.open_file(path, "rb")
        except OSError as exc:
            raise self._vanished(location.sop_instance_uid, exc) from exc
        async with stream:
            while chunk := await stream.read(CHUNK_SIZE):
                yield chunk

    async def read_whole(
        self, locations: Sequence[InstanceLocation]
    ) -> list[bytes | ImageBridgeError]:
        """The bytes of several small representations, read in one worker-thread trip.

        One entry per location, in order: the file's bytes, or the error
        :meth:`read_location` would raise for it.  Meant for files up to
        :data:`WHOLE_READ_LIMIT`; the caller bounds the total.
        """
        return await anyio.to_thread.run_sync(self._read_whole, locations)

    def _read_whole(self, locations: Sequence[InstanceLocation]) -> list[bytes | ImageBridgeError]:
        out: list[bytes | ImageBridgeError] = []
        for location in locations:
            if location.path is None or location.repository_unique_id != self._repository_unique_id:
                out.append(
                    InstanceNotFound(
                        f"repository {self._repository_unique_id} has no file for instance "
                        f"{location.sop_instance_uid}"
                    )
                )
                continue
            try:
                out.append((self._root / location.path).read_bytes())
            except OSError as exc:
                out.append(self._vanished(location.sop_instance_uid, exc))
        return out

    def _vanished(self, sop_instance_uid: str, exc: OSError) -> SourceUnavailable:
        logger.debug("cannot read the file of %s: %s", sop_instance_uid, exc)
        return SourceUnavailable(
            f"folder source {self._repository_unique_id}: the file of instance "
            f"{sop_instance_uid} cannot be read ({exc.strerror}); re-sync the folder"
        )

    async def probe(self) -> ProbeResult:
        """Whether the folder is there and readable, with the size of its index."""
        readable = await anyio.to_thread.run_sync(
            lambda: self._root.is_dir() and os.access(self._root, os.R_OK | os.X_OK)
        )
        counts = await anyio.to_thread.run_sync(
            self._store.repository_counts, self._repository_unique_id
        )
        detail = (
            f"{counts.files} files indexed, {counts.studies} studies, {counts.instances} instances"
        )
        if not readable:
            return ProbeResult(False, f"folder {self._root} is missing or unreadable; {detail}")
        return ProbeResult(True, f"folder {self._root}: {detail}")

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the caller, :meth:`watch` to its task group."""


def _changed(known: IndexedFile | None, stamp: FileStamp) -> bool:
    """True when a file is new or its size or mtime moved since it was indexed."""
    return known is None or (known.stamp.size, known.stamp.mtime_ns) != (stamp.size, stamp.mtime_ns)
