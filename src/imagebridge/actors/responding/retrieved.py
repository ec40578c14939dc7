"""What an imaging source back end hands the imaging retrieve responder.

Per requested instance, a back end yields either a :class:`RetrievedInstance`,
whose :class:`InstanceBody` is ready to stream (bytes read whole, an opened
file, a spool file or a received MIME part; never a whole study in memory),
or a :class:`~imagebridge.model.outcome.RegistryError`.  :class:`Cleanup`
collects what must be released once the reply is finished.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

import anyio.to_thread

from imagebridge.errors import ImageBridgeError, InstanceNotFound
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.index import InstanceLocation
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.wire.chunks import FrontRoom
from imagebridge.wire.xds import vocabulary as v

log = logging.getLogger("imagebridge.actors.responding.imaging_sources")

CHUNK = 1024 * 1024


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


class InstanceBody:
    """The bytes of one instance ready to send: async chunks plus an explicit release.

    Unlike a plain async generator, :meth:`aclose` releases the resource even
    if iteration never started (a reply whose client hung up before this part
    was sent), so spool files and open archive files never outlive a request.

    *first* may be a :class:`FrontRoom` (a small file read whole with room for
    its part header): the MTOM writer then takes header and bytes as one chunk
    through :meth:`with_head`.
    """

    def __init__(
        self,
        first: bytes | FrontRoom = b"",
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
            return first if isinstance(first, bytes) else bytes(first)
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

    def with_head(self, head: bytes) -> memoryview | None:
        """*head* and the first chunk as one chunk, without a copy, if they can be (see class)."""
        first = self._first
        if isinstance(first, FrontRoom):
            merged = first.with_head(head)
            if merged is not None:
                self._first = b""
                return merged
        return None

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


def error(code: str, context: str, location: str) -> RegistryError:
    """A RegistryError of severity Error."""
    return RegistryError(code, context, Severity.ERROR, location)


def held(
    locator: ImagingDocumentLocator, locations: Sequence[InstanceLocation]
) -> list[InstanceLocation]:
    """The representations that belong to the requested study and series."""
    return [
        loc
        for loc in locations
        if loc.study_instance_uid == locator.study_instance_uid
        and loc.series_instance_uid == locator.series_instance_uid
    ]


def fetch_error(
    locator: ImagingDocumentLocator, exc: ImageBridgeError, repository: str, location: str
) -> RegistryError:
    """The RegistryError for an instance whose fetch from *repository* failed with *exc*."""
    log.info("instance fetch failed in %s: %s", repository, exc.message)
    code = (
        v.XDS_DOCUMENT_UNIQUE_ID_ERROR
        if isinstance(exc, InstanceNotFound)
        # An archive failing during a retrieve is a repository error here.
        else v.XDS_REPOSITORY_ERROR
    )
    return error(code, f"SOP Instance {locator.sop_instance_uid}: {exc.message}", location)
