"""Fan-out to partner communities and the circuit breaker: logic with fake calls and clocks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio
import httpx
import pytest

from imagebridge.actors.initiating.breaker import CircuitBreaker, CircuitState
from imagebridge.actors.initiating.fanout import (
    CommunityOutcome,
    OutcomeStatus,
    classify_exception,
    fan_out,
)
from imagebridge.errors import (
    ActionNotSupported,
    PartnerTimeout,
    PartnerUnavailable,
    SoapFaultReceived,
    SoapNotEnvelope,
    UnknownCommunity,
)
from imagebridge.model.directory import Community, PartnerLimits, Timeouts
from imagebridge.model.ids import HomeCommunityId

pytestmark = pytest.mark.anyio

S = OutcomeStatus
UNAVAILABLE = "XDSUnavailableCommunity"
WSA_ACTION = "{http://www.w3.org/2005/08/addressing}ActionNotSupported"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def community(n: int, overall: float = 120.0) -> Community:
    return Community(
        HomeCommunityId(f"1.2.3.{n}"),
        f"Community {n}",
        limits=PartnerLimits(timeouts=Timeouts(overall=overall)),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _unavailable(cause: Exception) -> PartnerUnavailable:
    try:
        raise PartnerUnavailable("ITI-55 to http://partner failed") from cause
    except PartnerUnavailable as exc:
        return exc


Behaviour = Callable[[], Awaitable[str]]


def returns(value: str, after: float = 0.0) -> Behaviour:
    async def run() -> str:
        await anyio.sleep(after)
        return value

    return run


def raises(exc: Exception, after: float = 0.0) -> Behaviour:
    async def run() -> str:
        await anyio.sleep(after)
        raise exc

    return run


def hangs(cancelled: set[int] | None = None, n: int = 0) -> Behaviour:
    async def run() -> str:
        try:
            await anyio.sleep_forever()
        finally:
            if cancelled is not None:
                cancelled.add(n)
        return "never"

    return run


def caller(
    behaviours: dict[HomeCommunityId, Behaviour], calls: list[HomeCommunityId] | None = None
) -> Callable[[Community], Awaitable[str]]:
    async def call(c: Community) -> str:
        if calls is not None:
            calls.append(c.home_community_id)
        return await behaviours[c.home_community_id]()

    return call


def _empty(value: str) -> bool:
    return value == ""


async def test_every_status_in_input_order(caplog: pytest.LogCaptureFixture) -> None:
    fault = SoapFaultReceived("ITI-55 fault", "Sender", (WSA_ACTION,))
    plans = [
        returns("alice", after=0.05),  # finishes last among the answers
        returns(""),
        raises(fault),
        raises(_unavailable(httpx.ConnectError("refused"))),
        raises(_unavailable(httpx.ReadTimeout("slow"))),
        raises(UnknownCommunity("not served here")),
        raises(ValueError("a bug in the caller")),
        returns("bob", after=0.01),
    ]
    communities = [community(i) for i in range(len(plans))]
    behaviours = {c.home_community_id: p for c, p in zip(communities, plans, strict=True)}
    with caplog.at_level(logging.WARNING, logger="imagebridge.actors.initiating.fanout"):
        result = await fan_out(communities, caller(behaviours), timeout=30, is_no_match=_empty)
    assert [o.community for o in result.outcomes] == communities
    assert [o.status for o in result.outcomes] == [
        S.OK,
        S.NO_MATCH,
        S.ERROR,
        S.UNREACHABLE,
        S.TIMEOUT,
        S.ERROR,
        S.ERROR,
        S.OK,
    ]
    assert [o.code for o in result.outcomes] == [
        None,
        None,
        WSA_ACTION,
        UNAVAILABLE,
        UNAVAILABLE,
        "XDSUnknownCommunity",
        None,
        None,
    ]
    assert result.values() == ("alice", "bob")
    assert result.outcomes[1].value == ""  # a no-match keeps its value
    assert "ConnectError" in result.outcomes[3].detail
    assert "unexpected ValueError" in result.outcomes[6].detail
    assert not result.deadline_reached
    assert result.counts() == {
        S.OK: 2,
        S.NO_MATCH: 1,
        S.ERROR: 3,
        S.TIMEOUT: 1,
        S.UNREACHABLE: 1,
        S.SKIPPED: 0,
    }
    assert [o.home_community_id for o in result.with_status(S.ERROR)] == [
        communities[2].home_community_id,
        communities[5].home_community_id,
        communities[6].home_community_id,
    ]
    assert all(o.elapsed >= 0 for o in result.outcomes)
    # Only the unexpected exception is logged at WARNING, with its traceback.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is not None
    assert "1.2.3.6" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (_unavailable(httpx.ConnectError("refused")), S.UNREACHABLE, UNAVAILABLE),
        (_unavailable(httpx.ConnectTimeout("syn lost")), S.TIMEOUT, UNAVAILABLE),
        (_unavailable(httpx.ReadTimeout("read")), S.TIMEOUT, UNAVAILABLE),
        (_unavailable(httpx.RemoteProtocolError("closed")), S.UNREACHABLE, UNAVAILABLE),
        (PartnerUnavailable("no cause"), S.UNREACHABLE, UNAVAILABLE),
        (PartnerTimeout("overall timer"), S.TIMEOUT, UNAVAILABLE),
        (httpx.PoolTimeout("pool"), S.TIMEOUT, UNAVAILABLE),
        (httpx.ConnectError("refused"), S.UNREACHABLE, UNAVAILABLE),
        (ConnectionRefusedError(), S.UNREACHABLE, UNAVAILABLE),
        (TimeoutError(), S.TIMEOUT, UNAVAILABLE),
        (SoapFaultReceived("fault", "Receiver", ()), S.ERROR, "Receiver"),
        (ActionNotSupported("no"), S.ERROR, WSA_ACTION),
        (SoapNotEnvelope("junk"), S.ERROR, "Sender"),
        (ExceptionGroup("one", [httpx.ReadTimeout("read")]), S.TIMEOUT, UNAVAILABLE),
        (RuntimeError("bug"), S.ERROR, None),
    ],
)
def test_classify_exception(exc: Exception, status: OutcomeStatus, code: str | None) -> None:
    found = classify_exception(exc)
    assert (found.status, found.code) == (status, code)
    assert found.expected is not isinstance(exc, RuntimeError)


def test_classify_http_status_error() -> None:
    request = httpx.Request("POST", "http://partner/xcpd")
    response = httpx.Response(503, request=request)
    exc = httpx.HTTPStatusError("unavailable", request=request, response=response)
    found = classify_exception(exc)
    assert (found.status, found.code) == (S.ERROR, "HTTP 503")


async def test_deadline_returns_finished_outcomes_and_times_out_the_rest() -> None:
    cancelled: set[int] = set()
    communities = [community(i) for i in range(4)]
    plans = [
        returns("a"),
        hangs(cancelled, 1),
        raises(SoapFaultReceived("f", "Sender", ())),
        hangs(cancelled, 3),
    ]
    behaviours = {c.home_community_id: p for c, p in zip(communities, plans, strict=True)}
    result = await fan_out(communities, caller(behaviours), timeout=0.5)
    assert [o.status for o in result.outcomes] == [S.OK, S.TIMEOUT, S.ERROR, S.TIMEOUT]
    assert result.deadline_reached
    assert result.values() == ("a",)
    late = result.outcomes[1]
    assert late.code == UNAVAILABLE
    assert "overall deadline of 0.5 s" in late.detail and "no answer" in late.detail
    assert late.elapsed > 0
    assert cancelled == {1, 3}  # the hanging calls were cancelled before fan_out returned
    assert result.elapsed < 10  # coarse: it stopped at the deadline, not at the hang


async def test_community_overall_timeout_bounds_its_own_call() -> None:
    quick, slow = community(1, overall=0.05), community(2)
    behaviours = {quick.home_community_id: hangs(), slow.home_community_id: returns("b", 0.1)}
    result = await fan_out([quick, slow], caller(behaviours), timeout=30)
    first, second = result.outcomes
    assert first.status is S.TIMEOUT and first.code == UNAVAILABLE
    assert "partner's overall timeout of 0.05 s" in first.detail
    assert second.status is S.OK
    assert not result.deadline_reached


async def test_no_task_outlives_the_fan_out() -> None:
    before = asyncio.all_tasks()
    cancelled: set[int] = set()
    communities = [community(i) for i in range(20)]
    behaviours = {
        c.home_community_id: hangs(cancelled, i) if i % 2 else returns(str(i))
        for i, c in enumerate(communities)
    }
    result = await fan_out(communities, caller(behaviours), timeout=0.5, max_concurrency=15)
    assert cancelled == {i for i in range(20) if i % 2}
    assert asyncio.all_tasks() == before
    assert result.counts()[S.OK] == 10 and result.counts()[S.TIMEOUT] == 10


async def test_cancelled_from_outside_leaves_no_task_and_frees_the_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=10, clock=clock)
    target = community(1)
    breaker.record_failure(target.home_community_id)
    clock.now += 10
    before = asyncio.all_tasks()
    cancelled: set[int] = set()
    behaviours = {target.home_community_id: hangs(cancelled, 1)}
    with anyio.move_on_after(0.1) as outer:
        await fan_out([target], caller(behaviours), timeout=30, breaker=breaker)
    assert outer.cancelled_caught
    assert cancelled == {1}
    assert asyncio.all_tasks() == before
    # The trial was never judged, so the next caller gets one.
    assert breaker.admit(target.home_community_id).allowed


async def test_concurrency_cap() -> None:
    in_flight = peak = 0

    async def call(c: Community) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return c.name

    communities = [community(i) for i in range(12)]
    result = await fan_out(communities, call, timeout=30, max_concurrency=3)
    assert peak == 3
    assert result.values() == tuple(c.name for c in communities)


async def test_calls_still_queued_at_the_deadline_are_reported_not_started() -> None:
    communities = [community(i) for i in range(3)]
    behaviours = {c.home_community_id: hangs() for c in communities}
    result = await fan_out(communities, caller(behaviours), timeout=0.1, max_concurrency=1)
    assert [o.status for o in result.outcomes] == [S.TIMEOUT] * 3
    details = [o.detail for o in result.outcomes]
    assert details[0].startswith("no answer before the overall deadline")
    assert all(d.startswith("not started before the overall deadline") for d in details[1:])
    assert [o.elapsed for o in result.outcomes][1:] == [0.0, 0.0]


async def test_empty_and_invalid_arguments() -> None:
    empty = await fan_out([], caller({}), timeout=1)
    assert empty.outcomes == () and not empty.deadline_reached
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            await fan_out([community(1)], caller({}), timeout=bad)
    with pytest.raises(ValueError, match="max_concurrency"):
        await fan_out([community(1)], caller({}), timeout=1, max_concurrency=0)


# --- circuit breaker --------------------------------------------------------------------------


HCID = HomeCommunityId("1.2.3.99")


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down=60, clock=clock)
    breaker.record_failure(HCID)
    breaker.record_failure(HCID)
    breaker.record_success(HCID)  # resets the count
    assert breaker.failures(HCID) == 0
    for _ in range(2):
        breaker.record_failure(HCID)
    assert breaker.state(HCID) is CircuitState.CLOSED and breaker.admit(HCID).allowed
    breaker.record_failure(HCID)
    assert breaker.state(HCID) is CircuitState.OPEN
    refused = breaker.admit(HCID)
    assert not refused.allowed and refused.state is CircuitState.OPEN
    assert refused.retry_at == clock.now + 60
    assert refused.detail == "circuit open until 60.0 s from now (after 3 consecutive failures)"
    clock.now += 59.9
    assert not breaker.admit(HCID).allowed


def test_breaker_half_open_admits_one_trial_and_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=60, clock=clock)
    breaker.record_failure(HCID)
    clock.now += 60
    assert breaker.state(HCID) is CircuitState.HALF_OPEN
    trial = breaker.admit(HCID)
    assert trial.allowed and trial.state is CircuitState.HALF_OPEN
    second = breaker.admit(HCID)
    assert not second.allowed and second.detail.startswith("circuit half-open")
    breaker.record_success(HCID)
    assert breaker.state(HCID) is CircuitState.CLOSED
    assert breaker.admit(HCID).allowed and breaker.failures(HCID) == 0


def test_breaker_failed_trial_reopens_for_a_fresh_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=30, clock=clock)
    breaker.record_failure(HCID)
    breaker.record_failure(HCID)
    clock.now += 45
    assert breaker.admit(HCID).allowed
    breaker.record_failure(HCID)
    assert breaker.state(HCID) is CircuitState.OPEN
    assert breaker.admit(HCID).retry_at == clock.now + 30
    clock.now += 30
    assert breaker.admit(HCID).allowed


def test_breaker_release_frees_the_trial_and_circuits_are_per_community() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=5, clock=clock)
    breaker.record_failure(HCID)
    assert breaker.admit(HomeCommunityId("1.2.3.100")).allowed
    clock.now += 5
    assert breaker.admit(HCID).allowed
    assert not breaker.admit(HCID).allowed
    breaker.release(HCID)
    assert breaker.admit(HCID).allowed


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cool_down"):
        CircuitBreaker(cool_down=0)


async def test_fan_out_skips_an_open_circuit_then_tries_again_after_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down=60, clock=clock)
    dead, alive, faulty = community(1), community(2), community(3)
    calls: list[HomeCommunityId] = []
    behaviours: dict[HomeCommunityId, Behaviour] = {
        dead.home_community_id: raises(_unavailable(httpx.ConnectError("refused"))),
        alive.home_community_id: returns("ok"),
        faulty.home_community_id: raises(SoapFaultReceived("f", "Receiver", ())),
    }
    call = caller(behaviours, calls)
    for _ in range(3):
        result = await fan_out([dead, alive, faulty], call, timeout=30, breaker=breaker)
        assert [o.status for o in result.outcomes] == [S.UNREACHABLE, S.OK, S.ERROR]
    assert breaker.state(dead.home_community_id) is CircuitState.OPEN
    # A partner that answers with a fault is alive: its circuit stays closed.
    assert breaker.state(faulty.home_community_id) is CircuitState.CLOSED
    calls.clear()
    result = await fan_out([dead, alive], call, timeout=30, breaker=breaker)
    skipped = result.outcomes[0]
    assert skipped.status is S.SKIPPED and skipped.code == UNAVAILABLE
    assert skipped.detail.startswith("circuit open until 60.0 s from now")
    assert calls == [alive.home_community_id]  # no call went to the dead partner
    clock.now += 60
    behaviours[dead.home_community_id] = returns("back")
    result = await fan_out([dead], call, timeout=30, breaker=breaker)
    assert result.outcomes[0].status is S.OK
    assert breaker.state(dead.home_community_id) is CircuitState.CLOSED


async def test_deadline_cut_counts_as_a_failure_and_queued_calls_do_not() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=60, clock=clock)
    started, queued = community(1), community(2)
    behaviours = {started.home_community_id: hangs(), queued.home_community_id: hangs()}
    result = await fan_out(
        [started, queued], caller(behaviours), timeout=0.1, max_concurrency=1, breaker=breaker
    )
    assert [o.status for o in result.outcomes] == [S.TIMEOUT, S.TIMEOUT]
    assert breaker.state(started.home_community_id) is CircuitState.OPEN
    assert breaker.state(queued.home_community_id) is CircuitState.CLOSED
    assert breaker.failures(queued.home_community_id) == 0


def test_outcome_accessors() -> None:
    c = community(7)
    outcome: CommunityOutcome[str] = CommunityOutcome(c, S.OK, "v")
    assert outcome.ok and outcome.home_community_id == c.home_community_id
    no_match: CommunityOutcome[str] = CommunityOutcome(c, S.NO_MATCH, "")
    assert not no_match.ok
