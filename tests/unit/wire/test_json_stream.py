"""Incremental JSON array reader (DICOMweb answers) fed in arbitrary chunks."""

from __future__ import annotations

import json
import random

import pytest

from imagebridge.errors import JsonMalformed
from imagebridge.wire.json_stream import JsonArrayReader

DOC = [
    {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "tricky": 'x]}{"\\ [ ,'},
    {},
    {"nested": [{"a": "}"}, [1, 2, {"b": "]"}]], "unicode": "é€😀" * 3},
]


def _read(raw: bytes, sizes: list[int]) -> list[dict[str, object]]:
    reader = JsonArrayReader()
    items: list[dict[str, object]] = []
    pos = 0
    for size in sizes:
        items += reader.feed(raw[pos : pos + size])
        pos += size
    items += reader.feed(raw[pos:])
    return items + reader.close()


@pytest.mark.parametrize("indent", [None, 2])
def test_items_come_out_whatever_the_chunking(indent: int | None) -> None:
    raw = json.dumps(DOC, indent=indent, ensure_ascii=False).encode()
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 9) for _ in range(len(raw) // 3)]
        assert _read(raw, sizes) == DOC
    assert _read(raw, []) == DOC


def test_items_are_returned_as_soon_as_they_close() -> None:
    reader = JsonArrayReader()
    assert reader.feed(b'[{"a": 1}, {"b"') == [{"a": 1}]
    assert reader.feed(b": 2}") == [{"b": 2}]
    assert reader.feed(b"]") == []
    assert reader.close() == []
    assert reader.count == 2


def test_a_large_item_in_small_chunks_and_a_malformed_one() -> None:
    big = {"k": ["v" * 100] * 2000}
    raw = json.dumps([big, {"a": 1}]).encode()
    assert _read(raw, [1000] * (len(raw) // 1000)) == [big, {"a": 1}]
    reader = JsonArrayReader()
    assert reader.feed(b'[{"a": 1}, {"b": ]}, {"c": 3}') == [{"a": 1}]
    with pytest.raises(JsonMalformed, match="not valid JSON"):
        reader.close()


def test_an_empty_array_is_fine() -> None:
    assert _read(b" [ ]\r\n", []) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{}",
        b'"text"',
        b"[1]",
        b'["a"]',
        b"[[]]",
        b"[{}",
        b'[{"a": "open',
        b"[{}] trailing",
        b"[{}][{}]",
        b'[{"a":}]',
        b"[{}}]",
        b"[}",
        b"[{]]",
        b"]",
    ],
)
def test_malformed_documents_are_refused(raw: bytes) -> None:
    reader = JsonArrayReader()
    with pytest.raises(JsonMalformed):
        reader.feed(raw)
        reader.close()


def test_an_item_larger_than_the_limit_is_refused() -> None:
    reader = JsonArrayReader(max_item_bytes=100)
    with pytest.raises(JsonMalformed, match="exceeds 100 bytes"):
        reader.feed(b'[{"a": "')
        for _ in range(50):
            reader.feed(b"x" * 10)


def test_memory_holds_only_the_item_in_progress() -> None:
    reader = JsonArrayReader()
    item = json.dumps({"k": "v" * 1000}).encode()
    reader.feed(b"[")
    for _ in range(1000):
        assert len(reader.feed(item + b",")) == 1
        assert len(reader._text) < 10  # nothing of earlier items is kept
