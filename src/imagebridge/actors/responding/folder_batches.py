"""Folder archive instances for the imaging retrieve responder, read several per thread trip.

Most instances of a folder are small files sent as stored: they are read
whole, a few megabytes' worth per worker-thread trip, each with room in front
for its MTOM part header (:class:`~imagebridge.wire.chunks.FrontRoom`), so the
writer sends header and instance as one chunk.  An instance that is large,
must be transcoded or whose representation is not known is left to the
caller's one-by-one path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from imagebridge.actors.responding.retrieved import (
    InstanceBody,
    RetrievedInstance,
    RetrieveOutcome,
    fetch_error,
    held,
)
from imagebridge.dicom.transcode import SendStored, choose_representation
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.index import InstanceLocation
from imagebridge.sources.folder import WHOLE_READ_LIMIT, FolderSource
from imagebridge.wire.chunks import FrontRoom

READ_AHEAD = 4 * 1024 * 1024
"""Small folder files are read together, up to about this many bytes per thread trip."""
BATCH_MAX = 200
"""At most this many files per thread trip."""
PART_HEAD_ROOM = 512
"""Spare bytes before each file read whole: an MTOM part header fits (about 250 bytes)."""

OneByOne = Callable[
    [ImagingDocumentLocator, Sequence[InstanceLocation], Sequence[str]],
    Awaitable[RetrieveOutcome],
]
"""The caller's path for one instance: locator, its indexed locations, transfer syntaxes."""


class FolderBatches:
    """Serves requested instances of one folder source, small stored files in batches."""

    def __init__(
        self, source: FolderSource, decodable: frozenset[str], location: str, one: OneByOne
    ) -> None:
        self._source = source
        self._decodable = decodable
        self._location = location
        self._one = one

    async def outcomes(
        self,
        locators: Sequence[ImagingDocumentLocator],
        found: dict[str, list[InstanceLocation]],
        transfer_syntaxes: Sequence[str],
    ) -> AsyncIterator[RetrieveOutcome]:
        """One outcome per locator (a one-by-one instance may overtake pending small ones)."""
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
            if size >= READ_AHEAD or len(pending) >= BATCH_MAX:
                for outcome in await self._read(pending):
                    yield outcome
                pending, size = [], 0
        for outcome in await self._read(pending):
            yield outcome

    def _stored_small(
        self,
        locator: ImagingDocumentLocator,
        locations: Sequence[InstanceLocation],
        transfer_syntaxes: Sequence[str],
    ) -> tuple[InstanceLocation, str] | None:
        """The small file to send as stored, or None when the one-by-one path must decide."""
        candidates = held(locator, locations)
        if not candidates:
            return None
        choice = choose_representation(
            [loc.transfer_syntax_uid for loc in candidates],
            transfer_syntaxes,
            decodable=self._decodable,
            sop_instance_uid=locator.sop_instance_uid,
        )
        if not isinstance(choice, SendStored):
            return None
        chosen = next(
            loc for loc in candidates if loc.transfer_syntax_uid == choice.transfer_syntax
        )
        if chosen.file_size is None or chosen.file_size > WHOLE_READ_LIMIT:
            return None
        return chosen, choice.transfer_syntax

    async def _read(
        self, pending: Sequence[tuple[ImagingDocumentLocator, InstanceLocation, str]]
    ) -> list[RetrieveOutcome]:
        if not pending:
            return []
        read = await self._source.read_whole(
            [location for _, location, _ in pending], room=PART_HEAD_ROOM
        )
        outcomes: list[RetrieveOutcome] = []
        repository = self._source.repository_unique_id
        for (locator, _, syntax), data in zip(pending, read, strict=True):
            if isinstance(data, FrontRoom):
                outcomes.append(RetrievedInstance(locator, syntax, InstanceBody(data)))
            else:
                outcomes.append(fetch_error(locator, data, repository, self._location))
        return outcomes
