"""``(SOP Instance UID, Transfer Syntax UID)`` of a Part-10 object by a direct element scan.

:func:`identity_from_prefix` walks the file meta group and the data set
elements up to (0008,0018) in the first bytes of an object, without pydicom;
:func:`identity_of` uses it and falls back to
:func:`~imagebridge.dicom.headers.stored_identity` (pydicom) whenever the scan
cannot settle it.  Both give what ``stored_identity`` gives.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from imagebridge.dicom.headers import stored_identity


def identity_of(body: bytes | BinaryIO, *, prefix: int = 64 * 1024) -> tuple[str, str]:
    """:func:`stored_identity` of a whole object or a seekable stream, by scan when possible.

    A stream is read from its current position and left there.
    """
    if isinstance(body, bytes):
        found = identity_from_prefix(body)
        return found if found is not None else stored_identity(io.BytesIO(body))
    at = body.tell()
    try:
        found = identity_from_prefix(body.read(prefix))
        if found is None:
            body.seek(at)
            found = stored_identity(body)
    finally:
        body.seek(at)
    return found


_SOP_INSTANCE_UID = 0x00080018
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_EXPLICIT_LE = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
_UL = struct.Struct("<HHL")  # implicit VR: group, element, length
_EXPLICIT = struct.Struct("<HH2sH")  # explicit VR: group, element, VR, short length
_LONG_LENGTH = struct.Struct("<L")


def identity_from_prefix(data: bytes | memoryview) -> tuple[str, str] | None:
    """``(SOP Instance UID, Transfer Syntax UID)`` from the first bytes of a Part-10 object.

    A cheap scan of the file meta group and of the data set elements up to
    (0008,0018), giving what :func:`stored_identity` gives.  Returns None
    whenever the prefix does not settle it (too short, not Part-10, big endian
    or deflated data set, an undefined length, a value that is not plain
    ASCII): the caller then falls back to :func:`stored_identity`.
    """
    view = memoryview(data)
    if len(view) < 144 or view[128:132].tobytes() != b"DICM":
        return None
    pos, syntax, media_sop = 132, "", ""
    while view[pos : pos + 2].tobytes() == b"\x02\x00":  # file meta: explicit VR LE
        element = _explicit_element(view, pos)
        if element is None:
            return None
        tag, start, end = element
        if tag == 0x00020003:
            media_sop = _uid_text(view[start:end]) or ""
        elif tag == 0x00020010:
            syntax = _uid_text(view[start:end]) or ""
        pos = end
    if not syntax or syntax in _NOT_EXPLICIT_LE:
        return None
    implicit = syntax == _IMPLICIT_LE
    while True:  # the data set, in order of tags, up to SOP Instance UID
        element = _implicit_element(view, pos) if implicit else _explicit_element(view, pos)
        if element is None:
            return None
        tag, start, end = element
        if tag > _SOP_INSTANCE_UID:
            return (media_sop, syntax) if media_sop else None
        if tag == _SOP_INSTANCE_UID:
            sop = _uid_text(view[start:end])
            if sop is None:
                return None
            sop = sop or media_sop
            return (sop, syntax) if sop else None
        pos = end


def _explicit_element(view: memoryview, pos: int) -> tuple[int, int, int] | None:
    """(tag, value start, value end) of the explicit VR LE element at *pos*, None if unsure."""
    if pos + 8 > len(view):
        return None
    group, elem, vr, length = _EXPLICIT.unpack_from(view, pos)
    start = pos + 8
    if vr in _LONG_VRS:
        if start + 4 > len(view):
            return None
        length = _LONG_LENGTH.unpack_from(view, start)[0]
        start += 4
    elif not vr.isalpha() or not vr.isupper():
        return None  # not a VR: not explicit VR little endian after all
    if length == _UNDEFINED or start + length > len(view):
        return None
    return (group << 16) | elem, start, start + length


def _implicit_element(view: memoryview, pos: int) -> tuple[int, int, int] | None:
    if pos + 8 > len(view):
        return None
    group, elem, length = _UL.unpack_from(view, pos)
    start = pos + 8
    if length == _UNDEFINED or start + length > len(view):
        return None
    return (group << 16) | elem, start, start + length


def _uid_text(value: memoryview) -> str | None:
    """A UI value without its padding; None when it is not printable ASCII or multi-valued."""
    raw = bytes(value).rstrip(b"\x00 ").strip()
    if not raw.isascii() or b"\\" in raw or not raw.decode("ascii").isprintable():
        return None
    return raw.decode("ascii")
