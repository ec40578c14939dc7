"""Responding Gateway end to end over real HTTP: XCPD, ITI-38 and ITI-39 from a folder archive.

``imagebridge``'s own ASGI app (create_app) runs under uvicorn on a free
loopback port with a SQLite store and a folder of synthetic studies; the
tests talk to it with the SOAP client, like a partner gateway would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from imagebridge.app import create_app
from imagebridge.config import Config, config_from_mapping
from imagebridge.dicom.manifest import parse_manifest
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.errors import SoapFaultReceived
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import Status
from imagebridge.model.retrieve import DocumentRequest, RetrieveDocumentSetRequest, XopInclude
from imagebridge.model.xcpd import (
    II,
    Device,
    ParameterList,
    PatientDiscoveryQuery,
    PersonName,
    QueryByParameter,
    QueryResponseCode,
    TimeInterval,
)
from imagebridge.model.xds import Code
from imagebridge.model.xds_query import (
    AdhocQueryRequest,
    FindDocumentsQuery,
    GetDocumentsQuery,
    ReturnType,
)
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_response,
    render_patient_discovery_query,
)
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import parse_adhoc_query_response, render_adhoc_query_request
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_response,
    render_retrieve_document_set_request,
)
from tests.conftest import Validator
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

HOME = "1.3.6.1.4.1.21367.13.70.201"
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
ALICE, BOB = DEMO_PATIENTS[0], DEMO_PATIENTS[1]
ALICE_ID = PatientId(ALICE.id, "2.25.1")
US = HomeCommunityId("1.3.6.1.4.1.21367.13.70.202")
KOS = Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(
    tmp: Path, extra_repos: list[dict[str, object]] | None = None, database_url: str = ""
) -> Config:
    archive = tmp / "archive"
    make_study(ALICE, archive / "alice-ct", modality="CT", instances=12, seed=1)
    make_study(ALICE, archive / "alice-mr", modality="MR", instances=3, seed=2)
    make_study(BOB, archive / "bob-cr", modality="CR", seed=3)
    raw = {
        "community": {"home_community_id": f"urn:oid:{HOME}", "patient_id_authority": "2.25.1"},
        "store": {"database_url": database_url or f"sqlite:///{tmp / 'ib.db'}"},
        "repositories": [
            {"unique_id": REPO, "source": "folder", "path": str(archive)},
            *(extra_repos or []),
        ],
    }
    return config_from_mapping(raw, {})


@pytest.fixture
async def gateway(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[str, SoapClient]]:
    """The gateway on a SQLite file, then on a real PostgreSQL database."""
    async with (
        running_server(create_app(_config(tmp_path, database_url=database_url))) as base,
        httpx.AsyncClient(timeout=30) as http,
    ):
        yield base, SoapClient(http)


def _xcpd(family: str, given: str, birth: str, gender: str | None) -> PatientDiscoveryQuery:
    return PatientDiscoveryQuery(
        message_id=II("2.25.9", "m1"),
        creation_time="20260101120000",
        sender=Device(II(US.oid), US),
        receiver=Device(II(HOME), HomeCommunityId(HOME)),
        query_by_parameter=QueryByParameter(
            query_id=II("2.25.9", "q1"),
            parameters=ParameterList(
                living_subject_administrative_gender=gender,
                living_subject_birth_time=TimeInterval(birth),
                living_subject_names=(PersonName(given=(given,), family=(family,)),),
            ),
        ),
    )


async def _discover(base: str, client: SoapClient, query: PatientDiscoveryQuery):  # type: ignore[no-untyped-def]
    spec = spec_of(Transaction.ITI_55)
    with await client.call(spec, f"{base}/xcpd", render_patient_discovery_query(query)) as r:
        return parse_patient_discovery_response(r.payload)


async def _find(base: str, client: SoapClient, request: AdhocQueryRequest):  # type: ignore[no-untyped-def]
    spec = spec_of(Transaction.ITI_38)
    with await client.call(spec, f"{base}/xca/query", render_adhoc_query_request(request)) as r:
        return parse_adhoc_query_response(r.payload)


async def test_patient_discovery_match_no_match_and_diacritics(
    gateway: tuple[str, SoapClient],
) -> None:
    base, client = gateway
    found = await _discover(base, client, _xcpd("Demo", "Alice", "19700101", "F"))
    assert found.query_ack.query_response_code is QueryResponseCode.OK
    assert [p.patient_id for p in found.patients] == [ALICE_ID]
    assert found.patients[0].home_community_id == HomeCommunityId(HOME)
    accents = await _discover(base, client, _xcpd("DÉMO ", " álice", "19700101", "F"))
    assert [p.patient_id for p in accents.patients] == [ALICE_ID]
    none = await _discover(base, client, _xcpd("Nobody", "Alice", "19700101", "F"))
    assert none.query_ack.query_response_code is QueryResponseCode.NF
    assert none.patients == ()
    wrong_sex = await _discover(base, client, _xcpd("Demo", "Alice", "19700101", "M"))
    assert wrong_sex.query_ack.query_response_code is QueryResponseCode.NF


async def test_find_documents_lists_one_kos_per_study(gateway: tuple[str, SoapClient]) -> None:
    base, client = gateway
    request = AdhocQueryRequest(
        query=FindDocumentsQuery(
            patient_id=ALICE_ID, status=(v.STATUS_APPROVED,), format_code=(KOS,)
        ),
    )
    response = await _find(base, client, request)
    assert response.status is Status.SUCCESS
    entries = response.document_entries
    assert len(entries) == 2
    for entry in entries:
        assert entry.format_code is not None
        assert (entry.format_code.code, entry.format_code.scheme) == (KOS.code, KOS.scheme)
        assert entry.mime_type == "application/dicom"
        assert entry.repository_unique_id == REPO and entry.home == HomeCommunityId(HOME)
        assert entry.size and entry.hash
        assert any(r.endswith(v.REFERENCE_ID_STUDY_INSTANCE_UID) for r in entry.reference_id_list)
    modalities = {c.code for e in entries for c in e.event_code_list}
    assert {"CT", "MR"} <= modalities
    # The same study keeps the same manifest (uniqueId, size and hash) across queries.
    again = await _find(base, client, request)
    assert {(e.unique_id, e.hash) for e in again.document_entries} == {
        (e.unique_id, e.hash) for e in entries
    }
    # Filters: an event code narrows the list; ObjectRef returns references.
    ct_only = dataclasses.replace(
        request,
        query=dataclasses.replace(
            request.query, event_code_list=((Code("CT", "1.2.840.10008.2.16.4"),),)
        ),
    )
    assert len((await _find(base, client, ct_only)).document_entries) == 1
    refs = await _find(
        base, client, dataclasses.replace(request, return_type=ReturnType.OBJECT_REF)
    )
    assert {r.id for r in refs.object_refs} == {e.entry_uuid for e in entries}


async def test_query_errors_are_in_band(gateway: tuple[str, SoapClient]) -> None:
    base, client = gateway
    unknown = AdhocQueryRequest(
        query=FindDocumentsQuery(
            patient_id=PatientId("NOPE", "2.25.1"), status=(v.STATUS_APPROVED,)
        )
    )
    response = await _find(base, client, unknown)
    assert response.status is Status.FAILURE
    assert [e.error_code for e in response.errors] == [v.XDS_UNKNOWN_PATIENT_ID]
    other_home = dataclasses.replace(unknown, home_community_id=HomeCommunityId("1.2.3.4"))
    response = await _find(base, client, other_home)
    assert [e.error_code for e in response.errors] == [v.XDS_UNKNOWN_COMMUNITY]
    no_home = AdhocQueryRequest(query=GetDocumentsQuery(unique_id=("1.2.3",)))
    response = await _find(base, client, no_home)
    assert [e.error_code for e in response.errors] == [v.XDS_MISSING_HOME_COMMUNITY_ID]
    assert all(e.location == f"urn:oid:{HOME}" for e in response.errors)


async def test_retrieve_returns_the_kos_and_get_documents_finds_it(
    gateway: tuple[str, SoapClient], tmp_path: Path, dciodvfy: Validator
) -> None:
    base, client = gateway
    listing = await _find(
        base,
        client,
        AdhocQueryRequest(
            query=FindDocumentsQuery(patient_id=ALICE_ID, status=(v.STATUS_APPROVED,))
        ),
    )
    entry = next(
        e for e in listing.document_entries if any(c.code == "CT" for c in e.event_code_list)
    )
    by_uid = await _find(
        base,
        client,
        AdhocQueryRequest(
            query=GetDocumentsQuery(unique_id=(entry.unique_id,)),
            home_community_id=HomeCommunityId(HOME),
        ),
    )
    assert [e.unique_id for e in by_uid.document_entries] == [entry.unique_id]
    spec = spec_of(Transaction.ITI_39)
    request = RetrieveDocumentSetRequest(
        (
            DocumentRequest(REPO, entry.unique_id, HomeCommunityId(HOME)),
            DocumentRequest(REPO, "1.2.3.999", HomeCommunityId(HOME)),
        )
    )
    payload = render_retrieve_document_set_request(request)
    with await client.call(spec, f"{base}/xca/retrieve", payload) as reply:
        response = parse_retrieve_document_set_response(reply.payload)
        assert response.status is Status.PARTIAL_SUCCESS
        assert [e.error_code for e in response.errors] == [v.XDS_DOCUMENT_UNIQUE_ID_ERROR]
        (document,) = response.document_responses
        assert isinstance(document.document, XopInclude)
        with reply.package.part_for_href(document.document.href).open() as part:
            kos = part.read()
    assert len(kos) == entry.size
    kos_file = tmp_path / "served-kos.dcm"
    kos_file.write_bytes(kos)
    dciodvfy(kos_file)  # the KOS built on demand is a valid DICOM KOS (no Error lines)
    manifest = parse_manifest(kos)
    assert manifest.sop_instance_uid == entry.unique_id
    assert sum(len(s.instances) for s in manifest.series) == 12
    assert {s.retrieve_location_uid for s in manifest.series} == {REPO}


async def test_wrong_action_on_an_endpoint_faults(gateway: tuple[str, SoapClient]) -> None:
    base, client = gateway
    request = AdhocQueryRequest(
        query=FindDocumentsQuery(patient_id=ALICE_ID, status=(v.STATUS_APPROVED,))
    )
    with pytest.raises(SoapFaultReceived) as info:
        await client.call(
            spec_of(Transaction.ITI_38), f"{base}/xcpd", render_adhoc_query_request(request)
        )
    assert info.value.subcodes == ("{http://www.w3.org/2005/08/addressing}ActionNotSupported",)


async def test_unreachable_pacs_is_an_in_band_registry_error(tmp_path: Path) -> None:
    dead = {
        "unique_id": "1.3.6.1.4.1.21367.13.71.201.9",
        "source": "dicomweb",
        "url": "http://127.0.0.1:9/dicom-web",
    }
    config = _config(tmp_path, [dead])
    async with running_server(create_app(config)) as base, httpx.AsyncClient(timeout=30) as http:
        client = SoapClient(http)
        request = AdhocQueryRequest(
            query=FindDocumentsQuery(patient_id=ALICE_ID, status=(v.STATUS_APPROVED,))
        )
        response = await _find(base, client, request)
    assert response.status is Status.PARTIAL_SUCCESS
    assert len(response.document_entries) == 2
    (error,) = response.errors
    assert error.error_code == v.XDS_REGISTRY_ERROR
    assert "not reachable" in error.code_context and "Traceback" not in error.code_context


async def test_files_that_arrive_while_serving_are_indexed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config = dataclasses.replace(
        config,
        repositories=tuple(dataclasses.replace(r, scan_interval=0.2) for r in config.repositories),
    )
    request = AdhocQueryRequest(
        query=FindDocumentsQuery(patient_id=ALICE_ID, status=(v.STATUS_APPROVED,))
    )
    async with running_server(create_app(config)) as base, httpx.AsyncClient(timeout=30) as http:
        client = SoapClient(http)
        assert len((await _find(base, client, request)).document_entries) == 2
        make_study(ALICE, tmp_path / "archive" / "alice-cr", modality="CR", seed=21)
        with anyio.fail_after(20):
            while len((await _find(base, client, request)).document_entries) < 3:
                await anyio.sleep(0.2)
