"""Cross Gateway Retrieve Imaging Document Set [RAD-75], Responding Imaging Gateway,
and Retrieve Imaging Document Set [RAD-69], Imaging Document Source.

The requested instances are grouped by RepositoryUniqueId; every repository
is served by its back end (:mod:`imaging_sources`) concurrently, and the
instances are streamed as MTOM parts while the others are still being
fetched.  The SOAP envelope comes last, with the consolidated status
(Success / PartialSuccess / Failure) and one RegistryError per instance,
study or repository that could not be served; so a failure found while
streaming is reported, never hidden in a truncated body.

RAD-75 checks each DocumentRequest's HomeCommunityId (missing:
``XDSMissingHomeCommunityId``; another community: ``XDSUnknownCommunity``);
an unknown repository fails its instances with ``XDSUnknownRepositoryId``
without contacting anything.  An instance requested twice is sent once, with
a warning.  Empty or malformed UIDs fail the whole request in-band.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from imagebridge.actors.responding.retrieved import (
    Cleanup,
    ImagingSourceBackend,
    InstanceBody,
    RetrievedInstance,
)
from imagebridge.errors import RetrieveInvalidUid
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.retrieve import (
    DocumentResponse,
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
    XopInclude,
)
from imagebridge.transport.faults import registry_error
from imagebridge.transport.messages import SoapRequest, StreamedReply
from imagebridge.wire.mtom import Attachment
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import parse_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve_writer import RetrieveResponseWriter
from imagebridge.wire.xml import Element

log = logging.getLogger(__name__)

BackendFactory = Callable[[Cleanup], ImagingSourceBackend]


@dataclass(frozen=True, slots=True)
class ImagingRetrieveSettings:
    """Limits and identity of the imaging retrieve responder."""

    home: HomeCommunityId
    cross_gateway: bool
    """True for RAD-75 (HomeCommunityId checked and echoed), False for RAD-69."""
    max_document_requests: int = 10_000
    channel_buffer: int = 4


@dataclass(slots=True)
class _Retrieval:
    """State of one request while it streams."""

    settings: ImagingRetrieveSettings
    request: RetrieveImagingDocumentSetRequest | None
    backends: dict[str, ImagingSourceBackend]
    groups: dict[str, list[ImagingDocumentLocator]]
    errors: list[RegistryError]
    cleanup: Cleanup
    documents: list[DocumentResponse] = field(default_factory=list)
    bodies: list[InstanceBody] = field(default_factory=list)
    rendered: RetrieveResponseWriter = field(default_factory=RetrieveResponseWriter)
    """The DocumentResponse elements, rendered as their parts are sent."""

    @property
    def location(self) -> str:
        return self.settings.home.urn

    async def produce(self, sender: MemoryObjectSendStream[Attachment]) -> None:
        if self.request is None:
            return
        syntaxes = self.request.transfer_syntax_uids
        async with anyio.create_task_group() as tasks:
            for repo, locators in self.groups.items():
                tasks.start_soon(self._serve, repo, locators, syntaxes, sender.clone())

    async def _serve(
        self,
        repo: str,
        locators: list[ImagingDocumentLocator],
        syntaxes: tuple[str, ...],
        sender: MemoryObjectSendStream[Attachment],
    ) -> None:
        async with sender:
            try:
                async for outcome in self.backends[repo].retrieve(locators, syntaxes):
                    if isinstance(outcome, RegistryError):
                        self.errors.append(outcome)
                    else:
                        self.bodies.append(outcome.body)
                        await _send(sender, self._attachment(outcome))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.info("imaging retrieve: the client went away; stopping repository %s", repo)

    def _attachment(self, item: RetrievedInstance) -> Attachment:
        cid = f"i{len(self.documents)}.{item.locator.sop_instance_uid}@imagebridge"
        document = DocumentResponse(
            repository_unique_id=item.locator.repository_unique_id,
            document_unique_id=item.locator.sop_instance_uid,
            mime_type=v.MIME_DICOM,
            document=XopInclude.for_content_id(cid),
            home_community_id=self.settings.home if self.settings.cross_gateway else None,
        )
        attachment = Attachment(cid, v.MIME_DICOM, item.body)
        self.documents.append(document)
        self.rendered.add(document)  # while the parts stream, not all at the end
        return attachment

    async def payload(self) -> Element:
        response = RetrieveDocumentSetResponse.consolidated(self.documents, self.errors)
        log.info(
            "imaging retrieve: %d instance(s) sent, %d error(s)",
            len(self.documents),
            len(self.errors),
        )
        return self.rendered.finish(response.registry_response)

    async def close(self) -> None:
        # Parts fetched but never sent (client gone) still hold spools or open files.
        for body in self.bodies:
            await body.aclose()
        self.cleanup.run()


async def _send(sender: MemoryObjectSendStream[Attachment], attachment: Attachment) -> None:
    """Put *attachment* in the channel; wait (a checkpoint) only when it is full.

    ``send`` always yields to the event loop first; with room in the channel
    that is one loop round per part for nothing (the producer yields anyway
    at its next file read or when the channel fills).
    """
    try:
        sender.send_nowait(attachment)
    except anyio.WouldBlock:
        await sender.send(attachment)


class ImagingRetrieveResponder:
    """RAD-75 Responding Imaging Gateway, or RAD-69 Imaging Document Source."""

    def __init__(
        self, backends: Mapping[str, BackendFactory], settings: ImagingRetrieveSettings
    ) -> None:
        self._backends = dict(backends)
        self._settings = settings

    async def handle(self, request: SoapRequest) -> StreamedReply:
        """SOAP handler: decode, group, and stream the instances with a root-last reply."""
        retrieval = self.plan(request.payload)
        return StreamedReply(
            produce=retrieval.produce,
            payload=retrieval.payload,
            close=retrieval.close,
            buffer=self._settings.channel_buffer,
        )

    def plan(self, payload: Element) -> _Retrieval:
        """Check every DocumentRequest and group the servable ones by repository."""
        cleanup = Cleanup()
        home = self._settings.home
        try:
            request = parse_retrieve_imaging_document_set_request(
                payload, max_document_requests=self._settings.max_document_requests
            )
        except RetrieveInvalidUid as exc:
            error = registry_error(exc, home.urn, default_code=v.XDS_REPOSITORY_ERROR)
            return _Retrieval(self._settings, None, {}, {}, [error], cleanup)
        errors: list[RegistryError] = []
        groups: dict[str, list[ImagingDocumentLocator]] = {}
        seen: set[tuple[str, str]] = set()
        for study in request.study_requests:
            for series in study.series_requests:
                for doc in series.document_requests:
                    repo, sop = doc.repository_unique_id, doc.document_unique_id
                    problem = self._check(doc.home_community_id, repo, sop)
                    if problem is not None:
                        errors.append(problem)
                        continue
                    if (repo, sop) in seen:
                        errors.append(
                            RegistryError(
                                v.XDS_REPOSITORY_ERROR,
                                f"SOP Instance {sop} was requested more than once; sent once",
                                Severity.WARNING,
                                home.urn,
                            )
                        )
                        continue
                    seen.add((repo, sop))
                    groups.setdefault(repo, []).append(
                        ImagingDocumentLocator(
                            repo, study.study_instance_uid, series.series_instance_uid, sop
                        )
                    )
        backends = {repo: self._backends[repo](cleanup) for repo in groups}
        return _Retrieval(self._settings, request, backends, groups, errors, cleanup)

    def _check(self, home: HomeCommunityId | None, repo: str, sop: str) -> RegistryError | None:
        location = self._settings.home.urn
        if self._settings.cross_gateway:
            if home is None:
                return RegistryError(
                    v.XDS_MISSING_HOME_COMMUNITY_ID,
                    f"DocumentRequest for SOP Instance {sop} has no HomeCommunityId",
                    Severity.ERROR,
                    location,
                )
            if home != self._settings.home:
                return RegistryError(
                    v.XDS_UNKNOWN_COMMUNITY,
                    f"HomeCommunityId {home.urn} is not served by this gateway",
                    Severity.ERROR,
                    location,
                )
        if repo not in self._backends:
            return RegistryError(
                v.XDS_UNKNOWN_REPOSITORY_ID,
                f"RepositoryUniqueId {repo} is not known here (SOP Instance {sop})",
                Severity.ERROR,
                location,
            )
        return None
