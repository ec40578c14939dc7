"""SOP Instance UID and transfer syntax of a received Part-10 object, by direct element scan."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebridge.dicom.headers import stored_identity
from imagebridge.dicom.tag_scan import identity_from_prefix, identity_of
from imagebridge.errors import NotDicom

SOP = "1.2.826.0.1.3680043.8.498.1"
META_SOP = "1.2.826.0.1.3680043.8.498.2"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _part10(syntax: str, *, sop: str | None = SOP, sequence: bool = False) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = META_SOP
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if sequence:  # (0008,0006) before (0008,0018), written with an undefined length
        item = Dataset()
        item.CodeValue = "eng"
        ds.LanguageCodeSequence = Sequence([item])
        ds["LanguageCodeSequence"].is_undefined_length = True
    ds.SOPClassUID = CT
    if sop is not None:
        ds.SOPInstanceUID = sop
    ds.PatientID = "P1"
    ds.BitsAllocated = 16
    ds.PixelData = b"\0" * 64
    out = io.BytesIO()
    little = syntax != ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True, little_endian=little, implicit_vr=implicit)
    return out.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_the_scan_gives_what_pydicom_gives(syntax: str) -> None:
    data = _part10(syntax)
    assert identity_from_prefix(data) == (SOP, syntax)
    assert identity_from_prefix(data) == stored_identity(io.BytesIO(data))
    assert identity_of(data) == (SOP, syntax)


def test_without_sop_instance_uid_in_the_data_set_the_meta_one_is_used() -> None:
    data = _part10(ExplicitVRLittleEndian, sop=None)
    assert identity_from_prefix(data) == (META_SOP, ExplicitVRLittleEndian)
    assert stored_identity(io.BytesIO(data)) == (META_SOP, ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    "data",
    [
        _part10(ExplicitVRBigEndian),
        _part10(ExplicitVRLittleEndian, sequence=True),
        _part10(ExplicitVRLittleEndian)[:200],  # cut inside the file meta group
        b"\0" * 128 + b"DIXM" + b"\0" * 64,
    ],
    ids=["big-endian", "undefined-length-before-sop", "short-prefix", "not-part-10"],
)
def test_an_unsettled_prefix_falls_back_to_pydicom(data: bytes) -> None:
    assert identity_from_prefix(data) is None
    if data[128:132] == b"DICM" and len(data) > 400:
        assert identity_of(data) == stored_identity(io.BytesIO(data))


def test_identity_of_a_stream_reads_a_prefix_and_rewinds(tmp_path: Path) -> None:
    data = _part10(ImplicitVRLittleEndian)
    with open(tmp_path / "part.dcm", "w+b") as stream:
        stream.write(data)
        stream.seek(0)
        assert identity_of(stream, prefix=300) == (SOP, ImplicitVRLittleEndian)
        assert stream.tell() == 0
        assert identity_of(stream, prefix=150) == (SOP, ImplicitVRLittleEndian)  # pydicom
        assert stream.tell() == 0


def test_identity_of_something_that_is_not_dicom_raises_not_dicom() -> None:
    with pytest.raises(NotDicom):
        identity_of(b"this is not a DICOM object" * 10)
