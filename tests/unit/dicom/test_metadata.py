"""Cross Gateway Query [ITI-38], Responding Gateway: the DocumentEntry of a KOS manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydicom.sr.codedict import codes

from imagebridge.dicom.coding import (
    ACQUISITION_MODALITIES,
    BODY_PARTS,
    CODING_SCHEME_OIDS,
    body_part_key,
    coding_scheme_oid,
    event_codes,
)
from imagebridge.dicom.identifiers import hl7_escape, reference_ids, source_patient_info
from imagebridge.dicom.kos import build_kos, manifest_series_uid, manifest_uid
from imagebridge.dicom.metadata import (
    DEFAULT_SETTINGS,
    ManifestMetadataSettings,
    dicom_time,
    document_entry_for_manifest,
    entry_uuid_for,
    read_kos_header,
)
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study, study_headers
from imagebridge.errors import (
    InvalidOid,
    InvalidValue,
    KosBuildError,
    NotDicom,
    NotKeyObjectSelection,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import (
    DicomCode,
    DicomPatient,
    HierarchicDesignator,
    InstanceHeader,
)
from imagebridge.model.xds import AvailabilityStatus, Code, DocumentEntry, DocumentEntryType, Dtm
from imagebridge.wire.xds.query import parse_document_entry, render_document_entry
from tests.conformance_data import assert_valid

REPOSITORY = "1.3.6.1.4.1.21367.13.71.201.1"
HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
PATIENT = PatientId("IB-0001", "1.3.6.1.4.1.21367.13.20.1000")
WHEN = datetime(2024, 5, 1, 10, 0, 0)
DCM = "1.2.840.10008.2.16.4"
SCT = "2.16.840.1.113883.6.96"
LOINC = "2.16.840.1.113883.6.1"


def _kos(headers: Sequence[InstanceHeader], when: datetime = WHEN) -> bytes:
    study = headers[0].study.study_instance_uid
    return build_kos(
        headers,
        sop_instance_uid=manifest_uid(study, headers),
        series_instance_uid=manifest_series_uid(study, headers),
        retrieve_location_uid=REPOSITORY,
        retrieve_ae_title="IMAGEBRIDGE",
        content_datetime=when,
        manufacturer="imagebridge",
    )


def _entry(
    headers: Sequence[InstanceHeader],
    settings: ManifestMetadataSettings = DEFAULT_SETTINGS,
    *,
    kos: bytes | None = None,
    source: PatientId | None = None,
) -> DocumentEntry:
    return document_entry_for_manifest(
        headers,
        _kos(headers) if kos is None else kos,
        patient_id=PATIENT,
        repository_unique_id=REPOSITORY,
        home=HOME,
        settings=settings,
        source_patient_id=source,
    )


def _with_study(headers: Sequence[InstanceHeader], **changes: object) -> list[InstanceHeader]:
    return [dataclasses.replace(h, study=dataclasses.replace(h.study, **changes)) for h in headers]


def _with_series(headers: Sequence[InstanceHeader], **changes: object) -> list[InstanceHeader]:
    return [
        dataclasses.replace(h, series=dataclasses.replace(h.series, **changes)) for h in headers
    ]


def _with_patient(headers: Sequence[InstanceHeader], **changes: object) -> list[InstanceHeader]:
    return [
        dataclasses.replace(h, patient=dataclasses.replace(h.patient, **changes)) for h in headers
    ]


@pytest.fixture(scope="module")
def ct() -> list[InstanceHeader]:
    """One CT series of 5 instances: body part CHEST, procedure LN 24627-2, accession DEMO..."""
    return study_headers(DEMO_PATIENTS[0], modality="CT", instances=5, seed=3)


@pytest.fixture(scope="module")
def mr() -> list[InstanceHeader]:
    """Three MR series (HEAD) with an OID accession issuer."""
    headers = study_headers(DEMO_PATIENTS[1], modality="MR", instances=2, seed=4)
    return _with_study(headers, accession_issuer=HierarchicDesignator("", "1.2.3.4.5.6", "ISO"))


# --- the mapping ---------------------------------------------------------------------------


def test_every_attribute_of_a_ct_study(ct: list[InstanceHeader]) -> None:
    kos = _kos(ct)
    entry = _entry(ct, kos=kos)
    study = ct[0].study
    sop_uid = manifest_uid(study.study_instance_uid, ct)
    assert entry.unique_id == sop_uid
    assert entry.entry_uuid == entry_uuid_for(sop_uid)
    assert entry.entry_uuid.startswith("urn:uuid:")
    assert uuid.UUID(entry.entry_uuid.removeprefix("urn:uuid:")).version == 5
    assert entry.mime_type == "application/dicom"
    assert entry.object_type is DocumentEntryType.STABLE
    assert entry.status is AvailabilityStatus.APPROVED
    assert entry.home == HOME
    assert entry.patient_id == PATIENT
    assert entry.repository_unique_id == REPOSITORY
    assert entry.format_code == Code(
        "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1", "Key Object Selection Document"
    )
    assert entry.class_code == Code("18726-0", LOINC, "Radiology studies (set)")
    assert entry.type_code == Code("24627-2", LOINC, "CT Chest")
    assert entry.event_code_list == (
        Code("CT", DCM, "Computed Tomography"),
        Code("816094009", SCT, "Thorax"),
    )
    assert entry.confidentiality_code == (Code("N", "2.16.840.1.113883.5.25", "normal"),)
    assert entry.healthcare_facility_type_code == Code("22232009", SCT, "Hospital")
    assert entry.practice_setting_code == Code("394914008", SCT, "Radiology")
    assert entry.language_code == "en-US"
    assert entry.size == len(kos)
    assert entry.hash == hashlib.sha1(kos).hexdigest()
    assert entry.creation_time == Dtm("20240501100000")
    assert entry.service_start_time == Dtm(study.study_date + study.study_time)
    assert entry.title is not None and entry.title.text == "CT CHEST WITHOUT CONTRAST"
    assert entry.reference_id_list == (
        f"{study.accession_number}^^^^urn:ihe:iti:xds:2013:accession",
        f"{study.study_instance_uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
    )
    assert entry.source_patient_id == "DEMO-0001^^^&2.25.1&ISO"
    assert entry.source_patient_info == (
        "PID-3|DEMO-0001^^^&2.25.1&ISO",
        "PID-5|DEMO^ALICE",
        "PID-7|19700101",
        "PID-8|F",
    )
    assert entry.authors == ()
    assert entry.service_stop_time is None


def test_renders_schema_valid_and_reparses_equal(
    schema_dir: Path, ct: list[InstanceHeader], mr: list[InstanceHeader]
) -> None:
    settings = ManifestMetadataSettings(
        author_institution="Demo Hospital^^^^^^^^^1.2.3.4", accession_issuer="1.2.3.99"
    )
    for headers in (ct, mr):
        entry = _entry(headers, settings)
        element = render_document_entry(entry)
        assert_valid("rim", element)
        assert parse_document_entry(element) == entry


def test_output_is_deterministic_whatever_the_instance_order(mr: list[InstanceHeader]) -> None:
    kos = _kos(mr)
    shuffled = list(mr)
    random.Random(7).shuffle(shuffled)
    assert _entry(shuffled, kos=kos) == _entry(mr, kos=kos)
    assert _entry(mr, kos=kos) == _entry(mr, kos=kos)


def test_mr_study_event_codes_and_accession_issuer(mr: list[InstanceHeader]) -> None:
    entry = _entry(mr)
    assert entry.event_code_list == (
        Code("MR", DCM, "Magnetic Resonance"),
        Code("69536005", SCT, "Head"),
    )
    accession = mr[0].study.accession_number
    assert entry.reference_id_list[0] == (
        f"{accession}^^^&1.2.3.4.5.6&ISO^urn:ihe:iti:xds:2013:accession"
    )
    assert entry.type_code == Code("24590-2", LOINC, "MR Brain")


def test_every_acquisition_modality_once_and_no_other_modality(ct: list[InstanceHeader]) -> None:
    pet = _with_series(ct[:2], modality="PT", body_part_examined="WHOLE BODY")
    other = [
        dataclasses.replace(
            ct[2], series=dataclasses.replace(ct[2].series, modality=m, body_part_examined="")
        )
        for m in ("KO", "PR", "SR", "OT", "")
    ]
    codes_found = event_codes([*ct, *pet, *other])
    assert codes_found == (
        Code("CT", DCM, "Computed Tomography"),
        Code("PT", DCM, "Positron emission tomography"),
        Code("38266002", SCT, "Entire body"),
        Code("816094009", SCT, "Thorax"),
    )


@pytest.mark.parametrize(
    ("body_part", "expected"),
    [
        ("CHEST", ("816094009", "Thorax")),
        ("chest ", ("816094009", "Thorax")),
        ("Thorax", ("816094009", "Thorax")),
        ("ABDOMEN_PELVIS", ("818982008", "Abdomen and Pelvis")),
        ("BRAIN", ("12738006", "Brain")),
        ("HEADNECK", ("774007", "Head and Neck")),
        ("MYSTERY", None),
        ("", None),
    ],
)
def test_body_part_examined_maps_to_cid4_or_is_left_out(
    ct: list[InstanceHeader], body_part: str, expected: tuple[str, str] | None
) -> None:
    found = event_codes(_with_series(ct, body_part_examined=body_part))
    regions = [(c.code, c.display_name) for c in found if c.scheme == SCT]
    assert regions == ([expected] if expected else [])


def test_procedure_code_schemes(ct: list[InstanceHeader]) -> None:
    def type_code(
        *procedure: DicomCode, settings: ManifestMetadataSettings = DEFAULT_SETTINGS
    ) -> Code | None:
        return _entry(_with_study(ct, procedure_codes=procedure), settings).type_code

    assert type_code(DicomCode("RPID16", "RADLEX", "CT Chest")) == Code(
        "RPID16", "2.16.840.1.113883.6.256", "CT Chest"
    )
    assert type_code(DicomCode("P5-0800", "SRT", "CT")) == Code("P5-0800", SCT, "CT")
    assert type_code(DicomCode("X1", "1.2.3.4.5", "Local")) == Code("X1", "1.2.3.4.5", "Local")
    # A local designator without OID is skipped: the next item, else the configured default.
    local = DicomCode("CTCH", "99HOSP", "Hospital CT chest")
    assert type_code(local) == DEFAULT_SETTINGS.default_type_code
    assert type_code(local, DicomCode("24627-2", "LN", "")) == Code("24627-2", LOINC, "24627-2")
    configured = ManifestMetadataSettings(coding_schemes=(("99HOSP", "1.2.3.7"),))
    assert type_code(local, settings=configured) == Code("CTCH", "1.2.3.7", "Hospital CT chest")
    assert type_code() == DEFAULT_SETTINGS.default_type_code


def test_title_falls_back_to_the_procedure_meaning(ct: list[InstanceHeader]) -> None:
    assert _entry(_with_study(ct, description="")).title.text == "CT Chest"  # type: ignore[union-attr]
    assert _entry(_with_study(ct, description="", procedure_codes=())).title is None


def test_reference_ids_accession_issuers(ct: list[InstanceHeader]) -> None:
    study_uid = ct[0].study.study_instance_uid
    study_ref = f"{study_uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"
    local = _with_study(ct, accession_issuer=HierarchicDesignator("HOSP"))
    assert reference_ids(local)[0] == "DEMO00000003^^^^urn:ihe:iti:xds:2013:accession"
    assert reference_ids(local, namespaces={"HOSP": "1.2.3.8"})[0] == (
        "DEMO00000003^^^&1.2.3.8&ISO^urn:ihe:iti:xds:2013:accession"
    )
    assert reference_ids(ct, accession_issuer="1.2.3.9") == (
        "DEMO00000003^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:accession",
        study_ref,
    )
    assert reference_ids(_with_study(ct, accession_number="")) == (study_ref,)
    odd = _with_study(ct, accession_number="A^1&2|3")
    assert reference_ids(odd)[0] == "A\\S\\1\\T\\2\\F\\3^^^^urn:ihe:iti:xds:2013:accession"


def test_source_patient_id_rules(ct: list[InstanceHeader]) -> None:
    no_issuer = _with_patient(ct, issuer=None)
    assert _entry(no_issuer).source_patient_id == PATIENT.cx
    configured = ManifestMetadataSettings(patient_id_issuer="1.2.3.10")
    assert _entry(no_issuer, configured).source_patient_id == "DEMO-0001^^^&1.2.3.10&ISO"
    local = _with_patient(ct, issuer=HierarchicDesignator("HOSP"))
    mapped = ManifestMetadataSettings(issuers=(("HOSP", "1.2.3.11"),))
    assert _entry(local, mapped).source_patient_id == "DEMO-0001^^^&1.2.3.11&ISO"
    explicit = PatientId("MRN7", "1.2.3.12")
    entry = _entry(ct, source=explicit)
    assert entry.source_patient_id == explicit.cx
    assert entry.source_patient_info[0] == f"PID-3|{explicit.cx}"


def test_unusable_dicom_patient_id_falls_back_with_a_warning(
    ct: list[InstanceHeader], caplog: pytest.LogCaptureFixture
) -> None:
    odd = _with_patient(ct, id="A^B")
    with caplog.at_level(logging.WARNING):
        assert _entry(odd).source_patient_id == PATIENT.cx
    assert "sourcePatientId" in caplog.text


def test_source_patient_info_converts_the_person_name() -> None:
    source = PatientId("P1", "1.2.3")
    full = DicomPatient("Doe^Jane^Q^Dr^Jr=ド^ジェーン", "P1", None, "19630804", "f")
    assert source_patient_info(source, full) == (
        "PID-3|P1^^^&1.2.3&ISO",
        "PID-5|Doe^Jane^Q^Jr^Dr",
        "PID-7|19630804",
        "PID-8|F",
    )
    assert source_patient_info(source, DicomPatient()) == ("PID-3|P1^^^&1.2.3&ISO",)
    assert source_patient_info(source, DicomPatient("O|Brien", sex="X")) == (
        "PID-3|P1^^^&1.2.3&ISO",
        "PID-5|O\\F\\Brien",
    )
    assert hl7_escape("a\\b~c") == "a\\E\\b\\R\\c"


def test_author_institution_from_settings(ct: list[InstanceHeader]) -> None:
    settings = ManifestMetadataSettings(author_institution="Demo Hospital^^^^^^^^^1.2.3.4")
    (author,) = _entry(ct, settings).authors
    assert author.institutions == ("Demo Hospital^^^^^^^^^1.2.3.4",)
    assert author.person is None


# --- times ---------------------------------------------------------------------------------


def test_local_times_become_utc(ct: list[InstanceHeader]) -> None:
    headers = _with_study(ct, study_date="20240115", study_time="083000")
    chicago = ManifestMetadataSettings(local_timezone=ZoneInfo("America/Chicago"))
    entry = _entry(headers, chicago, kos=_kos(headers))
    assert entry.service_start_time == Dtm("20240115143000")  # CST = UTC-6
    assert entry.creation_time == Dtm("20240501150000")  # CDT = UTC-5, content time is local


def test_kos_timezone_offset_wins_for_creation_time(ct: list[InstanceHeader]) -> None:
    aware = WHEN.replace(tzinfo=timezone(timedelta(hours=2)))
    kos = _kos(ct, aware)
    assert read_kos_header(kos).timezone == timezone(timedelta(hours=2))
    chicago = ManifestMetadataSettings(local_timezone=ZoneInfo("America/Chicago"))
    assert _entry(ct, chicago, kos=kos).creation_time == Dtm("20240501080000")


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("20240430", "101500.123456", "20240430101500"),
        ("20240430", "1015", "202404301015"),
        ("20240430", "10", "2024043010"),
        ("20240430", "", "20240430"),
        ("2024.04.30", "10:15:00", "20240430101500"),
        ("20240430", "10150", "202404301015"),
        ("20240430", "abc", "20240430"),
        ("", "101500", None),
        ("2024043", "", None),
        ("20241340", "", None),
        ("20240430", "256000", None),
    ],
)
def test_dicom_date_and_time(date: str, time: str, expected: str | None) -> None:
    found = dicom_time(date, time, None, "test")
    assert (found.value if found else None) == expected


def test_date_without_time_is_not_shifted() -> None:
    assert dicom_time("20240430", "", ZoneInfo("Asia/Tokyo"), "test") == Dtm("20240430")
    assert dicom_time("20240430", "00", ZoneInfo("Asia/Tokyo"), "test") == Dtm("2024042915")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_malformed_study_date_is_left_out_and_logged(
    ct: list[InstanceHeader], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        entry = _entry(_with_study(ct, study_date="2024-13-01"))
    assert entry.service_start_time is None
    assert "Study Date/Time" in caplog.text


# --- errors ----------------------------------------------------------------------------------


def test_inconsistent_input_is_refused(ct: list[InstanceHeader], mr: list[InstanceHeader]) -> None:
    kos = _kos(ct)
    with pytest.raises(KosBuildError):
        _entry([], kos=kos)
    with pytest.raises(KosBuildError):
        _entry([*ct, mr[0]], kos=kos)
    with pytest.raises(KosBuildError):
        _entry(mr, kos=kos)
    with pytest.raises(InvalidOid):
        document_entry_for_manifest(
            ct, kos, patient_id=PATIENT, repository_unique_id="repo-1", home=HOME
        )


def test_bytes_that_are_not_a_kos_are_refused(ct: list[InstanceHeader], tmp_path: Path) -> None:
    image = make_study(DEMO_PATIENTS[0], tmp_path, modality="CR", seed=3).files[0].read_bytes()
    with pytest.raises(NotKeyObjectSelection):
        _entry(ct, kos=image)
    with pytest.raises(NotDicom):
        _entry(ct, kos=b"not dicom at all" * 20)
    with pytest.raises(NotDicom):
        _entry(ct, kos=_kos(ct)[:140])


def test_settings_are_validated() -> None:
    with pytest.raises(InvalidOid):
        ManifestMetadataSettings(accession_issuer="not-an-oid")
    with pytest.raises(InvalidOid):
        ManifestMetadataSettings(issuers=(("HOSP", "x.y"),))
    with pytest.raises(InvalidValue):
        ManifestMetadataSettings(confidentiality_codes=())
    with pytest.raises(InvalidValue):
        ManifestMetadataSettings(language_code="en US")


# --- the code tables against pydicom's copy of PS3.16 ------------------------------------------


def test_modality_table_is_cid29() -> None:
    cid29 = {
        getattr(codes.CID29, k).value: getattr(codes.CID29, k).meaning for k in codes.CID29.dir()
    }
    assert cid29 == ACQUISITION_MODALITIES


def test_body_part_codes_are_cid4_codes_with_their_meanings() -> None:
    cid4 = {getattr(codes.CID4, k).value: getattr(codes.CID4, k).meaning for k in codes.CID4.dir()}
    for term, (code, meaning) in BODY_PARTS.items():
        assert cid4.get(code) == meaning, term
        assert body_part_key(term.lower()) == term


def test_coding_scheme_designators() -> None:
    assert coding_scheme_oid("LN") == LOINC
    assert coding_scheme_oid(" sct ") == SCT
    assert coding_scheme_oid("DCM") == DCM
    assert coding_scheme_oid("99LOCAL") is None
    assert coding_scheme_oid("99LOCAL", {"99LOCAL": "1.2.3"}) == "1.2.3"
    assert coding_scheme_oid("2.16.840.1.113883.6.1") == LOINC
    assert set(CODING_SCHEME_OIDS) >= {"LN", "SCT", "SRT", "DCM", "RADLEX"}
