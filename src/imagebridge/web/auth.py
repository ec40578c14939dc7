"""Staff page, operator login: signed session cookie, CSRF tokens, the current operator.

Operators log in with a name and password checked against the scrypt hashes
of ``[web.users]``; this is separate from SAML.  The session cookie is signed
(itsdangerous, through Starlette's SessionMiddleware), HttpOnly and
SameSite=Lax, and Secure when the gateway serves HTTPS.  Every POST form
carries the session's CSRF token (:func:`check_csrf`).

:data:`current_operator` holds the logged-in operator's name while a request
of the staff page (and the work it starts) runs, so the SAML assertion
issuer can name the user (its ``SecurityHeaders`` hook reads it).
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from imagebridge.web.settings import verify_password

log = logging.getLogger(__name__)

current_operator: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "imagebridge_current_operator", default=None
)
"""The logged-in staff operator of the request (or job) being served; None elsewhere."""

FORM_LIMIT: Final = 64 * 1024
CSRF_FIELD: Final = "csrf_token"


class LoginRequired(Exception):
    """The request needs a logged-in operator (the handler redirects to the login page)."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token (a forged or expired form)."""


class FormTooLarge(Exception):
    """A form body over :data:`FORM_LIMIT` or not URL-encoded."""


Form = Mapping[str, list[str]]


async def read_form(request: Request) -> dict[str, list[str]]:
    """The URL-encoded POST body, every value of every field (bounded size)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormTooLarge("forms must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise FormTooLarge("form too large")
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


def first(form: Form, name: str) -> str:
    """The first value of *name* in *form*, stripped ('' when absent)."""
    values = form.get(name) or [""]
    return values[0].strip()


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, form: Form) -> None:
    """Refuse the POST unless it carries the session's CSRF token."""
    expected = request.session.get("csrf")
    sent = first(form, CSRF_FIELD)
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfRefused("missing or wrong CSRF token")


def operator_of(request: Request, users: Mapping[str, str]) -> str | None:
    """The logged-in operator, if the session names one that is still configured."""
    user = request.session.get("user")
    return user if isinstance(user, str) and user in users else None


def require_operator(request: Request, users: Mapping[str, str]) -> str:
    """The logged-in operator; :class:`LoginRequired` otherwise."""
    user = operator_of(request, users)
    if user is None:
        raise LoginRequired()
    return user


def log_in(request: Request, users: Mapping[str, str], name: str, password: str) -> bool:
    """Check the password and start a fresh session (new CSRF token) on success."""
    stored = users.get(name)
    # Hash even for an unknown name, so timing does not tell which names exist.
    ok = verify_password(password, stored or _DUMMY_HASH) and stored is not None
    if not ok:
        log.info("staff page: failed login")
        return False
    request.session.clear()
    request.session["user"] = name
    request.session["csrf"] = secrets.token_urlsafe(32)
    log.info("staff page: operator %s logged in", name)
    return True


def log_out(request: Request) -> None:
    request.session.clear()


_DUMMY_HASH: Final = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


class OperatorContext:
    """ASGI middleware (inside SessionMiddleware): sets :data:`current_operator` per request."""

    def __init__(self, app: ASGIApp, users: Mapping[str, str]) -> None:
        self._app = app
        self._users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = None
        if scope["type"] == "http":
            session = scope.get("session") or {}
            name = session.get("user")
            user = name if isinstance(name, str) and name in self._users else None
        token = current_operator.set(user)
        try:
            await self._app(scope, receive, send)
        finally:
            current_operator.reset(token)
