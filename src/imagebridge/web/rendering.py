"""Staff page, rendering: the shared state of the handlers, templates, refusals as pages.

:func:`guarded` wraps every page handler: a logged-in operator is required
(else the login page), and the typed refusals (a forged or expired form, an
unknown job) become clear pages with the right status.  Templates autoescape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagebridge.config import Config
from imagebridge.errors import JobNotFound
from imagebridge.model.import_job import JobState
from imagebridge.store import Store
from imagebridge.store.jobs import JobStore
from imagebridge.web import auth
from imagebridge.web.auth import CSRF_FIELD, CsrfRefused, FormTooLarge, LoginRequired
from imagebridge.web.health import PartnerHealth
from imagebridge.web.imports import ImportService
from imagebridge.web.search import Searches
from imagebridge.web.settings import WebConfig

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


@dataclass(slots=True)
class Staff:
    """What the handlers share."""

    config: Config
    web: WebConfig
    templates: Environment
    jobs: JobStore
    searches: Searches
    imports: ImportService | None
    health: PartnerHealth
    store: Store


class SecurityHeadersMiddleware:
    """Adds the page's security headers (CSP without inline script, no caching of PHI)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, sending if scope["type"] == "http" else send)


def templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


Handler = Callable[[Staff, Request, str], Awaitable[Response]]


def render(staff: Staff, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
    user = auth.operator_of(request, staff.web.users)
    held = len(staff.jobs.list_jobs(states=[JobState.HELD], limit=1000)) if user else 0
    html = staff.templates.get_template(name).render(
        operator=user,
        csrf=auth.csrf_token(request),
        csrf_field=CSRF_FIELD,
        held=held,
        page=name.removesuffix(".html"),
        community=staff.config.community.name,
        **ctx,
    )
    return HTMLResponse(html, status_code=status)


def message(staff: Staff, request: Request, status: int, title: str, text: str) -> Response:
    return render(staff, request, "message.html", status, title=title, text=text)


def guarded(staff: Staff, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap *handler*: login required, typed refusals turned into clear pages."""

    async def endpoint(request: Request) -> Response:
        try:
            user = auth.require_operator(request, staff.web.users)
            return await handler(staff, request, user)
        except LoginRequired:
            if request.method == "GET" and not request.url.path.endswith("/events"):
                return RedirectResponse("/login", status_code=303)
            return message(
                staff,
                request,
                401,
                title="Please log in",
                text="Your session has ended. Log in again.",
            )
        except CsrfRefused:
            return message(
                staff,
                request,
                403,
                title="Form expired",
                text="This form has expired or did not come from this page. "
                "Go back, reload the page and try again.",
            )
        except FormTooLarge as exc:
            return message(staff, request, 400, title="Bad form", text=str(exc))
        except JobNotFound:
            return message(
                staff,
                request,
                404,
                title="No such import job",
                text="There is no import job with that number.",
            )

    return endpoint
