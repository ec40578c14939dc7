"""Iterating sync or async sources alike: what the streaming MIME writers share."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Protocol, TypeVar

T = TypeVar("T")


async def each(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """The items of a sync or async iterable, asynchronously."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def nonempty_chunks(body: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a body, sync or async, without the empty ones."""
    async for chunk in each(body):
        if chunk:
            yield chunk


class FrontRoom:
    """Bytes with spare room before them, so a header can go in front without a copy.

    A streaming writer that sends a part's header and its first body chunk as
    one chunk (one HTTP write instead of two) asks :meth:`with_head`; the
    header is written into the room and a view of header plus bytes returned.
    """

    __slots__ = ("_buffer", "_start")

    def __init__(self, buffer: bytearray, start: int) -> None:
        if not 0 <= start <= len(buffer):
            raise ValueError(f"room of {start} bytes outside a buffer of {len(buffer)}")
        self._buffer = buffer
        self._start = start

    @classmethod
    def read_file(cls, path: str, room: int) -> FrontRoom:
        """The whole content of the file at *path*, as it is now, after *room* spare bytes."""
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            buffer = bytearray(room + size)
            view = memoryview(buffer)
            end = room
            with view:
                while end < len(buffer) and (n := f.readinto(view[end:])):
                    end += n
            if end < len(buffer):  # shrank since fstat
                del buffer[end:]
            else:
                while more := f.read():  # grew since fstat
                    buffer += more
        return cls(buffer, room)

    @property
    def room(self) -> int:
        """Spare bytes before the content."""
        return self._start

    def __len__(self) -> int:
        return len(self._buffer) - self._start

    def __bytes__(self) -> bytes:
        return bytes(self._buffer[self._start :])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrontRoom):
            other = bytes(other)
        if isinstance(other, bytes | bytearray | memoryview):
            with memoryview(self._buffer) as view:
                return view[self._start :] == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable room, like bytearray

    def view(self) -> memoryview:
        """The content, without a copy."""
        return memoryview(self._buffer)[self._start :]

    def with_head(self, head: bytes) -> memoryview | None:
        """*head* followed by the content as one view (no copy); None if the room is too small."""
        if len(head) > self._start:
            return None
        at = self._start - len(head)
        self._buffer[at : self._start] = head
        return memoryview(self._buffer)[at:]


class HeadedBody(Protocol):
    """A part body that can hand over its first chunk with the part's header in front."""

    def with_head(self, head: bytes) -> bytes | memoryview | None:
        """Header plus first chunk, taken from the body; None when it cannot (send both)."""
        ...
