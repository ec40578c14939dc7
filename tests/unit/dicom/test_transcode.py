"""Imaging Document Source, transfer syntax negotiation and transcoding [RAD-69] [RAD-75].

:func:`choose_representation` is tested branch by branch; :func:`transcode` on
synthetic studies (uncompressed, and compressed here with pydicom's own RLE
and openjpeg encoders), a tiny lossy JPEG baseline codestream made once with
DCMTK's ``dcmcjpeg +eb``, and broken inputs.  The NIST images are in
``tests/conformance/test_transcode_conformance.py``.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels.utils import compress
from pydicom.uid import UID, SecondaryCaptureImageStorage

from imagebridge.dicom import transcode as transcode_module
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.dicom.transcode import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    SUPPORTED_SOURCES,
    FetchAndDecide,
    Impossible,
    SendStored,
    Transcode,
    choose_representation,
    decide_after_fetch,
    installed_decoders,
    transcode,
)
from imagebridge.errors import (
    DecoderUnavailable,
    NotDicom,
    PixelDataCorrupt,
    TranscodeError,
    TranscodeNotDicom,
    TransferSyntaxUnsupported,
)

EXPLICIT = EXPLICIT_VR_LITTLE_ENDIAN
IMPLICIT = IMPLICIT_VR_LITTLE_ENDIAN
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"
MPEG2 = "1.2.840.10008.1.2.4.100"

Validator = Callable[[Path], list[str]]

# An 8x8 MONOCHROME2 8-bit gradient, JPEG baseline (lossy), made with `dcmcjpeg +eb`.
JPEG_BASELINE_8X8 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4R"
    "DgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wAALCAAIAAgBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAA//EABkQAAEF"
    "AAAAAAAAAAAAAAAAAAAGCSUyo//aAAgBAQAAPwAk023SLzP//9k="
)


# --- choose_representation ------------------------------------------------------------


def test_stored_syntax_that_is_requested_is_sent_unchanged() -> None:
    assert choose_representation([JPEG_LOSSLESS], [JPEG_LOSSLESS]) == SendStored(JPEG_LOSSLESS)


def test_request_order_decides_among_stored_representations() -> None:
    stored = [EXPLICIT, JPEG_LOSSLESS, JPEG_LS, J2K_LOSSLESS]  # as in the NIST sim folders
    assert choose_representation(stored, [J2K_LOSSLESS, EXPLICIT]) == SendStored(J2K_LOSSLESS)
    assert choose_representation(stored, [EXPLICIT, J2K_LOSSLESS]) == SendStored(EXPLICIT)
    assert choose_representation(stored, [J2K, JPEG_LS, JPEG_LOSSLESS]) == SendStored(JPEG_LS)


def test_sending_stored_bytes_beats_transcoding_even_when_listed_later() -> None:
    assert choose_representation([JPEG_LOSSLESS], [EXPLICIT, JPEG_LOSSLESS]) == SendStored(
        JPEG_LOSSLESS
    )


def test_transcodes_to_explicit_when_only_uncompressed_is_possible() -> None:
    assert choose_representation([JPEG_LOSSLESS], [J2K, EXPLICIT]) == Transcode(
        JPEG_LOSSLESS, EXPLICIT
    )


def test_explicit_is_preferred_over_implicit_whatever_the_order() -> None:
    expected = Transcode(JPEG_LOSSLESS, EXPLICIT)
    assert choose_representation([JPEG_LOSSLESS], [IMPLICIT, EXPLICIT]) == expected
    assert choose_representation([JPEG_LOSSLESS], [EXPLICIT, IMPLICIT]) == expected


def test_implicit_when_it_is_the_only_uncompressed_syntax_requested() -> None:
    assert choose_representation([JPEG_LOSSLESS], [IMPLICIT]) == Transcode(JPEG_LOSSLESS, IMPLICIT)
    assert choose_representation([EXPLICIT], [IMPLICIT]) == Transcode(EXPLICIT, IMPLICIT)


def test_source_preference_native_then_lossless_then_lossy() -> None:
    assert choose_representation([JPEG_LOSSLESS, IMPLICIT], [EXPLICIT]) == Transcode(
        IMPLICIT, EXPLICIT
    )
    assert choose_representation([JPEG_BASELINE, J2K, RLE], [EXPLICIT]) == Transcode(RLE, EXPLICIT)
    # equal fidelity: the stored order decides
    assert choose_representation([J2K_LOSSLESS, JPEG_LOSSLESS], [EXPLICIT]) == Transcode(
        J2K_LOSSLESS, EXPLICIT
    )
    assert choose_representation([JPEG_BASELINE], [EXPLICIT]) == Transcode(JPEG_BASELINE, EXPLICIT)


def test_deflated_is_a_source_but_never_a_target() -> None:
    assert choose_representation([DEFLATED], [EXPLICIT]) == Transcode(DEFLATED, EXPLICIT)
    assert isinstance(choose_representation([EXPLICIT], [DEFLATED]), Impossible)
    assert choose_representation([DEFLATED], [DEFLATED]) == SendStored(DEFLATED)


def test_big_endian_is_sent_as_stored_but_not_converted() -> None:
    assert choose_representation([EXPLICIT_VR_BIG_ENDIAN], [EXPLICIT_VR_BIG_ENDIAN]) == SendStored(
        EXPLICIT_VR_BIG_ENDIAN
    )
    choice = choose_representation([EXPLICIT_VR_BIG_ENDIAN], [EXPLICIT], sop_instance_uid="1.2.3")
    assert isinstance(choice, Impossible)
    assert "Big Endian is not converted" in choice.code_context
    assert choice.code_context.startswith("SOP Instance 1.2.3: ")


def test_nothing_producible_names_code_and_context() -> None:
    choice = choose_representation(
        [JPEG_LOSSLESS, JPEG_LS], [J2K_LOSSLESS, J2K], sop_instance_uid="1.2.3.4"
    )
    assert isinstance(choice, Impossible)
    assert choice.error_code == "XDSRepositoryError"
    text = choice.code_context
    assert text.startswith("SOP Instance 1.2.3.4: cannot encode the pixel data using any of")
    for uid in (J2K_LOSSLESS, J2K, JPEG_LOSSLESS, JPEG_LS, EXPLICIT, IMPLICIT):
        assert uid in text
    assert "neither was requested" in text


def test_no_decoder_for_any_stored_syntax_is_impossible() -> None:
    choice = choose_representation([JPEG_LOSSLESS], [EXPLICIT], decodable={EXPLICIT, IMPLICIT})
    assert isinstance(choice, Impossible)
    assert f"no decoder here for any stored syntax ({JPEG_LOSSLESS})" in choice.code_context
    unknown_codec = choose_representation([MPEG2], [EXPLICIT])
    assert isinstance(unknown_codec, Impossible)


def test_empty_request_or_no_stored_representation_is_impossible() -> None:
    for requested in ([], [""]):
        choice = choose_representation([EXPLICIT], requested)
        assert isinstance(choice, Impossible)
        assert "no transfer syntax was requested" in choice.code_context
    choice = choose_representation([], [EXPLICIT])
    assert isinstance(choice, Impossible)
    assert "holds no representation" in choice.code_context


def test_unreported_syntax_means_fetch_and_decide() -> None:
    requested = [J2K_LOSSLESS, EXPLICIT]
    assert choose_representation([""], requested) == FetchAndDecide(tuple(requested))
    # a known lossless copy is transcoded without fetching the unknown one
    assert choose_representation([JPEG_LOSSLESS, ""], [EXPLICIT]) == Transcode(
        JPEG_LOSSLESS, EXPLICIT
    )
    # but the unknown copy may be the lossless original of a lossy one
    assert choose_representation([JPEG_BASELINE, ""], [EXPLICIT]) == FetchAndDecide((EXPLICIT,))
    # or exactly what is requested, when nothing known can be produced
    assert choose_representation([JPEG_LOSSLESS, ""], [J2K]) == FetchAndDecide((J2K,))


def test_decide_after_fetch_uses_the_real_syntax() -> None:
    requested = [J2K_LOSSLESS, EXPLICIT]
    assert decide_after_fetch(J2K_LOSSLESS, requested) == SendStored(J2K_LOSSLESS)
    assert decide_after_fetch(JPEG_LOSSLESS, requested) == Transcode(JPEG_LOSSLESS, EXPLICIT)
    impossible = decide_after_fetch(JPEG_LOSSLESS, [J2K_LOSSLESS], sop_instance_uid="9.8")
    assert isinstance(impossible, Impossible)
    assert impossible.code_context.startswith("SOP Instance 9.8: ")
    no_syntax = decide_after_fetch("", requested)
    assert isinstance(no_syntax, Impossible)
    assert "states no transfer syntax" in no_syntax.code_context


def test_transcode_choice_validates_its_target() -> None:
    with pytest.raises(ValueError, match="transcoding produces only"):
        Transcode(JPEG_LOSSLESS, J2K_LOSSLESS)
    with pytest.raises(ValueError, match="known source"):
        Transcode("", EXPLICIT)


def test_every_supported_source_has_its_decoder_installed() -> None:
    """The decoder plugins in pyproject (pylibjpeg, -libjpeg, -openjpeg, -rle) are all present."""
    assert installed_decoders() == SUPPORTED_SOURCES
    assert installed_decoders({MPEG2, EXPLICIT_VR_BIG_ENDIAN, EXPLICIT}) == {EXPLICIT}


# --- transcode: synthetic images ----------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct")
    return make_study(DEMO_PATIENTS[0], folder, modality="CT", instances=1, seed=4).files[0]


def _run(source: Path | io.BytesIO, target: str) -> tuple[Dataset, bytes]:
    out = io.BytesIO()
    result = transcode(source, target, out)
    data = out.getvalue()
    assert result.bytes_written == len(data)
    assert result.target_transfer_syntax == target
    return pydicom.dcmread(io.BytesIO(data)), data


def _non_pixel(ds: Dataset) -> dict[int, object]:
    return {int(elem.tag): elem.value for elem in ds if elem.tag != 0x7FE00010}


def _compressed(path: Path, syntax: str, **kwargs: object) -> io.BytesIO:
    ds = pydicom.dcmread(path)
    compress(ds, syntax, generate_instance_uid=False, **kwargs)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_explicit_to_implicit_and_back_is_identical(synthetic_ct: Path, tmp_path: Path) -> None:
    original = pydicom.dcmread(synthetic_ct)
    implicit, implicit_bytes = _run(synthetic_ct, IMPLICIT)
    assert implicit.file_meta.TransferSyntaxUID == IMPLICIT
    assert implicit.PixelData == original.PixelData
    (tmp_path / "implicit.dcm").write_bytes(implicit_bytes)
    explicit, _ = _run(tmp_path / "implicit.dcm", EXPLICIT)
    assert explicit.file_meta.TransferSyntaxUID == EXPLICIT
    assert explicit.PixelData == original.PixelData
    assert explicit["PixelData"].VR == "OW"
    assert _non_pixel(explicit) == _non_pixel(original)
    assert explicit.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID


@pytest.mark.parametrize(
    ("syntax", "options"),
    [(RLE, {"encoding_plugin": "pydicom"}), (J2K_LOSSLESS, {})],
    ids=["rle", "j2k-lossless"],
)
def test_lossless_sources_decode_to_the_same_pixels(
    synthetic_ct: Path, syntax: str, options: dict[str, object]
) -> None:
    original = pydicom.dcmread(synthetic_ct)
    out = io.BytesIO()
    result = transcode(_compressed(synthetic_ct, syntax, **options), EXPLICIT, out)
    assert result.source_transfer_syntax == syntax
    assert result.pixel_data_decoded
    assert not result.lossy
    assert result.sop_instance_uid == original.SOPInstanceUID
    decoded = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert decoded.PixelData == original.PixelData
    assert _non_pixel(decoded) == _non_pixel(original)


def test_output_passes_dciodvfy(synthetic_ct: Path, tmp_path: Path, dciodvfy: Validator) -> None:
    for target in (EXPLICIT, IMPLICIT):
        path = tmp_path / f"{target}.dcm"
        with path.open("wb") as out:
            transcode(_compressed(synthetic_ct, RLE), target, out)
        dciodvfy(path)


def test_lossy_flag_stays_01(synthetic_ct: Path) -> None:
    ds = pydicom.dcmread(_compressed(synthetic_ct, J2K, j2k_cr=[20]))
    ds.LossyImageCompression = "01"
    source = io.BytesIO()
    ds.save_as(source, enforce_file_format=True)
    source.seek(0)
    out = io.BytesIO()
    result = transcode(source, EXPLICIT, out)
    assert result.lossy
    assert pydicom.dcmread(io.BytesIO(out.getvalue())).LossyImageCompression == "01"


def _jpeg_baseline(lossy_flag: str | None) -> io.BytesIO:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "2.25.4242"
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if lossy_flag is not None:
        ds.LossyImageCompression = lossy_flag
    ds.PixelData = encapsulate([JPEG_BASELINE_8X8])
    ds["PixelData"].VR = "OB"
    return _part10(ds, JPEG_BASELINE)


def _part10(ds: Dataset, syntax: str) -> io.BytesIO:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("flag", [None, "00", "01"])
def test_jpeg_baseline_source_is_marked_lossy(flag: str | None) -> None:
    decoded, _ = _run(_jpeg_baseline(flag), EXPLICIT)
    assert decoded.LossyImageCompression == "01"
    pixels = np.frombuffer(decoded.PixelData, dtype=np.uint8).reshape(8, 8)
    expected = (np.arange(64).reshape(8, 8) * 4).astype(np.int16)
    assert np.abs(pixels.astype(np.int16) - expected).max() < 40  # lossy, yet the same picture


def test_deflated_source_becomes_explicit(synthetic_ct: Path) -> None:
    original = pydicom.dcmread(synthetic_ct)
    deflated, _ = _run(synthetic_ct, EXPLICIT)
    buffer = _part10(deflated, DEFLATED)
    out = io.BytesIO()
    result = transcode(buffer, EXPLICIT, out)
    assert not result.pixel_data_decoded
    assert pydicom.dcmread(io.BytesIO(out.getvalue())).PixelData == original.PixelData


def test_icon_pixel_data_is_decoded_too_and_offset_tables_dropped(synthetic_ct: Path) -> None:
    ds = pydicom.dcmread(_compressed(synthetic_ct, RLE))
    icon = Dataset()
    for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(icon, keyword, 8 if keyword != "PixelRepresentation" else 0)
    icon.HighBit = 7
    icon.Rows = icon.Columns = 8
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon_pixels = bytes(range(64))
    icon.PixelData = icon_pixels
    icon.file_meta = FileMetaDataset()
    icon.file_meta.TransferSyntaxUID = UID(EXPLICIT)
    compress(icon, RLE, encoding_plugin="pydicom", generate_instance_uid=False)
    del icon.file_meta
    ds.IconImageSequence = [icon]
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
        [frame]
    )
    decoded, _ = _run(_part10(ds, RLE), EXPLICIT)
    assert decoded.IconImageSequence[0].PixelData == icon_pixels
    assert "ExtendedOffsetTable" not in decoded
    assert "ExtendedOffsetTableLengths" not in decoded
    assert decoded.PixelData == pydicom.dcmread(synthetic_ct).PixelData


def test_non_image_in_a_compressed_syntax_is_rewritten_without_decoding() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = "2.25.77"
    ds.Modality = "SR"
    for syntax in (JPEG_LOSSLESS, JPEG_BASELINE):
        out = io.BytesIO()
        result = transcode(_part10(ds, syntax), IMPLICIT, out)
        assert not result.pixel_data_decoded
        assert not result.lossy
        written = pydicom.dcmread(io.BytesIO(out.getvalue()))
        assert written.SOPInstanceUID == "2.25.77"
        assert "LossyImageCompression" not in written


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        self.chunks.append(chunk)
        return len(chunk)


def test_unseekable_output_gets_the_same_bytes(synthetic_ct: Path) -> None:
    _, expected = _run(_compressed(synthetic_ct, RLE), EXPLICIT)
    sink = _Unseekable()
    result = transcode(_compressed(synthetic_ct, RLE), EXPLICIT, sink)  # type: ignore[arg-type]
    assert b"".join(sink.chunks) == expected
    assert result.bytes_written == len(expected)


# --- transcode: typed errors ---------------------------------------------------------------


def test_not_dicom() -> None:
    with pytest.raises(TranscodeNotDicom) as caught:
        transcode(io.BytesIO(b"not a dicom object" * 20), EXPLICIT, io.BytesIO())
    assert isinstance(caught.value, NotDicom)
    assert caught.value.xds_error_code == "XDSRepositoryError"


def test_corrupt_pixel_data(synthetic_ct: Path) -> None:
    ds = pydicom.dcmread(_compressed(synthetic_ct, J2K_LOSSLESS))
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    with pytest.raises(PixelDataCorrupt, match="could not be decoded") as caught:
        transcode(_part10(ds, JPEG_LOSSLESS), EXPLICIT, io.BytesIO())
    assert caught.value.xds_error_code == "XDSRepositoryError"


def test_truncated_native_pixel_data_is_refused(synthetic_ct: Path) -> None:
    data = synthetic_ct.read_bytes()
    with pytest.raises(PixelDataCorrupt, match="native pixel data has"):
        transcode(io.BytesIO(data[:-300]), EXPLICIT, io.BytesIO())


def test_truncated_encapsulated_object_is_refused(synthetic_ct: Path) -> None:
    """pydicom warns and keeps no element at all when the file ends inside the fragments."""
    data = _compressed(synthetic_ct, RLE).getvalue()
    with pytest.raises(TranscodeNotDicom, match="truncated"), pytest.warns(UserWarning):
        transcode(io.BytesIO(data[:-300]), EXPLICIT, io.BytesIO())


def test_image_without_pixel_data_is_refused(synthetic_ct: Path) -> None:
    ds = pydicom.dcmread(synthetic_ct)
    del ds.PixelData
    with pytest.raises(PixelDataCorrupt, match="ends before its pixel data"):
        transcode(_part10(ds, EXPLICIT), IMPLICIT, io.BytesIO())


def test_big_endian_source_and_compressed_target_are_unsupported(synthetic_ct: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "2.25.88"
    big = _part10(ds, EXPLICIT_VR_BIG_ENDIAN)
    with pytest.raises(TransferSyntaxUnsupported, match="Big Endian") as caught:
        transcode(big, EXPLICIT, io.BytesIO())
    assert caught.value.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN
    with pytest.raises(TransferSyntaxUnsupported, match=re.escape("not '1.2.840.10008.1.2.4.90'")):
        transcode(synthetic_ct, J2K_LOSSLESS, io.BytesIO())


def test_no_decoder_in_pydicom_for_the_syntax(synthetic_ct: Path) -> None:
    ds = pydicom.dcmread(_compressed(synthetic_ct, RLE))
    with pytest.raises(DecoderUnavailable, match="no pixel data decoder") as caught:
        transcode(_part10(ds, MPEG2), EXPLICIT, io.BytesIO())
    assert caught.value.transfer_syntax == MPEG2
    assert isinstance(caught.value, TranscodeError)


def test_decoder_plugin_not_installed(synthetic_ct: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a machine without pylibjpeg-libjpeg (a fake for this unit of logic)."""
    missing = SimpleNamespace(is_available=False, missing_dependencies=["pylibjpeg-libjpeg"])
    monkeypatch.setattr(transcode_module, "get_decoder", lambda uid: missing)
    ds = pydicom.dcmread(_compressed(synthetic_ct, RLE))
    with pytest.raises(DecoderUnavailable, match=r"no decoder installed .*pylibjpeg-libjpeg"):
        transcode(_part10(ds, JPEG_LOSSLESS), EXPLICIT, io.BytesIO())
    assert installed_decoders({JPEG_LOSSLESS, EXPLICIT}) == {EXPLICIT}
