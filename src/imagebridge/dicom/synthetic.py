"""Imaging Document Source, synthetic PHI-free DICOM studies for tests, demos and benchmarks.

:func:`make_study` writes Part-10 files (Explicit VR Little Endian) into a
folder; :func:`iter_study` yields the datasets; :func:`study_headers` gives
:class:`~imagebridge.model.imaging.InstanceHeader` values without making any
pixel data (for manifest benchmarks).

Every UID lives under ``2.25`` and is derived from the seed, so a seed always
gives the same study.  Headers are realistic for CT (one axial series), MR
(several series: T1 sagittal, T2 axial, FLAIR axial) and CR (PA and lateral
chest).  Pixel data is a 12-bit phantom of ellipses, small by default; *rows*,
*columns* and *instances* scale it (2,000 CT slices of 512x512 make 1 GB).
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imagebridge.dicom.headers import instance_header_from_dataset
from imagebridge.dicom.kos import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from imagebridge.errors import InvalidValue
from imagebridge.model.imaging import (
    DicomCode,
    DicomPatient,
    HierarchicDesignator,
    InstanceHeader,
)

DEMO_ISSUER = HierarchicDesignator("IMAGEBRIDGE-DEMO", "2.25.1", "ISO")
"""Issuer of the demo Patient IDs (2.25.1: a UUID-arc OID that no real issuer uses)."""

DEMO_PATIENTS = (
    DicomPatient("DEMO^ALICE", "DEMO-0001", DEMO_ISSUER, "19700101", "F"),
    DicomPatient("DEMO^BOB", "DEMO-0002", DEMO_ISSUER, "19581224", "M"),
    DicomPatient("DEMO^CAROL", "DEMO-0003", DEMO_ISSUER, "19851111", "F"),
)

# An ellipse: centre row, centre column, half height, half width (fractions of
# the image) and stored pixel value.  Drawn in order; later ones cover earlier ones.
_Ellipse = tuple[float, float, float, float, int]


@dataclass(frozen=True, slots=True)
class _SeriesProfile:
    description: str
    orientation: tuple[float, ...]
    attributes: tuple[tuple[str, object], ...]


@dataclass(frozen=True, slots=True)
class _ModalityProfile:
    modality: str
    sop_class_uid: str
    series: int
    instances: int
    rows: int
    columns: int
    body_part: str
    study_description: str
    procedure: DicomCode
    image_type: tuple[str, ...]
    series_profiles: tuple[_SeriesProfile, ...]
    shapes: tuple[_Ellipse, ...]
    background: int


_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
_MR_COMMON: tuple[tuple[str, object], ...] = (
    ("ScanOptions", ""),
    ("MRAcquisitionType", "2D"),
    ("MagneticFieldStrength", "1.5"),
    ("ImagingFrequency", "63.87"),
    ("ImagedNucleus", "1H"),
    ("SpacingBetweenSlices", "5.5"),
)

_PROFILES = {
    "CT": _ModalityProfile(
        modality="CT",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series=1,
        instances=20,
        rows=64,
        columns=64,
        body_part="CHEST",
        study_description="CT CHEST WITHOUT CONTRAST",
        procedure=DicomCode("24627-2", "LN", "CT Chest"),
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        series_profiles=(
            _SeriesProfile(
                "CHEST 1.0 B30f",
                _AXIAL,
                (
                    ("KVP", "120"),
                    ("RescaleIntercept", "-1024"),
                    ("RescaleSlope", "1"),
                    ("RescaleType", "HU"),
                    ("ConvolutionKernel", "B30f"),
                    ("WindowCenter", "40"),
                    ("WindowWidth", "400"),
                ),
            ),
        ),
        shapes=(
            (0.5, 0.5, 0.36, 0.46, 1064),  # body, 40 HU
            (0.45, 0.3, 0.22, 0.14, 224),  # right lung, -800 HU
            (0.45, 0.7, 0.22, 0.14, 224),  # left lung
            (0.76, 0.5, 0.07, 0.06, 1724),  # vertebra, 700 HU
        ),
        background=24,  # air, -1000 HU
    ),
    "MR": _ModalityProfile(
        modality="MR",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        series=3,
        instances=10,
        rows=64,
        columns=64,
        body_part="HEAD",
        study_description="MR BRAIN WITHOUT CONTRAST",
        procedure=DicomCode("24590-2", "LN", "MR Brain"),
        image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        series_profiles=(
            _SeriesProfile(
                "T1 SAG",
                _SAGITTAL,
                (
                    ("ScanningSequence", "SE"),
                    ("SequenceVariant", "SK"),
                    ("RepetitionTime", "500"),
                    ("EchoTime", "12"),
                    ("EchoTrainLength", "1"),
                    *_MR_COMMON,
                ),
            ),
            _SeriesProfile(
                "T2 AX",
                _AXIAL,
                (
                    ("ScanningSequence", "SE"),
                    ("SequenceVariant", "SK"),
                    ("RepetitionTime", "4000"),
                    ("EchoTime", "100"),
                    ("EchoTrainLength", "16"),
                    *_MR_COMMON,
                ),
            ),
            _SeriesProfile(
                "FLAIR AX",
                _AXIAL,
                (
                    ("ScanningSequence", ["SE", "IR"]),
                    ("SequenceVariant", "SK"),
                    ("RepetitionTime", "9000"),
                    ("EchoTime", "120"),
                    ("InversionTime", "2500"),
                    ("EchoTrainLength", "16"),
                    *_MR_COMMON,
                ),
            ),
        ),
        shapes=(
            (0.5, 0.5, 0.42, 0.36, 1800),  # scalp and skull
            (0.5, 0.5, 0.38, 0.32, 1100),  # brain
            (0.45, 0.44, 0.1, 0.03, 2600),  # ventricles
            (0.45, 0.56, 0.1, 0.03, 2600),
        ),
        background=0,
    ),
    "CR": _ModalityProfile(
        modality="CR",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        series=1,
        instances=2,
        rows=96,
        columns=80,
        body_part="CHEST",
        study_description="XR CHEST 2 VIEWS",
        procedure=DicomCode("36643-5", "LN", "XR Chest 2 Views"),
        image_type=("ORIGINAL", "PRIMARY"),
        series_profiles=(_SeriesProfile("CHEST PA AND LATERAL", (), (("KVP", "125"),)),),
        shapes=(
            (0.55, 0.5, 0.45, 0.42, 2200),  # thorax
            (0.5, 0.32, 0.3, 0.15, 600),  # lungs
            (0.5, 0.68, 0.3, 0.15, 600),
            (0.62, 0.56, 0.14, 0.12, 2600),  # heart
        ),
        background=100,
    ),
}
MODALITIES = tuple(_PROFILES)


@dataclass(frozen=True, slots=True)
class SyntheticStudy:
    """What :func:`make_study` wrote: the study UID, the files in write order, their bytes."""

    study_instance_uid: str
    files: tuple[Path, ...]
    total_bytes: int


def synthetic_uid(seed: int | str, *parts: object) -> str:
    """``2.25.<128 bits of SHA-256(seed, parts)>``: a deterministic UID under the UUID arc."""
    text = "\x1f".join(str(p) for p in ("imagebridge synthetic", seed, *parts))
    return f"2.25.{int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], 'big')}"


def make_study(
    patient: DicomPatient,
    folder: str | Path,
    *,
    modality: str = "CT",
    series: int | None = None,
    instances: int | None = None,
    rows: int | None = None,
    columns: int | None = None,
    seed: int = 0,
) -> SyntheticStudy:
    """Write a synthetic study as ``<folder>/series-NNN/NNNNN.dcm`` Part-10 files.

    *series* and *instances* (per series), *rows* and *columns* default to the
    modality's small profile.  One dataset is in memory at a time.
    """
    root = Path(folder)
    files: list[Path] = []
    total = 0
    study_uid = ""
    for ds in iter_study(
        patient,
        modality=modality,
        series=series,
        instances=instances,
        rows=rows,
        columns=columns,
        seed=seed,
    ):
        study_uid = ds.StudyInstanceUID
        path = root / f"series-{ds.SeriesNumber:03d}" / f"{ds.InstanceNumber:05d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        total += path.stat().st_size
    return SyntheticStudy(study_uid, tuple(files), total)


def study_headers(
    patient: DicomPatient,
    *,
    modality: str = "CT",
    series: int | None = None,
    instances: int | None = None,
    seed: int = 0,
) -> list[InstanceHeader]:
    """The headers of the study :func:`iter_study` would make, without pixel data."""
    return [
        instance_header_from_dataset(ds, has_pixel_data=True)
        for ds in iter_study(
            patient,
            modality=modality,
            series=series,
            instances=instances,
            seed=seed,
            pixel_data=False,
        )
    ]


def iter_study(
    patient: DicomPatient,
    *,
    modality: str = "CT",
    series: int | None = None,
    instances: int | None = None,
    rows: int | None = None,
    columns: int | None = None,
    seed: int = 0,
    pixel_data: bool = True,
) -> Iterator[Dataset]:
    """Yield the instances of a synthetic study, series by series (file meta included).

    ``pixel_data=False`` leaves Pixel Data out (not a valid image; for header-only uses).
    """
    profile = _PROFILES.get(modality.upper())
    if profile is None:
        raise InvalidValue(f"no synthetic profile for modality {modality!r}; use {MODALITIES}")
    series_count = profile.series if series is None else series
    per_series = profile.instances if instances is None else instances
    height = profile.rows if rows is None else rows
    width = profile.columns if columns is None else columns
    if series_count < 1 or per_series < 1 or height < 8 or width < 8:
        raise InvalidValue("a synthetic study needs >= 1 series, >= 1 instance, >= 8x8 pixels")
    for series_index in range(series_count):
        series_profile = profile.series_profiles[series_index % len(profile.series_profiles)]
        series_uid = synthetic_uid(seed, "series", series_index)
        frame_of_reference = synthetic_uid(seed, "frame-of-reference", series_index)
        for index in range(per_series):
            ds = _study_dataset(patient, profile, seed)
            ds.SOPInstanceUID = synthetic_uid(seed, "instance", series_index, index)
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_index + 1
            ds.InstanceNumber = index + 1
            ds.SeriesDescription = series_profile.description
            ds.ImageType = list(profile.image_type)
            for keyword, value in series_profile.attributes:
                setattr(ds, keyword, value)
            _geometry(
                ds,
                series_profile,
                frame_of_reference=frame_of_reference,
                index=index,
                rows=height,
                columns=width,
            )
            if pixel_data:
                ds.PixelData = _phantom(
                    profile, rows=height, columns=width, index=index, count=per_series, seed=seed
                )
            ds.file_meta = _file_meta(profile.sop_class_uid, ds.SOPInstanceUID)
            yield ds


def _study_dataset(patient: DicomPatient, profile: _ModalityProfile, seed: int) -> Dataset:
    study_date = date(2024, 1, 1) + timedelta(days=(seed * 37) % 366)
    study_time = f"{8 + seed % 10:02d}{(seed * 7) % 60:02d}00"
    ds = Dataset()
    if not all(v.isascii() for v in (patient.name, patient.id)):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = profile.sop_class_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
    ds.AccessionNumber = f"DEMO{seed:08d}"[-16:]
    ds.Modality = profile.modality
    ds.Manufacturer = "IMAGEBRIDGE SYNTHETIC"
    ds.InstitutionName = "Demo Hospital"
    ds.ReferringPhysicianName = "DEMO^REFERRER"
    ds.StationName = f"DEMO{ds.Modality}1"
    ds.StudyDescription = profile.study_description
    procedure = Dataset()
    procedure.CodeValue = profile.procedure.code_value
    procedure.CodingSchemeDesignator = profile.procedure.coding_scheme_designator
    procedure.CodeMeaning = profile.procedure.code_meaning
    ds.ProcedureCodeSequence = [procedure]
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    if patient.issuer is not None and patient.issuer.local_namespace:
        ds.IssuerOfPatientID = patient.issuer.local_namespace
    if patient.issuer is not None and patient.issuer.universal_id:
        qualifiers = Dataset()
        qualifiers.UniversalEntityID = patient.issuer.universal_id
        qualifiers.UniversalEntityIDType = patient.issuer.universal_id_type or "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.BodyPartExamined = profile.body_part
    ds.StudyInstanceUID = synthetic_uid(seed, "study")
    ds.StudyID = f"{seed % 10**8}"
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _geometry(
    ds: Dataset,
    series: _SeriesProfile,
    *,
    frame_of_reference: str,
    index: int,
    rows: int,
    columns: int,
) -> None:
    ds.Rows = rows
    ds.Columns = columns
    spacing = round(350.0 / max(rows, columns), 4)
    ds.PixelSpacing = [spacing, spacing]
    if not series.orientation:  # projection radiograph
        ds.PatientOrientation = ["L", "F"] if index % 2 == 0 else ["A", "F"]
        ds.ViewPosition = "PA" if index % 2 == 0 else "LL"
        return
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    thickness = 1.0 if ds.Modality == "CT" else 5.0
    location = round(-index * thickness, 2)
    ds.ImageOrientationPatient = list(series.orientation)
    if series.orientation == _SAGITTAL:
        ds.ImagePositionPatient = [location, -175.0, 175.0]
    else:
        ds.ImagePositionPatient = [-175.0, -175.0, location]
    ds.SliceThickness = thickness
    ds.SliceLocation = location


def _phantom(
    profile: _ModalityProfile, *, rows: int, columns: int, index: int, count: int, seed: int
) -> bytes:
    """A 16-bit little-endian phantom: the ellipses shrink towards both ends of the stack."""
    position = (index + 0.5) / count
    scale = 0.75 + 0.25 * (1.0 - abs(2.0 * position - 1.0)) + (seed % 5) * 0.01
    image = array("H")
    for r in range(rows):
        row = array("H", [profile.background]) * columns
        for cy, cx, ry, rx, value in profile.shapes:
            dy = (r + 0.5 - cy * rows) / (ry * rows * scale)
            if abs(dy) >= 1.0:
                continue
            half = rx * columns * scale * (1.0 - dy * dy) ** 0.5
            x0 = max(0, int(cx * columns - half))
            x1 = min(columns, int(cx * columns + half))
            if x1 > x0:
                row[x0:x1] = array("H", [value]) * (x1 - x0)
        image.extend(row)
    if sys.byteorder == "big":
        image.byteswap()
    return image.tobytes()


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
