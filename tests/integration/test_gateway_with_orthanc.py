"""The responding gateway in front of a real Orthanc, over DICOMweb and over DIMSE.

A partner's XCPD finds a patient held only in the PACS, ITI-38 lists its
study as a KOS manifest built on demand from the PACS, ITI-39 returns it;
when Orthanc stops, ITI-38 answers an in-band XDSRegistryError naming the
repository instead of a stack trace.  ``imagebridge check`` reports both states.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from imagebridge.app import create_app
from imagebridge.cli.check import run_check
from imagebridge.config import Config, config_from_mapping
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.manifest import parse_manifest
from imagebridge.dicom.synthetic import make_study
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator, ImagingDocumentLocator
from imagebridge.model.outcome import Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    RetrieveDocumentSetRequest,
    XopInclude,
    imaging_request_for,
)
from imagebridge.model.xds_query import AdhocQueryRequest, FindDocumentsQuery
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import parse_adhoc_query_response, render_adhoc_query_request
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_response,
    render_retrieve_document_set_request,
)
from tests.http_server import running_server
from tests.integration.orthanc import OrthancServer, require_orthanc, start_orthanc, stop_orthanc

pytestmark = pytest.mark.anyio

HOME = "1.3.6.1.4.1.21367.13.70.201"
REPO = "1.3.6.1.4.1.21367.13.71.201.7"
ISSUER = HierarchicDesignator("PACS", "2.25.77", "ISO")
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp: Path, repo: dict[str, Any]) -> Config:
    raw = {
        "community": {"home_community_id": HOME},
        "store": {"database_url": f"sqlite:///{tmp / 'ib.db'}"},
        "repositories": [{"unique_id": REPO, "scan_interval": 3600, **repo}],
    }
    return config_from_mapping(raw, {})


def _dicomweb(server: OrthancServer) -> dict[str, Any]:
    return {"source": "dicomweb", "url": server.dicomweb_url}


def _dimse(server: OrthancServer) -> dict[str, Any]:
    return {
        "source": "dimse",
        "host": "127.0.0.1",
        "port": server.dicom_port,
        "called_ae": server.aet,
        "calling_ae": server.scu_aet,
    }


@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
async def test_pacs_studies_are_served_and_a_dead_pacs_is_reported(
    kind: str, tmp_path: Path
) -> None:
    require_orthanc()
    server = start_orthanc(tmp_path / "orthanc")
    try:
        patient = DicomPatient(f"PACS^{kind.upper()}", f"PX-{kind}", ISSUER, "19800202", "M")
        study = make_study(patient, tmp_path / "study", modality="MR", instances=2, seed=11)
        server.upload_study(study)
        repo = _dicomweb(server) if kind == "dicomweb" else _dimse(server)
        config = _config(tmp_path, repo)
        pid = PatientId(patient.id, "2.25.77")
        find = AdhocQueryRequest(
            query=FindDocumentsQuery(patient_id=pid, status=(v.STATUS_APPROVED,))
        )
        async with (
            running_server(create_app(config)) as base,
            httpx.AsyncClient(timeout=60) as http,
        ):
            client = SoapClient(http)
            iti38, iti39 = spec_of(Transaction.ITI_38), spec_of(Transaction.ITI_39)
            with await client.call(
                iti38, f"{base}/xca/query", render_adhoc_query_request(find)
            ) as r:
                listing = parse_adhoc_query_response(r.payload)
            assert listing.status is Status.SUCCESS, listing.errors
            (entry,) = listing.document_entries
            assert entry.repository_unique_id == REPO
            request = RetrieveDocumentSetRequest(
                (DocumentRequest(REPO, entry.unique_id, HomeCommunityId(HOME)),)
            )
            payload = render_retrieve_document_set_request(request)
            with await client.call(iti39, f"{base}/xca/retrieve", payload) as r:
                (doc,) = parse_retrieve_document_set_response(r.payload).document_responses
                assert isinstance(doc.document, XopInclude)
                with r.package.part_for_href(doc.document.href).open() as part:
                    manifest = parse_manifest(part.read())
            sops = {i.sop_instance_uid for s in manifest.series for i in s.instances}
            assert len(sops) == 3 * 2  # MR: three series of two instances

            buffer = io.StringIO()
            assert await run_check(config, Console(file=buffer, width=200)) == 0
            assert "ok" in buffer.getvalue()

            stop_orthanc(server, kill=True)
            with await client.call(
                iti38, f"{base}/xca/query", render_adhoc_query_request(find)
            ) as r:
                down = parse_adhoc_query_response(r.payload)
            # The index still knows the study, so the manifest is offered with the error.
            assert down.status in (Status.PARTIAL_SUCCESS, Status.FAILURE)
            (error,) = down.errors
            assert error.error_code == v.XDS_REGISTRY_ERROR
            assert REPO in error.code_context and "Traceback" not in error.code_context

            buffer = io.StringIO()
            assert await run_check(config, Console(file=buffer, width=200)) == 1
            assert "FAILED" in buffer.getvalue()
    finally:
        stop_orthanc(server, kill=True)


async def test_rad75_series_retrieve_from_dicomweb_is_byte_identical(tmp_path: Path) -> None:
    """Many instances of one series come from one WADO-RS series retrieve, unchanged."""
    require_orthanc()
    server = start_orthanc(tmp_path / "orthanc")
    try:
        patient = DicomPatient("PACS^SERIES", "PX-series", ISSUER, "19700303", "F")
        study = make_study(patient, tmp_path / "study", modality="CT", instances=7, seed=12)
        server.upload_study(study)
        config = _config(tmp_path, _dicomweb(server))
        locators = []
        for path in study.files:
            header = read_instance_header(path)
            locators.append(
                ImagingDocumentLocator(
                    REPO,
                    header.study.study_instance_uid,
                    header.series.series_instance_uid,
                    header.sop_instance_uid,
                )
            )
        missing = dataclasses.replace(
            locators[0], sop_instance_uid=locators[0].sop_instance_uid + ".9"
        )
        request = imaging_request_for([*locators, missing], HomeCommunityId(HOME), (EXPLICIT,))
        async with (
            running_server(create_app(config)) as base,
            httpx.AsyncClient(timeout=60) as http,
        ):
            payload = render_retrieve_imaging_document_set_request(request)
            spec = spec_of(Transaction.RAD_75)
            with await SoapClient(http).call(spec, f"{base}/xcai/retrieve", payload) as r:
                response = parse_retrieve_document_set_response(r.payload)
                blobs = {}
                for doc in response.document_responses:
                    assert isinstance(doc.document, XopInclude)
                    with r.package.part_for_href(doc.document.href).open() as f:
                        blobs[doc.document_unique_id] = f.read()
        assert response.status is Status.PARTIAL_SUCCESS
        assert [e.error_code for e in response.errors] == [v.XDS_DOCUMENT_UNIQUE_ID_ERROR]
        assert set(blobs) == {loc.sop_instance_uid for loc in locators}
        for sop, blob in blobs.items():
            assert blob == server.stored_file(sop)
    finally:
        stop_orthanc(server, kill=True)
