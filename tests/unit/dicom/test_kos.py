"""KOS manifests: build (Imaging Document Source), parse and RAD-75 locators (Consumer)."""

from __future__ import annotations

import dataclasses
import io
import random
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.kos import (
    IMPLEMENTATION_CLASS_UID,
    build_kos,
    manifest_series_uid,
    manifest_uid,
)
from imagebridge.dicom.manifest import imaging_document_locators, parse_manifest, read_manifest
from imagebridge.dicom.synthetic import DEMO_PATIENTS, study_headers
from imagebridge.errors import (
    InvalidUid,
    KosBuildError,
    KosMalformed,
    KosMissingRetrieveLocation,
    NotDicom,
    NotKeyObjectSelection,
)
from imagebridge.model.ids import validate_uid
from imagebridge.model.imaging import (
    KOS_SOP_CLASS_UID,
    MANIFEST_TITLE,
    ContentKind,
    DicomPatient,
    HierarchicDesignator,
    ImagingDocumentLocator,
    InstanceHeader,
)

Validator = Callable[[Path], list[str]]
REPOSITORY = "1.3.6.1.4.1.21367.13.80.110"
OTHER_REPOSITORY = "1.3.6.1.4.1.21367.13.71.201.2"
WHEN = datetime(2024, 5, 1, 10, 0, 0)


@pytest.fixture(scope="module")
def mr_headers() -> list[InstanceHeader]:
    """Three MR series of 4 instances, with accession issuer and procedure code."""
    headers = study_headers(DEMO_PATIENTS[1], modality="MR", instances=4, seed=5)
    issuer = HierarchicDesignator("", "1.2.3.4.5.6", "ISO")
    return [
        dataclasses.replace(h, study=dataclasses.replace(h.study, accession_issuer=issuer))
        for h in headers
    ]


def _build(headers: list[InstanceHeader], **overrides: object) -> bytes:
    arguments: dict[str, object] = {"sop_instance_uid": "1.2.3", "series_instance_uid": "1.2.4"}
    if headers and "sop_instance_uid" not in overrides:
        study = headers[0].study.study_instance_uid
        arguments["sop_instance_uid"] = manifest_uid(study, headers)
        arguments["series_instance_uid"] = manifest_series_uid(study, headers)
    arguments |= {
        "retrieve_location_uid": REPOSITORY,
        "retrieve_ae_title": "PACS1",
        "content_datetime": WHEN,
        "manufacturer": "imagebridge",
        "institution_name": "Demo Hospital",
    }
    arguments.update(overrides)
    return build_kos(headers, **arguments)  # type: ignore[arg-type]


def _write(tmp_path: Path, data: bytes, name: str = "kos.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- build ----------------------------------------------------------------------------


def test_built_kos_passes_dciodvfy(
    mr_headers: list[InstanceHeader], tmp_path: Path, dciodvfy: Validator
) -> None:
    assert dciodvfy(_write(tmp_path, _build(mr_headers))) == []


def test_variants_pass_dciodvfy(
    mr_headers: list[InstanceHeader], tmp_path: Path, dciodvfy: Validator
) -> None:
    """Per-series locations and URLs, a description, UTF-8 names, an aware content time."""
    series = list(dict.fromkeys(h.series.series_instance_uid for h in mr_headers))
    patient = DicomPatient("MÜLLER^JÖRG", "DEMO-ü1", None, "", "O")
    utf8 = [dataclasses.replace(h, patient=patient) for h in mr_headers]
    data = _build(
        utf8,
        retrieve_location_uid={
            uid: REPOSITORY if i else OTHER_REPOSITORY for i, uid in enumerate(series)
        },
        retrieve_ae_title={uid: f"AE{i}" for i, uid in enumerate(series)},
        retrieve_url=f"https://pacs.example.org/dicom-web/studies/{mr_headers[0].study.study_instance_uid}",
        description="Complete study — für XCA-I",
        content_datetime=datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    # dicom3tools does not know Retrieve URL in the Hierarchical Series Reference
    # macro (added to DICOM later); it only warns ("Standard Extended SOP Class").
    messages = dciodvfy(_write(tmp_path, data))
    assert all("Retrieve URL" in w or "Standard Extended" in w for w in messages), messages
    ds = dcmread(io.BytesIO(data))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "MÜLLER^JÖRG"
    assert ds.TimezoneOffsetFromUTC == "+0200"
    assert ds.ContentSequence[0].ValueType == "TEXT"
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == "113012"
    assert ds.ContentSequence[0].TextValue == "Complete study — für XCA-I"
    items = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [i.RetrieveLocationUID for i in items] == [OTHER_REPOSITORY, REPOSITORY, REPOSITORY]
    assert [i.RetrieveAETitle for i in items] == ["AE0", "AE1", "AE2"]
    assert all(i.RetrieveURL.startswith("https://pacs.example.org/") for i in items)


def test_built_kos_content(mr_headers: list[InstanceHeader]) -> None:
    ds = dcmread(io.BytesIO(_build(mr_headers)))
    first = mr_headers[0]
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.SOPClassUID == KOS_SOP_CLASS_UID
    assert ds.Modality == "KO"
    assert "SpecificCharacterSet" not in ds
    title = ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113030",
        "DCM",
        "Manifest",
    )
    assert ds.ValueType == "CONTAINER"
    assert ds.ContinuityOfContent == "SEPARATE"
    template = ds.ContentTemplateSequence[0]
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "2010")
    assert (ds.ContentDate, ds.ContentTime) == ("20240501", "100000")
    assert ds.ReferencedPerformedProcedureStepSequence == []
    assert (ds.Manufacturer, ds.InstitutionName) == ("imagebridge", "Demo Hospital")
    # Patient and study copied unchanged from the images.
    assert str(ds.PatientName) == first.patient.name == "DEMO^BOB"
    assert ds.PatientID == first.patient.id
    assert ds.IssuerOfPatientID == "IMAGEBRIDGE-DEMO"
    assert ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "2.25.1"
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19581224", "M")
    assert ds.StudyInstanceUID == first.study.study_instance_uid
    assert (ds.StudyDate, ds.StudyTime) == (first.study.study_date, first.study.study_time)
    assert ds.AccessionNumber == first.study.accession_number
    assert ds.IssuerOfAccessionNumberSequence[0].UniversalEntityID == "1.2.3.4.5.6"
    assert ds.StudyID == first.study.study_id
    assert str(ds.ReferringPhysicianName) == "DEMO^REFERRER"
    assert ds.StudyDescription == "MR BRAIN WITHOUT CONTRAST"
    assert ds.ProcedureCodeSequence[0].CodeValue == "24590-2"
    # A new KO series, never an image series.
    assert ds.SeriesInstanceUID not in {h.series.series_instance_uid for h in mr_headers}
    # Evidence: one study, every series with AE title and location, every instance.
    [study] = ds.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == first.study.study_instance_uid
    referenced = {
        (series.SeriesInstanceUID, sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID)
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert referenced == {
        (h.series.series_instance_uid, h.sop_class_uid, h.sop_instance_uid) for h in mr_headers
    }
    for series in study.ReferencedSeriesSequence:
        assert (series.RetrieveAETitle, series.RetrieveLocationUID) == ("PACS1", REPOSITORY)
        assert "RetrieveURL" not in series
    # Content tree: one IMAGE item per instance, in evidence order.
    assert len(ds.ContentSequence) == len(mr_headers)
    assert {item.ValueType for item in ds.ContentSequence} == {"IMAGE"}
    assert {item.RelationshipType for item in ds.ContentSequence} == {"CONTAINS"}
    in_tree = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in ds.ContentSequence
    ]
    in_evidence = [
        sop.ReferencedSOPInstanceUID
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    ]
    assert in_tree == in_evidence


def test_directly_encoded_items_equal_pydicom_encoding(mr_headers: list[InstanceHeader]) -> None:
    """The per-instance items are hand-encoded; pydicom's own encoding gives the same bytes."""
    data = _build(mr_headers, description="desc")
    ds = dcmread(io.BytesIO(data))

    def plain(item: Dataset) -> Dataset:
        copy = Dataset()
        for element in item:
            value = [plain(i) for i in element.value] if element.VR == "SQ" else element.value
            copy.add_new(element.tag, element.VR, value)
        return copy

    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        study.set_original_encoding(None, None, None)
        for series in study.ReferencedSeriesSequence:
            series.ReferencedSOPSequence = [plain(i) for i in series.ReferencedSOPSequence]
            series.set_original_encoding(None, None, None)
    ds.ContentSequence = [plain(i) for i in ds.ContentSequence]
    ds.set_original_encoding(None, None, None)
    again = io.BytesIO()
    ds.save_as(again, enforce_file_format=True)
    assert again.getvalue() == data


def test_value_types_follow_the_instance_kind(mr_headers: list[InstanceHeader]) -> None:
    mixed = list(mr_headers)
    mixed[0] = dataclasses.replace(mixed[0], kind=ContentKind.COMPOSITE)
    mixed[1] = dataclasses.replace(mixed[1], kind=ContentKind.WAVEFORM)
    ds = dcmread(io.BytesIO(_build(mixed)))
    types = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID: item.ValueType
        for item in ds.ContentSequence
    }
    assert types[mixed[0].sop_instance_uid] == "COMPOSITE"
    assert types[mixed[1].sop_instance_uid] == "WAVEFORM"
    assert types[mixed[2].sop_instance_uid] == "IMAGE"


def test_output_is_deterministic_and_order_independent(mr_headers: list[InstanceHeader]) -> None:
    shuffled = list(mr_headers)
    random.Random(4).shuffle(shuffled)
    assert _build(mr_headers) == _build(mr_headers) == _build(shuffled)


def test_build_refuses_inconsistent_input(mr_headers: list[InstanceHeader]) -> None:
    other_study = dataclasses.replace(
        mr_headers[0],
        sop_instance_uid="1.2.3.999",
        study=dataclasses.replace(mr_headers[0].study, study_instance_uid="1.2.3.4"),
    )
    other_patient = dataclasses.replace(
        mr_headers[0], sop_instance_uid="1.2.3.998", patient=DEMO_PATIENTS[0]
    )
    bad_uid = dataclasses.replace(mr_headers[0], sop_instance_uid="1.2.x")
    cases: list[tuple[list[InstanceHeader], dict[str, object], str]] = [
        ([], {}, "at least one"),
        ([*mr_headers, other_study], {}, "two studies"),
        ([*mr_headers, other_patient], {}, "Patient ID"),
        ([*mr_headers, mr_headers[0]], {}, "given twice"),
        ([*mr_headers[1:], bad_uid], {}, "not a DICOM UID"),
        (mr_headers, {"retrieve_location_uid": {}}, "no Retrieve Location UID"),
        (mr_headers, {"retrieve_location_uid": "1.02.x"}, "Retrieve Location UID"),
        (mr_headers, {"retrieve_ae_title": "A" * 17}, "Retrieve AE Title"),
        (mr_headers, {"retrieve_ae_title": ""}, "Retrieve AE Title"),
        (
            mr_headers,
            {"series_instance_uid": mr_headers[0].series.series_instance_uid},
            "image series",
        ),
    ]
    for headers, overrides, message in cases:
        with pytest.raises(KosBuildError, match=message):
            _build(headers, sop_instance_uid="1.2.3", **overrides)
    with pytest.raises(InvalidUid):
        _build(mr_headers, sop_instance_uid="not-a-uid")


# --- deterministic manifest UIDs ----------------------------------------------------------


def test_manifest_uids_are_stable_per_study_version(mr_headers: list[InstanceHeader]) -> None:
    study = mr_headers[0].study.study_instance_uid
    uid = manifest_uid(study, mr_headers)
    series_uid = manifest_series_uid(study, mr_headers)
    assert uid.startswith("2.25.") and series_uid.startswith("2.25.")
    assert validate_uid(uid) == uid and len(uid) <= 64
    assert uid != series_uid
    assert manifest_uid(study, reversed(mr_headers)) == uid
    assert manifest_uid(study, [*mr_headers, mr_headers[0]]) == uid
    assert manifest_uid(study, mr_headers[:-1]) != uid
    assert manifest_series_uid(study, mr_headers[:-1]) != series_uid
    moved = dataclasses.replace(
        mr_headers[0], series=dataclasses.replace(mr_headers[0].series, series_instance_uid="1.9")
    )
    assert manifest_uid(study, [moved, *mr_headers[1:]]) != uid
    with pytest.raises(KosBuildError, match="belongs to study"):
        manifest_uid("1.2.3", mr_headers)


# --- parse ----------------------------------------------------------------------------------


def test_round_trip_gives_the_instance_set_and_location(
    mr_headers: list[InstanceHeader], tmp_path: Path
) -> None:
    data = _build(mr_headers)
    manifest = parse_manifest(data)
    assert manifest == read_manifest(_write(tmp_path, data))
    assert manifest == parse_manifest(io.BytesIO(data))
    study = mr_headers[0].study
    assert manifest.sop_instance_uid == manifest_uid(study.study_instance_uid, mr_headers)
    assert manifest.document_title == MANIFEST_TITLE
    assert manifest.patient == mr_headers[0].patient
    assert manifest.study_instance_uids == (study.study_instance_uid,)
    assert manifest.accession_number == study.accession_number
    assert manifest.accession_issuer == HierarchicDesignator("", "1.2.3.4.5.6", "ISO")
    assert {(s.retrieve_location_uid, s.retrieve_ae_title) for s in manifest.series} == {
        (REPOSITORY, "PACS1")
    }
    assert {
        (s.series_instance_uid, i.sop_class_uid, i.sop_instance_uid)
        for s in manifest.series
        for i in s.instances
    } == {(h.series.series_instance_uid, h.sop_class_uid, h.sop_instance_uid) for h in mr_headers}
    assert manifest.instance_count == len(mr_headers)


def test_locators_for_rad75(mr_headers: list[InstanceHeader]) -> None:
    series = sorted({h.series.series_instance_uid for h in mr_headers})
    data = _build(
        mr_headers,
        retrieve_location_uid={
            series[0]: OTHER_REPOSITORY,
            series[1]: REPOSITORY,
            series[2]: REPOSITORY,
        },
    )
    locators = imaging_document_locators(parse_manifest(data))
    study = mr_headers[0].study.study_instance_uid
    expected = {
        ImagingDocumentLocator(
            OTHER_REPOSITORY if h.series.series_instance_uid == series[0] else REPOSITORY,
            study,
            h.series.series_instance_uid,
            h.sop_instance_uid,
        )
        for h in mr_headers
    }
    assert set(locators) == expected
    assert len(locators) == len(expected)
    # Manifest order: series by series number, instances by instance number.
    ordered = sorted(mr_headers, key=lambda h: (h.series.series_number, h.instance_number))
    assert [loc.sop_instance_uid for loc in locators] == [h.sop_instance_uid for h in ordered]


def _edit(data: bytes, change: Callable[[Dataset], None]) -> bytes:
    ds = dcmread(io.BytesIO(data))
    change(ds)
    ds.set_original_encoding(None, None, None)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _series_items(ds: Dataset) -> list[Dataset]:
    return list(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence)


def test_xds_retrieval_sequence_is_a_tolerated_fallback(mr_headers: list[InstanceHeader]) -> None:
    def change(ds: Dataset) -> None:
        for item in _series_items(ds):
            del item.RetrieveLocationUID
            retrieval = Dataset()
            retrieval.RepositoryUniqueID = OTHER_REPOSITORY
            retrieval.HomeCommunityID = "1.3.6.1.4.1.21367.13.70.201"
            item.XDSRetrievalSequence = [retrieval]

    manifest = parse_manifest(_edit(_build(mr_headers), change))
    assert {s.retrieve_location_uid for s in manifest.series} == {OTHER_REPOSITORY}
    assert {s.home_community_id for s in manifest.series} == {"1.3.6.1.4.1.21367.13.70.201"}


def test_instance_level_locations_split_a_series(mr_headers: list[InstanceHeader]) -> None:
    def change(ds: Dataset) -> None:
        first = _series_items(ds)[0]
        del first.RetrieveLocationUID
        for n, sop in enumerate(first.ReferencedSOPSequence):
            sop.RetrieveLocationUID = REPOSITORY if n % 2 else OTHER_REPOSITORY

    manifest = parse_manifest(_edit(_build(mr_headers), change))
    first_uid = manifest.series[0].series_instance_uid
    split = [s for s in manifest.series if s.series_instance_uid == first_uid]
    assert [s.retrieve_location_uid for s in split] == [OTHER_REPOSITORY, REPOSITORY]
    assert [len(s.instances) for s in split] == [2, 2]
    assert manifest.instance_count == len(mr_headers)


def test_missing_retrieve_location(mr_headers: list[InstanceHeader]) -> None:
    def change(ds: Dataset) -> None:
        del _series_items(ds)[1].RetrieveLocationUID

    data = _edit(_build(mr_headers), change)
    with pytest.raises(KosMissingRetrieveLocation) as info:
        parse_manifest(data)
    assert (
        info.value.series_instance_uid
        == _series_items(dcmread(io.BytesIO(data)))[1].SeriesInstanceUID
    )
    manifest = parse_manifest(data, default_retrieve_location_uid=OTHER_REPOSITORY)
    assert [s.retrieve_location_uid for s in manifest.series] == [
        REPOSITORY,
        OTHER_REPOSITORY,
        REPOSITORY,
    ]


def test_malformed_manifests(mr_headers: list[InstanceHeader], tmp_path: Path) -> None:
    data = _build(mr_headers)

    def bad_location(ds: Dataset) -> None:
        _series_items(ds)[0].RetrieveLocationUID = "1.2.abc"

    def no_evidence(ds: Dataset) -> None:
        del ds.CurrentRequestedProcedureEvidenceSequence

    def empty_reference(ds: Dataset) -> None:
        del _series_items(ds)[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID

    def no_series_uid(ds: Dataset) -> None:
        del _series_items(ds)[0].SeriesInstanceUID

    changes: list[tuple[Callable[[Dataset], None], str]] = [
        (bad_location, "not a valid DICOM UID"),  # pydicom warns on write
        (no_evidence, "references no instance"),
        (empty_reference, "without class or instance"),
        (no_series_uid, "without Series Instance UID"),
    ]
    for change, message in changes:
        with warnings.catch_warnings(), pytest.raises(KosMalformed, match=message):
            warnings.simplefilter("ignore")  # pydicom warns about the invalid UID
            parse_manifest(_edit(data, change))
    with pytest.raises(NotDicom):
        parse_manifest(b"definitely not DICOM")
    image = study_headers(DEMO_PATIENTS[0], modality="CR")[0]
    assert image.sop_class_uid != KOS_SOP_CLASS_UID

    def as_image(ds: Dataset) -> None:
        ds.SOPClassUID = image.sop_class_uid

    with pytest.raises(NotKeyObjectSelection):
        parse_manifest(_edit(data, as_image))


# --- NIST reference manifests ------------------------------------------------------------------


def _nist_manifests(conformance_dir: Path) -> list[Path]:
    found = []
    for path in sorted((conformance_dir / "nist-images" / "std").rglob("*")):
        if not path.is_file():
            continue
        try:
            sop_class = dcmread(path, stop_before_pixels=True).get("SOPClassUID")
        except InvalidDicomError:  # xml and txt files live beside the objects
            continue
        if sop_class == KOS_SOP_CLASS_UID:
            found.append(path)
    return found


@pytest.mark.conformance
def test_nist_reference_manifests_give_their_instance_lists(conformance_dir: Path) -> None:
    paths = _nist_manifests(conformance_dir)
    assert len(paths) >= 30
    for path in paths:
        manifest = read_manifest(path)
        ds = dcmread(path)
        expected = {
            (
                study.StudyInstanceUID,
                series.SeriesInstanceUID,
                series.RetrieveLocationUID,
                sop.ReferencedSOPClassUID,
                sop.ReferencedSOPInstanceUID,
            )
            for study in ds.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for sop in series.ReferencedSOPSequence
        }
        got = {
            (
                s.study_instance_uid,
                s.series_instance_uid,
                s.retrieve_location_uid,
                i.sop_class_uid,
                i.sop_instance_uid,
            )
            for s in manifest.series
            for i in s.instances
        }
        assert got == expected, path
        assert manifest.document_title == MANIFEST_TITLE, path
        assert manifest.patient.id == ds.PatientID, path
        assert len(imaging_document_locators(manifest)) == len(expected), path


@pytest.mark.conformance
def test_nist_manifest_details(conformance_dir: Path) -> None:
    std = conformance_dir / "nist-images" / "std"
    manifest = read_manifest(std / "IDS-DEPT002-a" / "kos" / "kos.dcm")
    assert manifest.instance_count == 36
    assert {(s.retrieve_ae_title, s.retrieve_location_uid) for s in manifest.series} == {
        ("DCM4CHEE", REPOSITORY)
    }
    two_studies = read_manifest(std / "IDS-DEPT099-a" / "kos" / "kos.dcm")
    assert len(two_studies.study_instance_uids) == 2
    assert read_manifest(std / "ids-1002" / "kos.dcm").instance_count == 144


@pytest.mark.conformance
def test_our_manifest_for_nist_images_matches_nist_manifest(
    conformance_dir: Path, tmp_path: Path, dciodvfy: Validator
) -> None:
    folder = conformance_dir / "nist-images" / "std" / "IDS-DEPT002-a"
    headers = [read_instance_header(p) for p in sorted((folder / "images").iterdir())]
    ours = parse_manifest(_build(headers, retrieve_ae_title="DCM4CHEE"))
    nist = read_manifest(folder / "kos" / "kos.dcm")
    assert set(imaging_document_locators(ours)) == set(imaging_document_locators(nist))
    assert ours.patient == nist.patient
    assert dciodvfy(_write(tmp_path, _build(headers))) == []


def test_manifest_uids_differ_between_repositories() -> None:
    headers = study_headers(DEMO_PATIENTS[0], modality="CR", seed=9)
    study = headers[0].study.study_instance_uid
    a = manifest_uid(study, headers, repository_unique_id="1.2.3.1")
    b = manifest_uid(study, headers, repository_unique_id="1.2.3.2")
    assert a != b
    assert a == manifest_uid(study, list(reversed(headers)), repository_unique_id="1.2.3.1")
    assert manifest_series_uid(study, headers, repository_unique_id="1.2.3.1") != (
        manifest_series_uid(study, headers, repository_unique_id="1.2.3.2")
    )
