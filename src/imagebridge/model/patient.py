"""The community's patients as imagebridge knows them from its archives.

A :class:`PatientRecord` is built from the Patient module of the images
(name, id, issuer, birth date, sex, address, telephone, other ids) and is what
Cross Gateway Patient Discovery [ITI-55] matches against.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagebridge.model.ids import PatientId


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """One patient of the community (DICOM Patient module, normalised)."""

    patient_id: PatientId
    """DICOM Patient ID with the community's assigning authority OID."""
    family: str = ""
    given: tuple[str, ...] = ()
    birth_date: str = ""
    """``YYYYMMDD`` (DICOM DA), empty when unknown."""
    sex: str = ""
    """``M``, ``F``, ``O`` or empty (DICOM CS)."""
    address: str = ""
    """Free-text Patient's Address (0010,1040)."""
    telephones: tuple[str, ...] = ()
    other_ids: tuple[PatientId, ...] = ()
