"""Imaging Document Source, the folder archive: DICOM Part-10 files under one directory tree.

The index in the store is the truth for a folder: :meth:`FolderSource.sync`
brings it up to date and every query (:meth:`~FolderSource.patient_studies`,
:meth:`~FolderSource.study_instances`, :meth:`~FolderSource.iter_instances`)
answers from it.  Only :meth:`~FolderSource.read_instance` touches the files.

Indexing rules (new, changed, vanished and duplicate files, ``min_age``, the
safety against an unmounted share): :mod:`imagebridge.sources.folder_index`.

Watching: the gateway re-runs :meth:`FolderSource.sync` every *interval*
seconds (:func:`imagebridge.sources.indexer.while_leading`, one worker per
archive).  Polling is portable (inotify and friends differ per platform and
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
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from imagebridge.errors import ImageBridgeError, InstanceNotFound, SourceUnavailable
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.index import InstanceLocation
from imagebridge.sources.base import ProbeResult, StudyVersion
from imagebridge.sources.folder_index import SyncReport, sync_folder
from imagebridge.store import Store
from imagebridge.wire.chunks import FrontRoom

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes per chunk when streaming a stored instance."""
WHOLE_READ_LIMIT = 2 << 20
"""Files up to this size are read in one piece (one instance held at a time)."""
DEFAULT_BATCH_SIZE = 200
"""Files read and written per batch (one thread hop and one transaction)."""


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
            report = await sync_folder(
                self._root,
                self._repository_unique_id,
                self._store,
                batch_size=self._batch_size,
                min_age_ns=self._min_age_ns,
                allow_empty=allow_empty,
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
        self, locations: Sequence[InstanceLocation], *, room: int = 0
    ) -> list[FrontRoom | ImageBridgeError]:
        """The bytes of several small representations, read in one worker-thread trip.

        One entry per location, in order: the file's bytes, with *room* spare
        bytes before them (for a part header, see :class:`FrontRoom`), or the
        error :meth:`read_location` would raise for it.  Meant for files up to
        :data:`WHOLE_READ_LIMIT`; the caller bounds the total.
        """
        return await anyio.to_thread.run_sync(self._read_whole, locations, room)

    def _read_whole(
        self, locations: Sequence[InstanceLocation], room: int
    ) -> list[FrontRoom | ImageBridgeError]:
        out: list[FrontRoom | ImageBridgeError] = []
        root = os.fspath(self._root)
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
                out.append(FrontRoom.read_file(os.path.join(root, location.path), room))
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
        """Nothing to release: the store belongs to the caller."""
