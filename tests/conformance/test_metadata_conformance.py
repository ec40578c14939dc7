"""KOS manifest DocumentEntry (Cross Gateway Query [ITI-38]) against NIST's reference metadata.

NIST's Imaging Document Source tests compare the XDS metadata a system
submits for its KOS with a reference file (``process="sameKOSMetadata"``).
Here our DocumentEntry, built from NIST's own KOS and images, is compared on
the fields those tests check:

* ``ids_4802`` (multi-image MR study ``IDS-DEPT002-a``, whose 36 images are in
  ``nist-images/std/IDS-DEPT002-a/images``): patientId, mimeType, formatCode
  (code and scheme), uniqueId = KOS SOP Instance UID (NIST compares with the
  submitted KOS, not with the placeholder ``1.42...`` in the file), objectType
  Stable, and the sourcePatientId/Info of the reference (PID-3, PID-5 up to
  trailing ``^``, PID-7, PID-8; our Patient ID issuer is configured as NIST's).
  The reference's eventCodeList (CT, R-FAB55) is a template left from a CT
  test and contradicts the MR BRAIN images, so event codes are checked
  against the images instead.
* ``ids_2018-4801a/b/c`` (``ValidateMetadata/metadata-evaluate.xml``, the
  2018 requirements of ``ids_2018-4800``): the images are not in the
  conformance folder, so the instance headers are rebuilt from the KOS
  (patient and study modules, evidence sequence) with each series' modality
  taken from its SOP Class.  Checked: patientId, mimeType, formatCode,
  uniqueId, objectType, referenceIdList accession (NIST's configured issuer
  ``1.3.6.1.4.1.21367.13.202.2000``), serviceStartTime (to the minute, as
  NIST compares) and the eventCodeList modalities.  Known, deliberate
  differences: NIST's modality codes carry codingScheme
  ``1.2.840.10008.2.6.1`` (the spec digest says not to copy it; ours is
  ``1.2.840.10008.2.16.4``), and 4801c lists ``OT`` for its Secondary Capture
  series, which is not a CID 29 acquisition modality, so we leave it out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from imagebridge.dicom.coding import ACQUISITION_MODALITIES
from imagebridge.dicom.headers import (
    patient_from_dataset,
    read_instance_header,
    study_from_dataset,
)
from imagebridge.dicom.metadata import ManifestMetadataSettings, document_entry_for_manifest
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import DicomSeries, InstanceHeader
from imagebridge.model.xds import DocumentEntry, DocumentEntryType
from imagebridge.wire import ns
from imagebridge.wire.xds.query import parse_document_entry, render_document_entry
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import assert_valid

pytestmark = pytest.mark.conformance

REPOSITORY = "1.3.6.1.4.1.21367.13.80.110"  # NIST's Imaging Document Source repositoryUniqueId
HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
AFFINITY_DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"
SETTINGS = ManifestMetadataSettings(
    patient_id_issuer="1.3.6.1.4.1.21367.1800.13.20.1000",  # NIST's departmental issuer
    accession_issuer="1.3.6.1.4.1.21367.13.202.2000",  # ids_2018-4800 configuration table
)
DCM = "1.2.840.10008.2.16.4"
# The modality a series of each SOP Class found in NIST's 2018 KOS objects carries.
MODALITY_OF_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.7": "OT",  # Secondary Capture Image Storage
}


def _reference(path: Path) -> DocumentEntry:
    root = parse_xml(path.read_bytes())
    return parse_document_entry(next(root.iter(ns.q(ns.RIM, "ExtrinsicObject"))))


def _common_checks(ours: DocumentEntry, reference: DocumentEntry, kos: Path) -> None:
    assert ours.patient_id == reference.patient_id
    assert ours.mime_type == reference.mime_type == "application/dicom"
    assert reference.format_code is not None and ours.format_code is not None
    assert (ours.format_code.code, ours.format_code.scheme) == (
        reference.format_code.code,
        reference.format_code.scheme,
    )
    assert ours.unique_id == str(dcmread(kos, stop_before_pixels=True).SOPInstanceUID)
    assert ours.object_type is reference.object_type is DocumentEntryType.STABLE
    assert_valid("rim", render_document_entry(ours))


def test_ids_4802_multi_image_study(conformance_dir: Path) -> None:
    std = conformance_dir / "nist-images" / "std" / "IDS-DEPT002-a"
    headers = [read_instance_header(p) for p in sorted((std / "images").glob("*.dcm"))]
    assert len(headers) == 36
    kos_path = std / "kos" / "kos.dcm"
    reference = _reference(
        conformance_dir / "nist-testkit" / "ids_4802" / "ValidateMetadata" / "metadata.xml"
    )
    ours = document_entry_for_manifest(
        headers,
        kos_path.read_bytes(),
        patient_id=PatientId("IDS-AD002-a", AFFINITY_DOMAIN),
        repository_unique_id=REPOSITORY,
        home=HOME,
        settings=SETTINGS,
    )
    _common_checks(ours, reference, kos_path)
    assert ours.source_patient_id == reference.source_patient_id
    theirs = {v.split("|", 1)[0]: v.rstrip("^") for v in reference.source_patient_info}
    for value in ours.source_patient_info:
        assert theirs[value.split("|", 1)[0]] == value
    assert [(c.code, c.scheme) for c in ours.event_code_list] == [
        ("MR", DCM),
        ("12738006", "2.16.840.1.113883.6.96"),  # Body Part Examined BRAIN
    ]
    accession = f"IDC002-a^^^&{SETTINGS.accession_issuer}&ISO^urn:ihe:iti:xds:2013:accession"
    assert accession in ours.reference_id_list
    assert ours.service_start_time is not None
    assert ours.service_start_time.value == "20150202154122"


def _headers_from_kos(kos: Path) -> list[InstanceHeader]:
    """The study's instance headers as the KOS describes them (NIST ships no 2018 images)."""
    ds = dcmread(kos, stop_before_pixels=True)
    patient, study = patient_from_dataset(ds), study_from_dataset(ds)
    headers: list[InstanceHeader] = []
    for study_item in ds.CurrentRequestedProcedureEvidenceSequence:
        for series_item in study_item.ReferencedSeriesSequence:
            for sop in series_item.ReferencedSOPSequence:
                series = DicomSeries(
                    series_item.SeriesInstanceUID,
                    modality=MODALITY_OF_SOP_CLASS[sop.ReferencedSOPClassUID],
                )
                headers.append(
                    InstanceHeader(
                        patient=patient,
                        study=study,
                        series=series,
                        sop_class_uid=sop.ReferencedSOPClassUID,
                        sop_instance_uid=sop.ReferencedSOPInstanceUID,
                    )
                )
    return headers


@pytest.mark.parametrize("test", ["ids_2018-4801a", "ids_2018-4801b", "ids_2018-4801c"])
def test_ids_2018_4801(conformance_dir: Path, test: str) -> None:
    folder = conformance_dir / "nist-testkit" / test
    kos_path = folder / "ValidateKOS" / "kos-evaluate.dcm"
    reference = _reference(folder / "ValidateMetadata" / "metadata-evaluate.xml")
    # The patient id the test plan searches the submission under (SimReference pid).
    assert reference.patient_id == PatientId(f"IDS_2018-{test[-5:]}", AFFINITY_DOMAIN)
    ours = document_entry_for_manifest(
        _headers_from_kos(kos_path),
        kos_path.read_bytes(),
        patient_id=reference.patient_id,
        repository_unique_id=REPOSITORY,
        home=HOME,
        settings=SETTINGS,
    )
    _common_checks(ours, reference, kos_path)
    accessions = [r for r in ours.reference_id_list if r.endswith(":accession")]
    assert accessions == [r for r in reference.reference_id_list if r.endswith(":accession")]
    assert ours.service_start_time is not None and reference.service_start_time is not None
    assert ours.service_start_time.value[:12] == reference.service_start_time.value[:12]
    ours_modalities = [c.code for c in ours.event_code_list if c.scheme == DCM]
    theirs = [c.code for c in reference.event_code_list if c.code in ACQUISITION_MODALITIES]
    assert ours_modalities == theirs
    if test.endswith("c"):
        assert "OT" in {c.code for c in reference.event_code_list}
        assert "OT" not in {c.code for c in ours.event_code_list}
