"""Cross Gateway Patient Discovery [ITI-55], Responding Gateway: demographics compared one by one.

:func:`normalise_query` reads a query's parameterList once into a
:class:`NormalisedQuery`; :func:`compare` sets one candidate
:class:`~imagebridge.model.patient.PatientRecord` against it and gives a
:class:`Verdict` for every attribute the query sent.  The rules are those of
:mod:`imagebridge.actors.responding.matching` (and ``docs/matching.md``);
normalisation is :mod:`imagebridge.model.normalise`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from imagebridge.errors import (
    InvalidValue,
    PatientDiscoveryInvalidTimestamp,
    PatientDiscoveryInvalidValue,
)
from imagebridge.model.ids import PatientId
from imagebridge.model.normalise import (
    GivenNameRule,
    Verdict,
    birth_date_digits,
    compare_given_names,
    name_tokens,
    normalise_name,
    normalise_phone,
)
from imagebridge.model.patient import PatientRecord
from imagebridge.model.xcpd import ParameterList, TimeInterval

logger = logging.getLogger(__name__)


class MatchAttribute(StrEnum):
    """A demographic the matcher compares (values are the ``[xcpd]`` configuration words)."""

    FAMILY = "family"
    GIVEN = "given"
    BIRTH_DATE = "birth_date"
    GENDER = "gender"
    ADDRESS = "address"
    TELECOM = "telecom"
    IDENTIFIER = "identifier"


@dataclass(frozen=True, slots=True)
class QueryName:
    """One livingSubjectName alternative: normalised family name and given-name words."""

    family: str
    given: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BirthDate:
    """livingSubjectBirthTime as date digits: ``low == high`` for an exact value.

    Bounds keep the precision sent (``1963``, ``196308``, ``19630804``); an
    open bound of a range is ``""``.
    """

    low: str
    high: str
    exact: bool

    @property
    def key(self) -> str:
        """The leading date digits every matching birth date starts with."""
        shared = ""
        for a, b in zip(self.low, self.high, strict=False):
            if a != b:
                break
            shared += a
        return shared


@dataclass(frozen=True, slots=True)
class QueryAddress:
    """One patientAddress value: postal code and city as normalised words."""

    postal_code: tuple[str, ...]
    city: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NormalisedQuery:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: a normalised parameterList."""

    names: tuple[QueryName, ...] = ()
    birth_date: BirthDate | None = None
    gender: str | None = None
    addresses: tuple[QueryAddress, ...] = ()
    phones: tuple[str, ...] = ()
    identifiers: tuple[PatientId, ...] = ()

    @property
    def sent(self) -> frozenset[MatchAttribute]:
        """The attributes the query carries in a form the matcher can use."""
        present = {
            MatchAttribute.FAMILY: any(n.family for n in self.names),
            MatchAttribute.GIVEN: any(n.given for n in self.names),
            MatchAttribute.BIRTH_DATE: self.birth_date is not None,
            MatchAttribute.GENDER: self.gender is not None,
            MatchAttribute.ADDRESS: bool(self.addresses),
            MatchAttribute.TELECOM: bool(self.phones),
            MatchAttribute.IDENTIFIER: bool(self.identifiers),
        }
        return frozenset(a for a, there in present.items() if there)

    @property
    def demographic(self) -> bool:
        """Name and birth time present: the query can be matched on demographics alone."""
        return bool(self.names) and self.birth_date is not None


GENDERS = frozenset({"M", "F", "UN"})
_MIN_PHONE_DIGITS = 4
_PHONE_SUFFIX_DIGITS = 7


def normalise_query(parameters: ParameterList) -> NormalisedQuery:
    """Normalise a parameterList; raises :class:`PatientDiscoveryQueryError` subclasses.

    Unusable but harmless values are left out with a debug log: names without
    family or given part, ``mailto:`` telecoms, addresses without postal code
    or city, and livingSubjectIds that are not OID + extension (they cannot
    name one of our patients).
    """
    names = tuple(
        dict.fromkeys(
            QueryName(normalise_name(" ".join(n.family)), name_tokens(*n.given))
            for n in parameters.living_subject_names
        )
    )
    names = tuple(n for n in names if n.family or n.given)
    gender = None
    if parameters.living_subject_administrative_gender is not None:
        gender = parameters.living_subject_administrative_gender.strip().upper()
        if gender not in GENDERS:
            raise PatientDiscoveryInvalidValue(
                f"livingSubjectAdministrativeGender {gender[:10]!r} is not M, F or UN"
            )
    addresses = tuple(
        QueryAddress(name_tokens(a.postal_code or ""), name_tokens(a.city or ""))
        for a in parameters.patient_addresses
        if (a.postal_code or "").strip() or (a.city or "").strip()
    )
    phones: list[str] = []
    for telecom in parameters.patient_telecoms:
        value = telecom.value.strip()
        digits = normalise_phone(value)
        if value.lower().startswith("mailto:") or len(digits) < _MIN_PHONE_DIGITS:
            logger.debug("patientTelecom %r is not a usable phone number", value[:8])
            continue
        phones.append(digits)
    identifiers: list[PatientId] = []
    for ii in parameters.living_subject_ids:
        try:
            identifiers.append(ii.patient_id)
        except InvalidValue:
            logger.debug("livingSubjectId with root %s cannot name a patient here", ii.root[:64])
    birth = parameters.living_subject_birth_time
    return NormalisedQuery(
        names=names,
        birth_date=_birth_date(birth) if birth is not None else None,
        gender=gender,
        addresses=addresses,
        phones=tuple(dict.fromkeys(phones)),
        identifiers=tuple(dict.fromkeys(identifiers)),
    )


def _date_digits(ts: str) -> str:
    """The date part of an HL7 TS at its precision (YYYY, YYYYMM or YYYYMMDD).

    Lenient on input: only the form is checked, not the calendar.  A birth date
    such as ``19849711`` (NIST test 15500's patient) is compared digit for
    digit with what the archive holds, which is what an initiator expects of a
    data-entry oddity that exists on both sides.
    """
    digits = ts.strip()[:8]
    if len(digits) not in (4, 6, 8) or not digits.isdigit():
        raise PatientDiscoveryInvalidTimestamp(
            f"livingSubjectBirthTime {ts[:20]!r} is not YYYY, YYYYMM or YYYYMMDD"
        )
    return digits


def _birth_date(interval: TimeInterval) -> BirthDate:
    if interval.value is not None:
        digits = _date_digits(interval.value)
        return BirthDate(digits, digits, exact=True)
    low = _date_digits(interval.low) if interval.low else ""
    high = _date_digits(interval.high) if interval.high else ""
    if low and high and low[: len(high)] > high[: len(low)]:
        raise PatientDiscoveryInvalidTimestamp(f"livingSubjectBirthTime {low}..{high} is empty")
    return BirthDate(low, high, exact=False)


# --- comparisons -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComparisonRules:
    """The policy knobs that change a single comparison."""

    given_names: GivenNameRule = GivenNameRule.PREFIX
    allow_initials: bool = False
    unknown_gender_matches: bool = True


def compare(
    query: NormalisedQuery, record: PatientRecord, rules: ComparisonRules
) -> dict[MatchAttribute, Verdict]:
    """A verdict for every attribute the query sent (names: the best alternative)."""
    verdicts: dict[MatchAttribute, Verdict] = {}
    if query.names:
        verdicts.update(_names(query.names, record, rules))
    if query.birth_date is not None:
        verdicts[MatchAttribute.BIRTH_DATE] = _birth(query.birth_date, record.birth_date)
    if query.gender is not None:
        verdicts[MatchAttribute.GENDER] = _gender(query.gender, record.sex, rules)
    if query.addresses:
        verdicts[MatchAttribute.ADDRESS] = _address(query.addresses, record.address)
    if query.phones:
        verdicts[MatchAttribute.TELECOM] = _telecom(query.phones, record.telephones)
    if query.identifiers:
        verdicts[MatchAttribute.IDENTIFIER] = _identifier(query.identifiers, record)
    return {a: verdicts[a] for a in MatchAttribute if a in verdicts}


_RANK = {Verdict.AGREE: 3, Verdict.PARTIAL: 2, Verdict.UNKNOWN: 1, Verdict.CONFLICT: 0}


def _names(
    names: tuple[QueryName, ...], record: PatientRecord, rules: ComparisonRules
) -> dict[MatchAttribute, Verdict]:
    family = normalise_name(record.family)
    given = name_tokens(*record.given)
    best: dict[MatchAttribute, Verdict] = {}
    best_rank: tuple[int, int] = (-1, -1)
    for name in names:
        found: dict[MatchAttribute, Verdict] = {}
        if name.family:
            found[MatchAttribute.FAMILY] = (
                Verdict.UNKNOWN
                if not family
                else Verdict.AGREE
                if family == name.family
                else Verdict.CONFLICT
            )
        if name.given:
            found[MatchAttribute.GIVEN] = compare_given_names(
                name.given, given, rules.given_names, allow_initials=rules.allow_initials
            )
        ranks = [_RANK[v] for v in found.values()]
        rank = (min(ranks), sum(ranks))
        if rank > best_rank:
            best, best_rank = found, rank
    return best


def _birth(sent: BirthDate, held: str) -> Verdict:
    date = birth_date_digits(held)
    if not date:
        return Verdict.UNKNOWN
    if sent.exact:
        return Verdict.AGREE if date.startswith(sent.low) else Verdict.CONFLICT
    above = not sent.low or date[: len(sent.low)] >= sent.low
    below = not sent.high or date[: len(sent.high)] <= sent.high
    return Verdict.AGREE if above and below else Verdict.CONFLICT


def _gender(sent: str, held: str, rules: ComparisonRules) -> Verdict:
    sex = held.strip().upper()
    if sent in ("M", "F") and sex in ("M", "F"):
        return Verdict.AGREE if sent == sex else Verdict.CONFLICT
    if sent == "UN" and sex == "O":
        return Verdict.AGREE
    return Verdict.UNKNOWN if rules.unknown_gender_matches else Verdict.CONFLICT


def _contains(words: tuple[str, ...], part: tuple[str, ...]) -> bool:
    """*part* occurs in *words* as a run of words, or written together (``SW1A1AA``)."""
    if not part:
        return False
    size = len(part)
    if any(words[i : i + size] == part for i in range(len(words) - size + 1)):
        return True
    joined = "".join(part)
    return any("".join(words[i : i + k]) == joined for k in (1, 2, 3) for i in range(len(words)))


def _address(sent: tuple[QueryAddress, ...], held: str) -> Verdict:
    """Positive evidence only: a free-text archive address cannot prove a difference."""
    words = name_tokens(held)
    if not words:
        return Verdict.UNKNOWN
    best = Verdict.UNKNOWN
    for address in sent:
        results: list[bool] = []
        postal = address.postal_code
        if postal:
            zip5 = len(postal) > 1 and len(postal[0]) >= 5 and _contains(words, postal[:1])
            results.append(_contains(words, postal) or zip5)
        if address.city:
            results.append(_contains(words, address.city))
        if results and all(results):
            return Verdict.AGREE
        if any(results):
            best = Verdict.PARTIAL
    return best


def phones_agree(a: str, b: str) -> bool:
    """Same digits, or one ends with the other over at least 7 digits (country/trunk prefixes)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= _PHONE_SUFFIX_DIGITS and long.endswith(short)


def _telecom(sent: tuple[str, ...], held: tuple[str, ...]) -> Verdict:
    """Positive evidence only: people have several numbers."""
    numbers = [d for d in (normalise_phone(t) for t in held) if len(d) >= _MIN_PHONE_DIGITS]
    if any(phones_agree(s, h) for s in sent for h in numbers):
        return Verdict.AGREE
    return Verdict.UNKNOWN


def _identifier(sent: tuple[PatientId, ...], record: PatientRecord) -> Verdict:
    """AGREE on an equal id; CONFLICT on another id in an assigning authority we hold."""
    held = (record.patient_id, *record.other_ids)
    authorities = {h.assigning_authority for h in held}
    agree = conflict = False
    for pid in sent:
        if pid in held:
            agree = True
        elif pid.assigning_authority in authorities:
            conflict = True
    if conflict:
        return Verdict.CONFLICT
    return Verdict.AGREE if agree else Verdict.UNKNOWN
