"""The initiating pull end to end over real HTTP: demographics → ITI-55 → ITI-38 → ITI-39 →
KOS → RAD-75 → a folder, across several communities, some of which misbehave.

Communities A and B are real imagebridge responders (create_app under uvicorn)
over folder archives of synthetic studies.  The others are reached over real
loopback HTTP too: one refuses connections, one answers with a SOAP Fault, one
with a body that is not XML, one sends headers and then hangs; B's RAD-75 goes
through a proxy that cuts the MTOM reply short in one test.  Every community is
reported with its own status; the images that can arrive do, byte for byte.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.fanout import OutcomeStatus
from imagebridge.actors.initiating.folder_sink import FolderSink
from imagebridge.actors.initiating.pull import Demographics, PullSettings
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.synthetic import DEMO_PATIENTS, SyntheticStudy, make_study
from imagebridge.directory.static import communities_from_config
from imagebridge.model.directory import DirectorySnapshot
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import Status
from tests.http_server import running_server
from tests.misbehaving_partner import misbehaving_app, truncating_proxy

pytestmark = pytest.mark.anyio

ALICE = DEMO_PATIENTS[0]
US = HomeCommunityId("1.3.6.1.4.1.21367.13.70.1")
A = "1.3.6.1.4.1.21367.13.70.101"
B = "1.3.6.1.4.1.21367.13.70.102"
DEAD, FAULT, GARBAGE, HANG = (f"1.3.6.1.4.1.21367.13.70.{n}" for n in (103, 104, 105, 106))
ALICE_DEMOGRAPHICS = Demographics("Demo", "Alice", ALICE.birth_date, ALICE.sex)
ALICE_ID = PatientId(ALICE.id, "2.25.1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Partners:
    studies: dict[str, list[SyntheticStudy]]
    urls: dict[str, str]


def _responder(
    tmp: Path, hcid: str, repo: str, seeds: list[int]
) -> tuple[object, list[SyntheticStudy]]:
    archive = tmp / hcid / "archive"
    studies = [
        make_study(ALICE, archive / f"s{seed}", modality="CT", instances=4, seed=seed)
        for seed in seeds
    ]
    raw = {
        "community": {"home_community_id": hcid, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / hcid / 'ib.db'}"},
        "repositories": [{"unique_id": repo, "source": "folder", "path": str(archive)}],
    }
    return create_app(config_from_mapping(raw, {})), studies


@pytest.fixture
async def partners(tmp_path: Path) -> AsyncIterator[Partners]:
    app_a, studies_a = _responder(tmp_path, A, A + ".1", [11, 12])
    app_b, studies_b = _responder(tmp_path, B, B + ".1", [21])
    async with AsyncExitStack() as stack:
        urls = {
            A: await stack.enter_async_context(running_server(app_a)),
            B: await stack.enter_async_context(running_server(app_b)),
            DEAD: f"http://127.0.0.1:{_free_port()}",
            FAULT: await stack.enter_async_context(running_server(misbehaving_app("fault"))),
            GARBAGE: await stack.enter_async_context(running_server(misbehaving_app("garbage"))),
            HANG: await stack.enter_async_context(running_server(misbehaving_app("hang"))),
        }
        yield Partners({A: studies_a, B: studies_b}, urls)


def _directory(
    urls: dict[str, str],
    *,
    rad75: dict[str, str] | None = None,
    limit: dict[str, int] | None = None,
) -> DirectorySnapshot:
    entries = []
    for hcid, base in urls.items():
        entries.append(
            {
                "home_community_id": hcid,
                "name": f"community {hcid.rsplit('.', 1)[-1]}",
                "xcpd_url": f"{base}/xcpd",
                "xca_query_url": f"{base}/xca/query",
                "xca_retrieve_url": f"{base}/xca/retrieve",
                "xcai_retrieve_url": (rad75 or {}).get(hcid, f"{base}/xcai/retrieve"),
                "timeout_connect": 2,
                "timeout_read": 2,
                "timeout_overall": 5,
                **({"max_documents_per_retrieve": limit[hcid]} if limit and hcid in limit else {}),
            }
        )
    return communities_from_config({"communities": entries})


def _workflow(clients: PartnerClients, directory: DirectorySnapshot) -> PullWorkflow:
    return PullWorkflow(
        clients,
        directory,
        PullSettings(home=US, deadline=8.0, retrieve_deadline=30.0),
        breaker=CircuitBreaker(),
    )


async def test_pull_from_two_communities_while_four_misbehave(
    partners: Partners, tmp_path: Path
) -> None:
    directory = _directory(partners.urls)
    into = FolderSink(tmp_path / "into")
    async with PartnerClients() as clients:
        flow = _workflow(clients, directory)
        found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities())
        status = {o.home_community_id.oid: o.status for o in found.outcomes.outcomes}
        assert status == {
            A: OutcomeStatus.OK,
            B: OutcomeStatus.OK,
            DEAD: OutcomeStatus.UNREACHABLE,
            FAULT: OutcomeStatus.ERROR,
            GARBAGE: OutcomeStatus.ERROR,
            HANG: OutcomeStatus.TIMEOUT,
        }
        by_id = {o.home_community_id.oid: o for o in found.outcomes.outcomes}
        assert "closed for maintenance" in by_id[FAULT].detail
        assert by_id[DEAD].code == "XDSUnavailableCommunity"
        assert {m.home.oid for m in found.matches} == {A, B}

        studies = await flow.find_studies(found.matches)
        assert [o.status for o in studies.outcomes.outcomes] == [OutcomeStatus.OK] * 2
        offered = {
            (o.community.home_community_id.oid, o.study_instance_uids[0]) for o in studies.offers
        }
        expected = {(h, s.study_instance_uid) for h, ss in partners.studies.items() for s in ss}
        assert offered == expected

        report = await flow.retrieve(studies.offers, into.part_sink)
        try:
            assert [o.status for o in report.outcomes.outcomes] == [OutcomeStatus.OK] * 2
            written = 0
            assert len(report.receipts) == 3  # one RAD-75 per study
            for receipt in report.receipts:
                assert receipt.result.status is Status.SUCCESS
                stored = into.store(receipt.result, receipt.offer.locators)
                assert stored.unplaced == []
                written += len(stored.paths)
        finally:
            report.close()
    sources = [f for ss in partners.studies.values() for s in ss for f in s.files]
    assert written == len(sources) == 12
    arrived = {p.name: p.read_bytes() for p in (tmp_path / "into").rglob("*.dcm")}
    assert len(arrived) == 12
    assert sorted(arrived.values()) == sorted(f.read_bytes() for f in sources)
    assert not any((tmp_path / "into" / ".incoming").iterdir())


async def test_truncated_mtom_from_one_community_spares_the_other(
    partners: Partners, tmp_path: Path
) -> None:
    async with running_server(truncating_proxy(partners.urls[B], keep=3000)) as proxy:
        directory = _directory(
            {A: partners.urls[A], B: partners.urls[B]}, rad75={B: f"{proxy}/xcai/retrieve"}
        )
        into = FolderSink(tmp_path / "into")
        async with PartnerClients() as clients:
            flow = _workflow(clients, directory)
            found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities())
            studies = await flow.find_studies(found.matches)
            report = await flow.retrieve(studies.offers, into.part_sink)
            try:
                by_id = {o.home_community_id.oid: o for o in report.outcomes.outcomes}
                assert by_id[A].status is OutcomeStatus.OK
                assert by_id[A].value is not None
                assert [len(r.result.documents) for r in by_id[A].value] == [4, 4]
                assert by_id[B].status is OutcomeStatus.ERROR
                assert "MimeTruncated" in by_id[B].detail
            finally:
                report.close()
    assert not any((tmp_path / "into" / ".incoming").iterdir())


async def test_circuit_breaker_skips_a_dead_partner_on_the_next_pulls(partners: Partners) -> None:
    directory = _directory({A: partners.urls[A], DEAD: partners.urls[DEAD]})
    breaker = CircuitBreaker()
    async with PartnerClients() as clients:
        flow = PullWorkflow(
            clients, directory, PullSettings(home=US, deadline=8.0), breaker=breaker
        )
        seen = []
        for _ in range(5):
            found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities())
            by_id = {o.home_community_id.oid: o for o in found.outcomes.outcomes}
            assert by_id[A].status is OutcomeStatus.OK
            seen.append(by_id[DEAD].status)
    assert OutcomeStatus.UNREACHABLE in seen
    assert seen[-1] is OutcomeStatus.SKIPPED


async def test_retrieves_are_batched_to_the_partner_limit(
    partners: Partners, tmp_path: Path
) -> None:
    directory = _directory({A: partners.urls[A]}, limit={A: 3})
    into = FolderSink(tmp_path / "into")
    async with PartnerClients() as clients:
        flow = _workflow(clients, directory)
        found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities())
        studies = await flow.find_studies(found.matches)
        report = await flow.retrieve(studies.offers, into.part_sink)
        try:
            receipts = report.receipts
            assert [r.requested for r in receipts] == [4, 4]
            assert [r.result.exchanges for r in receipts] == [2, 2]  # 3 + 1 instances each
            assert all(r.result.status is Status.SUCCESS for r in receipts)
            stored = [p for r in receipts for p in into.store(r.result, r.offer.locators).paths]
        finally:
            report.close()
    sources = [f for s in partners.studies[A] for f in s.files]
    assert sorted(p.read_bytes() for p in stored) == sorted(f.read_bytes() for f in sources)


async def test_query_for_all_formats_keeps_only_the_kos_entries(partners: Partners) -> None:
    directory = _directory({A: partners.urls[A]})
    async with PartnerClients() as clients:
        settings = PullSettings(home=US, deadline=8.0, query_by_format_code=False)
        flow = PullWorkflow(clients, directory, settings)
        query = flow.kos_query(ALICE_ID, HomeCommunityId(A))
        assert query.query.format_code == ()  # type: ignore[union-attr]
        found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities())
        studies = await flow.find_studies(found.matches)
    assert sorted(o.study_instance_uids[0] for o in studies.offers) == sorted(
        s.study_instance_uid for s in partners.studies[A]
    )
    assert all(o.entry.format_code is not None for o in studies.offers)
