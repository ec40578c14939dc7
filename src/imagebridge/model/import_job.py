"""Imaging Document Consumer, durable import jobs: one study of one patient into a local target.

A job is created from a KOS manifest found at a partner community (ITI-38,
ITI-39), lists every instance the KOS references, and is worked by a runner
that retrieves them (RAD-69/RAD-75), reconciles and stores them.  These are
the values the store (:mod:`imagebridge.store.jobs`) reads and writes; the
states are the ones kept in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import Manifest


class JobState(StrEnum):
    """Where an import job is (the ``state`` column of ``import_jobs``)."""

    PENDING = "pending"
    RUNNING = "running"
    HELD = "held"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once nothing more happens to the job without an operator."""
        return self in (JobState.COMPLETED, JobState.COMPLETED_WITH_ERRORS, JobState.CANCELLED)


class InstanceState(StrEnum):
    """Where one instance of a job is (the ``state`` column of ``import_instances``).

    ``pending`` and ``retrieved`` are outstanding (a restart retrieves them
    again); ``stored`` and ``already_present`` (found in the target by SOP
    Instance UID, so not stored twice) are done; ``failed`` and ``held``
    (waiting for a reconciliation decision) are recorded errors.
    """

    PENDING = "pending"
    RETRIEVED = "retrieved"
    STORED = "stored"
    ALREADY_PRESENT = "already_present"
    FAILED = "failed"
    HELD = "held"


OUTSTANDING = (InstanceState.PENDING, InstanceState.RETRIEVED)
DONE = (InstanceState.STORED, InstanceState.ALREADY_PRESENT)
ERRORS = (InstanceState.FAILED, InstanceState.HELD)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """What makes a job: one study of one foreign patient, into one target.

    (``study_instance_uid``, ``foreign_patient``, ``target_name``) is the
    job's identity: asking again for the same key returns the existing job.
    ``reconciliation`` is a snapshot of the reconciliation settings (JSON
    values), so a resumed job reconciles as it started.
    """

    source_community: HomeCommunityId
    source_community_name: str
    imaging_community: HomeCommunityId
    foreign_patient: PatientId
    study_instance_uid: str
    kos_document_id: str
    kos_repository_id: str
    target_name: str
    target_kind: str
    reconciliation: Mapping[str, Any] = field(default_factory=dict)
    local_patient_id: str | None = None
    local_patient_issuer: str | None = None

    def __post_init__(self) -> None:
        for name in ("study_instance_uid", "kos_document_id", "target_name", "target_kind"):
            if not getattr(self, name):
                raise InvalidValue(f"import job {name} is empty")


@dataclass(frozen=True, slots=True)
class KosInstance:
    """One instance a KOS references, with the repository to retrieve it from."""

    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    repository_unique_id: str

    def __post_init__(self) -> None:
        if not self.sop_instance_uid:
            raise InvalidValue("KOS instance has an empty SOP Instance UID")


def kos_instances(manifest: Manifest) -> list[KosInstance]:
    """Every instance of a parsed KOS manifest, in manifest order."""
    return [
        KosInstance(
            item.sop_instance_uid,
            series.series_instance_uid,
            item.sop_class_uid,
            series.retrieve_location_uid,
        )
        for series in manifest.series
        for item in series.instances
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceUpdate:
    """A new state for one instance of a job (see :meth:`JobStore.mark_instances`).

    ``attempted`` says this update reports a retrieve attempt (it counts in
    ``attempts``); ``error_code``/``error_text`` replace the recorded error
    (``None`` clears it); ``bytes`` is kept when ``None``.
    """

    sop_instance_uid: str
    state: InstanceState
    error_code: str | None = None
    error_text: str | None = None
    bytes: int | None = None
    attempted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInstance:
    """One instance of a job as stored."""

    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    repository_unique_id: str
    state: InstanceState
    attempts: int
    error_code: str | None
    error_text: str | None
    bytes: int | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class JobVerification:
    """The target's count of the study's instances after the job (C-FIND or QIDO-RS)."""

    expected: int
    found: int
    ok: bool
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One timestamped line of a job's history (no patient identifiers in the text)."""

    at: datetime
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportJob:
    """A job as stored, with how many of its instances are in each state."""

    id: int
    state: JobState
    created_at: datetime
    updated_at: datetime
    request: JobRequest
    verification: JobVerification | None
    last_error: str | None
    hold_reason: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    counts: Mapping[InstanceState, int]

    def count(self, states: Iterable[InstanceState]) -> int:
        """How many instances are in any of *states*."""
        return sum(self.counts.get(s, 0) for s in states)

    @property
    def total(self) -> int:
        """Every instance the KOS lists."""
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Instances stored now or found already present in the target."""
        return self.count(DONE)

    @property
    def errors(self) -> int:
        """Instances with a recorded error (failed or held)."""
        return self.count(ERRORS)

    @property
    def outstanding(self) -> int:
        """Instances still to retrieve or store."""
        return self.count(OUTSTANDING)
