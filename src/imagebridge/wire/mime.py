"""MIME multipart/related (RFC 2046 5.1, RFC 2387) as MTOM/XOP packages use it.

Four pieces, all pure (no I/O):

* :func:`parse_media_type` reads a ``Content-Type`` value tolerantly: trailing
  semicolons, quoted or bare parameters, and the broken quoting some partners
  send (``start=""<http://tempuri.org/0>"``) are repaired and flagged.
* :class:`PartHeaders` and the Content-ID rules: IDs are compared with angle
  brackets stripped; ``cid:`` URLs (RFC 2392) are percent-decoded first.
* :class:`Base64TransferDecoder`, a streaming decoder for ``base64``, the only
  Content-Transfer-Encoding accepted besides the identity ones.
* :class:`MultipartParser`, an incremental push parser.  It searches for the
  delimiter with ``bytes.find`` and hands body data to its handler as
  zero-copy ``memoryview`` slices of the fed chunk; between chunks it keeps at
  most the few bytes that could start a delimiter, so memory does not grow
  with part size.  CRLF and bare-LF line ends are both accepted; a CR right
  before a delimiter's LF belongs to the delimiter (so a binary part that ends
  in CR inside an LF-only message loses that byte: an inherent ambiguity).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import unquote

from imagebridge.errors import MimeMalformed, MimeMissingRoot, MimeTruncated

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAX_BOUNDARY: Final = 200  # RFC 2046 says 70; some stacks exceed it
_MAX_PADDING: Final = 256  # transport padding allowed after a delimiter


# --- media types ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaType:
    """A MIME media type with its parameters (RFC 2045 5.1), read tolerantly.

    ``repaired`` names the parameters whose value was not validly quoted and
    had to be salvaged; callers decide whether to trust them.
    """

    mime_type: str
    params: tuple[tuple[str, str], ...] = ()
    repaired: frozenset[str] = frozenset()

    def param(self, name: str) -> str | None:
        """The first value of parameter *name* (case-insensitive), or None."""
        key = name.lower()
        for k, v in self.params:
            if k == key:
                return v
        return None


def parse_media_type(value: str) -> MediaType:
    """Parse a ``Content-Type`` header value; raise :class:`MimeMalformed` if unusable."""
    head, _, rest = value.strip().partition(";")
    mime_type = head.strip().lower()
    kind, slash, sub = mime_type.partition("/")
    if not slash or not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(sub):
        raise MimeMalformed(f"Content-Type {head.strip()[:80]!r} is not a media type")
    params, repaired = _parse_params(rest)
    return MediaType(mime_type, params, repaired)


def _parse_params(text: str) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    params: list[tuple[str, str]] = []
    repaired: set[str] = set()
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t;":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        semi = text.find(";", i)
        if eq < 0 or 0 <= semi < eq:  # a bare word: keep it, flagged
            end = n if semi < 0 else semi
            params.append((text[i:end].strip().lower(), ""))
            repaired.add(params[-1][0])
            i = end
            continue
        name = text[i:eq].strip().lower()
        j = eq + 1
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == '"':
            quoted, after, closed = _quoted_string(text, j)
            k = after
            while k < n and text[k] in " \t":
                k += 1
            if closed and (k >= n or text[k] == ";"):
                params.append((name, quoted))
                i = k
                continue
            # Unbalanced quotes: take the raw text up to the next ';' and drop the quotes.
            end = text.find(";", j)
            end = n if end < 0 else end
            params.append((name, text[j:end].replace('"', "").strip()))
            repaired.add(name)
            i = end
        else:
            end = text.find(";", j)
            end = n if end < 0 else end
            params.append((name, text[j:end].strip()))
            i = end
    return tuple(params), frozenset(repaired)


def _quoted_string(text: str, start: int) -> tuple[str, int, bool]:
    """Unescape the quoted-string at *start*: (value, index after it, closed?)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1, True
        else:
            out.append(c)
            i += 1
    return "".join(out), i, False


# --- part headers and Content-IDs -------------------------------------------------------


def normalize_content_id(value: str) -> str:
    """A Content-ID (RFC 2045 7) with whitespace and angle brackets stripped."""
    v = value.strip()
    v = v.removeprefix("<").removesuffix(">")
    return v.strip()


def content_id_from_cid_url(href: str) -> str:
    """The Content-ID named by a ``cid:`` URL (RFC 2392), percent-decoded."""
    h = href.strip()
    if h[:4].lower() != "cid:":
        raise MimeMalformed(f"xop:Include href {h[:80]!r} is not a cid: URL")
    return normalize_content_id(unquote(h[4:]))


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """The MIME header fields of one body part (RFC 2045), names in lower case."""

    fields: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        """The first value of header *name* (case-insensitive), or None."""
        key = name.lower()
        for k, v in self.fields:
            if k == key:
                return v
        return None

    def count(self, name: str) -> int:
        """How many times header *name* occurs."""
        key = name.lower()
        return sum(1 for k, _ in self.fields if k == key)

    @property
    def content_id(self) -> str | None:
        """The part's Content-ID without angle brackets (None when absent or empty)."""
        raw = self.get("content-id")
        if raw is None:
            return None
        return normalize_content_id(raw) or None

    @property
    def content_type(self) -> str | None:
        """The part's ``type/subtype`` in lower case (None when absent)."""
        raw = self.get("content-type")
        return parse_media_type(raw).mime_type if raw is not None else None

    @property
    def transfer_encoding(self) -> str:
        """Content-Transfer-Encoding in lower case; ``binary`` when absent."""
        raw = self.get("content-transfer-encoding")
        return raw.strip().lower() if raw and raw.strip() else "binary"


def parse_part_headers(block: bytes) -> PartHeaders:
    """Parse a part's header block (lines up to the blank line), CRLF or LF ends."""
    fields: list[tuple[str, str]] = []
    try:
        text = block.decode("utf-8")  # RFC 6532 allows UTF-8 header values
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            if not fields:
                raise MimeMalformed("part header block starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.fullmatch(name):
            raise MimeMalformed(f"malformed part header line {line[:80]!r}")
        fields.append((name.lower(), value.strip()))
    return PartHeaders(tuple(fields))


# --- content transfer encoding ----------------------------------------------------------


class Base64TransferDecoder:
    """Streaming decoder for a base64 Content-Transfer-Encoding (RFC 2045 6.8)."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: memoryview) -> bytes:
        text = self._carry + bytes(data).translate(None, b" \t\r\n")
        usable = len(text) - len(text) % 4
        self._carry = text[usable:]
        try:
            return binascii.a2b_base64(text[:usable], strict_mode=True)
        except binascii.Error as exc:
            raise MimeMalformed(f"a base64 MIME part is not valid base64: {exc}") from exc

    def finish(self) -> None:
        if self._carry:
            raise MimeMalformed("a base64 MIME part ends inside a 4-character group")


# --- incremental parser ------------------------------------------------------------------


class MultipartHandler(Protocol):
    """Receiver of :class:`MultipartParser` events, in stream order."""

    def start_part(self, headers: PartHeaders) -> None: ...

    def part_data(self, data: memoryview) -> None:
        """Body bytes; *data* is only valid during the call (copy or write it)."""

    def end_part(self) -> None: ...


_PREAMBLE, _DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


class MultipartParser:
    """Incremental multipart body parser (RFC 2046 5.1.1) with a bounded buffer."""

    def __init__(
        self, boundary: str, handler: MultipartHandler, *, max_header_bytes: int = 16 * 1024
    ) -> None:
        if not 0 < len(boundary) <= _MAX_BOUNDARY or not boundary.isascii():
            raise MimeMalformed("multipart boundary is empty, too long or not ASCII")
        if any(c in boundary for c in "\r\n"):
            raise MimeMalformed("multipart boundary contains a line break")
        self._delimiter = b"\n--" + boundary.encode("ascii")
        self._handler = handler
        self._max_header_bytes = max_header_bytes
        self._state = _PREAMBLE
        # A virtual line break lets a stream that starts with "--boundary" match.
        self._pending = b"\n"

    @property
    def complete(self) -> bool:
        """True once the closing delimiter has been read."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> None:
        """Consume the next chunk of the body (any size, boundaries may straddle chunks)."""
        if self._state == _EPILOGUE:
            return  # the epilogue is ignored (RFC 2046)
        if type(data) is not bytes:
            data = bytes(data)
        if self._pending:
            data = self._pending + data
            self._pending = b""
        view = memoryview(data)
        handler = self._handler
        delimiter = self._delimiter
        state = self._state
        pos = 0
        n = len(data)
        while True:
            if state in (_BODY, _PREAMBLE):
                i = data.find(delimiter, pos)
                if i < 0:
                    keep = self._holdback(data, pos)
                    if state == _BODY and keep > pos:
                        handler.part_data(view[pos:keep])
                    self._pending = data[keep:]
                    break
                if state == _BODY:
                    end = i - 1 if i > pos and data[i - 1] == 0x0D else i
                    if end > pos:
                        handler.part_data(view[pos:end])
                    handler.end_part()
                pos = i + len(delimiter)
                state = _DELIMITER
            elif state == _DELIMITER:
                if n - pos < 2:
                    self._pending = data[pos:]
                    break
                if data[pos : pos + 2] == b"--":
                    state = _EPILOGUE
                    break
                nl = data.find(b"\n", pos, pos + _MAX_PADDING)
                if nl < 0:
                    if n - pos >= _MAX_PADDING:
                        raise MimeMalformed("text follows a multipart boundary on its line")
                    self._pending = data[pos:]
                    break
                if data[pos:nl].strip(b" \t\r"):
                    raise MimeMalformed("text follows a multipart boundary on its line")
                pos = nl + 1
                state = _HEADERS
            else:  # _HEADERS
                blank = _blank_line(data, pos)
                if blank is None:
                    if n - pos > self._max_header_bytes:
                        raise MimeMalformed(f"part headers exceed {self._max_header_bytes} bytes")
                    self._pending = data[pos:]
                    break
                end, after = blank
                if end - pos > self._max_header_bytes:
                    raise MimeMalformed(f"part headers exceed {self._max_header_bytes} bytes")
                handler.start_part(parse_part_headers(data[pos:end]))
                pos = after
                state = _BODY
        self._state = state

    def close(self) -> None:
        """Signal end of input: :class:`MimeTruncated` unless the closing delimiter was read."""
        if self._state == _EPILOGUE:
            return
        if self._state == _PREAMBLE:
            raise MimeMissingRoot("the multipart body contains no part (boundary not found)")
        raise MimeTruncated("the multipart body ended before its closing boundary")

    def _holdback(self, data: bytes, pos: int) -> int:
        """Index from which *data* could still begin a delimiter (kept for the next chunk)."""
        n = len(data)
        # The delimiter's only LF is its first byte, so a partial match starts at the last LF.
        nl = data.rfind(b"\n", max(pos, n - len(self._delimiter) + 1))
        if nl >= 0 and self._delimiter.startswith(data[nl:]):
            return nl - 1 if nl > pos and data[nl - 1] == 0x0D else nl
        if n > pos and data[n - 1] == 0x0D:
            return n - 1
        return n


def _blank_line(data: bytes, pos: int) -> tuple[int, int] | None:
    """(end of header block, start of body) if the blank line after *pos* is present."""
    if data.startswith(b"\n", pos):
        return pos, pos + 1
    if data.startswith(b"\r\n", pos):
        return pos, pos + 2
    lf = data.find(b"\n\n", pos)
    crlf = data.find(b"\n\r\n", pos)
    if lf < 0 and crlf < 0:
        return None
    if crlf < 0 or 0 <= lf < crlf:
        return lf + 1, lf + 2
    return crlf + 1, crlf + 3
