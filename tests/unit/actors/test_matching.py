"""Cross Gateway Patient Discovery [ITI-55], Responding Gateway: the demographic matcher."""

from __future__ import annotations

import dataclasses
import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagebridge.actors.responding.matching import (
    AmbiguousMatch,
    CandidateKey,
    GivenNameRule,
    MatchAttribute,
    MatchFound,
    MatchOutcome,
    MatchPolicy,
    MatchQueryError,
    NoMatch,
    Verdict,
    candidate_identifiers,
    candidate_keys,
    match_patients,
)
from imagebridge.errors import (
    InvalidValue,
    PatientDiscoveryInvalidTimestamp,
    PatientDiscoveryInvalidValue,
    PatientDiscoveryQueryError,
    PatientDiscoveryRequiredAttributeMissing,
)
from imagebridge.model.ids import PatientId
from imagebridge.model.normalise import (
    name_tokens,
    normalise_name,
    normalise_phone,
    normalise_postal_code,
)
from imagebridge.model.patient import PatientRecord
from imagebridge.model.xcpd import (
    II,
    AcknowledgementType,
    ParameterList,
    PersonName,
    PostalAddress,
    QueryResponseCode,
    RequestedAttribute,
    Telecom,
    TimeInterval,
)

AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
SSN = "2.16.840.1.113883.4.1"
POLICY = MatchPolicy()


def record(
    pid: str,
    family: str = "Doe",
    given: tuple[str, ...] = ("Jane",),
    birth_date: str = "19630804",
    sex: str = "F",
    **extra: object,
) -> PatientRecord:
    return PatientRecord(PatientId(pid, AUTHORITY), family, given, birth_date, sex, **extra)  # type: ignore[arg-type]


def query(
    family: str | None = "Doe",
    given: tuple[str, ...] = ("Jane",),
    birth: str | None = "19630804",
    gender: str | None = "F",
    **extra: object,
) -> ParameterList:
    names = (PersonName(given, (family,) if family else ()),) if (family or given) else ()
    return ParameterList(
        living_subject_names=names,
        living_subject_birth_time=TimeInterval(birth) if birth else None,
        living_subject_administrative_gender=gender,
        **extra,  # type: ignore[arg-type]
    )


def matched_ids(outcome: MatchOutcome) -> list[str]:
    assert isinstance(outcome, MatchFound), outcome
    return [c.record.patient_id.id for c in outcome.candidates]


JANE = record("P1", address="1 Main St^^Springfield^IL^62701", telephones=("(555) 010-0100",))
JANE_MARIE = record("P2", given=("Jane", "Marie"), address="9 Elm St^^Chicago^IL^60601")
JOHN = record("P3", given=("John",), sex="M", birth_date="19600101")


# --- exact matches and normalisation ---------------------------------------------------------


def test_exact_match() -> None:
    outcome = match_patients(query(), [JANE, JOHN], POLICY)
    assert matched_ids(outcome) == ["P1"]
    assert isinstance(outcome, MatchFound)
    (found,) = outcome.candidates
    assert found.degree == 100
    assert dict(found.verdicts) == {
        MatchAttribute.FAMILY: Verdict.AGREE,
        MatchAttribute.GIVEN: Verdict.AGREE,
        MatchAttribute.BIRTH_DATE: Verdict.AGREE,
        MatchAttribute.GENDER: Verdict.AGREE,
    }
    assert outcome.acknowledgement_type is AcknowledgementType.AA
    assert outcome.query_response_code is QueryResponseCode.OK
    assert outcome.detected_issue is None


@pytest.mark.parametrize(
    ("family", "given"),
    [
        ("DOE", ("JANE",)),
        ("  doe ", (" jane",)),
        ("Döe", ("Jáne",)),
        ("D.o.e", ("Ja'ne",)),
        ("DOE", ("Jane\t",)),
    ],
)
def test_case_diacritics_whitespace_and_punctuation_do_not_count(
    family: str, given: tuple[str, ...]
) -> None:
    assert matched_ids(match_patients(query(family, given), [JANE], POLICY)) == ["P1"]


def test_compound_and_foreign_names() -> None:
    held = record("P9", family="Müller-Lüdenscheidt", given=("José", "María"))
    sent = query("MULLER LUDENSCHEIDT", ("Jose Maria",))
    assert matched_ids(match_patients(sent, [held], POLICY)) == ["P9"]
    danish = record("P8", family="Østergård", given=("Søren",), sex="M")
    sent = query("Ostergard", ("Soren",), gender="M")
    assert matched_ids(match_patients(sent, [danish], POLICY)) == ["P8"]


def test_different_family_or_given_name_is_no_match() -> None:
    assert isinstance(match_patients(query("Doh"), [JANE], POLICY), NoMatch)
    assert isinstance(match_patients(query(given=("Joan",)), [JANE], POLICY), NoMatch)


def test_no_candidates_is_no_match() -> None:
    outcome = match_patients(query(), [], POLICY)
    assert isinstance(outcome, NoMatch)
    assert outcome.query_response_code is QueryResponseCode.NF
    assert outcome.acknowledgement_type is AcknowledgementType.AA


def test_a_repeated_record_counts_once() -> None:
    assert matched_ids(match_patients(query(), [JANE, JANE], POLICY)) == ["P1"]


# --- given names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "sent", "held", "expected"),
    [
        (GivenNameRule.PREFIX, ("Jane",), ("Jane", "Marie"), Verdict.PARTIAL),
        (GivenNameRule.PREFIX, ("Jane", "Marie"), ("Jane",), Verdict.PARTIAL),
        (GivenNameRule.PREFIX, ("Jane Marie",), ("Jane", "Marie"), Verdict.AGREE),
        (GivenNameRule.PREFIX, ("Marie",), ("Jane", "Marie"), Verdict.CONFLICT),
        (GivenNameRule.PREFIX, ("Marie", "Jane"), ("Jane", "Marie"), Verdict.CONFLICT),
        (GivenNameRule.EXACT, ("Jane",), ("Jane", "Marie"), Verdict.CONFLICT),
        (GivenNameRule.EXACT, ("Jane", "Marie"), ("JANE", "MARIE"), Verdict.AGREE),
        (GivenNameRule.FIRST, ("Jane", "Anne"), ("Jane", "Marie"), Verdict.PARTIAL),
        (GivenNameRule.FIRST, ("Anne",), ("Jane", "Marie"), Verdict.CONFLICT),
    ],
)
def test_given_name_rules(
    rule: GivenNameRule, sent: tuple[str, ...], held: tuple[str, ...], expected: Verdict
) -> None:
    policy = MatchPolicy(given_names=rule)
    outcome = match_patients(query(given=sent), [record("P1", given=held)], policy)
    if expected is Verdict.CONFLICT:
        assert isinstance(outcome, NoMatch)
    else:
        assert isinstance(outcome, MatchFound)
        assert dict(outcome.candidates[0].verdicts)[MatchAttribute.GIVEN] is expected


def test_initials_only_when_allowed() -> None:
    sent = query(given=("J",))
    assert isinstance(match_patients(sent, [JANE], POLICY), NoMatch)
    outcome = match_patients(sent, [JANE], MatchPolicy(allow_initials=True))
    assert matched_ids(outcome) == ["P1"]
    assert isinstance(outcome, MatchFound) and outcome.candidates[0].degree < 100


def test_name_alternatives_are_ored() -> None:
    married = record("P5", family="Smith")
    names = (PersonName(("Jane",), ("Doe",)), PersonName(("Jane",), ("Smith",)))
    sent = dataclasses.replace(query(), living_subject_names=names)
    assert matched_ids(match_patients(sent, [married], POLICY)) == ["P5"]


def test_candidate_without_given_name_cannot_confirm_a_required_given_name() -> None:
    anonymous = record("P6", given=())
    assert isinstance(match_patients(query(), [anonymous], POLICY), NoMatch)
    relaxed = MatchPolicy(required=frozenset({MatchAttribute.FAMILY, MatchAttribute.BIRTH_DATE}))
    assert matched_ids(match_patients(query(), [anonymous], relaxed)) == ["P6"]


# --- birth date -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "matches"),
    [
        ("19630804", True),
        ("196308041230", True),  # a birth time: the date part counts
        ("196308", True),
        ("1963", True),
        ("196309", False),
        ("1964", False),
        ("19630805", False),
    ],
)
def test_birth_date_at_the_precision_sent(birth: str, matches: bool) -> None:
    outcome = match_patients(query(birth=birth), [JANE], POLICY)
    assert isinstance(outcome, MatchFound if matches else NoMatch)


def test_less_precise_birth_dates_give_lower_degrees() -> None:
    degrees = []
    for birth in ("19630804", "196308", "1963"):
        outcome = match_patients(query(birth=birth), [JANE], POLICY)
        assert isinstance(outcome, MatchFound)
        degrees.append(outcome.candidates[0].degree)
    assert degrees[0] > degrees[1] > degrees[2]


@pytest.mark.parametrize(
    ("low", "high", "matches"),
    [
        ("1960", "1969", True),
        ("19630801", "19630810", True),
        ("19630805", None, False),
        (None, "196307", False),
        ("196308", "196308", True),
    ],
)
def test_birth_date_ranges(low: str | None, high: str | None, matches: bool) -> None:
    sent = dataclasses.replace(query(), living_subject_birth_time=TimeInterval(low=low, high=high))
    assert isinstance(match_patients(sent, [JANE], POLICY), MatchFound if matches else NoMatch)


@pytest.mark.parametrize("birth", ["19630", "1963080", "63"])
def test_malformed_birth_dates_are_query_errors(birth: str) -> None:
    outcome = match_patients(query(birth=birth), [JANE], POLICY)
    assert isinstance(outcome, MatchQueryError)
    assert isinstance(outcome.error, PatientDiscoveryInvalidTimestamp)
    assert outcome.acknowledgement_type is AcknowledgementType.AE
    assert outcome.query_response_code is QueryResponseCode.AE


def test_out_of_calendar_birth_dates_compare_digit_for_digit() -> None:
    odd = dataclasses.replace(JANE, birth_date="19849711")
    assert isinstance(match_patients(query(birth="19849711"), [odd], POLICY), MatchFound)
    assert isinstance(match_patients(query(birth="19849712"), [odd], POLICY), NoMatch)


def test_an_empty_birth_date_range_is_a_query_error() -> None:
    sent = dataclasses.replace(
        query(), living_subject_birth_time=TimeInterval(low="1970", high="1960")
    )
    assert isinstance(match_patients(sent, [JANE], POLICY), MatchQueryError)


def test_candidate_with_unknown_birth_date_is_not_a_demographic_match() -> None:
    assert isinstance(match_patients(query(), [record("P7", birth_date="")], POLICY), NoMatch)


# --- gender ---------------------------------------------------------------------------------


def test_gender() -> None:
    assert isinstance(match_patients(query(gender="M"), [JANE], POLICY), NoMatch)
    assert matched_ids(match_patients(query(gender="f"), [JANE], POLICY)) == ["P1"]
    other = record("P4", sex="O")
    assert matched_ids(match_patients(query(gender="UN"), [other], POLICY)) == ["P4"]


def test_unknown_gender_follows_the_policy() -> None:
    unknown = record("P4", sex="")
    outcome = match_patients(query(gender="F"), [unknown], POLICY)
    assert matched_ids(outcome) == ["P4"]
    assert isinstance(outcome, MatchFound) and outcome.candidates[0].degree == 88  # 70 of 80
    strict = MatchPolicy(unknown_gender_matches=False)
    assert isinstance(match_patients(query(gender="F"), [unknown], strict), NoMatch)
    assert isinstance(match_patients(query(gender="UN"), [JANE], strict), NoMatch)


def test_an_unknown_gender_code_is_a_query_error() -> None:
    outcome = match_patients(query(gender="X"), [JANE], POLICY)
    assert isinstance(outcome, MatchQueryError)
    assert isinstance(outcome.error, PatientDiscoveryInvalidValue)


def test_missing_required_gender_is_requested() -> None:
    outcome = match_patients(query(gender=None), [JANE], POLICY)
    assert isinstance(outcome, AmbiguousMatch)
    assert outcome.missing_required
    assert outcome.requested == (RequestedAttribute.LIVING_SUBJECT_ADMINISTRATIVE_GENDER,)
    issue = outcome.detected_issue
    assert issue is not None
    assert [c.code for c in issue.action_required] == ["LivingSubjectAdministrativeGenderRequested"]
    assert issue.action_required[0].code_system == "1.3.6.1.4.1.19376.1.2.27.1"
    assert outcome.query_response_code is QueryResponseCode.OK
    # Without any candidate the missing gender cannot matter: a definite no match.
    assert isinstance(match_patients(query(gender=None), [JOHN], POLICY), NoMatch)
    # Gender not required: a match.
    relaxed = MatchPolicy(required=POLICY.required - {MatchAttribute.GENDER})
    assert matched_ids(match_patients(query(gender=None), [JANE], relaxed)) == ["P1"]


def test_missing_gender_request_also_names_attributes_that_separate() -> None:
    outcome = match_patients(query(gender=None), [JANE, JANE_MARIE], POLICY)
    assert isinstance(outcome, AmbiguousMatch) and outcome.candidate_count == 2
    assert outcome.requested == (
        RequestedAttribute.LIVING_SUBJECT_ADMINISTRATIVE_GENDER,
        RequestedAttribute.PATIENT_ADDRESS,
        RequestedAttribute.PATIENT_TELECOM,
    )


def test_missing_required_given_name_is_a_query_error() -> None:
    outcome = match_patients(query(given=()), [JANE], POLICY)
    assert isinstance(outcome, MatchQueryError)
    assert isinstance(outcome.error, PatientDiscoveryRequiredAttributeMissing)
    assert isinstance(outcome.error, PatientDiscoveryQueryError)
    assert "given" in outcome.error.message
    assert isinstance(match_patients(query(given=()), [JOHN], POLICY), NoMatch)


# --- ambiguity and tie-breaking ----------------------------------------------------------------


def test_two_candidates_are_ambiguous_and_more_attributes_are_requested() -> None:
    twin = record("P2", address="9 Elm St^^Chicago^IL^60601", telephones=("555 010 0199",))
    outcome = match_patients(query(), [JANE, twin], POLICY)
    assert isinstance(outcome, AmbiguousMatch)
    assert not outcome.missing_required
    assert outcome.candidate_count == 2
    assert outcome.requested == (
        RequestedAttribute.PATIENT_ADDRESS,
        RequestedAttribute.PATIENT_TELECOM,
    )
    assert outcome.acknowledgement_type is AcknowledgementType.AA
    assert outcome.query_response_code is QueryResponseCode.OK


def test_attributes_already_sent_or_useless_are_not_requested() -> None:
    twin = record("P2", telephones=("555 010 0199",))  # no address, sex known and equal
    sent = query(patient_telecoms=(Telecom("tel:+1-555-010-0777"),))
    outcome = match_patients(sent, [JANE, twin], POLICY)
    assert isinstance(outcome, AmbiguousMatch)
    assert outcome.requested == (RequestedAttribute.PATIENT_ADDRESS,)
    bare = [record("P1"), record("P2")]
    nothing = match_patients(query(), bare, POLICY)
    assert isinstance(nothing, AmbiguousMatch)
    assert nothing.requested == ()
    assert nothing.detected_issue is None


def test_a_phone_that_agrees_breaks_the_tie() -> None:
    sent = query(patient_telecoms=(Telecom("tel:+1-555-010-0100"),))
    assert matched_ids(match_patients(sent, [JANE, JANE_MARIE], POLICY)) == ["P1"]


def test_an_address_that_agrees_breaks_the_tie() -> None:
    for address, expected in (
        (PostalAddress(postal_code="60601"), "P2"),
        (PostalAddress(city="chicago"), "P2"),
        (PostalAddress(postal_code="62701-1234", city="Springfield"), "P1"),
    ):
        sent = query(patient_addresses=(address,))
        assert matched_ids(match_patients(sent, [JANE, JANE_MARIE], POLICY)) == [expected]


def test_tie_breakers_follow_the_policy() -> None:
    sent = query(patient_telecoms=(Telecom("tel:+1-555-010-0100"),))
    policy = MatchPolicy(tie_breakers=frozenset())
    assert isinstance(match_patients(sent, [JANE, JANE_MARIE], policy), AmbiguousMatch)


def test_multiple_matches_when_allowed() -> None:
    policy = MatchPolicy(allow_multiple=True)
    outcome = match_patients(query(), [JANE_MARIE, JANE], policy)
    assert matched_ids(outcome) == ["P1", "P2"]  # best degree first
    assert isinstance(outcome, MatchFound)
    assert outcome.candidates[0].degree > outcome.candidates[1].degree
    capped = MatchPolicy(allow_multiple=True, max_matches=1)
    assert isinstance(match_patients(query(), [JANE_MARIE, record("P1")], capped), AmbiguousMatch)


def test_minimum_degree() -> None:
    assert isinstance(
        match_patients(query(), [JANE_MARIE], MatchPolicy(minimum_degree=95)), NoMatch
    )
    assert isinstance(
        match_patients(query(), [JANE_MARIE], POLICY, minimum_degree_match=95), NoMatch
    )
    assert matched_ids(match_patients(query(), [JANE_MARIE], POLICY, minimum_degree_match=88)) == [
        "P2"
    ]


def test_required_address_and_telecom() -> None:
    policy = MatchPolicy(required=POLICY.required | {MatchAttribute.ADDRESS})
    outcome = match_patients(query(), [JANE], policy)
    assert isinstance(outcome, AmbiguousMatch)
    assert outcome.requested == (RequestedAttribute.PATIENT_ADDRESS,)
    sent = query(patient_addresses=(PostalAddress(city="Springfield"),))
    assert matched_ids(match_patients(sent, [JANE], policy)) == ["P1"]
    elsewhere = query(patient_addresses=(PostalAddress(city="Boston"),))
    assert isinstance(match_patients(elsewhere, [JANE], policy), NoMatch)
    # Optional address and telecom never exclude.
    assert matched_ids(match_patients(elsewhere, [JANE], POLICY)) == ["P1"]
    phone = query(patient_telecoms=(Telecom("tel:+44 20 7946 0000"), Telecom("mailto:j@d.org")))
    assert matched_ids(match_patients(phone, [JANE], POLICY)) == ["P1"]


# --- identifiers ------------------------------------------------------------------------------


def test_identifier_match_without_demographics() -> None:
    sent = ParameterList(living_subject_ids=(II(AUTHORITY, "P3"),))
    outcome = match_patients(sent, [JANE, JOHN], POLICY)
    assert matched_ids(outcome) == ["P3"]
    assert isinstance(outcome, MatchFound) and outcome.candidates[0].degree == 100


def test_identifier_match_on_other_ids() -> None:
    held = record("P1", other_ids=(PatientId("999-88-6345", SSN),))
    sent = query(gender=None, living_subject_ids=(II(SSN, "999-88-6345"),))
    assert matched_ids(match_patients(sent, [held], POLICY)) == ["P1"]


def test_identifier_match_with_a_conflicting_demographic_is_not_a_match() -> None:
    sent = query(birth="19700101", living_subject_ids=(II(AUTHORITY, "P1"),))
    assert isinstance(match_patients(sent, [JANE], POLICY), NoMatch)
    sent = query(gender="M", living_subject_ids=(II(AUTHORITY, "P1"),))
    assert isinstance(match_patients(sent, [JANE], POLICY), NoMatch)


def test_another_id_in_a_held_assigning_authority_conflicts() -> None:
    sent = query(living_subject_ids=(II(AUTHORITY, "P999"),))
    assert isinstance(match_patients(sent, [JANE], POLICY), NoMatch)


def test_ids_of_unknown_authorities_are_neutral() -> None:
    sent = query(living_subject_ids=(II("1.2.840.114350.1.13.99997.2.3412", "1234"),))
    assert matched_ids(match_patients(sent, [JANE], POLICY)) == ["P1"]
    only_id = ParameterList(living_subject_ids=(II("1.2.840.114350.1.13.99997.2.3412", "1"),))
    assert isinstance(match_patients(only_id, [JANE], POLICY), NoMatch)


def test_ids_that_cannot_name_a_patient_are_ignored() -> None:
    sent = query(living_subject_ids=(II("1.2.3.4.5"),))  # root only
    assert matched_ids(match_patients(sent, [JANE], POLICY)) == ["P1"]
    assert candidate_identifiers(sent) == ()


def test_identifier_breaks_a_demographic_tie() -> None:
    sent = query(living_subject_ids=(II(AUTHORITY, "P2"),))
    assert matched_ids(match_patients(sent, [JANE, JANE_MARIE], POLICY)) == ["P2"]


# --- store keys -----------------------------------------------------------------------------


def test_candidate_keys() -> None:
    names = (PersonName(("Jane",), ("Doé",)), PersonName(("Jane",), ("SMITH",)))
    sent = dataclasses.replace(query(birth="196308"), living_subject_names=names)
    assert candidate_keys(sent) == (CandidateKey("196308", "doe"), CandidateKey("196308", "smith"))
    birth_date, family_key = candidate_keys(sent)[0]
    assert (birth_date, family_key) == ("196308", "doe")
    ranged = dataclasses.replace(
        sent, living_subject_birth_time=TimeInterval(low="1960", high="1969")
    )
    assert candidate_keys(ranged)[0] == CandidateKey("196", "doe")
    bad = dataclasses.replace(sent, living_subject_birth_time=TimeInterval("1963139"))
    assert candidate_keys(bad) == (CandidateKey("", "doe"), CandidateKey("", "smith"))
    assert candidate_keys(ParameterList()) == ()


def test_candidate_identifiers() -> None:
    sent = ParameterList(
        living_subject_ids=(II(AUTHORITY, "P1"), II(AUTHORITY, "P1"), II(SSN, "999-88-6345"))
    )
    assert candidate_identifiers(sent) == (
        PatientId("P1", AUTHORITY),
        PatientId("999-88-6345", SSN),
    )


# --- policy and values ---------------------------------------------------------------------


def test_policy_defaults_and_validation() -> None:
    assert POLICY.required == {
        MatchAttribute("family"),
        MatchAttribute("given"),
        MatchAttribute("birth_date"),
        MatchAttribute("gender"),
    }
    assert not POLICY.allow_multiple
    with pytest.raises(InvalidValue):
        MatchPolicy(minimum_degree=101)
    with pytest.raises(InvalidValue):
        MatchPolicy(max_matches=0)
    with pytest.raises(InvalidValue):
        MatchFound(())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  José-María  O'Neill ", "jose maria oneill"),
        ("STRAẞE", "strasse"),
        ("Øster Łukasz", "oster lukasz"),
        ("DOE^JANE", "doe jane"),
        ("St. John", "st john"),
        ("ﬁeld", "field"),
        ("", ""),
    ],
)
def test_normalise_name(text: str, expected: str) -> None:
    assert normalise_name(text) == expected


def test_normalise_phone_and_postal_code() -> None:
    assert normalise_phone("tel:+1-555-010-0100;ext=12") == "15550100100"
    assert normalise_phone("٥٥٥ 0100") == "5550100"
    assert normalise_postal_code(" sw1a 1aa ") == "sw1a1aa"
    assert name_tokens("Jane Marie", "Ann") == ("jane", "marie", "ann")


# --- properties ------------------------------------------------------------------------------

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=10)
_ACCENTS = ("\u0301", "\u0300", "\u0308", "\u0302", "\u030a")


def _disguise(name: str, rng: random.Random) -> str:
    """Random case, accents on some letters, stray spaces around: the same name to the matcher."""
    out = []
    for c in name:
        letter = c.upper() if rng.random() < 0.5 else c
        if rng.random() < 0.3:
            letter += rng.choice(_ACCENTS)
        out.append(letter)
    text = " " * rng.randint(0, 2) + "".join(out) + " " * rng.randint(0, 2)
    return unicodedata.normalize(rng.choice(("NFC", "NFD")), text)


def _population(families: list[str], givens: list[str]) -> list[PatientRecord]:
    return [
        record(f"P{i}", family=f, given=(g,), birth_date="19630804", sex="F")
        for i, (f, g) in enumerate(zip(families, givens, strict=False))
    ]


def _summary(outcome: MatchOutcome) -> tuple[str, tuple[str, ...]]:
    if isinstance(outcome, MatchFound):
        return ("found", tuple(c.record.patient_id.id for c in outcome.candidates))
    if isinstance(outcome, AmbiguousMatch):
        return ("ambiguous", tuple(outcome.requested))
    return (type(outcome).__name__, ())


@settings(max_examples=150, deadline=None)
@given(
    families=st.lists(_NAME, min_size=1, max_size=4),
    givens=st.lists(_NAME, min_size=4, max_size=4),
    pick=st.integers(min_value=0, max_value=3),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_matching_is_invariant_under_case_and_diacritics(
    families: list[str], givens: list[str], pick: int, seed: int
) -> None:
    candidates = _population(families, givens)
    target = candidates[pick % len(candidates)]
    rng = random.Random(seed)
    plain = query(target.family, target.given)
    disguised = query(_disguise(target.family, rng), (_disguise(target.given[0], rng),))
    expected = _summary(match_patients(plain, candidates, POLICY))
    assert _summary(match_patients(disguised, candidates, POLICY)) == expected
    assert expected[0] in ("found", "ambiguous")
    if expected[0] == "found":
        assert target.patient_id.id in expected[1]


@settings(max_examples=100, deadline=None)
@given(
    families=st.lists(_NAME, min_size=1, max_size=5),
    givens=st.lists(_NAME, min_size=5, max_size=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_matching_does_not_depend_on_candidate_order(
    families: list[str], givens: list[str], seed: int
) -> None:
    candidates = _population(families, givens)
    sent = query(families[0], (givens[0],))
    shuffled = list(candidates)
    random.Random(seed).shuffle(shuffled)
    assert _summary(match_patients(sent, shuffled, POLICY)) == _summary(
        match_patients(sent, candidates, POLICY)
    )


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=30))
def test_normalised_names_are_stable(text: str) -> None:
    once = normalise_name(text)
    assert normalise_name(once) == once
    assert once == once.strip() and "  " not in once
    assert normalise_name(text.upper()) == normalise_name(text.lower()) or not text.isascii()
