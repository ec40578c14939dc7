"""Patient Location Query [ITI-56], Initiating Gateway: Health Data Locators over real HTTP.

The partner is a Health Data Locator we do not otherwise implement: our own
SOAP server (uvicorn on a loopback port) with an ITI-56 handler written with
our codec.  What it answers depends on the requested patient id, so one
server covers every Carequality flow (guide 8.6.1, digest 6.5): locations
returned, no locations, not a locator for this patient, internal failure
(SOAP fault), a hang beyond the read timeout, and an unreachable locator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from imagebridge.actors.initiating.locator import (
    DiscoveredMatch,
    FollowUpTarget,
    HealthDataLocatorResult,
    LocatorReport,
    LocatorReportKind,
    follow_health_data_locators,
    soap_locator,
)
from imagebridge.directory.static import communities_from_config
from imagebridge.errors import ImageBridgeError
from imagebridge.model.directory import Community, DirectorySnapshot
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.patient_location import (
    PatientLocationQueryResponse,
    PatientLocationResponse,
)
from imagebridge.model.xcpd import II, HealthDataLocator, MatchedPatient
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.transport.server import SoapEndpoint, soap_app
from imagebridge.wire.xcpd_location import (
    parse_patient_location_query_request,
    render_patient_location_query_response,
)
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

RLS = HomeCommunityId("1.2.3.100")
KNOWN = HomeCommunityId("1.2.3.200")
UNKNOWN = HomeCommunityId("1.2.3.999")
AUTHORITY = "1.2.3.100.1"
READ_TIMEOUT = 0.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LocatorDown(ImageBridgeError):
    """The HDL's own failure: answered as a Receiver fault."""


class NotALocator(ImageBridgeError):
    """The HDL does not locate this patient: answered as a fault saying so."""


@dataclass
class HdlPartner:
    """The ITI-56 side of a record locator service; remembers what it was asked."""

    requests: list[tuple[str, PatientId]] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)

    async def locate(self, request: SoapRequest) -> SoapReply:
        query = parse_patient_location_query_request(request.payload)
        self.requests.append((request.addressing.action, query.patient_id))
        asked = query.requested_patient_id
        locations: tuple[PatientLocationResponse, ...] = ()
        match query.patient_id.id:
            case "P-LOC":
                locations = (
                    PatientLocationResponse(KNOWN, II("1.2.3.200.1", "K-77"), asked),
                    PatientLocationResponse(UNKNOWN, II("1.2.3.999.1", "U-5"), asked),
                )
            case "P-EMPTY":
                pass
            case "P-FAULT":
                raise LocatorDown("InternalError: patient index offline")
            case "P-NOT-HDL":
                raise NotALocator("NotHealthDataLocator: not a locator for this patient")
            case "P-HANG":
                with anyio.fail_after(10):  # released by the test once its client gave up
                    await self.release.wait()
            case other:
                raise AssertionError(f"unexpected patient {other}")
        reply = PatientLocationQueryResponse(locations)
        return SoapReply(render_patient_location_query_response(reply))


@pytest.fixture
async def partner() -> AsyncIterator[tuple[HdlPartner, str]]:
    hdl = HdlPartner()
    app = soap_app([SoapEndpoint("/plq", {Transaction.ITI_56: hdl.locate})])
    async with running_server(app) as base:
        try:
            yield hdl, base
        finally:
            hdl.release.set()


def _directory(plq_url: str | None) -> DirectorySnapshot:
    rls: dict[str, Any] = {
        "home_community_id": RLS.urn,
        "name": "Record locator",
        "xcpd_url": "https://rls.example/xcpd",
        "timeout_read": READ_TIMEOUT,
        "timeout_overall": 10,
    }
    if plq_url is not None:
        rls["xcpd_location_url"] = plq_url
    known = {
        "home_community_id": KNOWN.oid,
        "name": "Known hospital",
        "xca_query_url": "https://known.example/xca/query",
    }
    return communities_from_config({"communities": [rls, known]})


def _match(patient: str, flag: HealthDataLocator | None = None) -> MatchedPatient:
    return MatchedPatient(
        PatientId(patient, AUTHORITY),
        RLS,
        health_data_locator=flag or HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR,
    )


async def _follow(
    directory: DirectorySnapshot, *patients: str | MatchedPatient
) -> HealthDataLocatorResult:
    rls = directory.get(RLS)
    assert rls is not None
    matches = [
        DiscoveredMatch(rls, p if isinstance(p, MatchedPatient) else _match(p)) for p in patients
    ]
    async with httpx.AsyncClient() as http:
        soap = SoapClient(http)
        return await follow_health_data_locators(matches, directory, soap_locator(lambda _: soap))


def _only_report(result: HealthDataLocatorResult) -> LocatorReport:
    assert result.targets == ()
    (report,) = result.reports
    assert report.community == RLS
    return report


async def test_locations_returned_become_targets_or_reports(
    partner: tuple[HdlPartner, str],
) -> None:
    hdl, base = partner
    directory = _directory(f"{base}/plq")
    result = await _follow(directory, "P-LOC")
    assert result.queried == 1
    assert hdl.requests == [
        (spec_of(Transaction.ITI_56).request_action, PatientId("P-LOC", AUTHORITY))
    ]
    known = directory.get(KNOWN)
    assert isinstance(known, Community)
    assert result.targets == (
        FollowUpTarget(
            community=known,
            patient_id=PatientId("K-77", "1.2.3.200.1"),
            locator=RLS,
            query_endpoint=known.endpoints[0],
        ),
    )
    assert result.targets[0].query_endpoint.url == "https://known.example/xca/query"
    (report,) = result.reports
    assert report.kind is LocatorReportKind.LOCATION_NOT_IN_DIRECTORY
    assert (report.community, report.locator) == (UNKNOWN, RLS)
    assert report.patient_id == PatientId("U-5", "1.2.3.999.1")
    assert "not in the directory" in report.detail


async def test_empty_list_is_no_locations(partner: tuple[HdlPartner, str]) -> None:
    _, base = partner
    report = _only_report(await _follow(_directory(f"{base}/plq"), "P-EMPTY"))
    assert report.kind is LocatorReportKind.NO_LOCATIONS
    assert report.detail == "no locations"


async def test_soap_fault_is_an_internal_failure_reported(
    partner: tuple[HdlPartner, str],
) -> None:
    _, base = partner
    report = _only_report(await _follow(_directory(f"{base}/plq"), "P-FAULT"))
    assert report.kind is LocatorReportKind.PLQ_FAILED
    assert "SOAP fault Receiver" in report.detail
    assert "patient index offline" in report.detail


async def test_fault_saying_not_a_locator(partner: tuple[HdlPartner, str]) -> None:
    _, base = partner
    report = _only_report(await _follow(_directory(f"{base}/plq"), "P-NOT-HDL"))
    assert report.kind is LocatorReportKind.NOT_HEALTH_DATA_LOCATOR
    assert "NotHealthDataLocator" in report.detail


async def test_hang_beyond_read_timeout_is_reported_not_raised(
    partner: tuple[HdlPartner, str],
) -> None:
    hdl, base = partner
    result = await _follow(_directory(f"{base}/plq"), "P-HANG")
    hdl.release.set()
    report = _only_report(result)
    assert report.kind is LocatorReportKind.PLQ_FAILED
    assert "timed out" in report.detail


async def test_unreachable_locator_is_reported() -> None:
    report = _only_report(await _follow(_directory("http://127.0.0.1:9/plq"), "P-LOC"))
    assert report.kind is LocatorReportKind.PLQ_FAILED
    assert "unreachable" in report.detail


async def test_no_plq_endpoint_reports_and_sends_nothing() -> None:
    directory = _directory(None)
    flagged = _match("P-LOC")
    result = await _follow(directory, flagged)
    assert result.queried == 0
    report = _only_report(result)
    assert report.kind is LocatorReportKind.PLQ_NOT_AVAILABLE
    assert report.detail == "HDL flagged; Patient Location Query not available"
    # The match itself is untouched and still usable for ITI-38 with the locator.
    assert flagged.patient_id == PatientId("P-LOC", AUTHORITY)


async def test_every_flow_in_one_fan_out_keeps_input_order(
    partner: tuple[HdlPartner, str],
) -> None:
    hdl, base = partner
    plain = _match("P-PLAIN", HealthDataLocator.NOT_HEALTH_DATA_LOCATOR)
    unflagged = MatchedPatient(PatientId("P-NONE", AUTHORITY), RLS, health_data_locator=None)
    result = await _follow(
        _directory(f"{base}/plq"),
        "P-FAULT",
        plain,
        "P-LOC",
        unflagged,
        "P-EMPTY",
        "P-NOT-HDL",
        "P-LOC",  # the same locator and patient twice: one query
    )
    hdl.release.set()
    assert result.queried == 4
    assert sorted(p.id for _, p in hdl.requests) == ["P-EMPTY", "P-FAULT", "P-LOC", "P-NOT-HDL"]
    assert [t.patient_id.id for t in result.targets] == ["K-77"]
    assert [r.kind for r in result.reports] == [
        LocatorReportKind.PLQ_FAILED,
        LocatorReportKind.LOCATION_NOT_IN_DIRECTORY,
        LocatorReportKind.NO_LOCATIONS,
        LocatorReportKind.NOT_HEALTH_DATA_LOCATOR,
    ]
