"""DICOM JSON (QIDO-RS matches, WADO-RS metadata) read into InstanceHeader and StudySummary."""

from __future__ import annotations

import dataclasses

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from imagebridge.dicom.dicom_json import (
    first_string,
    instance_header_from_json,
    study_summary_from_json,
)
from imagebridge.dicom.headers import instance_header_from_dataset
from imagebridge.dicom.query import INSTANCE_HEADER_KEYWORDS
from imagebridge.dicom.synthetic import DEMO_PATIENTS, iter_study
from imagebridge.errors import DicomMissingUid, NotDicom
from imagebridge.model.imaging import ContentKind


def _metadata(modality: str = "MR") -> list[dict[str, object]]:
    """WADO-RS style metadata: every attribute, pixel data as a BulkDataURI."""
    items = []
    for ds in iter_study(DEMO_PATIENTS[0], modality=modality, instances=1, seed=5):
        item = ds.to_json_dict(bulk_data_threshold=16, bulk_data_element_handler=lambda e: "u")
        items.append(item)
    return items


def test_every_keyword_is_a_dicom_keyword() -> None:
    assert all(tag_for_keyword(k) is not None for k in INSTANCE_HEADER_KEYWORDS)


def test_metadata_gives_the_same_header_as_the_part10_object() -> None:
    datasets = list(iter_study(DEMO_PATIENTS[0], modality="MR", instances=1, seed=5))
    for ds, item in zip(datasets, _metadata(), strict=True):
        assert "7FE00010" in item
        expected = instance_header_from_dataset(ds, has_pixel_data=True)
        got = instance_header_from_json(item)
        assert got == dataclasses.replace(expected, transfer_syntax_uid="")
        assert got.patient.issuer is not None and got.study.procedure_codes


def test_transfer_syntax_from_meta_or_available_transfer_syntax() -> None:
    (item, *_) = _metadata()
    item["00083002"] = {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"]}
    assert instance_header_from_json(item).transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    item["00020010"] = {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}
    assert instance_header_from_json(item).transfer_syntax_uid == "1.2.840.10008.1.2.1"


def test_lower_case_tags_and_waveforms() -> None:
    item = {
        "0020000d": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000e": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.9.1.1"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "54000100": {"vr": "SQ", "Value": [{}]},
    }
    header = instance_header_from_json(item)
    assert header.study.study_instance_uid == "1.2.3"
    assert header.kind is ContentKind.WAVEFORM
    assert not header.has_pixel_data


def test_missing_uid_and_undecodable_objects_raise() -> None:
    with pytest.raises(DicomMissingUid):
        instance_header_from_json({"0020000D": {"vr": "UI", "Value": ["1.2.3"]}})
    with pytest.raises(NotDicom):
        instance_header_from_json(["not", "an", "object"])  # type: ignore[arg-type]


def test_study_summary() -> None:
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00201208": {"vr": "IS", "Value": [12]},
        "00100020": {"vr": "LO", "Value": ["P1"]},
    }
    assert study_summary_from_json(item) == study_summary_from_json(item)
    summary = study_summary_from_json(item)
    assert (summary.study_instance_uid, summary.number_of_instances, summary.patient_id) == (
        "1.2.3",
        12,
        "P1",
    )
    del item["00201208"]
    assert study_summary_from_json(item).number_of_instances is None
    with pytest.raises(DicomMissingUid):
        study_summary_from_json({"00100020": {"vr": "LO", "Value": ["P1"]}})


def test_person_names_multi_values_and_numbers_read_as_pydicom_does() -> None:
    ds = Dataset()
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.ReferringPhysicianName = "DOE^JOHN"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "MR"
    ds.BodyPartExamined = "HEAD"
    ds.SeriesNumber = 3
    ds.InstanceNumber = "7"
    ds.NumberOfFrames = 0
    ds.StudyDescription = ["A", "B"]  # malformed multi-value LO: kept joined
    accession = Dataset()
    accession.LocalNamespaceEntityID = "RIS"
    ds.IssuerOfAccessionNumberSequence = [accession]
    got = instance_header_from_json(ds.to_json_dict())
    assert got == instance_header_from_dataset(ds, has_pixel_data=False)
    assert got.patient.name == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert got.number_of_frames == 1
    assert got.kind is ContentKind.COMPOSITE


def test_first_string_reads_person_names_and_tolerates_junk() -> None:
    item = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
        "00100020": {"vr": "LO"},
        "00100030": "not an element",
    }
    assert first_string(item, "00100010") == "DOE^JANE"
    assert first_string(item, "00100020") == ""
    assert first_string(item, "00100030") == ""
    assert first_string(item, "00100040") == ""
