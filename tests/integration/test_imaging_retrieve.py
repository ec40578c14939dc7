"""RAD-75 and RAD-69 end to end over real HTTP, from a folder archive and through a second gateway.

The Responding Imaging Gateway streams each instance as an MTOM part and
writes the envelope last; the tests check the bytes against the files, the
per-instance errors, and the fan-out to a remote Imaging Document Source
(another imagebridge) over RAD-69.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, SyntheticStudy, make_study
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import Severity, Status
from imagebridge.model.retrieve import RetrieveDocumentSetResponse, XopInclude, imaging_request_for
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
REMOTE_REPO = "1.3.6.1.4.1.21367.13.71.201.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp: Path, name: str, repos: list[dict[str, Any]]) -> Any:
    raw = {
        "community": {"home_community_id": HOME.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / (name + '.db')}"},
        "repositories": repos,
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


async def _retrieve(
    client: SoapClient, url: str, locators: list[ImagingDocumentLocator], **kw: Any
) -> tuple[RetrieveDocumentSetResponse, dict[str, bytes]]:
    home = kw.get("home", HOME)
    syntaxes = kw.get("syntaxes", (EXPLICIT,))
    request = imaging_request_for(locators, home, syntaxes)
    spec = spec_of(kw.get("transaction", Transaction.RAD_75))
    with await client.call(spec, url, render_retrieve_imaging_document_set_request(request)) as r:
        response = parse_retrieve_document_set_response(r.payload)
        blobs = {}
        for doc in response.document_responses:
            assert isinstance(doc.document, XopInclude)
            with r.package.part_for_href(doc.document.href).open() as f:
                blobs[doc.document_unique_id] = f.read()
    return response, blobs


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[tuple[str, SoapClient, SyntheticStudy]]:
    study = make_study(DEMO_PATIENTS[0], tmp_path / "archive" / "ct", modality="CT", instances=6)
    config = _config(
        tmp_path, "a", [{"unique_id": REPO, "source": "folder", "path": str(tmp_path / "archive")}]
    )
    async with running_server(create_app(config)) as base, httpx.AsyncClient(timeout=30) as http:
        yield base, SoapClient(http), study


async def test_rad75_streams_every_instance_byte_identical(
    archive: tuple[str, SoapClient, SyntheticStudy],
) -> None:
    base, client, study = archive
    locators = _locators(study, REPO)
    response, blobs = await _retrieve(client, f"{base}/xcai/retrieve", locators)
    assert response.status is Status.SUCCESS and response.errors == ()
    assert {d.home_community_id for d in response.document_responses} == {HOME}
    expected = {
        loc.sop_instance_uid: p.read_bytes() for loc, p in zip(locators, study.files, strict=True)
    }
    assert blobs == expected


async def test_rad75_per_instance_errors(archive: tuple[str, SoapClient, SyntheticStudy]) -> None:
    base, client, study = archive
    good = _locators(study, REPO)
    unknown_sop = ImagingDocumentLocator(
        REPO,
        good[0].study_instance_uid,
        good[0].series_instance_uid,
        good[0].sop_instance_uid + ".999",
    )
    unknown_repo = dataclasses.replace(good[1], repository_unique_id=REPO + ".999")
    locators = [good[0], good[0], unknown_sop, unknown_repo]
    response, blobs = await _retrieve(client, f"{base}/xcai/retrieve", locators)
    assert response.status is Status.PARTIAL_SUCCESS
    assert list(blobs) == [good[0].sop_instance_uid]
    codes = sorted((e.error_code, e.severity) for e in response.errors)
    assert codes == sorted(
        [
            (v.XDS_REPOSITORY_ERROR, Severity.WARNING),
            (v.XDS_DOCUMENT_UNIQUE_ID_ERROR, Severity.ERROR),
            (v.XDS_UNKNOWN_REPOSITORY_ID, Severity.ERROR),
        ]
    )
    assert {e.location for e in response.errors} == {HOME.urn}
    # Missing and foreign homeCommunityIds fail every instance without data.
    response, blobs = await _retrieve(client, f"{base}/xcai/retrieve", good[:1], home=None)
    assert response.status is Status.FAILURE and not blobs
    assert [e.error_code for e in response.errors] == [v.XDS_MISSING_HOME_COMMUNITY_ID]
    other = HomeCommunityId("1.2.3.4")
    response, _ = await _retrieve(client, f"{base}/xcai/retrieve", good[:1], home=other)
    assert [e.error_code for e in response.errors] == [v.XDS_UNKNOWN_COMMUNITY]
    # A transfer syntax the archive cannot produce.
    response, blobs = await _retrieve(
        client, f"{base}/xcai/retrieve", good[:1], syntaxes=("1.2.840.10008.1.2.4.50",)
    )
    assert response.status is Status.FAILURE and not blobs
    assert [e.error_code for e in response.errors] == [v.XDS_REPOSITORY_ERROR]


async def test_rad75_fans_out_to_a_remote_ids_over_rad69(tmp_path: Path) -> None:
    local = make_study(DEMO_PATIENTS[1], tmp_path / "local" / "cr", modality="CR", seed=4)
    remote = make_study(
        DEMO_PATIENTS[1], tmp_path / "remote" / "mr", modality="MR", instances=2, seed=5
    )
    ids_config = _config(
        tmp_path,
        "ids",
        [{"unique_id": REMOTE_REPO, "source": "folder", "path": str(tmp_path / "remote")}],
    )
    async with running_server(create_app(ids_config)) as ids_base:
        rig_config = _config(
            tmp_path,
            "rig",
            [
                {"unique_id": REPO, "source": "folder", "path": str(tmp_path / "local")},
                {"unique_id": REMOTE_REPO, "source": "ids", "url": f"{ids_base}/ids/retrieve"},
            ],
        )
        async with (
            running_server(create_app(rig_config)) as rig_base,
            httpx.AsyncClient(timeout=30) as http,
        ):
            client = SoapClient(http)
            locators = _locators(local, REPO) + _locators(remote, REMOTE_REPO)
            response, blobs = await _retrieve(client, f"{rig_base}/xcai/retrieve", locators)
            assert response.status is Status.SUCCESS, response.errors
            expected = {
                loc.sop_instance_uid: p.read_bytes()
                for loc, p in zip(locators, [*local.files, *remote.files], strict=True)
            }
            assert blobs == expected
            repos = {
                d.document_unique_id: d.repository_unique_id for d in response.document_responses
            }
            assert set(repos.values()) == {REPO, REMOTE_REPO}
            # RAD-69 straight to the IDS works too (no homeCommunityId needed).
            response, blobs = await _retrieve(
                client,
                f"{ids_base}/ids/retrieve",
                _locators(remote, REMOTE_REPO),
                home=None,
                transaction=Transaction.RAD_69,
            )
            assert response.status is Status.SUCCESS and len(blobs) == 6
        # The IDS is gone: its instances fail, the local ones still arrive.
    async with (
        running_server(create_app(rig_config)) as rig_base,
        httpx.AsyncClient(timeout=30) as http,
    ):
        locators = _locators(local, REPO) + _locators(remote, REMOTE_REPO)
        response, blobs = await _retrieve(SoapClient(http), f"{rig_base}/xcai/retrieve", locators)
        assert response.status is Status.PARTIAL_SUCCESS
        assert len(blobs) == len(local.files)
        assert {e.error_code for e in response.errors} == {v.XDS_REPOSITORY_ERROR}
        assert len(response.errors) == 6


async def test_rad75_transcodes_when_only_uncompressed_is_requested(tmp_path: Path) -> None:
    study = make_study(DEMO_PATIENTS[2], tmp_path / "src", modality="CT", instances=2, seed=8)
    archive = tmp_path / "rle"
    archive.mkdir()
    originals = {}
    for i, path in enumerate(study.files):
        ds = dcmread(path)
        originals[ds.SOPInstanceUID] = ds.PixelData
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(archive / f"{i}.dcm", enforce_file_format=True)
    config = _config(tmp_path, "t", [{"unique_id": REPO, "source": "folder", "path": str(archive)}])
    async with running_server(create_app(config)) as base, httpx.AsyncClient(timeout=30) as http:
        client = SoapClient(http)
        locators = _locators(study, REPO)
        response, blobs = await _retrieve(client, f"{base}/xcai/retrieve", locators)
        assert response.status is Status.SUCCESS, response.errors
        for sop, blob in blobs.items():
            got = dcmread(io.BytesIO(blob))
            assert got.file_meta.TransferSyntaxUID == EXPLICIT
            assert got.PixelData == originals[sop]
        # Asking for RLE gets the stored bytes unchanged.
        response, blobs = await _retrieve(
            client, f"{base}/xcai/retrieve", locators, syntaxes=(str(RLELossless),)
        )
        assert response.status is Status.SUCCESS
        assert {dcmread(io.BytesIO(b)).file_meta.TransferSyntaxUID for b in blobs.values()} == {
            RLELossless
        }
