"""Imaging Document Source back ends of the imaging retrieve responder: archives.

One back end per configured repository: :class:`ArchiveImagingSource` serves
an archive imagebridge reaches itself (folder, DICOMweb, DIMSE), choosing a
stored representation by transfer syntax (small folder files are read in
batches, :mod:`.folder_batches`);
:class:`~imagebridge.actors.responding.remote_source.RemoteImagingSource`
forwards to a remote Imaging Document Source with Retrieve Imaging Document
Set [RAD-69] (an XDS-I.b community behind this gateway).

Both produce, per requested instance, either a
:class:`~imagebridge.actors.responding.retrieved.RetrievedInstance` whose bytes
are ready to stream (an opened file, a spool file or a received MIME part;
never a whole study in memory) or a :class:`RegistryError`.  A source that
fails while an instance is being fetched yields an error for that instance,
never half an instance.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import BinaryIO, cast

import anyio.to_thread

from imagebridge.actors.responding.folder_batches import FolderBatches
from imagebridge.actors.responding.retrieved import (
    Cleanup,
    InstanceBody,
    RetrievedInstance,
    RetrieveOutcome,
    fetch_error,
    held,
)
from imagebridge.actors.responding.retrieved import error as _error
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
from imagebridge.errors import ImageBridgeError
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.index import InstanceLocation
from imagebridge.sources.base import ImageSource
from imagebridge.sources.dicomweb import DicomWebSource
from imagebridge.sources.folder import FolderSource
from imagebridge.store import Store
from imagebridge.wire.xds import vocabulary as v

log = logging.getLogger(__name__)

SPOOL_IN_MEMORY = 1024 * 1024
LOOKUP_BATCH = 200
PACS_PARALLEL = 4
SERIES_BULK_MIN = 4
"""From this many requested instances of one series, a DICOMweb archive may be asked once."""
SERIES_BULK_SHARE = 0.5
"""... and only when they are at least this share of the series (as indexed): a request
for a few instances of a large series fetches them one by one, not the whole series."""
_SERIES_SIZES_KEPT = 64


def _by_series(
    locators: Sequence[ImagingDocumentLocator],
) -> dict[tuple[str, str], list[ImagingDocumentLocator]]:
    groups: dict[tuple[str, str], list[ImagingDocumentLocator]] = {}
    for loc in locators:
        groups.setdefault((loc.study_instance_uid, loc.series_instance_uid), []).append(loc)
    return groups


def _spool() -> BinaryIO:
    """A temporary file kept in memory up to 1 MiB (one instance at a time)."""
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY))


def _transfer_syntax_of(spool: BinaryIO) -> str:
    spool.seek(0)
    return stored_transfer_syntax(spool)


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
        self._folder = (
            FolderBatches(source, self._decodable, location, self._one)
            if isinstance(source, FolderSource)
            else None
        )
        self._series_sizes: dict[tuple[str, str], Counter[str]] = {}

    async def retrieve(
        self, locators: Sequence[ImagingDocumentLocator], transfer_syntaxes: Sequence[str]
    ) -> AsyncIterator[RetrieveOutcome]:
        repo = self._source.repository_unique_id
        if isinstance(self._source, DicomWebSource):
            # A series asked for in bulk is fetched once, whatever the lookup batches.
            singles: list[ImagingDocumentLocator] = []
            for (study, series), group in _by_series(locators).items():
                if len(group) >= SERIES_BULK_MIN and await self._mostly(study, series, len(group)):
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
            if self._folder is not None:
                async for outcome in self._folder.outcomes(batch, found, transfer_syntaxes):
                    yield outcome
                continue
            singles = list(batch)
            # A PACS answers one instance per request: keep a few requests in flight.
            for window in range(0, len(singles), PACS_PARALLEL):
                chunk = singles[window : window + PACS_PARALLEL]
                for result in await self._several(chunk, found, transfer_syntaxes):
                    yield result

    async def _mostly(self, study: str, series: str, requested: int) -> bool:
        """True when *requested* instances are most of the series (or its size is unknown)."""
        size = await anyio.to_thread.run_sync(self._series_size, study, series)
        return size is None or requested >= SERIES_BULK_SHARE * size

    def _series_size(self, study: str, series: str) -> int | None:
        """Instances the index holds for one series of this repository (None: study unknown)."""
        repo = self._source.repository_unique_id
        record = self._store.study(study, repo)
        if record is None:
            return None
        if record.number_of_series <= 1:
            return record.number_of_instances
        key = (study, record.fingerprint)
        sizes = self._series_sizes.get(key)
        if sizes is None:
            sizes = Counter(
                h.series.series_instance_uid for h in self._store.study_instances(study, repo)
            )
            if len(self._series_sizes) >= _SERIES_SIZES_KEPT:
                self._series_sizes.pop(next(iter(self._series_sizes)))
            self._series_sizes[key] = sizes
        return sizes.get(series, 0)

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
            # Closed (the response with it) as soon as every requested instance arrived.
            async with aclosing(self._source.read_series(study, series)) as parts:
                async for sop, syntax, body in parts:
                    locator = wanted.pop(sop, None)
                    if locator is None:
                        if not isinstance(body, bytes):
                            body.close()  # an instance of the series nobody asked for
                        continue
                    spool = io.BytesIO(body) if isinstance(body, bytes) else body
                    yield await self._decided(locator, syntax, spool, transfer_syntaxes)
                    if not wanted:
                        break
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
        candidates = held(locator, locations)
        if not candidates:
            return _error(
                v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                f"SOP Instance {locator.sop_instance_uid} of series "
                f"{locator.series_instance_uid} is not held by repository {repo}",
                self._location,
            )
        stored = [loc.transfer_syntax_uid for loc in candidates]
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
                    loc for loc in candidates if loc.transfer_syntax_uid == choice.transfer_syntax
                )
                body = await self._fetch(locator, chosen)
                return RetrievedInstance(locator, choice.transfer_syntax, body)
            if isinstance(choice, Transcode):
                source = next(loc for loc in candidates if loc.transfer_syntax_uid == choice.source)
                spool = await self._spooled(locator, source)
                return await self._transcoded(locator, spool, choice.target)
            # FetchAndDecide: the archive did not say how it stores the instance.
            spool = await self._spooled(locator, candidates[0])
            actual = await anyio.to_thread.run_sync(_transfer_syntax_of, spool)
            return await self._decided(locator, actual, spool, transfer_syntaxes)
        except ImageBridgeError as exc:
            return fetch_error(locator, exc, repo, self._location)

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


def home_location(home: HomeCommunityId | None, repository: str) -> str:
    """RegistryError ``location``: our homeCommunityId (RAD-75) or the repository (RAD-69)."""
    return home.urn if home is not None else repository
