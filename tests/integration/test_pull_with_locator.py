"""The pull through a Health Data Locator (guide 8.6.1), end to end over real HTTP.

A record locator service answers ITI-55 with a match flagged
``SupportsHealthDataLocator`` and its ITI-56 endpoint names community A as
the place that holds the patient's data (with A's patient id) and one
community the directory does not know.  Community A is a real imagebridge
responder that the workflow never asked with ITI-55 (it is not in the
``--community`` set); the workflow must follow the location, query A with the
patient id the locator gave, retrieve its manifests and report the unknown
location.  The locator is a small app built on our own SOAP server and codecs:
we do not implement a record locator service ourselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.fanout import OutcomeStatus
from imagebridge.actors.initiating.locator import LocatorReportKind
from imagebridge.actors.initiating.pull import PullSettings
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.directory.static import communities_from_config
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.patient_location import (
    PatientLocationQueryResponse,
    PatientLocationResponse,
)
from imagebridge.model.xcpd import (
    II,
    Acknowledgement,
    AcknowledgementType,
    HealthDataLocator,
    MatchedPatient,
    PatientDiscoveryResponse,
    PersonName,
    QueryAck,
    QueryResponseCode,
)
from imagebridge.transactions import Transaction
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.transport.server import SoapEndpoint, soap_app
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    render_patient_discovery_response,
)
from imagebridge.wire.xcpd_location import (
    parse_patient_location_query_request,
    render_patient_location_query_response,
)
from tests.http_server import running_server
from tests.integration.test_pull_workflow import ALICE, ALICE_DEMOGRAPHICS, US, A, _responder

pytestmark = pytest.mark.anyio

RLS = HomeCommunityId("1.3.6.1.4.1.21367.13.70.150")
ELSEWHERE = HomeCommunityId("1.3.6.1.4.1.21367.13.70.999")
RLS_PATIENT = PatientId("RLS-7", "1.3.6.1.4.1.21367.13.70.150.1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordLocator:
    """ITI-55: one match flagged as a Health Data Locator; ITI-56: where the data are."""

    def __init__(self) -> None:
        self.located: list[PatientId] = []

    async def discover(self, request: SoapRequest) -> SoapReply:
        query = parse_patient_discovery_query(request.payload)
        answer = PatientDiscoveryResponse(
            message_id=II("2.25.77", "rls-answer"),
            creation_time=query.creation_time,
            sender=query.receiver,
            receiver=query.sender,
            acknowledgement=Acknowledgement(AcknowledgementType.AA, query.message_id),
            query_ack=QueryAck(
                QueryResponseCode.OK, query.query_by_parameter.query_id, "deliveredResponse"
            ),
            patients=(
                MatchedPatient(
                    patient_id=RLS_PATIENT,
                    home_community_id=RLS,
                    health_data_locator=HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR,
                    names=(PersonName(given=("ALICE",), family=("DEMO",)),),
                    administrative_gender=ALICE.sex,
                    birth_time=ALICE.birth_date,
                ),
            ),
            query_by_parameter=query.query_by_parameter,
        )
        return SoapReply(render_patient_discovery_response(answer))

    async def locate(self, request: SoapRequest) -> SoapReply:
        query = parse_patient_location_query_request(request.payload)
        self.located.append(query.patient_id)
        asked = query.requested_patient_id
        locations = (
            PatientLocationResponse(HomeCommunityId(A), II("2.25.1", ALICE.id), asked),
            PatientLocationResponse(ELSEWHERE, II("1.2.3.4", "X-1"), asked),
        )
        reply = PatientLocationQueryResponse(locations)
        return SoapReply(render_patient_location_query_response(reply))


async def test_workflow_follows_the_locator_to_a_community_it_did_not_ask(
    tmp_path: Path,
) -> None:
    app_a, studies_a = _responder(tmp_path, A, A + ".1", [31, 32])
    rls = RecordLocator()
    locator_app = soap_app(
        [
            SoapEndpoint("/xcpd", {Transaction.ITI_55: rls.discover}),
            SoapEndpoint("/plq", {Transaction.ITI_56: rls.locate}),
        ]
    )
    async with running_server(app_a) as base_a, running_server(locator_app) as base_rls:
        directory = communities_from_config(
            {
                "communities": [
                    {
                        "home_community_id": RLS.oid,
                        "name": "record locator",
                        "xcpd_url": f"{base_rls}/xcpd",
                        "xcpd_location_url": f"{base_rls}/plq",
                    },
                    {
                        "home_community_id": A,
                        "name": "community A",
                        "xcpd_url": f"{base_a}/xcpd",
                        "xca_query_url": f"{base_a}/xca/query",
                        "xca_retrieve_url": f"{base_a}/xca/retrieve",
                        "xcai_retrieve_url": f"{base_a}/xcai/retrieve",
                    },
                ]
            }
        )
        async with PartnerClients() as clients:
            flow = PullWorkflow(clients, directory, PullSettings(home=US, deadline=10))
            found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities([RLS]))
            assert [o.status for o in found.outcomes.outcomes] == [OutcomeStatus.OK]
            assert rls.located == [RLS_PATIENT]
            located = [m for m in found.matches if m.located_by is not None]
            assert [(m.community.home_community_id.oid, m.patient.patient_id) for m in located] == [
                (A, PatientId(ALICE.id, "2.25.1"))
            ]
            assert located[0].located_by == RLS
            assert found.locators is not None
            kinds = {r.kind for r in found.locators.reports}
            assert kinds == {LocatorReportKind.LOCATION_NOT_IN_DIRECTORY}
            assert any(ELSEWHERE.oid in r.detail for r in found.locators.reports)

            studies = await flow.find_studies(found.matches)
    assert [(o.home_community_id.oid, o.status) for o in studies.outcomes.outcomes] == [
        (A, OutcomeStatus.OK)
    ]
    assert studies.problems == ["record locator: Health Data Locator only (no ITI-38 endpoint)"]
    offered = sorted(o.study_instance_uids[0] for o in studies.offers)
    assert offered == sorted(s.study_instance_uid for s in studies_a)
