"""Imaging Document Source header reads: Patient module attributes the patient index matches on."""

from __future__ import annotations

import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imagebridge.dicom.headers import parse_instance_header
from imagebridge.model.imaging import HierarchicDesignator, OtherPatientId


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.PatientName = "ROE^RICHARD"
    ds.PatientID = "P-2"
    return ds


def test_address_telephones_and_other_patient_ids() -> None:
    ds = _dataset()
    ds.IssuerOfPatientID = "HOSP-A"
    ds.PatientAddress = "1 Main St^^Springfield^IL^62701"
    ds.PatientTelephoneNumbers = ["555-0100", " 555-0101 "]
    with_oid = Dataset()
    with_oid.PatientID = "SSN-1"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = "2.16.840.1.113883.4.1"
    qualifiers.UniversalEntityIDType = "ISO"
    with_oid.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    local = Dataset()
    local.PatientID = "MRN-9"
    local.IssuerOfPatientID = "HOSP-B"
    empty = Dataset()
    ds.OtherPatientIDsSequence = [with_oid, local, empty]
    patient = parse_instance_header(_part10(ds)).patient
    assert patient.issuer == HierarchicDesignator("HOSP-A")
    assert patient.address == "1 Main St^^Springfield^IL^62701"
    assert patient.telephones == ("555-0100", "555-0101")
    assert patient.other_ids == (
        OtherPatientId("SSN-1", HierarchicDesignator("", "2.16.840.1.113883.4.1", "ISO")),
        OtherPatientId("MRN-9", HierarchicDesignator("HOSP-B")),
    )


def test_absent_attributes_are_empty() -> None:
    patient = parse_instance_header(_part10(_dataset())).patient
    assert (patient.address, patient.telephones, patient.other_ids) == ("", (), ())
    assert patient.issuer is None
