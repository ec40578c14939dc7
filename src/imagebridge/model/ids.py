"""Identifiers: ISO OIDs, DICOM UIDs, homeCommunityIds and patient identifiers.

Patient identifiers travel in two forms: the HL7 v3 ``II`` (root + extension)
used by XCPD, and the XDS ``CX`` string ``id^^^&oid&ISO`` used by XCA.  Both
map to one :class:`PatientId`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagebridge.errors import InvalidOid, InvalidUid, InvalidValue

_OID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
# DICOM PS3.5 9.1: components without leading zeros, at most 64 characters.
_UID_RE = _OID_RE
# What partners put in homeCommunityIds: digits and dots, placeholders like
# "987654321" included.  Our own ids (config) are checked with validate_oid.
_LENIENT_OID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
URN_OID = "urn:oid:"


def is_oid(value: str) -> bool:
    """True if *value* is a dotted-decimal ISO OID (no ``urn:oid:`` prefix)."""
    return bool(_OID_RE.match(value))


def validate_oid(value: str, what: str = "OID") -> str:
    """Return *value* (stripped) if it is an OID, else raise :class:`InvalidOid`."""
    text = value.strip()
    if not is_oid(text):
        raise InvalidOid(f"{what} is not a dotted-decimal OID: {text[:80]!r}")
    return text


def validate_uid(value: str, what: str = "UID") -> str:
    """Return *value* (stripped) if it is a valid DICOM UID, else raise :class:`InvalidUid`."""
    text = value.strip().rstrip("\x00")
    if not text:
        raise InvalidUid(f"{what} is empty")
    if len(text) > 64 or not _UID_RE.match(text):
        raise InvalidUid(f"{what} is not a valid DICOM UID: {text[:80]!r}")
    return text


def strip_urn_oid(value: str) -> str:
    """Remove any number of leading ``urn:oid:`` prefixes (partners double them)."""
    text = value.strip()
    while text.lower().startswith(URN_OID):
        text = text[len(URN_OID) :].strip()
    return text


@dataclass(frozen=True, slots=True)
class HomeCommunityId:
    """A community's identifier, always written ``urn:oid:<OID>`` on the wire."""

    oid: str

    def __post_init__(self) -> None:
        if not _LENIENT_OID_RE.match(self.oid):
            raise InvalidOid(f"homeCommunityId is not an OID: {self.oid[:80]!r}")

    @classmethod
    def parse(cls, value: str) -> HomeCommunityId:
        """Lenient: a bare OID, ``urn:oid:`` once or repeated, whitespace, single-arc ids.

        Use :func:`validate_oid` on :attr:`oid` where a strictly valid OID is required.
        """
        return cls(strip_urn_oid(value))

    @property
    def urn(self) -> str:
        return URN_OID + self.oid

    def __str__(self) -> str:
        return self.urn


@dataclass(frozen=True, slots=True)
class PatientId:
    """A patient identifier within an assigning authority (an OID)."""

    id: str
    assigning_authority: str

    def __post_init__(self) -> None:
        if not self.id or any(c in self.id for c in "^&~\\|"):
            raise InvalidValue(f"patient id value is empty or has CX delimiters: {self.id!r}")
        validate_oid(self.assigning_authority, "assigning authority")

    @classmethod
    def from_cx(cls, value: str) -> PatientId:
        """Parse the XDS CX form ``id^^^&1.2.3&ISO``.

        Lenient on input: surrounding quotes and whitespace are dropped, the
        universal-id type may be absent, and a ``urn:oid:`` prefix is tolerated.
        """
        text = value.strip().strip("'\"").strip()
        parts = text.split("^")
        if len(parts) < 4 or not parts[0]:
            raise InvalidValue(f"patient id is not in CX form id^^^&oid&ISO: {text[:80]!r}")
        authority = parts[3].split("&")
        if len(authority) < 2 or not authority[1]:
            raise InvalidValue(f"patient id has no assigning authority OID: {text[:80]!r}")
        if len(authority) > 2 and authority[2] and authority[2].upper() != "ISO":
            raise InvalidValue(f"assigning authority type is not ISO: {authority[2]!r}")
        return cls(parts[0], validate_oid(strip_urn_oid(authority[1]), "assigning authority"))

    @property
    def cx(self) -> str:
        """The XDS CX form, strict on output."""
        return f"{self.id}^^^&{self.assigning_authority}&ISO"

    @classmethod
    def from_ii(cls, root: str, extension: str) -> PatientId:
        """From an HL7 v3 ``II`` (root = assigning authority OID, extension = id)."""
        return cls(extension.strip(), validate_oid(strip_urn_oid(root), "II root"))

    def __str__(self) -> str:
        return self.cx
