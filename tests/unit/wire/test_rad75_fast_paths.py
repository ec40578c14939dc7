"""The RAD-75 responder's fast paths give exactly what the general code gives.

DocumentRequest decoding, DocumentResponse rendering (template copies,
incremental writer), Content-ID references, identifier checks, and MTOM
parts whose header travels with the body (FrontRoom).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from lxml import etree

from imagebridge.errors import InvalidValue, MissingElement, UnexpectedElement, WrongNamespace
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.retrieve import (
    _CID_SAFE,
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetResponse,
    XopInclude,
)
from imagebridge.wire import ns
from imagebridge.wire.chunks import FrontRoom
from imagebridge.wire.mtom import Attachment, encode_mtom_root_last, mtom_content_type, read_mtom
from imagebridge.wire.xds import retrieve as codec
from imagebridge.wire.xds.retrieve import (
    parse_document_request,
    render_retrieve_document_set_response,
)
from imagebridge.wire.xds.retrieve_writer import RetrieveResponseWriter, _render_general
from imagebridge.wire.xml import parse_xml, serialize

HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
SOP = "1.2.826.0.1.3680043.8.498.1"


# --- identifiers ---------------------------------------------------------------------


def test_identifier_whitespace_check_is_str_isspace() -> None:
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert "\x1c" in spaces and "\u00a0" in spaces and "\u2028" in spaces
    for space in spaces:
        for value in (f"1.2{space}3", f"{space}1.2", f"1.2{space}"):
            with pytest.raises(InvalidValue, match="whitespace"):
                DocumentRequest(REPO, value)
    DocumentRequest(REPO, "1.2.3\u200b")  # a zero-width space is not whitespace to str


def test_content_id_reference_without_escapes_matches_quote() -> None:
    for content_id in ("i0.1.2.3@imagebridge", "a-b_c~d!$&'()*+,;=:@/x", "é@x", "a b", "a%b"):
        expected = "cid:" + quote(content_id, safe=_CID_SAFE)
        assert XopInclude.for_content_id(content_id).href == expected
        assert XopInclude.for_content_id(f"<{content_id}>").href == expected


# --- DocumentRequest decoding --------------------------------------------------------


def _request(children: str, namespace: str = ns.XDS) -> etree._Element:
    text = f"<x:DocumentRequest xmlns:x='{namespace}'>{children}</x:DocumentRequest>"
    return parse_xml(text.encode())


def _general(el: etree._Element) -> DocumentRequest:
    """The general path alone (the fast path patched out)."""
    saved = codec._plain_document_request
    codec._plain_document_request = lambda *args: None  # type: ignore[assignment]
    try:
        return parse_document_request(el)
    finally:
        codec._plain_document_request = saved


@pytest.mark.parametrize(
    "children",
    [
        f"<x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId><x:DocumentUniqueId>{SOP}</x:DocumentUniqueId>",
        f"<x:DocumentUniqueId> {SOP}\n</x:DocumentUniqueId>"
        f"<x:HomeCommunityId>urn:oid:urn:oid:{HOME.oid}</x:HomeCommunityId>"
        f"<x:RepositoryUniqueId> urn:oid:{REPO} </x:RepositoryUniqueId>",
        f"<x:HomeCommunityId></x:HomeCommunityId><x:RepositoryUniqueId>{REPO}"
        f"</x:RepositoryUniqueId><!-- c --><x:DocumentUniqueId>{SOP}</x:DocumentUniqueId>",
        f"<x:RepositoryUniqueId>{REPO}<!-- c --></x:RepositoryUniqueId>"
        f"<x:DocumentUniqueId><![CDATA[{SOP}]]></x:DocumentUniqueId>",
    ],
)
def test_document_request_fast_path_decodes_as_the_general_path(children: str) -> None:
    el = _request(children)
    assert parse_document_request(el) == _general(el)


@pytest.mark.parametrize(
    ("children", "error"),
    [
        (f"<x:DocumentUniqueId>{SOP}</x:DocumentUniqueId>", MissingElement),
        (
            f"<x:RepositoryUniqueId> urn:oid: </x:RepositoryUniqueId>"
            f"<x:DocumentUniqueId>{SOP}</x:DocumentUniqueId>",
            MissingElement,
        ),
        (
            f"<x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
            f"<x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
            f"<x:DocumentUniqueId>{SOP}</x:DocumentUniqueId>",
            UnexpectedElement,
        ),
        (
            f"<x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
            f"<y:DocumentUniqueId xmlns:y='urn:other'>{SOP}</y:DocumentUniqueId>",
            WrongNamespace,
        ),
        (
            f"<x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
            f"<x:DocumentUniqueId>1.2 3</x:DocumentUniqueId>",
            InvalidValue,
        ),
    ],
)
def test_document_request_fast_path_raises_as_the_general_path(
    children: str, error: type[Exception]
) -> None:
    el = _request(children)
    with pytest.raises(error) as fast:
        parse_document_request(el)
    with pytest.raises(error) as general:
        _general(el)
    assert str(fast.value) == str(general.value)


# --- DocumentResponse rendering ------------------------------------------------------


def _responses() -> Iterator[DocumentResponse]:
    shapes = itertools.product(
        (None, HOME), (XopInclude("cid:i0.1.2@x"), b"\x00inline"), (None, "1.9"), (None, "7.7")
    )
    for i, (home, document, new_repo, new_doc) in enumerate(shapes):
        yield DocumentResponse(
            REPO, f"1.2.{i}", "application/dicom", document, home, new_repo, new_doc
        )


def test_document_responses_render_as_element_by_element() -> None:
    for item in _responses():
        fast = etree.Element(ns.q(ns.XDS, "R"), nsmap={"xds": ns.XDS, "rs": ns.RS})
        general = etree.Element(ns.q(ns.XDS, "R"), nsmap={"xds": ns.XDS, "rs": ns.RS})
        codec_writer = RetrieveResponseWriter()
        codec_writer.add(item)
        _render_general(general, item)
        fast.extend(
            codec_writer.finish(RetrieveDocumentSetResponse.consolidated([item]).registry_response)[
                1:
            ]
        )
        assert serialize(fast) == serialize(general)


def test_incremental_writer_gives_the_rendered_response() -> None:
    items = list(_responses())
    errors = (RegistryError("XDSRepositoryError", "x", Severity.ERROR, HOME.urn),)
    response = RetrieveDocumentSetResponse.consolidated(items, errors)
    writer = RetrieveResponseWriter()
    for item in items:
        writer.add(item)
    built = writer.finish(response.registry_response)
    assert serialize(built) == serialize(render_retrieve_document_set_response(response))
    with pytest.raises(RuntimeError):
        writer.add(items[0])
    with pytest.raises(RuntimeError):
        writer.finish(response.registry_response)


# --- FrontRoom and the MTOM writer ---------------------------------------------------


def test_front_room_reads_a_file_and_takes_a_head(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    room = FrontRoom.read_file(str(path), 8)
    assert room.room == 8 and len(room) == 10
    assert room == b"0123456789" and bytes(room) == b"0123456789"
    assert room.with_head(b"too long head") is None
    assert bytes(room.with_head(b"HEAD") or b"") == b"HEAD0123456789"
    assert bytes(FrontRoom.read_file(str(path), 0)) == b"0123456789"


@pytest.mark.parametrize("delta", [-4, 0, 5])
def test_front_room_reads_the_file_as_it_is_when_its_size_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delta: int
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100_000 + b"end")
    real = os.fstat

    def stale(fd: int) -> os.stat_result:  # the size fstat saw before the file changed
        found = real(fd)
        fields = list(found)
        fields[6] = found.st_size + delta
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", stale)
    assert FrontRoom.read_file(str(path), 16) == path.read_bytes()


class _Headed:
    """A body whose first chunk can carry the part header (as InstanceBody does)."""

    def __init__(self, data: bytes, more: bytes) -> None:
        self._first: FrontRoom | None = FrontRoom(bytearray(256) + data, 256)
        self._more = more

    def with_head(self, head: bytes) -> memoryview | None:
        merged = self._first.with_head(head) if self._first is not None else None
        if merged is not None:
            self._first = None
        return merged

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            yield bytes(self._first)
        yield self._more


@pytest.mark.anyio
async def test_headed_body_is_one_chunk_with_its_header_and_the_same_bytes() -> None:
    async def root() -> bytes:
        return b"<env/>"

    def package(bodies: list[object]) -> AsyncIterator[bytes | memoryview]:
        return encode_mtom_root_last(
            [Attachment(f"p{i}@x", "application/dicom", b) for i, b in enumerate(bodies)],  # type: ignore[arg-type]
            root,
            boundary="bnd",
            root_content_id="root@x",
        )

    plain = [c async for c in package([[b"one", b"-two"], [b"three", b"-four"]])]
    headed = [c async for c in package([_Headed(b"one", b"-two"), _Headed(b"three", b"-four")])]
    assert b"".join(headed) == b"".join(plain)
    assert len(headed) == len(plain) - 2  # each header went out with its first chunk
    data = b"".join(headed)
    with await read_mtom(mtom_content_type("bnd", "root@x"), [data]) as read:
        assert read.parts["p0@x"].open().read() == b"one-two"
        assert read.parts["p1@x"].open().read() == b"three-four"
