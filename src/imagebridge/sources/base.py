"""The ImageSource protocol every archive adapter implements.

A source is one Imaging Document Source of the community, identified by the
``repositoryUniqueId`` that KOS manifests carry as Retrieve Location UID.
imagebridge keeps an index of every source in its store (patients, studies,
instances); the responders answer ITI-55 and ITI-38 from that index and ask
the source itself only for what must be live:

* :meth:`ImageSource.patient_studies` tells, for one patient, which studies the
  archive holds now and how many instances each has, so the responder can
  refresh what changed (and report a PACS that is down as XDSRegistryError);
* :meth:`ImageSource.study_instances` lists the headers of one study, the input
  of the KOS manifest built on demand;
* :meth:`ImageSource.iter_instances` walks the whole archive for a full sync;
* :meth:`ImageSource.read_instance` streams one stored Part-10 object (RAD-69/75).

Every method that touches the archive raises :class:`SourceUnavailable` when
it cannot be reached, and :class:`InstanceNotFound` for an unknown instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from imagebridge.model.imaging import InstanceHeader


@dataclass(frozen=True, slots=True)
class StudyVersion:
    """What the archive says about one study right now (enough to detect a change)."""

    study_instance_uid: str
    number_of_instances: int
    patient_id: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of ``imagebridge check`` for one source."""

    ok: bool
    detail: str


@runtime_checkable
class ImageSource(Protocol):
    """An Imaging Document Source behind one repositoryUniqueId."""

    @property
    def repository_unique_id(self) -> str:
        """The repositoryUniqueId (Retrieve Location UID) of this source."""
        ...

    @property
    def kind(self) -> str:
        """``folder``, ``dicomweb`` or ``dimse``."""
        ...

    async def patient_studies(self, patient_id: str) -> Sequence[StudyVersion]:
        """The studies the archive holds for *patient_id* (DICOM Patient ID), live."""
        ...

    async def study_instances(self, study_instance_uid: str) -> Sequence[InstanceHeader]:
        """Headers of every instance of one study, live (empty if the study is unknown)."""
        ...

    def iter_instances(self) -> AsyncIterator[InstanceHeader]:
        """Every instance of the archive, for a full index sync."""
        ...

    def read_instance(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> AsyncIterator[bytes]:
        """The stored Part-10 bytes of one instance, in chunks, never whole in memory."""
        ...

    async def probe(self) -> ProbeResult:
        """Check that the archive answers (used by ``imagebridge check``)."""
        ...

    async def aclose(self) -> None:
        """Release connections and background work."""
        ...
