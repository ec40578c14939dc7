"""Byte-level helpers for comparing DICOM Part-10 files in tests."""

from __future__ import annotations

# VRs whose explicit-VR element header has a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def split_file_meta(data: bytes) -> tuple[bytes, bytes]:
    """A Part-10 file as (preamble + File Meta group (0002,xxxx), data set)."""
    assert data[128:132] == b"DICM", "not a Part-10 file"
    pos = 132
    while pos + 8 <= len(data) and int.from_bytes(data[pos : pos + 2], "little") == 0x0002:
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return data[:pos], data[pos:]


def dataset_after_file_meta(data: bytes) -> bytes:
    """The data set of a Part-10 file: what follows the File Meta group."""
    return split_file_meta(data)[1]
