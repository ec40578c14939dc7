"""Import reconciliation: a plan written by splicing bytes instead of re-encoding the object.

:class:`Splicer` gives the object :func:`~imagebridge.dicom.reconcile_apply.apply_plan`
followed by pydicom's ``save_as(enforce_file_format=True)`` gives (the
*full rewrite*, which stays the reference), at a fraction of its cost: the
plan is applied to the data set read up to its pixel data (as the full
rewrite applies it), but only the top-level elements the plan touches (its
changed attributes and the Original Attributes Sequence) are encoded
again; every other element is copied as it is in the received bytes, and
the pixel data and whatever follows it are never decoded (the caller
copies them after the spliced head).  The file meta group is the one the
full rewrite writes (the received one whenever pydicom would write it back
unchanged, :func:`meta_as_written`).  The instances of a study usually
share the values a plan changes: a splicer then encodes the touched
elements once and reuses the bytes.

What the full rewrite does besides the plan is done here too: it drops
retired group length elements (gggg,0000) of the data set.  Whenever the
result could differ from the full rewrite's, the splicer declines
(returns None) before changing the data set, and the caller does the full
rewrite: big endian or deflated data sets, private transfer syntaxes, a
remapped study (UID references inside sequences), a switch of the character
set to UTF-8, no preamble, elements out of order or an element structure
that does not walk cleanly (:func:`layout`), a data set whose elements are
not the ones pydicom read, group length elements after the pixel data,
pixel data whose encapsulation does not match the transfer syntax.
"""

from __future__ import annotations

import copy
import io
import os
import struct
from dataclasses import dataclass
from itertools import pairwise
from typing import BinaryIO

from pydicom.charset import default_encoding
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID

from imagebridge.dicom.reconcile import TAGS
from imagebridge.dicom.reconcile_apply import (
    ORIGINAL_ATTRIBUTES,
    UTF8,
    apply_plan,
    charsets,
    check_plan,
)
from imagebridge.model.reconcile import ReconcilePlan

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005
UID_KEYWORDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
PREFIX_AT = 128  # the preamble's length: b"DICM" follows it
LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
"""Explicit VRs with two reserved bytes and a 32-bit length (PS3.5 7.1.2)."""
_TAG = struct.Struct("<HH")
_UL = struct.Struct("<L")
_US = struct.Struct("<H")


class Malformed(ValueError):
    """The bytes do not walk as little endian DICOM elements."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the top-level data set elements of a Part-10 object lie, up to an offset.

    *body* is the offset of the first data set element (the end of the file
    meta group); *elements* are (tag, offset of the element) in file order;
    the last one ends at *end*.
    """

    body: int
    end: int
    elements: tuple[tuple[int, int], ...]

    @property
    def tags(self) -> list[int]:
        return [tag for tag, _ in self.elements]


def _header(stream: BinaryIO, implicit: bool) -> tuple[int, bytes | None, int]:
    """(tag, VR or None, length) of the element whose header starts at the stream's position."""
    raw = stream.read(8)
    if len(raw) != 8:
        raise Malformed("the data ends inside an element header")
    group, element = _TAG.unpack_from(raw)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:  # items and delimiters have no VR
        return tag, None, _UL.unpack_from(raw, 4)[0]
    vr = raw[4:6]
    if vr in LONG_VRS:
        more = stream.read(4)
        if len(more) != 4:
            raise Malformed("the data ends inside an element header")
        return tag, vr, _UL.unpack(more)[0]
    if not (vr.isalpha() and vr.isupper()):
        raise Malformed(f"({group:04X},{element:04X}) has no explicit VR")
    return tag, vr, _US.unpack_from(raw, 6)[0]


def _skip_value(stream: BinaryIO, vr: bytes | None, length: int, implicit: bool) -> None:
    """Move past an element's value; one of undefined length is walked item by item."""
    if length != UNDEFINED:
        stream.seek(length, os.SEEK_CUR)
        return
    inner = implicit or vr == b"UN"  # UN of undefined length holds implicit VR items
    while True:  # a sequence, or encapsulated pixel data: items up to the delimiter
        tag, _, size = _header(stream, True)
        if tag == SEQUENCE_END:
            return
        if tag != ITEM:
            raise Malformed(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item was expected")
        if size != UNDEFINED:
            stream.seek(size, os.SEEK_CUR)
            continue
        while True:  # an item of undefined length: its elements up to the item delimiter
            tag, item_vr, size = _header(stream, inner)
            if tag == ITEM_END:
                break
            if tag >> 16 == 0xFFFE:
                raise Malformed("a delimiter out of place in an item")
            _skip_value(stream, item_vr, size, inner)


def layout(stream: BinaryIO, end: int, *, implicit: bool) -> Layout:
    """Walk the file meta group, then the data set's top-level elements up to *end*.

    *stream* holds a Part-10 object from its first byte (preamble); the walk
    must land exactly on *end*.  Raises :class:`Malformed`.
    """
    stream.seek(PREFIX_AT)
    if stream.read(4) != b"DICM":
        raise Malformed("no DICM prefix after a 128-byte preamble")
    while True:  # the file meta group: explicit VR little endian
        at = stream.tell()
        group = stream.read(2)
        stream.seek(at)
        if group != b"\x02\x00":
            break
        _, vr, length = _header(stream, False)
        _skip_value(stream, vr, length, False)
    body = stream.tell()
    elements: list[tuple[int, int]] = []
    while (at := stream.tell()) < end:
        tag, vr, length = _header(stream, implicit)
        if tag >> 16 == 0xFFFE:
            raise Malformed("a delimiter out of place in the data set")
        _skip_value(stream, vr, length, implicit)
        elements.append((tag, at))
    if stream.tell() != end:
        raise Malformed("the last element runs past the end")
    return Layout(body, end, tuple(elements))


def _tags_after(stream: BinaryIO, start: int, *, implicit: bool) -> list[tuple[int, int]]:
    """(tag, length) of the top-level elements from *start* to the end of the stream (the
    pixel data and what follows it)."""
    size = stream.seek(0, os.SEEK_END)
    stream.seek(start)
    tags: list[tuple[int, int]] = []
    while stream.tell() < size:
        tag, vr, length = _header(stream, implicit)
        if tag >> 16 == 0xFFFE:
            raise Malformed("a delimiter out of place in the data set")
        _skip_value(stream, vr, length, implicit)
        tags.append((tag, length))
    if stream.tell() != size:
        raise Malformed("the last element runs past the end of the object")
    return tags


def retired_group_length(tag: int) -> bool:
    """(gggg,0000) of a data set group: the full rewrite (pydicom) never writes it."""
    return tag & 0xFFFF == 0 and tag >> 16 > 6


def encoding_of(syntax: str) -> bool | None:
    """True (implicit VR) or False (explicit VR) for a public little endian syntax whose
    data set is not deflated; None for any other."""
    uid = UID(syntax)
    if uid.is_private or not uid.is_transfer_syntax:
        return None
    if not uid.is_little_endian or uid.is_deflated:
        return None
    return bool(uid.is_implicit_VR)


KEY_TAGS = tuple(
    sorted(
        {tag for keyword, tag in TAGS.items() if keyword not in UID_KEYWORDS}
        | {ORIGINAL_ATTRIBUTES, SPECIFIC_CHARACTER_SET}
    )
)
"""The top-level elements a plan without remapped UIDs reads or writes (with the
character set their text is decoded with)."""
CACHED_PLANS = 64


class Splicer:
    """Splices plans into objects (:meth:`splice`), one object after the other.

    The instances of a study usually hold the same bytes in the elements a
    plan touches, and their plans the same changes: the encoded elements
    are then the same, and are kept (for at most :data:`CACHED_PLANS` kinds)
    instead of applying the plan again.  One thread at a time.
    """

    def __init__(self) -> None:
        self._encoded: dict[tuple[object, ...], dict[int, bytes]] = {}

    def splice(
        self, stream: BinaryIO, dataset: Dataset, plan: ReconcilePlan, *, stop: int
    ) -> bytes | None:
        """The rewritten object's bytes up to *stop*; None when splicing cannot promise
        the full rewrite's result.

        *stream* is the received object (seekable, from its first byte);
        *dataset* is what pydicom read of it, up to *stop*, where its pixel
        data (or its end) begins.  The rewritten object is the returned bytes
        followed by the stream's bytes from *stop* on, as they are.  The plan
        is applied to *dataset* (unless the encoded elements were known
        already): it is the caller's to throw away.  Errors of
        :func:`~imagebridge.dicom.reconcile_apply.apply_plan` are raised as
        they are; when None is returned, *dataset* is unchanged.
        """
        meta = getattr(dataset, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        implicit = encoding_of(str(syntax)) if syntax else None
        if implicit is None or dataset.original_encoding != (implicit, True):
            return None
        if plan.uid_map:  # references inside sequences are rewritten too
            return None
        if plan.needs_unicode and charsets(dataset) != [UTF8]:  # every text value is decoded
            return None
        preamble = getattr(dataset, "preamble", None)
        if preamble is not None and len(preamble) != 128:
            return None
        stream.seek(0)
        head = stream.read(stop)
        try:
            found = layout(io.BytesIO(head), len(head), implicit=implicit)
            later = _tags_after(stream, stop, implicit=implicit)
        except (Malformed, RecursionError):
            return None
        tags = found.tags
        if len(head) != stop or any(a >= b for a, b in pairwise(tags)):
            return None
        if tags != sorted(dataset.keys()) or any(t >> 16 in (0, 2) for t in tags):
            return None
        if any(retired_group_length(t) for t, _ in later):
            return None
        compressed = bool(UID(str(syntax)).is_compressed)
        if any(t == PIXEL_DATA and (n == UNDEFINED) != compressed for t, n in later):
            return None  # the full rewrite would change how the pixel data is encoded
        touched = {c.tag for c in plan.changes}
        touched |= {ORIGINAL_ATTRIBUTES} if plan.changes else set()
        key = self._key(head, found, plan, implicit=implicit)
        new = self._encoded.get(key) if key is not None else None
        if new is None:
            apply_plan(dataset, plan)
            new = _encoded(dataset, touched, implicit=implicit)
            if key is not None:
                if len(self._encoded) >= CACHED_PLANS:
                    self._encoded.clear()
                self._encoded[key] = new
        else:  # the same plan on the same values: what apply_plan would check still holds
            check_plan(dataset, plan)
        return b"".join(
            [
                preamble or b"\x00" * 128,
                b"DICM",
                file_meta_bytes(dataset, head[PREFIX_AT + 4 : found.body]),
                *_body(memoryview(head), found, touched, new),
            ]
        )

    @staticmethod
    def _key(
        head: bytes, found: Layout, plan: ReconcilePlan, *, implicit: bool
    ) -> tuple[object, ...] | None:
        """What the touched elements' encoding depends on; None: not to be cached."""
        if any(c.tag not in KEY_TAGS for c in plan.changes):
            return None
        spans = dict(
            zip(found.tags, pairwise([*(at for _, at in found.elements), found.end]), strict=True)
        )
        values = tuple(
            head[spans[tag][0] : spans[tag][1]] if tag in spans else None for tag in KEY_TAGS
        )
        return (implicit, plan.changes, plan.original_attributes, values)


def splice_plan(
    stream: BinaryIO, dataset: Dataset, plan: ReconcilePlan, *, stop: int
) -> bytes | None:
    """:meth:`Splicer.splice` of one object: *plan* applied to *dataset*, the rewritten
    object's bytes up to *stop* (None: declined, *dataset* unchanged)."""
    return Splicer().splice(stream, dataset, plan, stop=stop)


def _encoded(dataset: Dataset, tags: set[int], *, implicit: bool) -> dict[int, bytes]:
    """The elements under *tags* the data set now holds, encoded as the full rewrite does."""
    encodings = dataset.get("SpecificCharacterSet", default_encoding)
    out: dict[int, bytes] = {}
    for tag in tags:
        if tag in dataset:
            buffer = DicomBytesIO()
            buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
            write_data_element(buffer, dataset.get_item(tag), encodings)
            out[tag] = buffer.getvalue()
    return out


def _body(
    head: memoryview, found: Layout, touched: set[int], new: dict[int, bytes]
) -> list[bytes | memoryview]:
    """The data set's pieces: runs of original elements and, in tag order, the *new* encoded
    ones; an original element under a *touched* tag or a retired group length is left out."""
    pieces: list[bytes | memoryview] = []
    pending = sorted(new)
    copy_from = found.body
    ends = [at for _, at in found.elements[1:]] + [found.end]
    for (tag, at), end in zip(found.elements, ends, strict=True):
        while pending and pending[0] < tag:
            pieces += [head[copy_from:at], new[pending.pop(0)]]
            copy_from = at
        if tag in touched or retired_group_length(tag):
            pieces.append(head[copy_from:at])
            if pending and pending[0] == tag:
                pieces.append(new[pending.pop(0)])
            copy_from = end
    pieces.append(head[copy_from : found.end])
    pieces += [new[tag] for tag in pending]
    return [p for p in pieces if len(p)]


def file_meta_bytes(dataset: Dataset, written: bytes | None = None) -> bytes:
    """The file meta group as ``dcmwrite(..., enforce_file_format=True)`` writes it for
    *dataset* (Media Storage SOP Class and Instance UIDs follow the data set's).

    *written*: the group as the object holds it; when pydicom would write
    those very bytes (:func:`meta_as_written`), they are the answer.
    """
    if written is not None and meta_as_written(written, dataset):
        return written
    meta = copy.deepcopy(dataset.file_meta)
    for meta_keyword, keyword in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        held, own = meta.get(meta_keyword, None), dataset.get(keyword, None)
        if held is None or (own and own != held):
            setattr(meta, meta_keyword, own)
    validate_file_meta(meta, enforce_standard=True)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


META_VRS = {
    0x00020000: b"UL",
    0x00020001: b"OB",
    0x00020002: b"UI",
    0x00020003: b"UI",
    0x00020010: b"UI",
    0x00020012: b"UI",
}
"""The elements pydicom decodes and encodes again when it writes a file meta group (with
their VRs); the others it copies.  (0002,0013) it adds when absent."""
UID_CHARACTERS = frozenset(b"0123456789.")


def meta_as_written(written: bytes, dataset: Dataset) -> bool:
    """True when pydicom (``enforce_file_format=True``) writes *written* back as it is.

    So it is when: the elements are in order; the group length is right;
    the elements pydicom adds when absent are there; the UIDs it decodes and
    encodes again are plain UIDs padded as it pads them; the Media Storage
    SOP Class and Instance UIDs are the data set's.
    """
    stream = io.BytesIO(written)
    values: dict[int, bytes] = {}
    last = -1
    try:
        while stream.tell() < len(written):
            tag, vr, length = _header(stream, False)
            value = stream.read(length) if length != UNDEFINED else b""
            if tag >> 16 != 0x0002 or tag <= last or length == UNDEFINED or len(value) != length:
                return False
            if tag in META_VRS and vr != META_VRS[tag]:
                return False
            values[tag], last = value, tag
    except Malformed:
        return False
    if not all(tag in values for tag in (*META_VRS, 0x00020013)):
        return False
    if values[0x00020000] != _UL.pack(len(written) - 12) or not values[0x00020001]:
        return False
    uids = {tag: _plain_uid(values[tag]) for tag in META_VRS if META_VRS[tag] == b"UI"}
    if not all(uids.values()):
        return False
    for tag, keyword in ((0x00020002, "SOPClassUID"), (0x00020003, "SOPInstanceUID")):
        own = dataset.get(keyword, None)
        if own and str(own) != uids[tag]:
            return False
    return True


def _plain_uid(value: bytes) -> str:
    """The UID of a UI value padded as pydicom pads it (one NUL to an even length), else ''."""
    text = value[:-1] if value.endswith(b"\x00") and len(value) % 2 == 0 else value
    if not text or len(text) + len(text) % 2 != len(value) or not set(text) <= UID_CHARACTERS:
        return ""
    return text.decode("ascii")
