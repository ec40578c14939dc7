"""Storing instances into a PACS source (STOW-RS, C-STORE): what to send, what came back.

The importer hands a source a sequence of :data:`InstanceBody` values: a path
to a Part-10 file, the bytes of one, or its chunks (sync or async, for
example a spooled MIME part).  Each is sent as it is, chunk by chunk; the
source never joins a whole instance.  The archive's answer is a
:class:`StoreOutcome`: partial success is data, not an exception.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio

from imagebridge.dicom.dicom_json import first_string, items

STORE_CHUNK_SIZE: Final = 1024 * 1024
_REFERENCED_SOP_SEQUENCE: Final = "00081199"
_FAILED_SOP_SEQUENCE: Final = "00081198"
_REFERENCED_SOP_INSTANCE_UID: Final = "00081155"
_FAILURE_REASON: Final = "00081197"

InstanceBody = str | os.PathLike[str] | bytes | Iterable[bytes] | AsyncIterable[bytes]
"""One Part-10 instance to store: a file path, its bytes, or its chunks."""


@dataclass(frozen=True, slots=True)
class StoreFailure:
    """One instance the archive did not store, with the reason it gave (a DICOM status)."""

    sop_instance_uid: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What a PACS answered to a store request: the instances it stored and those it refused."""

    stored: tuple[str, ...] = ()
    failed: tuple[StoreFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing was refused."""
        return not self.failed


async def instance_chunks(body: InstanceBody) -> AsyncIterator[bytes]:
    """The bytes of *body*, chunk by chunk (files are read 1 MiB at a time)."""
    if isinstance(body, bytes):
        yield body
    elif isinstance(body, str | os.PathLike):
        async with await anyio.open_file(body, "rb") as fp:
            while chunk := await fp.read(STORE_CHUNK_SIZE):
                yield chunk
    elif isinstance(body, AsyncIterable):
        async for chunk in body:
            yield chunk
    else:
        for chunk in body:
            yield chunk


def store_outcome_from_json(answer: Mapping[str, Any]) -> StoreOutcome:
    """Read a STOW-RS response (PS3.18 10.5.3): the Referenced and Failed SOP Sequences."""
    stored = tuple(
        first_string(item, _REFERENCED_SOP_INSTANCE_UID)
        for item in items(answer, _REFERENCED_SOP_SEQUENCE)
    )
    failed = tuple(
        StoreFailure(
            first_string(item, _REFERENCED_SOP_INSTANCE_UID),
            _failure_reason(first_string(item, _FAILURE_REASON)),
        )
        for item in items(answer, _FAILED_SOP_SEQUENCE)
    )
    return StoreOutcome(stored, failed)


def _failure_reason(value: str) -> str:
    try:
        return f"0x{int(value):04X}"
    except ValueError:
        return value or "unknown"
