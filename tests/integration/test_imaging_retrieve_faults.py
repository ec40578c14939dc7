"""RAD-75 bad input and faults: each gives a defined response and the gateway keeps serving.

Issue 4, "Bad input and faults" and "Streaming", over real HTTP:

* empty Study/Series/SOP Instance UIDs in a hand-written request: an in-band
  Failure with an ``XDSRepositoryError`` (an empty RepositoryUniqueId is a
  Sender fault, as for ITI-39);
* 10,000 DocumentRequests are answered (timed, with the server's RSS);
  10,001 are refused with a Sender fault naming the limit;
* an instance requested twice is sent once, with a Warning;
* an unknown transfer syntax fails each instance; a malformed one fails the
  request in-band;
* the PACS (a real Orthanc, DICOMweb and DIMSE) killed in the middle of a
  retrieve: the reply is still a complete MTOM package, PartialSuccess with
  one error per instance not sent, and what was sent is Orthanc's bytes;
  the PACS down before the request: Failure, one error per instance;
* the client hanging up in the middle: the server stays up, serves the next
  request, keeps no file (spool or archive) open and logs no error;
* a ~200 MB study (4 MiB and 8 MiB instances) streams from a folder archive
  with the server's peak RSS under 150 MB.

The gateways that are measured (RSS, open files) run as a separate uvicorn
process built by :func:`gateway_from_env`; the others run in-process.
"""

from __future__ import annotations

import html
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
from lxml import etree
from starlette.applications import Starlette

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, SyntheticStudy, make_study
from imagebridge.errors import SoapFaultReceived
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator, ImagingDocumentLocator
from imagebridge.model.outcome import RegistryError, Severity, Status
from imagebridge.model.retrieve import RetrieveDocumentSetResponse, XopInclude, imaging_request_for
from imagebridge.store import Store
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.wire import ns
from imagebridge.wire.mime import parse_media_type
from imagebridge.wire.mtom import MtomPackage, MtomReader
from imagebridge.wire.soap import parse_envelope, render_envelope
from imagebridge.wire.wsa import request_headers
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response
from imagebridge.wire.xml import Element, parse_xml, serialize
from tests.dicom_bytes import dataset_after_file_meta
from tests.http_server import running_server
from tests.integration.orthanc import OrthancServer, free_port, require_orthanc, start_orthanc

pytestmark = pytest.mark.anyio

HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
PACS_REPO = "1.3.6.1.4.1.21367.13.71.201.5"
EXPLICIT = "1.2.840.10008.1.2.1"
RAD_75 = spec_of(Transaction.RAD_75)
SOURCE_FAILURE = v.XDS_REPOSITORY_ERROR
"""Code of an instance the archive failed to deliver: what a remote IDS that does not answer
and a failed DICOMweb series retrieve give.  (Since 56bf719 a failed single-instance fetch
gives SourceError.xds_error_code, XDSRegistryError, instead.)"""
ISSUER = HierarchicDesignator("FAULTS", "2.25.4711", "ISO")
CONFIG_ENV = "IB_FAULTS_GATEWAY_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _figure(test: str, **values: object) -> None:
    """Print a measured figure (shown with ``pytest -s``)."""
    print(f"\nFIGURE {test}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


# --- gateway configuration and process ------------------------------------------------------


def _raw_config(tmp: Path, name: str, repos: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "community": {"home_community_id": HOME.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / (name + '.db')}"},
        "repositories": [{"scan_interval": 3600, **r} for r in repos],
    }


def _folder(repo: str, path: Path) -> dict[str, Any]:
    return {"unique_id": repo, "source": "folder", "path": str(path)}


def _dicomweb(repo: str, server: OrthancServer) -> dict[str, Any]:
    return {"unique_id": repo, "source": "dicomweb", "url": server.dicomweb_url}


def _dimse(repo: str, server: OrthancServer) -> dict[str, Any]:
    return {
        "unique_id": repo,
        "source": "dimse",
        "host": "127.0.0.1",
        "port": server.dicom_port,
        "called_ae": server.aet,
        "calling_ae": server.scu_aet,
    }


def _pacs_repo(kind: str, repo: str, server: OrthancServer) -> dict[str, Any]:
    return _dicomweb(repo, server) if kind == "dicomweb" else _dimse(repo, server)


def gateway_from_env() -> Starlette:
    """``uvicorn --factory`` target: the gateway for the JSON configuration named in the env."""
    raw = json.loads(Path(os.environ[CONFIG_ENV]).read_text(encoding="utf-8"))
    return create_app(config_from_mapping(raw, {}))


@dataclass
class GatewayProcess:
    """A gateway served by uvicorn in a child process (its own RSS and file descriptors)."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    spool_dir: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def peak_rss(self) -> int:
        """VmHWM: the highest RSS the process ever had (bytes)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def open_files(self) -> Counter[str]:
        """Targets of the process's descriptors that are files (deleted ones included)."""
        found: Counter[str] = Counter()
        fd_dir = Path(f"/proc/{self.process.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if target.startswith("/") and not target.startswith("/dev/"):
                found[target] += 1
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def gateway_process(folder: Path, raw_config: dict[str, Any]) -> Iterator[GatewayProcess]:
    """Run the gateway of *raw_config* in ``python -m uvicorn --factory``; TMPDIR is its spool."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc (Linux) to watch the server's memory and descriptors")
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "gateway.json"
    config_path.write_text(json.dumps(raw_config), encoding="utf-8")
    spool = folder / "spool"
    spool.mkdir(exist_ok=True)
    log_path = folder / "gateway.log"
    port = free_port()
    env = {**os.environ, CONFIG_ENV: str(config_path), "TMPDIR": str(spool)}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"{__name__}:gateway_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log_path, spool)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited at start-up:\n{gateway.log()}")
            try:
                httpx.get(gateway.base_url, timeout=1.0)  # any answer: it serves
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start:\n{gateway.log()}") from None
                time.sleep(0.05)
        yield gateway
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class RssSampler:
    """Samples a process's RSS every few milliseconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(int(self._process.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


# --- requests and replies --------------------------------------------------------------------


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


def _request(
    locators: list[ImagingDocumentLocator], syntaxes: tuple[str, ...] = (EXPLICIT,)
) -> Element:
    return render_retrieve_imaging_document_set_request(
        imaging_request_for(locators, HOME, syntaxes)
    )


def _handwritten(
    study_uid: str,
    series_uid: str,
    documents: list[tuple[str, str]],
    syntaxes: tuple[str, ...] = (EXPLICIT,),
) -> Element:
    """A RAD-75 request written by hand: UIDs go on the wire exactly as given."""
    docs = "".join(
        "<xds:DocumentRequest>"
        f"<xds:HomeCommunityId>{HOME.urn}</xds:HomeCommunityId>"
        f"<xds:RepositoryUniqueId>{html.escape(repo)}</xds:RepositoryUniqueId>"
        f"<xds:DocumentUniqueId>{html.escape(sop)}</xds:DocumentUniqueId>"
        "</xds:DocumentRequest>"
        for repo, sop in documents
    )
    ts = "".join(
        f"<iherad:TransferSyntaxUID>{html.escape(t)}</iherad:TransferSyntaxUID>" for t in syntaxes
    )
    text = (
        f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{ns.XDSI}" xmlns:xds="{ns.XDS}">'
        f'<iherad:StudyRequest studyInstanceUID="{html.escape(study_uid)}">'
        f'<iherad:SeriesRequest seriesInstanceUID="{html.escape(series_uid)}">{docs}'
        "</iherad:SeriesRequest></iherad:StudyRequest>"
        f"<iherad:TransferSyntaxUIDList>{ts}</iherad:TransferSyntaxUIDList>"
        "</iherad:RetrieveImagingDocumentSetRequest>"
    )
    return etree.fromstring(text.encode())


async def _call(
    client: SoapClient, url: str, payload: Element
) -> tuple[RetrieveDocumentSetResponse, dict[str, bytes], int]:
    """RAD-75 with the project's SOAP client: response, bodies by SOP UID, MIME part count."""
    with await client.call(RAD_75, url, payload) as reply:
        response = parse_retrieve_document_set_response(reply.payload)
        return response, _bodies(response, reply.package), len(reply.package.parts)


def _bodies(response: RetrieveDocumentSetResponse, package: MtomPackage) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for doc in response.document_responses:
        assert isinstance(doc.document, XopInclude)
        assert doc.document_unique_id not in blobs, "an instance was sent twice"
        with package.part_for_href(doc.document.href).open() as part:
            blobs[doc.document_unique_id] = part.read()
    return blobs


@dataclass
class StreamedRetrieve:
    """What a raw streamed RAD-75 exchange gave: the decoded reply and how the body ended."""

    status_code: int
    content_type: str
    received: int
    complete: bool
    """The body ended with the closing delimiter (``--boundary--``)."""
    response: RetrieveDocumentSetResponse | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)


def _envelope(payload: Element, url: str) -> bytes:
    headers = request_headers(RAD_75, f"urn:uuid:{os.urandom(16).hex()}", url)
    return serialize(render_envelope(headers, payload))


async def _stream_retrieve(
    http: httpx.AsyncClient,
    url: str,
    payload: Element,
    *,
    after_first_part: Callable[[], None] | None = None,
    hang_up_after_first_part: float | None = None,
) -> StreamedRetrieve:
    """POST a RAD-75 and read the MTOM reply chunk by chunk, acting once the first part is in.

    The first part is in when the second delimiter arrives.  With
    *hang_up_after_first_part* (seconds) the client stops reading there, waits
    that long, and closes the connection.
    """
    body = _envelope(payload, url)
    headers = {"Content-Type": SOAP_CONTENT_TYPE}
    async with http.stream("POST", url, content=body, headers=headers) as reply:
        content_type = reply.headers.get("content-type", "")
        media = parse_media_type(content_type)
        outcome = StreamedRetrieve(reply.status_code, content_type, 0, False)
        if media.mime_type != "multipart/related":
            return outcome
        boundary = (media.param("boundary") or "").encode("ascii")
        delimiter = b"--" + boundary
        closing = b"\r\n--" + boundary + b"--\r\n"
        reader = MtomReader(content_type)
        seen = 0
        carry = b""
        tail = b""
        acted = False
        try:
            async for chunk in reply.aiter_raw():
                outcome.received += len(chunk)
                reader.feed(chunk)
                window = carry + chunk
                seen += window.count(delimiter)
                carry = window[-(len(delimiter) - 1) :]
                tail = (tail + chunk)[-len(closing) :]
                if seen >= 2 and not acted:
                    acted = True
                    if after_first_part is not None:
                        after_first_part()
                    if hang_up_after_first_part is not None:
                        reader.abort()
                        await anyio.sleep(hang_up_after_first_part)
                        return outcome
            outcome.complete = tail == closing
            package = reader.close()
        except BaseException:
            reader.abort()
            raise
    with package:
        message = parse_envelope(parse_xml(package.root))
        assert message.payload is not None
        outcome.response = parse_retrieve_document_set_response(message.payload)
        outcome.blobs = _bodies(outcome.response, package)
    return outcome


def _sop_of_error(error: RegistryError, sops: set[str]) -> str:
    named = [sop for sop in sops if sop in error.code_context]
    assert len(named) == 1, f"the error names no single requested instance: {error}"
    return named[0]


async def _wait_indexed(
    store: Store, locators: list[ImagingDocumentLocator], timeout: float
) -> None:
    """Wait for the background indexing of a PACS (it runs in the server's event loop)."""
    with anyio.fail_after(timeout):
        for loc in locators:
            while not store.instance_locations(loc.sop_instance_uid, loc.repository_unique_id):
                await anyio.sleep(0.05)


# --- an in-process gateway over a small folder archive ---------------------------------------


@dataclass
class FolderGateway:
    base: str
    http: httpx.AsyncClient
    client: SoapClient
    study: SyntheticStudy
    locators: list[ImagingDocumentLocator]

    @property
    def url(self) -> str:
        return f"{self.base}/xcai/retrieve"

    def expected(self) -> dict[str, bytes]:
        return {
            loc.sop_instance_uid: path.read_bytes()
            for loc, path in zip(self.locators, self.study.files, strict=True)
        }

    async def still_serves(self) -> None:
        """A normal retrieve of the whole study: Success, every instance byte-identical."""
        response, blobs, _ = await _call(self.client, self.url, _request(self.locators))
        assert response.status is Status.SUCCESS, response.errors
        assert response.errors == ()
        assert blobs == self.expected()


@pytest.fixture
async def folder_gateway(tmp_path: Path) -> AsyncIterator[FolderGateway]:
    study = make_study(
        DEMO_PATIENTS[0], tmp_path / "archive" / "ct", modality="CT", instances=6, seed=7501
    )
    raw = _raw_config(tmp_path, "folder", [_folder(REPO, tmp_path / "archive")])
    async with (
        running_server(create_app(config_from_mapping(raw, {}))) as base,
        httpx.AsyncClient(timeout=60) as http,
    ):
        yield FolderGateway(base, http, SoapClient(http), study, _locators(study, REPO))


# --- 1. empty UIDs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "which", ["study", "series", "document", "all", "blank document", "one of two documents"]
)
async def test_empty_uids_fail_the_request_in_band(
    folder_gateway: FolderGateway, which: str
) -> None:
    gw = folder_gateway
    good = gw.locators[0]
    study = "" if which in ("study", "all") else good.study_instance_uid
    series = "" if which in ("series", "all") else good.series_instance_uid
    sop = {"document": "", "all": "", "blank document": "  "}.get(which, good.sop_instance_uid)
    documents = [(REPO, sop)]
    if which == "one of two documents":
        documents = [(REPO, good.sop_instance_uid), (REPO, "")]
    with anyio.fail_after(30):
        response, blobs, parts = await _call(
            gw.client, gw.url, _handwritten(study, series, documents)
        )
        # In-band, not a fault: Failure, a non-empty RegistryErrorList, no image sent
        # (an empty UID anywhere fails the whole request, as NIST ids_4812 expects).
        assert response.status is Status.FAILURE
        assert response.errors, "the RegistryErrorList must not be empty"
        assert {e.error_code for e in response.errors} == {v.XDS_REPOSITORY_ERROR}
        assert {e.severity for e in response.errors} == {Severity.ERROR}
        assert {e.location for e in response.errors} == {HOME.urn}
        assert "empty" in response.errors[0].code_context
        assert blobs == {} and parts == 0
        await gw.still_serves()


async def test_empty_repository_unique_id_is_a_sender_fault(folder_gateway: FolderGateway) -> None:
    gw = folder_gateway
    good = gw.locators[0]
    payload = _handwritten(
        good.study_instance_uid, good.series_instance_uid, [("", good.sop_instance_uid)]
    )
    with anyio.fail_after(30):
        with pytest.raises(SoapFaultReceived) as fault:
            await _call(gw.client, gw.url, payload)
        assert fault.value.code == "Sender"
        assert "RepositoryUniqueId" in fault.value.message
        await gw.still_serves()


# --- 2. 10,000 DocumentRequests --------------------------------------------------------------


async def test_ten_thousand_document_requests_are_answered_and_one_more_refused(
    tmp_path: Path,
) -> None:
    study = make_study(
        DEMO_PATIENTS[1], tmp_path / "archive" / "cr", modality="CR", instances=6, seed=7502
    )
    good = _locators(study, REPO)
    first = good[0]
    unknown = [
        ImagingDocumentLocator(REPO, first.study_instance_uid, first.series_instance_uid, sop)
        for sop in (f"2.25.4711{i}" for i in range(10_000 - len(good)))
    ]
    raw = _raw_config(tmp_path, "limit", [_folder(REPO, tmp_path / "archive")])
    with gateway_process(tmp_path / "gw", raw) as gateway:
        url = f"{gateway.base_url}/xcai/retrieve"
        async with httpx.AsyncClient(timeout=300) as http:
            client = SoapClient(http)
            with anyio.fail_after(240):
                response, blobs, _ = await _call(client, url, _request(good))
                assert response.status is Status.SUCCESS
                rss_before, peak_before = gateway.rss(), gateway.peak_rss()
                started = time.perf_counter()
                response, blobs, _ = await _call(client, url, _request(good + unknown))
                elapsed = time.perf_counter() - started
                rss_after, peak = gateway.rss(), gateway.peak_rss()
            # Answered: the six held instances, one XDSDocumentUniqueIdError per other one.
            assert response.status is Status.PARTIAL_SUCCESS
            assert set(blobs) == {loc.sop_instance_uid for loc in good}
            assert len(response.errors) == len(unknown)
            assert {e.error_code for e in response.errors} == {v.XDS_DOCUMENT_UNIQUE_ID_ERROR}
            named = {
                _sop_of_error(e, {u.sop_instance_uid})
                for e, u in zip(response.errors, unknown, strict=True)
            }
            assert named == {u.sop_instance_uid for u in unknown}
            _figure(
                "10,000 DocumentRequests",
                seconds=f"{elapsed:.2f}",
                server_rss_before_mb=f"{rss_before / MiB:.1f}",
                server_rss_after_mb=f"{rss_after / MiB:.1f}",
                server_peak_rss_before_mb=f"{peak_before / MiB:.1f}",
                server_peak_rss_mb=f"{peak / MiB:.1f}",
            )
            # One more: refused before anything is built, a Sender fault naming the limit.
            extra = ImagingDocumentLocator(
                REPO, first.study_instance_uid, first.series_instance_uid, "2.25.47119999999"
            )
            with anyio.fail_after(120):
                with pytest.raises(SoapFaultReceived) as fault:
                    await _call(client, url, _request(good + unknown + [extra]))
                assert fault.value.code == "Sender"
                assert "10001 DocumentRequest" in fault.value.message
                assert "limit of 10000" in fault.value.message
                response, blobs, _ = await _call(client, url, _request(good))
                assert response.status is Status.SUCCESS and len(blobs) == len(good)
        assert gateway.alive


# --- 3. duplicated instances -----------------------------------------------------------------


async def test_duplicated_instances_are_sent_once_with_a_warning(
    folder_gateway: FolderGateway,
) -> None:
    gw = folder_gateway
    a, b = gw.locators[0], gw.locators[1]
    with anyio.fail_after(30):
        response, blobs, parts = await _call(gw.client, gw.url, _request([a, b, a, a, b]))
        assert response.status is Status.SUCCESS  # warnings alone do not degrade a Success
        expected = gw.expected()
        assert blobs == {s: expected[s] for s in (a.sop_instance_uid, b.sop_instance_uid)}
        assert parts == 2  # two MIME parts, not five
        assert [(e.error_code, e.severity) for e in response.errors] == [
            (v.XDS_REPOSITORY_ERROR, Severity.WARNING)
        ] * 3
        assert sorted(
            _sop_of_error(e, {a.sop_instance_uid, b.sop_instance_uid}) for e in response.errors
        ) == sorted([a.sop_instance_uid, a.sop_instance_uid, b.sop_instance_uid])
        await gw.still_serves()


# --- 4. transfer syntaxes --------------------------------------------------------------------


async def test_an_unknown_transfer_syntax_fails_each_instance(
    folder_gateway: FolderGateway,
) -> None:
    gw = folder_gateway
    sops = {loc.sop_instance_uid for loc in gw.locators}
    with anyio.fail_after(30):
        response, blobs, _ = await _call(gw.client, gw.url, _request(gw.locators, ("1.2.3.4.5",)))
        assert response.status is Status.FAILURE and blobs == {}
        assert len(response.errors) == len(gw.locators)
        assert {e.error_code for e in response.errors} == {v.XDS_REPOSITORY_ERROR}
        assert {_sop_of_error(e, sops) for e in response.errors} == sops
        assert all("1.2.3.4.5" in e.code_context for e in response.errors)
        # Listed with one the archive can produce, the unknown syntax is just skipped.
        response, blobs, _ = await _call(
            gw.client, gw.url, _request(gw.locators, ("1.2.3.4.5", EXPLICIT))
        )
        assert response.status is Status.SUCCESS and blobs == gw.expected()
        await gw.still_serves()


@pytest.mark.parametrize(
    "syntax", ["1.2.abc", "1..2", "01.2", "1.2.840.", "", " ", "1." + "2" * 70]
)
async def test_a_malformed_transfer_syntax_fails_the_request_in_band(
    folder_gateway: FolderGateway, syntax: str
) -> None:
    gw = folder_gateway
    good = gw.locators[0]
    payload = _handwritten(
        good.study_instance_uid,
        good.series_instance_uid,
        [(REPO, good.sop_instance_uid)],
        syntaxes=(EXPLICIT, syntax),
    )
    with anyio.fail_after(30):
        response, blobs, _ = await _call(gw.client, gw.url, payload)
        assert response.status is Status.FAILURE and blobs == {}
        assert [e.error_code for e in response.errors] == [v.XDS_REPOSITORY_ERROR]
        assert "TransferSyntaxUID" in response.errors[0].code_context
        await gw.still_serves()


# --- 5. the PACS stops in the middle of a retrieve -------------------------------------------


def _big_pacs_study(tmp: Path, kind: str, instances: int, size: int, seed: int) -> SyntheticStudy:
    patient = DicomPatient(f"FAULTS^{kind.upper()}", f"PF-{kind}-{seed}", ISSUER, "19800202", "F")
    return make_study(
        patient,
        tmp / f"study-{kind}",
        modality="CT",
        series=1,
        instances=instances,
        rows=size,
        columns=size,
        seed=seed,
    )


@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
async def test_the_pacs_stopping_mid_retrieve_gives_a_complete_partial_reply(
    kind: str, tmp_path: Path
) -> None:
    require_orthanc()
    # 40 instances of ~1 MiB: far more than the channel and the socket buffers hold, so
    # the retrieve is still fetching from Orthanc when the first part reaches us.
    study = _big_pacs_study(tmp_path, kind, 40, 724, seed=7510 if kind == "dicomweb" else 7511)
    local = make_study(
        DEMO_PATIENTS[2], tmp_path / "archive" / "cr", modality="CR", instances=2, seed=7512
    )
    server = start_orthanc(tmp_path / "orthanc")
    try:
        server.upload_study(study)
        stored = {
            h.sop_instance_uid: server.stored_file(h.sop_instance_uid)
            for h in map(read_instance_header, study.files)
        }
        raw = _raw_config(
            tmp_path,
            "pacs",
            [_pacs_repo(kind, PACS_REPO, server), _folder(REPO, tmp_path / "archive")],
        )
        app = create_app(config_from_mapping(raw, {}))
        async with running_server(app) as base, httpx.AsyncClient(timeout=120) as http:
            url = f"{base}/xcai/retrieve"
            client = SoapClient(http)
            locators = _locators(study, PACS_REPO)
            sops = {loc.sop_instance_uid for loc in locators}
            await _wait_indexed(app.state.gateway.store, locators, timeout=60)
            killed_at: list[int] = []

            def kill() -> None:
                killed_at.append(len(killed_at))
                server.kill()

            with anyio.fail_after(120):
                outcome = await _stream_retrieve(
                    http, url, _request(locators), after_first_part=kill
                )
            assert killed_at, "the retrieve ended before its first part was complete"
            assert not server.running
            # A complete MTOM package: closing delimiter, parseable root part (written last).
            assert outcome.status_code == 200
            assert outcome.complete, "the MIME body was truncated"
            response = outcome.response
            assert response is not None
            assert response.status is Status.PARTIAL_SUCCESS, response.errors
            sent = set(outcome.blobs)
            assert sent and sent < sops
            failed = [_sop_of_error(e, sops) for e in response.errors]
            assert len(failed) == len(set(failed)), "an instance has two errors"
            assert set(failed) == sops - sent, "one error per instance not sent"
            codes = {e.error_code for e in response.errors}
            assert {e.severity for e in response.errors} == {Severity.ERROR}
            assert all("Traceback" not in e.code_context for e in response.errors)
            for sop, blob in outcome.blobs.items():
                assert _comparable(kind, blob) == _comparable(kind, stored[sop]), sop
            _figure(
                f"PACS killed mid-retrieve ({kind})",
                instances=len(sops),
                sent=len(sent),
                errors=len(failed),
                bytes_received=outcome.received,
            )

            # The PACS is down before the request: Failure, one error per instance, whole body.
            with anyio.fail_after(120):
                down = await _stream_retrieve(http, url, _request(locators))
            assert down.complete and down.response is not None
            assert down.response.status is Status.FAILURE and down.blobs == {}
            assert sorted(_sop_of_error(e, sops) for e in down.response.errors) == sorted(sops)
            codes |= {e.error_code for e in down.response.errors}

            # And the gateway keeps serving: the folder archive answers in full.
            with anyio.fail_after(60):
                archive = _locators(local, REPO)
                response, blobs, _ = await _call(client, url, _request(archive))
                assert response.status is Status.SUCCESS
                assert blobs == {
                    loc.sop_instance_uid: p.read_bytes()
                    for loc, p in zip(archive, local.files, strict=True)
                }
            # Last, so that the checks above report first: the code of the failed instances.
            assert codes == {SOURCE_FAILURE}
    finally:
        server.kill()


# --- 6. the client hangs up in the middle ----------------------------------------------------

HANG_UPS = {
    # Closed as soon as the first part is in, while the reply is still streaming.
    "at once": 0.0,
    # Stalls first: the socket buffers and the channel fill up, the producer blocks in
    # send holding a fetched instance (an open file or spool) when the client goes.
    "after a stall": 1.0,
}


@pytest.mark.parametrize("hang_up", list(HANG_UPS))
@pytest.mark.parametrize("kind", ["folder", "dicomweb", "dimse"])
async def test_a_client_hanging_up_leaves_the_server_serving_and_no_file_open(
    kind: str, hang_up: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seed = {"folder": 7520, "dicomweb": 7521, "dimse": 7522}[kind] + 10 * list(HANG_UPS).index(
        hang_up
    )
    if kind == "folder":
        # 12 instances of ~8.8 MB: above the 8 MiB the folder source reads whole, so
        # each instance in flight is an open file of the archive.
        study = _big_pacs_study(tmp_path, kind, 12, 2100, seed=seed)
    else:
        # 30 instances of ~1.2 MiB: above the 1 MiB a PACS instance is spooled in
        # memory, so each instance in flight is a spool file in the server's TMPDIR.
        study = _big_pacs_study(tmp_path, kind, 30, 800, seed=seed)
    headers = [read_instance_header(p) for p in study.files]
    if kind == "folder":
        repo = _folder(REPO, tmp_path / f"study-{kind}")
        stored = {
            h.sop_instance_uid: p.read_bytes() for h, p in zip(headers, study.files, strict=True)
        }
    else:
        orthanc: OrthancServer = request.getfixturevalue("orthanc")
        orthanc.upload_study(study)
        repo = _pacs_repo(kind, REPO, orthanc)
        stored = {h.sop_instance_uid: orthanc.stored_file(h.sop_instance_uid) for h in headers}
    raw = _raw_config(tmp_path, "hangup", [repo])
    locators = _locators(study, REPO)
    with gateway_process(tmp_path / "gw", raw) as gateway:
        url = f"{gateway.base_url}/xcai/retrieve"
        async with httpx.AsyncClient(timeout=120) as http:

            async def full_retrieve() -> None:
                outcome = await _stream_retrieve(http, url, _request(locators))
                assert outcome.complete and outcome.response is not None
                assert outcome.response.status is Status.SUCCESS, outcome.response.errors
                assert set(outcome.blobs) == set(stored)
                for sop, blob in outcome.blobs.items():
                    assert _comparable(kind, blob) == _comparable(kind, stored[sop]), sop

            with anyio.fail_after(180):
                # A PACS is indexed in the background once the server is up.
                while True:
                    reply = await _call(SoapClient(http), url, _request(locators[-1:]))
                    if reply[0].status is Status.SUCCESS:
                        break
                    await anyio.sleep(0.2)
                await full_retrieve()  # warm: database, HTTP pool, worker threads
                baseline = gateway.open_files()
                fds_before = psutil.Process(gateway.process.pid).num_fds()
                log_before = gateway.log()

                hung_up = await _stream_retrieve(
                    http, url, _request(locators), hang_up_after_first_part=HANG_UPS[hang_up]
                )
                assert hung_up.status_code == 200 and not hung_up.complete
                assert hung_up.received < sum(len(b) for b in stored.values()) // 2

                # Every file the aborted reply opened (archive file, spool) is closed again
                # within a few seconds, without waiting for another request.
                deadline = time.monotonic() + 10
                while True:
                    leaked = gateway.open_files() - baseline
                    spooled = sorted(p.name for p in gateway.spool_dir.iterdir())
                    if not leaked and not spooled:
                        break
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"10 s after the client hung up the server still holds open "
                            f"{dict(leaked)}; spool files: {spooled}"
                        )
                    await anyio.sleep(0.1)
                assert gateway.alive
                await full_retrieve()  # it serves the next request in full
                assert gateway.alive
                fds_after = psutil.Process(gateway.process.pid).num_fds()
            new_log = gateway.log()[len(log_before) :]
            assert "Traceback" not in new_log, f"the server logged an error:\n{new_log}"
            _figure(
                f"client hang-up ({kind}, {hang_up})",
                bytes_received_before_hang_up=hung_up.received,
                fds_before=fds_before,
                fds_after=fds_after,
            )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_client_hanging_up_is_not_an_application_error(tmp_path: Path) -> None:
    """In-process, so uvicorn's own error log can be watched: a hang-up is no ASGI error."""
    study = _big_pacs_study(tmp_path, "folder", 30, 800, seed=7525)
    raw = _raw_config(tmp_path, "inprocess", [_folder(REPO, tmp_path / "study-folder")])
    locators = _locators(study, REPO)
    records = _Records()
    async with (
        running_server(create_app(config_from_mapping(raw, {}))) as base,
        httpx.AsyncClient(timeout=60) as http,
    ):
        url = f"{base}/xcai/retrieve"
        uvicorn_log = logging.getLogger("uvicorn.error")  # configured by the server: add now
        uvicorn_log.addHandler(records)
        try:
            with anyio.fail_after(60):
                hung_up = await _stream_retrieve(
                    http, url, _request(locators), hang_up_after_first_part=1.0
                )
                assert not hung_up.complete
                await anyio.sleep(0.5)
                outcome = await _stream_retrieve(http, url, _request(locators))
                assert outcome.complete and outcome.response is not None
                assert outcome.response.status is Status.SUCCESS
                assert len(outcome.blobs) == len(locators)
        finally:
            uvicorn_log.removeHandler(records)
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    if errors:
        formatter = logging.Formatter()
        pytest.fail(
            "the server logged an error for a client that hung up:\n"
            + "\n".join(formatter.format(r) for r in errors)
        )


# --- 8. memory stays flat --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instances", "size"),
    [
        pytest.param(50, 1448, id="50 x 4 MiB"),
        # Just under the folder source's 8 MiB whole-file read limit: the most memory
        # an instance in flight can take.
        pytest.param(25, 2040, id="25 x 8 MiB"),
    ],
)
async def test_a_200_mb_study_streams_in_flat_memory(
    tmp_path: Path, instances: int, size: int
) -> None:
    study = make_study(
        DEMO_PATIENTS[2],
        tmp_path / "archive" / "ct",
        modality="CT",
        series=1,
        instances=instances,
        rows=size,
        columns=size,
        seed=7530,
    )
    assert study.total_bytes > 200 * 1000 * 1000
    raw = _raw_config(tmp_path, "big", [_folder(REPO, tmp_path / "archive")])
    locators = _locators(study, REPO)
    with gateway_process(tmp_path / "gw", raw) as gateway:
        url = f"{gateway.base_url}/xcai/retrieve"
        async with httpx.AsyncClient(timeout=120) as http:
            idle = gateway.rss()
            with anyio.fail_after(300), RssSampler(gateway.process.pid) as sampler:
                started = time.perf_counter()
                outcome = await _stream_retrieve(http, url, _request(locators))
                elapsed = time.perf_counter() - started
            assert outcome.complete and outcome.response is not None
            assert outcome.response.status is Status.SUCCESS
            assert outcome.blobs == {
                loc.sop_instance_uid: p.read_bytes()
                for loc, p in zip(locators, study.files, strict=True)
            }
            after = gateway.rss()
            high_water = gateway.peak_rss()
        _figure(
            f"200 MB study from a folder ({instances} instances of {size}x{size})",
            study_mb=f"{study.total_bytes / MiB:.1f}",
            seconds=f"{elapsed:.2f}",
            mb_per_s=f"{study.total_bytes / MiB / elapsed:.0f}",
            rss_idle_mb=f"{idle / MiB:.1f}",
            rss_peak_sampled_mb=f"{sampler.peak / MiB:.1f}",
            rss_high_water_mb=f"{high_water / MiB:.1f}",
            rss_after_mb=f"{after / MiB:.1f}",
            samples=len(sampler.samples),
        )
        assert len(sampler.samples) > 10
        # Flat: a 200 MB study costs the server less than 64 MiB over its idle size.
        # (The idle size grows with what the process imports; the issue's 150 MB
        # peak target is a figure measured by bench/rad75_throughput.py, and this
        # ceiling only catches a study being held whole.)
        assert sampler.peak - idle < 64 * MiB
        assert high_water < 200 * MiB


# --- helpers for byte comparison -------------------------------------------------------------


def _comparable(kind: str, data: bytes) -> bytes:
    """DICOMweb and folder bytes are compared whole; C-GET writes its own File Meta (PS3.10)."""
    return dataset_after_file_meta(data) if kind == "dimse" else data
