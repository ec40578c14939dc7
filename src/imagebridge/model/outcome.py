"""Outcomes of ebXML transactions: status, RegistryErrors, and their consolidation.

Partial success is data, not an exception: a response carries a status and a
tuple of :class:`RegistryError` values, and consolidation follows ITI TF-2
(no errors: Success; results and errors: PartialSuccess; only errors: Failure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from imagebridge.errors import InvalidValue


class Status(Enum):
    """Response status URNs (ebRS 3.0 plus the IHE PartialSuccess)."""

    SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
    PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
    FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"

    @classmethod
    def parse(cls, value: str) -> Status:
        """Lenient: exact URN, or any URN/word ending in the status name."""
        text = value.strip()
        for member in cls:
            if text == member.value:
                return member
        tail = text.rsplit(":", 1)[-1].lower()
        for member in cls:
            if member.value.rsplit(":", 1)[-1].lower() == tail:
                return member
        raise InvalidValue(f"unknown response status {text[:100]!r}")


class Severity(Enum):
    """RegistryError severities."""

    ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
    WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

    @classmethod
    def parse(cls, value: str | None) -> Severity:
        """Absent means Error (the schema default); unknown words are refused."""
        if value is None or not value.strip():
            return cls.ERROR
        tail = value.strip().rsplit(":", 1)[-1].lower()
        for member in cls:
            if member.value.rsplit(":", 1)[-1].lower() == tail:
                return member
        raise InvalidValue(f"unknown error severity {value[:100]!r}")


@dataclass(frozen=True, slots=True)
class RegistryError:
    """One ``rs:RegistryError``.  Unknown error codes from partners are kept verbatim."""

    error_code: str
    code_context: str
    severity: Severity = Severity.ERROR
    location: str | None = None

    def __post_init__(self) -> None:
        if not self.error_code.strip():
            raise InvalidValue("RegistryError errorCode is empty")


def consolidate(has_results: bool, errors: Iterable[RegistryError]) -> Status:
    """Status for a response with or without results and with these errors.

    Warnings alone do not degrade a Success.
    """
    has_errors = any(e.severity is Severity.ERROR for e in errors)
    if not has_errors:
        return Status.SUCCESS
    return Status.PARTIAL_SUCCESS if has_results else Status.FAILURE


@dataclass(frozen=True, slots=True)
class RegistryResponse:
    """``rs:RegistryResponse``: a status and its errors (used alone and inside responses)."""

    status: Status
    errors: tuple[RegistryError, ...] = ()
    request_id: str | None = None
