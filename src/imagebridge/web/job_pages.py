"""Staff page, the pages of import jobs: live progress (server-sent events), retry,
the review of held studies, the history and the partner communities' health.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from imagebridge.errors import ImageBridgeError, JobStateError
from imagebridge.model.import_job import JobState
from imagebridge.web import auth
from imagebridge.web.auth import first
from imagebridge.web.rendering import Staff, message, render
from imagebridge.web.views import failures, progress, side_by_side, target_label

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
STREAM_LIMIT_SECONDS = 3600.0

# --- jobs ---------------------------------------------------------------------------------


def _active(staff: Staff, job_id: int) -> bool:
    return staff.imports is not None and staff.imports.is_active(job_id)


def _job_card(staff: Staff, job_id: int) -> dict[str, Any]:
    job = staff.jobs.get_job(job_id)
    return {
        "job": job,
        "progress": progress(
            job, active=_active(staff, job.id), viewer_template=staff.web.viewer_url
        ),
        "failures": failures(staff.jobs.instances(job.id)) if job.errors else [],
        "events": staff.jobs.events(job.id, limit=12),
        "where": target_label(staff.config.importing.target) if staff.config.importing else "",
    }


async def job_page(staff: Staff, request: Request, user: str) -> Response:
    job_id = int(request.path_params["job_id"])
    card = await anyio.to_thread.run_sync(_job_card, staff, job_id)
    return render(staff, request, "progress.html", cards=[card], title=f"Import job {job_id}")


async def progress_page(staff: Staff, request: Request, user: str) -> Response:
    raw = request.query_params.get("jobs", "")
    ids = [int(p) for p in raw.split(",") if p.strip().isdigit()][:50]
    if not ids:
        return RedirectResponse("/history", status_code=303)
    cards = [await anyio.to_thread.run_sync(_job_card, staff, i) for i in ids]
    return render(staff, request, "progress.html", cards=cards, title="Import progress")


async def job_events(staff: Staff, request: Request, user: str) -> Response:
    """Server-sent events: the job's progress every time it changes, until it settles."""
    job_id = int(request.path_params["job_id"])
    await anyio.to_thread.run_sync(staff.jobs.get_job, job_id)  # 404 for an unknown job

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        last, quiet = "", 0.0
        with anyio.move_on_after(STREAM_LIMIT_SECONDS):
            while True:
                job = await anyio.to_thread.run_sync(staff.jobs.get_job, job_id)
                view = progress(
                    job, active=_active(staff, job_id), viewer_template=staff.web.viewer_url
                )
                text = json.dumps(view.json())
                if text != last:
                    yield f"event: progress\ndata: {text}\n\n"
                    last, quiet = text, 0.0
                elif quiet > 15:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                if view.settled:
                    return
                await anyio.sleep(POLL_SECONDS)
                quiet += POLL_SECONDS

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


async def retry_job(staff: Staff, request: Request, user: str) -> Response:
    auth.check_csrf(request, await auth.read_form(request))
    job_id = int(request.path_params["job_id"])
    if staff.imports is not None:
        try:
            await staff.imports.retry(job_id, user)
        except JobStateError as exc:
            return message(staff, request, 409, title="Cannot retry", text=exc.message)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


# --- review, history, communities -----------------------------------------------------------


async def review_page(staff: Staff, request: Request, user: str) -> Response:
    held = await anyio.to_thread.run_sync(
        lambda: staff.jobs.list_jobs(states=[JobState.HELD], limit=100)
    )
    items = [{"job": j, "sides": side_by_side(j)} for j in held]
    return render(staff, request, "review.html", items=items)


async def review_decision(staff: Staff, request: Request, user: str) -> Response:
    form = await auth.read_form(request)
    auth.check_csrf(request, form)
    job_id = int(request.path_params["job_id"])
    if staff.imports is None:
        return RedirectResponse("/review", status_code=303)
    try:
        if request.path_params["decision"] == "reject":
            await staff.imports.reject(job_id, user)
            return RedirectResponse("/review", status_code=303)
        mrn, issuer = first(form, "mrn"), first(form, "mrn_issuer")
        if not mrn or len(mrn) > 64 or any(c in mrn + issuer for c in "\\^\r\n"):
            return message(
                staff,
                request,
                422,
                title="MRN needed",
                text="Give the local MRN (at most 64 characters) to accept the study.",
            )
        await staff.imports.accept(job_id, mrn, issuer, user)
    except (JobStateError, ImageBridgeError) as exc:
        return message(staff, request, 409, title="Review not recorded", text=exc.message)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


async def history_page(staff: Staff, request: Request, user: str) -> Response:
    jobs = await anyio.to_thread.run_sync(lambda: staff.jobs.list_jobs(limit=200))
    return render(staff, request, "history.html", jobs=jobs)


async def communities_page(staff: Staff, request: Request, user: str) -> Response:
    engine = staff.store.engine
    rows = await anyio.to_thread.run_sync(
        lambda: [staff.health.health(c, engine) for c in staff.config.communities.active()]
    )
    return render(staff, request, "communities.html", rows=rows, now=datetime.now(UTC))
