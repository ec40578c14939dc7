"""Query/Retrieve identifiers, Study Root (PS3.4 C.6.2): the C-FIND and C-GET keys we send.

The DIMSE source asks a PACS two questions: which studies a patient has (STUDY
level, with Number of Study Related Instances) and which instances a study
has (IMAGE level, with every attribute an
:class:`~imagebridge.model.imaging.InstanceHeader` needs).  This module
builds those identifiers and reads the matches back into models, so the
source never digs into a pydicom Dataset.

Matching keys are single values: :func:`is_single_value` refuses the
wildcards ``*`` and ``?`` and the value separator ``\\`` (a Patient ID of
``*`` must not list the whole archive); sources also keep only matches whose
keys equal what was asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imagebridge.dicom.headers import instance_header_from_dataset, integer, text, uid
from imagebridge.model.imaging import ContentKind, InstanceHeader

INSTANCE_HEADER_KEYWORDS: Final = (
    # Patient
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientSex",
    # General Study
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "StudyID",
    "ProcedureCodeSequence",
    # General Series
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "BodyPartExamined",
    "SeriesDescription",
    # SOP Common, General Image, Image Pixel, Multi-frame
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "AvailableTransferSyntaxUID",
)
"""Return keys of an IMAGE-level query: everything :class:`InstanceHeader` holds."""

_WAVEFORM_SOP_CLASS_PREFIX: Final = "1.2.840.10008.5.1.4.1.1.9."
"""Waveform Storage SOP Classes (PS3.4 B.5): 12-lead ECG, audio, hemodynamic..."""


@dataclass(frozen=True, slots=True)
class StudySummary:
    """A STUDY-level match: the study, its instance count (None if not returned), its patient."""

    study_instance_uid: str
    number_of_instances: int | None
    patient_id: str


def is_single_value(value: str) -> bool:
    """True when *value* is a non-empty key that matches only itself (no wildcard, no list)."""
    return bool(value.strip()) and not any(c in value for c in "*?\\")


def study_identifier(patient_id: str = "") -> Dataset:
    """C-FIND STUDY level: the studies of *patient_id* (all studies when empty)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def instance_identifier(
    study_instance_uid: str,
    series_instance_uid: str = "",
    sop_instance_uid: str = "",
    *,
    keywords: tuple[str, ...] = INSTANCE_HEADER_KEYWORDS,
) -> Dataset:
    """C-FIND (or C-GET / C-MOVE) IMAGE level for one study, series or instance.

    *keywords* are the return keys (empty values; sequences as zero items,
    which asks for the whole sequence).  For a C-GET or C-MOVE pass
    ``keywords=()``: only the unique keys are sent.
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    for keyword in keywords:
        setattr(ds, keyword, Sequence() if keyword.endswith("Sequence") else "")
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


@dataclass(frozen=True, slots=True)
class InstanceMatch:
    """An IMAGE-level match read for a retrieve: the instance, its SOP Class, its stored syntax."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str = ""


RETRIEVE_LOOKUP_KEYWORDS: Final = ("SOPClassUID", "AvailableTransferSyntaxUID")
"""Return keys of the C-FIND that precedes a C-GET (the SOP Class to negotiate)."""


def instance_match_from_identifier(identifier: Dataset) -> InstanceMatch:
    """Read an IMAGE-level match made with :data:`RETRIEVE_LOOKUP_KEYWORDS`."""
    return InstanceMatch(
        sop_instance_uid=uid(identifier, "SOPInstanceUID"),
        sop_class_uid=uid(identifier, "SOPClassUID"),
        transfer_syntax_uid=text(identifier, "AvailableTransferSyntaxUID").split("\\")[0].strip(),
    )


def study_summary_from_identifier(identifier: Dataset) -> StudySummary:
    """Read a STUDY-level C-FIND match."""
    return StudySummary(
        study_instance_uid=uid(identifier, "StudyInstanceUID"),
        number_of_instances=integer(identifier, "NumberOfStudyRelatedInstances"),
        patient_id=text(identifier, "PatientID"),
    )


def instance_header_from_identifier(identifier: Dataset) -> InstanceHeader:
    """Read an IMAGE-level C-FIND match into an :class:`InstanceHeader`.

    A match says nothing of the stored bytes, so: ``has_pixel_data`` is
    inferred from Photometric Interpretation; the transfer syntax is the first
    Available Transfer Syntax UID when the PACS returns one, else ``""``
    (unknown); ``file_size`` is None.  Raises
    :class:`~imagebridge.errors.DicomMissingUid` when a UID key is empty.
    """
    photometric = text(identifier, "PhotometricInterpretation")
    header = instance_header_from_dataset(identifier, has_pixel_data=bool(photometric))
    available = text(identifier, "AvailableTransferSyntaxUID").split("\\")[0].strip()
    kind = header.kind
    if kind is ContentKind.COMPOSITE and header.sop_class_uid.startswith(
        _WAVEFORM_SOP_CLASS_PREFIX
    ):
        kind = ContentKind.WAVEFORM
    return replace(header, transfer_syntax_uid=available, kind=kind)
