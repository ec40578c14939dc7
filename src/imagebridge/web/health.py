"""Staff page, the health of each partner community: last success, error rate, certificates.

:class:`PartnerHealth` is a transaction observer on the staff page's partner
clients: it keeps the last outcomes of every exchange per partner in memory
(ITI-55, ITI-38, ITI-39, RAD-75 alike).  :func:`month_counters` reads the
store's ``transaction_counters`` (the guide's performance measures) when rows
exist, and :func:`certificate_expiry` the earliest ``notAfter`` of a PEM file.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId
from imagebridge.store.schema import transaction_counters
from imagebridge.transport.events import Role, TransactionEvent

log = logging.getLogger(__name__)

RECENT: Final = 50


@dataclass(frozen=True, slots=True)
class Exchange:
    """One finished exchange with a partner (no payloads kept)."""

    at: datetime
    transaction: str
    ok: bool
    elapsed: float
    error: str


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The earliest expiry among the certificates of one PEM file."""

    path: str
    not_after: datetime | None
    problem: str = ""

    def days_left(self, now: datetime) -> int | None:
        return None if self.not_after is None else (self.not_after - now).days


@dataclass(frozen=True, slots=True)
class Health:
    """What the communities page shows for one partner."""

    community: Community
    last_success: datetime | None
    last_failure: Exchange | None
    recent: int
    recent_errors: int
    mean_ms: int | None
    month_requests: int
    month_errors: int
    certificates: tuple[CertificateInfo, ...]

    @property
    def error_rate(self) -> float | None:
        if self.recent:
            return self.recent_errors / self.recent
        if self.month_requests:
            return self.month_errors / self.month_requests
        return None


class PartnerHealth:
    """A transaction observer that remembers each partner's recent exchanges."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._recent: dict[HomeCommunityId, deque[Exchange]] = {}
        self._last_success: dict[HomeCommunityId, datetime] = {}

    def observe(self, event: TransactionEvent) -> None:
        if event.role is not Role.INITIATOR or event.partner is None:
            return
        exchange = Exchange(
            event.started,
            event.transaction.value,
            not event.failed,
            event.elapsed,
            event.error or "",
        )
        self._recent.setdefault(event.partner, deque(maxlen=RECENT)).append(exchange)
        if exchange.ok:
            self._last_success[event.partner] = event.started

    def health(self, community: Community, engine: Engine | None) -> Health:
        hcid = community.home_community_id
        recent = list(self._recent.get(hcid, ()))
        failures = [e for e in recent if not e.ok]
        requests, errors = month_counters(engine, hcid, self._clock()) if engine else (0, 0)
        files = [
            p for p in (community.tls.ca_bundle, community.tls.client_certificate) if p is not None
        ]
        return Health(
            community=community,
            last_success=self._last_success.get(hcid),
            last_failure=failures[-1] if failures else None,
            recent=len(recent),
            recent_errors=len(failures),
            mean_ms=round(1000 * sum(e.elapsed for e in recent) / len(recent)) if recent else None,
            month_requests=requests,
            month_errors=errors,
            certificates=tuple(certificate_expiry(p) for p in files),
        )


def month_counters(engine: Engine, partner: HomeCommunityId, now: datetime) -> tuple[int, int]:
    """This month's (requests, errors) we sent to *partner*, from ``transaction_counters``."""
    t = transaction_counters
    query = select(func.coalesce(func.sum(t.c.requests), 0), func.coalesce(func.sum(t.c.errors), 0))
    query = query.where(
        t.c.month == now.strftime("%Y-%m"),
        t.c.partner.in_([partner.oid, partner.urn]),
        t.c.role == Role.INITIATOR.value,
    )
    try:
        with engine.connect() as conn:
            row = conn.execute(query).one()
    except SQLAlchemyError as exc:
        log.debug("transaction counters unavailable: %s", exc)
        return 0, 0
    return int(row[0]), int(row[1])


def certificate_expiry(path: Path) -> CertificateInfo:
    """The earliest ``notAfter`` of the certificates in the PEM file at *path*."""
    try:
        from cryptography import x509  # noqa: PLC0415 (optional: comes with the SAML stack)
    except ImportError:  # pragma: no cover
        return CertificateInfo(str(path), None, "cannot read certificates (no cryptography)")
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        return CertificateInfo(str(path), None, f"cannot read: {exc.strerror}")
    except ValueError:
        return CertificateInfo(str(path), None, "not a PEM certificate file")
    earliest = min(c.not_valid_after_utc for c in certificates)
    return CertificateInfo(str(path), earliest)
