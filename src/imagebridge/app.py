"""Composition root: configuration in, a running gateway (ASGI app) out.

The ASGI lifespan owns the store, the image sources and their background
indexing.  A folder archive is indexed before the first request is answered
and re-scanned every ``scan_interval`` seconds so that new files are served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import anyio
import httpx
from starlette.applications import Starlette

from imagebridge.actors.initiating.client import PartnerClient, PartnerClients
from imagebridge.actors.initiating.imaging_gateway import (
    ImagingGatewaySettings,
    InitiatingImagingGateway,
)
from imagebridge.actors.responding.catalog import CatalogSettings, ManifestCatalog
from imagebridge.actors.responding.imaging_retrieve import (
    BackendFactory,
    ImagingRetrieveResponder,
    ImagingRetrieveSettings,
)
from imagebridge.actors.responding.imaging_sources import ArchiveImagingSource
from imagebridge.actors.responding.matching import MatchPolicy
from imagebridge.actors.responding.patient_discovery import PatientDiscoveryResponder
from imagebridge.actors.responding.query import CrossGatewayQueryResponder
from imagebridge.actors.responding.remote_source import RemoteImagingSource
from imagebridge.actors.responding.retrieve import CrossGatewayRetrieveResponder
from imagebridge.config import Config, RepositoryConfig
from imagebridge.dicom.metadata import ManifestMetadataSettings
from imagebridge.errors import ConfigError
from imagebridge.model.directory import Community
from imagebridge.sources.base import ImageSource
from imagebridge.sources.dicomweb import DicomWebSource
from imagebridge.sources.dimse import DimseSource
from imagebridge.sources.folder import FolderSource
from imagebridge.sources.indexer import keep_indexed
from imagebridge.store import Store
from imagebridge.transactions import Transaction
from imagebridge.transport.client import SoapClient
from imagebridge.transport.server import SoapEndpoint, soap_routes

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Gateway:
    """Everything a running gateway holds; built by :func:`open_gateway`."""

    config: Config
    store: Store
    sources: dict[str, ImageSource]
    catalog: ManifestCatalog
    endpoints: list[SoapEndpoint]


def build_source(repo: RepositoryConfig, store: Store) -> ImageSource:
    """The image source adapter one ``[[repositories]]`` entry describes."""
    if repo.source == "folder" and repo.path is not None:
        return FolderSource(repo.unique_id, repo.path, store)
    if repo.source == "dicomweb" and repo.url is not None:
        return DicomWebSource(repo.unique_id, repo.url)
    if repo.source == "dimse" and repo.host and repo.port and repo.called_ae:
        return DimseSource(
            repo.unique_id,
            repo.host,
            repo.port,
            repo.called_ae,
            repo.calling_ae,
            retrieve="move" if repo.retrieve == "move" else "get",
            move_destination=repo.move_destination,
            move_port=repo.move_port,
        )
    raise ConfigError(f"repository {repo.unique_id}: incomplete {repo.source} settings")


def open_store(config: Config) -> Store:
    """The store of *config*, migrated to the current schema."""
    return Store.open(
        config.store.database_url,
        default_assigning_authority=config.community.patient_id_authority or None,
    )


def _imaging_backends(
    config: Config, store: Store, sources: Mapping[str, ImageSource], client: SoapClient
) -> dict[str, BackendFactory]:
    """One imaging retrieve back end per repository: archives we read, remote IDSs."""
    home = config.community.home_community_id
    location = home.urn
    backends: dict[str, BackendFactory] = {}
    for repo in config.repositories:
        if repo.source == "ids" and repo.url is not None:
            backends[repo.unique_id] = partial(
                RemoteImagingSource, repo.unique_id, repo.url, client, home
            )
        else:
            source = sources[repo.unique_id]
            backends[repo.unique_id] = partial(ArchiveImagingSource, source, store, location)
    return backends


def build_gateway(
    config: Config,
    store: Store,
    sources: Mapping[str, ImageSource],
    client: SoapClient,
    partners: PartnerClients | None = None,
) -> Gateway:
    """Wire the responders to *store* and *sources* (no I/O happens here).

    *partners* makes the clients for partner communities (per-partner TLS);
    without it every partner is reached through *client*.
    """
    home = config.community.home_community_id
    metadata = ManifestMetadataSettings(
        patient_id_issuer=config.community.patient_id_authority,
        accession_issuer=config.community.accession_authority,
        author_institution="",
    )
    catalog = ManifestCatalog(
        store,
        sources,
        CatalogSettings(
            home=home,
            metadata=metadata,
            retrieve_ae_titles={r.unique_id: r.retrieve_ae_title for r in config.repositories},
            institution_name=config.community.name,
        ),
        clock=_now,
    )
    policy = MatchPolicy(allow_multiple=config.xcpd.allow_multiple)
    xcpd = PatientDiscoveryResponder(store, home, policy)
    query = CrossGatewayQueryResponder(catalog, store, home)
    retrieve = CrossGatewayRetrieveResponder(catalog, home)
    backends = _imaging_backends(config, store, sources, client or SoapClient(httpx.AsyncClient()))
    archives = {k: b for k, b in backends.items() if k in sources}
    rad75 = ImagingRetrieveResponder(
        backends, ImagingRetrieveSettings(home=home, cross_gateway=True)
    )
    rad69 = ImagingRetrieveResponder(
        archives, ImagingRetrieveSettings(home=home, cross_gateway=False)
    )
    partner_for = (
        partners.for_community if partners is not None else partial(_shared_partner, client)
    )
    iig = InitiatingImagingGateway(
        lambda: config.communities, partner_for, ImagingGatewaySettings(home=home)
    )
    endpoints = [
        SoapEndpoint("/xcpd", {Transaction.ITI_55: xcpd.handle}),
        SoapEndpoint("/xca/query", {Transaction.ITI_38: query.handle}),
        SoapEndpoint("/xca/retrieve", {Transaction.ITI_39: retrieve.handle}),
        SoapEndpoint("/xcai/retrieve", {Transaction.RAD_75: rad75.handle}),
        SoapEndpoint("/ids/retrieve", {Transaction.RAD_69: rad69.handle}),
        # RAD-69 again: from local consumers, forwarded by community as RAD-75.
        SoapEndpoint("/iig/retrieve", {Transaction.RAD_69: iig.handle}),
    ]
    return Gateway(config, store, dict(sources), catalog, endpoints)


def _shared_partner(client: SoapClient, community: Community) -> PartnerClient:
    return PartnerClient(community, client)


@contextlib.asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Open the store and sources, index folder archives, yield the gateway, close all."""
    store = open_store(config)
    sources = {
        r.unique_id: build_source(r, store) for r in config.repositories if r.source != "ids"
    }
    http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
    partners = PartnerClients()
    try:
        for repo_id, source in sources.items():
            if isinstance(source, FolderSource):
                report = await source.sync()
                log.info("indexed repository %s: %s", repo_id, report)
        yield build_gateway(config, store, sources, SoapClient(http), partners)
    finally:
        await partners.aclose()
        await http.aclose()
        for source in sources.values():
            with contextlib.suppress(Exception):
                await source.aclose()
        store.close()


def create_app(config: Config) -> Starlette:
    """The ASGI application for ``imagebridge serve``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_gateway(config) as gateway, anyio.create_task_group() as tasks:
            for repo in config.repositories:
                source = gateway.sources.get(repo.unique_id)
                if source is None:
                    continue
                if isinstance(source, FolderSource):
                    tasks.start_soon(source.watch, repo.scan_interval)
                else:
                    tasks.start_soon(keep_indexed, source, gateway.store, repo.scan_interval)
            app.router.routes.extend(soap_routes(gateway.endpoints))
            app.state.gateway = gateway
            yield
            tasks.cancel_scope.cancel()

    return Starlette(lifespan=lifespan)
