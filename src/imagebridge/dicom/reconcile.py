"""Import reconciliation planner: a foreign study filed under a local patient (IG 10.2).

Pure: headers (:class:`~imagebridge.model.imaging.InstanceHeader`), the local
patient, the site's :class:`~imagebridge.model.reconcile.ReconcileSettings`
and what the target PACS already holds go in; a plan per instance comes out.
:func:`~imagebridge.dicom.reconcile_apply.apply_plan` writes a plan into a
data set; :func:`describe` is the dry run.  The policy, which errs towards
holding a study rather than filing it under the wrong patient:

Patient.  Patient ID becomes the local MRN; Issuer of Patient ID and the
Issuer of Patient ID Qualifiers Sequence become the local issuer's parts (a
part the local issuer lacks is removed, never left foreign).  With
``coerce_demographics`` the local name, birth date and sex replace the
foreign ones wherever the local PACS has a value.

Demographics (normalised as the XCPD matcher does, :mod:`imagebridge.model.normalise`).
Conflicts: family names differ; first given names differ (``given_names``
rule); birth dates differ; sex M against F; neither a family name nor a
birth date on both sides to compare; the object carries another identifier
from the local issuer (Patient ID or Other Patient IDs).  Warnings: middle
names or initials differ; a name, birth date or sex is missing on one side;
sex O or unknown against a known sex.  A reviewer may accept the demographic
conflicts of one study (``accept``); nothing else can be accepted.

UIDs.  A Study, Series or SOP Instance UID the target holds at another level,
for another patient or under another parent collides.  Policy ``hold``: the
study is held.  Policy ``remap``: every UID of the study is replaced by
:func:`remap_uid` (so the study stays whole and a re-run gives the same UIDs);
the remapped UIDs are checked again and a collision there holds the study,
as does a study partly stored under its original UIDs (remapping would
duplicate it).  An instance the target holds under the same patient and the
same parents is ALREADY_STORED.

Accession Number: ``keep``, ``clear`` (the default) or ``map`` (a mapping from
the foreign number, or one operator-given local accession); an unmapped
number is a conflict.

A study is decided as a whole: any conflict holds every instance.  Every
change is recorded in an Original Attributes Sequence item (reason COERCE).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from imagebridge.dicom.reconcile_checks import (
    check_uids,
    demographics,
    hierarchy,
    patient_id_issues,
    same_authority,
)
from imagebridge.errors import InvalidValue, ReconcileError
from imagebridge.model.imaging import DicomPatient, DicomStudy, HierarchicDesignator, InstanceHeader
from imagebridge.model.reconcile import (
    ACCEPTABLE,
    LO_MAX,
    AccessionPolicy,
    AttributeChange,
    AttributeValue,
    Issue,
    IssueKind,
    LocalAccession,
    LocalPatient,
    OriginalAttributes,
    PlanVerdict,
    ReconcilePlan,
    ReconcileSettings,
    Severity,
    StudyPlan,
    TargetObjects,
    UidCollisionPolicy,
)

TAGS = {
    "SOPInstanceUID": 0x00080018,
    "AccessionNumber": 0x00080050,
    "IssuerOfAccessionNumberSequence": 0x00080051,
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "IssuerOfPatientID": 0x00100021,
    "IssuerOfPatientIDQualifiersSequence": 0x00100024,
    "PatientBirthDate": 0x00100030,
    "PatientSex": 0x00100040,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}
"""The top-level attributes a plan may change (and their tags)."""


def remap_uid(uid: str, namespace: uuid.UUID) -> str:
    """``2.25.<UUID v5 of uid in namespace>`` (PS3.5 B.2): the same input, the same UID."""
    return f"2.25.{uuid.uuid5(namespace, uid).int}"


def plan_instance(
    header: InstanceHeader,
    local: LocalPatient,
    settings: ReconcileSettings,
    target: TargetObjects,
    *,
    now: datetime,
    source: str = "",
    accept: frozenset[IssueKind] = frozenset(),
) -> ReconcilePlan:
    """The plan of one instance planned alone (use :func:`plan_study` for a whole study)."""
    return plan_study(
        [header], local, settings, target, now=now, source=source, accept=accept
    ).plans[0]


def plan_study(
    headers: Sequence[InstanceHeader],
    local: LocalPatient,
    settings: ReconcileSettings,
    target: TargetObjects,
    *,
    now: datetime,
    source: str = "",
    accept: frozenset[IssueKind] = frozenset(),
) -> StudyPlan:
    """Plan the import of the instances of one study under *local*.

    *now* (timezone-aware) is the Attribute Modification DateTime; *source*
    the Source of Previous Values (the sending community; the foreign issuer
    when empty); *accept* the demographic conflicts a reviewer accepted for
    this study.  Raises :class:`ReconcileError` for no headers, several
    studies or a repeated SOP Instance UID, :class:`InvalidValue` for bad arguments.
    """
    if not headers:
        raise ReconcileError("no instance to plan")
    study_uid = headers[0].study.study_instance_uid
    if any(h.study.study_instance_uid != study_uid for h in headers):
        raise ReconcileError("instances of several studies given to one study plan")
    sop_uids = [h.sop_instance_uid for h in headers]
    if len(set(sop_uids)) != len(sop_uids):
        raise ReconcileError("a SOP Instance UID occurs twice in one study plan")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidValue("the modification time must be timezone-aware")
    if len(source) > LO_MAX:
        raise InvalidValue(f"source of previous values is longer than {LO_MAX} characters")
    if not accept <= ACCEPTABLE:
        raise InvalidValue(f"only demographic conflicts can be accepted, not {set(accept)}")

    uid_map, uid_issues, stored = _uids(headers, local, settings, target)
    consistent = len({_identity(h.patient) for h in headers}) == 1
    drafts: list[_Draft] = []
    for header in headers:
        issues = demographics(header.patient, local, settings)
        issues += patient_id_issues(header.patient, local)
        if not consistent:
            text = "the instances of the study name different patients"
            issues.append(Issue(IssueKind.INCONSISTENT_STUDY, Severity.CONFLICT, text))
        accession_changes, accession_issues = _accession(header.study, settings)
        issues += accession_issues + uid_issues.get(header.sop_instance_uid, [])
        issues = [_accepted(i) if i.kind in accept else i for i in issues]
        changes = _patient_changes(header.patient, local, settings) + accession_changes
        changes += _uid_changes(header, uid_map)
        changes.sort(key=lambda c: c.tag)
        drafts.append(_Draft(header, tuple(changes), issues))

    held = any(i.severity is Severity.CONFLICT for d in drafts for i in d.issues)
    remap_table = tuple(uid_map.items())
    original = OriginalAttributes(
        modification_datetime=now.strftime("%Y%m%d%H%M%S.%f%z"),
        modifying_system=settings.modifying_system,
        source_of_previous_values=source or _issuer_text(headers[0].patient.issuer),
    )
    plans = []
    for draft in drafts:
        issues = draft.issues
        own_conflict = any(i.severity is Severity.CONFLICT for i in issues)
        if held and not own_conflict:
            text = "another instance of the study is held for review"
            issues = [*issues, Issue(IssueKind.STUDY_HELD, Severity.CONFLICT, text)]
        if held:
            verdict = PlanVerdict.HOLD
        elif draft.header.sop_instance_uid in stored:
            verdict = PlanVerdict.ALREADY_STORED
        else:
            verdict = PlanVerdict.IMPORT
        plans.append(
            ReconcilePlan(
                sop_instance_uid=draft.header.sop_instance_uid,
                study_instance_uid=study_uid,
                verdict=verdict,
                changes=draft.changes,
                issues=tuple(issues),
                original_attributes=original if draft.changes else None,
                uid_map=remap_table,
            )
        )
    verdicts = {p.verdict for p in plans}
    if held:
        study_verdict = PlanVerdict.HOLD
    elif verdicts == {PlanVerdict.ALREADY_STORED}:
        study_verdict = PlanVerdict.ALREADY_STORED
    else:
        study_verdict = PlanVerdict.IMPORT
    return StudyPlan(
        study_instance_uid=study_uid, verdict=study_verdict, plans=tuple(plans), uid_map=remap_table
    )


@dataclass(frozen=True, slots=True)
class _Draft:
    header: InstanceHeader
    changes: tuple[AttributeChange, ...]
    issues: list[Issue]


def _accepted(issue: Issue) -> Issue:
    if issue.severity is not Severity.CONFLICT:
        return issue
    return Issue(issue.kind, Severity.WARNING, issue.text + " (accepted by review)", accepted=True)


def _identity(patient: DicomPatient) -> tuple[object, ...]:
    return (patient.name, patient.id, patient.issuer, patient.birth_date, patient.sex)


# --- changes ---------------------------------------------------------------------------------


def _change(keyword: str, old: AttributeValue, new: AttributeValue) -> list[AttributeChange]:
    return [] if old == new else [AttributeChange(keyword, TAGS[keyword], old, new)]


def qualifiers(issuer: HierarchicDesignator | None) -> HierarchicDesignator | None:
    """The Issuer of Patient ID Qualifiers Sequence part of a patient issuer (universal id)."""
    if issuer is None or not issuer.universal_id:
        return None
    return HierarchicDesignator("", issuer.universal_id, issuer.universal_id_type)


def _patient_changes(
    patient: DicomPatient, local: LocalPatient, settings: ReconcileSettings
) -> list[AttributeChange]:
    changes = _change("PatientID", patient.id, local.mrn)
    old_namespace = patient.issuer.local_namespace if patient.issuer else ""
    new_namespace = local.issuer.local_namespace if local.issuer else ""
    if old_namespace != new_namespace:
        changes += _change("IssuerOfPatientID", old_namespace, new_namespace or None)
    changes += _change(
        "IssuerOfPatientIDQualifiersSequence",
        qualifiers(patient.issuer),
        qualifiers(local.issuer),
    )
    if settings.coerce_demographics:
        for keyword, old, new in (
            ("PatientName", patient.name, local.name),
            ("PatientBirthDate", patient.birth_date, local.birth_date),
            ("PatientSex", patient.sex, local.sex),
        ):
            if new:
                changes += _change(keyword, old, new)
    return changes


def _accession(
    study: DicomStudy, settings: ReconcileSettings
) -> tuple[list[AttributeChange], list[Issue]]:
    number, issuer = study.accession_number, study.accession_issuer
    if settings.accession is AccessionPolicy.KEEP:
        return [], []
    if settings.accession is AccessionPolicy.CLEAR:
        changes = _change("AccessionNumber", number, "")
        return changes + _change("IssuerOfAccessionNumberSequence", issuer, None), []
    local = settings.operator_accession or _mapped(number, issuer, settings)
    if local is None:
        text = f"no local order is mapped for accession number {number!r}"
        return [], [Issue(IssueKind.ACCESSION_UNMAPPED, Severity.CONFLICT, text)]
    changes = _change("AccessionNumber", number, local.number)
    return changes + _change("IssuerOfAccessionNumberSequence", issuer, local.issuer), []


def _mapped(
    number: str, issuer: HierarchicDesignator | None, settings: ReconcileSettings
) -> LocalAccession | None:
    """The mapping for this number and issuer (an issuer-specific entry first).

    A number that already is one of the mapped local accessions (a re-run) maps to itself.
    """
    candidates = [m for m in settings.accession_map if m.foreign == number]
    for mapping in candidates:
        if same_authority(mapping.foreign_issuer, issuer):
            return mapping.local
    for mapping in candidates:
        if mapping.foreign_issuer is None:
            return mapping.local
    for mapping in settings.accession_map:
        if number and (mapping.local.number, mapping.local.issuer) == (number, issuer):
            return mapping.local
    return None


def _uid_changes(header: InstanceHeader, uid_map: dict[str, str]) -> list[AttributeChange]:
    if not uid_map:
        return []
    changes: list[AttributeChange] = []
    for keyword, old in (
        ("StudyInstanceUID", header.study.study_instance_uid),
        ("SeriesInstanceUID", header.series.series_instance_uid),
        ("SOPInstanceUID", header.sop_instance_uid),
    ):
        changes += _change(keyword, old, uid_map[old])
    return changes


# --- UIDs at the target ----------------------------------------------------------------------


def _uids(
    headers: Sequence[InstanceHeader],
    local: LocalPatient,
    settings: ReconcileSettings,
    target: TargetObjects,
) -> tuple[dict[str, str], dict[str, list[Issue]], set[str]]:
    """The remap table, the UID findings per SOP Instance UID, the SOP UIDs already stored."""
    collisions, stored = check_uids(headers, local, target, lambda uid: uid)
    if not any(collisions.values()):
        return {}, {}, stored
    issues: dict[str, list[Issue]] = {}
    if settings.uid_collision is UidCollisionPolicy.HOLD or stored:
        why = "" if not stored else " (part of the study is stored under its original UIDs)"
        for sop, texts in collisions.items():
            conflicts = [Issue(IssueKind.UID_COLLISION, Severity.CONFLICT, t + why) for t in texts]
            issues[sop] = conflicts
        return {}, issues, set()
    uids = [u for h in headers for u in hierarchy(h)]
    uid_map = {uid: remap_uid(uid, settings.namespace) for uid in dict.fromkeys(uids)}
    remapped, stored = check_uids(headers, local, target, uid_map.__getitem__)
    for header in headers:
        sop = header.sop_instance_uid
        text = "a UID of the study is a different local object: all UIDs of the study remapped"
        found = [Issue(IssueKind.UID_REMAPPED, Severity.WARNING, text)]
        for collision in remapped[sop]:
            found.append(Issue(IssueKind.REMAP_COLLISION, Severity.CONFLICT, collision))
        issues[sop] = found
    return uid_map, issues, stored


# --- dry run ---------------------------------------------------------------------------------


def _issuer_text(issuer: HierarchicDesignator | None) -> str:
    if issuer is None:
        return ""
    for text in (issuer.local_namespace, issuer.universal_id):
        if text and len(text) <= LO_MAX:
            return text
    return ""


def show(value: AttributeValue) -> str:
    """A planned value for people: text quoted, an issuer as HL7 ``namespace&id&type``."""
    if value is None:
        return "(absent)"
    if isinstance(value, HierarchicDesignator):
        return repr(f"{value.local_namespace}&{value.universal_id}&{value.universal_id_type}")
    return repr(value)


def describe(plan: ReconcilePlan) -> list[str]:
    """The dry run of one plan: verdict, one line per attribute change, then the findings."""
    lines = [f"{plan.sop_instance_uid}: {plan.verdict.value}"]
    lines += [f"{c.keyword} {c.tag_text}: {show(c.old)} -> {show(c.new)}" for c in plan.changes]
    if plan.needs_unicode:
        lines.append("SpecificCharacterSet (0008,0005): -> 'ISO_IR 192' unless already UTF-8")
    if plan.uid_map:
        lines.append(f"references inside sequences: {len(plan.uid_map)} remapped UIDs rewritten")
    item = plan.original_attributes
    if item is not None:
        lines.append(
            f"OriginalAttributesSequence (0400,0561): + item {item.reason} by "
            f"{item.modifying_system!r} at {item.modification_datetime}, "
            f"source {item.source_of_previous_values!r}, {len(plan.changes)} old values"
        )
    lines += [f"{i.severity.value} {i.kind.value}: {i.text}" for i in plan.issues]
    return lines
