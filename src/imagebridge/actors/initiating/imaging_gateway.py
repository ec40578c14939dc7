"""Retrieve Imaging Document Set [RAD-69], Initiating Imaging Gateway: a local consumer's
request split by community into Cross Gateway Retrieve Imaging Document Set [RAD-75].

Every DocumentRequest names its community (HomeCommunityId).  The instances
are grouped by community; each community found in the directory with a
RAD-75 endpoint is sent one RAD-75 (several when its
``max_documents_per_retrieve`` is smaller than its share), all communities
concurrently, each exchange bounded by that community's timeouts
(:class:`~imagebridge.actors.initiating.client.PartnerClient`).  The answers
are relayed as MTOM parts while the other communities are still answering;
the SOAP envelope comes last with the merged status (Success /
PartialSuccess / Failure) and every RegistryError.

Errors, all per instance and in-band (the spec digest, section 4.1):

* no HomeCommunityId: ``XDSMissingHomeCommunityId``;
* a community not in the directory, inactive, or without a RAD-75 endpoint:
  ``XDSUnknownCommunity``, and nothing is sent to it;
* a community that fails (connection refused, SOAP Fault, malformed or
  truncated reply, timeout): ``XDSUnavailableCommunity`` for that exchange's
  instances only; the other communities are still served;
* a RAD-75 reply's own RegistryErrors are relayed unchanged.

``location``: an error relayed from a Responding Imaging Gateway keeps the
location it gave (RAD75-004: its homeCommunityId); an error made here names
the community concerned (the failing or unknown one), or this gateway's own
homeCommunityId when the request names no community.  The SOP Instance UID is
always in ``codeContext`` (RAD-69 wants it as location, RAD-75 the
community: one attribute for two values, as in ITI-39).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import anyio
import httpx
from anyio.streams.memory import MemoryObjectSendStream

from imagebridge.actors.initiating.batching import split_imaging_request
from imagebridge.actors.initiating.client import PartnerClient, RetrieveResult
from imagebridge.actors.responding.retrieved import InstanceBody
from imagebridge.errors import ImageBridgeError, RetrieveInvalidUid
from imagebridge.model.directory import Community, DirectorySnapshot
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.retrieve import (
    DocumentResponse,
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
    XopInclude,
    imaging_request_for,
)
from imagebridge.transactions import Transaction
from imagebridge.transport.faults import registry_error
from imagebridge.transport.messages import SoapRequest, StreamedReply
from imagebridge.wire.mtom import Attachment
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import parse_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import render_retrieve_document_set_response
from imagebridge.wire.xml import Element

log = logging.getLogger(__name__)

DirectorySource = Callable[[], DirectorySnapshot]
"""The directory as it is now (read once per request, so a refreshed one is used)."""

_OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ImagingGatewaySettings:
    """Identity and limits of the Initiating Imaging Gateway."""

    home: HomeCommunityId
    max_document_requests: int = 10_000
    channel_buffer: int = 4


@dataclass(slots=True)
class _CommunityShare:
    """The instances of one request that go to one community, in request order."""

    community: Community
    locators: list[ImagingDocumentLocator] = field(default_factory=list)


def _error(
    code: str, context: str, location: str, severity: Severity = Severity.ERROR
) -> RegistryError:
    return RegistryError(code, context, severity, location)


@dataclass(slots=True)
class _Relay:
    """State of one RAD-69 while the communities answer and the reply streams."""

    partner_for: Callable[[Community], PartnerClient]
    transfer_syntaxes: tuple[str, ...]
    shares: list[_CommunityShare]
    errors: list[RegistryError]
    documents: list[DocumentResponse] = field(default_factory=list)
    bodies: list[InstanceBody] = field(default_factory=list)
    results: list[RetrieveResult] = field(default_factory=list)

    async def produce(self, sender: MemoryObjectSendStream[Attachment]) -> None:
        async with anyio.create_task_group() as tasks:
            for share in self.shares:
                tasks.start_soon(self._serve, share, sender.clone())

    async def _serve(
        self, share: _CommunityShare, sender: MemoryObjectSendStream[Attachment]
    ) -> None:
        """Send the community its RAD-75 request(s), one after the other, relaying each answer."""
        partner = self.partner_for(share.community)
        hcid = share.community.home_community_id
        request = imaging_request_for(share.locators, hcid, self.transfer_syntaxes)
        limit = share.community.limits.max_documents_per_retrieve
        async with sender:
            try:
                for batch in split_imaging_request(request, limit):
                    try:
                        result = await partner.retrieve_images(batch)
                    except (ImageBridgeError, httpx.HTTPError) as exc:
                        why = exc.message if isinstance(exc, ImageBridgeError) else repr(exc)
                        log.warning("RAD-75 to %s failed: %s", hcid.urn, why)
                        self.errors.extend(self._unavailable(hcid, batch, why))
                        continue
                    self.results.append(result)
                    await self._relay(hcid, batch, result, sender)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.info("IIG: the consumer went away; stopping community %s", hcid.urn)

    @staticmethod
    def _unavailable(
        hcid: HomeCommunityId, batch: RetrieveImagingDocumentSetRequest, why: str
    ) -> list[RegistryError]:
        # A SOAP Fault, a malformed reply and a timeout all mean: no usable answer.
        return [
            _error(
                v.XDS_UNAVAILABLE_COMMUNITY,
                f"SOP Instance {d.document_unique_id}: community {hcid.urn} gave no usable "
                f"RAD-75 answer ({why})",
                hcid.urn,
            )
            for d in batch.document_requests
        ]

    async def _relay(
        self,
        hcid: HomeCommunityId,
        batch: RetrieveImagingDocumentSetRequest,
        result: RetrieveResult,
        sender: MemoryObjectSendStream[Attachment],
    ) -> None:
        wanted: dict[str, list[str]] = {}
        for d in batch.document_requests:
            wanted.setdefault(d.document_unique_id, []).append(d.repository_unique_id)
        for received in result.documents:
            doc = received.response
            repositories = wanted.get(doc.document_unique_id)
            if not repositories:
                continue  # returned twice: the first copy was relayed
            repo = (
                doc.repository_unique_id
                if doc.repository_unique_id in repositories
                else repositories[0]
            )
            repositories.remove(repo)
            await sender.send(
                self._attachment(hcid, repo, doc, InstanceBody(spool=received.open()))
            )
        for error in result.errors:
            self.errors.append(error if error.location else replace(error, location=hcid.urn))
        missing = [uid for uid, repos in wanted.items() for _ in repos]
        if missing and not any(e.severity is Severity.ERROR for e in result.errors):
            self.errors.extend(
                _error(
                    v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                    f"SOP Instance {uid} was neither returned nor reported by community {hcid.urn}",
                    hcid.urn,
                )
                for uid in missing
            )

    def _attachment(
        self, hcid: HomeCommunityId, repo: str, doc: DocumentResponse, body: InstanceBody
    ) -> Attachment:
        self.bodies.append(body)
        cid = f"i{len(self.documents)}.{doc.document_unique_id}@imagebridge"
        self.documents.append(
            DocumentResponse(
                repository_unique_id=repo,
                document_unique_id=doc.document_unique_id,
                mime_type=doc.mime_type,
                document=XopInclude.for_content_id(cid),
                home_community_id=hcid,
            )
        )
        try:
            return Attachment(cid, doc.mime_type, body)
        except ValueError:  # a mimeType that cannot be a MIME header value
            return Attachment(cid, _OCTET_STREAM, body)

    async def payload(self) -> Element:
        response = RetrieveDocumentSetResponse.consolidated(self.documents, self.errors)
        log.info(
            "IIG: %d instance(s) relayed from %d community(ies), %d error(s)",
            len(self.documents),
            len(self.shares),
            len(self.errors),
        )
        return render_retrieve_document_set_response(response)

    async def close(self) -> None:
        # Parts received but never sent (consumer gone) still hold spool files.
        for body in self.bodies:
            await body.aclose()
        for result in self.results:
            result.close()


class InitiatingImagingGateway:
    """RAD-69 in from a local Imaging Document Consumer, RAD-75 out to each community."""

    def __init__(
        self,
        directory: DirectorySource,
        partner_for: Callable[[Community], PartnerClient],
        settings: ImagingGatewaySettings,
    ) -> None:
        """*partner_for* gives the client for a community (its TLS settings and limits)."""
        self._directory = directory
        self._partner_for = partner_for
        self._settings = settings

    async def handle(self, request: SoapRequest) -> StreamedReply:
        """SOAP handler: decode, split by community, relay the answers with a root-last reply."""
        relay = self.plan(request.payload)
        return StreamedReply(
            produce=relay.produce,
            payload=relay.payload,
            close=relay.close,
            buffer=self._settings.channel_buffer,
        )

    def plan(self, payload: Element) -> _Relay:
        """Check every DocumentRequest and group the forwardable ones by community."""
        home = self._settings.home
        try:
            request = parse_retrieve_imaging_document_set_request(
                payload, max_document_requests=self._settings.max_document_requests
            )
        except RetrieveInvalidUid as exc:
            error = registry_error(exc, home.urn, default_code=v.XDS_REPOSITORY_ERROR)
            return _Relay(self._partner_for, (), [], [error])
        directory = self._directory()
        routes: dict[HomeCommunityId, _CommunityShare | None] = {}
        errors: list[RegistryError] = []
        seen: set[tuple[HomeCommunityId, str, str]] = set()
        for study in request.study_requests:
            for series in study.series_requests:
                for doc in series.document_requests:
                    hcid, repo = doc.home_community_id, doc.repository_unique_id
                    sop = doc.document_unique_id
                    if hcid is None:
                        errors.append(
                            _error(
                                v.XDS_MISSING_HOME_COMMUNITY_ID,
                                f"DocumentRequest for SOP Instance {sop} has no HomeCommunityId",
                                home.urn,
                            )
                        )
                        continue
                    if (hcid, repo, sop) in seen:
                        errors.append(
                            _error(
                                v.XDS_REPOSITORY_ERROR,
                                f"SOP Instance {sop} was requested more than once; sent once",
                                hcid.urn,
                                Severity.WARNING,
                            )
                        )
                        continue
                    seen.add((hcid, repo, sop))
                    if hcid not in routes:
                        routes[hcid] = self._route(directory, hcid)
                    share = routes[hcid]
                    if share is None:
                        errors.append(self._unknown(hcid, sop))
                        continue
                    share.locators.append(
                        ImagingDocumentLocator(
                            repo, study.study_instance_uid, series.series_instance_uid, sop
                        )
                    )
        shares = [s for s in routes.values() if s is not None]
        log.info(
            "IIG: RAD-69 with %d instance(s) for %d community(ies)",
            len(request.document_requests),
            len(routes),
        )
        return _Relay(self._partner_for, request.transfer_syntax_uids, shares, errors)

    @staticmethod
    def _route(directory: DirectorySnapshot, hcid: HomeCommunityId) -> _CommunityShare | None:
        community = directory.get(hcid)
        if community is None or community.url(Transaction.RAD_75) is None:
            return None
        return _CommunityShare(community)

    def _unknown(self, hcid: HomeCommunityId, sop: str) -> RegistryError:
        why = (
            "is this gateway's own community (local images are served at /ids/retrieve)"
            if hcid == self._settings.home
            else "is not a community this gateway can send RAD-75 to"
        )
        return _error(
            v.XDS_UNKNOWN_COMMUNITY,
            f"SOP Instance {sop}: HomeCommunityId {hcid.urn} {why}",
            hcid.urn,
        )
