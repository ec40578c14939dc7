"""Staff page, the routes: search, import with live progress, review, history, communities.

:func:`staff_page` is entered by the composition root's lifespan and yields
the staff page as an ASGI app to mount at ``/`` (after the SOAP routes), or
None when the configuration has no ``[web]`` table.  It owns the page's
partner clients (observed for the communities page), the import service
and its task group.  Every page needs a logged-in operator
(:mod:`imagebridge.web.auth`); every POST carries the CSRF token.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.actors.initiating.client import PartnerClients, SecurityHeaders
from imagebridge.actors.initiating.pull import PullSettings
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.config import Config
from imagebridge.errors import ImageBridgeError
from imagebridge.store import Store
from imagebridge.store.jobs import JobStore
from imagebridge.store.leases import GatewaySettings
from imagebridge.transport.events import Observers, TransactionObserver
from imagebridge.web import auth
from imagebridge.web.auth import CsrfRefused, FormTooLarge, first
from imagebridge.web.health import PartnerHealth
from imagebridge.web.imports import running_imports
from imagebridge.web.job_pages import (
    communities_page,
    history_page,
    job_events,
    job_page,
    progress_page,
    retry_job,
    review_decision,
    review_page,
)
from imagebridge.web.rendering import (
    HERE,
    Handler,
    SecurityHeadersMiddleware,
    Staff,
    guarded,
    message,
    render,
    templates,
)
from imagebridge.web.search import Searches, chosen_offers, parse_demographics
from imagebridge.web.views import target_label

log = logging.getLogger(__name__)

SESSION_KEY_NAME = "web-session-key"
"""Name of the shared session-signing key in ``gateway_settings`` (when [web] sets none)."""


# --- login ------------------------------------------------------------------------------


async def login_page(staff: Staff, request: Request) -> Response:
    if request.method == "GET":
        return render(staff, request, "login.html")
    try:
        form = await auth.read_form(request)
        auth.check_csrf(request, form)
    except (CsrfRefused, FormTooLarge):
        return render(
            staff, request, "login.html", 403, error="The login form expired. Please try again."
        )
    if auth.log_in(request, staff.web.users, first(form, "username"), first(form, "password")):
        return RedirectResponse("/", status_code=303)
    return render(staff, request, "login.html", 401, error="Unknown user or wrong password.")


async def logout(staff: Staff, request: Request, user: str) -> Response:
    auth.check_csrf(request, await auth.read_form(request))
    auth.log_out(request)
    return RedirectResponse("/login", status_code=303)


# --- search and import ------------------------------------------------------------------


async def home(staff: Staff, request: Request, user: str) -> Response:
    return render(staff, request, "search.html", form={}, errors={})


async def search(staff: Staff, request: Request, user: str) -> Response:
    form = await auth.read_form(request)
    auth.check_csrf(request, form)
    values = {k: first(form, k) for k in ("family", "given", "birth_date", "gender")}
    demographics, errors = parse_demographics(values)
    if demographics is None:
        return render(staff, request, "search.html", 422, form=values, errors=errors)
    if not staff.searches.workflow.communities():
        return render(
            staff,
            request,
            "search.html",
            200,
            form=values,
            errors={},
            notice="No partner community is configured ([[communities]]).",
        )
    result = await staff.searches.run(demographics, user)
    return _results(staff, request, result, form=values)


def _results(
    staff: Staff, request: Request, result: Any, status: int = 200, **ctx: Any
) -> Response:
    return render(
        staff,
        request,
        "results.html",
        status,
        result=result,
        can_import=staff.imports is not None,
        target=target_label(staff.config.importing.target) if staff.config.importing else "",
        **ctx,
    )


async def start_import(staff: Staff, request: Request, user: str) -> Response:
    form = await auth.read_form(request)
    auth.check_csrf(request, form)
    if staff.imports is None:
        return message(
            staff,
            request,
            409,
            title="No import target",
            text="This gateway has no [import] table: there is nowhere to import to.",
        )
    result = staff.searches.get(first(form, "search_id"), user)
    if result is None:
        return render(
            staff,
            request,
            "search.html",
            410,
            form={},
            errors={},
            notice="That search has expired (results are kept for an hour and not "
            "across restarts). Search again, then import.",
        )
    offers = chosen_offers(result, form.get("study", []))
    mrn, issuer = first(form, "mrn"), first(form, "mrn_issuer")
    if not offers:
        text = (
            "Select at least one study to import."
            if offers is not None
            else ("The selection does not match this search; search again.")
        )
        return _results(staff, request, result, 422, import_error=text, mrn=mrn, issuer=issuer)
    gone = [o for o in offers if staff.searches.workflow.imaging_community(o) is None]
    if gone:
        names = ", ".join(sorted({o.community.name for o in gone}))
        text = (
            f"Community {names} is no longer in the directory (or no longer offers image "
            "retrieval): nothing was imported."
        )
        return _results(staff, request, result, 409, import_error=text, mrn=mrn, issuer=issuer)
    if len(mrn) > 64 or len(issuer) > 64 or any(c in mrn + issuer for c in "\\^\r\n"):
        return _results(
            staff,
            request,
            result,
            422,
            import_error="The MRN or its issuer is not a single value of at most 64 characters.",
            mrn=mrn,
            issuer=issuer,
        )
    try:
        made = await staff.imports.create(
            offers, result.demographics, mrn=mrn, issuer=issuer, operator=user
        )
    except ImageBridgeError as exc:
        return _results(
            staff,
            request,
            result,
            502,
            mrn=mrn,
            issuer=issuer,
            import_error=f"The import could not be started: {exc.message}",
        )
    ids = ",".join(str(j.id) for j in made)
    target = f"/jobs/{made[0].id}" if len(made) == 1 else f"/progress?jobs={ids}"
    return RedirectResponse(target, status_code=303)


def web_app(staff: Staff, secret: str) -> Starlette:
    """The staff page as an ASGI app (mount it at ``/``)."""

    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return guarded(staff, handler)

    async def login(request: Request) -> Response:
        return await login_page(staff, request)

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", page(logout), methods=["POST"]),
        Route("/", page(home)),
        Route("/search", page(search), methods=["POST"]),
        Route("/import", page(start_import), methods=["POST"]),
        Route("/jobs/{job_id:int}", page(job_page)),
        Route("/jobs/{job_id:int}/events", page(job_events)),
        Route("/jobs/{job_id:int}/retry", page(retry_job), methods=["POST"]),
        Route("/progress", page(progress_page)),
        Route("/review", page(review_page)),
        Route("/review/{job_id:int}/{decision:str}", page(review_decision), methods=["POST"]),
        Route("/history", page(history_page)),
        Route("/communities", page(communities_page)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="imagebridge_staff",
            max_age=staff.web.session_minutes * 60,
            same_site="lax",
            https_only=staff.config.server.tls,
        ),
        Middleware(auth.OperatorContext, users=staff.web.users),
    ]
    return Starlette(routes=routes, middleware=middleware)


@contextlib.asynccontextmanager
async def staff_page(
    config: Config,
    store: Store,
    *,
    security: SecurityHeaders | None = None,
    observer: TransactionObserver | None = None,
) -> AsyncIterator[Starlette | None]:
    """The staff page of *config* for the lifespan of the server (None without ``[web]``).

    *security* makes the SAML header of each partner request (it may read
    :data:`imagebridge.web.auth.current_operator`); *observer* also hears
    every exchange the page makes (audit, counters).
    """
    web = config.web
    if web is None:
        yield None
        return
    if not web.users:
        log.warning("[web] has no users: nobody can log in to the staff page")
    health = PartnerHealth()
    observers = Observers([health, *([observer] if observer is not None else [])])
    clients = PartnerClients(
        observer=observers, tls_defaults=config.tls.defaults, security=security
    )
    jobs = JobStore(store.engine)
    try:
        async with running_imports(config, jobs, clients) as imports:
            settings = PullSettings(
                home=config.community.home_community_id,
                patient_id_authority=config.community.patient_id_authority or None,
                deadline=web.search_deadline,
            )
            workflow = PullWorkflow(clients, config.communities, settings, breaker=CircuitBreaker())
            staff = Staff(
                config, web, templates(), jobs, Searches(workflow), imports, health, store
            )
            # Every worker of the deployment signs sessions with the same key, so a
            # load balancer may send an operator's requests to any of them.
            secret = web.session_secret or await anyio.to_thread.run_sync(
                GatewaySettings(store.engine).shared_secret, SESSION_KEY_NAME
            )
            yield web_app(staff, secret)
    finally:
        await clients.aclose()
