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

import io
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

import anyio.to_thread

from imagebridge.dicom.headers import stored_transfer_syntax
from imagebridge.dicom.transcode import (
    Impossible,
    SendStored,
    Transcode,
    choose_representation,
    decide_after_fetch,
    installed_decoders,
    transcode,
)
from imagebridge.errors import ImageBridgeError, InstanceNotFound, SoapFaultReceived
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.index import InstanceLocation
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.retrieve import XopInclude, imaging_request_for
from imagebridge.sources.base import ImageSource
from imagebridge.sources.dicomweb import DicomWebSource
from imagebridge.sources.folder import WHOLE_READ_LIMIT, FolderSource
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
LOOKUP_BATCH = 200
PACS_PARALLEL = 4
SERIES_BULK_MIN = 4
"""From this many requested instances of one series, a DICOMweb archive is asked once."""
READ_AHEAD = 4 * 1024 * 1024
"""Small folder files are read together, up to about this many bytes per thread trip."""


@dataclass(slots=True)
class RetrievedInstance:
    """One instance ready to be sent: its identity, transfer syntax and body chunks."""

    locator: ImagingDocumentLocator
    transfer_syntax_uid: str
    body: InstanceBody


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


def _by_series(
    locators: Sequence[ImagingDocumentLocator],
) -> dict[tuple[str, str], list[ImagingDocumentLocator]]:
    groups: dict[tuple[str, str], list[ImagingDocumentLocator]] = {}
    for loc in locators:
        groups.setdefault((loc.study_instance_uid, loc.series_instance_uid), []).append(loc)
    return groups


def _held(
    locator: ImagingDocumentLocator, locations: Sequence[InstanceLocation]
) -> list[InstanceLocation]:
    """The representations that belong to the requested study and series."""
    return [
        loc
        for loc in locations
        if loc.study_instance_uid == locator.study_instance_uid
        and loc.series_instance_uid == locator.series_instance_uid
    ]


def _spool() -> BinaryIO:
    """A temporary file kept in memory up to 1 MiB (one instance at a time)."""
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY))


def _transfer_syntax_of(spool: BinaryIO) -> str:
    spool.seek(0)
    return stored_transfer_syntax(spool)


def _error(code: str, context: str, location: str) -> RegistryError:
    return RegistryError(code, context, Severity.ERROR, location)


class InstanceBody:
    """The bytes of one instance ready to send: async chunks plus an explicit release.

    Unlike a plain async generator, :meth:`aclose` releases the resource even
    if iteration never started (a reply whose client hung up before this part
    was sent), so spool files and open archive files never outlive a request.
    """

    def __init__(
        self,
        first: bytes = b"",
        *,
        spool: BinaryIO | None = None,
        rest: AsyncIterator[bytes] | None = None,
        chunks: Iterator[bytes] | None = None,
    ) -> None:
        self._first = first
        self._spool = spool
        self._rest = rest
        self._chunks = chunks
        self._rewound = False

    def __aiter__(self) -> InstanceBody:
        return self

    async def __anext__(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        if self._spool is not None:
            if not self._rewound:
                self._spool.seek(0)
                self._rewound = True
            chunk = await anyio.to_thread.run_sync(self._spool.read, CHUNK)
            if chunk:
                return chunk
        elif self._rest is not None:
            chunk = await anext(self._rest, b"")
            if chunk:
                return chunk
        elif self._chunks is not None:
            chunk = next(self._chunks, b"")
            if chunk:
                return chunk
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Release the spool, the open file or the part reader (idempotent)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._rest is not None:
            rest, self._rest = self._rest, None
            closer = getattr(rest, "aclose", None)
            if closer is not None:
                await closer()
        if self._chunks is not None:
            chunks, self._chunks = self._chunks, None
            closer_sync = getattr(chunks, "close", None)
            if closer_sync is not None:
                closer_sync()
        self._first = b""


class ArchiveImagingSource:
    """Imaging Document Source [RAD-69] role for an archive imagebridge reads itself."""

    def __init__(
        self,
        source: ImageSource,
        store: Store,
        location: str,
        cleanup: Cleanup | None = None,
        *,
        decodable: frozenset[str] | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self._location = location
        self._cleanup = cleanup or Cleanup()
        self._decodable = decodable if decodable is not None else installed_decoders()

    async def retrieve(
        self, locators: Sequence[ImagingDocumentLocator], transfer_syntaxes: Sequence[str]
    ) -> AsyncIterator[RetrieveOutcome]:
        repo = self._source.repository_unique_id
        if isinstance(self._source, DicomWebSource):
            # A series asked for in bulk is fetched once, whatever the lookup batches.
            singles: list[ImagingDocumentLocator] = []
            for (study, series), group in _by_series(locators).items():
                if len(group) >= SERIES_BULK_MIN:
                    async for outcome in self._series(study, series, group, transfer_syntaxes):
                        yield outcome
                else:
                    singles.extend(group)
            locators = singles
        for start in range(0, len(locators), LOOKUP_BATCH):
            batch = locators[start : start + LOOKUP_BATCH]
            found = await anyio.to_thread.run_sync(
                self._store.instance_locations_many, [loc.sop_instance_uid for loc in batch], repo
            )
            if isinstance(self._source, FolderSource):
                async for outcome in self._folder(self._source, batch, found, transfer_syntaxes):
                    yield outcome
                continue
            singles = list(batch)
            # A PACS answers one instance per request: keep a few requests in flight.
            for window in range(0, len(singles), PACS_PARALLEL):
                chunk = singles[window : window + PACS_PARALLEL]
                for result in await self._several(chunk, found, transfer_syntaxes):
                    yield result

    async def _folder(
        self,
        source: FolderSource,
        locators: Sequence[ImagingDocumentLocator],
        found: dict[str, list[InstanceLocation]],
        transfer_syntaxes: Sequence[str],
    ) -> AsyncIterator[RetrieveOutcome]:
        """Instances of a folder: small files sent as stored are read several per thread trip."""
        pending: list[tuple[ImagingDocumentLocator, InstanceLocation, str]] = []
        size = 0
        for locator in locators:
            locations = found.get(locator.sop_instance_uid, [])
            stored = self._stored_small(locator, locations, transfer_syntaxes)
            if stored is None:
                yield await self._one(locator, locations, transfer_syntaxes)
                continue
            pending.append((locator, *stored))
            size += stored[0].file_size or 0
            if size >= READ_AHEAD or len(pending) >= LOOKUP_BATCH:
                for outcome in await self._read_pending(source, pending):
                    yield outcome
                pending, size = [], 0
        for outcome in await self._read_pending(source, pending):
            yield outcome

    def _stored_small(
        self,
        locator: ImagingDocumentLocator,
        locations: Sequence[InstanceLocation],
        transfer_syntaxes: Sequence[str],
    ) -> tuple[InstanceLocation, str] | None:
        """The small file to send as stored, or None when :meth:`_one` must decide."""
        held = _held(locator, locations)
        if not held:
            return None
        choice = choose_representation(
            [loc.transfer_syntax_uid for loc in held],
            transfer_syntaxes,
            decodable=self._decodable,
            sop_instance_uid=locator.sop_instance_uid,
        )
        if not isinstance(choice, SendStored):
            return None
        chosen = next(loc for loc in held if loc.transfer_syntax_uid == choice.transfer_syntax)
        if chosen.file_size is None or chosen.file_size > WHOLE_READ_LIMIT:
            return None
        return chosen, choice.transfer_syntax

    async def _read_pending(
        self,
        source: FolderSource,
        pending: Sequence[tuple[ImagingDocumentLocator, InstanceLocation, str]],
    ) -> list[RetrieveOutcome]:
        if not pending:
            return []
        read = await source.read_whole([location for _, location, _ in pending])
        outcomes: list[RetrieveOutcome] = []
        for (locator, _, syntax), data in zip(pending, read, strict=True):
            if isinstance(data, bytes):
                outcomes.append(RetrievedInstance(locator, syntax, InstanceBody(data)))
            else:
                outcomes.append(self._fetch_error(locator, data))
        return outcomes

    def _fetch_error(self, locator: ImagingDocumentLocator, exc: ImageBridgeError) -> RegistryError:
        log.info("instance fetch failed in %s: %s", self._source.repository_unique_id, exc.message)
        code = (
            v.XDS_DOCUMENT_UNIQUE_ID_ERROR
            if isinstance(exc, InstanceNotFound)
            # An archive failing during a retrieve is a repository error here.
            else v.XDS_REPOSITORY_ERROR
        )
        return _error(
            code, f"SOP Instance {locator.sop_instance_uid}: {exc.message}", self._location
        )

    async def _series(
        self,
        study: str,
        series: str,
        locators: Sequence[ImagingDocumentLocator],
        transfer_syntaxes: Sequence[str],
    ) -> AsyncIterator[RetrieveOutcome]:
        """One WADO-RS series retrieve for many requested instances of that series."""
        if not isinstance(self._source, DicomWebSource):
            return
        wanted = {loc.sop_instance_uid: loc for loc in locators}
        try:
            async for sop, syntax, body in self._source.read_series(study, series):
                locator = wanted.pop(sop, None)
                if locator is None:
                    if not isinstance(body, bytes):
                        body.close()  # an instance of the series nobody asked for
                    continue
                spool = io.BytesIO(body) if isinstance(body, bytes) else body
                yield await self._decided(locator, syntax, spool, transfer_syntaxes)
        except ImageBridgeError as exc:
            log.info(
                "series retrieve failed in %s: %s", self._source.repository_unique_id, exc.message
            )
            for locator in wanted.values():
                yield _error(
                    v.XDS_REPOSITORY_ERROR,
                    f"SOP Instance {locator.sop_instance_uid}: {exc.message}",
                    self._location,
                )
            return
        for locator in wanted.values():
            yield _error(
                v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                f"SOP Instance {locator.sop_instance_uid} of series {series} is not held by "
                f"repository {self._source.repository_unique_id}",
                self._location,
            )

    async def _decided(
        self,
        locator: ImagingDocumentLocator,
        actual: str,
        spool: BinaryIO,
        transfer_syntaxes: Sequence[str],
    ) -> RetrieveOutcome:
        """Send, transcode or refuse a fetched instance now that its real syntax is known."""
        decided = decide_after_fetch(
            actual,
            transfer_syntaxes,
            decodable=self._decodable,
            sop_instance_uid=locator.sop_instance_uid,
        )
        if isinstance(decided, Impossible):
            spool.close()
            return _error(decided.error_code, decided.code_context, self._location)
        if isinstance(decided, Transcode):
            try:
                return await self._transcoded(locator, spool, decided.target)
            except ImageBridgeError as exc:
                return _error(
                    exc.xds_error_code or v.XDS_REPOSITORY_ERROR,
                    f"SOP Instance {locator.sop_instance_uid}: {exc.message}",
                    self._location,
                )
        if isinstance(spool, io.BytesIO):  # received whole in memory: send it as it is
            return RetrievedInstance(
                locator, decided.transfer_syntax, InstanceBody(spool.getvalue())
            )
        return RetrievedInstance(locator, decided.transfer_syntax, InstanceBody(spool=spool))

    async def _several(
        self,
        locators: Sequence[ImagingDocumentLocator],
        found: dict[str, list[InstanceLocation]],
        transfer_syntaxes: Sequence[str],
    ) -> list[RetrieveOutcome]:
        """Fetch *locators* concurrently (no yield happens inside the task group)."""
        results: list[RetrieveOutcome | None] = [None] * len(locators)

        async def fetch(i: int, loc: ImagingDocumentLocator) -> None:
            locations = found.get(loc.sop_instance_uid, [])
            results[i] = await self._one(loc, locations, transfer_syntaxes)

        async with anyio.create_task_group() as tasks:
            for i, loc in enumerate(locators):
                tasks.start_soon(fetch, i, loc)
        return [r for r in results if r is not None]

    async def _one(
        self,
        locator: ImagingDocumentLocator,
        locations: Sequence[InstanceLocation],
        transfer_syntaxes: Sequence[str],
    ) -> RetrieveOutcome:
        repo = self._source.repository_unique_id
        held = _held(locator, locations)
        if not held:
            return _error(
                v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                f"SOP Instance {locator.sop_instance_uid} of series "
                f"{locator.series_instance_uid} is not held by repository {repo}",
                self._location,
            )
        stored = [loc.transfer_syntax_uid for loc in held]
        choice = choose_representation(
            stored,
            transfer_syntaxes,
            decodable=self._decodable,
            sop_instance_uid=locator.sop_instance_uid,
        )
        if isinstance(choice, Impossible):
            return _error(choice.error_code, choice.code_context, self._location)
        try:
            if isinstance(choice, SendStored):
                chosen = next(
                    loc for loc in held if loc.transfer_syntax_uid == choice.transfer_syntax
                )
                body = await self._fetch(locator, chosen)
                return RetrievedInstance(locator, choice.transfer_syntax, body)
            if isinstance(choice, Transcode):
                source = next(loc for loc in held if loc.transfer_syntax_uid == choice.source)
                spool = await self._spooled(locator, source)
                return await self._transcoded(locator, spool, choice.target)
            # FetchAndDecide: the archive did not say how it stores the instance.
            spool = await self._spooled(locator, held[0])
            actual = await anyio.to_thread.run_sync(_transfer_syntax_of, spool)
            return await self._decided(locator, actual, spool, transfer_syntaxes)
        except ImageBridgeError as exc:
            return self._fetch_error(locator, exc)

    async def _transcoded(
        self, locator: ImagingDocumentLocator, spool: BinaryIO, target: str
    ) -> RetrievedInstance:
        out: BinaryIO = _spool()
        try:
            spool.seek(0)
            await anyio.to_thread.run_sync(transcode, spool, target, out)
        except BaseException:
            out.close()
            raise
        finally:
            spool.close()
        return RetrievedInstance(locator, target, InstanceBody(spool=out))

    async def _spooled(
        self, locator: ImagingDocumentLocator, location: InstanceLocation
    ) -> BinaryIO:
        spool: BinaryIO = _spool()
        try:
            async for chunk in self._read(locator, location):
                if spool.tell() + len(chunk) <= SPOOL_IN_MEMORY:
                    spool.write(chunk)  # still in memory: no blocking I/O
                else:
                    await anyio.to_thread.run_sync(spool.write, chunk)
        except BaseException:
            spool.close()
            raise
        return spool

    async def _fetch(
        self, locator: ImagingDocumentLocator, location: InstanceLocation
    ) -> InstanceBody:
        if isinstance(self._source, FolderSource):
            # The first chunk opens the file (small files: reads it whole); the rest
            # streams from disk.
            stream = self._read(locator, location)
            first = await anext(stream, b"")
            return InstanceBody(first, rest=stream)
        # A PACS may fail half way through: spool the instance first, then send it.
        return InstanceBody(spool=await self._spooled(locator, location))

    def _read(
        self, locator: ImagingDocumentLocator, location: InstanceLocation
    ) -> AsyncIterator[bytes]:
        if isinstance(self._source, FolderSource):
            return self._source.read_location(location)
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
                body = InstanceBody(chunks=part.chunks(CHUNK))
            else:
                body = InstanceBody(document.document)
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
