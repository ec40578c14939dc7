"""multipart/related bodies (RFC 2387) as DICOMweb uses them: WADO-RS answers, STOW-RS requests.

* :func:`iter_multipart` turns an async stream of body chunks into events:
  :class:`PartStart` (with the part's headers), then the part's body as
  ``bytes`` chunks, then :class:`PartEnd`.  It drives the incremental
  :class:`~imagebridge.wire.mime.MultipartParser`, so memory stays bounded by
  the chunk size whatever the size of a part.
* :func:`iter_parts` gives whole parts instead: each body as one ``bytes``
  up to a size, in a spill file (made by the caller) beyond it.
* :func:`encode_multipart_related` yields a STOW-RS request body, part by
  part; bodies pass through untouched and are never joined.
  :func:`multipart_related_content_type` gives the matching ``Content-Type``.

Pure: no sockets, and files only through the caller's spill factory; the
boundary is a parameter (the caller picks one that cannot occur in the
bodies, a random UUID).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, Final

from imagebridge.errors import MimeMalformed
from imagebridge.wire.chunks import each, nonempty_chunks
from imagebridge.wire.mime import MultipartParser, PartHeaders, parse_media_type

_BOUNDARY: Final = re.compile(r"[0-9A-Za-z'+_.-]{1,70}")  # bchars that need no quoting
_MEDIA_TYPE: Final = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class PartStart:
    """A body part begins; its body chunks follow."""

    headers: PartHeaders


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current body part is complete."""


_END: Final = PartEnd()

MultipartEvent = PartStart | PartEnd | bytes


def boundary_of(content_type: str, *, expected: str = "multipart/related") -> str:
    """The ``boundary`` of a multipart ``Content-Type``; :class:`MimeMalformed` when absent."""
    media = parse_media_type(content_type)
    if media.mime_type != expected:
        raise MimeMalformed(f"expected {expected}, got {media.mime_type!r}")
    boundary = media.param("boundary")
    if not boundary:
        raise MimeMalformed(f"{expected} Content-Type has no boundary parameter")
    return boundary


class _Events:
    """MultipartHandler that queues events until the reader hands them on."""

    def __init__(self) -> None:
        self.queue: list[MultipartEvent] = []

    def start_part(self, headers: PartHeaders) -> None:
        self.queue.append(PartStart(headers))

    def part_data(self, data: memoryview) -> None:
        whole = data.obj
        if type(whole) is bytes and data.nbytes == len(whole):
            self.queue.append(whole)  # the slice is the whole chunk: no copy
        else:
            self.queue.append(bytes(data))

    def end_part(self) -> None:
        self.queue.append(_END)


async def iter_multipart(
    chunks: AsyncIterable[bytes], boundary: str, *, max_header_bytes: int = 16 * 1024
) -> AsyncIterator[MultipartEvent]:
    """multipart/related reader: the parts of a streamed body, as events in stream order.

    Raises :class:`~imagebridge.errors.MimeTruncated` when the stream ends
    before the closing delimiter and :class:`~imagebridge.errors.MimeMissingRoot`
    when it holds no part at all.
    """
    events = _Events()
    parser = MultipartParser(boundary, events, max_header_bytes=max_header_bytes)
    async for chunk in chunks:
        if not chunk or parser.complete:
            continue  # after the closing delimiter: drain, so the connection can be reused
        parser.feed(chunk)
        if events.queue:
            pending, events.queue = events.queue, []
            for event in pending:
                yield event
    parser.close()


async def iter_parts(
    chunks: AsyncIterable[bytes],
    boundary: str,
    *,
    in_memory: int,
    spill: Callable[[], BinaryIO],
    max_header_bytes: int = 16 * 1024,
) -> AsyncIterator[tuple[PartHeaders, bytes | BinaryIO]]:
    """multipart/related reader: each complete part with its headers, in stream order.

    A body of up to *in_memory* bytes comes as one ``bytes``; a larger one is
    written to the file *spill* makes and handed over rewound (the caller
    closes it).  So memory stays bounded by *in_memory* per part.  Raises as
    :func:`iter_multipart` does; a part cut short is closed, never yielded.
    """
    part = _Collected(in_memory, spill)
    headers = PartHeaders()
    try:
        async for event in iter_multipart(chunks, boundary, max_header_bytes=max_header_bytes):
            if type(event) is bytes:
                part.add(event)
            elif isinstance(event, PartStart):
                part.close()
                headers = event.headers
            else:
                yield headers, part.take()
    finally:
        part.close()


class _Collected:
    """The body of the part being read: chunks in memory, a spill file past the limit."""

    __slots__ = ("_chunks", "_file", "_in_memory", "_size", "_spill")

    def __init__(self, in_memory: int, spill: Callable[[], BinaryIO]) -> None:
        self._in_memory = in_memory
        self._spill = spill
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: BinaryIO | None = None

    def add(self, chunk: bytes) -> None:
        if self._file is not None:
            self._file.write(chunk)
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._in_memory:
            self._file = self._spill()
            self._file.writelines(self._chunks)
            self._chunks = []

    def take(self) -> bytes | BinaryIO:
        """The complete body; the collector is then empty again."""
        file, self._file = self._file, None
        chunks, self._chunks, self._size = self._chunks, [], 0
        if file is not None:
            file.seek(0)
            return file
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks, self._size = [], 0


def multipart_related_content_type(boundary: str, part_type: str) -> str:
    """``Content-Type`` of a multipart/related body whose parts are all *part_type*."""
    _check_boundary(boundary)
    if not _MEDIA_TYPE.fullmatch(part_type) or '"' in part_type:
        raise ValueError(f"part media type {part_type[:80]!r} is not valid here")
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


async def encode_multipart_related(
    bodies: Iterable[AsyncIterable[bytes] | Iterable[bytes]]
    | AsyncIterable[AsyncIterable[bytes] | Iterable[bytes]],
    *,
    boundary: str,
    part_type: str,
) -> AsyncIterator[bytes]:
    """multipart/related writer: every body as one part of type *part_type*, chunk by chunk."""
    _check_boundary(boundary)
    dash = b"--" + boundary.encode("ascii")
    head = f"Content-Type: {part_type}\r\n\r\n".encode("ascii")
    async for body in each(bodies):
        yield dash + b"\r\n" + head
        async for chunk in nonempty_chunks(body):
            yield chunk
        yield b"\r\n"
    yield dash + b"--\r\n"


def _check_boundary(boundary: str) -> None:
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"MIME boundary {boundary[:80]!r} must be 1-70 token characters")
