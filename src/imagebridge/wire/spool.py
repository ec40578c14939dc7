"""Storage for received MIME parts: the sink protocol and the default spooling sink.

The MTOM reader streams each attachment part into a :class:`PartSink` as it
arrives and keeps only what the sink returns, a :class:`StoredBody`.  The
default :class:`SpoolingSink` keeps small parts in memory and writes larger
ones to a temporary file, as pynetdicom spools large C-STORE data sets, so a
study of any size passes through with flat memory.

This is the one module under ``wire/`` that touches files (temporary ones
only, in a directory the caller may choose); the codecs themselves only see
the protocol.  Spool files are removed by :meth:`SpooledBody.close`, or at the
latest when the body object is garbage-collected.
"""

from __future__ import annotations

import io
import os
import tempfile
import weakref
from contextlib import suppress
from typing import BinaryIO, Protocol

from imagebridge.wire.mime import PartHeaders

DEFAULT_SPOOL_THRESHOLD = 1024 * 1024
DEFAULT_MEMORY_BUDGET = 16 * 1024 * 1024


class StoredBody(Protocol):
    """The stored body bytes of one received MIME part."""

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO:
        """A new binary stream over the body, positioned at its start."""
        ...

    def close(self) -> None:
        """Release the storage (idempotent); :meth:`open` fails afterwards."""
        ...


class PartSink(Protocol):
    """Where a MIME reader puts each part's body as it arrives, chunk by chunk."""

    def start_part(self, headers: PartHeaders) -> None: ...

    def part_data(self, data: memoryview) -> None:
        """Body bytes; *data* is only valid during the call (write or copy it)."""
        ...

    def end_part(self) -> StoredBody: ...

    def abort(self) -> None:
        """Drop the part in progress, if any (the reader met an error)."""
        ...


def _remove_file(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


class SpooledBody:
    """A received part's body held in memory or in a spool file on disk."""

    __slots__ = ("__weakref__", "_closed", "_data", "_finalizer", "_path", "size")

    def __init__(self, size: int, *, data: bytes | None = None, path: str | None = None) -> None:
        if (data is None) == (path is None):
            raise ValueError("SpooledBody takes exactly one of data and path")
        self.size = size
        self._data = data
        self._path = path
        self._closed = False
        self._finalizer = weakref.finalize(self, _remove_file, path) if path else None

    @property
    def in_memory(self) -> bool:
        """True when the body is held in memory rather than in a spool file."""
        return self._path is None

    @property
    def path(self) -> str | None:
        """The spool file, or None for an in-memory body."""
        return self._path

    def open(self) -> BinaryIO:
        """A new binary stream over the body, positioned at its start."""
        if self._closed:
            raise ValueError("the part body was closed")
        if self._path is not None:
            return open(self._path, "rb")
        return io.BytesIO(self._data or b"")

    def close(self) -> None:
        """Release memory or remove the spool file (idempotent)."""
        self._closed = True
        self._data = None
        if self._finalizer is not None:
            self._finalizer()


class SpoolingSink:
    """Default part sink: small parts stay in memory, larger ones spool to a temporary file.

    A part spools once it exceeds *threshold* bytes, or once the parts kept in
    memory would together exceed *memory_budget*; *directory* is where spool
    files go (the system temporary directory by default).  Use one sink per
    package: the memory budget counts every part it has kept.
    """

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_SPOOL_THRESHOLD,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        if threshold < 0 or memory_budget < 0:
            raise ValueError("SpoolingSink threshold and memory_budget must not be negative")
        self._threshold = threshold
        self._budget = memory_budget
        self._directory = directory
        self._in_memory = 0
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._path: str | None = None
        self._size = 0

    def start_part(self, headers: PartHeaders) -> None:
        self.abort()

    def part_data(self, data: memoryview) -> None:
        self._size += len(data)
        file = self._file
        if file is None:
            held = len(self._buffer) + len(data)
            if held <= self._threshold and self._in_memory + held <= self._budget:
                self._buffer += data
                return
            file = self._spill()
        file.write(data)

    def end_part(self) -> SpooledBody:
        size = self._size
        if self._file is not None and self._path is not None:
            self._file.close()
            body = SpooledBody(size, path=self._path)
            self._file = self._path = None
        else:
            body = SpooledBody(size, data=bytes(self._buffer))
            self._in_memory += size
        self._buffer = bytearray()
        self._size = 0
        return body

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            _remove_file(self._path)
        self._file = self._path = None
        self._buffer = bytearray()
        self._size = 0

    def _spill(self) -> BinaryIO:
        fd, self._path = tempfile.mkstemp(
            prefix="imagebridge-part-", suffix=".bin", dir=self._directory
        )
        self._file = file = os.fdopen(fd, "wb")
        file.write(self._buffer)
        self._buffer = bytearray()
        return file
