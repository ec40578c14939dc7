"""Imaging Document Source, DICOM instance header reads (Part-10, pixel data never read).

:func:`read_instance_header` reads a file; :func:`parse_instance_header` reads
bytes (a whole object or a prefix of one) or a binary stream.  Both use
pydicom's ``dcmread(..., stop_before_pixels=True)`` and return an
:class:`~imagebridge.model.imaging.InstanceHeader`.

Type 2 and type 3 attributes may be absent or malformed: they become empty
values.  An object that is not DICOM raises :class:`~imagebridge.errors.NotDicom`;
one without Study, Series, SOP Class or SOP Instance UID raises
:class:`~imagebridge.errors.DicomMissingUid`.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from imagebridge.errors import DicomHeaderTruncated, DicomMissingUid, NotDicom
from imagebridge.model.imaging import (
    ContentKind,
    DicomCode,
    DicomPatient,
    DicomSeries,
    DicomStudy,
    HierarchicDesignator,
    InstanceHeader,
    OtherPatientId,
)

logger = logging.getLogger(__name__)

# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel
# Data: the tags pydicom stops before, in both byte orders.
_PIXEL_TAGS = frozenset(
    struct.pack(fmt, 0x7FE0, element)
    for fmt in ("<HH", ">HH")
    for element in (0x0010, 0x0008, 0x0009)
)


def read_instance_header(path: str | os.PathLike[str]) -> InstanceHeader:
    """Read the header of the Part-10 file at *path*; ``file_size`` is its size on disk.

    ``OSError`` (missing or unreadable file) propagates unchanged.
    """
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        dataset, at_pixels = _read(fp, str(path))
    return instance_header_from_dataset(dataset, has_pixel_data=at_pixels, file_size=size)


def parse_instance_header(
    data: bytes | bytearray | memoryview | BinaryIO, *, file_size: int | None = None
) -> InstanceHeader:
    """Parse a header from bytes or a binary stream positioned at the preamble.

    *data* may be a prefix of the object (for example the first chunk of a
    download) that includes the Pixel Data element header (tag, VR, length:
    12 bytes).  When *file_size* (the whole object's length) is given and the
    prefix ends before that, :class:`DicomHeaderTruncated` is raised rather
    than returning a header with attributes silently missing.  Without
    *file_size* the bytes are taken to be the complete object.  A stream is
    left positioned at the Pixel Data tag.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        fp: BinaryIO = io.BytesIO(data)
    else:
        fp = data
    start = fp.tell()
    available = fp.seek(0, os.SEEK_END) - start
    fp.seek(start)
    short = file_size is not None and available < file_size
    dataset, at_pixels = _read(fp, "stream" if fp is data else "bytes", short=short)
    if short and not at_pixels:
        raise DicomHeaderTruncated(
            f"DICOM header prefix of {available} bytes ends before the pixel data "
            f"of a {file_size}-byte object"
        )
    return instance_header_from_dataset(dataset, has_pixel_data=at_pixels, file_size=file_size)


def _read(fp: BinaryIO, what: str, *, short: bool = False) -> tuple[Dataset, bool]:
    """dcmread up to the pixel data; True when the stream stopped at a pixel data tag.

    *short*: the bytes are known to be a prefix, so a decode failure means truncation.
    """
    try:
        dataset = dcmread(fp, stop_before_pixels=True)
        if "TransferSyntaxUID" not in dataset.file_meta:
            raise NotDicom(f"{what}: DICOM object has no Transfer Syntax UID in its meta group")
    except InvalidDicomError as exc:
        raise NotDicom(f"{what}: not a DICOM Part-10 object ({exc})") from exc
    except (EOFError, struct.error, ValueError, KeyError, NotImplementedError) as exc:
        if short:
            raise DicomHeaderTruncated(f"{what}: DICOM header prefix is cut short ({exc})") from exc
        raise NotDicom(f"{what}: DICOM object could not be decoded ({exc})") from exc
    position = fp.tell()
    at_pixels = fp.read(4) in _PIXEL_TAGS
    fp.seek(position)
    return dataset, at_pixels


def instance_header_from_dataset(
    dataset: Dataset, *, has_pixel_data: bool, file_size: int | None = None
) -> InstanceHeader:
    """Build an :class:`InstanceHeader` from a dataset read (or made) in this package."""
    photometric = text(dataset, "PhotometricInterpretation")
    if photometric or has_pixel_data:
        kind = ContentKind.IMAGE
    elif "WaveformSequence" in dataset:
        kind = ContentKind.WAVEFORM
    else:
        kind = ContentKind.COMPOSITE
    transfer_syntax = ""
    if hasattr(dataset, "file_meta"):
        transfer_syntax = uid(dataset.file_meta, "TransferSyntaxUID")
    return InstanceHeader(
        patient=patient_from_dataset(dataset),
        study=study_from_dataset(dataset),
        series=DicomSeries(
            series_instance_uid=required_uid(dataset, "SeriesInstanceUID"),
            modality=text(dataset, "Modality"),
            series_number=integer(dataset, "SeriesNumber"),
            body_part_examined=text(dataset, "BodyPartExamined"),
            description=text(dataset, "SeriesDescription"),
        ),
        sop_class_uid=required_uid(dataset, "SOPClassUID"),
        sop_instance_uid=required_uid(dataset, "SOPInstanceUID"),
        instance_number=integer(dataset, "InstanceNumber"),
        transfer_syntax_uid=transfer_syntax,
        kind=kind,
        has_pixel_data=has_pixel_data,
        photometric_interpretation=photometric,
        number_of_frames=max(integer(dataset, "NumberOfFrames") or 1, 1),
        file_size=file_size,
    )


def patient_from_dataset(dataset: Dataset) -> DicomPatient:
    """Patient module: name, id, issuer, birth date, sex, address, telephones, other ids."""
    other_ids = []
    for item in sequence(dataset, "OtherPatientIDsSequence"):
        other_id = text(item, "PatientID")
        if other_id:
            other_ids.append(OtherPatientId(other_id, patient_issuer(item)))
    return DicomPatient(
        name=text(dataset, "PatientName"),
        id=text(dataset, "PatientID"),
        issuer=patient_issuer(dataset),
        birth_date=text(dataset, "PatientBirthDate"),
        sex=text(dataset, "PatientSex"),
        address=text(dataset, "PatientAddress"),
        telephones=tuple(
            t.strip() for t in text(dataset, "PatientTelephoneNumbers").split("\\") if t.strip()
        ),
        other_ids=tuple(other_ids),
    )


def patient_issuer(dataset: Dataset) -> HierarchicDesignator | None:
    """Issuer of Patient ID (0010,0021) with its Qualifiers Sequence (0010,0024), or None."""
    qualifiers = first_item(dataset, "IssuerOfPatientIDQualifiersSequence")
    local = text(dataset, "IssuerOfPatientID")
    universal = text(qualifiers, "UniversalEntityID") if qualifiers is not None else ""
    universal_type = text(qualifiers, "UniversalEntityIDType") if qualifiers is not None else ""
    if not local and not universal:
        return None
    return HierarchicDesignator(local, universal, universal_type)


def study_from_dataset(dataset: Dataset) -> DicomStudy:
    """General Study module; raises :class:`DicomMissingUid` without a Study Instance UID."""
    return DicomStudy(
        study_instance_uid=required_uid(dataset, "StudyInstanceUID"),
        study_date=text(dataset, "StudyDate"),
        study_time=text(dataset, "StudyTime"),
        description=text(dataset, "StudyDescription"),
        accession_number=text(dataset, "AccessionNumber"),
        accession_issuer=designator_from_item(
            first_item(dataset, "IssuerOfAccessionNumberSequence")
        ),
        referring_physician_name=text(dataset, "ReferringPhysicianName"),
        study_id=text(dataset, "StudyID"),
        procedure_codes=codes(dataset, "ProcedureCodeSequence"),
    )


def designator_from_item(item: Dataset | None) -> HierarchicDesignator | None:
    """An HL7 v2 Hierarchic Designator Macro item, or None when empty."""
    if item is None:
        return None
    local = text(item, "LocalNamespaceEntityID")
    universal = text(item, "UniversalEntityID")
    if not local and not universal:
        return None
    return HierarchicDesignator(local, universal, text(item, "UniversalEntityIDType"))


def codes(dataset: Dataset, keyword: str) -> tuple[DicomCode, ...]:
    """The coded entries of a code sequence; items lacking value or scheme are logged, skipped."""
    found: list[DicomCode] = []
    for item in sequence(dataset, keyword):
        value = text(item, "CodeValue") or text(item, "LongCodeValue") or text(item, "URNCodeValue")
        scheme = text(item, "CodingSchemeDesignator")
        if not value or not scheme:
            logger.debug("%s item without code value or scheme ignored", keyword)
            continue
        found.append(
            DicomCode(value, scheme, text(item, "CodeMeaning"), text(item, "CodingSchemeVersion"))
        )
    return tuple(found)


# --- lenient attribute access (shared with the KOS parser) -------------------------

# What pydicom raises when a lazily decoded value or sequence turns out malformed.
_DECODE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    struct.error,
    NotImplementedError,
)


def text(dataset: Dataset, keyword: str) -> str:
    """The attribute as a string ('' when absent or undecodable); multi-values joined by \\."""
    try:
        value = dataset.get(keyword)
    except _DECODE_ERRORS as exc:
        logger.debug("attribute %s undecodable: %s", keyword, exc)
        return ""
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value).strip()
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    return str(value).strip(" \x00")


def uid(dataset: Dataset, keyword: str) -> str:
    """A UID attribute with padding removed ('' when absent)."""
    return text(dataset, keyword).strip(" \x00")


def required_uid(dataset: Dataset, keyword: str) -> str:
    """A UID that must be present and non-empty; raises :class:`DicomMissingUid`."""
    value = uid(dataset, keyword)
    if not value:
        raise DicomMissingUid(f"DICOM object has no {keyword}", keyword)
    return value


def integer(dataset: Dataset, keyword: str) -> int | None:
    """An IS/US attribute as int, None when absent or not a number."""
    value = text(dataset, keyword)
    try:
        return int(float(value)) if value else None
    except ValueError:
        logger.debug("attribute %s is not a number: %r", keyword, value[:40])
        return None


def sequence(dataset: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence attribute ([] when absent or not a sequence)."""
    try:
        value = dataset.get(keyword)
    except _DECODE_ERRORS as exc:
        logger.debug("sequence %s undecodable: %s", keyword, exc)
        return []
    if value is None or isinstance(value, str | bytes):
        return []
    return [item for item in value if isinstance(item, Dataset)]


def first_item(dataset: Dataset, keyword: str) -> Dataset | None:
    """The first item of a sequence attribute, or None."""
    items = sequence(dataset, keyword)
    return items[0] if items else None


def stored_identity(stream: BinaryIO) -> tuple[str, str]:
    """``(SOP Instance UID, Transfer Syntax UID)`` of a Part-10 object, read cheaply.

    Decodes the file meta group and one data set element; raises
    :class:`NotDicom` when either is missing.  The stream is left at an
    unspecified position.
    """
    try:
        dataset = dcmread(stream, stop_before_pixels=True, specific_tags=[0x00080018])
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise NotDicom(f"unreadable DICOM file meta information: {exc}") from exc
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", "")).strip()
    sop = str(
        dataset.get("SOPInstanceUID", "") or dataset.file_meta.get("MediaStorageSOPInstanceUID", "")
    ).strip()
    if not syntax or not sop:
        raise NotDicom("the object names no Transfer Syntax UID or SOP Instance UID")
    return sop, syntax


def stored_transfer_syntax(stream: BinaryIO) -> str:
    """The Transfer Syntax UID of a Part-10 object (see :func:`stored_identity`)."""
    return stored_identity(stream)[1]


# --- identity by a direct element scan (no pydicom) -------------------------------------


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
