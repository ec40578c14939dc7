"""MTOM/XOP package writer (SOAP 1.2 MTOM, XOP 1.0) for ITI-39, ITI-43, RAD-69 and RAD-75.

:func:`encode_mtom` and :func:`encode_mtom_async` yield the multipart/related
body chunk by chunk; attachment bodies pass through untouched and are never
joined.  The boundary and the Content-IDs are parameters, so the output is
exactly reproducible; :func:`mtom_content_type` gives the matching HTTP
``Content-Type``.  The root part is sent as
``application/xop+xml; charset=UTF-8; type="application/soap+xml"`` and every
part with ``Content-Transfer-Encoding: binary`` (spec/soap-transport.md 4.2).
The caller picks a boundary that cannot occur in the attachments (a random
UUID); the writer does not search the bodies for it.  Build the matching
``xop:Include/@href`` with ``model.retrieve.XopInclude.for_content_id``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from imagebridge.wire.chunks import each, nonempty_chunks

ROOT_PART_CONTENT_TYPE: Final = 'application/xop+xml; charset=UTF-8; type="application/soap+xml"'
_BOUNDARY: Final = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")
_CONTENT_ID: Final = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")  # printable ASCII except < >
_HEADER_VALUE: Final = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class Attachment:
    """An XOP attachment part to send: Content-ID (no brackets), media type, body chunks."""

    content_id: str
    content_type: str
    body: Iterable[bytes] | AsyncIterable[bytes]

    def __post_init__(self) -> None:
        _check_content_id(self.content_id)
        if not _HEADER_VALUE.fullmatch(self.content_type):
            raise ValueError(f"attachment Content-Type {self.content_type[:80]!r} is not valid")


def mtom_content_type(boundary: str, root_content_id: str) -> str:
    """HTTP ``Content-Type`` of an MTOM/XOP message (multipart/related, RFC 2387)."""
    _check_boundary(boundary)
    _check_content_id(root_content_id)
    return (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<{root_content_id}>"; start-info="application/soap+xml"'
    )


def encode_mtom(
    root: bytes, attachments: Iterable[Attachment], *, boundary: str, root_content_id: str
) -> Iterator[bytes]:
    """MTOM/XOP package writer: the multipart/related body, chunk by chunk (sync bodies)."""
    framing = _Framing(boundary, root_content_id)
    return _encode(framing, root, attachments)


def encode_mtom_async(
    root: bytes,
    attachments: Iterable[Attachment] | AsyncIterable[Attachment],
    *,
    boundary: str,
    root_content_id: str,
) -> AsyncIterator[bytes]:
    """MTOM/XOP package writer for async code: attachments and bodies may be sync or async."""
    framing = _Framing(boundary, root_content_id)
    return _encode_async(framing, root, attachments)


def encode_mtom_root_last(
    attachments: Iterable[Attachment] | AsyncIterable[Attachment],
    root: Callable[[], Awaitable[bytes]],
    *,
    boundary: str,
    root_content_id: str,
) -> AsyncIterator[bytes | memoryview]:
    """MTOM/XOP package writer that sends the attachments first and the root part last.

    The ``start`` parameter of :func:`mtom_content_type` names the root wherever
    it stands (RFC 2387), so a responder can stream parts as it fetches them and
    write the SOAP envelope, with the final status and per-document errors,
    once every part is known.  *root* is awaited after the last attachment.

    A body with a ``with_head`` method (:class:`~imagebridge.wire.chunks.HeadedBody`)
    is offered its part header and may return header and first chunk as one
    chunk, so a small part costs one write, not two; that chunk may be a
    ``memoryview``.
    """
    framing = _Framing(boundary, root_content_id)
    return _encode_root_last(framing, attachments, root)


async def _encode_root_last(
    framing: _Framing,
    attachments: Iterable[Attachment] | AsyncIterable[Attachment],
    root: Callable[[], Awaitable[bytes]],
) -> AsyncIterator[bytes | memoryview]:
    first = True
    # An async source is iterated directly: one generator layer less per part.
    source = attachments if isinstance(attachments, AsyncIterable) else each(attachments)
    async for attachment in source:
        head = framing.part_head(attachment)
        if first:
            head = head[2:]  # no CRLF before the very first delimiter
            first = False
        body = attachment.body
        with_head = getattr(body, "with_head", None)
        merged = with_head(head) if with_head is not None else None
        yield head if merged is None else merged
        if isinstance(body, AsyncIterable):  # iterated directly: one generator less per chunk
            async for chunk in body:
                if chunk:
                    yield chunk
        else:
            for chunk in body:
                if chunk:
                    yield chunk
    yield framing.root_head if first else b"\r\n" + framing.root_head
    envelope = await root()
    if envelope:
        yield envelope
    yield framing.closing


def _encode(framing: _Framing, root: bytes, attachments: Iterable[Attachment]) -> Iterator[bytes]:
    yield framing.root_head
    if root:
        yield root
    for attachment in attachments:
        yield framing.part_head(attachment)
        body = attachment.body
        if isinstance(body, AsyncIterable):
            raise TypeError("encode_mtom takes sync bodies; use encode_mtom_async")
        for chunk in body:
            if chunk:
                yield chunk
    yield framing.closing


async def _encode_async(
    framing: _Framing, root: bytes, attachments: Iterable[Attachment] | AsyncIterable[Attachment]
) -> AsyncIterator[bytes]:
    yield framing.root_head
    if root:
        yield root
    async for attachment in each(attachments):
        yield framing.part_head(attachment)
        async for chunk in nonempty_chunks(attachment.body):
            yield chunk
    yield framing.closing


class _Framing:
    """Delimiters and part headers of one package; checks Content-IDs are unique."""

    def __init__(self, boundary: str, root_content_id: str) -> None:
        _check_boundary(boundary)
        _check_content_id(root_content_id)
        self._dash = b"--" + boundary.encode("ascii")
        self._seen = {root_content_id}
        self.root_head = self._dash + b"\r\n" + _headers(ROOT_PART_CONTENT_TYPE, root_content_id)
        self.closing = b"\r\n" + self._dash + b"--\r\n"

    def part_head(self, attachment: Attachment) -> bytes:
        if attachment.content_id in self._seen:
            raise ValueError(f"Content-ID {attachment.content_id!r} is used twice")
        self._seen.add(attachment.content_id)
        return (
            b"\r\n"
            + self._dash
            + b"\r\n"
            + _headers(attachment.content_type, attachment.content_id)
        )


def _headers(content_type: str, content_id: str) -> bytes:
    return (
        f"Content-Type: {content_type}\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        f"Content-ID: <{content_id}>\r\n\r\n"
    ).encode("ascii")


def _check_boundary(boundary: str) -> None:
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"MIME boundary {boundary[:80]!r} is not valid (RFC 2046 bchars, 1-70)")


def _check_content_id(content_id: str) -> None:
    if not _CONTENT_ID.fullmatch(content_id):
        raise ValueError(f"Content-ID {content_id[:80]!r} must be printable ASCII without <>")
