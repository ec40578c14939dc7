"""Patient Location Query [ITI-56], Initiating Gateway: following Health Data Locators.

Guide 8.6.1 (Required): an ITI-55 match flagged ``SupportsHealthDataLocator``
must be processed.  For each such match this module asks the locator, with a
synchronous Patient Location Query (asynchronous PLQ is not permitted), where
else the patient has data, and turns the answer into

* follow-up **targets** for XCA (a community from the directory with an ITI-38
  endpoint, and the patient id valid there), and
* **reports** for everything else: a location not in the directory, the three
  Carequality flows (no locations, not a locator for this patient, the locator
  failed: SOAP fault, timeout, unreachable, unusable reply) and a locator that
  offers no ITI-56 endpoint.

Nothing here raises for a partner's behaviour; the HDL match itself stays
usable for ITI-38 whatever happens.  Patient identifiers are logged at DEBUG
only.

The exact signal for "not a health data locator for this patient" is defined
in the XCPD HDL supplement, which the spec digest did not review (UNCONFIRMED):
it is read leniently from a SOAP fault's reason or subcodes, or from elements
of an empty response that say so (see
:func:`~imagebridge.model.patient_location.says_not_health_data_locator`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import anyio
import httpx

from imagebridge.errors import (
    ImageBridgeError,
    PartnerTimeout,
    PartnerUnavailable,
    SoapFaultReceived,
)
from imagebridge.model.directory import (
    Community,
    CommunityEndpoint,
    DirectorySnapshot,
    Timeouts,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.patient_location import (
    PatientLocationQueryRequest,
    PatientLocationQueryResponse,
    says_not_health_data_locator,
)
from imagebridge.model.xcpd import HealthDataLocator, MatchedPatient
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.xcpd_location import (
    parse_patient_location_query_response,
    render_patient_location_query_request,
)

log = logging.getLogger(__name__)

LocateFn = Callable[
    [Community, PatientLocationQueryRequest], Awaitable[PatientLocationQueryResponse]
]
"""Sends one PLQ to a community's ITI-56 endpoint (e.g. ``PartnerClient.locate``)."""

_MAX_DETAIL = 300


class AnsweredMatch(Protocol):
    """A matched patient and the community whose ITI-55 answer carried it.

    The workflow's ``PatientMatch`` fits as it is; :class:`DiscoveredMatch` is a plain one.
    """

    @property
    def community(self) -> Community: ...

    @property
    def patient(self) -> MatchedPatient: ...


@dataclass(frozen=True, slots=True)
class DiscoveredMatch:
    """An :class:`AnsweredMatch` for callers that hold the two values separately."""

    community: Community
    patient: MatchedPatient


class LocatorReportKind(StrEnum):
    """Why a Health Data Locator match did not (fully) turn into follow-up targets."""

    PLQ_NOT_AVAILABLE = "plq-not-available"
    """HDL flagged; Patient Location Query not available (no ITI-56 endpoint)."""
    NO_LOCATIONS = "no-locations"
    """The locator answered with no location (Carequality flow: PLQ returns none)."""
    NOT_HEALTH_DATA_LOCATOR = "not-health-data-locator"
    """The locator said it is not a health data locator for this patient."""
    PLQ_FAILED = "plq-failed"
    """The locator could not answer: SOAP fault, timeout, unreachable or unusable reply."""
    LOCATION_NOT_IN_DIRECTORY = "location-not-in-directory"
    """A location names a community the directory does not know."""
    LOCATION_NOT_QUERYABLE = "location-not-queryable"
    """A location's community is known but has no active ITI-38 endpoint."""
    LOCATION_REJECTED = "location-rejected"
    """A location entry was unreadable, or answered for another patient than asked."""


@dataclass(frozen=True, slots=True)
class FollowUpTarget:
    """A community to query with ITI-38 for the patient, as a Health Data Locator said."""

    community: Community
    patient_id: PatientId
    """The CorrespondingPatientId: the id to send to this community."""
    locator: HomeCommunityId
    """The Health Data Locator that named this location."""
    query_endpoint: CommunityEndpoint
    """The ITI-38 endpoint to use (the community's own, else its nearest ``partOf`` parent's)."""


@dataclass(frozen=True, slots=True)
class LocatorReport:
    """Something to tell the user about a Health Data Locator.

    ``detail`` is for the user and may quote the partner; it is never logged
    above DEBUG.  ``community`` is the locator for the PLQ flows and the named community for
    the ``LOCATION_*`` kinds (then ``locator`` says who named it and
    ``patient_id`` the id given there, so a user can follow it up by hand).
    """

    community: HomeCommunityId
    kind: LocatorReportKind
    detail: str
    locator: HomeCommunityId | None = None
    patient_id: PatientId | None = None


@dataclass(frozen=True, slots=True)
class HealthDataLocatorResult:
    """Every follow-up target (first occurrence wins) and every report, in input order."""

    targets: tuple[FollowUpTarget, ...] = ()
    reports: tuple[LocatorReport, ...] = ()
    queried: int = 0
    """How many Patient Location Queries were sent."""


async def query_patient_locations(
    soap: SoapClient,
    url: str,
    request: PatientLocationQueryRequest,
    *,
    timeouts: Timeouts,
) -> PatientLocationQueryResponse:
    """Patient Location Query [ITI-56], Initiating Gateway: one synchronous PLQ, its answer.

    Bounded like every partner exchange: connect and idle-read timeouts on the
    HTTP exchange, *timeouts.overall* on the whole.  Raises
    :class:`PartnerTimeout`, :class:`PartnerUnavailable`,
    :class:`SoapFaultReceived` or a wire error for an unusable reply.
    """
    spec = spec_of(Transaction.ITI_56)
    http_timeout = httpx.Timeout(
        connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.connect
    )
    payload = render_patient_location_query_request(request)
    try:
        with anyio.fail_after(timeouts.overall):
            reply = await soap.call(spec, url, payload, timeout=http_timeout)
    except TimeoutError as exc:
        raise PartnerTimeout(
            f"{spec.code} to {url} took longer than {timeouts.overall:g} s"
        ) from exc
    with reply:
        return parse_patient_location_query_response(reply.payload)


def soap_locator(soap_for: Callable[[Community], SoapClient]) -> LocateFn:
    """A :data:`LocateFn` over SOAP: *soap_for* picks the client (TLS settings) per community.

    With ``PartnerClients``: ``soap_locator(lambda c: clients.soap_for(c.tls))``.
    """

    async def locate(
        community: Community, request: PatientLocationQueryRequest
    ) -> PatientLocationQueryResponse:
        url = community.url(Transaction.ITI_56)
        if url is None:
            raise PartnerUnavailable(
                f"community {community.home_community_id.oid} has no active ITI-56 endpoint"
            )
        return await query_patient_locations(
            soap_for(community), url, request, timeouts=community.limits.timeouts
        )

    return locate


async def follow_health_data_locators(
    matches: Iterable[AnsweredMatch],
    directory: DirectorySnapshot,
    locate: LocateFn,
) -> HealthDataLocatorResult:
    """Health Data Locator handling (guide 8.6.1) for the matches of one ITI-55 fan-out.

    Matches not flagged ``SupportsHealthDataLocator`` are skipped.  A flagged
    one is asked at the ITI-56 endpoint of the directory entry for its
    homeCommunityId, else of the community that answered; the queries run
    concurrently (one per locator and patient id).  A location already among
    *matches* (same community and patient id) is not repeated as a target.
    Never raises for a partner's failure.
    """
    pairs = [(m.community, m.patient) for m in matches]
    jobs: list[tuple[Community, PatientLocationQueryRequest]] = []
    plan: list[LocatorReport | int] = []  # a report made now, or the index of a PLQ job
    seen: set[tuple[HomeCommunityId, PatientId]] = set()
    for answered, match in pairs:
        if match.health_data_locator is not HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR:
            continue
        community = _locator_of(answered, match, directory)
        key = (community.home_community_id, match.patient_id)
        if key in seen:
            continue
        seen.add(key)
        if community.url(Transaction.ITI_56) is None:
            plan.append(_plq_not_available(community))
            continue
        plan.append(len(jobs))
        jobs.append((community, PatientLocationQueryRequest.for_patient(match.patient_id)))

    answers: list[tuple[list[FollowUpTarget], list[LocatorReport]]] = [([], []) for _ in jobs]

    async def run(index: int) -> None:
        community, request = jobs[index]
        answers[index] = await _locate_one(community, request, directory, locate)

    async with anyio.create_task_group() as tg:
        for index in range(len(jobs)):
            tg.start_soon(run, index)

    targets: list[FollowUpTarget] = []
    reports: list[LocatorReport] = []
    taken = {(c.home_community_id, m.patient_id) for c, m in pairs}
    for step in plan:
        if isinstance(step, LocatorReport):
            reports.append(step)
            continue
        found, said = answers[step]
        for target in found:
            key = (target.community.home_community_id, target.patient_id)
            if key not in taken:
                taken.add(key)
                targets.append(target)
        reports.extend(said)
    return HealthDataLocatorResult(tuple(targets), tuple(reports), queried=len(jobs))


def _locator_of(
    answered: Community, match: MatchedPatient, directory: DirectorySnapshot
) -> Community:
    """The PLQ goes to the custodian's directory entry if it takes ITI-56, else *answered*."""
    custodian = match.home_community_id
    if custodian is not None and custodian != answered.home_community_id:
        entry = directory.get(custodian)
        if entry is not None and entry.url(Transaction.ITI_56) is not None:
            return entry
    return answered


def _plq_not_available(community: Community) -> LocatorReport:
    log.info(
        "HDL flagged by %s; Patient Location Query not available",
        community.home_community_id.oid,
    )
    return LocatorReport(
        community.home_community_id,
        LocatorReportKind.PLQ_NOT_AVAILABLE,
        "HDL flagged; Patient Location Query not available",
    )


async def _locate_one(
    community: Community,
    request: PatientLocationQueryRequest,
    directory: DirectorySnapshot,
    locate: LocateFn,
) -> tuple[list[FollowUpTarget], list[LocatorReport]]:
    hcid = community.home_community_id
    try:
        response = await locate(community, request)
    except ImageBridgeError as exc:
        return [], [_failure_report(hcid, exc)]
    except Exception as exc:  # a bug must not sink the other locators
        log.exception("ITI-56 to %s failed unexpectedly", hcid.oid)
        detail = f"Patient Location Query failed: internal error ({type(exc).__name__})"
        return [], [LocatorReport(hcid, LocatorReportKind.PLQ_FAILED, detail)]
    log.info(
        "ITI-56 from %s: %d location(s), %d rejected",
        hcid.oid,
        len(response.locations),
        len(response.rejected),
    )
    return _read_response(hcid, request, response, directory)


def _failure_report(hcid: HomeCommunityId, exc: ImageBridgeError) -> LocatorReport:
    if isinstance(exc, SoapFaultReceived):
        said = " ".join((exc.message, *exc.subcodes))
        if says_not_health_data_locator(said):
            kind = LocatorReportKind.NOT_HEALTH_DATA_LOCATOR
            detail = f"not a health data locator for this patient (SOAP fault: {exc.message})"
        else:
            kind = LocatorReportKind.PLQ_FAILED
            detail = f"Patient Location Query failed: SOAP fault {exc.code}: {exc.message}"
    elif isinstance(exc, PartnerTimeout):
        kind, detail = LocatorReportKind.PLQ_FAILED, f"Patient Location Query timed out: {exc}"
    elif isinstance(exc, PartnerUnavailable):
        kind, detail = LocatorReportKind.PLQ_FAILED, f"locator unreachable: {exc.message}"
    else:
        kind = LocatorReportKind.PLQ_FAILED
        detail = f"Patient Location Query reply unusable ({type(exc).__name__}): {exc.message}"
    log.warning("ITI-56 to %s: %s (%s)", hcid.oid, kind.value, type(exc).__name__)
    log.debug("ITI-56 to %s: %s", hcid.oid, exc.message)
    return LocatorReport(hcid, kind, _clip(detail))


def _read_response(
    hcid: HomeCommunityId,
    request: PatientLocationQueryRequest,
    response: PatientLocationQueryResponse,
    directory: DirectorySnapshot,
) -> tuple[list[FollowUpTarget], list[LocatorReport]]:
    said = "; ".join(response.notes)
    if response.says_not_health_data_locator:
        detail = f"not a health data locator for this patient ({said})"
        return [], [LocatorReport(hcid, LocatorReportKind.NOT_HEALTH_DATA_LOCATOR, _clip(detail))]
    reports = [
        LocatorReport(
            hcid,
            LocatorReportKind.LOCATION_REJECTED,
            _clip(f"PatientLocationResponse {r.index + 1} unusable: {r.reason}"),
            locator=hcid,
        )
        for r in response.rejected
    ]
    if not response.locations:
        if not response.rejected:
            detail = f"no locations ({said})" if said else "no locations"
            reports.append(LocatorReport(hcid, LocatorReportKind.NO_LOCATIONS, _clip(detail)))
        return [], reports
    targets: list[FollowUpTarget] = []
    for location in response.locations:
        named = location.home_community_id
        if not location.answers(request):
            log.warning("ITI-56 from %s: a location answers for another patient", hcid.oid)
            reports.append(
                LocatorReport(
                    named,
                    LocatorReportKind.LOCATION_REJECTED,
                    "the location names another RequestedPatientId than the one asked for",
                    locator=hcid,
                )
            )
            continue
        target, report = _resolve(hcid, named, location.patient_id, directory)
        if target is not None:
            targets.append(target)
        if report is not None:
            reports.append(report)
    return targets, reports


def _resolve(
    locator: HomeCommunityId,
    named: HomeCommunityId,
    patient_id: PatientId,
    directory: DirectorySnapshot,
) -> tuple[FollowUpTarget | None, LocatorReport | None]:
    community = directory.get(named)
    if community is None:
        log.info("ITI-56 from %s names %s, not in the directory", locator.oid, named.oid)
        detail = f"location {named.oid} (named by locator {locator.oid}) is not in the directory"
        kind = LocatorReportKind.LOCATION_NOT_IN_DIRECTORY
        return None, LocatorReport(named, kind, detail, locator=locator, patient_id=patient_id)
    endpoint = directory.endpoint_for(named, Transaction.ITI_38)
    if endpoint is None:
        detail = f"location {named.oid} is in the directory but has no active ITI-38 endpoint"
        kind = LocatorReportKind.LOCATION_NOT_QUERYABLE
        return None, LocatorReport(named, kind, detail, locator=locator, patient_id=patient_id)
    log.debug("ITI-56 from %s: follow %s with %s", locator.oid, named.oid, patient_id.cx)
    return FollowUpTarget(community, patient_id, locator, endpoint), None


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 1] + "…"


__all__ = [
    "AnsweredMatch",
    "DiscoveredMatch",
    "FollowUpTarget",
    "HealthDataLocatorResult",
    "LocateFn",
    "LocatorReport",
    "LocatorReportKind",
    "follow_health_data_locators",
    "query_patient_locations",
    "soap_locator",
]
