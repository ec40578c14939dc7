"""MTOM/XOP packages (SOAP 1.2 MTOM, XOP 1.0) for ITI-39, ITI-43, RAD-69 and RAD-75.

This is the one import point for MTOM: the writer (:func:`encode_mtom`,
:func:`encode_mtom_async`, :func:`mtom_content_type`, :class:`Attachment`) lives
in :mod:`imagebridge.wire.mtom_writer` and is re-exported here; the reader and
XOP resolution live here.

Reader: :class:`MtomReader` is fed the HTTP body chunk by chunk (any sizes)
and returns an :class:`MtomPackage`; :func:`read_mtom` drives it from a sync or
async iterable.  The root part is kept in memory up to
:attr:`MtomLimits.max_root_bytes` (it is parsed as XML next); every other part
goes to a :class:`~imagebridge.wire.spool.PartSink` (by default one that spools
large parts to disk).  Input rules (spec/soap-transport.md section 4 and the
partner quirks in conformance/README.md):

* a simple SOAP body (``application/soap+xml``, ``text/xml``) is a package
  with a root part only;
* ``start`` is matched with angle brackets stripped; if it is absent or
  broken (unbalanced quotes, as one WCF capture has) the first part is the
  root; a well-formed ``start`` that no part carries is :class:`MimeMissingRoot`;
* Content-Transfer-Encoding ``binary``, ``8bit``, ``7bit`` or absent is taken
  as is; ``base64`` is decoded on the fly (whitespace ignored, strict
  alphabet); anything else (``quoted-printable``) is :class:`MimeMalformed`;
* every attachment part needs a unique Content-ID (:class:`MimeMalformed`).

:func:`resolve_xop_includes` finds every ``xop:Include`` of the parsed root
and returns the part it names (:class:`MimeUnknownCid` if none does).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Final
from urllib.parse import unquote

from imagebridge.errors import (
    MimeMalformed,
    MimeMissingRoot,
    MimePartTooLarge,
    MimeTooManyParts,
    MimeUnknownCid,
)
from imagebridge.wire import ns
from imagebridge.wire.mime import (
    Base64TransferDecoder,
    MultipartParser,
    PartHeaders,
    content_id_from_cid_url,
    normalize_content_id,
    parse_media_type,
)
from imagebridge.wire.mtom_writer import (
    ROOT_PART_CONTENT_TYPE,
    Attachment,
    encode_mtom,
    encode_mtom_async,
    encode_mtom_root_last,
    mtom_content_type,
)
from imagebridge.wire.spool import PartSink, SpoolingSink, StoredBody
from imagebridge.wire.xml import DEFAULT_LIMITS, Element

__all__ = [
    "DEFAULT_MTOM_LIMITS",
    "ROOT_PART_CONTENT_TYPE",
    "Attachment",
    "MtomLimits",
    "MtomPackage",
    "MtomPart",
    "MtomReader",
    "ResolvedInclude",
    "encode_mtom",
    "encode_mtom_async",
    "encode_mtom_root_last",
    "mtom_content_type",
    "read_mtom",
    "resolve_xop_includes",
]

_SINGLE_PART_TYPES: Final = frozenset(
    {"application/soap+xml", "text/xml", "application/xml", "application/xop+xml"}
)
_IDENTITY_ENCODINGS: Final = frozenset({"binary", "8bit", "7bit"})


# --- reader ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MtomLimits:
    """Ceilings applied while reading one MTOM/XOP package."""

    max_root_bytes: int = DEFAULT_LIMITS.max_bytes
    max_part_bytes: int | None = None
    max_parts: int = 20_000
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if min(self.max_root_bytes, self.max_parts, self.max_header_bytes) <= 0 or (
            self.max_part_bytes is not None and self.max_part_bytes <= 0
        ):
            raise ValueError("MtomLimits values must be positive")


DEFAULT_MTOM_LIMITS = MtomLimits()


@dataclass(frozen=True, slots=True)
class MtomPart:
    """A received XOP attachment part: Content-ID (no brackets), headers, stored body."""

    content_id: str
    headers: PartHeaders
    content_type: str | None
    body: StoredBody

    @property
    def size(self) -> int:
        return self.body.size

    def open(self) -> BinaryIO:
        """A new binary stream over the part body."""
        return self.body.open()

    def chunks(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """The part body as chunks, for example as the body of an outgoing :class:`Attachment`."""
        with self.body.open() as stream:
            while chunk := stream.read(chunk_size):
                yield chunk


@dataclass(frozen=True, slots=True)
class MtomPackage:
    """A received SOAP message: root part (MTOM/XOP or simple SOAP) and attachments by Content-ID.

    Close it (or use it as a context manager) to remove spooled parts.
    """

    root: bytes
    root_headers: PartHeaders
    parts: Mapping[str, MtomPart]
    multipart: bool

    def part_for_href(self, href: str) -> MtomPart:
        """The part an ``xop:Include/@href`` names (RFC 2392 ``cid:`` URL, tolerant match)."""
        content_id = content_id_from_cid_url(href)
        found = self.parts.get(content_id)
        if found is None:  # the Content-ID header itself may be percent-encoded
            raw = normalize_content_id(href.strip()[4:])
            found = self.parts.get(raw) or next(
                (p for key, p in self.parts.items() if unquote(key) == content_id), None
            )
        if found is None:
            raise MimeUnknownCid(f"xop:Include names cid:{content_id[:120]}, which no part carries")
        return found

    def close(self) -> None:
        """Release every stored attachment body (idempotent)."""
        for part in self.parts.values():
            part.body.close()

    def __enter__(self) -> MtomPackage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MtomReader:
    """Incremental MTOM/XOP package reader: :meth:`feed` chunks, then :meth:`close`.

    On any error the reader releases what it stored before raising; call
    :meth:`abort` yourself if you stop feeding for another reason.
    """

    def __init__(
        self,
        content_type: str,
        *,
        sink: PartSink | None = None,
        limits: MtomLimits = DEFAULT_MTOM_LIMITS,
    ) -> None:
        media = parse_media_type(content_type)
        sink = sink if sink is not None else SpoolingSink()
        self._parser: MultipartParser | None = None
        if media.mime_type == "multipart/related":
            boundary = media.param("boundary")
            if not boundary:
                raise MimeMalformed("multipart/related Content-Type has no boundary parameter")
            start = media.param("start")
            start_id = None if start is None or "start" in media.repaired else start
            self._assembler = _Assembler(sink, limits, normalize_content_id(start_id or "") or None)
            self._parser = MultipartParser(
                boundary, self._assembler, max_header_bytes=limits.max_header_bytes
            )
        elif media.mime_type in _SINGLE_PART_TYPES:
            self._assembler = _Assembler(sink, limits, None)
            self._assembler.start_part(PartHeaders((("content-type", content_type.strip()),)))
        else:
            raise MimeMalformed(f"Content-Type {media.mime_type!r} is not a SOAP or MTOM message")

    def feed(self, data: bytes) -> None:
        """Consume the next chunk of the HTTP body."""
        try:
            if self._parser is not None:
                self._parser.feed(data)
            elif data:
                self._assembler.part_data(memoryview(data))
        except BaseException:
            self.abort()
            raise

    def close(self) -> MtomPackage:
        """End of the body: the package, or :class:`MimeTruncated`/:class:`MimeMissingRoot`."""
        try:
            if self._parser is not None:
                self._parser.close()
            else:
                self._assembler.end_part()
            return self._assembler.package(multipart=self._parser is not None)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Release the part in progress and every stored part (idempotent)."""
        self._assembler.abort()


async def read_mtom(
    content_type: str,
    body: AsyncIterable[bytes] | Iterable[bytes],
    *,
    sink: PartSink | None = None,
    limits: MtomLimits = DEFAULT_MTOM_LIMITS,
) -> MtomPackage:
    """MTOM/XOP package reader over an async (or sync) iterable of body chunks."""
    reader = MtomReader(content_type, sink=sink, limits=limits)
    try:
        if isinstance(body, AsyncIterable):
            async for chunk in body:
                reader.feed(chunk)
        else:
            for chunk in body:
                reader.feed(chunk)
    except BaseException:
        reader.abort()
        raise
    return reader.close()


class _Assembler:
    """Routes parser events: the root part to memory, the others to the sink."""

    def __init__(self, sink: PartSink, limits: MtomLimits, start: str | None) -> None:
        self._sink = sink
        self._limits = limits
        self._start = start
        self._count = 0
        self._parts: dict[str, MtomPart] = {}
        self._root: bytes | None = None
        self._root_id: str | None = None
        self._root_headers: PartHeaders | None = None
        # The part in progress.
        self._headers: PartHeaders | None = None
        self._content_type: str | None = None
        self._is_root = False
        self._root_buffer = bytearray()
        self._size = 0
        self._base64: Base64TransferDecoder | None = None

    def start_part(self, headers: PartHeaders) -> None:
        self._count += 1
        if self._count > self._limits.max_parts:
            raise MimeTooManyParts(f"more than {self._limits.max_parts} MIME parts")
        for name in ("content-id", "content-type", "content-transfer-encoding"):
            if headers.count(name) > 1:
                raise MimeMalformed(f"a MIME part repeats its {name} header")
        encoding = headers.transfer_encoding
        if encoding not in _IDENTITY_ENCODINGS and encoding != "base64":
            raise MimeMalformed(f"Content-Transfer-Encoding {encoding[:40]!r} is not supported")
        content_id = headers.content_id
        content_type = headers.content_type  # MimeMalformed if unreadable
        self._is_root = self._root_headers is None and (
            content_id == self._start if self._start is not None else self._count == 1
        )
        if self._is_root:
            self._root_headers, self._root_id = headers, content_id
        elif content_id is None:
            raise MimeMalformed("an attachment part has no Content-ID")
        elif content_id in self._parts or content_id == self._root_id:
            raise MimeMalformed(f"Content-ID <{content_id[:120]}> is used by two parts")
        self._headers = headers
        self._content_type = content_type
        self._size = 0
        self._base64 = Base64TransferDecoder() if encoding == "base64" else None
        if not self._is_root:
            self._sink.start_part(headers)

    def part_data(self, data: memoryview) -> None:
        if self._base64 is not None:
            data = memoryview(self._base64.feed(data))
        self._size += len(data)
        if self._is_root:
            if self._size > self._limits.max_root_bytes:
                raise MimePartTooLarge(f"root part exceeds {self._limits.max_root_bytes} bytes")
            self._root_buffer += data
            return
        limit = self._limits.max_part_bytes
        if limit is not None and self._size > limit:
            raise MimePartTooLarge(f"MIME part exceeds {limit} bytes")
        self._sink.part_data(data)

    def end_part(self) -> None:
        if self._base64 is not None:
            self._base64.finish()
        headers = self._headers
        if headers is None:
            return
        self._headers = None
        if self._is_root:
            self._root = bytes(self._root_buffer)
            self._root_buffer = bytearray()
            return
        content_id = headers.content_id or ""
        body = self._sink.end_part()
        self._parts[content_id] = MtomPart(content_id, headers, self._content_type, body)

    def package(self, *, multipart: bool) -> MtomPackage:
        if self._root is None or self._root_headers is None:
            if self._count == 0:
                raise MimeMissingRoot("the MTOM package has no part")
            raise MimeMissingRoot(f"no MIME part carries the start Content-ID <{self._start}>")
        parts, self._parts = self._parts, {}  # the package owns the stored bodies now
        return MtomPackage(self._root, self._root_headers, parts, multipart)

    def abort(self) -> None:
        if self._headers is not None and not self._is_root:
            self._sink.abort()
        self._headers = None
        self._root_buffer = bytearray()
        for part in self._parts.values():
            part.body.close()
        self._parts.clear()


# --- XOP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedInclude:
    """An ``xop:Include`` element of the root part and the MIME part it names (XOP 1.0)."""

    element: Element
    part: MtomPart


def resolve_xop_includes(root: Element, package: MtomPackage) -> tuple[ResolvedInclude, ...]:
    """Resolve every ``xop:Include`` under *root* to its part (:class:`MimeUnknownCid` if none)."""
    found: list[ResolvedInclude] = []
    for element in root.iter(ns.q(ns.XOP, "Include")):
        href = element.get("href")
        if href is None or not href.strip():
            raise MimeMalformed("xop:Include has no href attribute")
        found.append(ResolvedInclude(element, package.part_for_href(href)))
    return tuple(found)
