"""Imaging Document Source, transcoding [RAD-69] [RAD-75] against the NIST images.

``nist-images/sim/<dataset>/<study>/<series>/<sop>/<transferSyntaxUID>`` holds
each instance in up to four representations: Explicit VR Little Endian, JPEG
Lossless SV1, JPEG-LS lossless and JPEG 2000 lossless.  Every compressed one,
transcoded to Explicit VR Little Endian, must give exactly the pixel data of
NIST's own Explicit VR Little Endian file (the codecs are lossless) and every
other attribute unchanged; Implicit VR Little Endian must carry the same.
The negotiation is checked on the same folders.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from imagebridge.dicom.transcode import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    Impossible,
    SendStored,
    Transcode,
    choose_representation,
    transcode,
)

pytestmark = pytest.mark.conformance

JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


def _instances(conformance_dir: Path) -> list[Path]:
    root = conformance_dir / "nist-images" / "sim"
    folders = sorted({path.parent for path in root.rglob("1.2.840.10008.1.2*") if path.is_file()})
    assert len(folders) >= 24, f"expected the 24 NIST sim instances under {root}"
    return folders


def _attributes(ds: Dataset, *, raw_private: bool = False) -> dict[int, object]:
    values: dict[int, object] = {}
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        value = elem.value
        if raw_private and elem.tag.is_private:
            raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
            value = raw.rstrip(b" \0")
        values[int(elem.tag)] = value
    return values


@pytest.mark.parametrize("syntax", [JPEG_LOSSLESS, JPEG_LS, J2K_LOSSLESS])
def test_nist_lossless_images_decode_to_nist_explicit_pixels(
    conformance_dir: Path, syntax: str
) -> None:
    compared = 0
    for folder in _instances(conformance_dir):
        source = folder / syntax
        if not source.exists():
            continue
        out = io.BytesIO()
        result = transcode(source, EXPLICIT_VR_LITTLE_ENDIAN, out)
        got = pydicom.dcmread(io.BytesIO(out.getvalue()))
        assert result.pixel_data_decoded
        assert result.source_transfer_syntax == syntax
        assert got.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        assert got.file_meta.MediaStorageSOPInstanceUID == folder.name
        assert got.SOPInstanceUID == folder.name == result.sop_instance_uid
        source_ds = pydicom.dcmread(source)
        assert _attributes(got) == _attributes(source_ds), source
        reference_path = folder / EXPLICIT_VR_LITTLE_ENDIAN
        if reference_path.exists():
            reference = pydicom.dcmread(reference_path)
            assert got.PixelData == reference.PixelData, source
            assert _attributes(got) == _attributes(reference), source
            compared += 1
    assert compared >= 24 if syntax == JPEG_LOSSLESS else compared > 0


def test_nist_jpeg_lossless_to_implicit_carries_the_same_pixels(conformance_dir: Path) -> None:
    for folder in _instances(conformance_dir):
        out = io.BytesIO()
        transcode(folder / JPEG_LOSSLESS, IMPLICIT_VR_LITTLE_ENDIAN, out)
        got = pydicom.dcmread(io.BytesIO(out.getvalue()))
        reference = pydicom.dcmread(folder / EXPLICIT_VR_LITTLE_ENDIAN)
        assert got.file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
        assert got.PixelData == reference.PixelData
        # Implicit VR has no VRs: private elements come back as raw, padded bytes.
        assert _attributes(got, raw_private=True) == _attributes(reference, raw_private=True)


def test_negotiation_on_nist_stored_representations(conformance_dir: Path) -> None:
    for folder in _instances(conformance_dir):
        stored = sorted(path.name for path in folder.iterdir())
        assert choose_representation(stored, [J2K_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN]) == (
            SendStored(J2K_LOSSLESS)
        )
        assert choose_representation(stored, [IMPLICIT_VR_LITTLE_ENDIAN]) == Transcode(
            EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
        )
        without_native = [ts for ts in stored if ts != EXPLICIT_VR_LITTLE_ENDIAN]
        assert choose_representation(without_native, [IMPLICIT_VR_LITTLE_ENDIAN]) == Transcode(
            without_native[0], IMPLICIT_VR_LITTLE_ENDIAN
        )
        impossible = choose_representation(
            stored, ["1.2.840.10008.1.2.4.91"], sop_instance_uid=folder.name
        )
        assert isinstance(impossible, Impossible)
        assert impossible.error_code == "XDSRepositoryError"
        assert folder.name in impossible.code_context
