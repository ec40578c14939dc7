"""Folder source, the index walk: what :meth:`FolderSource.sync
<imagebridge.sources.folder.FolderSource.sync>` does to bring the store's
index of a folder archive up to date.

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
  looks like that) unless ``allow_empty``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio.to_thread

from imagebridge.dicom.headers import read_instance_header
from imagebridge.errors import DicomError, NotDicom, PatientIdUnresolved, SourceUnavailable
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.index import FileResult, FileStamp, IndexedFile
from imagebridge.store import Store

logger = logging.getLogger("imagebridge.sources.folder")  # the folder source's log, as before


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


async def sync_folder(
    root: Path,
    repository_unique_id: str,
    store: Store,
    *,
    batch_size: int,
    min_age_ns: int,
    allow_empty: bool,
) -> SyncReport:
    """Re-index new, changed and removed files of *root*; blocking work runs in worker threads.

    The caller serialises syncs of one folder.  Raises :class:`SourceUnavailable`
    when the root is missing or unreadable (or suddenly empty, unless
    *allow_empty*); the index is then unchanged.
    """
    on_disk = await anyio.to_thread.run_sync(scan_folder, root, repository_unique_id)
    known = await anyio.to_thread.run_sync(store.indexed_files, repository_unique_id)
    if not on_disk and known and not allow_empty:
        raise SourceUnavailable(
            f"folder source {repository_unique_id}: the folder is empty but "
            f"{len(known)} files are indexed (unmounted?); not clearing the index"
        )
    vanished = {p for p in known if p not in on_disk}
    settled_before = time.time_ns() - min_age_ns
    todo = [s for p, s in on_disk.items() if changed(known.get(p), s)]
    settling = sum(1 for s in todo if s.mtime_ns > settled_before) if min_age_ns else 0
    if settling:
        todo = [s for s in todo if s.mtime_ns <= settled_before]
    if vanished:
        todo += [
            s
            for p, s in on_disk.items()
            if known.get(p) is not None
            and known[p].result is FileResult.DUPLICATE
            and not changed(known[p], s)
        ]
    tally = _Tally()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        await anyio.to_thread.run_sync(
            partial(
                index_batch,
                root,
                repository_unique_id,
                store,
                batch,
                vanished=vanished,
                tally=tally,
            )
        )
    if vanished:
        await anyio.to_thread.run_sync(store.forget_files, repository_unique_id, vanished)
    return SyncReport(
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


def scan_folder(root: Path, repository_unique_id: str) -> dict[str, FileStamp]:
    """Walk the tree: relative POSIX path → stamp, for every regular non-hidden file."""
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise SourceUnavailable(
            f"folder source {repository_unique_id}: folder {root} is missing or unreadable"
        )
    found: dict[str, FileStamp] = {}

    def failed(exc: OSError) -> None:
        logger.warning(
            "folder source %s: cannot list a folder: %s", repository_unique_id, exc.strerror
        )

    for directory, subdirectories, names in os.walk(root, onerror=failed):
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
            relative = full.relative_to(root).as_posix()
            found[relative] = FileStamp(relative, stat.st_size, stat.st_mtime_ns)
    return found


def index_batch(
    root: Path,
    repository_unique_id: str,
    store: Store,
    batch: Sequence[FileStamp],
    *,
    vanished: Collection[str],
    tally: _Tally,
) -> None:
    """Read the headers of one batch of files and write them to the store (worker thread)."""
    indexed: list[tuple[InstanceHeader, FileStamp]] = []
    rejected: list[IndexedFile] = []
    for stamp in batch:
        try:
            header = read_instance_header(root / stamp.path)
            store.patient_id_of(header)
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
    result = store.index_files(repository_unique_id, indexed, rejected, vanished=vanished)
    for path in result.duplicates:
        logger.debug("duplicate of an indexed instance, first file kept: %s", path)
    tally.indexed += result.instances
    tally.duplicates += len(result.duplicates)
    tally.not_dicom += sum(1 for r in rejected if r.result is FileResult.NOT_DICOM)
    tally.errors += sum(1 for r in rejected if r.result is FileResult.ERROR)


def changed(known: IndexedFile | None, stamp: FileStamp) -> bool:
    """True when a file is new or its size or mtime moved since it was indexed."""
    return known is None or (known.stamp.size, known.stamp.mtime_ns) != (stamp.size, stamp.mtime_ns)
