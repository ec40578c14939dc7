"""Directory model: the partner communities an Initiating Gateway can reach.

A :class:`Community` is one Responding Gateway (or Responding Imaging
Gateway) known by its homeCommunityId, with one :class:`CommunityEndpoint`
per transaction it answers, the TLS material to reach it and per-partner
limits.  Communities come from the static configuration
(:mod:`imagebridge.directory.static`) or from a FHIR R4 directory in the
Carequality shape (:mod:`imagebridge.directory.fhir`); both produce a
:class:`DirectorySnapshot`.  Pure data: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from imagebridge.model.ids import HomeCommunityId
from imagebridge.transactions import Transaction

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 60.0
DEFAULT_OVERALL_TIMEOUT: Final = 120.0
"""Seconds; the spec digest (section 14) proposes 60-120 s per request."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-partner timeouts in seconds: TCP/TLS connect, idle read, whole exchange."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    overall: float = DEFAULT_OVERALL_TIMEOUT


@dataclass(frozen=True, slots=True)
class PartnerLimits:
    """What one partner accepts: documents per retrieve (None: no limit) and timeouts."""

    max_documents_per_retrieve: int | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Per-partner TLS material (paths only; the TLS layer builds the context).

    ``None`` everywhere means: the system trust store, no client certificate.
    """

    ca_bundle: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True, slots=True)
class CommunityEndpoint:
    """The URL at which a community answers one transaction."""

    transaction: Transaction
    url: str
    active: bool = True
    """False for a directory Endpoint whose status is not ``active``; never used."""


@dataclass(frozen=True, slots=True)
class Community:
    """A partner community: homeCommunityId, name, endpoints per transaction, TLS, limits."""

    home_community_id: HomeCommunityId
    name: str
    endpoints: tuple[CommunityEndpoint, ...] = ()
    active: bool = True
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: PartnerLimits = field(default_factory=PartnerLimits)
    part_of: HomeCommunityId | None = None
    """The parent Organization in the directory (``partOf``), if any."""

    def endpoint(self, transaction: Transaction) -> CommunityEndpoint | None:
        """The first active endpoint for *transaction*, or None (inactive community: None)."""
        if not self.active:
            return None
        for endpoint in self.endpoints:
            if endpoint.transaction is transaction and endpoint.active:
                return endpoint
        return None

    def url(self, transaction: Transaction) -> str | None:
        """The URL to send *transaction* to, or None if the community does not answer it."""
        endpoint = self.endpoint(transaction)
        return None if endpoint is None else endpoint.url

    @property
    def transactions(self) -> frozenset[Transaction]:
        """The transactions this community can be sent now."""
        return frozenset(t for t in Transaction if self.endpoint(t) is not None)


@dataclass(frozen=True, slots=True)
class DirectoryWarning:
    """An entry that was skipped or repaired during an import, and why."""

    where: str
    """Which entry: ``Organization/<id>``, ``page 2`` or ``communities[3]``."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    """The communities known at one moment, with the warnings of the import that built them.

    ``complete`` is False when the import stopped early (page limit): a refresh
    then never removes the communities it did not see.
    """

    communities: tuple[Community, ...] = ()
    warnings: tuple[DirectoryWarning, ...] = ()
    complete: bool = True

    def by_id(self) -> Mapping[HomeCommunityId, Community]:
        """The communities keyed by homeCommunityId (first wins on duplicates)."""
        index: dict[HomeCommunityId, Community] = {}
        for community in self.communities:
            index.setdefault(community.home_community_id, community)
        return index

    def get(self, home_community_id: HomeCommunityId) -> Community | None:
        """The community with this id, or None."""
        for community in self.communities:
            if community.home_community_id == home_community_id:
                return community
        return None

    def endpoint_for(
        self, home_community_id: HomeCommunityId, transaction: Transaction, *, max_depth: int = 8
    ) -> CommunityEndpoint | None:
        """Where to send *transaction* for a community: its own endpoint, else its parent's.

        The spec digest (8.4): an entry without an endpoint of its own is reached
        through the nearest ``partOf`` ancestor that has one; the messages still
        address the target homeCommunityId.
        """
        index = self.by_id()
        current: HomeCommunityId | None = home_community_id
        for _ in range(max_depth + 1):
            community = index.get(current) if current is not None else None
            if community is None or not community.active:
                return None
            endpoint = community.endpoint(transaction)
            if endpoint is not None:
                return endpoint
            current = community.part_of
        return None

    def active(self) -> tuple[Community, ...]:
        """The communities that are active and answer at least one transaction."""
        return tuple(c for c in self.communities if c.active and c.transactions)

    def __iter__(self) -> Iterator[Community]:
        return iter(self.communities)

    def __len__(self) -> int:
        return len(self.communities)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """A new snapshot merged over a previous one, and what changed."""

    snapshot: DirectorySnapshot
    added: tuple[HomeCommunityId, ...] = ()
    removed: tuple[HomeCommunityId, ...] = ()
    changed: tuple[HomeCommunityId, ...] = ()
    unchanged: int = 0

    @property
    def counts(self) -> tuple[int, int, int]:
        """(added, removed, changed)."""
        return len(self.added), len(self.removed), len(self.changed)
