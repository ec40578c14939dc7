"""TLS for both sides of the gateway: mutual TLS 1.2+ with peers always verified.

Configuration (see ``config.py``)::

    [server]                      # the Responding Gateway: partners call us
    host = "0.0.0.0"
    tls_certificate = "certs/gateway.pem"   # our chain; with the key, TLS is on
    tls_private_key = "certs/gateway.key"
    tls_client_ca = "trust/sequoia.pem"     # required with TLS: clients must present
                                            # a certificate issued by one of these CAs

    [tls]                         # the Initiating Gateway: we call partners
    ca_bundle = "trust/sequoia.pem"         # the deployment's partner trust bundle
    client_certificate = "certs/gateway.pem"  # presented to every partner
    client_key = "certs/gateway.key"

A ``[[communities]]`` entry's own ``tls_ca_bundle`` replaces ``[tls] ca_bundle``
for that partner, and its ``tls_client_certificate``/``tls_client_key`` pair
replaces ours, only when that entry sets them (:func:`effective_tls`).  There
is no switch that turns peer verification off: a partner whose certificate
does not chain to the bundle, has expired or names another host is refused.

Without TLS, ``imagebridge serve`` listens on loopback only; another address
needs ``--insecure-http`` (:func:`listen_plan`).  :func:`describe_tls_failure`
turns the usual field failures into sentences an operator can act on.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from imagebridge.errors import ConfigError
from imagebridge.model.directory import TlsSettings

MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2


class ServerTls(Protocol):
    """What the server side needs of ``[server]`` (``config.ServerConfig`` fits)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tls_certificate(self) -> Path | None: ...
    @property
    def tls_private_key(self) -> Path | None: ...
    @property
    def tls_client_ca(self) -> Path | None: ...


# --- initiating side ------------------------------------------------------------------


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying TLS client context for *tls* (TLS 1.2 or newer, hostname checked)."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_bundle) if tls.ca_bundle is not None else None
        )
        context.minimum_version = MINIMUM_VERSION
        if tls.client_certificate is not None:
            context.load_cert_chain(
                str(tls.client_certificate),
                str(tls.client_key) if tls.client_key is not None else None,
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS material for a partner could not be loaded: {exc}") from exc
    return context


def effective_tls(partner: TlsSettings, deployment: TlsSettings) -> TlsSettings:
    """The TLS settings used for one partner: its own where it sets them, else the deployment's.

    The CA bundle and the client certificate/key pair are replaced independently;
    the certificate and its key always come from the same place.
    """
    ca_bundle = partner.ca_bundle if partner.ca_bundle is not None else deployment.ca_bundle
    own_pair = partner.client_certificate is not None
    source = partner if own_pair else deployment
    return TlsSettings(
        ca_bundle=ca_bundle,
        client_certificate=source.client_certificate,
        client_key=source.client_key,
    )


# --- responding side ------------------------------------------------------------------


def server_context(server: ServerTls) -> ssl.SSLContext:
    """The TLS server context of ``serve``: TLS 1.2+, a client certificate required.

    :class:`ConfigError` when TLS is not fully configured or the files do not load.
    """
    certificate, key, client_ca = (
        server.tls_certificate,
        server.tls_private_key,
        server.tls_client_ca,
    )
    if certificate is None or key is None:
        raise ConfigError("server TLS needs server.tls_certificate and server.tls_private_key")
    if client_ca is None:
        raise ConfigError(_NO_CLIENT_CA)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(str(certificate), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"server.tls_certificate {certificate} / tls_private_key {key} "
            f"could not be loaded: {exc}"
        ) from exc
    try:
        context.load_verify_locations(cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_client_ca {client_ca} could not be loaded: {exc}") from exc
    return context


def uvicorn_tls_options(server: ServerTls) -> dict[str, Any]:
    """uvicorn ``Config`` keyword arguments serving with :func:`server_context`.

    The context is built now, so a bad file stops ``serve`` before it binds.
    ``ssl_certfile``/``ssl_keyfile`` are passed too (uvicorn keys HTTPS on them);
    the factory ignores uvicorn's own context.
    """
    factory = ServerContextFactory(server)
    factory(None, ssl.create_default_context)  # load the files now: fail before binding
    return {
        "ssl_certfile": str(server.tls_certificate),
        "ssl_keyfile": str(server.tls_private_key),
        "ssl_context_factory": factory,
    }


@dataclass(slots=True)
class ServerContextFactory:
    """uvicorn's ``ssl_context_factory``: :func:`server_context` of *server*, built once.

    A picklable object rather than a closure: ``serve --workers N`` hands the
    uvicorn configuration to worker processes, each of which builds its own
    context from the same files.
    """

    server: ServerTls
    _context: ssl.SSLContext | None = None

    def __call__(self, _config: object, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        if self._context is None:
            self._context = server_context(self.server)
        return self._context

    def __getstate__(self) -> dict[str, object]:
        return {"server": self.server}  # an SSLContext does not pickle; workers rebuild it

    def __setstate__(self, state: dict[str, object]) -> None:
        self.server = state["server"]  # type: ignore[assignment]
        self._context = None


@dataclass(frozen=True, slots=True)
class ListenPlan:
    """Where and how ``serve`` listens; *warnings* are shown to the operator loudly."""

    host: str
    port: int
    tls: bool
    warnings: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


_NO_CLIENT_CA: Final = (
    "server.tls_client_ca is required with server.tls_certificate: partners must present "
    "a client certificate (mutual TLS); name the PEM bundle of the CAs that issue them"
)


def listen_plan(server: ServerTls, *, insecure_http: bool = False) -> ListenPlan:
    """Decide how ``serve`` listens, or refuse with :class:`ConfigError`.

    TLS on: a client CA is required.  TLS off: loopback only, unless the
    operator passed ``--insecure-http`` (then a loud warning).
    """
    has_certificate = server.tls_certificate is not None or server.tls_private_key is not None
    if has_certificate:
        if server.tls_certificate is None or server.tls_private_key is None:
            raise ConfigError("server.tls_certificate and server.tls_private_key go together")
        if server.tls_client_ca is None:
            raise ConfigError(_NO_CLIENT_CA)
        warnings = ("--insecure-http ignored: TLS is configured",) if insecure_http else ()
        return ListenPlan(server.host, server.port, True, warnings)
    if server.tls_client_ca is not None:
        raise ConfigError("server.tls_client_ca needs server.tls_certificate and tls_private_key")
    if is_loopback(server.host):
        return ListenPlan(server.host, server.port, False)
    if not insecure_http:
        raise ConfigError(
            f"refusing to serve plain HTTP on {server.host}, which is not a loopback address: "
            "configure server.tls_certificate, server.tls_private_key and server.tls_client_ca, "
            'or set server.host = "127.0.0.1", or pass --insecure-http if a TLS-terminating '
            "proxy in front of this gateway authenticates the partners"
        )
    return ListenPlan(
        server.host,
        server.port,
        False,
        (
            f"INSECURE: serving plain HTTP on {server.host}:{server.port} (--insecure-http): "
            "requests and patient data cross the network unencrypted and no partner is "
            "authenticated unless a TLS-terminating proxy does it",
        ),
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1); names are not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- field failures -------------------------------------------------------------------

UNKNOWN_CA: Final = "partner certificate not trusted (unknown CA)"
EXPIRED: Final = "partner certificate expired"
HOST_MISMATCH: Final = "partner certificate is for another host (hostname mismatch)"
CLIENT_CERTIFICATE_REQUIRED: Final = (
    "the partner refused our connection: it requires a client certificate"
)
CLIENT_CERTIFICATE_REFUSED: Final = "our client certificate was refused"
CLOSED_BEFORE_ANSWER: Final = (
    "the partner closed the TLS connection without answering: it probably requires a "
    "client certificate, or refused ours"
)
"""TLS 1.3 servers check our certificate after the handshake; many (uvicorn among them)
close the connection without a readable alert, so the client only sees the close."""

_VERIFY_CODES: Final[dict[int, str]] = {
    # OpenSSL X509_V_ERR_* codes, as SSLCertVerificationError.verify_code gives them.
    2: UNKNOWN_CA,  # unable to get issuer certificate
    9: "partner certificate not yet valid (check both clocks)",
    10: EXPIRED,
    18: UNKNOWN_CA,  # self-signed certificate
    19: UNKNOWN_CA,  # self-signed certificate in chain
    20: UNKNOWN_CA,  # unable to get local issuer certificate
    21: UNKNOWN_CA,  # unable to verify the first certificate
    23: "partner certificate revoked",
    26: "partner certificate is not meant for a TLS server (key usage)",
    62: HOST_MISMATCH,
    64: HOST_MISMATCH,  # IP address mismatch
}

_ALERTS: Final[dict[str, str]] = {
    # SSLError.reason when the partner sent a TLS alert.
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": CLIENT_CERTIFICATE_REQUIRED,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the partner refused the TLS handshake: it requires a client certificate, "
        "or shares no cipher suite with us"
    ),
    "TLSV1_ALERT_UNKNOWN_CA": f"{CLIENT_CERTIFICATE_REFUSED}: the partner does not trust its CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": f"{CLIENT_CERTIFICATE_REFUSED}: it has expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": f"{CLIENT_CERTIFICATE_REFUSED}: it is revoked",
    "SSLV3_ALERT_BAD_CERTIFICATE": CLIENT_CERTIFICATE_REFUSED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": CLIENT_CERTIFICATE_REFUSED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": CLIENT_CERTIFICATE_REFUSED,
    "TLSV1_ALERT_ACCESS_DENIED": CLIENT_CERTIFICATE_REFUSED,
    "TLSV1_ALERT_PROTOCOL_VERSION": "no common TLS version (we require TLS 1.2 or later)",
    "UNSUPPORTED_PROTOCOL": "no common TLS version (we require TLS 1.2 or later)",
    "WRONG_VERSION_NUMBER": "the partner did not answer with TLS (plain HTTP on that port?)",
    "UNEXPECTED_EOF_WHILE_READING": (
        "the partner closed the connection during the TLS handshake: it requires a client "
        "certificate, refused ours, or accepts no TLS version or cipher we offer"
    ),
}


def describe_tls_failure(exc: BaseException) -> str | None:
    """A readable reason when *exc* (or an exception it was raised from) is a TLS failure.

    None when no :class:`ssl.SSLError` is in the chain.
    """
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            what = _VERIFY_CODES.get(link.verify_code, "partner certificate rejected")
            detail = link.verify_message or ""
            return f"{what}: {detail}" if detail else what
        if isinstance(link, ssl.SSLError):
            reason = str(link.reason or "")
            return _ALERTS.get(reason, f"TLS failure ({reason or link})")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
