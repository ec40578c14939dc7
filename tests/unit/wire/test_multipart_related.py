"""multipart/related reader and writer as DICOMweb uses them (WADO-RS answers, STOW-RS bodies)."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, cast

import pytest

from imagebridge.errors import MimeMalformed, MimeMissingRoot, MimeTruncated
from imagebridge.wire.multipart_related import (
    PartEnd,
    PartStart,
    boundary_of,
    encode_multipart_related,
    iter_multipart,
    iter_parts,
    multipart_related_content_type,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _chunks(data: bytes, seed: int) -> AsyncIterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 300)
        yield data[pos : pos + size]
        pos += size


async def _parts(data: bytes, boundary: str, seed: int = 0) -> list[tuple[str | None, bytes]]:
    parts: list[tuple[str | None, bytes]] = []
    body = bytearray()
    ctype: str | None = None
    async for event in iter_multipart(_chunks(data, seed), boundary):
        if isinstance(event, PartStart):
            ctype, body = event.headers.content_type, bytearray()
        elif isinstance(event, PartEnd):
            parts.append((ctype, bytes(body)))
        else:
            body += event
    return parts


async def _gather(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def _async_body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i : i + 7]


async def test_written_parts_read_back_unchanged() -> None:
    bodies = [bytes(range(256)) * 40, b"\r\n--not-the-boundary\r\n", b"", b"\r"]
    boundary = "8a7c0e2f4b"
    data = await _gather(
        encode_multipart_related(
            [[bodies[0]], _async_body(bodies[1]), [], [bodies[3]]],
            boundary=boundary,
            part_type="application/dicom",
        )
    )
    for seed in range(30):
        parts = await _parts(data, boundary, seed)
        assert parts == [("application/dicom", body) for body in bodies]


def test_content_type_and_boundary() -> None:
    value = multipart_related_content_type("abc123", "application/dicom")
    assert value == 'multipart/related; type="application/dicom"; boundary=abc123'
    assert boundary_of(value) == "abc123"
    orthanc = 'multipart/related; type="application/dicom"; boundary=72713c0c-b767-4639-ba0c-7'
    assert boundary_of(orthanc) == "72713c0c-b767-4639-ba0c-7"
    with pytest.raises(MimeMalformed):
        boundary_of("application/dicom")
    with pytest.raises(MimeMalformed):
        boundary_of('multipart/related; type="application/dicom"')
    with pytest.raises(ValueError):
        multipart_related_content_type("has space", "application/dicom")


async def test_truncated_and_empty_bodies_raise() -> None:
    with pytest.raises(MimeTruncated):
        await _parts(b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM", "b")
    with pytest.raises(MimeMissingRoot):
        await _parts(b"no boundary at all", "b")


async def test_a_large_part_comes_out_in_chunks() -> None:
    payload = b"\x00\x01" * 500_000
    data = b"--b\r\n\r\n" + payload + b"\r\n--b--\r\n"
    sizes = []

    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    async for event in iter_multipart(source(), "b"):
        if isinstance(event, bytes):
            sizes.append(len(event))
    assert sum(sizes) == len(payload)
    assert max(sizes) <= 65536


def _spill_into(files: list[io.BytesIO]) -> Callable[[], BinaryIO]:
    def spill() -> BinaryIO:
        files.append(io.BytesIO())
        return cast(BinaryIO, files[-1])

    return spill


async def test_iter_parts_gives_small_bodies_whole_and_spills_large_ones() -> None:
    small, large = bytes(range(256)) * 3, bytes(range(256)) * 40
    boundary = "b0a1"
    body = await _gather(
        encode_multipart_related(
            [[small], [large], [b""]], boundary=boundary, part_type="application/dicom"
        )
    )
    files: list[io.BytesIO] = []
    parts = iter_parts(_chunks(body, 3), boundary, in_memory=4096, spill=_spill_into(files))
    got = [(headers.content_type, part) async for headers, part in parts]
    assert [t for t, _ in got] == ["application/dicom"] * 3
    assert got[0][1] == small and got[2][1] == b""
    spilled = got[1][1]
    assert not isinstance(spilled, bytes) and spilled.read() == large
    assert len(files) == 1


async def test_iter_parts_closes_the_spill_of_a_part_cut_short() -> None:
    boundary = "b0a1"
    body = await _gather(
        encode_multipart_related([[b"x" * 9000]], boundary=boundary, part_type="application/dicom")
    )
    files: list[io.BytesIO] = []
    with pytest.raises(MimeTruncated):
        async for _ in iter_parts(
            _chunks(body[:5000], 4), boundary, in_memory=1000, spill=_spill_into(files)
        ):
            pass
    assert len(files) == 1 and files[0].closed


async def test_whole_chunks_of_body_pass_without_a_copy() -> None:
    boundary = "b0a1"
    head = b"--b0a1\r\nContent-Type: application/dicom\r\n\r\n"
    middle = bytes(range(200)) * 100

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        yield middle
        yield b"\r\n--b0a1--\r\n"

    data = [e async for e in iter_multipart(chunks(), boundary) if isinstance(e, bytes)]
    assert data == [middle] and data[0] is middle
