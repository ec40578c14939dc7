"""Composition root: configuration in, a running gateway (ASGI app) out.

The ASGI lifespan owns the store, the image sources and their background
indexing.  A folder archive is indexed before the first request is answered
and re-scanned every ``scan_interval`` seconds so that new files are served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial

import anyio
import anyio.abc
import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from imagebridge.actors.initiating.client import PartnerClient, PartnerClients
from imagebridge.actors.initiating.imaging_gateway import (
    ImagingGatewaySettings,
    InitiatingImagingGateway,
)
from imagebridge.actors.responding.access import XuaGuard, enforce_access
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
from imagebridge.security.audit_trail import AuditTrail
from imagebridge.security.event_facts import DecodedObservers
from imagebridge.security.measures import Measures, metrics_route
from imagebridge.security.saml_issuer import Principal, SecurityHeaders, SessionPrincipal
from imagebridge.security.tls import client_context
from imagebridge.security.xua_config import (
    build_access_policy,
    build_verifier,
    partner_security,
    system_principal,
)
from imagebridge.sources.base import ImageSource
from imagebridge.sources.dicomweb import DicomWebSource
from imagebridge.sources.dimse import DimseSource
from imagebridge.sources.folder import FolderSource
from imagebridge.sources.indexer import (
    MIN_LEASE_SECONDS,
    index_once,
    sync_once,
    while_leading,
)
from imagebridge.store import Store
from imagebridge.store.counters import TransactionCounters
from imagebridge.store.jobs import JobStore
from imagebridge.store.leases import GatewaySettings, ServiceLeases, worker_name
from imagebridge.transactions import Transaction
from imagebridge.transport.client import SoapClient
from imagebridge.transport.events import NO_OBSERVER, TransactionObserver
from imagebridge.transport.server import SoapEndpoint, soap_routes
from imagebridge.web.auth import current_operator
from imagebridge.web.imports import running_imports
from imagebridge.web.routes import staff_page

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
    observer: TransactionObserver = NO_OBSERVER
    """Hears every transaction on both sides (audit trail, performance counters)."""
    measures: Measures | None = None
    audit: AuditTrail | None = None
    principal: SessionPrincipal | None = None
    """Whose name our SAML assertions carry; the staff page acts as the logged-in operator."""


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
    measures = Measures(TransactionCounters(store.engine))
    audit = (
        AuditTrail.open(
            config.audit,
            store.engine,
            home_community_id=config.community.home_community_id.oid,
            community_name=config.community.name,
        )
        if config.audit.enabled
        else None
    )
    observer = DecodedObservers([c for c in (audit, measures) if c is not None])
    issuer = config.xua.issuer
    principal = SessionPrincipal(system_principal(issuer)) if issuer is not None else None
    # RAD-69 to remote Imaging Document Sources: verified with the deployment's [tls] too.
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=10.0),
        verify=client_context(config.tls.defaults),
    )
    partners = PartnerClients(
        observer=observer,
        tls_defaults=config.tls.defaults,
        security=partner_security(config.xua, config.community.home_community_id, principal),
    )
    try:
        for source in sources.values():
            if isinstance(source, FolderSource):
                await _index_at_start(store, source)
        gateway = build_gateway(config, store, sources, SoapClient(http), partners)
        gateway.observer, gateway.measures, gateway.audit = observer, measures, audit
        gateway.principal = principal
        yield gateway
    finally:
        await partners.aclose()
        await http.aclose()
        for source in sources.values():
            with contextlib.suppress(Exception):
                await source.aclose()
        store.close()


START_INDEX_WAIT = 600.0
"""Longest a worker waits at start-up for another worker's first scan of an archive."""


async def _index_at_start(store: Store, source: FolderSource) -> None:
    """Scan a folder archive before serving, once per deployment.

    The worker holding the archive's ``index:`` lease scans it and then marks
    it scanned (``indexed:`` in ``gateway_settings``); another worker starting
    at the same time waits for that mark (or takes the lease over if the
    scanner dies), so no worker answers from a half-built index.  On a
    restart the mark is there: the scan is incremental and nobody waits.
    """
    repo_id = source.repository_unique_id
    leases, settings = ServiceLeases(store.engine), GatewaySettings(store.engine)
    lease, mark = f"index:{repo_id}", f"indexed:{repo_id}"
    deadline = anyio.current_time() + START_INDEX_WAIT
    while True:
        if await anyio.to_thread.run_sync(leases.hold, lease, worker_name(), MIN_LEASE_SECONDS):
            report = await source.sync()
            log.info("indexed repository %s: %s", repo_id, report)
            await anyio.to_thread.run_sync(settings.put, mark, _now().isoformat())
            return
        if await anyio.to_thread.run_sync(settings.get, mark) is not None:
            log.info("repository %s is indexed by another worker", repo_id)
            return
        if anyio.current_time() > deadline:
            log.warning("repository %s: still being indexed by another worker", repo_id)
            return
        await anyio.sleep(0.2)


def _as_operator(system: Principal) -> Principal:
    """The staff member logged in to the page, else the configured system user."""
    name = current_operator.get()
    return system if name is None else replace(system, subject_id=name, user_id=name)


def _operator_security(config: Config) -> SecurityHeaders | None:
    """Assertions for the staff page's requests: they name the logged-in operator."""
    if config.xua.issuer is None:
        return None
    system = system_principal(config.xua.issuer)
    return partner_security(
        config.xua, config.community.home_community_id, partial(_as_operator, system)
    )


async def _headless_imports(
    config: Config,
    gateway: Gateway,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The import job sweeper of a gateway without a staff page, until cancelled."""
    async with (
        PartnerClients(
            observer=gateway.observer,
            tls_defaults=config.tls.defaults,
            security=_operator_security(config),
        ) as clients,
        running_imports(config, JobStore(gateway.store.engine), clients),
    ):
        task_status.started()
        await anyio.sleep_forever()


def create_app(config: Config) -> Starlette:
    """The ASGI application for ``imagebridge serve``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            open_gateway(config) as gateway,
            staff_page(
                config,
                gateway.store,
                security=_operator_security(config),
                observer=gateway.observer,
            ) as staff,
            anyio.create_task_group() as tasks,
        ):
            leases = ServiceLeases(gateway.store.engine)
            for repo in config.repositories:  # each archive is scanned by one worker at a time
                source = gateway.sources.get(repo.unique_id)
                if source is None:
                    continue
                duty = (
                    partial(sync_once, source)
                    if isinstance(source, FolderSource)
                    else partial(index_once, source, gateway.store)
                )
                tasks.start_soon(
                    partial(
                        while_leading,
                        leases,
                        f"index:{repo.unique_id}",
                        repo.scan_interval,
                        duty,
                        first_wait=isinstance(source, FolderSource),  # synced at start-up
                    )
                )
            if gateway.measures is not None:
                await tasks.start(gateway.measures.run)
                app.router.routes.append(metrics_route(gateway.measures))
            if gateway.audit is not None:
                await tasks.start(gateway.audit.run)
            endpoints, guard = gateway.endpoints, None
            verifier = config.xua.verifier
            if verifier is not None:
                policy = build_access_policy(verifier)
                endpoints = enforce_access(endpoints, policy, config.community.home_community_id)
                guard = XuaGuard(build_verifier(verifier))
            app.router.routes.extend(
                soap_routes(endpoints, observer=gateway.observer, verifier=guard)
            )
            if staff is not None:  # the staff page ([web]) answers every other path
                app.router.routes.append(Mount("", app=staff))
            elif config.importing is not None:  # no page: still run orphaned/queued jobs
                await tasks.start(_headless_imports, config, gateway)
            app.state.gateway = gateway
            yield
            tasks.cancel_scope.cancel()

    return Starlette(lifespan=lifespan)
