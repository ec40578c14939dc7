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
