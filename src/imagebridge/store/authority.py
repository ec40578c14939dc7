"""Cross Gateway Patient Discovery [ITI-55], Responding Gateway: Patient ID assigning authorities.

DICOM images often carry only a local Issuer of Patient ID (0010,0021), or
none, rather than an ISO universal id.  The index turns each image's Patient
ID into a community :class:`~imagebridge.model.ids.PatientId` by this rule:

1. the Issuer of Patient ID Qualifiers Sequence (0010,0024) has a Universal
   Entity ID that is a valid OID, of type ``ISO`` or without a type: that OID;
2. else the local Issuer of Patient ID is configured in *authorities*
   (local namespace → OID): that OID;
3. else the community's default assigning authority OID, when configured;
4. else the instance cannot be indexed (:class:`PatientIdUnresolved`).

Other Patient IDs only follow rules 1 and 2: another issuer's identifier is
never given the community's default authority.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from imagebridge.errors import InvalidValue, PatientIdUnresolved
from imagebridge.model.ids import PatientId, is_oid, strip_urn_oid, validate_oid
from imagebridge.model.imaging import HierarchicDesignator, OtherPatientId


@dataclass(frozen=True, slots=True)
class AuthorityRule:
    """Imaging Document Source, how Patient IDs of the images get their assigning authority."""

    default_authority: str | None = None
    authorities: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_authority is not None:
            validate_oid(self.default_authority, "default assigning authority")
        for local, oid in self.authorities.items():
            validate_oid(oid, f"assigning authority of issuer {local!r}")

    def resolve(self, patient_id: str, issuer: HierarchicDesignator | None) -> PatientId:
        """The community identifier of a Patient ID; raises :class:`PatientIdUnresolved`."""
        if not patient_id:
            raise PatientIdUnresolved("the instance has no Patient ID")
        authority = self._issuer_authority(issuer) or self.default_authority
        if authority is None:
            raise PatientIdUnresolved(
                "the Patient ID has no ISO issuer and no default assigning authority is configured"
            )
        try:
            return PatientId(patient_id, authority)
        except InvalidValue as exc:  # the message would quote the identifier: not repeated
            raise PatientIdUnresolved(
                "the Patient ID contains CX delimiters (^ & ~ \\ |) and cannot be used"
            ) from exc

    def resolve_other(self, other: OtherPatientId) -> PatientId | None:
        """An Other Patient ID as a community identifier, None without a known authority."""
        authority = self._issuer_authority(other.issuer)
        if authority is None:
            return None
        try:
            return PatientId(other.id, authority)
        except InvalidValue:
            return None

    def _issuer_authority(self, issuer: HierarchicDesignator | None) -> str | None:
        if issuer is None:
            return None
        universal = strip_urn_oid(issuer.universal_id)
        if issuer.universal_id_type.strip().upper() in ("ISO", "") and is_oid(universal):
            return universal
        return self.authorities.get(issuer.local_namespace)
