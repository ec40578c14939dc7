"""Directory layer: the partner communities and their endpoints.

Two sources produce the same :class:`~imagebridge.model.directory.DirectorySnapshot`:
the static ``[[communities]]`` of the configuration file (:mod:`.static`) and a
FHIR R4 directory in the Carequality shape (:mod:`.fhir`).
"""

from __future__ import annotations

from imagebridge.directory.fhir import (
    DEFAULT_TRANSACTION_CODES,
    DirectoryEntryInvalid,
    DirectoryMalformed,
    DirectoryUnavailable,
    fetch_directory,
    refresh,
)
from imagebridge.directory.static import communities_from_config, parse_communities
from imagebridge.model.directory import (
    Community,
    CommunityEndpoint,
    DirectorySnapshot,
    DirectoryWarning,
    PartnerLimits,
    RefreshResult,
    Timeouts,
    TlsSettings,
)

__all__ = [
    "DEFAULT_TRANSACTION_CODES",
    "Community",
    "CommunityEndpoint",
    "DirectoryEntryInvalid",
    "DirectoryMalformed",
    "DirectorySnapshot",
    "DirectoryUnavailable",
    "DirectoryWarning",
    "PartnerLimits",
    "RefreshResult",
    "Timeouts",
    "TlsSettings",
    "communities_from_config",
    "fetch_directory",
    "parse_communities",
    "refresh",
]
