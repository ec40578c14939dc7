"""Patient Location Query [ITI-56], Initiating Gateway: locator logic with a fake PLQ call.

The real exchange is covered over loopback HTTP in
``tests/integration/test_health_data_locator.py``; here only the decisions.
"""

from __future__ import annotations

import logging

import pytest

from imagebridge.actors.initiating.locator import (
    DiscoveredMatch,
    LocatorReportKind,
    follow_health_data_locators,
)
from imagebridge.errors import UnexpectedElement
from imagebridge.model.directory import Community, CommunityEndpoint, DirectorySnapshot
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.patient_location import (
    PatientLocationQueryRequest,
    PatientLocationQueryResponse,
    PatientLocationResponse,
    RejectedLocation,
)
from imagebridge.model.xcpd import II, HealthDataLocator, MatchedPatient
from imagebridge.transactions import Transaction

pytestmark = pytest.mark.anyio

K = LocatorReportKind
T = Transaction


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _community(
    oid: str, *transactions: Transaction, active: bool = True, part_of: str | None = None
) -> Community:
    return Community(
        HomeCommunityId(oid),
        f"c{oid}",
        tuple(CommunityEndpoint(t, f"https://{oid}.example/{t.value}") for t in transactions),
        active=active,
        part_of=HomeCommunityId(part_of) if part_of else None,
    )


RLS = _community("1.1", T.ITI_55, T.ITI_56)
OTHER_RLS = _community("1.2", T.ITI_56)
HOSPITAL = _community("2.1", T.ITI_38)
IMAGING_ONLY = _community("2.2", T.RAD_75)
INACTIVE = _community("2.3", T.ITI_38, active=False)
CLINIC = _community("2.4", part_of="2.1")  # reached through HOSPITAL's endpoint
DIRECTORY = DirectorySnapshot((RLS, OTHER_RLS, HOSPITAL, IMAGING_ONLY, INACTIVE, CLINIC))


def _match(patient: str, home: str | None = "1.1", hdl: bool = True) -> MatchedPatient:
    flag = HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR if hdl else None
    return MatchedPatient(
        PatientId(patient, "1.1.9"),
        HomeCommunityId(home) if home else None,
        health_data_locator=flag,
    )


def _at(oid: str, patient: str, asked: II | None = None) -> PatientLocationResponse:
    return PatientLocationResponse(HomeCommunityId(oid), II(f"{oid}.9", patient), asked)


class FakeLocator:
    def __init__(self, answers: dict[str, PatientLocationQueryResponse | Exception]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str]] = []

    async def __call__(
        self, community: Community, request: PatientLocationQueryRequest
    ) -> PatientLocationQueryResponse:
        patient = request.patient_id.id
        self.sent.append((community.home_community_id.oid, patient))
        answer = self.answers[patient]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_each_location_is_classified() -> None:
    asked = II("1.1.9", "P1")
    locate = FakeLocator(
        {
            "P1": PatientLocationQueryResponse(
                (
                    _at("2.1", "H1", asked),
                    _at("2.2", "I1"),
                    _at("2.3", "X1"),
                    _at("2.4", "C1"),
                    _at("2.1", "W1", II("1.1.9", "someone-else")),
                    _at("2.9", "U1"),
                ),
                rejected=(RejectedLocation(6, "HomeCommunityId is missing"),),
            )
        }
    )
    result = await follow_health_data_locators(
        [DiscoveredMatch(RLS, _match("P1"))], DIRECTORY, locate
    )
    assert locate.sent == [("1.1", "P1")]
    assert [(t.community.name, t.patient_id.id, t.query_endpoint.url) for t in result.targets] == [
        ("c2.1", "H1", "https://2.1.example/ITI-38"),
        ("c2.4", "C1", "https://2.1.example/ITI-38"),  # partOf parent's endpoint
    ]
    assert all(t.locator == RLS.home_community_id for t in result.targets)
    assert [(r.kind, r.community.oid) for r in result.reports] == [
        (K.LOCATION_REJECTED, "1.1"),
        (K.LOCATION_NOT_QUERYABLE, "2.2"),
        (K.LOCATION_NOT_QUERYABLE, "2.3"),
        (K.LOCATION_REJECTED, "2.1"),
        (K.LOCATION_NOT_IN_DIRECTORY, "2.9"),
    ]
    assert "PatientLocationResponse 7 unusable" in result.reports[0].detail
    assert result.reports[-1].patient_id == PatientId("U1", "2.9.9")


async def test_unflagged_matches_send_nothing() -> None:
    locate = FakeLocator({})
    matches = [
        DiscoveredMatch(RLS, _match("P1", hdl=False)),
        DiscoveredMatch(
            RLS,
            MatchedPatient(
                PatientId("P2", "1.1.9"),
                RLS.home_community_id,
                health_data_locator=HealthDataLocator.NOT_HEALTH_DATA_LOCATOR,
            ),
        ),
    ]
    result = await follow_health_data_locators(matches, DIRECTORY, locate)
    assert (result.targets, result.reports, result.queried, locate.sent) == ((), (), 0, [])


async def test_not_a_locator_read_from_response_notes() -> None:
    locate = FakeLocator(
        {"P1": PatientLocationQueryResponse(notes=("code: NotHealthDataLocator",))}
    )
    result = await follow_health_data_locators(
        [DiscoveredMatch(RLS, _match("P1"))], DIRECTORY, locate
    )
    (report,) = result.reports
    assert report.kind is K.NOT_HEALTH_DATA_LOCATOR
    assert "NotHealthDataLocator" in report.detail


async def test_failures_are_reported_and_do_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    locate = FakeLocator(
        {
            "BUG": RuntimeError("boom"),
            "BAD": UnexpectedElement("expected element PatientLocationQueryResponse, found x"),
            "OK": PatientLocationQueryResponse((_at("2.1", "H1"),)),
        }
    )
    matches = [DiscoveredMatch(RLS, _match(p)) for p in ("BUG", "BAD", "OK")]
    with caplog.at_level(logging.INFO, logger="imagebridge.actors.initiating.locator"):
        result = await follow_health_data_locators(matches, DIRECTORY, locate)
    assert [t.patient_id.id for t in result.targets] == ["H1"]
    assert [r.kind for r in result.reports] == [K.PLQ_FAILED, K.PLQ_FAILED]
    assert "internal error (RuntimeError)" in result.reports[0].detail
    assert "reply unusable (UnexpectedElement)" in result.reports[1].detail
    info = [r.getMessage() for r in caplog.records if r.levelno <= logging.INFO]
    assert not any(p in m for m in info for p in ("BUG", "BAD", "OK", "H1"))  # no ids at INFO


async def test_duplicates_and_known_matches_are_not_repeated() -> None:
    locate = FakeLocator(
        {
            "P1": PatientLocationQueryResponse((_at("2.1", "H1"), _at("2.1", "H2"))),
            "P2": PatientLocationQueryResponse((_at("2.1", "H1"),)),
        }
    )
    direct = MatchedPatient(PatientId("H2", "2.1.9"), HOSPITAL.home_community_id)
    matches = [
        DiscoveredMatch(RLS, _match("P1")),
        DiscoveredMatch(RLS, _match("P1")),  # same locator and patient: asked once
        DiscoveredMatch(RLS, _match("P2")),
        DiscoveredMatch(HOSPITAL, direct),  # already found by ITI-55
    ]
    result = await follow_health_data_locators(matches, DIRECTORY, locate)
    assert sorted(locate.sent) == [("1.1", "P1"), ("1.1", "P2")]
    assert [t.patient_id.id for t in result.targets] == ["H1"]
    assert result.reports == ()


async def test_plq_goes_to_the_custodian_entry_when_it_takes_iti56() -> None:
    locate = FakeLocator({"P1": PatientLocationQueryResponse()})
    answered_by = _community("3.1", T.ITI_55)  # a gateway answering for the RLS at 1.2
    result = await follow_health_data_locators(
        [DiscoveredMatch(answered_by, _match("P1", home="1.2"))], DIRECTORY, locate
    )
    assert locate.sent == [("1.2", "P1")]
    assert [(r.kind, r.community.oid) for r in result.reports] == [(K.NO_LOCATIONS, "1.2")]


async def test_without_iti56_anywhere_the_match_is_reported() -> None:
    locate = FakeLocator({})
    answered_by = _community("3.1", T.ITI_55, T.ITI_38)
    result = await follow_health_data_locators(
        [DiscoveredMatch(answered_by, _match("P1", home=None))], DIRECTORY, locate
    )
    (report,) = result.reports
    assert (report.kind, report.community.oid) == (K.PLQ_NOT_AVAILABLE, "3.1")
    assert result.queried == 0 and locate.sent == []
