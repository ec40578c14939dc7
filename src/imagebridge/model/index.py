"""Imaging Document Source index records: studies, stored instance files and KOS manifests.

These are the values the store (:mod:`imagebridge.store`) hands out for its
index of every image source: a :class:`StudyRecord` per study and repository,
an :class:`InstanceLocation` per stored representation of an instance, a
:class:`ManifestRecord` per built KOS manifest, and the :class:`FileStamp` /
:class:`IndexedFile` pair that lets a folder source re-index incrementally.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import DicomCode, DicomPatient, HierarchicDesignator


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """Imaging Document Source, one study of one repository as the index holds it.

    ``patient`` is the Patient module as the study's images carry it (copied
    into the KOS); ``patient_id`` is the community identifier it resolves to.
    ``modalities`` and ``body_parts`` are the distinct values of the study's
    series, sorted.  ``total_size`` counts the bytes of every stored
    representation.  ``fingerprint`` is a SHA-256 (hex) of the study's
    instance set (series, SOP class, SOP instance): it changes exactly when
    the KOS manifest must change.
    """

    repository_unique_id: str
    study_instance_uid: str
    patient_id: PatientId
    patient: DicomPatient
    study_date: str = ""
    study_time: str = ""
    description: str = ""
    accession_number: str = ""
    accession_issuer: HierarchicDesignator | None = None
    referring_physician_name: str = ""
    study_id: str = ""
    procedure_codes: tuple[DicomCode, ...] = ()
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    number_of_series: int = 0
    number_of_instances: int = 0
    total_size: int = 0
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class InstanceLocation:
    """Imaging Document Source, where one stored representation of an instance lives.

    An instance may be stored in several transfer syntaxes (the NIST image
    folders hold up to four); each is one location.  ``path`` is relative to
    the folder source's root (POSIX separators), ``None`` for a PACS.
    """

    repository_unique_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str | None = None
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class FileStamp:
    """A file of a folder source as last seen: relative path, size and mtime in ns."""

    path: str
    size: int
    mtime_ns: int


class FileResult(Enum):
    """What indexing made of one file of a folder source."""

    DICOM = "dicom"
    """Indexed as one representation of an instance."""
    NOT_DICOM = "not-dicom"
    """Not a DICOM Part-10 object; skipped until it changes."""
    ERROR = "error"
    """DICOM, but not indexable (no UIDs, no usable Patient ID, unreadable)."""
    DUPLICATE = "duplicate"
    """Same SOP instance and transfer syntax as a file indexed earlier (first one kept)."""


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """Folder source, the index's memory of one file, so unchanged files are not re-read."""

    stamp: FileStamp
    result: FileResult
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestRecord:
    """Imaging Document Source, one built KOS manifest of one study version.

    ``content_datetime`` is the Content Date/Time of the first build: building
    again with it gives the same bytes, hence the same XDS ``size`` and
    ``hash`` (``sha1``, hex).  ``fingerprint`` is the :class:`StudyRecord`
    fingerprint the manifest was built for.  The constructor checks that
    ``size`` and ``sha1`` describe ``document``; :meth:`of_document` computes them.
    """

    repository_unique_id: str
    study_instance_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    content_datetime: datetime
    fingerprint: str
    size: int
    sha1: str
    document: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.size != len(self.document):
            raise InvalidValue(f"manifest size {self.size} is not {len(self.document)}")
        if self.sha1 != hashlib.sha1(self.document, usedforsecurity=False).hexdigest():
            raise InvalidValue("manifest sha1 does not match its document")

    @classmethod
    def of_document(
        cls,
        document: bytes,
        *,
        repository_unique_id: str,
        study_instance_uid: str,
        sop_instance_uid: str,
        series_instance_uid: str,
        content_datetime: datetime,
        fingerprint: str,
    ) -> ManifestRecord:
        """A record for freshly built KOS bytes, with size and SHA-1 computed."""
        return cls(
            repository_unique_id=repository_unique_id,
            study_instance_uid=study_instance_uid,
            sop_instance_uid=sop_instance_uid,
            series_instance_uid=series_instance_uid,
            content_datetime=content_datetime,
            fingerprint=fingerprint,
            size=len(document),
            sha1=hashlib.sha1(document, usedforsecurity=False).hexdigest(),
            document=document,
        )


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Imaging Document Source, what one batch write to the index did."""

    instances: int
    """Representations written (new or updated)."""
    duplicates: tuple[str, ...] = ()
    """Paths skipped: their SOP instance and transfer syntax were indexed from another file."""


@dataclass(frozen=True, slots=True)
class RepositoryCounts:
    """Imaging Document Source, the size of one repository's index (for ``imagebridge check``)."""

    studies: int
    instances: int
    representations: int
    files: int
    """Files a folder source has looked at, DICOM or not (0 for a PACS)."""
