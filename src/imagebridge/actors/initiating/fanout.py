"""Fan-out to partner communities, Initiating Gateway: N calls in parallel under one deadline.

:func:`fan_out` runs one caller-supplied coroutine per :class:`Community`
concurrently (an anyio task group, optionally capped), bounds each call by
the community's own ``limits.timeouts.overall`` and the whole fan-out by one
overall timeout, and always returns a :class:`FanOutResult`: one
:class:`CommunityOutcome` per community, in input order, whatever happened.
Nothing a partner does makes the fan-out raise.

Statuses:

* ``OK`` -- the call returned a value; ``NO_MATCH`` -- it returned a value the
  caller's ``is_no_match`` predicate calls empty (an XCPD ``NF``, say);
* ``ERROR`` -- the partner answered with an error (SOAP fault, bad message) or
  the call failed unexpectedly; ``code`` is the spec code;
* ``TIMEOUT`` -- no answer within the community's timeout or the overall deadline;
* ``UNREACHABLE`` -- connection refused, DNS or TLS failure, connection dropped;
* ``SKIPPED`` -- the partner's circuit is open (:mod:`.breaker`); no call was made.

With a :class:`CircuitBreaker`, ``UNREACHABLE`` and ``TIMEOUT`` count as
failures and any answer (``OK``, ``NO_MATCH``, ``ERROR`` from the partner) as
a success; a call cut short by the overall deadline counts as a failure.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

import anyio
import httpx

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.errors import (
    ImageBridgeError,
    PartnerTimeout,
    PartnerUnavailable,
    SoapFaultReceived,
)
from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId

log = logging.getLogger(__name__)

T = TypeVar("T")

UNAVAILABLE_CODE = PartnerUnavailable.xds_error_code
"""``XDSUnavailableCommunity``: the code of TIMEOUT, UNREACHABLE and SKIPPED outcomes."""


class OutcomeStatus(StrEnum):
    """How the call to one community ended."""

    OK = "ok"
    NO_MATCH = "no-match"
    ERROR = "error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


ANSWERED = frozenset({OutcomeStatus.OK, OutcomeStatus.NO_MATCH, OutcomeStatus.ERROR})
"""Statuses that prove the partner is alive (a circuit-breaker success)."""
_VALUED = frozenset({OutcomeStatus.OK, OutcomeStatus.NO_MATCH})


@dataclass(frozen=True, slots=True)
class CommunityOutcome(Generic[T]):
    """The end of one community's call: status, value (OK and NO_MATCH), spec code, detail.

    ``elapsed`` is seconds from the moment the call started (0 if it never did).
    ``detail`` is for people (the exception's message); the fan-out logs it at DEBUG only.
    """

    community: Community
    status: OutcomeStatus
    value: T | None = None
    code: str | None = None
    detail: str = ""
    elapsed: float = 0.0

    @property
    def home_community_id(self) -> HomeCommunityId:
        return self.community.home_community_id

    @property
    def ok(self) -> bool:
        return self.status is OutcomeStatus.OK


@dataclass(frozen=True, slots=True)
class FanOutResult(Generic[T]):
    """Every community's outcome (input order), the overall timeout and what it took."""

    outcomes: tuple[CommunityOutcome[T], ...]
    timeout: float
    elapsed: float
    deadline_reached: bool
    """True when the overall deadline cut at least one call short."""

    def values(self) -> tuple[T, ...]:
        """The values of the OK outcomes, in input order (the merged result)."""
        return tuple(o.value for o in self.outcomes if o.ok and o.value is not None)

    def with_status(self, *statuses: OutcomeStatus) -> tuple[CommunityOutcome[T], ...]:
        """The outcomes whose status is one of *statuses*, in input order."""
        return tuple(o for o in self.outcomes if o.status in statuses)

    def counts(self) -> dict[OutcomeStatus, int]:
        """Number of outcomes per status (every status present, zero included)."""
        found = Counter(o.status for o in self.outcomes)
        return {status: found[status] for status in OutcomeStatus}


@dataclass(frozen=True, slots=True)
class Classified:
    """What an exception from a community call means: status, spec code, detail."""

    status: OutcomeStatus
    code: str | None
    detail: str
    expected: bool = True
    """False for an exception outside imagebridge's and httpx's trees (a bug, logged)."""


def _is_timeout(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, httpx.TimeoutException | TimeoutError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _error_code(exc: ImageBridgeError) -> str:
    if exc.xds_error_code is not None:
        return exc.xds_error_code
    if exc.fault_subcode is not None:
        return exc.fault_subcode.clark
    return exc.fault_code.value


def classify_exception(exc: Exception) -> Classified:
    """The outcome an exception raised by a community call stands for.

    :class:`PartnerUnavailable` (how :class:`~imagebridge.transport.client.SoapClient`
    wraps every httpx transport error) is a TIMEOUT when it is a
    :class:`PartnerTimeout` or caused by a timeout, else UNREACHABLE; a
    :class:`SoapFaultReceived` is an ERROR coded with its most specific
    subcode (else its code); any other imagebridge error is an
    ERROR with its XDS code, fault subcode or fault code.  Bare httpx errors
    (for callers that use httpx directly) map the same way; an HTTP status
    error is coded ``HTTP <status>``.  A group of one exception (a task group
    inside the call) is classified by that exception.
    """
    if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        return classify_exception(exc.exceptions[0])
    name = type(exc).__name__
    if isinstance(exc, PartnerUnavailable):
        timed_out = isinstance(exc, PartnerTimeout) or _is_timeout(exc)
        status = OutcomeStatus.TIMEOUT if timed_out else OutcomeStatus.UNREACHABLE
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
        detail = f"{exc.message} ({cause})" if cause and cause not in exc.message else exc.message
        return Classified(status, UNAVAILABLE_CODE, detail)
    if isinstance(exc, SoapFaultReceived):
        code = exc.subcodes[-1] if exc.subcodes else exc.code
        return Classified(OutcomeStatus.ERROR, code, exc.message)
    if isinstance(exc, ImageBridgeError):
        return Classified(OutcomeStatus.ERROR, _error_code(exc), f"{name}: {exc.message}")
    if isinstance(exc, httpx.HTTPStatusError):
        status_code = exc.response.status_code
        return Classified(OutcomeStatus.ERROR, f"HTTP {status_code}", f"{name}: HTTP {status_code}")
    if _is_timeout(exc):
        return Classified(OutcomeStatus.TIMEOUT, UNAVAILABLE_CODE, name)
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return Classified(OutcomeStatus.UNREACHABLE, UNAVAILABLE_CODE, name)
    return Classified(OutcomeStatus.ERROR, None, f"unexpected {name}", expected=False)


async def fan_out(
    communities: Iterable[Community],
    call: Callable[[Community], Awaitable[T]],
    *,
    timeout: float,
    is_no_match: Callable[[T], bool] | None = None,
    max_concurrency: int | None = None,
    breaker: CircuitBreaker | None = None,
) -> FanOutResult[T]:
    """Call *call* once per community, concurrently, and return every outcome by *timeout* s.

    Each call is also bounded by its community's ``limits.timeouts.overall``.
    When the overall deadline passes, unfinished calls are cancelled (and
    awaited: no task outlives this function) and reported TIMEOUT; finished
    ones keep their outcome.  *max_concurrency* caps the calls in flight (None:
    no cap).  *breaker*, if given, is asked before each call and told how it
    ended.
    """
    if not timeout > 0:  # NaN too
        raise ValueError(f"timeout must be positive, not {timeout}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
    run = _FanOut(tuple(communities), call, is_no_match, breaker, max_concurrency)
    return await run.run(timeout)


class _FanOut(Generic[T]):
    """The state of one :func:`fan_out` call."""

    def __init__(
        self,
        communities: tuple[Community, ...],
        call: Callable[[Community], Awaitable[T]],
        is_no_match: Callable[[T], bool] | None,
        breaker: CircuitBreaker | None,
        max_concurrency: int | None,
    ) -> None:
        self.communities = communities
        self.call = call
        self.is_no_match = is_no_match
        self.breaker = breaker
        self.limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self.outcomes: list[CommunityOutcome[T] | None] = [None] * len(communities)
        self.started: dict[int, float] = {}
        self.awaiting_verdict: set[int] = set()
        """Indexes admitted by the breaker whose call has not been recorded yet."""

    async def run(self, timeout: float) -> FanOutResult[T]:
        began = anyio.current_time()
        try:
            with anyio.move_on_after(timeout) as deadline:
                async with anyio.create_task_group() as tasks:
                    for index, community in enumerate(self.communities):
                        tasks.start_soon(self._one, index, community)
            ended = anyio.current_time()
            outcomes = tuple(
                self._finish(i, c, ended, timeout) for i, c in enumerate(self.outcomes)
            )
        finally:
            # Cancelled from outside: no verdict for the calls still waiting on one.
            if self.breaker is not None:
                for index in self.awaiting_verdict:
                    self.breaker.release(self.communities[index].home_community_id)
        result = FanOutResult(outcomes, timeout, ended - began, deadline.cancelled_caught)
        log.info(
            "fan-out to %d communities in %.2f s (timeout %g s%s): %s",
            len(outcomes),
            result.elapsed,
            timeout,
            ", deadline reached" if result.deadline_reached else "",
            ", ".join(f"{n} {s.value}" for s, n in result.counts().items() if n),
        )
        return result

    async def _one(self, index: int, community: Community) -> None:
        if self.breaker is not None:
            admission = self.breaker.admit(community.home_community_id)
            if not admission.allowed:
                self._set(
                    index,
                    CommunityOutcome(
                        community, OutcomeStatus.SKIPPED, None, UNAVAILABLE_CODE, admission.detail
                    ),
                )
                return
            self.awaiting_verdict.add(index)
        if self.limiter is None:
            await self._attempt(index, community)
        else:
            async with self.limiter:
                await self._attempt(index, community)

    async def _attempt(self, index: int, community: Community) -> None:
        start = self.started[index] = anyio.current_time()
        limit = community.limits.timeouts.overall
        outcome: CommunityOutcome[T] | None = None
        with anyio.move_on_after(limit) as own:
            try:
                value = await self.call(community)
                outcome = self._answered(community, value, anyio.current_time() - start)
            except Exception as exc:
                outcome = self._failed(community, exc, anyio.current_time() - start)
        if own.cancelled_caught or (
            own.cancel_called and outcome is not None and outcome.status not in _VALUED
        ):
            outcome = CommunityOutcome(
                community,
                OutcomeStatus.TIMEOUT,
                None,
                UNAVAILABLE_CODE,
                f"no answer within the partner's overall timeout of {limit:g} s",
                anyio.current_time() - start,
            )
        if outcome is not None:
            self._set(index, outcome)

    def _answered(self, community: Community, value: T, elapsed: float) -> CommunityOutcome[T]:
        if self.is_no_match is not None and self.is_no_match(value):
            return CommunityOutcome(community, OutcomeStatus.NO_MATCH, value, elapsed=elapsed)
        return CommunityOutcome(community, OutcomeStatus.OK, value, elapsed=elapsed)

    def _failed(self, community: Community, exc: Exception, elapsed: float) -> CommunityOutcome[T]:
        found = classify_exception(exc)
        if not found.expected:
            log.warning(
                "fan-out: unexpected %s from the call to %s (%s)",
                type(exc).__name__,
                community.home_community_id,
                community.name,
                exc_info=exc,
            )
        return CommunityOutcome(community, found.status, None, found.code, found.detail, elapsed)

    def _set(self, index: int, outcome: CommunityOutcome[T]) -> None:
        self.outcomes[index] = outcome
        community = outcome.community
        log.debug(
            "fan-out: %s (%s) %s %s in %.3f s %s",
            community.home_community_id,
            community.name,
            outcome.status.value,
            outcome.code or "",
            outcome.elapsed,
            outcome.detail,
        )
        self._verdict(index, outcome.status)

    def _verdict(self, index: int, status: OutcomeStatus, *, started: bool = True) -> None:
        if self.breaker is None or index not in self.awaiting_verdict:
            return
        self.awaiting_verdict.discard(index)
        hcid = self.communities[index].home_community_id
        if not started:
            self.breaker.release(hcid)
        elif status in ANSWERED:
            self.breaker.record_success(hcid)
        else:
            self.breaker.record_failure(hcid)

    def _finish(
        self, index: int, outcome: CommunityOutcome[T] | None, ended: float, timeout: float
    ) -> CommunityOutcome[T]:
        if outcome is not None:
            return outcome
        community = self.communities[index]
        start = self.started.get(index)
        if start is None:
            detail = f"not started before the overall deadline of {timeout:g} s"
        else:
            detail = f"no answer before the overall deadline of {timeout:g} s"
        late: CommunityOutcome[T] = CommunityOutcome(
            community,
            OutcomeStatus.TIMEOUT,
            None,
            UNAVAILABLE_CODE,
            detail,
            0.0 if start is None else ended - start,
        )
        log.debug("fan-out: %s (%s) %s", community.home_community_id, community.name, detail)
        self._verdict(index, OutcomeStatus.TIMEOUT, started=start is not None)
        return late
