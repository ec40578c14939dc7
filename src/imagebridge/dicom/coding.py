"""Imaging Document Source, DICOM code vocabulary for the XDS metadata of a KOS manifest.

Three small tables, and the codes :mod:`imagebridge.dicom.metadata` derives from them:

* DICOM Coding Scheme Designators and the HL7/ISO OIDs XDS ``codingScheme``
  wants (``kos-manifest.md`` section 2, typeCode row);
* DICOM CID 29 "Acquisition Modality": the modality codes that go into
  ``eventCodeList`` (coding scheme DCM, ``1.2.840.10008.2.16.4``), with their
  Code Meanings (pydicom 3.0.2's copy of PS3.16, checked by a unit test);
* Body Part Examined (0018,0015) defined terms mapped to DICOM CID 4
  "Anatomic Region" SNOMED CT codes, after PS3.16 Annex L ("Correspondence of
  Anatomic Region Codes and Body Part Examined Defined Terms").  Only terms
  whose code is in CID 4 are listed; anything else is not mapped (the
  metadata never carries a code that the images do not justify).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

from imagebridge.model.ids import is_oid
from imagebridge.model.imaging import DicomCode, InstanceHeader
from imagebridge.model.xds import Code

logger = logging.getLogger(__name__)

DCM_SCHEME_OID: Final = "1.2.840.10008.2.16.4"
"""DICOM Controlled Terminology (designator ``DCM``)."""
SNOMED_CT_OID: Final = "2.16.840.1.113883.6.96"
LOINC_OID: Final = "2.16.840.1.113883.6.1"

CODING_SCHEME_OIDS: Final[dict[str, str]] = {
    "LN": LOINC_OID,
    "SCT": SNOMED_CT_OID,
    "SRT": SNOMED_CT_OID,  # SNOMED-RT, retired designator still found in old images
    "SNM3": SNOMED_CT_OID,
    "DCM": DCM_SCHEME_OID,
    "RADLEX": "2.16.840.1.113883.6.256",  # UNCONFIRMED in the spec digest
    "C4": "2.16.840.1.113883.6.12",  # CPT-4
    "UMLS": "2.16.840.1.113883.6.86",
    "I10P": "2.16.840.1.113883.6.4",  # ICD-10-PCS
}
"""DICOM Coding Scheme Designator (PS3.16 Table 8-1) -> XDS codingScheme OID."""

ACQUISITION_MODALITIES: Final[dict[str, str]] = {
    "AR": "Autorefraction",
    "BDUS": "Ultrasound Bone Densitometry",
    "BI": "Biomagnetic Imaging",
    "BMD": "Bone Mineral Densitometry",
    "CFM": "Confocal Microscopy",
    "CR": "Computed Radiography",
    "CT": "Computed Tomography",
    "DG": "Diaphanography",
    "DMS": "Dermoscopy",
    "DX": "Digital Radiography",
    "ECG": "Electrocardiography",
    "EEG": "Electroencephalography",
    "EMG": "Electromyography",
    "EOG": "Electrooculography",
    "EPS": "Cardiac Electrophysiology",
    "ES": "Endoscopy",
    "GM": "General Microscopy",
    "HD": "Hemodynamic Waveform",
    "IO": "Intra-oral Radiography",
    "IVOCT": "Intravascular Optical Coherence Tomography",
    "IVUS": "Intravascular Ultrasound",
    "KER": "Keratometry",
    "LEN": "Lensometry",
    "LS": "Laser Scan",
    "MG": "Mammography",
    "MR": "Magnetic Resonance",
    "NM": "Nuclear Medicine",
    "OAM": "Ophthalmic Axial Measurements",
    "OCT": "Optical Coherence Tomography",
    "OP": "Ophthalmic Photography",
    "OPM": "Ophthalmic Mapping",
    "OPT": "Ophthalmic Tomography",
    "OPTBSV": "Ophthalmic Tomography B-scan Volume Analysis",
    "OPTENF": "Ophthalmic Tomography En Face",
    "OPV": "Ophthalmic Visual Field",
    "OSS": "Optical Surface Scanner",
    "PA": "Photoacoustic",
    "POS": "Position Sensor",
    "PT": "Positron emission tomography",
    "PX": "Panoramic X-Ray",
    "RESP": "Respiratory Waveform",
    "RF": "Radiofluoroscopy",
    "RG": "Radiographic imaging",
    "RTIMAGE": "RT Image",
    "SM": "Slide Microscopy",
    "SRF": "Subjective Refraction",
    "TG": "Thermography",
    "US": "Ultrasound",
    "VA": "Visual Acuity",
    "XA": "X-Ray Angiography",
    "XC": "External-camera Photography",
}
"""DICOM CID 29 Acquisition Modality: code value -> Code Meaning (scheme DCM).

Not in CID 29, hence never an event code: KO, PR, SR, SEG, REG, DOC, OT and
the other non-acquisition values of CID 33.  (NIST's ids_2018-4801c sample
lists OT; its own requirements say to follow RAD-68, whose value set is CID 29.)
"""

BODY_PARTS: Final[dict[str, tuple[str, str]]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ADRENAL": ("23451007", "Adrenal gland"),
    "ANKLE": ("70258002", "Ankle joint"),
    "AORTA": ("15825003", "Aorta"),
    "BLADDER": ("89837001", "Bladder"),
    "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"),
    "CALCANEUS": ("80144004", "Calcaneus"),
    "CAROTID": ("69105007", "Carotid Artery"),
    "CHEST": ("816094009", "Thorax"),
    "CHESTABDOMEN": ("416550000", "Chest and Abdomen"),
    "CHESTABDPELVIS": ("416775004", "Chest, Abdomen and Pelvis"),
    "CLAVICLE": ("51299004", "Clavicle"),
    "COCCYX": ("64688005", "Coccyx"),
    "COLON": ("71854001", "Colon"),
    "CORONARYARTERY": ("41801008", "Coronary artery"),
    "CSPINE": ("122494005", "Cervical spine"),
    "CTSPINE": ("1217257000", "Cervico-thoracic spine"),
    "EAR": ("117590005", "Ear"),
    "ELBOW": ("16953009", "Elbow joint"),
    "EXTREMITY": ("66019005", "Extremity"),
    "EYE": ("81745001", "Eye"),
    "FACE": ("89545001", "Face"),
    "FEMUR": ("71341001", "Femur"),
    "FINGER": ("7569003", "Finger"),
    "FOOT": ("56459004", "Foot"),
    "FOREARM": ("14975008", "Forearm"),
    "GALLBLADDER": ("28231008", "Gallbladder"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEADNECK": ("774007", "Head and Neck"),
    "HIP": ("29836001", "Hip"),
    "HUMERUS": ("85050009", "Humerus"),
    "IAC": ("361078006", "Internal Auditory Canal"),
    "JAW": ("661005", "Jaw region"),
    "KNEE": ("72696002", "Knee"),
    "LARYNX": ("4596009", "Larynx"),
    "LEG": ("30021000", "Lower leg"),
    "LIVER": ("10200004", "Liver"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "LSSPINE": ("1217253001", "Lumbo-sacral spine"),
    "LUNG": ("39607008", "Lung"),
    "MEDIASTINUM": ("72410000", "Mediastinum"),
    "NECK": ("45048000", "Neck"),
    "NECKCHEST": ("417437006", "Neck and Chest"),
    "NECKCHESTABDOMEN": ("416152001", "Neck, Chest and Abdomen"),
    "NECKCHESTABDPELV": ("416319003", "Neck, Chest, Abdomen and Pelvis"),
    "NOSE": ("45206002", "Nose"),
    "ORBIT": ("363654007", "Orbital structure"),
    "OVARY": ("15497006", "Ovary"),
    "PANCREAS": ("15776009", "Pancreas"),
    "PATELLA": ("64234005", "Patella"),
    "PELVIS": ("816092008", "Pelvis"),
    "PROSTATE": ("41216001", "Prostate"),
    "RIB": ("113197003", "Rib"),
    "SCAPULA": ("79601000", "Scapula"),
    "SELLA": ("42575006", "Sella turcica"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKULL": ("89546000", "Skull"),
    "SPINE": ("421060004", "Spine"),
    "SPLEEN": ("78961009", "Spleen"),
    "SSPINE": ("54735007", "Sacrum"),
    "STERNUM": ("56873002", "Sternum"),
    "STOMACH": ("69695003", "Stomach"),
    "THIGH": ("68367000", "Thigh"),
    "THUMB": ("76505004", "Thumb"),
    "THYROID": ("69748006", "Thyroid"),
    "TLSPINE": ("1217256009", "Thoraco-lumbar spine"),
    "TMJ": ("53620006", "Temporomandibular joint"),
    "TOE": ("29707007", "Toe"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "UTERUS": ("35039007", "Uterus"),
    "WHOLEBODY": ("38266002", "Entire body"),
    "WRIST": ("74670003", "Wrist joint"),
    "ZYGOMA": ("13881006", "Zygoma"),
}
"""Body Part Examined defined term -> (SNOMED CT code, CID 4 Code Meaning)."""

BODY_PART_SYNONYMS: Final[dict[str, str]] = {
    "THORAX": "CHEST",
    "ABDOMENANDPELVIS": "ABDOMENPELVIS",
    "HEADANDNECK": "HEADNECK",
    "ENTIREBODY": "WHOLEBODY",
    "CERVICALSPINE": "CSPINE",
    "THORACICSPINE": "TSPINE",
    "LUMBARSPINE": "LSPINE",
}
"""Spellings seen in the field for a defined term (after spaces and punctuation are removed)."""


def body_part_key(value: str) -> str:
    """The Body Part Examined term in table form: upper case, letters and digits only."""
    key = "".join(c for c in value.upper() if c.isascii() and c.isalnum())
    return BODY_PART_SYNONYMS.get(key, key)


def coding_scheme_oid(designator: str, local: Mapping[str, str] | None = None) -> str | None:
    """The XDS codingScheme OID of a DICOM Coding Scheme Designator (None when unknown).

    *local* (configured designators) is consulted first; a designator that is
    itself an OID is taken as is.
    """
    name = designator.strip()
    if local and name in local:
        return local[name]
    if name.upper() in CODING_SCHEME_OIDS:
        return CODING_SCHEME_OIDS[name.upper()]
    return name if is_oid(name) else None


def procedure_type_code(
    codes: Iterable[DicomCode], local: Mapping[str, str] | None = None
) -> tuple[Code | None, str]:
    """typeCode from a Procedure Code Sequence: the first item whose scheme has an OID.

    Also returns the first Code Meaning seen ('' when none), for a title.
    """
    meaning = ""
    for code in codes:
        meaning = meaning or code.code_meaning
        scheme = coding_scheme_oid(code.coding_scheme_designator, local)
        if scheme is None:
            logger.warning(
                "procedure code %s: coding scheme %r has no OID; not used as typeCode",
                code.code_value,
                code.coding_scheme_designator,
            )
            continue
        return Code(code.code_value, scheme, code.code_meaning or code.code_value), meaning
    return None, meaning


def event_codes(instances: Iterable[InstanceHeader]) -> tuple[Code, ...]:
    """eventCodeList: CID 29 modalities (DCM), then CID 4 regions from Body Part Examined.

    Both sorted and without repeats; other modalities (KO, PR, SR, OT ...) and
    unmapped body parts are left out (logged at debug level).
    """
    modalities: set[str] = set()
    regions: set[str] = set()
    for header in instances:
        modality = header.series.modality.strip().upper()
        if modality in ACQUISITION_MODALITIES:
            modalities.add(modality)
        elif modality:
            logger.debug("modality %r is not a CID 29 acquisition modality", modality)
        body_part = body_part_key(header.series.body_part_examined)
        if body_part in BODY_PARTS:
            regions.add(body_part)
        elif body_part:
            logger.debug("Body Part Examined %r has no CID 4 code here", body_part)
    found = [Code(m, DCM_SCHEME_OID, ACQUISITION_MODALITIES[m]) for m in sorted(modalities)]
    anatomy = sorted({BODY_PARTS[r] for r in regions})
    found += [Code(code, SNOMED_CT_OID, meaning) for code, meaning in anatomy]
    return tuple(found)
