"""Imaging Document Source index: upsert, replace and remove keep patients and studies in step."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import pytest

from imagebridge.dicom.synthetic import DEMO_ISSUER, DEMO_PATIENTS, study_headers
from imagebridge.errors import PatientIdUnresolved, StoreError
from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import (
    DicomPatient,
    HierarchicDesignator,
    InstanceHeader,
    OtherPatientId,
)
from imagebridge.model.index import FileStamp
from imagebridge.store import Store
from tests.unit.store.conftest import DEFAULT_AUTHORITY

REPO = "1.3.6.1.4.1.21367.13.71.201.1"
OTHER_REPO = "1.3.6.1.4.1.21367.13.71.201.2"
ALICE = PatientId("DEMO-0001", DEMO_ISSUER.universal_id)
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _headers(patient: DicomPatient = DEMO_PATIENTS[0], **kwargs: object) -> list[InstanceHeader]:
    return study_headers(patient, **kwargs)  # type: ignore[arg-type]


def _with_patient(headers: list[InstanceHeader], patient: DicomPatient) -> list[InstanceHeader]:
    return [dataclasses.replace(h, patient=patient) for h in headers]


def test_upsert_builds_study_and_patient(store: Store) -> None:
    headers = _headers(modality="MR", seed=1)
    result = store.upsert_instances(REPO, headers)
    assert result.instances == 30 and result.duplicates == ()
    study = store.study(headers[0].study.study_instance_uid)
    assert study is not None
    assert study.repository_unique_id == REPO
    assert study.patient_id == ALICE
    assert study.patient == headers[0].patient
    assert (study.study_date, study.study_time) == (
        headers[0].study.study_date,
        headers[0].study.study_time,
    )
    assert study.accession_number == headers[0].study.accession_number
    assert study.procedure_codes == headers[0].study.procedure_codes
    assert study.modalities == ("MR",) and study.body_parts == ("HEAD",)
    assert (study.number_of_series, study.number_of_instances) == (3, 30)
    assert len(study.fingerprint) == 64
    patient = store.patient(ALICE)
    assert patient is not None
    assert (patient.family, patient.given, patient.birth_date, patient.sex) == (
        "DEMO",
        ("ALICE",),
        "19700101",
        "F",
    )


def test_study_instances_rebuild_the_headers_exactly(store: Store) -> None:
    headers = _headers(modality="MR", seed=2)
    store.upsert_instances(REPO, headers)
    rebuilt = store.study_instances(headers[0].study.study_instance_uid)
    assert rebuilt == headers  # same order: series number, then instance number


def test_upsert_is_idempotent(store: Store) -> None:
    headers = _headers(modality="CT", seed=3)
    store.upsert_instances(REPO, headers)
    before = store.study(headers[0].study.study_instance_uid)
    store.upsert_instances(REPO, headers)
    assert store.study(headers[0].study.study_instance_uid) == before
    assert store.repository_counts(REPO).instances == len(headers)


def test_remove_instances_updates_study_then_deletes_study_and_patient(store: Store) -> None:
    headers = _headers(modality="CT", seed=4)
    store.upsert_instances(REPO, headers)
    study_uid = headers[0].study.study_instance_uid
    fingerprint = store.study(study_uid).fingerprint  # type: ignore[union-attr]
    assert store.remove_instances(REPO, [h.sop_instance_uid for h in headers[:5]]) == 5
    study = store.study(study_uid)
    assert study is not None and study.number_of_instances == 15
    assert study.fingerprint != fingerprint
    assert store.remove_instances(REPO, [h.sop_instance_uid for h in headers]) == 15
    assert store.study(study_uid) is None
    assert store.patient(ALICE) is None
    assert store.patient_candidates(birth_date="19700101") == []
    assert store.repository_counts(REPO).instances == 0


def test_replace_study_holds_exactly_the_new_instances(store: Store) -> None:
    headers = _headers(modality="MR", seed=5)
    study_uid = headers[0].study.study_instance_uid
    store.upsert_instances(REPO, headers)
    kept = [h for h in headers if h.series.series_number != 2]
    store.replace_study(REPO, study_uid, kept)
    study = store.study(study_uid)
    assert study is not None and (study.number_of_series, study.number_of_instances) == (2, 20)
    assert store.study_instances(study_uid) == kept
    store.replace_study(REPO, study_uid, [])
    assert store.study(study_uid) is None and store.patient(ALICE) is None


def test_replace_study_refuses_another_study(store: Store) -> None:
    headers = _headers(modality="CR", seed=6)
    with pytest.raises(StoreError, match="replace_study"):
        store.replace_study(REPO, "1.2.3.4", headers)


def test_instance_moved_to_another_study_updates_both(store: Store) -> None:
    first = _headers(modality="CR", seed=7)
    second = _headers(modality="CR", seed=8)
    store.upsert_instances(REPO, first + second)
    moved = dataclasses.replace(first[0], study=second[0].study, series=second[0].series)
    store.upsert_instances(REPO, [moved])
    assert store.study(first[0].study.study_instance_uid).number_of_instances == 1  # type: ignore[union-attr]
    assert store.study(second[0].study.study_instance_uid).number_of_instances == 3  # type: ignore[union-attr]


def test_patient_demographics_come_from_the_latest_study(store: Store) -> None:
    old = _headers(modality="CR", seed=9)
    new = _headers(modality="CT", seed=10)
    renamed = dataclasses.replace(DEMO_PATIENTS[0], name="SMITH^ALICE^B")
    old = [
        dataclasses.replace(h, study=dataclasses.replace(h.study, study_date="20100101"))
        for h in old
    ]
    store.upsert_instances(REPO, _with_patient(new, renamed))
    store.upsert_instances(REPO, old)
    patient = store.patient(ALICE)
    assert patient is not None and (patient.family, patient.given) == ("SMITH", ("ALICE", "B"))
    assert [r.patient_id for r in store.patient_candidates(family_key="Smith")] == [ALICE]
    assert store.patient_candidates(family_key="demo") == []
    studies = store.studies_for_patient(ALICE)
    assert [s.study_date for s in studies] == ["20100101", new[0].study.study_date]
    assert studies[0].patient.name == "DEMO^ALICE"  # each study keeps its own Patient module


def test_study_reassigned_to_another_patient_drops_the_old_patient(store: Store) -> None:
    headers = _headers(modality="CR", seed=11)
    store.upsert_instances(REPO, headers)
    store.upsert_instances(REPO, _with_patient(headers, DEMO_PATIENTS[1]))
    assert store.patient(ALICE) is None
    bob = PatientId("DEMO-0002", DEMO_ISSUER.universal_id)
    assert [s.study_instance_uid for s in store.studies_for_patient(bob)] == [
        headers[0].study.study_instance_uid
    ]


def test_patient_candidates_normalise_names_and_match_birth_date(store: Store) -> None:
    patient = DicomPatient("Müller-Lüdenscheidt^José  María", "P-1", None, "19630804", "M")
    store.upsert_instances(REPO, _with_patient(_headers(modality="CR", seed=12), patient))
    expected = PatientId("P-1", DEFAULT_AUTHORITY)
    by_name = store.patient_candidates(family_key="MULLER-LUDENSCHEIDT")
    assert [r.patient_id for r in by_name] == [expected]
    assert by_name[0].family == "Müller-Lüdenscheidt"
    assert by_name[0].given == ("José", "María")
    assert [r.patient_id for r in store.patient_candidates(birth_date="19630804")] == [expected]
    both = store.patient_candidates(birth_date="19630804", family_key="müller-lüdenscheidt")
    assert [r.patient_id for r in both] == [expected]
    assert store.patient_candidates(birth_date="19630805", family_key="muller-ludenscheidt") == []
    for prefix in ("1963", "196308"):
        assert [r.patient_id for r in store.patient_candidates(birth_date=prefix)] == [expected]
    assert store.patient_candidates(birth_date="1964") == []
    assert [
        r.patient_id
        for r in store.patient_candidates(birth_date="", family_key="muller ludenscheidt")
    ] == [expected]
    with pytest.raises(TypeError):
        store.patient_candidates()


def test_address_telephones_and_other_ids_reach_the_patient_record(store: Store) -> None:
    patient = DicomPatient(
        "ROE^RICHARD",
        "P-2",
        HierarchicDesignator("LOCAL-HOSP"),
        "19800101",
        "M",
        address="1 Main St^^Springfield^IL^62701",
        telephones=("555-0100", "555-0101"),
        other_ids=(
            OtherPatientId("SSN-1", HierarchicDesignator("", "2.16.840.1.113883.4.1", "ISO")),
            OtherPatientId("LOCAL-9", HierarchicDesignator("NOWHERE")),
        ),
    )
    store.upsert_instances(REPO, _with_patient(_headers(modality="CR", seed=13), patient))
    record = store.patient(PatientId("P-2", DEFAULT_AUTHORITY))
    assert record is not None
    assert record.address == "1 Main St^^Springfield^IL^62701"
    assert record.telephones == ("555-0100", "555-0101")
    assert record.other_ids == (PatientId("SSN-1", "2.16.840.1.113883.4.1"),)
    by_other = store.patients_by_identifier([PatientId("SSN-1", "2.16.840.1.113883.4.1")])
    assert by_other == [record]
    by_own = store.patients_by_identifier([PatientId("P-2", DEFAULT_AUTHORITY), ALICE])
    assert by_own == [record]
    assert store.patients_by_identifier([PatientId("SSN-1", "1.2.3")]) == []
    assert store.patients_by_identifier([]) == []
    store.upsert_instances(
        REPO,
        _with_patient(_headers(modality="CR", seed=13), dataclasses.replace(patient, other_ids=())),
    )
    assert store.patients_by_identifier([PatientId("SSN-1", "2.16.840.1.113883.4.1")]) == []


def test_local_issuer_mapping_and_unresolvable_patient_ids(database_url: str) -> None:
    local = DicomPatient("X^Y", "P-3", HierarchicDesignator("HOSP-A"), "19900101", "F")
    headers = _with_patient(_headers(modality="CR", seed=14), local)
    mapped = Store.open(database_url, assigning_authorities={"HOSP-A": "1.2.840.99"})
    mapped.upsert_instances(REPO, headers)
    assert mapped.patient(PatientId("P-3", "1.2.840.99")) is not None
    no_id = _with_patient(_headers(modality="CR", seed=15), DicomPatient("X^Y", "", None))
    unmapped = _with_patient(_headers(modality="CR", seed=16), DicomPatient("X^Y", "P-4"))
    delimited = _with_patient(
        _headers(modality="CR", seed=16), DicomPatient("X^Y", "P^5", HierarchicDesignator("HOSP-A"))
    )
    reasons = ("no Patient ID", "no default assigning authority", "CX delimiters")
    for bad, reason in zip((no_id, unmapped, delimited), reasons, strict=True):
        with pytest.raises(PatientIdUnresolved, match=reason):
            mapped.upsert_instances(REPO, _headers(modality="CR", seed=17) + bad)
    assert mapped.repository_counts(REPO).studies == 1  # nothing of a refused batch written
    mapped.close()


def test_repositories_are_kept_apart(store: Store) -> None:
    headers = _headers(modality="CR", seed=18)
    study_uid = headers[0].study.study_instance_uid
    store.upsert_instances(REPO, headers)
    store.upsert_instances(OTHER_REPO, headers[:1])
    assert [s.repository_unique_id for s in store.studies_for_patient(ALICE)] == [REPO, OTHER_REPO]
    only = store.studies_for_patient(ALICE, [OTHER_REPO])
    assert [(s.repository_unique_id, s.number_of_instances) for s in only] == [(OTHER_REPO, 1)]
    assert store.study(study_uid, OTHER_REPO).number_of_instances == 1  # type: ignore[union-attr]
    assert len(store.study_instances(study_uid, REPO)) == 2
    store.remove_instances(OTHER_REPO, [headers[0].sop_instance_uid])
    assert store.study(study_uid, REPO).number_of_instances == 2  # type: ignore[union-attr]
    assert [s.study_instance_uid for s in store.studies_for_dicom_patient_id("DEMO-0001")] == [
        study_uid
    ]


def test_representations_in_several_transfer_syntaxes(store: Store) -> None:
    native = _headers(modality="CR", seed=19)
    jpeg = [dataclasses.replace(h, transfer_syntax_uid=JPEG_BASELINE) for h in native]
    files = {
        (h.sop_instance_uid, h.transfer_syntax_uid): FileStamp(
            f"{h.sop_instance_uid}/{h.transfer_syntax_uid}", 1000 + i, 1
        )
        for i, h in enumerate(jpeg + native)
    }
    store.upsert_instances(REPO, jpeg + native, files)
    study = store.study(native[0].study.study_instance_uid)
    assert study is not None and study.number_of_instances == 2
    assert study.total_size == sum(s.size for s in files.values())
    sop = native[0].sop_instance_uid
    locations = store.instance_locations(sop)
    assert [loc.transfer_syntax_uid for loc in locations] == [
        native[0].transfer_syntax_uid,
        JPEG_BASELINE,
    ]
    assert locations[1].path == f"{sop}/{JPEG_BASELINE}"
    assert store.instance_location(sop, transfer_syntax_uid=JPEG_BASELINE) == locations[1]
    assert store.instance_location(sop, transfer_syntax_uid="1.2.3") == locations[0]
    assert store.instance_location("1.2.3.4.5") is None
    headers = store.study_instances(study.study_instance_uid)
    assert [h.transfer_syntax_uid for h in headers] == [native[0].transfer_syntax_uid] * 2
    fingerprint = study.fingerprint
    store.replace_study(REPO, study.study_instance_uid, native)
    assert [loc.transfer_syntax_uid for loc in store.instance_locations(sop)] == [
        native[0].transfer_syntax_uid
    ]
    assert store.study(study.study_instance_uid).fingerprint == fingerprint  # type: ignore[union-attr]


def test_concurrent_writers_and_readers(store: Store) -> None:
    batches = [_headers(DEMO_PATIENTS[i % 3], modality="CT", seed=100 + i) for i in range(12)]

    def work(index: int) -> int:
        store.upsert_instances(REPO, batches[index])
        return len(store.studies_for_dicom_patient_id(DEMO_PATIENTS[index % 3].id))

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert all(n >= 1 for n in pool.map(work, range(12)))
    counts = store.repository_counts(REPO)
    assert (counts.studies, counts.instances) == (12, 240)


def test_upsert_without_files_keeps_the_stored_file(store: Store) -> None:
    headers = _headers(modality="CR", seed=20)
    files = {
        (h.sop_instance_uid, h.transfer_syntax_uid): FileStamp(f"cr/{i}.dcm", 500, 7)
        for i, h in enumerate(headers)
    }
    store.upsert_instances(REPO, headers, files)
    renamed = [
        dataclasses.replace(h, series=dataclasses.replace(h.series, description="X"))
        for h in headers
    ]
    store.upsert_instances(REPO, renamed)
    location = store.instance_location(headers[0].sop_instance_uid)
    assert location is not None and (location.path, location.file_size) == ("cr/0.dcm", 500)
    assert store.study_instances(headers[0].study.study_instance_uid)[0].series.description == "X"
