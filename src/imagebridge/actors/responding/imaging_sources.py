"""Imaging Document Source back ends of the imaging retrieve responder.

One back end per configured repository: :class:`ArchiveImagingSource` serves
an archive imagebridge reaches itself (folder, DICOMweb, DIMSE), choosing a
stored representation by transfer syntax; :class:`RemoteImagingSource`
forwards to a remote Imaging Document Source with Retrieve Imaging Document
Set [RAD-69] (an XDS-I.b community behind this gateway).

Both produce, per requested instance, either a :class:`RetrievedInstance`
whose bytes are ready to stream (an opened file, a spool file or a received
MIME part; never a whole study in memory) or a :class:`RegistryError`.  A
source that fails while an instance is being fetched yields an error for that
instance, never half an instance.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

import anyio.to_thread

from imagebridge.errors import ImageBridgeError, InstanceNotFound, SoapFaultReceived
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.retrieve import XopInclude, imaging_request_for
from imagebridge.sources.base import ImageSource
from imagebridge.sources.folder import FolderSource
from imagebridge.store import Store
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.mtom import MtomPackage
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
SPOOL_IN_MEMORY = 1024 * 1024
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


@dataclass(slots=True)
class RetrievedInstance:
    """One instance ready to be sent: its identity, transfer syntax and body chunks."""

    locator: ImagingDocumentLocator
    transfer_syntax_uid: str
    body: AsyncIterator[bytes]


RetrieveOutcome = RetrievedInstance | RegistryError


class ImagingSourceBackend(Protocol):
    """A repository the imaging retrieve responder can serve."""

    def retrieve(
        self, locators: Sequence[ImagingDocumentLocator], transfer_syntaxes: Sequence[str]
    ) -> AsyncIterator[RetrieveOutcome]: ...


@dataclass(slots=True)
class Cleanup:
    """Things to release when a reply is finished (spool files, received packages)."""

    actions: list[Callable[[], None]] = field(default_factory=list)

    def add(self, action: Callable[[], None]) -> None:
        self.actions.append(action)

    def run(self) -> None:
        while self.actions:
            action = self.actions.pop()
            try:
                action()
            except OSError:
                log.debug("cleanup action failed", exc_info=True)


def _error(code: str, context: str, location: str) -> RegistryError:
    return RegistryError(code, context, Severity.ERROR, location)


async def _file_chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        spool.seek(0)
        while chunk := await anyio.to_thread.run_sync(spool.read, CHUNK):
            yield chunk
    finally:
        spool.close()


async def _iterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


class ArchiveImagingSource:
    """Imaging Document Source [RAD-69] role for an archive imagebridge reads itself."""

    def __init__(
        self, source: ImageSource, store: Store, location: str, cleanup: Cleanup | None = None
    ) -> None:
        self._source = source
        self._store = store
        self._location = location
        self._cleanup = cleanup or Cleanup()

    async def retrieve(
        self, locators: Sequence[ImagingDocumentLocator], transfer_syntaxes: Sequence[str]
    ) -> AsyncIterator[RetrieveOutcome]:
        for locator in locators:
            yield await self._one(locator, transfer_syntaxes)

    async def _one(
        self, locator: ImagingDocumentLocator, transfer_syntaxes: Sequence[str]
    ) -> RetrieveOutcome:
        repo = self._source.repository_unique_id
        locations = await anyio.to_thread.run_sync(
            lambda: self._store.instance_locations(locator.sop_instance_uid, repo)
        )
        held = [
            loc
            for loc in locations
            if loc.study_instance_uid == locator.study_instance_uid
            and loc.series_instance_uid == locator.series_instance_uid
        ]
        if not held:
            return _error(
                v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                f"SOP Instance {locator.sop_instance_uid} of series "
                f"{locator.series_instance_uid} is not held by repository {repo}",
                self._location,
            )
        stored = [loc.transfer_syntax_uid for loc in held]
        chosen = next((ts for ts in transfer_syntaxes if ts in stored), None)
        if chosen is None and not any(stored):
            chosen = ""  # the archive does not say: fetch and check what arrives
        if chosen is None:
            return _error(
                v.XDS_REPOSITORY_ERROR,
                f"SOP Instance {locator.sop_instance_uid} is stored as {', '.join(stored)}; "
                f"none of the requested transfer syntaxes ({', '.join(transfer_syntaxes)}) "
                "can be produced",
                self._location,
            )
        try:
            body = await self._fetch(locator, chosen or None)
        except ImageBridgeError as exc:
            log.info("instance fetch failed in %s: %s", repo, exc.message)
            code = (
                v.XDS_DOCUMENT_UNIQUE_ID_ERROR
                if isinstance(exc, InstanceNotFound)
                else v.XDS_REPOSITORY_ERROR
            )
            return _error(
                code, f"SOP Instance {locator.sop_instance_uid}: {exc.message}", self._location
            )
        return RetrievedInstance(locator, chosen, body)

    async def _fetch(
        self, locator: ImagingDocumentLocator, transfer_syntax: str | None
    ) -> AsyncIterator[bytes]:
        stream = self._read(locator, transfer_syntax)
        if isinstance(self._source, FolderSource):
            # The file is opened by the first chunk; from there it streams from disk.
            first = await anext(stream, b"")
            return _prepend(first, stream)
        # A PACS may fail half way through: spool the instance first, then send it.
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            async for chunk in stream:
                await anyio.to_thread.run_sync(spool.write, chunk)
        except BaseException:
            spool.close()
            raise
        return _file_chunks(spool)

    def _read(
        self, locator: ImagingDocumentLocator, transfer_syntax: str | None
    ) -> AsyncIterator[bytes]:
        if isinstance(self._source, FolderSource):
            return self._source.read_instance(
                locator.study_instance_uid,
                locator.series_instance_uid,
                locator.sop_instance_uid,
                transfer_syntax_uid=transfer_syntax,
            )
        return self._source.read_instance(
            locator.study_instance_uid, locator.series_instance_uid, locator.sop_instance_uid
        )


class RemoteImagingSource:
    """Forwards to a remote Imaging Document Source with RAD-69 and relays its answer."""

    def __init__(
        self,
        repository_unique_id: str,
        url: str,
        client: SoapClient,
        home: HomeCommunityId,
        cleanup: Cleanup,
    ) -> None:
        self._repository_unique_id = repository_unique_id
        self._url = url
        self._client = client
        self._home = home
        self._location = home.urn
        self._cleanup = cleanup

    async def retrieve(
        self, locators: Sequence[ImagingDocumentLocator], transfer_syntaxes: Sequence[str]
    ) -> AsyncIterator[RetrieveOutcome]:
        # The HomeCommunityId of the RAD-75 travels on (NIST's RIG tests compare it).
        request = imaging_request_for(locators, self._home, tuple(transfer_syntaxes))
        try:
            reply = await self._client.call(
                spec_of(Transaction.RAD_69),
                self._url,
                render_retrieve_imaging_document_set_request(request),
            )
        except (ImageBridgeError, SoapFaultReceived) as exc:
            log.warning("RAD-69 to %s failed: %s", self._repository_unique_id, exc.message)
            for locator in locators:
                yield _error(
                    v.XDS_REPOSITORY_ERROR,
                    f"SOP Instance {locator.sop_instance_uid}: Imaging Document Source "
                    f"{self._repository_unique_id} did not answer ({exc.message})",
                    self._location,
                )
            return
        package: MtomPackage = reply.package
        self._cleanup.add(package.close)
        try:
            response = parse_retrieve_document_set_response(reply.payload)
        except ImageBridgeError as exc:
            for locator in locators:
                yield _error(
                    v.XDS_REPOSITORY_ERROR,
                    f"SOP Instance {locator.sop_instance_uid}: "
                    f"unusable RAD-69 reply ({exc.message})",
                    self._location,
                )
            return
        wanted = {loc.sop_instance_uid: loc for loc in locators}
        for document in response.document_responses:
            found = wanted.pop(document.document_unique_id, None)
            if found is None:
                continue  # not asked for: ignore rather than pass on
            if isinstance(document.document, XopInclude):
                part = package.part_for_href(document.document.href)
                body: AsyncIterator[bytes] = _iterate(part.chunks(CHUNK))
            else:
                body = _iterate(iter((document.document,)))
            yield RetrievedInstance(found, "", body)
        for error in response.errors:
            yield RegistryError(
                error.error_code, error.code_context, error.severity, self._location
            )
        if wanted and not response.errors:
            for missing in wanted.values():
                yield _error(
                    v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                    f"SOP Instance {missing.sop_instance_uid} was not returned by "
                    f"Imaging Document Source {self._repository_unique_id}",
                    self._location,
                )


def home_location(home: HomeCommunityId | None, repository: str) -> str:
    """RegistryError ``location``: our homeCommunityId (RAD-75) or the repository (RAD-69)."""
    return home.urn if home is not None else repository
