"""Initiating Gateway client: ITI-55, ITI-38, ITI-39 and RAD-75 sent to one partner community.

A :class:`PartnerClient` speaks for one :class:`~imagebridge.model.directory.Community`:
it sends each transaction to the community's endpoint for it, with the
community's timeouts (connect and idle read on the HTTP exchange, and an
overall ceiling per exchange) and its limits (a retrieve larger than
``max_documents_per_retrieve`` is sent as several requests whose answers are
merged).  Every exchange is synchronous (guide 8.7.4 forbids the asynchronous
option).

Retrieve replies are read incrementally: each MTOM part goes to a
:class:`~imagebridge.wire.spool.PartSink` as it arrives (by default one that
spools to disk past 1 MiB), so a study of any size passes with flat memory.
The caller owns the :class:`RetrieveResult` and closes it to release the parts.

Failures raise one of :class:`~imagebridge.errors.PartnerUnavailable`
(connection refused, TLS failure, reply broken off), its subclass
:class:`~imagebridge.errors.PartnerTimeout`,
:class:`~imagebridge.errors.SoapFaultReceived` or a wire error for an
unusable reply; the fan-out turns them into a per-community status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, Final, TypeVar, cast

import anyio
import httpx

from imagebridge.actors.initiating.batching import batched, split_imaging_request
from imagebridge.errors import (
    ImageBridgeError,
    PartnerTimeout,
    SoapFaultReceived,
)
from imagebridge.model.directory import Community, TlsSettings
from imagebridge.model.outcome import RegistryError, Severity, Status, consolidate
from imagebridge.model.retrieve import (
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
    XopInclude,
)
from imagebridge.model.xcpd import PatientDiscoveryQuery, PatientDiscoveryResponse
from imagebridge.model.xds_query import AdhocQueryRequest, AdhocQueryResponse
from imagebridge.security.tls import client_context, effective_tls
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient, SoapResponse
from imagebridge.transport.events import (
    NO_OBSERVER,
    Decoded,
    Role,
    TransactionEvent,
    TransactionObserver,
)
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_response,
    render_patient_discovery_query,
)
from imagebridge.wire.mtom import MtomPackage
from imagebridge.wire.spool import PartSink, SpooledBody, StoredBody
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import parse_adhoc_query_response, render_adhoc_query_request
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_response,
    render_retrieve_document_set_request,
)
from imagebridge.wire.xml import Element

log = logging.getLogger(__name__)

_T = TypeVar("_T")
SecurityHeaders = Callable[[Transaction, Community], Sequence[Element]]
"""Makes the SOAP header blocks of one request to one community (XUA: wsse:Security)."""

SinkFactory = Callable[[], PartSink]
"""Makes the sink for one reply (one per HTTP exchange)."""

UNAVAILABLE: Final = "XDSUnavailableCommunity"


class EndpointMissing(ImageBridgeError):
    """The community lists no endpoint for the transaction we need to send it."""

    xds_error_code = "XDSUnknownCommunity"


@dataclass(slots=True)
class ReceivedDocument:
    """One returned document: its DocumentResponse and its stored body (open it to read)."""

    response: DocumentResponse
    body: StoredBody

    def open(self) -> BinaryIO:
        return self.body.open()


@dataclass(slots=True)
class RetrieveResult:
    """The merged answer of one or more retrieve exchanges with one community.

    ``status`` is consolidated over every batch (ITI TF-2 rules); ``errors``
    keeps the partner's RegistryErrors plus one per document of a batch that
    failed as a whole.  Close it to release the received parts.
    """

    documents: list[ReceivedDocument] = field(default_factory=list)
    errors: list[RegistryError] = field(default_factory=list)
    exchanges: int = 0
    failed_exchanges: int = 0
    _packages: list[MtomPackage] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return consolidate(bool(self.documents), self.errors)

    def close(self) -> None:
        for document in self.documents:
            document.body.close()
        for package in self._packages:
            package.close()
        self._packages.clear()

    def __enter__(self) -> RetrieveResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PartnerClient:
    """Initiating Gateway [ITI-55, ITI-38, ITI-39] and Initiating Imaging Gateway [RAD-75]
    client for one partner community."""

    def __init__(
        self,
        community: Community,
        soap: SoapClient,
        *,
        observer: TransactionObserver = NO_OBSERVER,
        security: SecurityHeaders | None = None,
    ) -> None:
        """*observer* hears every exchange; *security* makes the SOAP header blocks
        (the wsse:Security with the SAML assertion) for each request."""
        self.community = community
        self._soap = soap
        self._observer = observer
        self._security = security
        t = community.limits.timeouts
        self._timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect)
        self._overall = t.overall

    @property
    def name(self) -> str:
        return self.community.name or self.community.home_community_id.oid

    def _url(self, transaction: Transaction) -> str:
        url = self.community.url(transaction)
        if url is None:
            raise EndpointMissing(
                f"community {self.community.home_community_id.oid} has no active "
                f"{transaction.value} endpoint"
            )
        return url

    async def _exchange(
        self,
        transaction: Transaction,
        payload: Element,
        sink: PartSink | None = None,
        decoded: list[object] | None = None,
        decode: Callable[[Element], object] | None = None,
    ) -> SoapResponse:
        """One synchronous SOAP exchange bounded by the community's overall timeout.

        With *decode*, the reply is decoded here and appended to *decoded*, so
        the observers get the model rather than decoding the payload again; a
        reply that does not decode fails the exchange (and is reported so).
        """
        url = self._url(transaction)
        spec = spec_of(transaction)
        blocks = tuple(self._security(transaction, self.community)) if self._security else ()
        started, clock = datetime.now(UTC), time.perf_counter()
        failure: ImageBridgeError | None = None
        reply: SoapResponse | None = None
        try:
            with anyio.fail_after(self._overall):
                reply = await self._soap.call(
                    spec, url, payload, header_blocks=blocks, sink=sink, timeout=self._timeout
                )
            if decode is not None and decoded is not None:
                decoded.append(decode(reply.payload))
            return reply
        except TimeoutError as exc:
            failure = PartnerTimeout(
                f"{spec.code} to {self.name} took longer than {self._overall:g} s"
            )
            raise failure from exc
        except ImageBridgeError as exc:
            failure = exc
            raise
        finally:
            self._observer.observe(
                TransactionEvent(
                    transaction=transaction,
                    role=Role.INITIATOR,
                    started=started,
                    elapsed=time.perf_counter() - clock,
                    peer=url,
                    request=payload,
                    reply=reply.message.payload if reply is not None else None,
                    partner=self.community.home_community_id,
                    error=_code_of(failure),
                    detail=failure.message if failure is not None else "",
                    header_blocks=blocks,
                    decoded=Decoded(None, decoded[0]) if decoded else None,
                )
            )

    async def discover(self, query: PatientDiscoveryQuery) -> PatientDiscoveryResponse:
        """Cross Gateway Patient Discovery [ITI-55], Initiating Gateway: one query, its answer."""
        return await self._ask(
            Transaction.ITI_55,
            render_patient_discovery_query(query),
            parse_patient_discovery_response,
        )

    async def find(self, request: AdhocQueryRequest) -> AdhocQueryResponse:
        """Cross Gateway Query [ITI-38], Initiating Gateway: one stored query, its answer."""
        return await self._ask(
            Transaction.ITI_38, render_adhoc_query_request(request), parse_adhoc_query_response
        )

    async def _ask(
        self, transaction: Transaction, payload: Element, decode: Callable[[Element], _T]
    ) -> _T:
        """One exchange whose reply is decoded with *decode* (the observers get the model)."""
        decoded: list[object] = []
        reply = await self._exchange(transaction, payload, decoded=decoded, decode=decode)
        with reply:
            return cast(_T, decoded[0])

    async def retrieve(
        self, request: RetrieveDocumentSetRequest, sink: SinkFactory | None = None
    ) -> RetrieveResult:
        """Cross Gateway Retrieve [ITI-39], Initiating Gateway: batched, merged, parts spooled."""
        limit = self.community.limits.max_documents_per_retrieve
        payloads = [
            (render_retrieve_document_set_request(RetrieveDocumentSetRequest(tuple(b))), tuple(b))
            for b in batched(request.document_requests, limit)
        ]
        return await self._retrieve_batches(Transaction.ITI_39, payloads, sink, RetrieveResult())

    async def retrieve_images(
        self, request: RetrieveImagingDocumentSetRequest, sink: SinkFactory | None = None
    ) -> RetrieveResult:
        """Cross Gateway Retrieve Imaging Document Set [RAD-75], Initiating Imaging Gateway:
        batched per the community's limit, merged, each part handed to the sink as it arrives."""
        limit = self.community.limits.max_documents_per_retrieve
        payloads = [
            (render_retrieve_imaging_document_set_request(r), r.document_requests)
            for r in split_imaging_request(request, limit)
        ]
        return await self._retrieve_batches(Transaction.RAD_75, payloads, sink, RetrieveResult())

    async def _retrieve_batches(
        self,
        transaction: Transaction,
        payloads: list[tuple[Element, tuple[DocumentRequest, ...]]],
        sink: SinkFactory | None,
        result: RetrieveResult,
    ) -> RetrieveResult:
        first_failure: ImageBridgeError | None = None
        try:
            for payload, wanted in payloads:
                result.exchanges += 1
                try:
                    reply = await self._exchange(
                        transaction, payload, None if sink is None else sink()
                    )
                except ImageBridgeError as exc:
                    # A batch that fails as a whole costs its documents, not the others.
                    result.failed_exchanges += 1
                    first_failure = first_failure or exc
                    log.warning("%s batch to %s failed: %s", transaction.value, self.name, exc)
                    result.errors.extend(self._batch_errors(wanted, exc))
                    continue
                self._collect(transaction, reply, wanted, result)
        except BaseException:
            result.close()
            raise
        if first_failure is not None and result.failed_exchanges == result.exchanges:
            result.close()
            raise first_failure
        return result

    def _batch_errors(
        self, wanted: tuple[DocumentRequest, ...], exc: ImageBridgeError
    ) -> list[RegistryError]:
        code = exc.xds_error_code or UNAVAILABLE
        location = self.community.home_community_id.urn
        return [
            RegistryError(code, f"{d.document_unique_id}: {exc.message}", location=location)
            for d in wanted
        ]

    def _collect(
        self,
        transaction: Transaction,
        reply: SoapResponse,
        wanted: tuple[DocumentRequest, ...],
        result: RetrieveResult,
    ) -> None:
        package = reply.package
        result._packages.append(package)
        try:
            response: RetrieveDocumentSetResponse = parse_retrieve_document_set_response(
                reply.payload
            )
        except ImageBridgeError as exc:
            result.failed_exchanges += 1
            log.warning("%s reply from %s unusable: %s", transaction.value, self.name, exc)
            result.errors.extend(self._batch_errors(wanted, exc))
            return
        asked = {d.document_unique_id for d in wanted}
        for document in response.document_responses:
            if document.document_unique_id not in asked:
                log.warning(
                    "%s reply from %s carried a document that was not asked for; dropped",
                    transaction.value,
                    self.name,
                )
                continue
            try:
                body = _body_of(document, package)
            except ImageBridgeError as exc:
                result.errors.append(
                    RegistryError(
                        UNAVAILABLE,
                        f"{document.document_unique_id}: {exc.message}",
                        location=self.community.home_community_id.urn,
                    )
                )
                continue
            result.documents.append(ReceivedDocument(document, body))
            asked.discard(document.document_unique_id)
        result.errors.extend(response.errors)
        if asked and not any(e.severity is Severity.ERROR for e in response.errors):
            # Neither returned nor explained: say so rather than lose it silently.
            location = self.community.home_community_id.urn
            result.errors.extend(
                RegistryError(
                    "XDSDocumentUniqueIdError",
                    f"{uid}: asked for but neither returned nor reported by {self.name}",
                    location=location,
                )
                for uid in sorted(asked)
            )


def _code_of(failure: ImageBridgeError | None) -> str | None:
    if failure is None:
        return None
    if isinstance(failure, SoapFaultReceived):
        return failure.subcodes[-1] if failure.subcodes else failure.code
    return failure.xds_error_code or failure.fault_code.value


def _body_of(document: DocumentResponse, package: MtomPackage) -> StoredBody:
    if isinstance(document.document, XopInclude):
        return package.part_for_href(document.document.href).body
    data = document.document
    return SpooledBody(len(data), data=data)


class PartnerClients:
    """Makes :class:`PartnerClient` objects, one shared ``httpx.AsyncClient`` per TLS setting.

    Use as an async context manager (or call :meth:`aclose`) to close the
    connection pools.  Plain ``http://`` partners share the default client.
    *tls_defaults* is the deployment's ``[tls]`` (``config.tls.defaults``): a
    community's own TLS settings replace it only where they are set.
    """

    def __init__(
        self,
        *,
        max_connections: int = 200,
        observer: TransactionObserver = NO_OBSERVER,
        security: SecurityHeaders | None = None,
        tls_defaults: TlsSettings | None = None,
    ) -> None:
        self._tls_defaults = tls_defaults if tls_defaults is not None else TlsSettings()
        self._observer = observer
        self._security = security
        # Idle connections are dropped well before a partner's keep-alive timeout
        # (uvicorn's is 5 s) so a request never races the server closing one.
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections // 4,
            keepalive_expiry=2.0,
        )
        self._clients: dict[TlsSettings, SoapClient] = {}
        self._http: list[httpx.AsyncClient] = []

    def soap_for(self, tls: TlsSettings) -> SoapClient:
        """The client for a partner with TLS settings *tls*, over the deployment defaults."""
        tls = effective_tls(tls, self._tls_defaults)
        client = self._clients.get(tls)
        if client is None:
            http = httpx.AsyncClient(verify=client_context(tls), limits=self._limits)
            self._http.append(http)
            client = self._clients[tls] = SoapClient(http)
        return client

    def for_community(self, community: Community) -> PartnerClient:
        return PartnerClient(
            community,
            self.soap_for(community.tls),
            observer=self._observer,
            security=self._security,
        )

    async def aclose(self) -> None:
        for http in self._http:
            await http.aclose()
        self._http.clear()
        self._clients.clear()

    async def __aenter__(self) -> PartnerClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
