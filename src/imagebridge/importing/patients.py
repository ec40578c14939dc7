"""Import target, finding the local patient by demographics (when the operator gives no MRN).

PACS name matching differs (Orthanc's QIDO-RS is case-sensitive by default,
few archives ignore accents), so the archive is asked broadly and every
match is checked here:

* with a birth date, the archive is asked for that birth date only
  (:func:`archive_keys`), and names are compared here;
* without one, for ``<family>*`` as given and in upper case, the family
  name cut before its first non-ASCII letter (``Müller`` is asked as
  ``M*``): archives differ on accents (Orthanc 1.10 matches them exactly and
  its QIDO-RS does not even percent-decode the query), so the archive is
  asked for the part every archive matches alike.  A family name that
  starts with a non-ASCII letter needs a birth date.

:func:`matches` compares with :func:`~imagebridge.model.normalise.normalise_name`:
the family name must equal the query's (word for word), the given name
must start with the query's words; birth date and sex must be equal when
both sides have them.  Values with DICOM wildcards or separators are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from imagebridge.importing.base import PatientCandidate, PatientDemographics
from imagebridge.model.imaging import HierarchicDesignator
from imagebridge.model.normalise import name_tokens, normalise_name

_FORBIDDEN = frozenset("*?\\^=")


@dataclass(frozen=True, slots=True)
class ArchiveKeys:
    """The matching keys of one archive query: Patient Name, Birth Date, Sex ('' = any)."""

    patient_name: str
    birth_date: str
    sex: str


def usable(demographics: PatientDemographics) -> bool:
    """True when the query has a family name and no wildcard or separator anywhere."""
    values = (demographics.family, demographics.given, demographics.birth_date, demographics.sex)
    if not normalise_name(demographics.family):
        return False
    if demographics.birth_date and not (
        demographics.birth_date.isdigit() and len(demographics.birth_date) == 8
    ):
        return False
    return not any(c in _FORBIDDEN for value in values for c in value)


def archive_keys(demographics: PatientDemographics) -> list[ArchiveKeys]:
    """The archive queries to send (see module doc); empty for an unusable query."""
    if not usable(demographics):
        return []
    sex = demographics.sex.strip().upper()
    if demographics.birth_date:
        return [ArchiveKeys("", demographics.birth_date, sex)]
    prefix = _ascii_prefix(demographics.family)
    if not prefix:
        return []
    return [ArchiveKeys(f"{p}*", "", sex) for p in dict.fromkeys((prefix, prefix.upper()))]


def _ascii_prefix(family: str) -> str:
    """The family name up to its first non-ASCII character (archives differ on accents)."""
    text = family.strip()
    end = next((i for i, c in enumerate(text) if not c.isascii()), len(text))
    return text[:end].rstrip()


def matches(demographics: PatientDemographics, name: str, birth_date: str, sex: str) -> bool:
    """Does a local patient (DICOM PN *name*, birth date, sex) match *demographics*?"""
    components = [*name.split("=", maxsplit=1)[0].split("^"), "", ""][:2]
    if name_tokens(components[0]) != name_tokens(demographics.family):
        return False
    wanted = name_tokens(demographics.given)
    if wanted and name_tokens(components[1])[: len(wanted)] != wanted:
        return False
    if demographics.birth_date and birth_date and birth_date.strip() != demographics.birth_date:
        return False
    query_sex = demographics.sex.strip().upper()
    return not (query_sex and sex.strip() and sex.strip().upper() != query_sex)


@dataclass(slots=True)
class CandidateSet:
    """Matching patients gathered from study-level matches, one per (Patient ID, issuer)."""

    demographics: PatientDemographics
    _found: dict[tuple[str, HierarchicDesignator | None], PatientCandidate] = field(
        default_factory=dict
    )
    _studies: dict[tuple[str, HierarchicDesignator | None], list[str]] = field(default_factory=dict)

    def add(
        self,
        *,
        patient_id: str,
        issuer: HierarchicDesignator | None,
        name: str,
        birth_date: str,
        sex: str,
        study_instance_uid: str,
    ) -> None:
        """Keep a study-level match if its patient matches the demographics."""
        if not patient_id or not matches(self.demographics, name, birth_date, sex):
            return
        key = (patient_id, issuer)
        self._found.setdefault(key, PatientCandidate(patient_id, issuer, name, birth_date, sex))
        studies = self._studies.setdefault(key, [])
        if study_instance_uid and study_instance_uid not in studies:
            studies.append(study_instance_uid)

    def add_all(self, candidates: Iterable[PatientCandidate]) -> None:
        """Add candidates (one per study each) already read."""
        for c in candidates:
            for study in c.study_instance_uids or ("",):
                self.add(
                    patient_id=c.patient_id,
                    issuer=c.issuer,
                    name=c.name,
                    birth_date=c.birth_date,
                    sex=c.sex,
                    study_instance_uid=study,
                )

    def result(self) -> list[PatientCandidate]:
        """The candidates, ordered by Patient ID."""
        found = [
            PatientCandidate(
                c.patient_id, c.issuer, c.name, c.birth_date, c.sex, tuple(self._studies[key])
            )
            for key, c in self._found.items()
        ]
        return sorted(found, key=lambda c: (c.patient_id, str(c.issuer)))
