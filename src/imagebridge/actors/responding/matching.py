"""Cross Gateway Patient Discovery [ITI-55], Responding Gateway: the demographic matcher.

:func:`match_patients` decides which of the community's patients (the
candidates the store found with :func:`candidate_keys` and
:func:`candidate_identifiers`) an ITI-55 query names.  Pure: no I/O, no clock.

Matching policy
---------------
Every value is normalised first (:mod:`imagebridge.model.normalise`): case,
diacritics, punctuation and whitespace do not count.  Then each attribute the
query sent gets a verdict per candidate (agree, partial, unknown, conflict):

* **family name**: equal after normalising (``Müller-Lüdenscheidt`` =
  ``MULLER LUDENSCHEIDT``); no phonetic or partial family names.
* **given names**: all given names as sent, in order, split into words, must
  line up with the candidate's by :class:`GivenNameRule` (default ``prefix``:
  the shorter list starts the longer one, so a missing middle name on either
  side is tolerated but a different or reordered name is not).  Initials
  (``J`` ~ ``Jane``) count only with ``allow_initials``.  Several
  livingSubjectName elements are alternatives; the best one is used.
* **birth date**: equal at the precision sent (``1963``, ``196308`` or
  ``19630804``); a ``low``/``high`` range must contain the birth date.
* **gender**: ``M``/``F`` must equal the candidate's sex; ``UN`` matches
  DICOM ``O``.  An unknown or ``O`` sex on one side neither confirms nor
  excludes unless ``unknown_gender_matches`` is off.
* **address** (postal code and city) and **telecom** (digits only, trailing
  seven digits enough) only ever add evidence: a free-text archive address or
  a missing phone cannot prove another person.
* **identifier**: a livingSubjectId equal to the candidate's patient id or one
  of its other ids agrees; another id in an assigning authority the candidate
  has an id in conflicts.

Decision:

1. A candidate with any conflict is out; an identifier match with a
   conflicting demographic is **not** a match.
2. Candidates whose identifier agrees win; required attributes do not apply.
3. Otherwise the query needs name and birth time, and every required
   attribute (:attr:`MatchPolicy.required`) that was sent must be confirmed
   by the candidate.  A required attribute that was **not** sent: with no
   candidate left the answer is no match (more data could only narrow it);
   otherwise a missing gender, address or telecom is requested (case 3,
   together with any unsent attribute that separates the candidates), and a
   missing name part is a query error (case 5: XCPD has no code to ask for it).
4. The match degree (0..100, ``queryMatchObservation``) is the weighted share
   of the sent attributes that agree (:data:`WEIGHTS`; partial counts half;
   a birth date sent as year and month counts 80 %, a year or range 60 %);
   candidates below the minimum degree are dropped.
5. One candidate left: a match.  Several: all of them if ``allow_multiple``
   and at most ``max_matches``; else the one candidate with strictly the most
   agreements on :attr:`MatchPolicy.tie_breakers`; else ambiguous: no match,
   with a DetectedIssueEvent asking for the unsent attributes (gender,
   address, telecom) that could tell the candidates apart.

Carequality (QBD 8.5, digest section 11) lets a responder return several
candidates but prefers asking for more data, so ``allow_multiple`` is off by
default.  ``docs/matching.md`` says the same for operators.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, NamedTuple

from imagebridge.actors.responding.demographics import (
    ComparisonRules,
    MatchAttribute,
    NormalisedQuery,
    compare,
    normalise_query,
)
from imagebridge.errors import (
    InvalidValue,
    PatientDiscoveryQueryError,
    PatientDiscoveryRequiredAttributeMissing,
)
from imagebridge.model.ids import PatientId
from imagebridge.model.normalise import GivenNameRule, Verdict, normalise_name, normalise_phone
from imagebridge.model.patient import PatientRecord
from imagebridge.model.xcpd import (
    AcknowledgementType,
    DetectedIssueEvent,
    ParameterList,
    QueryResponseCode,
    RequestedAttribute,
)

logger = logging.getLogger(__name__)

A = MatchAttribute
DEFAULT_REQUIRED: Final = frozenset({A.FAMILY, A.GIVEN, A.BIRTH_DATE, A.GENDER})
DEFAULT_TIE_BREAKERS: Final = frozenset({A.IDENTIFIER, A.TELECOM, A.ADDRESS})
WEIGHTS: Final = {
    A.FAMILY: 25,
    A.GIVEN: 20,
    A.BIRTH_DATE: 25,
    A.GENDER: 10,
    A.ADDRESS: 10,
    A.TELECOM: 10,
    A.IDENTIFIER: 40,
}
"""Weights of the match degree (the share of the sent weight that agrees)."""
REQUEST_CODES: Final = {
    A.GENDER: RequestedAttribute.LIVING_SUBJECT_ADMINISTRATIVE_GENDER,
    A.ADDRESS: RequestedAttribute.PATIENT_ADDRESS,
    A.TELECOM: RequestedAttribute.PATIENT_TELECOM,
}
"""The attributes XCPD can ask an initiator for (1.3.6.1.4.1.19376.1.2.27.1), in IHE order."""
_BIRTH_PRECISION: Final = {8: 1.0, 6: 0.8, 4: 0.6}


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchPolicy:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: the matching policy.

    ``required``: attributes a demographic match must have sent and confirmed.
    ``tie_breakers``: attributes whose agreement picks one of several candidates.
    ``allow_multiple``: return up to ``max_matches`` candidates instead of asking
    for more data.  ``minimum_degree``: drop candidates below this degree.
    """

    required: frozenset[MatchAttribute] = DEFAULT_REQUIRED
    tie_breakers: frozenset[MatchAttribute] = DEFAULT_TIE_BREAKERS
    given_names: GivenNameRule = GivenNameRule.PREFIX
    allow_initials: bool = False
    unknown_gender_matches: bool = True
    allow_multiple: bool = False
    max_matches: int = 5
    minimum_degree: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.minimum_degree <= 100:
            raise InvalidValue(f"minimum match degree {self.minimum_degree} is not 0..100")
        if self.max_matches < 1:
            raise InvalidValue(f"max_matches {self.max_matches} must be at least 1")

    @property
    def rules(self) -> ComparisonRules:
        return ComparisonRules(self.given_names, self.allow_initials, self.unknown_gender_matches)


# --- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    """A candidate that matched, its degree (0..100) and the verdict on each sent attribute."""

    record: PatientRecord
    degree: int
    verdicts: tuple[tuple[MatchAttribute, Verdict], ...] = ()


@dataclass(frozen=True, slots=True)
class MatchFound:
    """Cases 1 and 2: AA / OK, one registrationEvent per candidate (best first)."""

    candidates: tuple[ScoredCandidate, ...]
    acknowledgement_type: ClassVar[AcknowledgementType] = AcknowledgementType.AA
    query_response_code: ClassVar[QueryResponseCode] = QueryResponseCode.OK

    def __post_init__(self) -> None:
        if not self.candidates:
            raise InvalidValue("a match needs at least one candidate")

    @property
    def detected_issue(self) -> DetectedIssueEvent | None:
        return None


@dataclass(frozen=True, slots=True)
class NoMatch:
    """Case 4: AA / NF, no registrationEvent ("no data for this patient here")."""

    acknowledgement_type: ClassVar[AcknowledgementType] = AcknowledgementType.AA
    query_response_code: ClassVar[QueryResponseCode] = QueryResponseCode.NF

    @property
    def detected_issue(self) -> DetectedIssueEvent | None:
        return None


@dataclass(frozen=True, slots=True)
class AmbiguousMatch:
    """Case 3: AA / OK, no registrationEvent; asks for ``requested`` when there is any.

    ``missing_required``: the policy needs attributes the query lacks (rather
    than several candidates fitting).  With nothing worth asking for there is
    no DetectedIssueEvent, which initiators read as no match.
    """

    requested: tuple[RequestedAttribute, ...]
    candidate_count: int
    missing_required: bool = False
    acknowledgement_type: ClassVar[AcknowledgementType] = AcknowledgementType.AA
    query_response_code: ClassVar[QueryResponseCode] = QueryResponseCode.OK

    @property
    def detected_issue(self) -> DetectedIssueEvent | None:
        return DetectedIssueEvent.requesting(*self.requested) if self.requested else None


@dataclass(frozen=True, slots=True)
class MatchQueryError:
    """Case 5: AE / AE; the actor answers with ``response_for_query_error`` and ``error``."""

    error: PatientDiscoveryQueryError = field(compare=False)
    acknowledgement_type: ClassVar[AcknowledgementType] = AcknowledgementType.AE
    query_response_code: ClassVar[QueryResponseCode] = QueryResponseCode.AE

    @property
    def detected_issue(self) -> DetectedIssueEvent | None:
        return None


MatchOutcome = MatchFound | NoMatch | AmbiguousMatch | MatchQueryError


# --- store look-up keys ----------------------------------------------------------------------


class CandidateKey(NamedTuple):
    """What the store looks candidates up by: birth date prefix and normalised family name.

    ``birth_date`` is the leading ``YYYYMMDD`` digits every match starts with
    ('' when the query has no usable birth time); ``family_key`` is
    :func:`~imagebridge.model.normalise.normalise_name` of the family name,
    the same function the store applies to its records.
    """

    birth_date: str
    family_key: str


def candidate_keys(parameters: ParameterList) -> tuple[CandidateKey, ...]:
    """One key per distinct family name sent; never raises (a bad query fails in the matcher)."""
    try:
        query = normalise_query(parameters)
    except PatientDiscoveryQueryError:
        families = {normalise_name(" ".join(n.family)) for n in parameters.living_subject_names}
        return tuple(CandidateKey("", f) for f in sorted(families) if f)
    birth = query.birth_date.key if query.birth_date is not None else ""
    return tuple(CandidateKey(birth, f) for f in sorted({n.family for n in query.names}) if f)


def candidate_identifiers(parameters: ParameterList) -> tuple[PatientId, ...]:
    """The livingSubjectIds usable as patient ids (OID root + extension), for an id look-up."""
    ids: list[PatientId] = []
    for ii in parameters.living_subject_ids:
        try:
            ids.append(ii.patient_id)
        except InvalidValue:
            continue
    return tuple(dict.fromkeys(ids))


# --- matching ----------------------------------------------------------------------------------


def match_patients(
    parameters: ParameterList,
    candidates: Sequence[PatientRecord],
    policy: MatchPolicy,
    *,
    minimum_degree_match: int | None = None,
) -> MatchOutcome:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: match a query.

    *minimum_degree_match* is the query's own hint (matchCriterionList); the
    higher of it and the policy's minimum applies.  Never raises for a bad
    query: that is a :class:`MatchQueryError`.
    """
    try:
        query = normalise_query(parameters)
    except PatientDiscoveryQueryError as exc:
        return MatchQueryError(exc)
    records: dict[PatientId, PatientRecord] = {}
    for candidate in candidates:
        records.setdefault(candidate.patient_id, candidate)  # the store may repeat a record
    scored = [_score(query, record, policy) for record in records.values()]
    viable = [s for s in scored if all(v is not Verdict.CONFLICT for _, v in s.verdicts)]
    floor = max(policy.minimum_degree, minimum_degree_match or 0)
    by_identifier = [s for s in viable if (A.IDENTIFIER, Verdict.AGREE) in s.verdicts]
    if by_identifier:
        by_identifier = [s for s in by_identifier if s.degree >= floor]
        return _decide(by_identifier, query, policy) if by_identifier else NoMatch()
    if not query.demographic:
        return NoMatch()
    checked = policy.required & query.sent
    survivors = [s for s in viable if _confirmed(s, checked, policy)]
    if not survivors:
        return NoMatch()
    missing = policy.required - query.sent
    if missing:
        unaskable = sorted(missing - REQUEST_CODES.keys())
        if unaskable:
            return MatchQueryError(
                PatientDiscoveryRequiredAttributeMissing(
                    f"the matching policy needs {', '.join(a.value for a in unaskable)} "
                    "in the query, and XCPD has no code to request it"
                )
            )
        useful = set(_useful_requests(survivors, query, policy))
        requested = tuple(
            code for a, code in REQUEST_CODES.items() if a in missing or code in useful
        )
        return AmbiguousMatch(requested, len(survivors), missing_required=True)
    survivors = [s for s in survivors if s.degree >= floor]
    if not survivors:
        return NoMatch()
    return _decide(survivors, query, policy)


def _score(query: NormalisedQuery, record: PatientRecord, policy: MatchPolicy) -> ScoredCandidate:
    verdicts = compare(query, record, policy.rules)
    possible = earned = 0.0
    for attribute, verdict in verdicts.items():
        weight = WEIGHTS[attribute]
        possible += weight
        if verdict is Verdict.AGREE:
            share = 1.0
            if attribute is A.BIRTH_DATE and query.birth_date is not None:
                exact = query.birth_date.exact
                share = _BIRTH_PRECISION.get(len(query.birth_date.low), 0.6) if exact else 0.6
            earned += weight * share
        elif verdict is Verdict.PARTIAL:
            earned += weight / 2
    degree = round(100 * earned / possible) if possible else 0
    return ScoredCandidate(record, degree, tuple(verdicts.items()))


def _confirmed(
    candidate: ScoredCandidate, checked: frozenset[MatchAttribute], policy: MatchPolicy
) -> bool:
    """Every checked attribute confirmed, and family or birth date positively agrees."""
    verdicts = dict(candidate.verdicts)
    for attribute in checked:
        verdict = verdicts.get(attribute, Verdict.UNKNOWN)
        if verdict in (Verdict.AGREE, Verdict.PARTIAL):
            continue
        if attribute is A.GENDER and policy.unknown_gender_matches:
            continue
        return False
    return any(
        verdicts.get(a) in (Verdict.AGREE, Verdict.PARTIAL) for a in (A.FAMILY, A.BIRTH_DATE)
    )


def _decide(
    candidates: list[ScoredCandidate], query: NormalisedQuery, policy: MatchPolicy
) -> MatchOutcome:
    ranked = sorted(
        candidates,
        key=lambda s: (-s.degree, s.record.patient_id.assigning_authority, s.record.patient_id.id),
    )
    if len(ranked) == 1:
        return MatchFound((ranked[0],))
    if policy.allow_multiple and len(ranked) <= policy.max_matches:
        return MatchFound(tuple(ranked))
    winner = _tie_break(ranked, policy)
    if winner is not None:
        return MatchFound((winner,))
    logger.debug("%d candidates fit the query; asking for more attributes", len(ranked))
    return AmbiguousMatch(_useful_requests(ranked, query, policy), len(ranked))


def _tie_break(ranked: list[ScoredCandidate], policy: MatchPolicy) -> ScoredCandidate | None:
    points = {Verdict.AGREE: 2, Verdict.PARTIAL: 1}

    def score(candidate: ScoredCandidate) -> int:
        return sum(points.get(v, 0) for a, v in candidate.verdicts if a in policy.tie_breakers)

    scores = sorted(((score(c), i) for i, c in enumerate(ranked)), reverse=True)
    if scores[0][0] > 0 and scores[0][0] > scores[1][0]:
        return ranked[scores[0][1]]
    return None


def _held(attribute: MatchAttribute, record: PatientRecord) -> str:
    """The candidate's value of an attribute XCPD can request, normalised ('' when unknown)."""
    if attribute is A.GENDER:
        sex = record.sex.strip().upper()
        return sex if sex in ("M", "F", "O") else ""
    if attribute is A.ADDRESS:
        return normalise_name(record.address)
    phones = sorted({normalise_phone(t) for t in record.telephones} - {""})
    return " ".join(phones)


def _useful_requests(
    ranked: list[ScoredCandidate], query: NormalisedQuery, policy: MatchPolicy
) -> tuple[RequestedAttribute, ...]:
    """Unsent attributes that could separate the candidates.

    Useful: the candidates hold at least two different values, or the
    attribute breaks ties and some candidates hold it while others do not.
    """
    requested: list[RequestedAttribute] = []
    for attribute, code in REQUEST_CODES.items():
        if attribute in query.sent:
            continue
        values = [_held(attribute, c.record) for c in ranked]
        known = {v for v in values if v}
        partly = bool(known) and "" in values and attribute in policy.tie_breakers
        if len(known) > 1 or partly:
            requested.append(code)
    return tuple(requested)
