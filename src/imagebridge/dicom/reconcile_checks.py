"""Import reconciliation checks: demographics, patient identifiers, UIDs at the target.

Pure functions used by :mod:`imagebridge.dicom.reconcile`, whose module
docstring states the policy they implement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imagebridge.model.imaging import DicomPatient, HierarchicDesignator, InstanceHeader
from imagebridge.model.normalise import (
    Verdict,
    birth_date_digits,
    compare_given_names,
    name_tokens,
    normalise_name,
)
from imagebridge.model.reconcile import (
    Issue,
    IssueKind,
    Level,
    LocalPatient,
    ReconcileSettings,
    Severity,
    TargetObjects,
)

# --- demographics and patient id --------------------------------------------------------------


def _name_parts(name: str) -> tuple[str, tuple[str, ...]]:
    """Normalised family name and given-name words (given and middle) of a PN's first group."""
    components = name.split("=", 1)[0].split("^")
    return normalise_name(components[0]), name_tokens(*components[1:3])


def demographics(
    patient: DicomPatient, local: LocalPatient, rules: ReconcileSettings
) -> list[Issue]:
    issues: list[Issue] = []

    def add(kind: IssueKind, severity: Severity, text: str) -> None:
        issues.append(Issue(kind, severity, text))

    foreign_family, foreign_given = _name_parts(patient.name)
    local_family, local_given = _name_parts(local.name)
    names = f"{patient.name!r} against the local {local.name!r}"
    if foreign_family and local_family:
        if foreign_family != local_family:
            add(IssueKind.FAMILY_NAME, Severity.CONFLICT, f"family names differ: {names}")
    else:
        add(IssueKind.NAME_MISSING, Severity.WARNING, f"a family name is missing: {names}")
    given = compare_given_names(
        foreign_given, local_given, rules.given_names, allow_initials=rules.allow_initials
    )
    if given is Verdict.CONFLICT:
        add(IssueKind.GIVEN_NAME, Severity.CONFLICT, f"given names differ: {names}")
    elif given is Verdict.PARTIAL:
        add(IssueKind.GIVEN_NAME_PARTIAL, Severity.WARNING, f"given names partly agree: {names}")
    elif given is Verdict.UNKNOWN:
        add(IssueKind.NAME_MISSING, Severity.WARNING, f"a given name is missing: {names}")

    foreign_birth = birth_date_digits(patient.birth_date)
    local_birth = birth_date_digits(local.birth_date)
    births = f"{patient.birth_date!r} against the local {local.birth_date!r}"
    if foreign_birth and local_birth:
        if foreign_birth != local_birth:
            add(IssueKind.BIRTH_DATE, Severity.CONFLICT, f"birth dates differ: {births}")
    else:
        add(IssueKind.BIRTH_DATE_MISSING, Severity.WARNING, f"a birth date is missing: {births}")

    foreign_sex = patient.sex.strip().upper()
    if foreign_sex != local.sex:
        sexes = f"{patient.sex!r} against the local {local.sex!r}"
        if {foreign_sex, local.sex} == {"M", "F"}:
            add(IssueKind.SEX, Severity.CONFLICT, f"sexes differ: {sexes}")
        else:
            add(IssueKind.SEX_UNCERTAIN, Severity.WARNING, f"sex is not certain: {sexes}")

    if not (foreign_family and local_family) and not (foreign_birth and local_birth):
        text = "neither a family name nor a birth date can be compared"
        add(IssueKind.INSUFFICIENT_DEMOGRAPHICS, Severity.CONFLICT, text)
    return issues


def same_authority(a: HierarchicDesignator | None, b: HierarchicDesignator | None) -> bool:
    """Both issuers are known to be one authority.

    Equal universal ids when both have one; otherwise equal, non-empty local
    namespaces.  False when either issuer is unknown.
    """
    if a is None or b is None:
        return False
    if a.universal_id and b.universal_id:
        return a.universal_id == b.universal_id
    return bool(a.local_namespace) and a.local_namespace == b.local_namespace


def patient_id_issues(patient: DicomPatient, local: LocalPatient) -> list[Issue]:
    """A conflict when the object carries an identifier of the local issuer that is not the MRN."""
    if local.issuer is None:
        return []
    ids = [(patient.id, patient.issuer), *((o.id, o.issuer) for o in patient.other_ids)]
    for pid, issuer in ids:
        if same_authority(issuer, local.issuer) and pid != local.mrn:
            text = f"the object carries {pid!r} from the local issuer, not the MRN {local.mrn!r}"
            return [Issue(IssueKind.PATIENT_ID, Severity.CONFLICT, text)]
    return []


# --- UIDs at the target -----------------------------------------------------------------------


def hierarchy(header: InstanceHeader) -> tuple[str, str, str]:
    """Study, Series and SOP Instance UID of an instance."""
    return (
        header.study.study_instance_uid,
        header.series.series_instance_uid,
        header.sop_instance_uid,
    )


def check_uids(
    headers: Sequence[InstanceHeader],
    local: LocalPatient,
    target: TargetObjects,
    mapped: Callable[[str], str],
) -> tuple[dict[str, list[str]], set[str]]:
    """Collision texts per SOP Instance UID, and the SOP UIDs stored under the same parents."""
    collisions: dict[str, list[str]] = {}
    stored: set[str] = set()
    for header in headers:
        study, series, sop = (mapped(u) for u in hierarchy(header))
        found = [
            _collision(target, local, Level.STUDY, study),
            _collision(target, local, Level.SERIES, series, study=study),
            _collision(target, local, Level.INSTANCE, sop, study=study, series=series),
        ]
        collisions[header.sop_instance_uid] = [text for text in found if text]
        if not any(found) and target.find(sop) is not None:
            stored.add(header.sop_instance_uid)
    return collisions, stored


def _collision(
    target: TargetObjects,
    local: LocalPatient,
    level: Level,
    uid: str,
    *,
    study: str = "",
    series: str = "",
) -> str:
    """Why the target's object under *uid* is a different object ('' when absent or the same)."""
    held = target.find(uid)
    if held is None:
        return ""
    name = f"{level.value} UID {uid}"
    if held.level is not level:
        return f"{name} is a local {held.level.value}"
    if held.patient_id != local.mrn or (
        held.patient_issuer is not None
        and local.issuer is not None
        and not same_authority(held.patient_issuer, local.issuer)
    ):
        return f"{name} belongs to another local patient"
    if level is not Level.STUDY and held.study_uid != study:
        return f"{name} is in another local study"
    if level is Level.INSTANCE and held.series_uid != series:
        return f"{name} is in another local series"
    return ""
