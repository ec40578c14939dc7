"""Certificate expiry: the dates ``imagebridge check`` reports for every TLS file.

Reads PEM files (a chain or a CA bundle: every certificate in it) with
``cryptography``; the clock is a parameter so the report is testable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from imagebridge.errors import ConfigError

WARN_DAYS: Final = 30
"""Fewer days left than this: a warning (renewal and partner trust updates take weeks)."""


class ExpiryStatus(enum.Enum):
    OK = "ok"
    WARNING = "expires soon"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "not yet valid"


@dataclass(frozen=True, slots=True)
class CertificateExpiry:
    """One certificate of one configured file and how long it remains valid."""

    role: str
    """What the file is for: ``server certificate``, ``partner CA bundle ([tls])``..."""
    path: Path
    subject: str
    not_before: datetime
    not_after: datetime
    days_left: int
    status: ExpiryStatus


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in the PEM file *path*; :class:`ConfigError` if none can be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{path} holds no readable PEM certificate: {exc}") from exc
    return certificates


def expiry_of(
    role: str, path: Path, now: datetime, *, warn_days: int = WARN_DAYS
) -> list[CertificateExpiry]:
    """The expiry of each certificate in *path* at *now* (an aware datetime)."""
    report = []
    for certificate in load_certificates(path):
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
        days_left = (not_after - now).days
        if now >= not_after:
            status = ExpiryStatus.EXPIRED
        elif now < not_before:
            status = ExpiryStatus.NOT_YET_VALID
        elif days_left < warn_days:
            status = ExpiryStatus.WARNING
        else:
            status = ExpiryStatus.OK
        report.append(
            CertificateExpiry(
                role, path, _subject(certificate), not_before, not_after, days_left, status
            )
        )
    return report


def _subject(certificate: x509.Certificate) -> str:
    """The common name, else the first subjectAltName, else the whole subject."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        return str(names[0].value)
    try:
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alt = None
    if alt is not None:
        for general_name in alt:
            if isinstance(general_name, x509.DNSName | x509.IPAddress):
                return str(general_name.value)
    return certificate.subject.rfc4514_string() or "(no subject)"
