"""FHIR directory import over real HTTP: Carequality-shaped Bundles served on loopback.

The directory is a tiny Starlette app: two pages of Organizations with
contained Endpoints, joined by a ``next`` link; one Organization is malformed
(skipped with a warning) and one Endpoint is switched off.  A second import
after the directory changed is merged with :func:`refresh`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from imagebridge.directory import (
    DirectoryMalformed,
    DirectoryUnavailable,
    fetch_directory,
    refresh,
)
from imagebridge.directory.fhir import TRANSACTION_EXTENSION
from imagebridge.model.ids import HomeCommunityId
from imagebridge.transactions import Transaction
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

SPHD = "https://sequoiaproject.org/fhir/sphd"
HCID_A, HCID_B, HCID_C, HCID_D = "1.2.840.1.1", "1.2.840.1.2", "1.2.840.1.3", "1.2.840.1.4"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _endpoint(eid: str, code: str, address: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": eid,
        "extension": [
            {
                "url": TRANSACTION_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [{"system": f"{SPHD}/CodeSystem/TransactionCodes", "code": code}]
                },
            },
            {"url": f"{SPHD}/StructureDefinition/Version", "valueString": "2.0"},
        ],
        "status": status,
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "ihe-xca",
        },
        "address": address,
    }


def _organization(
    oid: str, name: str, endpoints: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": oid,
        "identifier": [
            {
                "use": "official",
                "type": {
                    "coding": [
                        {"system": f"{SPHD}/CodeSystem/SequoiaIdentifierCodes", "code": "HCID"}
                    ]
                },
                "system": "urn:ietf:rfc:3986",
                "value": f"urn:oid:{oid}",
            }
        ],
        "active": True,
        "name": name,
        "contained": endpoints,
        "endpoint": [{"reference": f"#{e['id']}"} for e in endpoints],
        **extra,
    }


def _bundle(organizations: list[dict[str, Any]], next_url: str | None) -> dict[str, Any]:
    links = [{"relation": "self", "url": "self"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"fullUrl": f"Organization/{o['id']}", "resource": o} for o in organizations],
    }


def _first_version() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    page1 = [
        _organization(
            HCID_A,
            "Alpha HIE",
            [
                _endpoint("e1", "XCPD ITI-55", "https://alpha.example/xcpd"),
                _endpoint("e2", "XCA ITI-38", "https://alpha.example/xca/query"),
                _endpoint("e3", "XCA ITI-39", "https://alpha.example/xca/retrieve"),
                _endpoint("e4", "XCA-I RAD-75", "https://alpha.example/xcai/retrieve"),
                _endpoint("e5", "FHIR REST", "https://alpha.example/fhir"),
            ],
        ),
        {  # malformed: no HCID identifier and an id that is no OID
            "resourceType": "Organization",
            "id": "not-an-oid",
            "name": "Broken",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1234"}],
        },
        _organization(
            HCID_B,
            "Bravo Hospital",
            [
                _endpoint("q", "XCA ITI-38", "https://bravo.example/q"),
                _endpoint("r", "XCA ITI-39", "https://bravo.example/r", status="off"),
                _endpoint("x", "XCPD ITI-55", "mailto:ops@bravo.example"),
            ],
        ),
    ]
    page2 = [
        _organization(
            HCID_C,
            "Charlie Clinic",
            [_endpoint("q", "XCA ITI-38", "https://charlie.example/q")],
        ),
        _organization(
            HCID_D, "Delta Radiology", [], partOf={"reference": f"Organization/{HCID_C}"}
        ),
    ]
    return page1, page2


class Directory:
    """The served directory; tests swap its pages between imports."""

    def __init__(self) -> None:
        self.pages: list[list[dict[str, Any]]] = list(_first_version())
        self.requests: list[str] = []
        self.headers: list[str | None] = []

    def app(self) -> Starlette:
        async def organizations(request: Request) -> Response:
            self.requests.append(str(request.url))
            self.headers.append(request.headers.get("authorization"))
            page = int(request.query_params.get("page", "1"))
            next_url = None
            if page < len(self.pages):
                # relative links resolve against the current page's URL
                next_url = f"Organization?page={page + 1}&_format=json"
            body = _bundle(self.pages[page - 1], next_url)
            return JSONResponse(body, media_type="application/fhir+json")

        async def huge(request: Request) -> Response:
            return Response(b'{"resourceType": "Bundle", "entry": [' + b" " * 200_000 + b"]}")

        async def streamed(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"resourceType": "Bundle", "entry": ['
                for _ in range(20):
                    yield b" " * 10_000

            return StreamingResponse(chunks(), media_type="application/fhir+json")

        async def broken(request: Request) -> Response:
            return Response(b'{"resourceType": "Bundle", "entry": [', media_type="application/json")

        async def failing(request: Request) -> Response:
            return Response(b"no", status_code=503)

        async def escaping(request: Request) -> Response:
            return JSONResponse(_bundle([], "https://elsewhere.example/fhir/Organization?page=2"))

        return Starlette(
            routes=[
                Route("/fhir/Organization", organizations),
                Route("/huge/Organization", huge),
                Route("/streamed/Organization", streamed),
                Route("/broken/Organization", broken),
                Route("/failing/Organization", failing),
                Route("/escaping/Organization", escaping),
            ]
        )


async def test_import_two_pages_skips_malformed_and_keeps_inactive_endpoint() -> None:
    directory = Directory()
    async with running_server(directory.app()) as base, httpx.AsyncClient() as client:
        snapshot = await fetch_directory(
            client, f"{base}/fhir", headers={"Authorization": "api-key secret"}, page_size=3
        )
    assert len(directory.requests) == 2
    assert "_count=3" in directory.requests[0] and "active=true" in directory.requests[0]
    assert directory.requests[1].endswith("/fhir/Organization?page=2&_format=json")
    assert directory.headers == ["api-key secret", "api-key secret"]
    assert snapshot.complete
    ids = [c.home_community_id.oid for c in snapshot]
    assert ids == [HCID_A, HCID_B, HCID_C, HCID_D]

    alpha = snapshot.get(HomeCommunityId(HCID_A))
    assert alpha is not None and alpha.name == "Alpha HIE" and alpha.active
    assert alpha.url(Transaction.ITI_55) == "https://alpha.example/xcpd"
    assert alpha.url(Transaction.ITI_38) == "https://alpha.example/xca/query"
    assert alpha.url(Transaction.ITI_39) == "https://alpha.example/xca/retrieve"
    assert alpha.url(Transaction.RAD_75) == "https://alpha.example/xcai/retrieve"
    assert len(alpha.endpoints) == 4  # FHIR REST is not one we send

    bravo = snapshot.get(HomeCommunityId(HCID_B))
    assert bravo is not None
    assert bravo.url(Transaction.ITI_38) == "https://bravo.example/q"
    assert bravo.url(Transaction.ITI_39) is None  # status "off"
    retrieve = [e for e in bravo.endpoints if e.transaction is Transaction.ITI_39]
    assert [(e.url, e.active) for e in retrieve] == [("https://bravo.example/r", False)]
    assert bravo.url(Transaction.ITI_55) is None  # mailto: address skipped

    delta = snapshot.get(HomeCommunityId(HCID_D))
    assert delta is not None and delta.endpoints == ()
    assert delta.part_of == HomeCommunityId(HCID_C)
    routed = snapshot.endpoint_for(HomeCommunityId(HCID_D), Transaction.ITI_38)
    assert routed is not None and routed.url == "https://charlie.example/q"
    assert [c.home_community_id.oid for c in snapshot.active()] == [HCID_A, HCID_B, HCID_C]

    messages = [str(w) for w in snapshot.warnings]
    assert any(m.startswith("Organization/not-an-oid: skipped:") for m in messages), messages
    assert any("'FHIR REST' is not one we send" in m for m in messages), messages
    assert any("#x" in m and "must be an absolute http" in m for m in messages), messages
    assert len(messages) == 3, messages


async def test_refresh_removes_one_and_changes_one_url() -> None:
    directory = Directory()
    async with running_server(directory.app()) as base, httpx.AsyncClient() as client:
        first = await fetch_directory(client, f"{base}/fhir")
        initial = refresh(None, first)
        assert initial.counts == (4, 0, 0)
        page1 = directory.pages[0]
        directory.pages = [
            page1,
            [
                _organization(
                    HCID_C,
                    "Charlie Clinic",
                    [_endpoint("q", "XCA ITI-38", "https://charlie.example/v2/q")],
                )
            ],
        ]
        second = await fetch_directory(client, f"{base}/fhir")
    result = refresh(initial.snapshot, second)
    assert result.added == ()
    assert result.removed == (HomeCommunityId(HCID_D),)
    assert result.changed == (HomeCommunityId(HCID_C),)
    assert result.counts == (0, 1, 1)
    assert result.unchanged == 2
    charlie = result.snapshot.get(HomeCommunityId(HCID_C))
    assert charlie is not None and charlie.url(Transaction.ITI_38) == "https://charlie.example/v2/q"
    assert result.snapshot.get(HomeCommunityId(HCID_D)) is None


async def test_page_limit_makes_an_incomplete_snapshot_that_removes_nothing() -> None:
    directory = Directory()
    async with running_server(directory.app()) as base, httpx.AsyncClient() as client:
        full = await fetch_directory(client, f"{base}/fhir")
        partial = await fetch_directory(client, f"{base}/fhir", max_pages=1)
    assert not partial.complete
    assert any("stopped after 1 pages" in str(w) for w in partial.warnings)
    assert [c.home_community_id.oid for c in partial] == [HCID_A, HCID_B]
    result = refresh(full, partial)
    assert result.removed == ()
    assert len(result.snapshot) == 4


async def test_unreadable_pages_fail_the_import() -> None:
    async with running_server(Directory().app()) as base, httpx.AsyncClient() as client:
        with pytest.raises(DirectoryMalformed, match="exceeds 100000 bytes"):
            await fetch_directory(client, f"{base}/huge", max_page_bytes=100_000)
        with pytest.raises(DirectoryMalformed, match="exceeds 100000 bytes"):
            await fetch_directory(client, f"{base}/streamed", max_page_bytes=100_000)
        with pytest.raises(DirectoryMalformed, match="not valid JSON"):
            await fetch_directory(client, f"{base}/broken")
        with pytest.raises(DirectoryUnavailable, match="HTTP 503"):
            await fetch_directory(client, f"{base}/failing")
        with pytest.raises(DirectoryUnavailable, match="HTTP 404"):
            await fetch_directory(client, f"{base}/nowhere")
        escaped = await fetch_directory(client, f"{base}/escaping")
    assert not escaped.complete
    assert "not followed" in str(escaped.warnings[0])


async def test_unreachable_directory() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(DirectoryUnavailable, match="unreachable"):
            await fetch_directory(client, "http://127.0.0.1:9/fhir")
