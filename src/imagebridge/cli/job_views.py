"""Import jobs as an operator sees them: the summary table and the JSON of one job.

Shared by ``imagebridge jobs`` and ``imagebridge fetch --into pacs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from imagebridge.cli.output import iso
from imagebridge.model.import_job import (
    ImportJob,
    InstanceState,
    JobEvent,
    JobInstance,
    JobState,
)

STATE_STYLE = {
    JobState.PENDING: "cyan",
    JobState.RUNNING: "blue",
    JobState.HELD: "magenta",
    JobState.COMPLETED: "green",
    JobState.COMPLETED_WITH_ERRORS: "yellow",
    JobState.FAILED: "red",
    JobState.CANCELLED: "dim",
}


def when(value: datetime | None) -> str:
    """A timestamp for a table cell."""
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def state_markup(state: JobState) -> str:
    """The job state, coloured."""
    return f"[{STATE_STYLE[state]}]{state.value}[/]"


def outcome_table(jobs: Sequence[ImportJob], title: str = "Import jobs") -> Table:
    """What each job ended with: state, instances done, errors, verification."""
    table = Table(title=title)
    for column in ("job", "community", "study", "state", "done", "errors", "verified"):
        table.add_column(column)
    for job in jobs:
        check = job.verification
        verified = (
            "-"
            if check is None
            else f"{check.found}/{check.expected}" + (" ok" if check.ok else " MISMATCH")
        )
        held = f" ({escape(job.hold_reason)})" if job.hold_reason else ""
        table.add_row(
            str(job.id),
            escape(job.request.source_community_name),
            job.request.study_instance_uid,
            state_markup(job.state) + held,
            f"{job.done}/{job.total}",
            str(job.errors),
            verified,
        )
    return table


def job_json(job: ImportJob) -> dict[str, Any]:
    """One job as JSON: its request, state, instance counts, verification and times."""
    request = job.request
    verification = job.verification
    local = None
    if request.local_patient_id is not None:
        local = {"id": request.local_patient_id, "issuer": request.local_patient_issuer}
    return {
        "id": job.id,
        "state": job.state.value,
        "study_instance_uid": request.study_instance_uid,
        "source_community": {
            "home_community_id": request.source_community.oid,
            "name": request.source_community_name,
        },
        "imaging_community": request.imaging_community.oid,
        "foreign_patient": {
            "id": request.foreign_patient.id,
            "assigning_authority": request.foreign_patient.assigning_authority,
        },
        "local_patient": local,
        "kos": {"document_id": request.kos_document_id, "repository_id": request.kos_repository_id},
        "target": {"name": request.target_name, "kind": request.target_kind},
        "instances": {
            "total": job.total,
            "done": job.done,
            "errors": job.errors,
            "by_state": {s.value: job.counts.get(s, 0) for s in InstanceState},
        },
        "verification": None
        if verification is None
        else {
            "expected": verification.expected,
            "found": verification.found,
            "ok": verification.ok,
            "checked_at": iso(verification.checked_at),
        },
        "attempts": job.attempts,
        "lease": None
        if job.lease_owner is None
        else {"owner": job.lease_owner, "expires_at": iso(job.lease_expires_at)},
        "hold_reason": job.hold_reason,
        "last_error": job.last_error,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
    }


def instance_json(item: JobInstance) -> dict[str, Any]:
    """One instance of a job (one with an error, for ``jobs show``)."""
    return {
        "sop_instance_uid": item.sop_instance_uid,
        "series_instance_uid": item.series_instance_uid,
        "state": item.state.value,
        "attempts": item.attempts,
        "error_code": item.error_code,
        "error_text": item.error_text,
    }


def event_json(event: JobEvent) -> dict[str, Any]:
    """One line of a job's history."""
    return {"at": iso(event.at), "message": event.message}
