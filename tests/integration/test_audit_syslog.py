"""ATNA audit over real syslog: an ITI-55 between our partner client and a real imagebridge
responder (both observed by the audit trail) reaches syslog listeners started by the test.

* UDP (RFC 5426): one RFC 5424 datagram per message;
* TLS (RFC 5425) with mutual authentication (trustme CAs made here): octet-counted frames;
* a dead repository (nothing listens) and a slow one (accepts TCP, never answers the TLS
  handshake) do not hold the exchange up: it completes while the outbox keeps the messages
  unsent with their attempts counted; once a listener appears they are delivered.

Every message is checked: RFC 5424 header (PRI 85, MSGID IHE+RFC-3881, no structured
data, BOM), the XML valid against dicom2017c.xsd, one message per side of the exchange.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trustme
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSListener

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.app import open_gateway
from imagebridge.directory.static import communities_from_config
from imagebridge.model.audit import AuditMessage
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.xcpd import QueryResponseCode
from imagebridge.security.audit_config import AuditConfig
from imagebridge.security.audit_events import AuditContext
from imagebridge.security.audit_trail import SENDER_LEASE, AuditTrail
from imagebridge.store import Store
from imagebridge.store.audit_outbox import AuditOutbox, OutboxEntry
from imagebridge.store.leases import ServiceLeases
from imagebridge.transport.server import soap_app
from imagebridge.wire.audit import parse_audit_message
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import assert_valid
from tests.http_server import running_server
from tests.integration.test_responding_gateway import ALICE_ID, HOME, _config, _xcpd

pytestmark = pytest.mark.anyio

FRAME = re.compile(
    rb"^<85>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>\S+) (?P<app>\S+) "
    rb"(?P<procid>\S+) IHE\+RFC-3881 - \xef\xbb\xbf(?P<xml><\?xml .*)$",
    re.DOTALL,
)
US = "1.3.6.1.4.1.21367.13.70.202"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _schemas(schema_dir: Path) -> None:
    """The messages are validated against dicom2017c.xsd (needs the conformance folder)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_frame(frame: bytes) -> AuditMessage:
    """One RFC 5424 audit frame: header checked, XML schema-valid, decoded."""
    match = FRAME.match(frame)
    assert match is not None, frame[:120]
    assert match["host"] == b"gw.test" and match["app"] == b"imagebridge"
    element = parse_xml(match["xml"])
    assert_valid("audit", element)
    return parse_audit_message(element)


@dataclass
class Pki:
    repository_ca: trustme.CA
    repository_cert: trustme.LeafCert
    our_ca: trustme.CA
    files: dict[str, Path] = field(default_factory=dict)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    repository_ca, our_ca = trustme.CA(), trustme.CA()
    pki = Pki(repository_ca, repository_ca.issue_cert("127.0.0.1"), our_ca)
    ours = our_ca.issue_cert("gw.test")
    for name, blob in {
        "repository-ca": repository_ca.cert_pem,
        "our-cert": ours.cert_chain_pems[0],
        "our-key": ours.private_key_pem,
    }.items():
        path = pki.files[name] = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
    return pki


def _server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.repository_cert.configure_cert(context)
    pki.our_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: our certificate is checked
    return context


@asynccontextmanager
async def tls_listener(pki: Pki, port: int, frames: list[bytes]) -> AsyncIterator[None]:
    """An RFC 5425 receiver on *port*: reads octet-counted frames into *frames*."""

    async def handle(stream: anyio.abc.ByteStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        try:
            while True:
                length = int(await reader.receive_until(b" ", 10))
                frames.append(await reader.receive_exactly(length))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            pass

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    listener = TLSListener(tcp, _server_context(pki), standard_compatible=False)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield
        tasks.cancel_scope.cancel()
    await listener.aclose()


@asynccontextmanager
async def silent_listener(port: int) -> AsyncIterator[None]:
    """Accepts TCP connections and never reads from them (a hung audit repository)."""
    held: list[anyio.abc.SocketStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        held.append(stream)
        await anyio.sleep_forever()

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tcp.serve, hold)
        yield
        tasks.cancel_scope.cancel()
    await tcp.aclose()


def _trail(outbox: AuditOutbox, owner: str | None = None, **config: object) -> AuditTrail:
    settings = AuditConfig(
        enabled=True,
        host="127.0.0.1",
        flush_interval=0.05,
        retry_initial=0.2,
        retry_max=0.5,
        **config,  # type: ignore[arg-type]
    )
    context = AuditContext(
        audit_source_id=US,
        host_name="gw.test",
        process_id="7",
        home_community_id=US,
        base_url="http://responder.test",
    )
    return AuditTrail(outbox, settings, context, owner=owner)


Exchange = Callable[[], Awaitable[None]]


@asynccontextmanager
async def gateway_with(trail: AuditTrail, tmp: Path) -> AsyncIterator[Exchange]:
    """A real responder (observed by *trail*) and an ITI-55 exchange from our client."""
    async with (
        open_gateway(_config(tmp)) as gateway,
        running_server(soap_app(gateway.endpoints, observer=trail)) as base,
        PartnerClients(observer=trail) as clients,
        anyio.create_task_group() as tasks,
    ):
        directory = communities_from_config(
            {"communities": [{"home_community_id": HOME, "name": "RG", "xcpd_url": f"{base}/xcpd"}]}
        )
        community = directory.get(HomeCommunityId(HOME))
        assert community is not None
        client = clients.for_community(community)

        async def exchange() -> None:
            found = await client.discover(_xcpd("Demo", "Alice", "19700101", "F"))
            assert found.query_ack.query_response_code is QueryResponseCode.OK

        await tasks.start(trail.run)
        yield exchange
        tasks.cancel_scope.cancel()


def _outbox(tmp: Path) -> AuditOutbox:
    return AuditOutbox(Store.open(f"sqlite:///{tmp / 'audit.db'}").engine)


async def _until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    try:
        with anyio.fail_after(seconds):
            while not condition():
                await anyio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"waited {seconds} s for: {what}")


def _check_pair(messages: list[AuditMessage]) -> None:
    """One message from each side of the ITI-55, both a Query (110112) naming Alice."""
    assert len(messages) == 2
    destinations = set()
    for m in messages:
        ev = m.event_identification
        assert (ev.event_id.code, ev.event_type_codes[0].code) == ("110112", "ITI-55")
        assert ev.event_outcome_indicator.value == "0"
        patients = [o.object_id for o in m.participant_objects if o.id_type_code.code == "2"]
        assert patients == [ALICE_ID.cx]
        destinations.add(m.active_participants[-1].user_id)
    assert destinations == {
        "http://responder.test/xcpd",
        f"http://127.0.0.1:{_port_of(messages)}/xcpd",
    }


def _port_of(messages: list[AuditMessage]) -> str:
    for m in messages:
        found = re.match(r"http://127\.0\.0\.1:(\d+)/xcpd", m.active_participants[-1].user_id)
        if found:
            return found[1]
    return "?"


async def test_audit_messages_over_udp(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path)
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as udp:
        port = udp.extra(SocketAttribute.local_port)
        received: list[bytes] = []

        async def collect() -> None:
            async for data, _addr in udp:
                received.append(data)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(collect)
            trail = _trail(outbox, transport="udp", port=port)
            async with gateway_with(trail, tmp_path) as exchange:
                await exchange()
                await _until(lambda: len(received) >= 2, "two datagrams")
            tasks.cancel_scope.cancel()
    _check_pair([parse_frame(d) for d in received])
    counts = outbox.counts()
    assert (counts.sent, counts.pending) == (2, 0)


async def test_audit_messages_over_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    outbox = _outbox(tmp_path)
    port = _free_port()
    frames: list[bytes] = []
    trail = _trail(
        outbox,
        port=port,
        ca_bundle=pki.files["repository-ca"],
        client_certificate=pki.files["our-cert"],
        client_key=pki.files["our-key"],
    )
    async with tls_listener(pki, port, frames), gateway_with(trail, tmp_path) as exchange:
        await exchange()
        await _until(lambda: len(frames) >= 2, "two frames")
        await _until(lambda: outbox.counts().sent == 2, "both marked sent")
    _check_pair([parse_frame(f) for f in frames])


@pytest.mark.parametrize("repository", ["dead", "slow"])
async def test_unavailable_repository_delays_only_the_outbox(
    tmp_path: Path, pki: Pki, repository: str
) -> None:
    outbox = _outbox(tmp_path)
    port = _free_port()
    frames: list[bytes] = []
    trail = _trail(
        outbox,
        port=port,
        send_timeout=1.0,
        ca_bundle=pki.files["repository-ca"],
        client_certificate=pki.files["our-cert"],
        client_key=pki.files["our-key"],
    )
    async with gateway_with(trail, tmp_path) as exchange:
        if repository == "slow":
            async with silent_listener(port):
                await exchange()  # completes although the sender hangs in the handshake
                await exchange()
                assert outbox.counts().sent == 0
                await _until(lambda: outbox.counts().failing == 4, "attempts counted")
        else:
            await exchange()
            await exchange()
            await _until(lambda: outbox.counts().failing == 4, "attempts counted")
        counts = outbox.counts()
        assert (counts.pending, counts.sent) == (4, 0)
        assert all(m.attempts >= 1 for m in outbox.due(_far_future(), 10))
        async with tls_listener(pki, port, frames):
            await _until(lambda: outbox.counts().sent == 4, "delivered after the outage")
    messages = [parse_frame(f) for f in frames]
    assert len(messages) == 4
    _check_pair(messages[:2])


def _far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


async def test_queue_full_drops_and_never_blocks(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path)
    trail = _trail(outbox, transport="udp", port=_free_port(), queue_size=1)
    async with (
        open_gateway(_config(tmp_path)) as gateway,
        running_server(soap_app(gateway.endpoints, observer=trail)) as base,
        PartnerClients(observer=trail) as clients,
    ):
        directory = communities_from_config(
            {"communities": [{"home_community_id": HOME, "name": "RG", "xcpd_url": f"{base}/xcpd"}]}
        )
        community = directory.get(HomeCommunityId(HOME))
        assert community is not None
        # the trail is not running: its queue holds one message, the rest are dropped
        await clients.for_community(community).discover(_xcpd("Demo", "Alice", "19700101", "F"))
    assert (trail.queued, trail.dropped) == (1, 1)
    assert await trail.drain() == 1
    assert outbox.counts().pending == 1


async def test_workers_sharing_one_outbox_send_each_message_once(database_url: str) -> None:
    """Two workers (two trails, one database): one holds the sender lease, none is sent twice."""
    store = Store.open(database_url)
    outbox = AuditOutbox(store.engine)
    now = datetime.now(UTC)
    outbox.add([OutboxEntry(now, "ITI-38", f"<message n='{n}'/>") for n in range(40)])
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as udp:
        port = udp.extra(SocketAttribute.local_port)
        received: list[bytes] = []

        async def collect() -> None:
            async for data, _addr in udp:
                received.append(data)

        trails = [
            _trail(
                AuditOutbox(store.engine), f"worker-{n}", transport="udp", port=port, batch_size=5
            )
            for n in range(2)
        ]
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(collect)
            for trail in trails:
                await tasks.start(trail.run)
            await _until(lambda: outbox.counts().pending == 0, "the outbox drained")
            await anyio.sleep(0.3)  # time for a second sender, if any, to send again
            holder = ServiceLeases(store.engine).holder(SENDER_LEASE)
            tasks.cancel_scope.cancel()
    store.close()
    bodies = [d.split(b"<message", 1)[1] for d in received]
    assert len(bodies) == 40 and len(set(bodies)) == 40
    assert holder in ("worker-0", "worker-1")
