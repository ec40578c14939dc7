"""SOAP server and client over real HTTP on loopback (uvicorn + httpx)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from lxml import etree

from imagebridge.errors import FaultCode, PartnerUnavailable, SoapFaultReceived
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.transport.server import ServerLimits, SoapEndpoint, soap_app
from imagebridge.wire import ns
from imagebridge.wire.mtom import Attachment, MtomLimits
from imagebridge.wire.soap import parse_envelope
from imagebridge.wire.xml import parse_xml
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

ITI38 = spec_of(Transaction.ITI_38)
RAD75 = spec_of(Transaction.RAD_75)
CHUNK = b"\x5a" * 65536


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _query(request: SoapRequest) -> SoapReply:
    if request.payload.get("id") == "boom":
        raise RuntimeError("handler bug")
    response = etree.Element(ns.q(ns.QUERY, "AdhocQueryResponse"), nsmap={"query": ns.QUERY})
    response.set("status", "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success")
    return SoapReply(response)


async def _body(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield CHUNK


async def _retrieve(request: SoapRequest) -> SoapReply:
    response = etree.Element(ns.q(ns.XDS, "RetrieveDocumentSetResponse"), nsmap={"xds": ns.XDS})
    attachments = [
        Attachment("img1@test", "application/dicom", _body(48)),
        Attachment("img2@test", "application/dicom", _body(3)),
    ]
    return SoapReply(response, attachments)


ENDPOINTS = [
    SoapEndpoint("/xca/query", {Transaction.ITI_38: _query}),
    SoapEndpoint("/xcai/retrieve", {Transaction.RAD_75: _retrieve}),
]
LIMITS = ServerLimits(mtom=MtomLimits(max_root_bytes=1024 * 1024))


def _adhoc(id_: str = "q") -> etree._Element:
    el = etree.Element(ns.q(ns.QUERY, "AdhocQueryRequest"), nsmap={"query": ns.QUERY})
    el.set("id", id_)
    return el


def _imaging() -> etree._Element:
    return etree.Element(ns.q(ns.XDSI, "RetrieveImagingDocumentSetRequest"), nsmap={"i": ns.XDSI})


async def test_simple_soap_round_trip_and_server_survives_handler_bug() -> None:
    async with running_server(soap_app(ENDPOINTS, LIMITS)) as base, httpx.AsyncClient() as http:
        client = SoapClient(http)
        with await client.call(ITI38, f"{base}/xca/query", _adhoc()) as reply:
            assert reply.payload.tag == ns.q(ns.QUERY, "AdhocQueryResponse")
            assert reply.status_code == 200
        with pytest.raises(SoapFaultReceived) as info:
            await client.call(ITI38, f"{base}/xca/query", _adhoc("boom"))
        assert info.value.code == FaultCode.RECEIVER.value
        assert "handler bug" not in info.value.message
        with await client.call(ITI38, f"{base}/xca/query", _adhoc()) as reply:
            assert reply.status_code == 200


async def test_mtom_reply_streams_attachments_intact() -> None:
    async with running_server(soap_app(ENDPOINTS, LIMITS)) as base, httpx.AsyncClient() as http:
        reply = await SoapClient(http).call(RAD75, f"{base}/xcai/retrieve", _imaging())
        with reply:
            parts = reply.package.parts
            assert set(parts) == {"img1@test", "img2@test"}
            with parts["img1@test"].open() as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            assert digest == hashlib.sha256(CHUNK * 48).hexdigest()
            assert parts["img2@test"].size == len(CHUNK) * 3


async def test_wrong_action_faults_with_wsa_subcode() -> None:
    async with running_server(soap_app(ENDPOINTS, LIMITS)) as base, httpx.AsyncClient() as http:
        with pytest.raises(SoapFaultReceived) as info:
            await SoapClient(http).call(RAD75, f"{base}/xca/query", _imaging())
        assert info.value.code == "Sender"
        assert info.value.subcodes == (f"{{{ns.WSA}}}ActionNotSupported",)


def _raw_envelope(body: str, header: str | None = None) -> bytes:
    head = header or (
        f"<a:Action xmlns:a='{ns.WSA}'>{ITI38.request_action}</a:Action>"
        f"<a:MessageID xmlns:a='{ns.WSA}'>urn:uuid:1</a:MessageID>"
    )
    return (
        f"<s:Envelope xmlns:s='{ns.SOAP12}'><s:Header>{head}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    ("body", "status", "code", "reason"),
    [
        (b"<not-xml", 400, "Sender", "not well-formed"),
        (b"<!DOCTYPE a [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><a>&x;</a>", 400, "Sender", "DTD"),
        (b"<a>" * 10_000 + b"</a>" * 10_000, 400, "Sender", "deep"),
        (b"<a>" + b"x" * (2 * 1024 * 1024) + b"</a>", 400, "Sender", "exceeds"),
        (_raw_envelope(f"<q:Other xmlns:q='{ns.QUERY}'/>"), 400, "Sender", "expects"),
        (
            _raw_envelope(
                f"<q:AdhocQueryRequest xmlns:q='{ns.QUERY}'/>",
                f"<a:Action xmlns:a='{ns.WSA}'>{ITI38.request_action}</a:Action>"
                f"<x:H xmlns:x='urn:x' xmlns:s='{ns.SOAP12}' s:mustUnderstand='1'/>",
            ),
            500,
            "MustUnderstand",
            "not understood",
        ),
        (
            b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body/></s:Envelope>",
            500,
            "VersionMismatch",
            "SOAP 1.2",
        ),
    ],
)
async def test_bad_requests_get_specific_faults(
    body: bytes, status: int, code: str, reason: str
) -> None:
    async with running_server(soap_app(ENDPOINTS, LIMITS)) as base, httpx.AsyncClient() as http:
        reply = await http.post(
            f"{base}/xca/query",
            content=body,
            headers={"Content-Type": "application/soap+xml; charset=UTF-8"},
        )
        assert reply.status_code == status
        message = parse_envelope(parse_xml(reply.content))
        assert message.fault is not None
        assert message.fault.code.value == code
        assert reason in message.fault.reason
        # The server keeps serving afterwards.
        ok = await SoapClient(http).call(ITI38, f"{base}/xca/query", _adhoc())
        ok.close()


async def test_truncated_mtom_request_faults() -> None:
    async with running_server(soap_app(ENDPOINTS, LIMITS)) as base, httpx.AsyncClient() as http:
        reply = await http.post(
            f"{base}/xcai/retrieve",
            content=b"--b\r\nContent-Type: application/xop+xml\r\n\r\n<a/>",
            headers={"Content-Type": 'multipart/related; boundary="b"; type="application/xop+xml"'},
        )
        assert reply.status_code == 400
        fault = parse_envelope(parse_xml(reply.content)).fault
        assert fault is not None and fault.code is FaultCode.SENDER


async def test_dead_partner_is_reported_as_unavailable() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(PartnerUnavailable):
            await SoapClient(http).call(ITI38, "http://127.0.0.1:9/xca/query", _adhoc())


async def test_get_is_not_allowed() -> None:
    async with running_server(soap_app(ENDPOINTS, LIMITS)) as base, httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/xca/query")).status_code == 405
