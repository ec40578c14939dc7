"""Imaging models: DICOM instance headers and KOS imaging manifests (XDS-I.b, XCA-I).

No pydicom type crosses this module: the :mod:`imagebridge.dicom` package
reads and writes DICOM and hands out these frozen values.

DICOM dates, times and person names are held as the DICOM strings found in
the object (``"19630804"``, ``"101500.123"``, ``"DOE^JANE"``): a KOS copies
patient and study attributes unchanged from the images, and a partial date or
a time with fractions must survive that copy.  A missing type 2 or type 3
attribute is the empty string (or ``None`` for numbers and structures).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import validate_uid

KOS_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.59"
"""Key Object Selection Document Storage."""


class ContentKind(Enum):
    """TID 2010 value type for a referenced instance (dcm4che rule).

    IMAGE when the instance has pixel data (Photometric Interpretation),
    WAVEFORM when it has a Waveform Sequence, COMPOSITE otherwise (SR, PR, KOS, PDF).
    """

    IMAGE = "IMAGE"
    COMPOSITE = "COMPOSITE"
    WAVEFORM = "WAVEFORM"


@dataclass(frozen=True, slots=True)
class DicomCode:
    """A DICOM coded entry (Code Sequence Macro): value, scheme designator, meaning."""

    code_value: str
    coding_scheme_designator: str
    code_meaning: str
    coding_scheme_version: str = ""

    def __post_init__(self) -> None:
        if not self.code_value or not self.coding_scheme_designator:
            raise InvalidValue(f"coded entry lacks value or scheme: {self!r}")


MANIFEST_TITLE = DicomCode("113030", "DCM", "Manifest")
"""Document title of an XDS-I.b imaging manifest (CID 7010)."""


@dataclass(frozen=True, slots=True)
class HierarchicDesignator:
    """An issuer of an identifier (HL7 v2 Hierarchic Designator Macro).

    For a patient: Issuer of Patient ID (0010,0021) as ``local_namespace`` and
    the Issuer of Patient ID Qualifiers Sequence (0010,0024) Universal Entity
    ID / Type.  For an accession number: the Issuer of Accession Number
    Sequence (0008,0051) item.  At least one part is non-empty.
    """

    local_namespace: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    def __post_init__(self) -> None:
        if not self.local_namespace and not self.universal_id:
            raise InvalidValue("issuer has neither a local namespace nor a universal id")


@dataclass(frozen=True, slots=True)
class OtherPatientId:
    """One Other Patient IDs Sequence (0010,1002) item: a Patient ID and its issuer."""

    id: str
    issuer: HierarchicDesignator | None = None


@dataclass(frozen=True, slots=True)
class DicomPatient:
    """Patient module attributes of a DICOM instance (copied unchanged into a KOS).

    ``address`` is Patient's Address (0010,1040), ``telephones`` the values of
    Patient's Telephone Numbers (0010,2154), ``other_ids`` the Other Patient
    IDs Sequence (0010,1002): what the patient index matches on besides
    name, birth date and sex.
    """

    name: str = ""
    id: str = ""
    issuer: HierarchicDesignator | None = None
    birth_date: str = ""
    sex: str = ""
    address: str = ""
    telephones: tuple[str, ...] = ()
    other_ids: tuple[OtherPatientId, ...] = ()


@dataclass(frozen=True, slots=True)
class DicomStudy:
    """General Study module attributes of a DICOM instance."""

    study_instance_uid: str
    study_date: str = ""
    study_time: str = ""
    description: str = ""
    accession_number: str = ""
    accession_issuer: HierarchicDesignator | None = None
    referring_physician_name: str = ""
    study_id: str = ""
    procedure_codes: tuple[DicomCode, ...] = ()

    def __post_init__(self) -> None:
        if not self.study_instance_uid:
            raise InvalidValue("Study Instance UID is empty")


@dataclass(frozen=True, slots=True)
class DicomSeries:
    """General Series module attributes of a DICOM instance."""

    series_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    body_part_examined: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.series_instance_uid:
            raise InvalidValue("Series Instance UID is empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceHeader:
    """Imaging Document Source, the header of one DICOM instance (no pixel data).

    ``file_size`` is the Part-10 byte count when known (``None`` for a stream or
    prefix of unknown length).  UIDs are kept exactly as the object carries them
    (padding removed, syntax not corrected): they must be echoed unchanged.
    """

    patient: DicomPatient
    study: DicomStudy
    series: DicomSeries
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int | None = None
    transfer_syntax_uid: str = ""
    kind: ContentKind = ContentKind.COMPOSITE
    has_pixel_data: bool = False
    photometric_interpretation: str = ""
    number_of_frames: int = 1
    file_size: int | None = None

    def __post_init__(self) -> None:
        if not self.sop_class_uid or not self.sop_instance_uid:
            raise InvalidValue("SOP Class UID or SOP Instance UID is empty")
        if self.number_of_frames < 1:
            raise InvalidValue(f"number of frames must be >= 1, not {self.number_of_frames}")


@dataclass(frozen=True, slots=True)
class ReferencedInstance:
    """One Referenced SOP Sequence item of a KOS evidence sequence."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestSeries:
    """Imaging Document Consumer, one Referenced Series of a KOS manifest and its retrieve location.

    ``retrieve_location_uid`` is the Imaging Document Source repositoryUniqueId
    that goes into RAD-69/RAD-75 ``RepositoryUniqueId``.  A series whose
    instances name different locations (instance-level attributes, tolerated)
    appears once per location.  ``home_community_id`` is only set when the KOS
    carries the non-standard (0040,E031); the consumer uses the ``home`` of the
    KOS DocumentEntry.
    """

    study_instance_uid: str
    series_instance_uid: str
    retrieve_location_uid: str
    retrieve_ae_title: str = ""
    retrieve_url: str = ""
    home_community_id: str = ""
    instances: tuple[ReferencedInstance, ...]

    def __post_init__(self) -> None:
        validate_uid(self.retrieve_location_uid, "Retrieve Location UID")
        if not self.instances:
            raise InvalidValue(f"series {self.series_instance_uid} references no instance")


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Imaging Document Consumer, a parsed KOS imaging manifest (XDS-I.b).

    The instance list comes from the Current Requested Procedure Evidence
    Sequence (0040,A375), which carries series and retrieve locations.
    ``document_title`` is normally (113030, DCM, "Manifest"); other KOS titles
    are still usable instance lists (``None`` when the KOS has none).
    """

    sop_instance_uid: str
    document_title: DicomCode | None
    patient: DicomPatient
    study_instance_uids: tuple[str, ...]
    accession_number: str = ""
    accession_issuer: HierarchicDesignator | None = None
    series: tuple[ManifestSeries, ...]

    def __post_init__(self) -> None:
        if not self.series:
            raise InvalidValue("manifest references no series")

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series)


@dataclass(frozen=True, slots=True)
class ImagingDocumentLocator:
    """Cross Gateway Retrieve Imaging Document Set [RAD-75], one instance to request.

    Everything a DocumentRequest needs except the homeCommunityId (which comes
    from the KOS DocumentEntry): ``sop_instance_uid`` is the DocumentUniqueId.
    """

    repository_unique_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
