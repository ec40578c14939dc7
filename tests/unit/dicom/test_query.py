"""Query/Retrieve identifiers (Study Root C-FIND) and reading matches back into models."""

from __future__ import annotations

import dataclasses

import pytest
from pydicom.dataset import Dataset

from imagebridge.dicom.headers import instance_header_from_dataset
from imagebridge.dicom.query import (
    INSTANCE_HEADER_KEYWORDS,
    instance_header_from_identifier,
    instance_identifier,
    is_single_value,
    study_identifier,
    study_summary_from_identifier,
)
from imagebridge.dicom.synthetic import DEMO_PATIENTS, iter_study
from imagebridge.model.imaging import ContentKind


@pytest.mark.parametrize(
    ("value", "single"),
    [
        ("P1", True),
        ("1.2.3", True),
        ("", False),
        ("  ", False),
        ("P*", False),
        ("P?", False),
        ("A\\B", False),
    ],
)
def test_single_values(value: str, single: bool) -> None:
    assert is_single_value(value) is single


def test_study_identifier() -> None:
    ds = study_identifier("P1")
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.PatientID == "P1"
    assert "NumberOfStudyRelatedInstances" in ds and "StudyInstanceUID" in ds


def test_instance_identifier_asks_for_every_header_attribute() -> None:
    ds = instance_identifier("1.2.3")
    assert ds.QueryRetrieveLevel == "IMAGE"
    assert ds.StudyInstanceUID == "1.2.3"
    for keyword in INSTANCE_HEADER_KEYWORDS:
        assert keyword in ds
    assert len(ds.ProcedureCodeSequence) == 0
    keys = instance_identifier("1.2.3", "1.2.3.4", "1.2.3.4.5", keywords=())
    assert {e.keyword for e in keys} == {
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    }


def _match(ds: Dataset) -> Dataset:
    """What a PACS answers for an image: the asked attributes, no pixel data, no file meta."""
    match = Dataset()
    for keyword in INSTANCE_HEADER_KEYWORDS:
        if keyword in ds:
            setattr(match, keyword, ds.data_element(keyword).value)
    return match


def test_an_image_match_gives_the_file_header_without_transfer_syntax() -> None:
    for ds in iter_study(DEMO_PATIENTS[1], modality="MR", instances=1, seed=3, pixel_data=False):
        expected = instance_header_from_dataset(ds, has_pixel_data=True)
        got = instance_header_from_identifier(_match(ds))
        assert got == dataclasses.replace(expected, transfer_syntax_uid="")


def test_available_transfer_syntax_and_waveforms() -> None:
    match = Dataset()
    match.StudyInstanceUID = "1.2.3"
    match.SeriesInstanceUID = "1.2.3.4"
    match.SOPInstanceUID = "1.2.3.4.5"
    match.SOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG
    match.AvailableTransferSyntaxUID = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    header = instance_header_from_identifier(match)
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert header.kind is ContentKind.WAVEFORM
    assert not header.has_pixel_data


def test_study_summary_from_identifier() -> None:
    match = Dataset()
    match.StudyInstanceUID = "1.2.3"
    match.PatientID = "P1"
    match.NumberOfStudyRelatedInstances = "7"
    summary = study_summary_from_identifier(match)
    assert (summary.study_instance_uid, summary.number_of_instances, summary.patient_id) == (
        "1.2.3",
        7,
        "P1",
    )
    match.NumberOfStudyRelatedInstances = ""
    assert study_summary_from_identifier(match).number_of_instances is None
