"""Staff page, what the templates and the progress stream show of import jobs.

Plain functions from :class:`~imagebridge.model.import_job.ImportJob` to
small view values: progress, where the study is now, the viewer link, the
errors of the failed instances, and the held study's demographics side by
side.  No I/O apart from what the caller passes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import quote

from imagebridge.actors.initiating.import_plan import (
    accepted_from,
    foreign_patient_from,
    local_patient_from,
)
from imagebridge.importing.config import (
    CStoreTargetConfig,
    FolderTargetConfig,
    StowTargetConfig,
    TargetConfig,
)
from imagebridge.model.import_job import ImportJob, JobInstance, JobState

SETTLED: Final = frozenset(
    {
        JobState.COMPLETED,
        JobState.COMPLETED_WITH_ERRORS,
        JobState.CANCELLED,
        JobState.FAILED,
        JobState.HELD,
    }
)
"""States in which nothing more happens without an operator (the progress stream ends)."""

LABELS: Final = {
    JobState.PENDING: "waiting to start",
    JobState.RUNNING: "importing",
    JobState.HELD: "held for review",
    JobState.COMPLETED: "completed",
    JobState.COMPLETED_WITH_ERRORS: "completed with errors",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


def orthanc_study_id(patient_id: str, study_uid: str) -> str:
    """Orthanc's identifier of a study: SHA-1 of ``PatientID|StudyInstanceUID``, grouped."""
    digest = hashlib.sha1(f"{patient_id}|{study_uid}".encode(), usedforsecurity=False).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def viewer_link(template: str, job: ImportJob) -> str:
    """The local viewer's URL for the job's study ('' without a template or stored study)."""
    patient = job.request.local_patient_id or ""
    if not template or not job.done:
        return ""
    study = job.request.study_instance_uid
    values = {
        "study_uid": quote(study, safe=""),
        "patient_id": quote(patient, safe=""),
        "orthanc_study_id": orthanc_study_id(patient, study),
    }
    return template.format(**values)


def target_label(target: TargetConfig) -> str:
    """Where the target is, for people."""
    if isinstance(target, FolderTargetConfig):
        return f"folder {target.root}"
    if isinstance(target, StowTargetConfig):
        return f"PACS (STOW-RS) {target.base_url}"
    if isinstance(target, CStoreTargetConfig):
        return f"PACS (C-STORE) {target.called_ae}@{target.host}:{target.port}"
    return target.name


@dataclass(frozen=True, slots=True)
class Progress:
    """One job's progress, as the page and the event stream carry it."""

    id: int
    state: str
    label: str
    done: int
    errors: int
    total: int
    percent: int
    settled: bool
    active: bool
    message: str
    verification: str
    viewer_url: str

    def json(self) -> dict[str, Any]:
        return asdict(self)


def progress(job: ImportJob, *, active: bool, viewer_template: str = "") -> Progress:
    total = job.total
    finished = job.done + job.errors
    percent = 100 if not total and job.state in SETTLED else round(100 * finished / max(total, 1))
    check = job.verification
    verification = ""
    if check is not None:
        verdict = "matches the manifest" if check.ok else "DOES NOT match the manifest"
        verification = f"The PACS holds {check.found} of {check.expected} instances: {verdict}."
    return Progress(
        id=job.id,
        state=job.state.value,
        label=LABELS[job.state],
        done=job.done,
        errors=job.errors,
        total=total,
        percent=min(percent, 100),
        settled=job.state in SETTLED and not active,
        active=active,
        message=job_message(job),
        verification=verification,
        viewer_url=viewer_link(viewer_template, job) if job.state in SETTLED else "",
    )


def job_message(job: ImportJob) -> str:
    """One sentence on the job's state for the operator (no patient data)."""
    if job.state is JobState.HELD:
        return f"Held for review: {job.hold_reason or 'no reason recorded'}"
    if job.state is JobState.FAILED:
        return f"The import failed: {job.last_error or 'no reason recorded'}"
    if job.state is JobState.CANCELLED:
        return "The import was cancelled."
    if job.state is JobState.COMPLETED_WITH_ERRORS:
        return f"{job.errors} of {job.total} instances could not be imported (see below)."
    if job.state is JobState.COMPLETED:
        return f"All {job.total} instances are in the local PACS."
    if job.state is JobState.PENDING:
        return "Waiting to start."
    return f"{job.done + job.errors} of {job.total} instances processed."


@dataclass(frozen=True, slots=True)
class Failure:
    sop_instance_uid: str
    code: str
    text: str


def failures(instances: Sequence[JobInstance], limit: int = 20) -> list[Failure]:
    """The recorded errors of a job's failed instances (the first *limit*)."""
    return [
        Failure(i.sop_instance_uid, i.error_code or "", i.error_text or "")
        for i in instances
        if i.error_code
    ][:limit]


@dataclass(frozen=True, slots=True)
class SideBySide:
    """A held study's patient as the foreign KOS names it and as the local PACS will file it."""

    rows: tuple[tuple[str, str, str, bool], ...]
    """(attribute, foreign value, local value, they differ)."""
    local_mrn: str
    accepted: tuple[str, ...]


def side_by_side(job: ImportJob) -> SideBySide:
    foreign = foreign_patient_from(job)
    local = local_patient_from(job)
    searched: Mapping[str, Any] = job.request.reconciliation.get("searched") or {}
    if local is not None:
        local_values = {
            "name": local.name,
            "id": local.mrn,
            "issuer": _issuer(local.issuer),
            "birth_date": local.birth_date,
            "sex": local.sex,
        }
    else:
        local_values = {
            "name": f"{searched.get('family', '')}^{searched.get('given', '')}".strip("^"),
            "id": "(none yet: give the MRN)",
            "issuer": "",
            "birth_date": str(searched.get("birth_date", "")),
            "sex": str(searched.get("sex", "")),
        }
    foreign_issuer = job.request.foreign_patient.assigning_authority or ""
    rows = []
    for key, label in (
        ("name", "Name"),
        ("id", "Patient ID"),
        ("issuer", "Issuer"),
        ("birth_date", "Birth date"),
        ("sex", "Sex"),
    ):
        there = foreign.get(key, "") if key != "issuer" else foreign_issuer
        if key == "id" and not there:
            there = job.request.foreign_patient.id
        here = local_values[key]
        differ = key in ("name", "birth_date", "sex") and _norm(there) != _norm(here)
        rows.append((label, there, here, differ))
    return SideBySide(
        tuple(rows),
        local.mrn if local is not None else "",
        tuple(sorted(k.value for k in accepted_from(job))),
    )


def _norm(value: str) -> str:
    return " ".join(value.replace("^", " ").upper().split())


def _issuer(value: Any) -> str:
    if value is None:
        return ""
    return str(value.universal_id or value.local_namespace or "")
