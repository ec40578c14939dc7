"""Circuit breaker per partner community, Initiating Gateway: skip a dead partner for a while.

Each homeCommunityId has its own circuit.  It starts **closed** (calls go
through).  After ``failure_threshold`` consecutive failures -- the partner was
unreachable or did not answer in time -- it **opens** for ``cool_down``
seconds, during which calls are refused without touching the network.  When
the cool-down has passed, the circuit is **half-open**: exactly one trial call
is admitted; its success closes the circuit, its failure opens it again for a
fresh cool-down.  Any answer from the partner counts as a success, a SOAP fault
included: the partner is alive, it just said no.

Defaults: 3 failures, 60 s.  Three rather than one, so that a single lost
connection does not hide a partner for a minute; sixty seconds, so that a
partner that is down costs at most one timeout per minute instead of one per
query.

The clock is injected (a callable returning monotonic seconds) so tests are
exact.  One breaker belongs to one event loop: its methods never await, so no
lock is needed there, and it is not thread-safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from imagebridge.model.ids import HomeCommunityId

log = logging.getLogger(__name__)

DEFAULT_FAILURE_THRESHOLD: Final = 3
DEFAULT_COOL_DOWN: Final = 60.0
"""Seconds an open circuit refuses calls before admitting one trial."""


class CircuitState(StrEnum):
    """The state of one partner's circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Admission:
    """The breaker's answer to "may I call this partner now?".

    ``retry_at`` (clock seconds) is set when an open circuit refuses: the
    moment it will admit a trial call.
    """

    allowed: bool
    state: CircuitState
    detail: str = ""
    retry_at: float | None = None


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    open_until: float | None = None
    trial_in_flight: bool = False


class CircuitBreaker:
    """Circuit breaker per homeCommunityId: closed, open for a cool-down, half-open trial."""

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cool_down: float = DEFAULT_COOL_DOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if not cool_down > 0:
            raise ValueError(f"cool_down must be positive, not {cool_down}")
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._circuits: dict[HomeCommunityId, _Circuit] = {}

    def state(self, community: HomeCommunityId) -> CircuitState:
        """The state *community*'s circuit is in now (open turns half-open when its time is up)."""
        circuit = self._circuits.get(community)
        if circuit is None or circuit.open_until is None:
            return CircuitState.CLOSED
        if circuit.trial_in_flight or self._clock() >= circuit.open_until:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def failures(self, community: HomeCommunityId) -> int:
        """Consecutive failures recorded for *community* since its last success."""
        circuit = self._circuits.get(community)
        return 0 if circuit is None else circuit.failures

    def admit(self, community: HomeCommunityId) -> Admission:
        """Whether a call to *community* may go out now; a half-open circuit admits one trial.

        Every admitted call must end with :meth:`record_success`,
        :meth:`record_failure` or :meth:`release`, or a half-open circuit stays
        waiting for its trial.
        """
        circuit = self._circuits.get(community)
        if circuit is None or circuit.open_until is None:
            return Admission(True, CircuitState.CLOSED)
        if circuit.trial_in_flight:
            return Admission(
                False, CircuitState.HALF_OPEN, "circuit half-open: a trial call is in flight"
            )
        now = self._clock()
        if now < circuit.open_until:
            return Admission(
                False,
                CircuitState.OPEN,
                f"circuit open until {circuit.open_until - now:.1f} s from now "
                f"(after {circuit.failures} consecutive failures)",
                retry_at=circuit.open_until,
            )
        circuit.trial_in_flight = True
        log.info("circuit of %s half-open: one trial call admitted", community)
        return Admission(True, CircuitState.HALF_OPEN, "trial call after the cool-down")

    def record_success(self, community: HomeCommunityId) -> None:
        """The partner answered (whatever it said): close its circuit."""
        circuit = self._circuits.pop(community, None)
        if circuit is not None and circuit.open_until is not None:
            log.info("circuit of %s closed: the partner answered", community)

    def record_failure(self, community: HomeCommunityId) -> None:
        """The partner was unreachable or did not answer in time."""
        circuit = self._circuits.setdefault(community, _Circuit())
        circuit.failures += 1
        if circuit.trial_in_flight:
            circuit.trial_in_flight = False
            circuit.open_until = self._clock() + self.cool_down
            log.info("circuit of %s re-opened: the trial call failed", community)
        elif circuit.open_until is None and circuit.failures >= self.failure_threshold:
            circuit.open_until = self._clock() + self.cool_down
            log.info(
                "circuit of %s opened for %.0f s after %d consecutive failures",
                community,
                self.cool_down,
                circuit.failures,
            )

    def release(self, community: HomeCommunityId) -> None:
        """An admitted call ended without a verdict (never sent, or cancelled by our side)."""
        circuit = self._circuits.get(community)
        if circuit is not None:
            circuit.trial_in_flight = False
