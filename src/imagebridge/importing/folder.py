"""Import target, a local folder: ``<root>/<study uid>/<series uid>/<sop instance uid>.dcm``.

Files are written under a temporary name (``.part-*``) in their final folder
and renamed (:func:`write_atomically`), so a reader never sees half a file;
:func:`instance_path` checks each UID before it becomes a path component.
The same layout and write are used by the pull's
:class:`~imagebridge.actors.initiating.folder_sink.FolderSink`.

``present`` and ``objects`` list the folders; patient identity and
``find_patients`` read headers (``stop_before_pixels``), one file per series
or study: everything under one study folder was written for that study.
All file work runs in worker threads.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Final

import anyio.to_thread

from imagebridge.dicom.headers import read_instance_header
from imagebridge.errors import DicomError, InvalidUid, TargetUnavailable
from imagebridge.importing.base import (
    HeldInstance,
    ImportInstance,
    ImportStatus,
    InstanceOutcome,
    PatientCandidate,
    PatientDemographics,
    StoreReport,
)
from imagebridge.importing.config import FolderTargetConfig
from imagebridge.importing.instances import (
    CHUNK_SIZE,
    BatchResult,
    IdentifiedInstance,
    store_new,
)
from imagebridge.importing.patients import CandidateSet, usable
from imagebridge.model.ids import validate_uid
from imagebridge.model.imaging import HierarchicDesignator

logger = logging.getLogger(__name__)

SUFFIX: Final = ".dcm"
PARTIAL_PREFIX: Final = ".part-"


def instance_path(root: Path, study: str, series: str, sop: str) -> Path:
    """``<root>/<study>/<series>/<sop>.dcm``; raises InvalidUid for a UID unfit for a path."""
    return (
        root
        / validate_uid(study, "Study Instance UID")
        / validate_uid(series, "Series Instance UID")
        / f"{validate_uid(sop, 'SOP Instance UID')}{SUFFIX}"
    )


def write_atomically(path: Path, source: BinaryIO) -> int:
    """Copy *source* to *path* through a temporary file in the same folder; the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_SIZE)
            written = out.tell()
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return written


class FolderTarget:
    """Import target, a local folder tree by study, series and SOP Instance UID."""

    def __init__(self, config: FolderTargetConfig) -> None:
        self._config = config
        self._root = Path(config.root)

    @property
    def name(self) -> str:
        """The configured name."""
        return self._config.name

    @property
    def kind(self) -> str:
        """Always ``folder``."""
        return "folder"

    @property
    def root(self) -> Path:
        """The folder the tree starts at."""
        return self._root

    async def store(
        self, instances: Sequence[ImportInstance], *, known_present: frozenset[str] | None = None
    ) -> StoreReport:
        """Write each instance not yet in the tree (see :func:`~.instances.store_new`).

        *known_present*: what the caller knows this target holds (then not asked again).
        """
        return await store_new(
            instances,
            present=self.present,
            known_present=known_present,
            send=self._send,
            batch_size=100,
            batch_bytes=1 << 40,
            target=self.name,
        )

    async def present(self, study_instance_uid: str) -> frozenset[str]:
        """SOP Instance UIDs of the files under the study's folder."""
        return await anyio.to_thread.run_sync(self._present, study_instance_uid)

    async def objects(
        self,
        *,
        study_instance_uid: str = "",
        series_instance_uid: str = "",
        sop_instance_uid: str = "",
    ) -> list[HeldInstance]:
        """Files matching every UID given, with the patient read from one header per series."""
        if not (study_instance_uid or series_instance_uid or sop_instance_uid):
            raise ValueError("objects() needs a Study, Series or SOP Instance UID")
        return await anyio.to_thread.run_sync(
            self._objects, study_instance_uid, series_instance_uid, sop_instance_uid
        )

    async def find_patients(self, demographics: PatientDemographics) -> list[PatientCandidate]:
        """Patients of the tree matching *demographics* (one header read per study)."""
        if not usable(demographics):
            return []
        return await anyio.to_thread.run_sync(self._find_patients, demographics)

    async def aclose(self) -> None:
        """Nothing to release."""

    # --- blocking work, in worker threads ------------------------------------------------

    async def _send(self, batch: Sequence[IdentifiedInstance]) -> BatchResult:
        return BatchResult(await anyio.to_thread.run_sync(self._write_batch, batch))

    def _write_batch(self, batch: Sequence[IdentifiedInstance]) -> list[InstanceOutcome]:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetUnavailable(
                f"the import folder {self._root} cannot be created ({exc.strerror or exc})"
            ) from exc
        return [self._write(item) for item in batch]

    def _write(self, item: IdentifiedInstance) -> InstanceOutcome:
        try:
            path = instance_path(
                self._root,
                item.study_instance_uid,
                item.series_instance_uid,
                item.sop_instance_uid,
            )
        except InvalidUid as exc:
            return item.outcome(ImportStatus.FAILED, exc.message)
        if path.exists():
            return item.outcome(ImportStatus.ALREADY_PRESENT)
        source = item.source
        try:
            if isinstance(source, str | os.PathLike):
                with open(source, "rb") as stream:
                    write_atomically(path, stream)
            else:
                with source.open() as stream:
                    write_atomically(path, stream)
        except OSError as exc:
            return item.outcome(ImportStatus.FAILED, f"cannot be written ({exc.strerror or exc})")
        return item.outcome(ImportStatus.STORED)

    def _present(self, study_instance_uid: str) -> frozenset[str]:
        try:
            study = self._root / validate_uid(study_instance_uid, "Study Instance UID")
        except InvalidUid:
            return frozenset()
        return frozenset(path.stem for path in _instance_files(study))

    def _objects(self, study: str, series: str, sop: str) -> list[HeldInstance]:
        try:
            pattern = "/".join(
                validate_uid(uid, what) if uid else "*"
                for uid, what in ((study, "Study"), (series, "Series"), (sop, "SOP"))
            )
        except InvalidUid:
            return []
        found: list[HeldInstance] = []
        patients: dict[Path, tuple[str, HierarchicDesignator | None]] = {}
        for path in sorted(self._root.glob(pattern + SUFFIX)):
            if path.name.startswith(".") or not path.is_file():
                continue
            series_dir = path.parent
            if series_dir not in patients:
                patients[series_dir] = _patient_of(path)
            patient_id, issuer = patients[series_dir]
            found.append(
                HeldInstance(
                    study_instance_uid=series_dir.parent.name,
                    series_instance_uid=series_dir.name,
                    sop_instance_uid=path.stem,
                    patient_id=patient_id,
                    issuer=issuer,
                )
            )
        return found

    def _find_patients(self, demographics: PatientDemographics) -> list[PatientCandidate]:
        candidates = CandidateSet(demographics)
        if not self._root.is_dir():
            return []
        for study in sorted(self._root.iterdir()):
            if study.name.startswith(".") or not study.is_dir():
                continue
            first = next(iter(_instance_files(study)), None)
            if first is None:
                continue
            try:
                header = read_instance_header(first)
            except (DicomError, OSError):
                logger.warning("an unreadable file in the import folder was skipped")
                continue
            patient = header.patient
            candidates.add(
                patient_id=patient.id,
                issuer=patient.issuer,
                name=patient.name,
                birth_date=patient.birth_date,
                sex=patient.sex,
                study_instance_uid=header.study.study_instance_uid,
            )
        return candidates.result()


def _instance_files(study: Path) -> list[Path]:
    """The instance files under one study folder (temporary files left out)."""
    if not study.is_dir():
        return []
    return sorted(
        path
        for series in study.iterdir()
        if series.is_dir()
        for path in series.glob(f"*{SUFFIX}")
        if not path.name.startswith(".")
    )


def _patient_of(path: Path) -> tuple[str, HierarchicDesignator | None]:
    try:
        header = read_instance_header(path)
    except (DicomError, OSError):
        logger.warning("an unreadable file in the import folder has no known patient")
        return "", None
    return header.patient.id, header.patient.issuer
