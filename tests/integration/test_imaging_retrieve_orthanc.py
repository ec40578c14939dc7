"""RAD-75 from a real Orthanc: each instance comes back as Orthanc stores it (issue 4, Real PACS).

The gateway has two repositories on one Orthanc: the DICOMweb source (WADO-RS
instance retrieve, stored transfer syntax) and the DIMSE source (C-FIND, then
C-GET).  DICOMweb returns Orthanc's stored file byte for byte.  C-GET carries
the data set only: the receiver writes its own File Meta Information
(PS3.10), so for DIMSE the data set after the File Meta group is compared
byte for byte, and the meta group's transfer syntax must match Orthanc's.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pydicom
import pytest

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import SyntheticStudy, make_study
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator, ImagingDocumentLocator
from imagebridge.model.outcome import Status
from imagebridge.model.retrieve import RetrieveDocumentSetResponse, XopInclude, imaging_request_for
from imagebridge.store import Store
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response
from tests.dicom_bytes import split_file_meta
from tests.http_server import running_server
from tests.integration.orthanc import OrthancServer

pytestmark = pytest.mark.anyio

HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
DICOMWEB_REPO = "1.3.6.1.4.1.21367.13.71.201.8"
DIMSE_REPO = "1.3.6.1.4.1.21367.13.71.201.9"
EXPLICIT = "1.2.840.10008.1.2.1"
ISSUER = HierarchicDesignator("RADPACS", "2.25.4712", "ISO")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _transfer_syntax(data: bytes) -> str:
    return str(
        pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
    )


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


async def _retrieve(
    client: SoapClient, url: str, locators: list[ImagingDocumentLocator]
) -> tuple[RetrieveDocumentSetResponse, dict[tuple[str, str], bytes]]:
    request = imaging_request_for(locators, HOME, (EXPLICIT,))
    payload = render_retrieve_imaging_document_set_request(request)
    with await client.call(spec_of(Transaction.RAD_75), url, payload) as reply:
        response = parse_retrieve_document_set_response(reply.payload)
        blobs = {}
        for doc in response.document_responses:
            assert isinstance(doc.document, XopInclude)
            with reply.package.part_for_href(doc.document.href).open() as part:
                blobs[(doc.repository_unique_id, doc.document_unique_id)] = part.read()
    return response, blobs


async def _wait_indexed(store: Store, locators: list[ImagingDocumentLocator]) -> None:
    with anyio.fail_after(60):
        for loc in locators:
            while not store.instance_locations(loc.sop_instance_uid, loc.repository_unique_id):
                await anyio.sleep(0.05)


@dataclass
class PacsGateway:
    url: str
    client: SoapClient
    orthanc: OrthancServer
    studies: list[SyntheticStudy]

    def locators(self, repo: str) -> list[ImagingDocumentLocator]:
        return [loc for study in self.studies for loc in _locators(study, repo)]


@pytest.fixture
async def pacs_gateway(orthanc: OrthancServer, tmp_path: Path) -> AsyncIterator[PacsGateway]:
    patient = DicomPatient("RADPACS^DORA", "RP-7540", ISSUER, "19720707", "F")
    studies = [
        # Small images in three series, and a few 4 MiB ones (several 1 MiB chunks,
        # many DIMSE PDUs each).
        make_study(patient, tmp_path / "mr", modality="MR", instances=3, seed=7540),
        make_study(
            patient, tmp_path / "ct", modality="CT", instances=3, rows=1448, columns=1448, seed=7541
        ),
    ]
    for study in studies:
        orthanc.upload_study(study)
    repos: list[dict[str, Any]] = [
        {"unique_id": DICOMWEB_REPO, "source": "dicomweb", "url": orthanc.dicomweb_url},
        {
            "unique_id": DIMSE_REPO,
            "source": "dimse",
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "called_ae": orthanc.aet,
            "calling_ae": orthanc.scu_aet,
        },
    ]
    raw = {
        "community": {"home_community_id": HOME.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp_path / 'ib.db'}"},
        "repositories": [{"scan_interval": 3600, **r} for r in repos],
    }
    app = create_app(config_from_mapping(raw, {}))
    async with running_server(app) as base, httpx.AsyncClient(timeout=120) as http:
        gateway = PacsGateway(f"{base}/xcai/retrieve", SoapClient(http), orthanc, studies)
        store = app.state.gateway.store
        await _wait_indexed(store, gateway.locators(DICOMWEB_REPO) + gateway.locators(DIMSE_REPO))
        yield gateway


async def test_dicomweb_source_returns_orthanc_stored_files_byte_identical(
    pacs_gateway: PacsGateway,
) -> None:
    gw = pacs_gateway
    locators = gw.locators(DICOMWEB_REPO)
    with anyio.fail_after(120):
        response, blobs = await _retrieve(gw.client, gw.url, locators)
    assert response.status is Status.SUCCESS and response.errors == ()
    assert len(blobs) == len(locators) == 9 + 3
    for loc in locators:
        stored = gw.orthanc.stored_file(loc.sop_instance_uid)
        assert blobs[(DICOMWEB_REPO, loc.sop_instance_uid)] == stored, loc.sop_instance_uid


async def test_dimse_source_returns_orthanc_stored_data_sets_byte_identical(
    pacs_gateway: PacsGateway,
) -> None:
    gw = pacs_gateway
    locators = gw.locators(DIMSE_REPO)
    with anyio.fail_after(120):
        response, blobs = await _retrieve(gw.client, gw.url, locators)
    assert response.status is Status.SUCCESS and response.errors == ()
    assert len(blobs) == len(locators)
    whole_file_identical = 0
    for loc in locators:
        stored = gw.orthanc.stored_file(loc.sop_instance_uid)
        sent = blobs[(DIMSE_REPO, loc.sop_instance_uid)]
        whole_file_identical += sent == stored
        # C-GET sends the data set; the File Meta group is written by our receiver.
        assert split_file_meta(sent)[1] == split_file_meta(stored)[1], loc.sop_instance_uid
        assert _transfer_syntax(sent) == _transfer_syntax(stored)
    print(
        f"\nFIGURE DIMSE whole files identical to Orthanc's: {whole_file_identical}/{len(locators)}"
    )


async def test_one_rad75_over_both_sources_at_once(pacs_gateway: PacsGateway) -> None:
    gw = pacs_gateway
    dicomweb, dimse = gw.locators(DICOMWEB_REPO), gw.locators(DIMSE_REPO)
    with anyio.fail_after(120):
        response, blobs = await _retrieve(gw.client, gw.url, dicomweb + dimse)
    assert response.status is Status.SUCCESS and response.errors == ()
    assert {repo for repo, _ in blobs} == {DICOMWEB_REPO, DIMSE_REPO}
    for loc in dicomweb:
        sent = blobs[(DICOMWEB_REPO, loc.sop_instance_uid)]
        assert sent == gw.orthanc.stored_file(loc.sop_instance_uid)
        dimse_sent = blobs[(DIMSE_REPO, loc.sop_instance_uid)]
        assert split_file_meta(dimse_sent)[1] == split_file_meta(sent)[1]
