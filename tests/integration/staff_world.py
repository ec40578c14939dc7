"""A real setup for the staff page tests: two responders, a dead partner, the initiating app.

* community A: an imagebridge responder (create_app under uvicorn) over a folder archive;
* community B: another one, reached through a proxy the test controls: it can
  slow every image retrieve (RAD-75) down, so an import lasts long enough to
  reload the page in the middle, or answer 503 (the community vanished);
* community D: a loopback port nobody listens on (unreachable);
* the initiating gateway: ``create_app`` with ``[[communities]]``, ``[import]``
  into a folder and ``[web]`` with one operator.

Everything runs in one event loop in a background thread (an anyio blocking
portal), so the tests may be synchronous (httpx.Client, Playwright's sync API).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from anyio.from_thread import start_blocking_portal
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.synthetic import DEMO_PATIENTS, SyntheticStudy, make_study
from imagebridge.store.jobs import JobStore
from imagebridge.web.settings import hash_password
from tests.http_server import running_server

ALICE = DEMO_PATIENTS[0]
US = "1.3.6.1.4.1.21367.13.70.1"
A, B, DEAD = (f"1.3.6.1.4.1.21367.13.70.{n}" for n in (121, 122, 123))
OPERATOR, PASSWORD = "staff", "correct horse battery"
_HASH = hash_password(PASSWORD, salt=b"staff-page-tests")
VIEWER = "http://viewer.example/ohif/viewer?StudyInstanceUIDs={study_uid}"


@dataclass
class ProxyControl:
    """What the proxy in front of community B does now."""

    rad75_delay: float = 0.0
    down: bool = False
    rad75_calls: int = 0


@dataclass
class World:
    url: str
    imported: Path
    database: Path
    studies: dict[str, list[SyntheticStudy]]
    proxy: ProxyControl = field(default_factory=ProxyControl)

    def jobs(self) -> JobStore:
        return JobStore.open(f"sqlite:///{self.database}", migrate=False)

    def files_of(self, study_uid: str) -> list[Path]:
        return sorted((self.imported / study_uid).rglob("*.dcm"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _responder(
    tmp: Path, hcid: str, seeds: list[int], instances: int
) -> tuple[object, list[SyntheticStudy]]:
    archive = tmp / hcid / "archive"
    studies = [
        make_study(ALICE, archive / f"s{seed}", modality="CT", instances=instances, seed=seed)
        for seed in seeds
    ]
    raw = {
        "community": {"home_community_id": hcid, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / hcid / 'ib.db'}"},
        "repositories": [
            {"unique_id": hcid + ".1", "source": "folder", "path": str(archive),
             "scan_interval": 3600}
        ],
    }  # fmt: skip
    return create_app(config_from_mapping(raw, {})), studies


def _proxy(target: str, control: ProxyControl) -> Starlette:
    """Forward each POST to *target*; slow RAD-75 down or refuse everything as told."""

    async def forward(request: Request) -> Response:
        if control.down:
            return Response("community gone", status_code=503, media_type="text/plain")
        if request.url.path.startswith("/xcai"):
            control.rad75_calls += 1
            await anyio.sleep(control.rad75_delay)
        async with httpx.AsyncClient(timeout=30) as client:
            upstream = await client.post(
                target + request.url.path,
                content=await request.body(),
                headers={"Content-Type": request.headers["content-type"]},
            )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
        )

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])


def _initiator(tmp: Path, urls: dict[str, str], batch_size: int) -> object:
    communities = [
        {
            "home_community_id": hcid,
            "name": name,
            "xcpd_url": f"{base}/xcpd",
            "xca_query_url": f"{base}/xca/query",
            "xca_retrieve_url": f"{base}/xca/retrieve",
            "xcai_retrieve_url": f"{base}/xcai/retrieve",
            "timeout_connect": 2,
            "timeout_read": 10,
            "timeout_overall": 20,
        }
        for hcid, name, base in (
            (A, "North Imaging", urls[A]),
            (B, "South Radiology", urls[B]),
            (DEAD, "Closed Clinic", urls[DEAD]),
        )
    ]
    raw = {
        "community": {"home_community_id": US, "name": "Local hospital"},
        "store": {"database_url": f"sqlite:///{tmp / 'initiator.db'}"},
        "communities": communities,
        "import": {"target": "folder", "path": str(tmp / "imported"), "batch_size": batch_size},
        "web": {
            "users": {OPERATOR: _HASH},
            "session_secret": "test-secret-for-the-staff-page",
            "viewer_url": VIEWER,
            "search_deadline": 15,
        },
    }
    return create_app(config_from_mapping(raw, {}))


@contextlib.asynccontextmanager
async def _world(tmp: Path, instances: int, batch_size: int) -> AsyncIterator[World]:
    app_a, studies_a = _responder(tmp, A, [11], instances)
    app_b, studies_b = _responder(tmp, B, [21, 22], instances)
    control = ProxyControl()
    async with contextlib.AsyncExitStack() as stack:
        url_a = await stack.enter_async_context(running_server(app_a))
        url_b = await stack.enter_async_context(running_server(app_b))
        proxy_b = await stack.enter_async_context(running_server(_proxy(url_b, control)))
        urls = {A: url_a, B: proxy_b, DEAD: f"http://127.0.0.1:{_free_port()}"}
        initiator = _initiator(tmp, urls, batch_size)
        url = await stack.enter_async_context(running_server(initiator))
        yield World(
            url, tmp / "imported", tmp / "initiator.db", {A: studies_a, B: studies_b}, control
        )


@contextlib.contextmanager
def staff_world(tmp: Path, *, instances: int = 4, batch_size: int = 2) -> Iterator[World]:
    """The running world, from synchronous code (its event loop runs in a thread)."""
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(_world(tmp, instances, batch_size)) as world,
    ):
        yield world
