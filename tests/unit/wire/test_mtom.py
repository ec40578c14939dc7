"""MTOM/XOP codec (wire/mime.py, wire/spool.py, wire/mtom_writer.py, wire/mtom.py)."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagebridge.errors import (
    MimeError,
    MimeMalformed,
    MimeMissingRoot,
    MimePartTooLarge,
    MimeTooManyParts,
    MimeTruncated,
    MimeUnknownCid,
    WireError,
)
from imagebridge.wire.mime import PartHeaders, parse_media_type
from imagebridge.wire.mtom import (
    Attachment,
    MtomLimits,
    MtomPackage,
    MtomPart,
    MtomReader,
    encode_mtom,
    encode_mtom_async,
    encode_mtom_root_last,
    mtom_content_type,
    read_mtom,
    resolve_xop_includes,
)
from imagebridge.wire.spool import SpooledBody, SpoolingSink
from imagebridge.wire.xml import parse_xml

MiB = 1024 * 1024
BOUNDARY = "MIMEBoundary_4b1f0c2d"
ROOT_ID = "root.7c2e@gw.example.org"
XOP = "http://www.w3.org/2004/08/xop/include"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def read(content_type: str, data: bytes, chunk: int = 0, **kwargs: object) -> MtomPackage:
    """Feed *data* to a reader whole, or in *chunk*-sized pieces."""
    reader = MtomReader(content_type, **kwargs)  # type: ignore[arg-type]
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
    return reader.close()


def body(package: MtomPackage, content_id: str) -> bytes:
    with package.parts[content_id].open() as stream:
        return stream.read()


def envelope(*hrefs: str) -> bytes:
    docs = "".join(
        f'<Document><xop:Include xmlns:xop="{XOP}" href="{h}"/></Document>' for h in hrefs
    )
    return (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        f"<RetrieveDocumentSetResponse>{docs}</RetrieveDocumentSetResponse></s:Body></s:Envelope>"
    ).encode()


ROOT_PART = b"--b\r\nContent-ID: <r@x>\r\n\r\n<r/>\r\n"


def multipart_type(boundary: str = BOUNDARY, extra: str = "") -> str:
    return f'multipart/related; type="application/xop+xml"; boundary="{boundary}"{extra}'


# --- writer --------------------------------------------------------------------------------

GOLDEN = (
    b"--MIMEBoundary_4b1f0c2d\r\n"
    b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: <root.7c2e@gw.example.org>\r\n"
    b"\r\n"
    b"<root/>"
    b"\r\n--MIMEBoundary_4b1f0c2d\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: <img1.2b9a@gw.example.org>\r\n"
    b"\r\n"
    b"DICM\x00\x01\r\n"
    b"\r\n--MIMEBoundary_4b1f0c2d\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: <empty@gw.example.org>\r\n"
    b"\r\n"
    b"\r\n--MIMEBoundary_4b1f0c2d--\r\n"
)


def golden_attachments() -> list[Attachment]:
    return [
        Attachment(
            "img1.2b9a@gw.example.org", "application/dicom", [b"DICM", b"", b"\x00\x01\r\n"]
        ),
        Attachment("empty@gw.example.org", "application/dicom", []),
    ]


def test_content_type_header() -> None:
    assert mtom_content_type(BOUNDARY, ROOT_ID) == (
        'multipart/related; boundary="MIMEBoundary_4b1f0c2d"; type="application/xop+xml"; '
        'start="<root.7c2e@gw.example.org>"; start-info="application/soap+xml"'
    )


def test_writer_golden_bytes() -> None:
    chunks = encode_mtom(
        b"<root/>", golden_attachments(), boundary=BOUNDARY, root_content_id=ROOT_ID
    )
    assert b"".join(chunks) == GOLDEN


@pytest.mark.anyio
async def test_async_writer_takes_sync_and_async_sources() -> None:
    async def agen(items: Iterable[bytes]) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    async def attachments() -> AsyncIterator[Attachment]:
        yield Attachment(
            "img1.2b9a@gw.example.org", "application/dicom", agen([b"DICM", b"\x00\x01\r\n"])
        )
        yield Attachment("empty@gw.example.org", "application/dicom", [])

    out = [
        c
        async for c in encode_mtom_async(
            b"<root/>", attachments(), boundary=BOUNDARY, root_content_id=ROOT_ID
        )
    ]
    assert b"".join(out) == GOLDEN
    out = [
        c
        async for c in encode_mtom_async(
            b"<root/>", golden_attachments(), boundary=BOUNDARY, root_content_id=ROOT_ID
        )
    ]
    assert b"".join(out) == GOLDEN


def test_writer_passes_body_chunks_through_unjoined() -> None:
    pieces = [os.urandom(1000) for _ in range(5)]
    out = list(
        encode_mtom(
            b"<r/>",
            [Attachment("a@x", "application/dicom", pieces)],
            boundary=BOUNDARY,
            root_content_id=ROOT_ID,
        )
    )
    for piece in pieces:
        assert any(chunk is piece for chunk in out)


@pytest.mark.parametrize(
    ("boundary", "content_id"),
    [
        ("", ROOT_ID),
        ("x" * 71, ROOT_ID),
        ("bad\r\nboundary", ROOT_ID),
        ("ends with space ", ROOT_ID),
        (BOUNDARY, "<bracketed@x>"),
        (BOUNDARY, ""),
        (BOUNDARY, "has space@x"),
        (BOUNDARY, "new\nline"),
    ],
)
def test_writer_refuses_bad_boundary_or_content_id(boundary: str, content_id: str) -> None:
    with pytest.raises(ValueError):
        encode_mtom(b"<r/>", [], boundary=boundary, root_content_id=content_id)
    with pytest.raises(ValueError):
        mtom_content_type(boundary, content_id)


def test_writer_refuses_duplicate_content_id_and_header_injection() -> None:
    twice = [Attachment("a@x", "application/dicom", []), Attachment("a@x", "application/dicom", [])]
    with pytest.raises(ValueError, match="twice"):
        list(encode_mtom(b"<r/>", twice, boundary=BOUNDARY, root_content_id=ROOT_ID))
    with pytest.raises(ValueError):
        list(
            encode_mtom(
                b"<r/>",
                [Attachment(ROOT_ID, "application/dicom", [])],
                boundary=BOUNDARY,
                root_content_id=ROOT_ID,
            )
        )
    with pytest.raises(ValueError):
        Attachment("a@x", "application/dicom\r\nX-Evil: 1", [])


def test_sync_writer_refuses_async_body() -> None:
    async def agen() -> AsyncIterator[bytes]:
        yield b"x"

    with pytest.raises(TypeError):
        list(
            encode_mtom(
                b"<r/>",
                [Attachment("a@x", "application/dicom", agen())],
                boundary=BOUNDARY,
                root_content_id=ROOT_ID,
            )
        )


# --- round trip and chunking ----------------------------------------------------------------


def test_golden_round_trip() -> None:
    package = read(mtom_content_type(BOUNDARY, ROOT_ID), GOLDEN)
    assert package.multipart
    assert package.root == b"<root/>"
    assert package.root_headers.content_id == ROOT_ID
    assert set(package.parts) == {"img1.2b9a@gw.example.org", "empty@gw.example.org"}
    assert body(package, "img1.2b9a@gw.example.org") == b"DICM\x00\x01\r\n"
    assert body(package, "empty@gw.example.org") == b""
    assert package.parts["img1.2b9a@gw.example.org"].content_type == "application/dicom"
    assert package.parts["img1.2b9a@gw.example.org"].size == 8
    assert b"".join(package.parts["img1.2b9a@gw.example.org"].chunks(3)) == b"DICM\x00\x01\r\n"


@pytest.mark.anyio
async def test_read_mtom_from_one_byte_async_chunks() -> None:
    async def one_byte() -> AsyncIterator[bytes]:
        for i in range(len(GOLDEN)):
            yield GOLDEN[i : i + 1]

    with await read_mtom(mtom_content_type(BOUNDARY, ROOT_ID), one_byte()) as package:
        assert package.root == b"<root/>"
        assert body(package, "img1.2b9a@gw.example.org") == b"DICM\x00\x01\r\n"


@pytest.mark.anyio
async def test_read_mtom_from_sync_iterable() -> None:
    package = await read_mtom(mtom_content_type(BOUNDARY, ROOT_ID), [GOLDEN[:10], GOLDEN[10:]])
    assert package.root == b"<root/>"


TRICKY = [
    b"\r",
    b"\n",
    b"-",
    b"--",
    b"\r\n",
    b"\r\n--",
    b"\n--",
    b"\r\n--" + BOUNDARY.encode()[:-1],
    b"x",
    b"\x00",
]
bodies = (
    st.lists(st.sampled_from(TRICKY) | st.binary(max_size=40), max_size=30)
    .map(b"".join)
    .filter(lambda b: b"--" + BOUNDARY.encode() not in b)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    root=bodies,
    parts=st.lists(bodies, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_chunk_size_does_not_change_the_parts(
    root: bytes, parts: list[bytes], cuts: list[int]
) -> None:
    attachments = [Attachment(f"p{i}@x", "application/dicom", [p]) for i, p in enumerate(parts)]
    stream = b"".join(encode_mtom(root, attachments, boundary=BOUNDARY, root_content_id=ROOT_ID))
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    reader = MtomReader(mtom_content_type(BOUNDARY, ROOT_ID))
    for start, end in itertools.pairwise(points):
        reader.feed(stream[start:end])
    with reader.close() as package:
        assert package.root == root
        assert {cid: body(package, cid) for cid in package.parts} == {
            f"p{i}@x": p for i, p in enumerate(parts)
        }


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600) | st.just(GOLDEN),
    edits=st.lists(st.tuples(st.integers(0, 700), st.binary(max_size=3)), max_size=4),
    cut=st.integers(0, 700),
    chunk=st.integers(1, 50),
)
def test_bad_input_only_raises_mime_errors(
    data: bytes, edits: list[tuple[int, bytes]], cut: int, chunk: int
) -> None:
    for at, insert in edits:
        data = data[:at] + insert + data[at + len(insert) :]
    data = data[:cut] if cut < len(data) else data
    with contextlib.suppress(MimeError):
        read(mtom_content_type(BOUNDARY, ROOT_ID), data, chunk).close()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_content_type_is_read_or_refused_as_mime_error(value: str) -> None:
    with contextlib.suppress(MimeError):
        read(value, b"<r/>").close()


# --- tolerance: layouts real partners send --------------------------------------------------


WCF = (
    b"\r\n"
    b"--uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=1\r\n"
    b"Content-ID: <http://tempuri.org/0>\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b'Content-Type: application/xop+xml;charset=utf-8;type="application/soap+xml"\r\n'
    b"\r\n" + envelope("cid:http://tempuri.org/1/638509440267508087") + b"\r\n"
    b"--uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=1\r\n"
    b"Content-ID: <http://tempuri.org/1/638509440267508087>\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"\x00DICM\r\n\r\n"
    b"--uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=1--\r\n"
)
WCF_TYPE = multipart_type(
    "uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=1",
    '; start="<http://tempuri.org/0>"; start-info="application/soap+xml"',
)


@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_wcf_tempuri_ids_and_leading_crlf(chunk: int) -> None:
    with read(WCF_TYPE, WCF, chunk) as package:
        assert package.root_headers.content_id == "http://tempuri.org/0"
        (include,) = resolve_xop_includes(parse_xml(package.root), package)
        assert include.part.content_id == "http://tempuri.org/1/638509440267508087"
        assert body(package, include.part.content_id) == b"\x00DICM\r\n"
        assert include.element.getparent() is not None


def test_broken_start_parameter_falls_back_to_first_part() -> None:
    # Metriport's test passes this WCF Content-Type (sic), unbalanced quotes and all.
    value = (
        'multipart/related; type="application/xop+xml";start=""<http://tempuri.org/0>";'
        'boundary="uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=1";start-info="application/soap+xml'
    )
    assert "start" in parse_media_type(value).repaired
    with read(value, WCF) as package:
        assert package.root_headers.content_id == "http://tempuri.org/0"
        assert list(package.parts) == ["http://tempuri.org/1/638509440267508087"]


AXIS2 = (
    b"--MIMEBoundary_axis\n"
    b'content-type: application/xop+xml; charset=UTF-8; type="application/soap+xml";\n'
    b"content-transfer-encoding: binary\n"
    b"content-id: <0.urn:uuid:2a28fe28-cd7d-44f9-88dd-0ab2a2d80073>\n"
    b"\n"
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><Document> '
    b'<xop:Include href="cid:1.urn:uuid:83e0fc9b-b6b3-4c40-a4fe-de080e941f82" '
    b'xmlns:xop="http://www.w3.org/2004/08/xop/include"/> </Document></s:Body></s:Envelope>\n'
    b"--MIMEBoundary_axis\n"
    b"content-id: <1.urn:uuid:83e0fc9b-b6b3-4c40-a4fe-de080e941f82>\n"
    b"content-transfer-encoding: binary\n"
    b"content-type: application/octet-stream;\n"
    b"\n"
    b"%PDF-1.4\n\n"
    b"--MIMEBoundary_axis--"
)


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_axis2_lower_case_headers_trailing_semicolons_lf_only(chunk: int) -> None:
    value = (
        'multipart/related; boundary=MIMEBoundary_axis; type="application/xop+xml"; '
        "start=0.urn:uuid:2a28fe28-cd7d-44f9-88dd-0ab2a2d80073;"
    )
    with read(value, AXIS2, chunk) as package:
        part = package.parts["1.urn:uuid:83e0fc9b-b6b3-4c40-a4fe-de080e941f82"]
        assert part.content_type == "application/octet-stream"
        assert body(package, part.content_id) == b"%PDF-1.4\n"
        assert package.root.endswith(b"</s:Envelope>")
        (include,) = resolve_xop_includes(parse_xml(package.root), package)
        assert include.part is part


CXF = (
    b"--uuid:cxf-1\r\n"
    b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: <root.message@cxf.apache.org>\r\n"
    b"\r\n"
    + envelope("cid:1f4e9a30-2c1b-4a57-9d3e-0d2b6f1a9c11-5@urn%3Aihe%3Aiti%3Axds-b%3A2007")
    + b"\r\n--uuid:cxf-1\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: <1f4e9a30-2c1b-4a57-9d3e-0d2b6f1a9c11-5@urn:ihe:iti:xds-b:2007>\r\n"
    b"\r\n"
    b"DICM"
    b"\r\n--uuid:cxf-1--"
)


def test_cxf_percent_encoded_href() -> None:
    value = multipart_type("uuid:cxf-1", '; start="<root.message@cxf.apache.org>"')
    with read(value, CXF) as package:
        (include,) = resolve_xop_includes(parse_xml(package.root), package)
        assert (
            include.part.content_id
            == "1f4e9a30-2c1b-4a57-9d3e-0d2b6f1a9c11-5@urn:ihe:iti:xds-b:2007"
        )
        assert (
            package.part_for_href(
                "cid:%3C1f4e9a30-2c1b-4a57-9d3e-0d2b6f1a9c11-5@urn:ihe:iti:xds-b:2007%3E"
            )
            is include.part
        )


def test_percent_encoded_content_id_header_still_matches() -> None:
    data = GOLDEN.replace(b"<img1.2b9a@gw.example.org>", b"<img1%2E2b9a@gw.example.org>")
    with read(mtom_content_type(BOUNDARY, ROOT_ID), data) as package:
        assert (
            package.part_for_href("cid:img1.2b9a@gw.example.org").content_id
            == "img1%2E2b9a@gw.example.org"
        )
        assert package.part_for_href("cid:img1%2E2b9a@gw.example.org").size == 8


def test_preamble_epilogue_padding_and_folded_headers() -> None:
    data = (
        b"This is a preamble.\r\n--b1 \t\r\n"
        b'Content-Type: application/xop+xml;\r\n type="application/soap+xml"\r\n'
        b"Content-ID: <r@x>\r\n\r\n<r/>\r\n--b1\r\n"
        b"Content-ID:\r\n <a@x>\r\n\r\nA\r\n--b1--  \r\nepilogue --b1 junk"
    )
    with read(multipart_type("b1", "; start=r@x"), data, 2) as package:
        assert package.root == b"<r/>"
        assert package.root_headers.content_type == "application/xop+xml"
        assert body(package, "a@x") == b"A"


def test_root_found_by_start_even_when_not_first() -> None:
    data = b"--b\r\nContent-ID: <a@x>\r\n\r\nA\r\n--b\r\nContent-ID: <r@x>\r\n\r\n<r/>\r\n--b--"
    with read(multipart_type("b", '; start="<r@x>"'), data) as package:
        assert package.root == b"<r/>"
        assert list(package.parts) == ["a@x"]
    with read(multipart_type("b"), data) as package:  # no start: the first part
        assert package.root == b"A"


@pytest.mark.parametrize("encoding", [b"8bit", b"7bit", b"BINARY", None])
def test_identity_transfer_encodings(encoding: bytes | None) -> None:
    header = b"Content-Transfer-Encoding: " + encoding + b"\r\n" if encoding else b""
    data = (
        b"--b\r\nContent-ID: <r@x>\r\n\r\n<r/>\r\n--b\r\nContent-ID: <a@x>\r\n"
        + header
        + b"\r\n\x00\xff\r\n--b--\r\n"
    )
    with read(multipart_type("b"), data) as package:
        assert body(package, "a@x") == b"\x00\xff"


def test_base64_transfer_encoding_is_decoded() -> None:
    data = (
        b"--b\r\nContent-ID: <r@x>\r\n\r\n<r/>\r\n--b\r\nContent-ID: <a@x>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nRElD\r\nTQAB/w==\r\n--b--\r\n"
    )
    for chunk in (0, 1, 3):
        with read(multipart_type("b"), data, chunk) as package:
            assert body(package, "a@x") == b"DICM\x00\x01\xff"


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        (b"quoted-printable", b"abc"),
        (b"x-uuencode", b"abc"),
        (b"base64", b"RElD!"),
        (b"base64", b"RElDT"),
    ],
)
def test_unsupported_or_bad_transfer_encoding(encoding: bytes, payload: bytes) -> None:
    data = (
        ROOT_PART
        + b"--b\r\nContent-ID: <a@x>\r\nContent-Transfer-Encoding: "
        + encoding
        + b"\r\n\r\n"
        + payload
        + b"\r\n--b--\r\n"
    )
    with pytest.raises(MimeMalformed):
        read(multipart_type("b"), data)


@pytest.mark.parametrize(
    "value",
    [
        'application/soap+xml; charset=UTF-8; action="urn:ihe:iti:2007:CrossGatewayRetrieve"',
        "text/xml",
        'application/xop+xml; type="application/soap+xml"',
    ],
)
def test_simple_soap_body_is_a_root_only_package(value: str) -> None:
    with read(value, b"<env:Envelope/>", 3) as package:
        assert not package.multipart
        assert package.root == b"<env:Envelope/>"
        assert package.parts == {}
        assert resolve_xop_includes(parse_xml(envelope()), package) == ()


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        GOLDEN[:-4],
        GOLDEN[:-30],
        GOLDEN[:60],
        GOLDEN[:25],
        b"--MIMEBoundary_4b1f0c2d",
        b"--MIMEBoundary_4b1f0c2d\r\nContent-ID: <r",
    ],
)
def test_truncated_stream(data: bytes) -> None:
    with pytest.raises(MimeTruncated):
        read(mtom_content_type(BOUNDARY, ROOT_ID), data)


@pytest.mark.parametrize("data", [b"", b"just a preamble\r\n", b"--MIMEBoundary_4b1f0c2d--\r\n"])
def test_no_part_is_missing_root(data: bytes) -> None:
    with pytest.raises(MimeMissingRoot):
        read(mtom_content_type(BOUNDARY, ROOT_ID), data)


def test_start_that_no_part_carries_is_missing_root() -> None:
    with pytest.raises(MimeMissingRoot, match="start"):
        read(mtom_content_type(BOUNDARY, "other@gw.example.org"), GOLDEN)


def test_unknown_cid() -> None:
    with read(mtom_content_type(BOUNDARY, ROOT_ID), GOLDEN) as package:
        with pytest.raises(MimeUnknownCid):
            resolve_xop_includes(parse_xml(envelope("cid:img2@gw.example.org")), package)
        with pytest.raises(MimeUnknownCid):
            package.part_for_href("cid:img1.2b9a@gw.example.org.evil")
        with pytest.raises(MimeMalformed):
            package.part_for_href("http://img1.2b9a@gw.example.org")
        no_href = f'<r xmlns:xop="{XOP}"><xop:Include/></r>'.encode()
        with pytest.raises(MimeMalformed):
            resolve_xop_includes(parse_xml(no_href), package)


@pytest.mark.parametrize(
    "value",
    [
        "multipart/related",
        'multipart/related; type="application/xop+xml"; start="<r@x>"',
        "multipart/related; boundary=",
        "text/html; charset=utf-8",
        "nonsense",
        "",
        'multipart/related; boundary="a\r\nb"',
    ],
)
def test_unusable_content_type(value: str) -> None:
    with pytest.raises(MimeMalformed):
        MtomReader(value)


@pytest.mark.parametrize(
    "data",
    [
        b"--b\r\nContent-ID <r@x>\r\n\r\n<r/>\r\n--b--",  # header without colon
        b"--b\r\n continuation first\r\n\r\n<r/>\r\n--b--",
        b"--bXYZ\r\nContent-ID: <r@x>\r\n\r\n<r/>\r\n--b--",  # text after the boundary
        b"--b\r\nContent-ID: <r@x>\r\nContent-Type: nonsense\r\n\r\n<r/>\r\n--b--",
        ROOT_PART + b"--b\r\nContent-Type: application/dicom\r\n\r\nA\r\n--b--",  # no Content-ID
        ROOT_PART
        + b"--b\r\nContent-ID: <a@x>\r\n\r\nA\r\n--b\r\nContent-ID: <a@x>\r\n\r\nB\r\n--b--",
        b"--b\r\nContent-ID: <r@x>\r\nContent-ID: <s@x>\r\n\r\n<r/>\r\n--b--",
    ],
)
def test_malformed_parts(data: bytes) -> None:
    with pytest.raises(MimeMalformed):
        read(multipart_type("b"), data)


def test_header_block_over_the_limit() -> None:
    data = b"--b\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n<r/>\r\n--b--"
    for chunk in (0, 4096):
        with pytest.raises(MimeMalformed, match="headers exceed"):
            read(multipart_type("b"), data, chunk)


def test_part_size_limits() -> None:
    with pytest.raises(MimePartTooLarge, match="root"):
        read(mtom_content_type(BOUNDARY, ROOT_ID), GOLDEN, limits=MtomLimits(max_root_bytes=6))
    with pytest.raises(MimePartTooLarge, match="root"):
        read("application/soap+xml", b"<env:Envelope/>", 4, limits=MtomLimits(max_root_bytes=8))
    with pytest.raises(MimePartTooLarge):
        read(mtom_content_type(BOUNDARY, ROOT_ID), GOLDEN, limits=MtomLimits(max_part_bytes=6))
    with pytest.raises(MimeTooManyParts):
        read(mtom_content_type(BOUNDARY, ROOT_ID), GOLDEN, limits=MtomLimits(max_parts=2))
    read(
        mtom_content_type(BOUNDARY, ROOT_ID),
        GOLDEN,
        limits=MtomLimits(max_root_bytes=7, max_part_bytes=8, max_parts=3),
    ).close()


def test_mime_errors_are_sender_faults() -> None:
    for cls in (
        MimeMalformed,
        MimeTruncated,
        MimeMissingRoot,
        MimeUnknownCid,
        MimePartTooLarge,
        MimeTooManyParts,
    ):
        assert issubclass(cls, WireError)
        assert cls.fault_code.value == "Sender"


# --- spooling -------------------------------------------------------------------------------


def spooled_body(part: MtomPart) -> SpooledBody:
    assert isinstance(part.body, SpooledBody)
    return part.body


def spooled(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("imagebridge-part-*"))


def package_with(sizes: list[int]) -> bytes:
    attachments = [
        Attachment(f"p{i}@x", "application/dicom", [bytes([i % 256]) * s])
        for i, s in enumerate(sizes)
    ]
    return b"".join(encode_mtom(b"<r/>", attachments, boundary=BOUNDARY, root_content_id=ROOT_ID))


def test_spooling_sink_keeps_small_parts_in_memory_and_spools_large_ones(tmp_path: Path) -> None:
    sink = SpoolingSink(threshold=1000, directory=tmp_path)
    data = package_with([10, 5000, 1000])
    package = read(mtom_content_type(BOUNDARY, ROOT_ID), data, 700, sink=sink)
    assert [spooled_body(p).in_memory for p in package.parts.values()] == [True, False, True]
    assert len(spooled(tmp_path)) == 1
    assert body(package, "p1@x") == b"\x01" * 5000
    package.close()
    assert spooled(tmp_path) == []
    with pytest.raises(ValueError):
        package.parts["p1@x"].open()


def test_memory_budget_spools_many_small_parts(tmp_path: Path) -> None:
    sink = SpoolingSink(threshold=1000, memory_budget=2500, directory=tmp_path)
    with read(mtom_content_type(BOUNDARY, ROOT_ID), package_with([900] * 5), sink=sink) as package:
        in_memory = [spooled_body(p).in_memory for p in package.parts.values()]
        assert in_memory == [True, True, False, False, False]
        assert all(body(package, cid) == bytes([i]) * 900 for i, cid in enumerate(package.parts))


def test_errors_remove_spool_files(tmp_path: Path) -> None:
    data = package_with([5000, 5000])
    with pytest.raises(MimeTruncated):
        read(
            mtom_content_type(BOUNDARY, ROOT_ID),
            data[:-2000],
            512,
            sink=SpoolingSink(threshold=100, directory=tmp_path),
        )
    assert spooled(tmp_path) == []
    bad = data.replace(b"Content-ID: <p1@x>", b"Content-ID: <p0@x>")
    with pytest.raises(MimeMalformed):
        read(
            mtom_content_type(BOUNDARY, ROOT_ID),
            bad,
            512,
            sink=SpoolingSink(threshold=100, directory=tmp_path),
        )
    assert spooled(tmp_path) == []


@pytest.mark.anyio
async def test_source_failure_removes_spool_files(tmp_path: Path) -> None:
    data = package_with([5000])

    async def broken() -> AsyncIterator[bytes]:
        yield data[:3000]
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await read_mtom(
            mtom_content_type(BOUNDARY, ROOT_ID),
            broken(),
            sink=SpoolingSink(threshold=100, directory=tmp_path),
        )
    assert spooled(tmp_path) == []


def test_memory_stays_flat_for_200_mb(tmp_path: Path) -> None:
    block = os.urandom(64 * 1024)
    per_part = 1600  # 1600 x 64 KiB = 100 MiB per part

    def big_body() -> Iterator[bytes]:
        for _ in range(per_part):
            yield block

    attachments = [Attachment(f"big{i}@x", "application/dicom", big_body()) for i in range(2)]
    tracemalloc.start()
    try:
        reader = MtomReader(
            mtom_content_type(BOUNDARY, ROOT_ID), sink=SpoolingSink(directory=tmp_path)
        )
        for chunk in encode_mtom(b"<r/>", attachments, boundary=BOUNDARY, root_content_id=ROOT_ID):
            reader.feed(chunk)
        package = reader.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with package:
        assert [p.size for p in package.parts.values()] == [per_part * len(block)] * 2
        with package.parts["big1@x"].open() as stream:
            assert stream.read(len(block)) == block
    assert peak < 4 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"


# --- real partner captures ------------------------------------------------------------------

MTOM_SAMPLES = {
    # file: (number of attachments, Content-Type to use; None = boundary from the first line)
    "multi-mtom.txt": (
        2,
        # The Content-Type Metriport's own test sends with this capture (broken start).
        'multipart/related; type="application/xop+xml";start=""<http://tempuri.org/0>";'
        'boundary="uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=51889";start-info="application/soap+xml"',
    ),
    "mtom-binary-xml.txt": (1, None),
    "mtom-xml.txt": (1, None),
    "mtom-non-xml.txt": (1, None),
    "mtom-without-multipart.txt": (0, None),
}


def email_parts(data: bytes, boundary: str) -> list[bytes]:
    """The part bodies as Python's email package splits them (an independent oracle)."""
    head = f'Content-Type: multipart/related; boundary="{boundary}"\r\n\r\n'.encode()
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + data)
    return [part.get_payload(decode=True) for part in message.get_payload()]  # type: ignore[misc, union-attr]


@pytest.mark.conformance
@pytest.mark.parametrize("name", sorted(MTOM_SAMPLES))
@pytest.mark.parametrize("chunk", [0, 1, 64])
def test_real_mtom_samples(conformance_dir: Path, name: str, chunk: int) -> None:
    data = (conformance_dir / "samples" / "metriport" / "iti-39" / name).read_bytes()
    count, content_type = MTOM_SAMPLES[name]
    # The captures hold the body only; the boundary is on the first line.
    boundary = data.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")[2:].decode()
    with read(content_type or multipart_type(boundary), data, chunk) as package:
        root = parse_xml(package.root)
        includes = resolve_xop_includes(root, package)
        assert len(includes) == len(package.parts) == count
        expected = email_parts(data, boundary)
        assert package.root == expected[0]
        assert [body(package, i.part.content_id) for i in includes] == expected[1:]
        for include in includes:
            assert include.element.getparent().tag.endswith("Document")  # type: ignore[union-attr]
            assert include.part.size > 0


def test_part_headers_accessors() -> None:
    headers = PartHeaders(
        (("content-id", " < a@x > "), ("content-type", "Text/XML; charset=utf-8"))
    )
    assert headers.content_id == "a@x"
    assert headers.content_type == "text/xml"
    assert headers.transfer_encoding == "binary"
    assert PartHeaders((("content-id", "<>"),)).content_id is None


@pytest.mark.anyio
async def test_root_last_package_reads_back() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part-one"
        yield b"-more"

    async def root() -> bytes:
        return b"<env/>"

    chunks = encode_mtom_root_last(
        [Attachment("a@x", "application/dicom", body()), Attachment("b@x", "text/plain", [b"b"])],
        root,
        boundary="bnd",
        root_content_id="root@x",
    )
    data = b"".join([c async for c in chunks])
    assert data.startswith(b"--bnd\r\n")
    assert data.index(b"<root@x>") > data.index(b"<b@x>")
    with await read_mtom(mtom_content_type("bnd", "root@x"), [data]) as package:
        assert package.root == b"<env/>"
        assert package.parts["a@x"].open().read() == b"part-one-more"
        assert package.parts["b@x"].size == 1
