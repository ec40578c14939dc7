"""Import target, the protocol every destination of retrieved images implements.

An import target is where the Initiating Imaging Gateway puts the instances
it retrieved (RAD-75): a local folder, a PACS over STOW-RS or a PACS over
C-STORE.  Besides storing, a target answers what the importer must know
before and after a job:

* :meth:`ImportTarget.present`: the SOP Instance UIDs it already holds for a
  study (de-duplication before storing, verification after: the target must
  then hold exactly the KOS's instance set);
* :meth:`ImportTarget.objects`: what it holds under given Study, Series or
  SOP Instance UIDs, with the patient each belongs to, so reconciliation can
  tell "the same object" from "a different local object with that UID";
* :meth:`ImportTarget.find_patients`: local patients matching demographics,
  to find the local Patient ID when the operator gives none.

:meth:`ImportTarget.store` never raises for a target that is down or an
instance that is refused: partial success is data, one
:class:`InstanceOutcome` per instance given.  The queries raise
:class:`~imagebridge.errors.TargetUnavailable` when the target cannot be
reached and :class:`~imagebridge.errors.TargetProtocolError` when its answer
is unusable.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, BinaryIO, Protocol, runtime_checkable

from imagebridge.model.imaging import HierarchicDesignator


class InstanceStream(Protocol):
    """One Part-10 instance that can be read (more than once) as a binary stream.

    :class:`~imagebridge.wire.spool.SpooledBody` (a received RAD-75 part) is one.
    """

    def open(self) -> BinaryIO:
        """A new binary stream over the instance, positioned at its start."""
        ...


@dataclass(frozen=True, slots=True)
class IdentifiedFile:
    """A Part-10 file whose UIDs and transfer syntax the caller already knows.

    It is a path (``os.PathLike``) to every target; :meth:`ImportTarget.store`
    takes its identity as given instead of reading its header again (the
    importer has just written the file from a header it parsed).
    """

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str

    def __fspath__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class SplicedInstance:
    """A Part-10 instance made of new leading bytes and the rest of another body from an offset.

    A reconciled instance whose rewritten head is held in memory and whose
    pixel data stays where it was received: it is read as one stream
    (:meth:`open`, an :class:`InstanceStream`) and never written out as a
    whole.  Its UIDs, transfer syntax and size are known, as an
    :class:`IdentifiedFile`'s are: targets do not read its header again.
    """

    head: bytes
    rest: InstanceStream
    offset: int
    """Where in *rest* the bytes after *head* start."""
    size: int
    """The instance's length: *head* and *rest* from *offset* on."""
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str

    def open(self) -> BinaryIO:
        """A new binary stream over the whole instance, positioned at its start."""
        rest = self.rest.open()
        try:
            rest.seek(self.offset)
        except BaseException:
            rest.close()
            raise
        return io.BufferedReader(_Joined(self.head, rest))

    def read_tail(self) -> bytes:
        """The bytes after *head*, at once (blocking; for a small instance, as they are held
        in memory: a large one is read through :meth:`open`)."""
        with self.rest.open() as stream:
            stream.seek(self.offset)
            return stream.read()


class _Joined(io.RawIOBase):
    """Bytes in memory, then a stream to its end."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._at = 0
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._at < len(self._head):
            count = min(len(view), len(self._head) - self._at)
            view[:count] = self._head[self._at : self._at + count]
            self._at += count
            return count
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._rest.close()
        super().close()


ImportInstance = str | os.PathLike[str] | InstanceStream
"""One Part-10 instance to import: a file path (perhaps an :class:`IdentifiedFile`), or a body
that opens as a stream (perhaps a :class:`SplicedInstance`)."""


class ImportStatus(Enum):
    """What became of one instance given to :meth:`ImportTarget.store`."""

    STORED = "stored"
    ALREADY_PRESENT = "already present"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class InstanceOutcome:
    """Import target, the outcome for one instance: stored, already present, or failed (why).

    *index* is the instance's position in the sequence given to ``store``;
    *sop_instance_uid* is ``""`` when the instance could not even be read.
    *reason* says why it failed, or carries a warning for a stored one.
    """

    index: int
    sop_instance_uid: str
    status: ImportStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StoreReport:
    """Import target, what one ``store`` call did: one outcome per instance, in input order."""

    outcomes: tuple[InstanceOutcome, ...] = ()

    def with_status(self, status: ImportStatus) -> tuple[InstanceOutcome, ...]:
        """The outcomes of that status, in input order."""
        return tuple(o for o in self.outcomes if o.status is status)

    @property
    def stored(self) -> frozenset[str]:
        """SOP Instance UIDs stored by this call."""
        return frozenset(o.sop_instance_uid for o in self.with_status(ImportStatus.STORED))

    @property
    def already_present(self) -> frozenset[str]:
        """SOP Instance UIDs the target already held (not sent again)."""
        return frozenset(o.sop_instance_uid for o in self.with_status(ImportStatus.ALREADY_PRESENT))

    @property
    def failed(self) -> tuple[InstanceOutcome, ...]:
        """The instances not stored, with their reasons."""
        return self.with_status(ImportStatus.FAILED)

    @property
    def ok(self) -> bool:
        """True when every instance is now at the target."""
        return not self.failed


@dataclass(frozen=True, slots=True)
class HeldInstance:
    """Import target, one instance it holds: its UIDs and the patient it is filed under.

    One is a :class:`~imagebridge.model.reconcile.TargetObject` at INSTANCE
    level; grouping by study or series gives the higher levels.  The issuer is
    what the PACS returns (Orthanc's QIDO-RS leaves out the Qualifiers
    Sequence, so only the local namespace).
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    patient_id: str
    issuer: HierarchicDesignator | None = None


@dataclass(frozen=True, slots=True)
class PatientDemographics:
    """Import target, who to look for: family name (required), given name, birth date, sex.

    Names are compared case-, accent- and punctuation-insensitively
    (:func:`~imagebridge.model.normalise.normalise_name`); *birth_date* is
    ``YYYYMMDD``; *sex* is the DICOM code (``F``, ``M``, ``O``) or ``""``.
    """

    family: str
    given: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True, slots=True)
class PatientCandidate:
    """Import target, a local patient matching the demographics, with the studies seen for it."""

    patient_id: str
    issuer: HierarchicDesignator | None
    name: str
    birth_date: str
    sex: str
    study_instance_uids: tuple[str, ...] = field(default=())


@runtime_checkable
class ImportTarget(Protocol):
    """Import target: where retrieved instances go (local folder, STOW-RS PACS, C-STORE PACS)."""

    @property
    def name(self) -> str:
        """The configured name of this target (for logs and the staff page)."""
        ...

    @property
    def kind(self) -> str:
        """``folder``, ``stow`` or ``cstore``."""
        ...

    async def store(
        self, instances: Sequence[ImportInstance], *, known_present: frozenset[str] | None = None
    ) -> StoreReport:
        """Store *instances* (de-duplicated by SOP Instance UID); never raises for a refusal.

        *known_present*: SOP Instance UIDs the caller already knows the target
        holds (it has just listed the study): the target then does not ask
        itself (:meth:`present`) before storing; ``None`` (the default): it asks.
        """
        ...

    async def present(self, study_instance_uid: str) -> frozenset[str]:
        """SOP Instance UIDs the target holds for one study (empty for an unknown study)."""
        ...

    async def objects(
        self,
        *,
        study_instance_uid: str = "",
        series_instance_uid: str = "",
        sop_instance_uid: str = "",
    ) -> list[HeldInstance]:
        """Instances the target holds matching every UID given (at least one)."""
        ...

    async def find_patients(self, demographics: PatientDemographics) -> list[PatientCandidate]:
        """Local patients whose name, birth date and sex match *demographics*."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class SopListLookup(Protocol):
    """An import target that looks up many SOP Instance UIDs in one query (QIDO-RS lists)."""

    async def objects_by_sop(self, sop_instance_uids: Sequence[str]) -> list[HeldInstance]:
        """Instances the target holds under any of *sop_instance_uids*, whatever the study."""
        ...
