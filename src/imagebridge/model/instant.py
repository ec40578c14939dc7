"""Instants on the wire: an ``xs:dateTime`` kept as written plus its aware datetime.

Shared by the SAML assertion (IssueInstant, NotBefore, ...), the WS-Security
``wsu:Timestamp`` and the ATNA ``EventDateTime``.  Pure: no clock is read here;
:meth:`Instant.at` formats a datetime the caller supplies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from imagebridge.errors import InvalidTimestamp

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$"
)


@dataclass(frozen=True, slots=True)
class Instant:
    """An xs:dateTime as written (SAML instants, wsu:Created/Expires, ATNA EventDateTime).

    ``text`` is the value as given (trimmed), ``value`` the aware datetime.
    A value without a timezone is read as UTC (SAML core 1.3.3 requires UTC).
    """

    text: str
    value: datetime

    def __post_init__(self) -> None:
        if self.value.tzinfo is None or self.value.utcoffset() is None:
            raise InvalidTimestamp(f"instant {self.text!r} has a naive datetime")

    @classmethod
    def parse(cls, text: str, what: str = "timestamp") -> Instant:
        """Read an xs:dateTime; raise :class:`InvalidTimestamp` naming *what* otherwise."""
        raw = text.strip()
        m = _DATETIME.match(raw)
        if m is None:
            raise InvalidTimestamp(f"{what} is not an xs:dateTime: {raw[:40]!r}")
        year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
        micro = int(((m.group(7) or "") + "000000")[:6])
        tz = m.group(8)
        try:
            tzinfo = UTC
            if tz not in (None, "Z"):
                sign = -1 if tz[0] == "-" else 1
                offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
                tzinfo = timezone(sign * offset)
            value = datetime(year, month, day, hour, minute, second, micro, tzinfo=tzinfo)
        except ValueError as exc:
            raise InvalidTimestamp(f"{what} is not a valid date and time: {raw[:40]!r}") from exc
        return cls(raw, value)

    @classmethod
    def at(cls, value: datetime) -> Instant:
        """An instant for output: UTC, millisecond precision, ``Z`` suffix."""
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidTimestamp("an instant for output needs a timezone-aware datetime")
        utc = value.astimezone(UTC)
        ms = utc.microsecond // 1000
        text = (
            f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
            f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        )
        text += f".{ms:03d}Z" if ms else "Z"
        return cls(text, utc.replace(microsecond=ms * 1000))
