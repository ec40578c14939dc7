"""Fan-out of Cross Gateway Patient Discovery [ITI-55] over real loopback HTTP.

Two real imagebridge gateways (``create_app`` under uvicorn: one knows the
patient, one does not), a port that refuses connections, a TCP server that
reads and never answers, and one that sends response headers and then goes
quiet.  The SOAP client sends each one a real ITI-55 query; the fan-out must
give each its status and come back bounded by its deadline.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.actors.initiating.client import PartnerClient
from imagebridge.actors.initiating.fanout import OutcomeStatus, fan_out
from imagebridge.actors.initiating.pull import Demographics, discovery_query
from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.model.directory import Community, CommunityEndpoint, PartnerLimits, Timeouts
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.xcpd import PatientDiscoveryResponse, QueryResponseCode
from imagebridge.transactions import Transaction
from imagebridge.transport.client import SoapClient
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

S = OutcomeStatus
ALICE, BOB = DEMO_PATIENTS[0], DEMO_PATIENTS[1]
US = HomeCommunityId("1.3.6.1.4.1.21367.13.70.300")
DEADLINE = 4.0
Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _gateway_app(tmp: Path, home: str, patient_is_alice: bool) -> object:
    archive = tmp / home / "archive"
    make_study(ALICE if patient_is_alice else BOB, archive / "cr", modality="CR", seed=7)
    raw = {
        "community": {"home_community_id": f"urn:oid:{home}", "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / home / 'ib.db'}"},
        "repositories": [{"unique_id": f"{home}.1", "source": "folder", "path": str(archive)}],
    }
    return create_app(config_from_mapping(raw, {}))


def _refused_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more: connections are refused
    return f"http://127.0.0.1:{port}/xcpd"


async def _read_until_eof(stream: anyio.abc.SocketStream) -> None:
    with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        while True:
            await stream.receive()


async def _never_answers(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await _read_until_eof(stream)


async def _headers_then_hangs(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive()
        await stream.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\n"
            b"Content-Length: 100000\r\n\r\n<env:Envelope"
        )
        await _read_until_eof(stream)


@asynccontextmanager
async def _raw_server(handler: Handler) -> AsyncIterator[str]:
    """A bare TCP server on a free loopback port running *handler* per connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handler)
        try:
            yield f"http://127.0.0.1:{port}/xcpd"
        finally:
            tasks.cancel_scope.cancel()


def _community(n: int, url: str, *, read: float = 60.0, overall: float = 120.0) -> Community:
    return Community(
        HomeCommunityId(f"1.3.6.1.4.1.21367.13.70.{n}"),
        f"partner {n}",
        endpoints=(CommunityEndpoint(Transaction.ITI_55, url),),
        limits=PartnerLimits(timeouts=Timeouts(connect=2.0, read=read, overall=overall)),
    )


def _discover(client: SoapClient) -> Callable[[Community], Awaitable[PatientDiscoveryResponse]]:
    async def call(community: Community) -> PatientDiscoveryResponse:
        query = discovery_query(
            Demographics("Demo", "Alice", ALICE.birth_date, ALICE.sex),
            US,
            community.home_community_id,
            message_root="2.25.9",
            creation_time="20260101120000",
        )
        return await PartnerClient(community, client).discover(query)

    return call


def _no_match(response: PatientDiscoveryResponse) -> bool:
    return response.query_ack.query_response_code is QueryResponseCode.NF


async def test_fan_out_gives_every_partner_its_status_within_the_deadline(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        knows = await stack.enter_async_context(
            running_server(_gateway_app(tmp_path, "1.3.6.1.4.1.21367.13.70.1", True))
        )
        unknown = await stack.enter_async_context(
            running_server(_gateway_app(tmp_path, "1.3.6.1.4.1.21367.13.70.2", False))
        )
        silent = await stack.enter_async_context(_raw_server(_never_answers))
        half = await stack.enter_async_context(_raw_server(_headers_then_hangs))
        http = await stack.enter_async_context(httpx.AsyncClient())
        communities = [
            _community(1, f"{knows}/xcpd"),
            _community(2, f"{unknown}/xcpd"),
            _community(3, _refused_url()),
            _community(4, silent, read=1.0),  # httpx read timeout
            _community(5, half, read=1.0),  # headers, then the body never comes
            _community(6, silent, overall=1.5),  # the partner's own overall timeout
            _community(7, silent),  # only the fan-out deadline stops it
            _community(8, half),
        ]
        breaker = CircuitBreaker(failure_threshold=1, cool_down=600)
        discover = _discover(SoapClient(http))
        began = anyio.current_time()
        result = await fan_out(
            communities, discover, timeout=DEADLINE, is_no_match=_no_match, breaker=breaker
        )
        took = anyio.current_time() - began

        assert [o.status for o in result.outcomes] == [
            S.OK,
            S.NO_MATCH,
            S.UNREACHABLE,
            S.TIMEOUT,
            S.TIMEOUT,
            S.TIMEOUT,
            S.TIMEOUT,
            S.TIMEOUT,
        ]
        assert took < DEADLINE + 2  # coarse: bounded by the deadline, not by the hangs
        assert result.deadline_reached
        (found,) = result.values()
        assert [p.patient_id for p in found.patients] == [PatientId(ALICE.id, "2.25.1")]
        assert found.patients[0].home_community_id == communities[0].home_community_id
        details = [o.detail for o in result.outcomes]
        assert "ConnectError" in details[2]
        assert "ReadTimeout" in details[3] and "ReadTimeout" in details[4]
        assert "reply from" in details[4]  # the reply had started
        assert "partner's overall timeout of 1.5 s" in details[5]
        assert "overall deadline of 4 s" in details[6] and "overall deadline" in details[7]
        assert {o.code for o in result.outcomes[2:]} == {"XDSUnavailableCommunity"}

        # With a breaker at one failure, the next fan-out skips the six dead partners at once.
        again = await fan_out(
            communities, discover, timeout=DEADLINE, is_no_match=_no_match, breaker=breaker
        )
        assert [o.status for o in again.outcomes] == [S.OK, S.NO_MATCH] + [S.SKIPPED] * 6
        assert not again.deadline_reached
