"""Incremental reader of a JSON array of objects, as DICOMweb answers are (PS3.18 F.2).

A WADO-RS metadata answer for a 5,000-instance study is tens of megabytes of
JSON; decoding it in one piece would hold the text and every decoded object
at once.  :class:`JsonArrayReader` is fed the body chunk by chunk and hands
back each top-level item as soon as it is complete, so only the item being
read is buffered.  Pure: no I/O.

Items are decoded by the C scanner of :mod:`json` (``raw_decode``), about as
fast as :func:`json.loads` on the whole document.  An item that does not yet
decode is retried once the buffered text has doubled (or at the end), so a
large item costs linear time; a malformed one is reported at the latest when
the stream ends or the item exceeds ``max_item_bytes``.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Final

from imagebridge.errors import JsonMalformed

DEFAULT_MAX_ITEM_BYTES: Final = 64 * 1024 * 1024
_SPACE: Final = " \t\r\n"

# Where the reader is: before '[', before the first item, after an item, after a comma, done.
_START, _FIRST, _AFTER_ITEM, _AFTER_COMMA, _END = range(5)


class JsonArrayReader:
    """Push reader: :meth:`feed` returns the array items completed by each chunk."""

    def __init__(self, *, max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> None:
        self._max_item_bytes = max_item_bytes
        self._decoder = json.JSONDecoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._state = _START
        self._retry_length = 0  # do not retry a failed item before the text is this long
        self._count = 0

    @property
    def count(self) -> int:
        """How many items have been returned so far."""
        return self._count

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Consume the next chunk; return the items it completed, in order."""
        try:
            self._text += self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            raise JsonMalformed(f"the JSON document is not UTF-8 ({exc.reason})") from exc
        return self._scan(final=False)

    def close(self) -> list[dict[str, Any]]:
        """End of input: the last items; :class:`JsonMalformed` unless one whole array was read."""
        try:
            self._text += self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise JsonMalformed(f"the JSON document is not UTF-8 ({exc.reason})") from exc
        found = self._scan(final=True)
        if self._state == _START:
            raise JsonMalformed("the JSON document is empty, not an array")
        if self._state != _END:
            raise JsonMalformed("the JSON array ends before its closing bracket")
        return found

    def _scan(self, *, final: bool) -> list[dict[str, Any]]:
        text = self._text
        pos = 0
        found: list[dict[str, Any]] = []
        while True:
            while pos < len(text) and text[pos] in _SPACE:
                pos += 1
            if pos >= len(text):
                break
            char = text[pos]
            if self._state == _START:
                if char != "[":
                    raise JsonMalformed("the JSON document is not an array")
                self._state, pos = _FIRST, pos + 1
            elif self._state == _END:
                raise JsonMalformed(
                    f"unexpected JSON text after the array: {text[pos : pos + 20]!r}"
                )
            elif char == "]" and self._state != _AFTER_COMMA:
                self._state, pos = _END, pos + 1
            elif self._state == _AFTER_ITEM:
                if char != ",":
                    raise JsonMalformed(f"expected ',' or ']' between array items, got {char!r}")
                self._state, pos = _AFTER_COMMA, pos + 1
            elif char != "{":
                raise JsonMalformed("a JSON array item is not an object")
            elif not final and len(text) - pos < self._retry_length:
                if len(text) - pos > self._max_item_bytes:
                    raise JsonMalformed(f"a JSON array item exceeds {self._max_item_bytes} bytes")
                break  # the item failed to decode before; wait for more text
            else:
                try:
                    item, pos = self._decoder.raw_decode(text, pos)
                except json.JSONDecodeError as exc:
                    pending = len(text) - pos
                    if final or pending > self._max_item_bytes:
                        raise JsonMalformed(
                            f"a JSON array item is not valid JSON ({exc.msg})"
                            if final
                            else f"a JSON array item exceeds {self._max_item_bytes} bytes"
                        ) from exc
                    self._retry_length = 2 * pending
                    break
                found.append(item)
                self._state, self._retry_length = _AFTER_ITEM, 0
        self._text = text[pos:]
        self._count += len(found)
        return found
