"""Synthetic PHI-free studies for tests, demos and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import (
    DEMO_PATIENTS,
    MODALITIES,
    iter_study,
    make_study,
    study_headers,
    synthetic_uid,
)
from imagebridge.errors import InvalidValue
from imagebridge.model.ids import validate_uid

Validator = Callable[[Path], list[str]]
SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}


@pytest.mark.parametrize("modality", MODALITIES)
def test_every_series_is_valid_for_its_iod(
    modality: str, tmp_path: Path, dciodvfy: Validator
) -> None:
    study = make_study(DEMO_PATIENTS[0], tmp_path, modality=modality, instances=2, seed=1)
    first_of_each_series = {path.parent: path for path in reversed(study.files)}
    for path in first_of_each_series.values():
        assert dciodvfy(path) == [], path
    last = study.files[-1]
    assert dciodvfy(last) == []


@pytest.mark.parametrize(
    ("modality", "series", "instances", "size"),
    [("CT", 1, 20, (64, 64)), ("MR", 3, 10, (64, 64)), ("CR", 1, 2, (96, 80))],
)
def test_default_profiles(
    modality: str, series: int, instances: int, size: tuple[int, int], tmp_path: Path
) -> None:
    study = make_study(DEMO_PATIENTS[2], tmp_path, modality=modality, seed=3)
    assert len(study.files) == series * instances
    assert study.total_bytes == sum(p.stat().st_size for p in study.files)
    headers = [read_instance_header(p) for p in study.files]
    assert len({h.series.series_instance_uid for h in headers}) == series
    assert {h.study.study_instance_uid for h in headers} == {study.study_instance_uid}
    assert {h.sop_class_uid for h in headers} == {SOP_CLASSES[modality]}
    assert {h.series.modality for h in headers} == {modality}
    assert {h.patient.name for h in headers} == {"DEMO^CAROL"}
    for header in headers:
        for uid in (
            header.study.study_instance_uid,
            header.series.series_instance_uid,
            header.sop_instance_uid,
        ):
            assert uid.startswith("2.25.") and validate_uid(uid) == uid
    ds = dcmread(study.files[0])
    assert (ds.Rows, ds.Columns) == size
    assert len(ds.PixelData) == size[0] * size[1] * 2
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert study.files[0].relative_to(tmp_path) == Path("series-001/00001.dcm")


def test_mr_series_differ() -> None:
    descriptions = [
        ds.SeriesDescription for ds in iter_study(DEMO_PATIENTS[0], modality="MR", instances=1)
    ]
    assert descriptions == ["T1 SAG", "T2 AX", "FLAIR AX"]


def test_a_seed_always_gives_the_same_study(tmp_path: Path) -> None:
    one = make_study(DEMO_PATIENTS[0], tmp_path / "a", modality="CT", instances=3, seed=42)
    two = make_study(DEMO_PATIENTS[0], tmp_path / "b", modality="CT", instances=3, seed=42)
    other = make_study(DEMO_PATIENTS[0], tmp_path / "c", modality="CT", instances=3, seed=43)
    assert [p.read_bytes() for p in one.files] == [p.read_bytes() for p in two.files]
    assert one.study_instance_uid != other.study_instance_uid
    assert synthetic_uid(42, "study") == one.study_instance_uid


def test_slices_differ_and_size_is_configurable() -> None:
    slices = list(iter_study(DEMO_PATIENTS[0], modality="CT", instances=4, rows=32, columns=48))
    assert all((ds.Rows, ds.Columns) == (32, 48) for ds in slices)
    assert all(len(ds.PixelData) == 32 * 48 * 2 for ds in slices)
    assert slices[0].PixelData != slices[1].PixelData
    assert [ds.InstanceNumber for ds in slices] == [1, 2, 3, 4]
    assert [float(ds.SliceLocation) for ds in slices] == [0.0, -1.0, -2.0, -3.0]


def test_headers_without_pixels_match_the_files(tmp_path: Path) -> None:
    study = make_study(DEMO_PATIENTS[1], tmp_path, modality="MR", instances=2, seed=9)
    from_files = [read_instance_header(p) for p in study.files]
    made = study_headers(DEMO_PATIENTS[1], modality="MR", instances=2, seed=9)
    assert [(h.series.series_instance_uid, h.sop_instance_uid) for h in made] == [
        (h.series.series_instance_uid, h.sop_instance_uid) for h in from_files
    ]
    assert [h.patient for h in made] == [h.patient for h in from_files]
    assert [h.study for h in made] == [h.study for h in from_files]
    assert all(h.has_pixel_data for h in made)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="modality"):
        make_study(DEMO_PATIENTS[0], tmp_path, modality="PET")
    with pytest.raises(InvalidValue):
        make_study(DEMO_PATIENTS[0], tmp_path, instances=0)
    with pytest.raises(InvalidValue):
        list(iter_study(DEMO_PATIENTS[0], rows=4))
