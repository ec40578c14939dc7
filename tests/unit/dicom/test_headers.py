"""DICOM instance header reads (Imaging Document Source): files, bytes, prefixes, streams."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imagebridge.dicom.headers import (
    parse_instance_header,
    read_instance_header,
    stored_transfer_syntax,
)
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.errors import DicomHeaderTruncated, DicomMissingUid, NotDicom
from imagebridge.model.imaging import ContentKind, DicomCode, HierarchicDesignator

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _part10(ds: Dataset) -> bytes:
    """Encode a hand-made dataset as a Part-10 object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(ds.get("SOPClassUID", "1.2.3")))
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "1.2.3.4")))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _minimal() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    return ds


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct")
    return make_study(DEMO_PATIENTS[0], folder, modality="CT", instances=2, seed=11).files[1]


def test_synthetic_ct_header_has_every_field(ct_file: Path) -> None:
    header = read_instance_header(ct_file)
    reference = dcmread(ct_file)
    assert header.patient.name == "DEMO^ALICE"
    assert header.patient.id == "DEMO-0001"
    assert header.patient.issuer == HierarchicDesignator("IMAGEBRIDGE-DEMO", "2.25.1", "ISO")
    assert (header.patient.birth_date, header.patient.sex) == ("19700101", "F")
    assert header.study.study_instance_uid == reference.StudyInstanceUID
    assert header.study.study_date == reference.StudyDate
    assert header.study.study_time == reference.StudyTime
    assert header.study.description == "CT CHEST WITHOUT CONTRAST"
    assert header.study.accession_number == reference.AccessionNumber
    assert header.study.referring_physician_name == "DEMO^REFERRER"
    assert header.study.study_id == "11"
    assert header.study.procedure_codes == (DicomCode("24627-2", "LN", "CT Chest"),)
    assert header.series.series_instance_uid == reference.SeriesInstanceUID
    assert (header.series.modality, header.series.series_number) == ("CT", 1)
    assert header.series.body_part_examined == "CHEST"
    assert header.series.description == "CHEST 1.0 B30f"
    assert header.sop_class_uid == CT_IMAGE
    assert header.sop_instance_uid == reference.SOPInstanceUID
    assert header.instance_number == 2
    assert header.transfer_syntax_uid == ExplicitVRLittleEndian
    assert header.kind is ContentKind.IMAGE
    assert header.has_pixel_data
    assert header.photometric_interpretation == "MONOCHROME2"
    assert header.number_of_frames == 1
    assert header.file_size == ct_file.stat().st_size


def test_bytes_stream_and_prefix_give_the_same_header(ct_file: Path) -> None:
    data = ct_file.read_bytes()
    from_file = read_instance_header(ct_file)
    assert parse_instance_header(data, file_size=len(data)) == from_file
    pixel_offset = data.index(b"\xe0\x7f\x10\x00")
    prefix = data[: pixel_offset + 12]  # up to the Pixel Data element header
    assert parse_instance_header(prefix, file_size=len(data)) == from_file
    for cut in (0, 4, 8, 10):
        with pytest.raises(DicomHeaderTruncated):
            parse_instance_header(data[: pixel_offset + cut], file_size=len(data))
    stream = io.BytesIO(data)
    header = parse_instance_header(stream)
    assert header.sop_instance_uid == from_file.sop_instance_uid
    assert header.file_size is None
    assert stream.tell() == pixel_offset  # left at the Pixel Data tag


def test_a_short_prefix_is_refused_not_silently_partial(ct_file: Path) -> None:
    data = ct_file.read_bytes()
    with pytest.raises(DicomHeaderTruncated, match="ends before the pixel data"):
        parse_instance_header(data[:700], file_size=len(data))
    with pytest.raises(DicomHeaderTruncated):
        parse_instance_header(io.BytesIO(data[:700]), file_size=len(data))


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, not dicom", b"\x00" * 128 + b"DICM", b"\x00" * 128 + b"XXXX" + b"\x00" * 64],
    ids=["empty", "text", "preamble-only", "bad-prefix"],
)
def test_non_dicom_bytes_raise_not_dicom(data: bytes) -> None:
    with pytest.raises(NotDicom):
        parse_instance_header(data)


def test_non_dicom_file_raises_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "readme.txt"
    path.write_text("not an image\n" * 20)
    with pytest.raises(NotDicom):
        read_instance_header(path)


def test_missing_file_propagates_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_instance_header(tmp_path / "absent.dcm")


@pytest.mark.parametrize(
    "keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"]
)
def test_missing_uid_raises_a_typed_error(keyword: str) -> None:
    ds = _minimal()
    delattr(ds, keyword)
    with pytest.raises(DicomMissingUid) as info:
        parse_instance_header(_part10(ds))
    assert info.value.keyword == keyword


def test_empty_uid_counts_as_missing() -> None:
    ds = _minimal()
    ds.SeriesInstanceUID = ""
    with pytest.raises(DicomMissingUid, match="SeriesInstanceUID"):
        parse_instance_header(_part10(ds))


def test_missing_type_2_and_3_attributes_are_tolerated() -> None:
    header = parse_instance_header(_part10(_minimal()))
    assert header.patient.name == header.patient.id == header.patient.sex == ""
    assert header.patient.issuer is None
    assert header.study.accession_issuer is None
    assert header.study.procedure_codes == ()
    assert header.series.series_number is None
    assert header.series.modality == ""
    assert header.instance_number is None
    assert header.kind is ContentKind.COMPOSITE
    assert not header.has_pixel_data
    assert header.number_of_frames == 1


def test_malformed_optional_values_become_empty() -> None:
    ds = _minimal()
    ds.SeriesNumber = "9999"
    ds.NumberOfFrames = "8888"
    data = _part10(ds)
    data = data.replace(b"IS\x04\x009999", b"IS\x04\x00abc ").replace(b"8888", b"x-1 ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = parse_instance_header(data)
    assert header.series.series_number is None
    assert header.number_of_frames == 1


def test_waveform_and_multiframe_and_issuers() -> None:
    ds = _minimal()
    ds.WaveformSequence = [Dataset()]
    ds.IssuerOfPatientID = "HOSP"
    accession_issuer = Dataset()
    accession_issuer.UniversalEntityID = "1.2.3.4.5.6"
    accession_issuer.UniversalEntityIDType = "ISO"
    ds.IssuerOfAccessionNumberSequence = [accession_issuer]
    code_without_scheme = Dataset()
    code_without_scheme.CodeValue = "X"
    ds.ProcedureCodeSequence = [code_without_scheme]
    header = parse_instance_header(_part10(ds))
    assert header.kind is ContentKind.WAVEFORM
    assert header.patient.issuer == HierarchicDesignator("HOSP")
    assert header.study.accession_issuer == HierarchicDesignator("", "1.2.3.4.5.6", "ISO")
    assert header.study.procedure_codes == ()

    multi = _minimal()
    multi.NumberOfFrames = 12
    multi.PhotometricInterpretation = "MONOCHROME2"
    header = parse_instance_header(_part10(multi))
    assert header.number_of_frames == 12
    assert header.kind is ContentKind.IMAGE
    assert not header.has_pixel_data


@pytest.mark.conformance
def test_every_nist_simulator_image_matches_its_folder(conformance_dir: Path) -> None:
    """nist-images/sim/<dataset>/<study>/<series>/<sop>/<transferSyntax>."""
    root = conformance_dir / "nist-images" / "sim"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) >= 90
    for path in files:
        study, series, sop, transfer_syntax = path.relative_to(root).parts[1:]
        header = read_instance_header(path)
        assert header.study.study_instance_uid == study, path
        assert header.series.series_instance_uid == series, path
        assert header.sop_instance_uid == sop, path
        assert header.transfer_syntax_uid == transfer_syntax, path
        assert header.has_pixel_data, path
        assert header.kind is ContentKind.IMAGE, path
        assert header.file_size == path.stat().st_size
        assert header.series.modality in {"CR", "MR"}, path


@pytest.mark.conformance
def test_nist_reference_images_are_read(conformance_dir: Path) -> None:
    images = sorted(
        (conformance_dir / "nist-images" / "std" / "IDS-DEPT002-a" / "images").iterdir()
    )
    headers = [read_instance_header(path) for path in images]
    assert len(headers) == 36
    assert {h.series.modality for h in headers} == {"MR"}
    assert {h.patient.id for h in headers} == {"IDS-DEPT002-a"}
    assert len({h.sop_instance_uid for h in headers}) == 36


def test_stored_transfer_syntax_reads_only_the_file_meta(tmp_path: Path) -> None:
    study = make_study(DEMO_PATIENTS[0], tmp_path, modality="CR")
    with study.files[0].open("rb") as f:
        assert stored_transfer_syntax(f) == "1.2.840.10008.1.2.1"
    with pytest.raises(NotDicom):
        stored_transfer_syntax(io.BytesIO(b"not dicom" * 50))
