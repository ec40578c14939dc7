"""Import reconciliation: the values a foreign study is filed under, and the plan for one instance.

The planner (:mod:`imagebridge.dicom.reconcile`) reads these frozen values and
returns a :class:`ReconcilePlan` per instance; :func:`imagebridge.dicom.reconcile.apply_plan`
writes one into a data set.  The guide leaves the harmonisation policy to the
importing site (Carequality imaging IG 10.2); the policies offered here are
documented on :class:`ReconcileSettings` and in the planner's module docstring.

Plans carry patient data (old and new names, identifiers, birth dates): they
are never logged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import validate_uid
from imagebridge.model.imaging import HierarchicDesignator
from imagebridge.model.normalise import GivenNameRule

LO_MAX = 64
"""Longest Long String (LO) value: Patient ID, Issuer of Patient ID, Modifying System."""
SH_MAX = 16
"""Longest Short String (SH) value: Accession Number."""

AttributeValue = str | HierarchicDesignator | None
"""A planned value: text, an issuer (one sequence item) or ``None`` for an absent attribute.

``IssuerOfPatientIDQualifiersSequence`` is a designator with only the
universal id and its type; ``IssuerOfAccessionNumberSequence`` may use all parts.
"""


def _check_text(value: str, what: str, limit: int, *, required: bool = False) -> None:
    if required and not value.strip():
        raise InvalidValue(f"{what} is empty")
    if len(value) > limit or "\\" in value or any(c in value for c in "\r\n\f\x1b"):
        raise InvalidValue(f"{what} is not a single value of at most {limit} characters")


def _check_issuer(issuer: HierarchicDesignator | None, what: str) -> None:
    if issuer is None:
        return
    _check_text(issuer.local_namespace, f"{what} local namespace", LO_MAX)
    if issuer.universal_id and not issuer.universal_id_type:
        raise InvalidValue(f"{what} has a universal id without its type (ISO, UUID, ...)")


class PatientSource(Enum):
    """Where the local patient came from: chosen by the operator, or found in the local PACS."""

    OPERATOR = "operator"
    PACS_LOOKUP = "pacs-lookup"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalPatient:
    """The local patient a foreign study is filed under: MRN, issuer and demographics.

    ``name`` is a DICOM PN (``FAMILY^GIVEN^MIDDLE``), ``birth_date`` a DA
    (``YYYYMMDD``) and ``sex`` ``M``, ``F``, ``O`` or empty, as the local PACS holds them.
    """

    mrn: str
    source: PatientSource
    issuer: HierarchicDesignator | None = None
    name: str = ""
    birth_date: str = ""
    sex: str = ""

    def __post_init__(self) -> None:
        _check_text(self.mrn, "local MRN", LO_MAX, required=True)
        _check_issuer(self.issuer, "local issuer of patient id")
        if self.sex not in ("", "M", "F", "O"):
            raise InvalidValue(f"local patient sex {self.sex[:4]!r} is not M, F, O or empty")
        if self.birth_date and not (len(self.birth_date) == 8 and self.birth_date.isdigit()):
            raise InvalidValue("local patient birth date is not YYYYMMDD")
        _check_text(self.name, "local patient name", 5 * LO_MAX)


class AccessionPolicy(StrEnum):
    """What happens to the foreign Accession Number (0008,0050).

    ``keep``: unchanged (with its issuer).  ``clear``: emptied, its issuer
    removed (the default: a foreign number may equal a local order's number
    for another patient).  ``map``: replaced by a local order's accession.
    """

    KEEP = "keep"
    CLEAR = "clear"
    MAP = "map"


@dataclass(frozen=True, slots=True)
class LocalAccession:
    """A local order's Accession Number and, when known, its issuer."""

    number: str
    issuer: HierarchicDesignator | None = None

    def __post_init__(self) -> None:
        _check_text(self.number, "local accession number", SH_MAX, required=True)
        _check_issuer(self.issuer, "local issuer of accession number")


@dataclass(frozen=True, slots=True)
class AccessionMapping:
    """A foreign accession number (of one issuer; of any when ``foreign_issuer`` is None)."""

    foreign: str
    local: LocalAccession
    foreign_issuer: HierarchicDesignator | None = None

    def __post_init__(self) -> None:
        if not self.foreign.strip():
            raise InvalidValue("an accession mapping needs a foreign accession number")


class UidCollisionPolicy(StrEnum):
    """What happens when a Study, Series or SOP Instance UID is already a different local object.

    ``hold`` (default): the whole study waits for review.  ``remap``: every
    Study, Series and SOP Instance UID of the study is replaced by a UID
    derived from it (:func:`imagebridge.dicom.reconcile.remap_uid`).
    """

    HOLD = "hold"
    REMAP = "remap"


REMAP_NAMESPACE_ROOT = uuid.uuid5(uuid.NAMESPACE_URL, "urn:imagebridge:reconcile:uid-remap")
"""Root of the default remap namespaces: ``uuid5(root, modifying_system)``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileSettings:
    """The site's import policy (from configuration; read once).

    ``modifying_system`` goes into Modifying System (0400,0563).
    ``remap_namespace`` is the UUID under which remapped UIDs are derived;
    ``None`` derives one from ``modifying_system``, so two sites do not mint
    the same UID from the same foreign UID.  ``given_names`` and
    ``allow_initials`` say which given-name differences are only warnings
    (default: the first given names must agree, an initial agrees with its
    name).  ``coerce_demographics`` writes the local name, birth date and sex
    (when the local PACS has a value) over the foreign ones.
    """

    modifying_system: str
    accession: AccessionPolicy = AccessionPolicy.CLEAR
    accession_map: tuple[AccessionMapping, ...] = ()
    operator_accession: LocalAccession | None = None
    uid_collision: UidCollisionPolicy = UidCollisionPolicy.HOLD
    remap_namespace: uuid.UUID | None = None
    given_names: GivenNameRule = GivenNameRule.FIRST
    allow_initials: bool = True
    coerce_demographics: bool = True

    def __post_init__(self) -> None:
        _check_text(self.modifying_system, "modifying system", LO_MAX, required=True)
        mapped = self.accession_map or self.operator_accession is not None
        if self.accession is AccessionPolicy.MAP and not mapped:
            raise InvalidValue("accession policy 'map' needs a mapping or an operator accession")
        if self.accession is not AccessionPolicy.MAP and mapped:
            raise InvalidValue(f"accession policy {self.accession.value!r} takes no mapping")
        if self.accession_map and self.operator_accession is not None:
            raise InvalidValue("give either an accession mapping or one operator accession")
        keys = [(m.foreign, m.foreign_issuer) for m in self.accession_map]
        if len(set(keys)) != len(keys):
            raise InvalidValue("an accession mapping names the same foreign accession twice")

    @property
    def namespace(self) -> uuid.UUID:
        """The UUID namespace of remapped UIDs."""
        if self.remap_namespace is not None:
            return self.remap_namespace
        return uuid.uuid5(REMAP_NAMESPACE_ROOT, self.modifying_system)


class Level(Enum):
    """A DICOM information model level."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetObject:
    """What the local PACS (the import target) already holds under one UID.

    ``study_uid`` is set for a series and an instance, ``series_uid`` for an instance.
    """

    level: Level
    uid: str
    patient_id: str
    patient_issuer: HierarchicDesignator | None = None
    study_uid: str = ""
    series_uid: str = ""

    def __post_init__(self) -> None:
        validate_uid(self.uid, f"target {self.level.value} UID")
        if self.level is not Level.STUDY and not self.study_uid:
            raise InvalidValue(f"target {self.level.value} {self.uid} lacks its study UID")
        if self.level is Level.INSTANCE and not self.series_uid:
            raise InvalidValue(f"target instance {self.uid} lacks its series UID")


@dataclass(frozen=True, slots=True)
class TargetObjects:
    """The target's answer for the UIDs of a study to import (what it holds, at any level)."""

    objects: tuple[TargetObject, ...] = ()
    _by_uid: dict[str, TargetObject] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for item in self.objects:
            if item.uid in self._by_uid:
                raise InvalidValue(f"the target holds UID {item.uid} twice")
            self._by_uid[item.uid] = item

    def find(self, uid: str) -> TargetObject | None:
        """The object the target holds under *uid*, at whatever level."""
        return self._by_uid.get(uid)


class Severity(Enum):
    """A conflict holds the study for review; a warning is reported and the import goes on."""

    CONFLICT = "conflict"
    WARNING = "warning"


class IssueKind(StrEnum):
    """What the planner found (the policy says which are conflicts)."""

    FAMILY_NAME = "family-name"  # conflict: family names differ after normalising
    GIVEN_NAME = "given-name"  # conflict: first given names differ
    GIVEN_NAME_PARTIAL = "given-name-partial"  # warning: middle names or initials differ
    NAME_MISSING = "name-missing"  # warning: one side has no family or given name
    BIRTH_DATE = "birth-date"  # conflict
    BIRTH_DATE_MISSING = "birth-date-missing"  # warning
    SEX = "sex"  # conflict: M against F
    SEX_UNCERTAIN = "sex-uncertain"  # warning: O or unknown against a known sex
    INSUFFICIENT_DEMOGRAPHICS = "insufficient-demographics"  # conflict: no name, no birth date
    PATIENT_ID = "patient-id"  # conflict: another id of the local issuer
    ACCESSION_UNMAPPED = "accession-unmapped"  # conflict: policy map, no local order
    UID_COLLISION = "uid-collision"  # conflict (policy hold): UID is a different local object
    UID_REMAPPED = "uid-remapped"  # warning (policy remap)
    REMAP_COLLISION = "remap-collision"  # conflict: even the remapped UID is taken
    INCONSISTENT_STUDY = "inconsistent-study"  # conflict: instances disagree on the patient
    STUDY_HELD = "study-held"  # conflict: another instance of the study is held


ACCEPTABLE = frozenset(
    {
        IssueKind.FAMILY_NAME,
        IssueKind.GIVEN_NAME,
        IssueKind.BIRTH_DATE,
        IssueKind.SEX,
        IssueKind.INSUFFICIENT_DEMOGRAPHICS,
        IssueKind.PATIENT_ID,
    }
)
"""Conflicts a reviewer may accept for one study (they become warnings): demographics only."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding, with a human text naming the values compared (PHI: never logged)."""

    kind: IssueKind
    severity: Severity
    text: str
    accepted: bool = False


@dataclass(frozen=True, slots=True)
class AttributeChange:
    """One attribute of the top-level data set: its value before and the value written."""

    keyword: str
    tag: int
    old: AttributeValue
    new: AttributeValue

    @property
    def tag_text(self) -> str:
        """``(gggg,eeee)``."""
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


REASON_COERCE = "COERCE"
"""Reason for the Attribute Modification (0400,0565) for values replaced by local ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginalAttributes:
    """The Original Attributes Sequence (0400,0561) item a plan adds (PS3.3 C.12.1).

    Its Modified Attributes Sequence holds the old values of the plan's changes.
    """

    modification_datetime: str
    modifying_system: str
    source_of_previous_values: str
    reason: str = REASON_COERCE


class PlanVerdict(StrEnum):
    """What to do with one instance."""

    IMPORT = "import"
    ALREADY_STORED = "already-stored"  # the target holds it under the same patient and parents
    HOLD = "hold"  # held for review; nothing is written


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilePlan:
    """Import reconciliation of one instance: verdict, changes in tag order, findings.

    ``uid_map`` is the study's whole remap table (original -> new; empty unless
    remapped): references inside sequences are rewritten by it.
    """

    sop_instance_uid: str
    study_instance_uid: str
    verdict: PlanVerdict
    changes: tuple[AttributeChange, ...]
    issues: tuple[Issue, ...]
    original_attributes: OriginalAttributes | None
    uid_map: tuple[tuple[str, str], ...] = ()

    @property
    def conflicts(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.CONFLICT)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.WARNING)

    @property
    def needs_unicode(self) -> bool:
        """A new value is not ASCII: the object must be able to hold it (ISO_IR 192)."""
        return any(isinstance(c.new, str) and not c.new.isascii() for c in self.changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyPlan:
    """Import reconciliation of one study: the same decisions for every instance.

    ``verdict`` is HOLD when any instance is held (then all are),
    ALREADY_STORED when every instance is, IMPORT otherwise.
    """

    study_instance_uid: str
    verdict: PlanVerdict
    plans: tuple[ReconcilePlan, ...]
    uid_map: tuple[tuple[str, str], ...] = ()
