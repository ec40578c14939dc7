"""Initiating Imaging Gateway [RAD-69 in, RAD-75 out] over real HTTP: faults per community,
unknown communities, and batching.

Community A is a real imagebridge Responding Imaging Gateway over a folder
archive; its ``/xcai/retrieve`` is wrapped by a recorder that keeps every
RAD-75 body it receives.  Community B misbehaves in one way per case
(:mod:`tests.misbehaving_partner` where it has the behaviour): it answers a
SOAP Fault, sends a body that is not XML, has its real MTOM reply cut after
3000 bytes by a proxy, sends its headers and then nothing (B's read timeout
is 0.5 s), trickles bytes past its overall timeout (1.5 s), or refuses
connections.  In every case the consumer gets PartialSuccess: A's instances
byte-identical, and one ``XDSUnavailableCommunity`` error per instance of B,
located at B's homeCommunityId, whose codeContext names the instance and the
cause; A still gets exactly one RAD-75.

Batching: A limited to ``max_documents_per_retrieve = 2`` gets five instances
as three RAD-75 requests (2 + 2 + 1) and the consumer one merged Success.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, SyntheticStudy, make_study
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import Severity, Status
from imagebridge.model.retrieve import (
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
    StudyRequest,
    XopInclude,
    imaging_request_for,
)
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.wire.mtom import read_mtom
from imagebridge.wire.soap import parse_envelope
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import (
    parse_retrieve_imaging_document_set_request,
    render_retrieve_imaging_document_set_request,
)
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response
from imagebridge.wire.xml import parse_xml
from tests.conformance.test_rig_testkit import Recorder
from tests.http_server import running_server
from tests.misbehaving_partner import misbehaving_app, truncating_proxy

pytestmark = pytest.mark.anyio

IIG_HOME = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.1")
HOME_A = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.101")
HOME_B = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.102")
HOME_C = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.103")
UNKNOWN = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.102.999")
REPO_A = "1.3.6.1.4.1.21367.13.71.101"
REPO_B = "1.3.6.1.4.1.21367.13.71.102"
LOCAL_REPO = "1.3.6.1.4.1.21367.13.71.1"
EXPLICIT = "1.2.840.10008.1.2.1"
RAD_69 = spec_of(Transaction.RAD_69)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp: Path, name: str, home: HomeCommunityId, **tables: Any) -> Any:
    raw = {
        "community": {"home_community_id": home.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / (name + '.db')}"},
        **tables,
    }
    return config_from_mapping(raw, {})


def _locators(study: SyntheticStudy, repo: str) -> list[ImagingDocumentLocator]:
    out = []
    for path in study.files:
        h = read_instance_header(path)
        out.append(
            ImagingDocumentLocator(
                repo, h.study.study_instance_uid, h.series.series_instance_uid, h.sop_instance_uid
            )
        )
    return out


def _request(*parts: tuple[list[ImagingDocumentLocator], HomeCommunityId | None]) -> Any:
    """One RAD-69 request whose instances name different communities."""
    studies: list[StudyRequest] = []
    for locators, home in parts:
        studies.extend(imaging_request_for(locators, home, (EXPLICIT,)).study_requests)
    return render_retrieve_imaging_document_set_request(
        RetrieveImagingDocumentSetRequest(tuple(studies), (EXPLICIT,))
    )


@dataclass(frozen=True, slots=True)
class Retrieved:
    response: RetrieveDocumentSetResponse
    blobs: dict[str, bytes]


async def _retrieve(client: SoapClient, url: str, payload: Any) -> Retrieved:
    with await client.call(RAD_69, url, payload) as reply:
        response = parse_retrieve_document_set_response(reply.payload)
        blobs = {}
        for doc in response.document_responses:
            assert isinstance(doc.document, XopInclude)
            with reply.package.part_for_href(doc.document.href).open() as f:
                blobs[doc.document_unique_id] = f.read()
    return Retrieved(response, blobs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- community A: a real Responding Imaging Gateway ------------------------------------------


@dataclass(frozen=True, slots=True)
class CommunityA:
    url: str
    recorder: Recorder
    study: SyntheticStudy

    @property
    def locators(self) -> list[ImagingDocumentLocator]:
        return _locators(self.study, REPO_A)

    def expected(self) -> dict[str, bytes]:
        return {
            loc.sop_instance_uid: path.read_bytes()
            for loc, path in zip(self.locators, self.study.files, strict=True)
        }

    async def forwarded(self) -> list[RetrieveImagingDocumentSetRequest]:
        out = []
        for item in self.recorder.posted:
            with await read_mtom(item.content_type, [item.body]) as package:
                payload = parse_envelope(parse_xml(package.root)).payload
            assert payload is not None
            out.append(parse_retrieve_imaging_document_set_request(payload))
        return out


@pytest.fixture
async def community_a(tmp_path: Path) -> AsyncIterator[CommunityA]:
    folder = tmp_path / "a"
    study = make_study(DEMO_PATIENTS[0], folder / "ct", modality="CT", series=1, instances=5)
    config = _config(
        tmp_path,
        "rig-a",
        HOME_A,
        repositories=[{"unique_id": REPO_A, "source": "folder", "path": str(folder)}],
    )
    recorder = Recorder(create_app(config), "/xcai/retrieve")
    async with running_server(recorder) as base:
        yield CommunityA(f"{base}/xcai/retrieve", recorder, study)


@contextlib.asynccontextmanager
async def running_iig(
    tmp: Path, communities: list[dict[str, Any]], **tables: Any
) -> AsyncIterator[tuple[str, SoapClient]]:
    """The Initiating Imaging Gateway under test, with *communities* in its directory."""
    config = _config(tmp, "iig", IIG_HOME, communities=communities, **tables)
    async with running_server(create_app(config)) as base, httpx.AsyncClient(timeout=60) as http:
        yield base, SoapClient(http)


def _community(home: HomeCommunityId, url: str, **settings: Any) -> dict[str, Any]:
    return {"home_community_id": home.urn, "name": home.oid, "xcai_retrieve_url": url, **settings}


# --- community B: one way of failing per case ------------------------------------------------


async def _trickle(request: Request) -> Response:
    await request.body()

    async def spaces() -> AsyncIterator[bytes]:
        while True:  # never idle for a read timeout, never finished
            yield b" "
            await anyio.sleep(0.1)

    return StreamingResponse(spaces(), media_type=SOAP_CONTENT_TYPE)


PartnerApp = Callable[[str], Starlette]
"""Builds community B's server, given the base URL of a real RIG B holding B's instances."""

FAULTS: dict[str, tuple[PartnerApp | None, dict[str, Any], str]] = {
    # name: (B's server or None for none at all, B's [[communities]] settings, codeContext clue)
    "SOAP Fault": (lambda _: misbehaving_app("fault"), {}, "closed for maintenance"),
    "body not XML": (lambda _: misbehaving_app("garbage"), {}, "well-formed"),
    "truncated MTOM": (lambda rig_b: truncating_proxy(rig_b, keep=3000), {}, "boundary"),
    "headers then silence (read timeout 0.5 s)": (
        lambda _: misbehaving_app("hang"),
        {"timeout_read": 0.5},
        "ReadTimeout",
    ),
    "trickle past the overall timeout (1.5 s)": (
        lambda _: Starlette(routes=[Route("/xcai/retrieve", _trickle, methods=["POST"])]),
        {"timeout_connect": 1, "timeout_read": 1, "timeout_overall": 1.5},
        "1.5 s",
    ),
    "connection refused": (None, {}, "ConnectError"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_failing_community_costs_only_its_own_instances(
    fault: str, community_a: CommunityA, tmp_path: Path
) -> None:
    partner, settings, evidence = FAULTS[fault]
    folder = tmp_path / "b"
    b_study = make_study(DEMO_PATIENTS[1], folder / "mr", modality="MR", series=1, instances=2)
    b_locators = _locators(b_study, REPO_B)
    b_config = _config(
        tmp_path,
        "rig-b",
        HOME_B,
        repositories=[{"unique_id": REPO_B, "source": "folder", "path": str(folder)}],
    )
    async with contextlib.AsyncExitStack() as stack:
        rig_b = await stack.enter_async_context(running_server(create_app(b_config)))
        if partner is None:
            b_url = f"http://127.0.0.1:{_free_port()}/xcai/retrieve"
        else:
            b_base = await stack.enter_async_context(running_server(partner(rig_b)))
            b_url = f"{b_base}/xcai/retrieve"
        communities = [
            _community(HOME_A, community_a.url),
            _community(HOME_B, b_url, **settings),
        ]
        base, client = await stack.enter_async_context(running_iig(tmp_path, communities))
        payload = _request((community_a.locators, HOME_A), (b_locators, HOME_B))
        with anyio.fail_after(30):
            got = await _retrieve(client, f"{base}/iig/retrieve", payload)
    response = got.response
    assert response.status is Status.PARTIAL_SUCCESS, response.errors
    assert got.blobs == community_a.expected()
    assert {d.home_community_id for d in response.document_responses} == {HOME_A}
    assert {d.repository_unique_id for d in response.document_responses} == {REPO_A}
    assert len(response.errors) == len(b_locators), response.errors
    for error, locator in zip(response.errors, b_locators, strict=True):
        assert error.error_code == v.XDS_UNAVAILABLE_COMMUNITY
        assert error.severity is Severity.ERROR
        assert error.location == HOME_B.urn
        assert locator.sop_instance_uid in error.code_context
        assert evidence in error.code_context, error.code_context
    assert len(community_a.recorder.posted) == 1


def _b_locators(count: int) -> list[ImagingDocumentLocator]:
    study, series = "1.2.826.0.1.3680043.10.999.1", "1.2.826.0.1.3680043.10.999.1.1"
    return [ImagingDocumentLocator(REPO_B, study, series, f"{series}.{i}") for i in range(count)]


async def test_every_community_failing_is_a_failure(tmp_path: Path) -> None:
    refused = f"http://127.0.0.1:{_free_port()}/xcai/retrieve"
    async with running_iig(tmp_path, [_community(HOME_B, refused)]) as (base, client):
        got = await _retrieve(client, f"{base}/iig/retrieve", _request((_b_locators(3), HOME_B)))
    assert got.response.status is Status.FAILURE
    assert got.blobs == {}
    assert [e.error_code for e in got.response.errors] == [v.XDS_UNAVAILABLE_COMMUNITY] * 3


async def test_unknown_missing_and_endpointless_communities_send_nothing(
    community_a: CommunityA, tmp_path: Path
) -> None:
    query_only = {"home_community_id": HOME_C.urn, "name": "C", "xca_query_url": "http://c/q"}
    communities = [_community(HOME_A, community_a.url), query_only]
    a_locators = community_a.locators
    unknown, endpointless, homeless, ours = (_b_locators(4)[i : i + 1] for i in range(4))
    payload = _request(
        (a_locators[:2], HOME_A),
        (unknown, UNKNOWN),
        (endpointless, HOME_C),
        (homeless, None),
        (ours, IIG_HOME),
    )
    async with running_iig(tmp_path, communities) as (base, client):
        got = await _retrieve(client, f"{base}/iig/retrieve", payload)
    assert got.response.status is Status.PARTIAL_SUCCESS
    expected = community_a.expected()
    assert got.blobs == {
        loc.sop_instance_uid: expected[loc.sop_instance_uid] for loc in a_locators[:2]
    }
    assert [(e.error_code, e.location) for e in got.response.errors] == [
        (v.XDS_UNKNOWN_COMMUNITY, UNKNOWN.urn),
        (v.XDS_UNKNOWN_COMMUNITY, HOME_C.urn),
        (v.XDS_MISSING_HOME_COMMUNITY_ID, IIG_HOME.urn),
        (v.XDS_UNKNOWN_COMMUNITY, IIG_HOME.urn),
    ], got.response.errors
    # Only community A heard anything, and only about its own instances.
    (forwarded,) = await community_a.forwarded()
    assert {d.document_unique_id for d in forwarded.document_requests} == {
        loc.sop_instance_uid for loc in a_locators[:2]
    }
    assert {d.home_community_id for d in forwarded.document_requests} == {HOME_A}


async def test_max_documents_per_retrieve_splits_into_several_rad75(
    community_a: CommunityA, tmp_path: Path
) -> None:
    communities = [_community(HOME_A, community_a.url, max_documents_per_retrieve=2)]
    async with running_iig(tmp_path, communities) as (base, client):
        got = await _retrieve(
            client, f"{base}/iig/retrieve", _request((community_a.locators, HOME_A))
        )
    assert got.response.status is Status.SUCCESS and got.response.errors == ()
    assert got.blobs == community_a.expected()
    forwarded = await community_a.forwarded()
    assert [len(r.document_requests) for r in forwarded] == [2, 2, 1]
    assert [d.document_unique_id for r in forwarded for d in r.document_requests] == [
        loc.sop_instance_uid for loc in community_a.locators
    ]
    assert {r.transfer_syntax_uids for r in forwarded} == {(EXPLICIT,)}
    assert {d.home_community_id for r in forwarded for d in r.document_requests} == {HOME_A}


async def test_rad69_is_answered_locally_and_by_community_on_two_paths(
    community_a: CommunityA, tmp_path: Path
) -> None:
    local = make_study(
        DEMO_PATIENTS[1], tmp_path / "local" / "mr", modality="MR", series=1, instances=2
    )
    repositories = [{"unique_id": LOCAL_REPO, "source": "folder", "path": str(tmp_path / "local")}]
    communities = [_community(HOME_A, community_a.url)]
    async with running_iig(tmp_path, communities, repositories=repositories) as (base, client):
        mine = _locators(local, LOCAL_REPO)
        here = await _retrieve(client, f"{base}/ids/retrieve", _request((mine, None)))
        there = await _retrieve(
            client, f"{base}/iig/retrieve", _request((community_a.locators, HOME_A))
        )
    assert here.response.status is Status.SUCCESS
    assert here.blobs == {
        loc.sop_instance_uid: p.read_bytes() for loc, p in zip(mine, local.files, strict=True)
    }
    assert len(community_a.recorder.posted) == 1
    assert there.response.status is Status.SUCCESS
    assert there.blobs == community_a.expected()
