"""InstanceBody with a first chunk read whole with room for its part header."""

from __future__ import annotations

import pytest

from imagebridge.actors.responding.retrieved import InstanceBody
from imagebridge.wire.chunks import FrontRoom


@pytest.mark.anyio
async def test_front_room_body_streams_bytes_when_nobody_takes_the_head() -> None:
    body = InstanceBody(FrontRoom(bytearray(b"....data"), 4))
    assert [chunk async for chunk in body] == [b"data"]


@pytest.mark.anyio
async def test_front_room_body_hands_header_and_bytes_over_once() -> None:
    body = InstanceBody(FrontRoom(bytearray(b"....data"), 4))
    assert body.with_head(b"too-long") is None
    merged = body.with_head(b"HD")
    assert merged is not None and bytes(merged) == b"HDdata"
    assert body.with_head(b"HD") is None
    assert [chunk async for chunk in body] == []


@pytest.mark.anyio
async def test_plain_body_keeps_its_first_chunk() -> None:
    body = InstanceBody(b"data")
    assert body.with_head(b"HD") is None
    assert [chunk async for chunk in body] == [b"data"]
