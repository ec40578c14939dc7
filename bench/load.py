"""Responding Gateway under mixed load: XCPD, ITI-38, ITI-39 and RAD-75 at rising concurrency.

Usage: ``python bench/load.py [--quick] [--levels 1,8,32,64,128,256] [--level-seconds 20]
[--max-requests 50000] [--max-seconds 300] [--client-procs 2] [--workers 1]
[--mix XCPD=1,ITI-38=1,ITI-39=1,RAD-75=1] [--warmup-seconds 10] [--full-check]
[--database-url URL] [--results FILE] [--server-log FILE]``

Issue 9, item 3: a bounded mixed responder load (loopback only, at most
``--max-seconds``, 5 minutes, from start to report).

* **World.** A temporary folder archive of small synthetic studies (5
  patients, 3 studies each: CT, MR and CR, one series of 5 instances of
  64x64), a TOML configuration (``[community]``, ``[server]`` on a free
  127.0.0.1 port, ``[store]``: SQLite in the temporary folder unless
  ``--database-url`` names another database, one folder ``[[repositories]]``)
  and the real server, ``imagebridge serve -c CONFIG`` (plus ``--workers N``
  when ``--workers`` is above 1) in its own process group.
* **Discovery pass.** imagebridge's own Initiating Gateway client
  (:class:`~imagebridge.actors.initiating.client.PartnerClient`) finds every
  patient with ITI-55, its KOS entries with ITI-38, retrieves and parses the
  manifests with ITI-39 and one study's images with RAD-75.  From the answers
  the bench renders, with the project's renderers and the SOAP client's
  packaging (simple SOAP or MTOM/XOP), the requests of the load: ITI-55 per
  patient; ITI-38 FindDocuments (LeafClass and ObjectRef) and GetDocuments per
  patient; ITI-39 of one KOS per study; RAD-75 of all instances of one study.
  Each request is sent once and checked before the load starts.
* **Load.** An untimed warm-up at the highest level, then each level (default
  1, 8, 32, 64, 128, 256 clients) for ``--level-seconds`` or ``--max-requests``;
  levels that no longer fit in ``--max-seconds`` are shortened or skipped, and
  requests still in flight at the cap are abandoned (and reported).  The
  clients are asyncio tasks, each with its own keep-alive connection (its own
  ``httpx.AsyncClient``: a shared pool of 128 connections costs the client
  three times the CPU per request), spread over ``--client-procs``
  processes and connected before the clock starts; each task loops over the
  transaction mix (smooth weighted round robin of ``--mix``), every request
  with a fresh WS-Addressing MessageID.  A reply is an error unless it is HTTP
  200 and, decoded with imagebridge's own MTOM reader and parsers, a success
  for its transaction with the right RelatesTo (the payload checked element by
  element, or with the project's parsers under ``--full-check``, which costs
  the client about 1.5 ms more per ITI-38): ITI-55 an AA acknowledgement,
  queryResponseCode OK and the one expected patient; ITI-38 Success, no
  RegistryError, the expected number of ExtrinsicObjects or ObjectRefs; ITI-39
  Success with the one KOS asked for, its MTOM part present; RAD-75 Success
  with one DocumentResponse and one MTOM part per instance.  Errors are
  counted by kind: ``http-NNN``, ``timeout``, ``connection``, ``fault`` (SOAP
  fault), ``content`` (any other wrong answer).
* **Measured.** Per level and transaction: requests, throughput (req/s over
  the level's wall time), p50 and p99 latency of the successful requests (the
  reply read whole, before checking) and errors; latency per request variant
  at the top level.  CPU per level as a share of one core and in ms per
  request: the client processes, the server (every process of its tree) and
  the machine, so that other load on the shared machine shows.  The RSS of the
  server's process tree, sampled every second for the whole run: min/max per
  phase, per process, and the growth from the idle moment after the warm-up to
  the idle moment at the end.  With ``--results FILE``, the headline figures
  go to ``bench/record.py``'s ``write_figure``: peak throughput, p99 at the top
  level, errors (``== 0``), RSS growth (``<= 10`` MB per worker) and the
  largest worker's RSS (``< 150`` MB).

The warm-up runs at the top concurrency on purpose: it brings the heap to the
high-water mark of the busiest level, so that RSS growth measured after it is
what the load leaves behind (a leak), not the allocator keeping pages for a
concurrency it has not seen yet; 10 MB a worker is left for allocator and
cache noise (one 256-client level adds about 1 to 2 MB without any sign of a
leak), while a leak of 1 KB per request would add more than 30 MB over the
default run.  Client and server share the machine's cores
(2 on the reference machine), so the throughput is a floor, not the server's
capacity; the CPU table says who used them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import FrameType

import httpx
import psutil
from record import write_figure  # bench/record.py: python bench/load.py puts bench/ on sys.path

from imagebridge.actors.initiating.client import PartnerClient, PartnerClients
from imagebridge.actors.initiating.pull import (
    DEFAULT_TRANSFER_SYNTAXES,
    Demographics,
    discovery_query,
)
from imagebridge.dicom.manifest import imaging_document_locators, parse_manifest
from imagebridge.dicom.synthetic import DEMO_ISSUER, DEMO_PATIENTS, make_study
from imagebridge.model.directory import Community, CommunityEndpoint
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import DicomPatient, ImagingDocumentLocator
from imagebridge.model.outcome import Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    RetrieveDocumentSetRequest,
    RetrieveImagingDocumentSetRequest,
    XopInclude,
    imaging_request_for,
)
from imagebridge.model.xcpd import AcknowledgementType, QueryResponseCode
from imagebridge.model.xds import DocumentEntry, ObjectRef
from imagebridge.model.xds_query import (
    AdhocQueryRequest,
    FindDocumentsQuery,
    GetDocumentsQuery,
    ReturnType,
)
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.wire import ns
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_response,
    render_patient_discovery_query,
)
from imagebridge.wire.mtom import MtomPackage, MtomReader, encode_mtom, mtom_content_type
from imagebridge.wire.soap import parse_envelope, render_envelope
from imagebridge.wire.wsa import normalise_message_id, request_headers
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import parse_adhoc_query_response, render_adhoc_query_request
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_response,
    render_retrieve_document_set_request,
)
from imagebridge.wire.xml import Element, parse_xml, serialize

BENCH = "load"
HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.211")  # the responder under load
SENDER = HomeCommunityId("1.3.6.1.4.1.21367.13.70.212")  # the bench, as initiating community
REPO = "1.3.6.1.4.1.21367.13.71.211.1"
KINDS = ("XCPD", "ITI-38", "ITI-39", "RAD-75")
PLACEHOLDER = "urn:uuid:00000000-0000-4000-8000-000000000000"  # MessageID, replaced per request
EXTRA_PATIENTS = (
    DicomPatient("BENCH^DANA", "BENCH-0004", DEMO_ISSUER, "19900202", "F"),
    DicomPatient("BENCH^EVAN", "BENCH-0005", DEMO_ISSUER, "19770707", "M"),
)
MODALITIES = ("CT", "MR", "CR")
RSS_TOLERANCE_MB = 10.0  # per worker; see growth_target()
WORKER_RSS_TARGET_MB = 150.0
END_RESERVE_S = 8.0  # kept free at the end of --max-seconds for the idle samples and stopping
MB = 2**20


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """One ready request of the load and what its answer must be.

    *body* holds :data:`PLACEHOLDER` where the MessageID goes; *expect* is the
    number of patients (XCPD), registry objects (ITI-38), documents (ITI-39)
    or instances (RAD-75); *expect_id* the patient id (XCPD) or document
    unique id (ITI-39) the answer must carry.
    """

    kind: str
    variant: str
    url: str
    body: bytes
    content_type: str
    expect: int
    expect_id: str = ""


def soap_request(transaction: Transaction, payload: Element, url: str) -> tuple[bytes, str]:
    """The request as :class:`~imagebridge.transport.client.SoapClient` puts it on the wire."""
    spec = spec_of(transaction)
    root = serialize(render_envelope(request_headers(spec, PLACEHOLDER, url), payload))
    if not spec.mtom:
        return root, SOAP_CONTENT_TYPE
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@imagebridge"
    body = b"".join(encode_mtom(root, (), boundary=boundary, root_content_id=root_id))
    return body, mtom_content_type(boundary, root_id)


def make_probe(
    kind: str,
    variant: str,
    transaction: Transaction,
    payload: Element,
    url: str,
    expect: int,
    expect_id: str = "",
) -> Probe:
    body, content_type = soap_request(transaction, payload, url)
    return Probe(kind, variant, url, body, content_type, expect, expect_id)


def with_message_id(probe: Probe, message_id: str) -> bytes:
    return probe.body.replace(PLACEHOLDER.encode(), message_id.encode())


# --- checking one answer ----------------------------------------------------------------------


class WrongAnswer(Exception):
    """The answer is not the success the probe expects: (kind, detail)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def read_package(content_type: str, body: bytes) -> MtomPackage:
    reader = MtomReader(content_type)
    reader.feed(body)
    return reader.close()


def check_answer(
    probe: Probe, message_id: str, status: int, content_type: str, body: bytes, full: bool
) -> None:
    """Raise :class:`WrongAnswer` unless *body* is the success *probe* expects.

    The package and the envelope are always decoded with imagebridge's MTOM reader
    and SOAP parser; the payload with the project's parsers when *full*, else with
    the light element checks (a tenth of the client CPU; the self-test runs both).
    """
    try:
        package = read_package(content_type, body)
    except Exception as exc:
        kind = f"http-{status}" if status != 200 else "content"
        raise WrongAnswer(kind, f"not SOAP/MTOM ({exc}); {body[:120]!r}") from exc
    with package:
        try:
            message = parse_envelope(parse_xml(package.root), require_addressing=False)
        except Exception as exc:
            kind = f"http-{status}" if status != 200 else "content"
            raise WrongAnswer(kind, f"no SOAP envelope: {exc}") from exc
        if message.fault is not None:
            reason = f"HTTP {status}, {message.fault.code.value}: {message.fault.reason}"
            raise WrongAnswer("fault", reason[:300])
        if status != 200:
            raise WrongAnswer(f"http-{status}", "SOAP reply that is not a fault")
        relates = message.addressing.relates_to if message.addressing else None
        if relates is None or normalise_message_id(relates) != normalise_message_id(message_id):
            raise WrongAnswer("content", f"RelatesTo {relates!r} is not the request's MessageID")
        if message.payload is None:
            raise WrongAnswer("content", "no SOAP body payload")
        light, thorough = CHECKS[probe.kind]
        (thorough if full else light)(probe, message.payload, package)


def check_xcpd(probe: Probe, payload: Element, package: MtomPackage) -> None:
    response = parse_patient_discovery_response(payload)
    ack = response.acknowledgement.type_code
    code = response.query_ack.query_response_code
    if ack is not AcknowledgementType.AA or code is not QueryResponseCode.OK:
        raise WrongAnswer("content", f"acknowledgement {ack}, queryResponseCode {code}")
    ids = [p.patient_id.id for p in response.patients]
    if ids != [probe.expect_id]:
        raise WrongAnswer("content", f"patients {ids}, expected [{probe.expect_id}]")


def check_query(probe: Probe, payload: Element, package: MtomPackage) -> None:
    response = parse_adhoc_query_response(payload)
    if response.status is not Status.SUCCESS or response.errors:
        codes = [e.error_code for e in response.errors]
        raise WrongAnswer("content", f"{response.status.name} {codes}")
    wanted = ObjectRef if "ObjectRef" in probe.variant else DocumentEntry
    found = sum(isinstance(o, wanted) for o in response.registry_objects)
    if found != probe.expect or len(response.registry_objects) != probe.expect:
        raise WrongAnswer(
            "content",
            f"{len(response.registry_objects)} objects ({found} {wanted.__name__}), "
            f"expected {probe.expect}",
        )


def check_retrieve(probe: Probe, payload: Element, package: MtomPackage) -> None:
    response = parse_retrieve_document_set_response(payload)
    if response.status is not Status.SUCCESS or response.errors:
        codes = [e.error_code for e in response.errors]
        raise WrongAnswer("content", f"{response.status.name} {codes}")
    documents = response.document_responses
    if len(documents) != probe.expect:
        raise WrongAnswer("content", f"{len(documents)} documents, expected {probe.expect}")
    if len(package.parts) != probe.expect:
        raise WrongAnswer("content", f"{len(package.parts)} MTOM parts, expected {probe.expect}")
    for document in documents:
        if not isinstance(document.document, XopInclude):
            raise WrongAnswer("content", "document sent inline, not as an MTOM part")
        if package.part_for_href(document.document.href).size == 0:
            raise WrongAnswer("content", "empty MTOM part")
    if probe.expect_id and documents[0].document_unique_id != probe.expect_id:
        raise WrongAnswer("content", f"document {documents[0].document_unique_id} not asked for")


def hl7(*path: str) -> str:
    return "/".join(ns.q(ns.HL7, step) for step in path)


def light_xcpd(probe: Probe, payload: Element, package: MtomPackage) -> None:
    ack = payload.find(hl7("acknowledgement", "typeCode"))
    code = payload.find(hl7("controlActProcess", "queryAck", "queryResponseCode"))
    ack_code, query_code = (None if e is None else e.get("code") for e in (ack, code))
    if ack_code != "AA" or query_code != "OK":
        raise WrongAnswer("content", f"acknowledgement {ack_code}, queryResponseCode {query_code}")
    subjects = payload.findall(hl7("controlActProcess", "subject"))
    ids = [
        i.get("extension")
        for s in subjects
        for i in s.iterfind(hl7("registrationEvent", "subject1", "patient", "id"))
    ]
    if len(subjects) != 1 or probe.expect_id not in ids:
        raise WrongAnswer("content", f"{len(subjects)} subjects, ids {ids}")


def light_status(response: Element | None, what: str) -> None:
    status = None if response is None else response.get("status")
    errors = None if response is None else response.find(ns.q(ns.RS, "RegistryErrorList"))
    if status != Status.SUCCESS.value or errors is not None:
        raise WrongAnswer(
            "content", f"{what} status {status}, RegistryErrorList {errors is not None}"
        )


def light_query(probe: Probe, payload: Element, package: MtomPackage) -> None:
    light_status(payload, "AdhocQueryResponse")
    found = payload.find(ns.q(ns.RIM, "RegistryObjectList"))
    objects = [] if found is None else list(found)
    local = "ObjectRef" if "ObjectRef" in probe.variant else "ExtrinsicObject"
    wanted = sum(o.tag == ns.q(ns.RIM, local) for o in objects)
    if wanted != probe.expect or len(objects) != probe.expect:
        raise WrongAnswer(
            "content", f"{len(objects)} objects ({wanted} {local}), not {probe.expect}"
        )


def light_retrieve(probe: Probe, payload: Element, package: MtomPackage) -> None:
    light_status(payload.find(ns.q(ns.RS, "RegistryResponse")), "RegistryResponse")
    documents = payload.findall(ns.q(ns.XDS, "DocumentResponse"))
    if len(documents) != probe.expect or len(package.parts) != probe.expect:
        raise WrongAnswer("content", f"{len(documents)} documents, {len(package.parts)} MTOM parts")
    for document in documents:
        include = document.find(f"{ns.q(ns.XDS, 'Document')}/{ns.q(ns.XOP, 'Include')}")
        if include is None or package.part_for_href(include.get("href", "")).size == 0:
            raise WrongAnswer("content", "a document is not a non-empty MTOM part")
    unique = documents[0].findtext(ns.q(ns.XDS, "DocumentUniqueId"))
    if probe.expect_id and unique != probe.expect_id:
        raise WrongAnswer("content", f"document {unique} was not asked for")


Check = Callable[[Probe, Element, MtomPackage], None]
CHECKS: dict[str, tuple[Check, Check]] = {
    "XCPD": (light_xcpd, check_xcpd),
    "ITI-38": (light_query, check_query),
    "ITI-39": (light_retrieve, check_retrieve),
    "RAD-75": (light_retrieve, check_retrieve),
}


# --- world ------------------------------------------------------------------------------------


def patients_for(count: int) -> tuple[DicomPatient, ...]:
    everyone = DEMO_PATIENTS + EXTRA_PATIENTS
    if not 1 <= count <= len(everyone):
        raise SystemExit(f"--patients must be 1 to {len(everyone)}")
    return everyone[:count]


def build_archive(
    archive: Path, patients: Sequence[DicomPatient], studies: int, instances: int, rows: int
) -> int:
    """*studies* one-series studies of *instances* images per patient; returns the file count."""
    files = 0
    for p, patient in enumerate(patients):
        for s in range(studies):
            study = make_study(
                patient,
                archive / f"{patient.id}-{s}",
                modality=MODALITIES[s % len(MODALITIES)],
                series=1,
                instances=instances,
                rows=rows,
                columns=rows,
                seed=9000 + 100 * p + s,
            )
            files += len(study.files)
    return files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_text(port: int, archive: Path, database_url: str, scan: float) -> str:
    def s(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid TOML basic string

    return "\n".join(
        [
            "[community]",
            f"home_community_id = {s(HOME.urn)}",
            f"name = {s('imagebridge load bench')}",
            f"patient_id_authority = {s(DEMO_ISSUER.universal_id)}",
            "",
            "[server]",
            f"host = {s('127.0.0.1')}",
            f"port = {port}",
            "",
            "[store]",
            f"database_url = {s(database_url)}",
            "",
            "[[repositories]]",
            f"unique_id = {s(REPO)}",
            f"source = {s('folder')}",
            f"path = {s(str(archive))}",
            f"scan_interval = {scan:g}",
            "",
        ]
    )


# --- the server process -----------------------------------------------------------------------


@dataclass(slots=True)
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; then any of its worker processes still running."""
        workers = server_tree(self.pid)[1:]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for proc in workers:  # psutil checks the creation time: never a reused pid
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()


def start_server(
    config: Path, port: int, workers: int, log: Path, timeout: float = 120.0
) -> Server:
    command = [str(Path(sys.executable).with_name("imagebridge")), "serve", "-c", str(config)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while True:  # serve listens once the folder is indexed
        try:
            httpx.get(server.base + "/xcpd", timeout=2)
            return server
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"the server exited or never answered:\n{tail}") from None
            time.sleep(0.1)


def server_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) per process of the server's tree."""
    found: dict[int, float] = {}
    for proc in server_tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            found[proc.pid] = times.user + times.system
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# --- discovery pass ---------------------------------------------------------------------------


def community(base: str) -> Community:
    paths = {
        Transaction.ITI_55: "/xcpd",
        Transaction.ITI_38: "/xca/query",
        Transaction.ITI_39: "/xca/retrieve",
        Transaction.RAD_75: "/xcai/retrieve",
    }
    return Community(
        HOME,
        "server under load",
        tuple(CommunityEndpoint(t, base + path) for t, path in paths.items()),
    )


def demographics_of(patient: DicomPatient) -> Demographics:
    family, _, given = patient.name.partition("^")
    return Demographics(family.title(), given.title(), patient.birth_date, patient.sex)


async def discover_patient(
    client: PartnerClient, patient: DicomPatient, studies: int, instances: int, base: str
) -> list[Probe]:
    """ITI-55, ITI-38, ITI-39 and RAD-75 for one patient with the project's client; the probes."""
    query = discovery_query(
        demographics_of(patient),
        SENDER,
        HOME,
        message_root=f"2.25.{uuid.uuid4().int}",
        creation_time=datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
    )
    found = await client.discover(query)
    if len(found.patients) != 1:
        raise SystemExit(f"ITI-55 for {patient.name}: {len(found.patients)} patients")
    pid = found.patients[0].patient_id
    probes = [
        make_probe(
            "XCPD",
            "PRPA_IN201305UV02",
            Transaction.ITI_55,
            render_patient_discovery_query(query),
            base + "/xcpd",
            1,
            pid.id,
        )
    ]
    entries = await find_entries(client, pid, studies)
    probes += query_probes(pid, entries, base + "/xca/query")
    locators = await retrieve_manifests(client, entries)
    probes += [
        make_probe(
            "ITI-39",
            "RetrieveDocumentSet",
            Transaction.ITI_39,
            render_retrieve_document_set_request(RetrieveDocumentSetRequest((document,))),
            base + "/xca/retrieve",
            1,
            document.document_unique_id,
        )
        for document in document_requests(entries)
    ]
    for study in locators:
        if len(study) != instances:
            raise SystemExit(f"a KOS of {patient.name} lists {len(study)} instances")
        request = imaging_request_for(study, HOME, DEFAULT_TRANSFER_SYNTAXES)
        probes.append(
            make_probe(
                "RAD-75",
                "RetrieveImagingDocumentSet",
                Transaction.RAD_75,
                render_retrieve_imaging_document_set_request(request),
                base + "/xcai/retrieve",
                instances,
            )
        )
    await retrieve_images(client, locators[0])
    return probes


async def find_entries(client: PartnerClient, pid: PatientId, studies: int) -> list[DocumentEntry]:
    answer = await client.find(
        AdhocQueryRequest(
            query=FindDocumentsQuery(patient_id=pid, status=(v.STATUS_APPROVED,)),
            home_community_id=HOME,
        )
    )
    entries = [o for o in answer.registry_objects if isinstance(o, DocumentEntry)]
    if answer.status is not Status.SUCCESS or len(entries) != studies:
        raise SystemExit(f"ITI-38 for {pid.id}: {answer.status.name}, {len(entries)} entries")
    return entries


def query_probes(pid: PatientId, entries: Sequence[DocumentEntry], url: str) -> list[Probe]:
    find = FindDocumentsQuery(patient_id=pid, status=(v.STATUS_APPROVED,))
    get = GetDocumentsQuery(unique_id=tuple(e.unique_id for e in entries))
    requests = [
        ("FindDocuments/LeafClass", AdhocQueryRequest(query=find, home_community_id=HOME)),
        (
            "FindDocuments/ObjectRef",
            AdhocQueryRequest(
                query=find, return_type=ReturnType.OBJECT_REF, home_community_id=HOME
            ),
        ),
        ("GetDocuments/LeafClass", AdhocQueryRequest(query=get, home_community_id=HOME)),
    ]
    return [
        make_probe(
            "ITI-38", name, Transaction.ITI_38, render_adhoc_query_request(r), url, len(entries)
        )
        for name, r in requests
    ]


def document_requests(entries: Sequence[DocumentEntry]) -> list[DocumentRequest]:
    return [DocumentRequest(e.repository_unique_id or REPO, e.unique_id, HOME) for e in entries]


async def retrieve_manifests(
    client: PartnerClient, entries: Sequence[DocumentEntry]
) -> list[tuple[ImagingDocumentLocator, ...]]:
    request = RetrieveDocumentSetRequest(tuple(document_requests(entries)))
    with await client.retrieve(request) as result:
        if result.status is not Status.SUCCESS or len(result.documents) != len(entries):
            raise SystemExit(f"ITI-39: {result.status.name}, {len(result.documents)} documents")
        located = []
        for document in result.documents:
            with document.open() as stream:
                located.append(imaging_document_locators(parse_manifest(stream)))
    return located


async def retrieve_images(client: PartnerClient, study: Sequence[ImagingDocumentLocator]) -> None:
    request: RetrieveImagingDocumentSetRequest = imaging_request_for(
        study, HOME, DEFAULT_TRANSFER_SYNTAXES
    )
    with await client.retrieve_images(request) as result:
        if result.status is not Status.SUCCESS or len(result.documents) != len(study):
            raise SystemExit(f"RAD-75: {result.status.name}, {len(result.documents)} instances")


async def discover(
    base: str, patients: Sequence[DicomPatient], studies: int, instances: int
) -> list[Probe]:
    async with PartnerClients() as clients:
        client = clients.for_community(community(base))
        probes: list[Probe] = []
        for patient in patients:
            probes += await discover_patient(client, patient, studies, instances, base)
    return probes


def self_test(probes: Sequence[Probe]) -> dict[str, tuple[float, float]]:
    """Send every probe once; check its answer both ways.  Median ms (light, full) per kind."""
    spent: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in KINDS}
    with httpx.Client(timeout=60) as client:
        for probe in probes:
            message_id = f"urn:uuid:{uuid.uuid4()}"
            reply = client.post(
                probe.url,
                content=with_message_id(probe, message_id),
                headers={"Content-Type": probe.content_type},
            )
            answer = (reply.status_code, reply.headers.get("content-type", ""), reply.content)
            for full, times in zip((False, True), spent[probe.kind], strict=True):
                t0 = time.perf_counter()
                try:
                    check_answer(probe, message_id, *answer, full=full)
                except WrongAnswer as exc:
                    raise SystemExit(f"self-test: {probe.kind} {probe.variant}: {exc}") from exc
                times.append((time.perf_counter() - t0) * 1000)
    return {
        k: (statistics.median(light), statistics.median(full))
        for k, (light, full) in spent.items()
        if light
    }


# --- client processes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LevelOrder:
    """What one client process runs for one level."""

    tasks: int
    offset: int
    seconds: float
    max_requests: int
    hard_stop: float  # time.time() at which requests still in flight are abandoned
    timeout: float
    full_check: bool


@dataclass(slots=True)
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    variants: dict[str, list[float]] = field(default_factory=dict)  # latencies per variant

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, detail)

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.errors.update(other.errors)
        for kind, detail in other.examples.items():
            self.examples.setdefault(kind, detail)
        for variant, latencies in other.variants.items():
            self.variants.setdefault(variant, []).extend(latencies)


@dataclass(slots=True)
class Share:
    """One client process's result for one level."""

    tallies: dict[str, Tally] = field(default_factory=lambda: {k: Tally() for k in KINDS})
    connect_errors: Tally = field(default_factory=Tally)
    abandoned: int = 0
    started: float = 0.0  # time.time()
    elapsed: float = 0.0
    cpu: float = 0.0


def weighted_plan(mix: dict[str, int]) -> list[str]:
    """Smooth weighted round robin: weights 2,1,1 give A B A C (interleaved, not A A B C)."""
    total = sum(mix.values())
    current = dict.fromkeys(mix, 0)
    plan = []
    for _ in range(total):
        for kind, weight in mix.items():
            current[kind] += weight
        best = max(current, key=lambda k: current[k])
        current[best] -= total
        plan.append(best)
    return plan


class Driver:
    """The virtual clients of one process for one level, each with its own connection.

    One ``httpx.AsyncClient`` per virtual client: a shared pool of 128 connections
    costs the client several times more CPU per request (the pool is searched on
    every request), CPU the server then lacks on a small machine.
    """

    def __init__(
        self,
        https: Sequence[httpx.AsyncClient],
        probes: Sequence[Probe],
        plan: list[str],
        order: LevelOrder,
    ) -> None:
        self.https = https
        self.plan = plan
        self.order = order
        self.by_kind = {k: [p for p in probes if p.kind == k] for k in KINDS}
        self.turn = dict.fromkeys(KINDS, 0)
        self.share = Share()
        self.issued = 0
        self.in_flight = 0
        self.stop_at = 0.0

    def next_probe(self, kind: str) -> Probe:
        variants = self.by_kind[kind]
        self.turn[kind] += 1
        return variants[self.turn[kind] % len(variants)]

    async def send(self, http: httpx.AsyncClient, probe: Probe, tally: Tally | None) -> None:
        message_id = f"urn:uuid:{uuid.uuid4()}"
        headers = {"Content-Type": probe.content_type}
        sink = tally if tally is not None else self.share.connect_errors
        self.in_flight += 1
        t0 = time.perf_counter()
        try:
            reply = await http.post(
                probe.url, content=with_message_id(probe, message_id), headers=headers
            )
        except httpx.TimeoutException as exc:
            sink.error("timeout", f"{probe.variant}: {type(exc).__name__}")
            return
        except httpx.HTTPError as exc:
            sink.error("connection", f"{probe.variant}: {type(exc).__name__}: {exc}"[:300])
            return
        finally:
            self.in_flight -= 1
        took = time.perf_counter() - t0
        try:
            check_answer(
                probe,
                message_id,
                reply.status_code,
                reply.headers.get("content-type", ""),
                reply.content,
                self.order.full_check,
            )
        except WrongAnswer as exc:
            sink.error(exc.kind, f"{probe.variant}: {exc.detail}")
            return
        except Exception as exc:  # a parser error on a malformed answer
            sink.error("content", f"{probe.variant}: {type(exc).__name__}: {exc}"[:300])
            return
        if tally is not None:
            tally.latencies.append(took)
            tally.variants.setdefault(probe.variant, []).append(took)

    async def client(self, index: int) -> None:
        position = self.order.offset + index
        while self.issued < self.order.max_requests and time.perf_counter() < self.stop_at:
            self.issued += 1
            kind = self.plan[position % len(self.plan)]
            position += 1
            await self.send(self.https[index], self.next_probe(kind), self.share.tallies[kind])

    async def run(self, barrier: Barrier) -> Share:
        # One connection per virtual client before the clock starts (ITI-55, the lightest),
        # bounded like the level itself.
        connecting = [
            asyncio.create_task(self.send(h, self.next_probe("XCPD"), None)) for h in self.https
        ]
        if connecting:
            limit = min(self.order.timeout, self.order.hard_stop - time.time())
            _, late = await asyncio.wait(connecting, timeout=max(0.0, limit))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.to_thread(barrier.wait, 120)
        self.share.started = time.time()
        started = time.perf_counter()
        self.stop_at = started + self.order.seconds
        cpu = time.process_time()
        clients = [asyncio.create_task(self.client(i)) for i in range(self.order.tasks)]
        pending: set[asyncio.Task[None]] = set()
        if clients:  # a process may have no client at a level below --client-procs
            _, pending = await asyncio.wait(
                clients, timeout=max(0.0, self.order.hard_stop - time.time())
            )
        for task in pending:
            task.cancel()
        self.share.abandoned = self.in_flight
        await asyncio.gather(*pending, return_exceptions=True)
        self.share.cpu = time.process_time() - cpu
        self.share.elapsed = time.perf_counter() - started
        return self.share


async def drive(
    probes: Sequence[Probe], plan: list[str], order: LevelOrder, barrier: Barrier
) -> Share:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=2.0)
    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=order.timeout))
            for _ in range(order.tasks)
        ]
        return await Driver(https, probes, plan, order).run(barrier)


def client_main(probes: list[Probe], plan: list[str], barrier: Barrier, conn: Connection) -> None:
    """A client process: run each :class:`LevelOrder` received, send back its :class:`Share`."""
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        while (order := conn.recv()) is not None:
            conn.send(asyncio.run(drive(probes, plan, order, barrier)))


@dataclass(slots=True)
class ClientPool:
    barrier: Barrier
    processes: list[multiprocessing.process.BaseProcess]
    pipes: list[Connection]

    @classmethod
    def start(cls, count: int, probes: list[Probe], plan: list[str]) -> ClientPool:
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(count + 1)
        processes: list[multiprocessing.process.BaseProcess] = []
        pipes: list[Connection] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=client_main, args=(probes, plan, barrier, theirs), daemon=True
            )
            process.start()
            processes.append(process)
            pipes.append(ours)
        return cls(barrier, processes, pipes)

    def run(self, orders: Sequence[LevelOrder], on_start: threading.Event) -> list[Share]:
        for pipe, order in zip(self.pipes, orders, strict=True):
            pipe.send(order)
        self.barrier.wait(180)
        on_start.set()
        return [pipe.recv() for pipe in self.pipes]

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


# --- RSS sampling -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time()
    rss: dict[int, int]  # pid -> bytes

    @property
    def total(self) -> int:
        return sum(self.rss.values())


class RssSampler(threading.Thread):
    """Samples the RSS of every process of the server's tree every *interval* seconds."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self.names: dict[int, str] = {}
        self._stop_event = threading.Event()

    def sample(self) -> Sample:
        rss: dict[int, int] = {}
        for proc in server_tree(self.pid):
            with contextlib.suppress(psutil.Error):
                rss[proc.pid] = proc.memory_info().rss
                if proc.pid not in self.names:
                    self.names[proc.pid] = role_of(proc, self.pid)
        found = Sample(time.time(), rss)
        self.samples.append(found)
        return found

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


def role_of(proc: psutil.Process, root: int) -> str:
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        line = ""
    if proc.pid == root:
        return "serve"
    if "resource_tracker" in line or "semaphore_tracker" in line:
        return "tracker"
    return "worker"


def workers_of(sampler: RssSampler) -> list[int]:
    """The pids that answer requests: the worker children, else the serve process itself."""
    children = [p for p, role in sampler.names.items() if role == "worker"]
    return children or [sampler.pid]


# --- one level --------------------------------------------------------------------------------


@dataclass(slots=True)
class LevelResult:
    name: str
    clients: int
    tallies: dict[str, Tally]
    connect_errors: Tally
    abandoned: int
    started: float
    ended: float
    elapsed: float
    client_cpu: float
    server_cpu: float
    machine_cpu: float

    @property
    def requests(self) -> int:
        return sum(len(t.latencies) + t.errors.total() for t in self.tallies.values())

    @property
    def errors(self) -> int:
        own = sum(t.errors.total() for t in self.tallies.values())
        return own + self.connect_errors.errors.total()

    def total(self) -> Tally:
        merged = Tally()
        for tally in self.tallies.values():
            merged.merge(tally)
        return merged


def run_level(
    pool: ClientPool, server_pid: int, name: str, clients: int, whole: LevelOrder
) -> LevelResult:
    """*clients* virtual clients spread over the client processes; *whole* is the level's
    order with every client (``tasks``) and request (``max_requests``) in it."""
    procs = max(1, min(len(pool.pipes), clients))
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    quota = -(-whole.max_requests // procs)
    orders = [
        replace(whole, tasks=n, offset=sum(shares[:i]), max_requests=quota)
        for i, n in enumerate(shares)
    ]
    orders += [replace(whole, tasks=0, max_requests=0)] * (len(pool.pipes) - procs)
    started_event = threading.Event()
    before_cpu: list[dict[int, float]] = [{}]
    before_busy = [0.0]

    def snapshot() -> None:  # when every client process has passed the barrier
        started_event.wait()
        before_cpu[0], before_busy[0] = tree_cpu(server_pid), machine_busy()

    watcher = threading.Thread(target=snapshot, daemon=True)
    watcher.start()
    results = pool.run(orders, started_event)
    watcher.join()
    after_cpu, after_busy = tree_cpu(server_pid), machine_busy()
    cpu_before = before_cpu[0]
    server_cpu = sum(after_cpu[p] - cpu_before.get(p, 0.0) for p in after_cpu)
    tallies = {k: Tally() for k in KINDS}
    connect = Tally()
    for share in results:
        for kind in KINDS:
            tallies[kind].merge(share.tallies[kind])
        connect.merge(share.connect_errors)
    active = results[:procs]
    return LevelResult(
        name=name,
        clients=clients,
        tallies=tallies,
        connect_errors=connect,
        abandoned=sum(s.abandoned for s in active),
        started=min(s.started for s in active),
        ended=time.time(),
        elapsed=max(s.elapsed for s in active),
        client_cpu=sum(s.cpu for s in active),
        server_cpu=server_cpu,
        machine_cpu=after_busy - before_busy[0],
    )


# --- report -----------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, round(q * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def latency_cells(tally: Tally) -> str:
    ordered = sorted(tally.latencies)
    p50, p99 = percentile(ordered, 0.5) * 1000, percentile(ordered, 0.99) * 1000
    return f"{p50:>8.1f} {p99:>8.1f}"


def print_levels(levels: Sequence[LevelResult]) -> None:
    header = (
        f"{'clients':>7} {'transaction':<11} {'requests':>9} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for level in levels:
        rows = [(k, level.tallies[k]) for k in KINDS] + [("all", level.total())]
        for i, (kind, tally) in enumerate(rows):
            done = len(tally.latencies) + tally.errors.total()
            errors = tally.errors.total() + (level.connect_errors.errors.total() * (kind == "all"))
            rate = len(tally.latencies) / level.elapsed if level.elapsed else 0.0
            first = f"{level.clients:>7}" if i == 0 else " " * 7
            print(f"{first} {kind:<11} {done:>9,} {rate:>8.1f} {latency_cells(tally)} {errors:>6}")
        if level.abandoned:
            print(f"{'':>7} ({level.abandoned} requests in flight at the time cap, not counted)")
    print(
        "req/s = successful answers per second of the level's wall time; p50/p99 over the\n"
        "successful requests (sent to reply read whole); errors of every kind."
    )


def print_variants(level: LevelResult) -> None:
    """Latency per request variant at one level (ITI-38's three queries differ most)."""
    print(f"\nby request variant at {level.clients} clients (successful requests):")
    for kind in KINDS:
        for variant, latencies in sorted(level.tallies[kind].variants.items()):
            ordered = sorted(latencies)
            print(
                f"  {kind:<7} {variant:<27} {len(ordered):>7,} "
                f"p50 {percentile(ordered, 0.5) * 1000:>7.1f} ms  "
                f"p99 {percentile(ordered, 0.99) * 1000:>7.1f} ms"
            )


def print_cpu(levels: Sequence[LevelResult]) -> None:
    print(
        f"\n{'clients':>7} {'seconds':>7} {'client cpu':>10} {'server cpu':>10} "
        f"{'machine':>8} {'others':>7} {'client ms/req':>13} {'server ms/req':>13}"
    )
    for level in levels:
        e = level.elapsed or 1.0
        client, server, busy = level.client_cpu / e, level.server_cpu / e, level.machine_cpu / e
        others = max(0.0, busy - client - server)
        n = max(1, level.requests)
        print(
            f"{level.clients:>7} {level.elapsed:>7.1f} {client:>10.0%} {server:>10.0%} "
            f"{busy:>8.0%} {others:>7.0%} {1000 * level.client_cpu / n:>13.2f} "
            f"{1000 * level.server_cpu / n:>13.2f}"
        )
    print(
        f"cpu = share of one core over the level (the machine has {os.cpu_count()} cores, so "
        f"{os.cpu_count()}00 % is all of it);\n'others' = the machine's busy time not spent "
        "in the client processes or the server's tree;\nms/req = CPU milliseconds per request "
        "(less sensitive to other load than req/s)."
    )


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start: float
    end: float


def print_rss(sampler: RssSampler, phases: Sequence[Phase]) -> None:
    print(f"\nserver RSS (MB), {len(sampler.samples)} samples, one a second, whole tree:")
    print(f"{'phase':<22} {'samples':>7} {'min':>7} {'max':>7} {'last':>7}")
    for phase in phases:
        found = sampler.between(phase.start, phase.end)
        if not found:
            continue
        totals = [s.total / MB for s in found]
        print(
            f"{phase.name:<22} {len(found):>7} {min(totals):>7.1f} {max(totals):>7.1f} "
            f"{totals[-1]:>7.1f}"
        )
    print("per process (MB): role, pid, first sample, max, last sample")
    for pid, role in sorted(sampler.names.items()):
        seen = [s.rss[pid] / MB for s in sampler.samples if pid in s.rss]
        if seen:
            print(f"  {role:<7} {pid:>7} {seen[0]:>7.1f} {max(seen):>7.1f} {seen[-1]:>7.1f}")


def median_total(samples: Sequence[Sample]) -> float:
    return statistics.median(s.total for s in samples) / MB if samples else float("nan")


def growth_target(workers: int) -> float:
    """The RSS growth tolerated after the peak-concurrency warm-up: RSS_TOLERANCE_MB a worker."""
    return RSS_TOLERANCE_MB * max(1, workers)


def print_errors(levels: Sequence[LevelResult], server_log: Path) -> None:
    examples: dict[str, str] = {}
    for level in levels:
        for kind, tally in [*level.tallies.items(), ("connect", level.connect_errors)]:
            for error, detail in tally.examples.items():
                examples.setdefault(f"{kind} {error}", f"at {level.clients} clients: {detail}")
    if not examples:
        return
    print("\nfirst error of each kind:")
    for key, detail in examples.items():
        print(f"  {key}: {detail}")
    lines = server_log.read_text(errors="replace").splitlines()
    flagged = [line for line in lines if "ERROR" in line or "Traceback" in line]
    print(f"server log: {len(lines)} lines, {len(flagged)} with ERROR or Traceback; the first:")
    for line in list(dict.fromkeys(flagged))[:8]:
        print(f"  {line[:240]}")


# --- the run ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """Everything measured, for the report and the figures."""

    warmup: LevelResult | None = None
    levels: list[LevelResult] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    baseline: Phase | None = None
    end: Phase | None = None


def idle(sampler: RssSampler, name: str, seconds: float) -> Phase:
    start = time.time()
    time.sleep(seconds)
    sampler.sample()
    return Phase(name, start, time.time())


def load_phase(
    args: argparse.Namespace,
    pool: ClientPool,
    sampler: RssSampler,
    server: Server,
    deadline: float,
) -> Run:
    """Warm-up at the top level, idle, every level in turn (within *deadline*), idle."""
    run = Run()
    top = max(args.levels)

    def level(name: str, clients: int, wanted: float) -> LevelResult | None:
        reserve = END_RESERVE_S + args.idle_seconds + 2.0  # 2 s: connecting the clients
        seconds = min(wanted, deadline - time.time() - reserve)
        if seconds < 1.0:
            return None
        hard_stop = min(
            time.time() + 2.0 + seconds + args.timeout, deadline - END_RESERVE_S - args.idle_seconds
        )
        start = time.time()
        order = LevelOrder(
            clients, 0, seconds, args.max_requests, hard_stop, args.timeout, args.full_check
        )
        result = run_level(pool, server.pid, name, clients, order)
        run.phases.append(Phase(name, start, time.time()))
        return result

    run.warmup = level(f"warm-up, {top} clients", top, args.warmup_seconds)
    run.baseline = idle(sampler, "idle after warm-up", args.idle_seconds)
    run.phases.append(run.baseline)
    for clients in args.levels:
        result = level(f"{clients} clients", clients, args.level_seconds)
        if result is None:
            run.skipped.append(clients)
            continue
        run.levels.append(result)
        print(
            f"  {clients:>3} clients: {result.requests:,} requests, {result.errors} errors, "
            f"{result.elapsed:.1f} s",
            flush=True,
        )
    run.end = idle(sampler, "idle at the end", args.idle_seconds)
    run.phases.append(run.end)
    return run


def report(
    args: argparse.Namespace, run: Run, sampler: RssSampler, server_log: Path, started: float
) -> None:
    print()
    if run.warmup is not None:
        w = run.warmup
        print(
            f"warm-up: {w.clients} clients for {w.elapsed:.1f} s, {w.requests:,} requests, "
            f"{w.errors} errors (not in the table)\n"
        )
    print_levels(run.levels)
    if run.levels:
        print_variants(max(run.levels, key=lambda x: x.clients))
    if run.skipped:
        print(f"levels skipped by the {args.max_seconds:g} s time cap: {run.skipped}")
    print_cpu(run.levels)
    print_rss(sampler, run.phases)
    figures = headline(args, run, sampler)
    print_errors([*([run.warmup] if run.warmup else []), *run.levels], server_log)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s (cap {args.max_seconds:g} s)")
    record_figures(args, figures)


@dataclass(frozen=True, slots=True)
class Headline:
    peak_rate: float
    peak_clients: int
    top_clients: int
    top_p50: float
    top_p99: float
    errors: int
    requests: int
    growth: float
    growth_tolerance: float
    worker_rss: float
    workers: int


def headline(args: argparse.Namespace, run: Run, sampler: RssSampler) -> Headline:
    everything = [*([run.warmup] if run.warmup else []), *run.levels]
    rates = [(len(x.total().latencies) / x.elapsed, x.clients) for x in run.levels if x.elapsed]
    peak_rate, peak_clients = max(rates, default=(0.0, 0))
    top = max(run.levels, key=lambda x: x.clients)
    ordered = sorted(top.total().latencies)
    base = sampler.between(run.baseline.start, run.baseline.end) if run.baseline else []
    end = sampler.between(run.end.start, run.end.end) if run.end else []
    growth = median_total(end) - median_total(base)
    pids = workers_of(sampler)
    worker_rss = max(
        (s.rss[p] / MB for s in sampler.samples for p in pids if p in s.rss), default=0.0
    )
    after_warmup = sum(x.requests for x in run.levels)
    found = Headline(
        peak_rate=peak_rate,
        peak_clients=peak_clients,
        top_clients=top.clients,
        top_p50=percentile(ordered, 0.5) * 1000,
        top_p99=percentile(ordered, 0.99) * 1000,
        errors=sum(x.errors for x in everything),
        requests=sum(x.requests for x in everything),
        growth=growth,
        growth_tolerance=growth_target(len(pids)),
        worker_rss=worker_rss,
        workers=len(pids),
    )
    per_request = growth * MB / after_warmup if after_warmup else float("nan")
    print(
        f"\nRSS growth, idle at the end minus idle after the warm-up (medians): {growth:+.1f} MB "
        f"({per_request:+.0f} B per request over {after_warmup:,} requests); tolerance "
        f"{found.growth_tolerance:g} MB\n(allocator noise after a warm-up at the peak "
        f"concurrency; a leak of 1 KB per request would add {after_warmup / 1024:.0f} MB)."
    )
    print(f"max RSS of one worker ({found.workers} worker process(es)): {worker_rss:.1f} MB")
    print(
        f"headline: peak {peak_rate:.1f} req/s at {peak_clients} clients; at {top.clients} "
        f"clients p50 {found.top_p50:.1f} ms, p99 {found.top_p99:.1f} ms; "
        f"{found.errors} errors in {found.requests:,} requests"
    )
    return found


def record_figures(args: argparse.Namespace, h: Headline) -> None:
    setup = (
        f"mixed {args.mix_text}, {h.workers} worker(s), {args.client_procs} client processes "
        f"on the same {os.cpu_count()}-core machine"
    )
    write_figure(
        args.results,
        BENCH,
        "peak mixed throughput",
        round(h.peak_rate, 1),
        "req/s",
        detail=f"at {h.peak_clients} clients; {setup}",
    )
    write_figure(
        args.results,
        BENCH,
        f"p99 latency at {h.top_clients} clients",
        round(h.top_p99, 1),
        "ms",
        detail=f"p50 {h.top_p50:.1f} ms; {setup}",
    )
    write_figure(
        args.results,
        BENCH,
        "errors under load",
        h.errors,
        "requests",
        target="== 0",
        detail=f"of {h.requests:,} requests, levels {args.levels_text} and the warm-up",
    )
    write_figure(
        args.results,
        BENCH,
        "server RSS growth",
        round(h.growth, 1),
        "MB",
        target=f"<= {h.growth_tolerance:g}",
        detail="idle after the run minus idle after a warm-up at the top concurrency",
    )
    write_figure(
        args.results,
        BENCH,
        "max RSS per worker",
        round(h.worker_rss, 1),
        "MB",
        target=f"< {WORKER_RSS_TARGET_MB:g}",
        detail=f"{h.workers} worker process(es)",
    )


def run_bench(args: argparse.Namespace) -> None:
    started = time.monotonic()
    deadline = time.time() + args.max_seconds
    print(
        f"== Responding Gateway mixed load: {args.mix_text}; levels {args.levels_text}, "
        f"{args.level_seconds:g} s each (cap {args.max_seconds:g} s) =="
    )
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores shared by the server, {args.client_procs} client "
        f"processes and anything else running (load average {load[0]:.2f} at the start); "
        f"Python {sys.version.split()[0]}, httpx {httpx.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="ib-load-") as tmp_name:
        tmp = Path(tmp_name)
        patients = patients_for(args.patients)
        files = build_archive(tmp / "archive", patients, args.studies, args.instances, args.rows)
        database_url = args.database_url or f"sqlite:///{tmp / 'load.db'}"
        config, port = tmp / "imagebridge.toml", free_port()
        config.write_text(
            toml_text(port, tmp / "archive", database_url, args.scan_interval), encoding="utf-8"
        )
        print(
            f"archive: {len(patients)} patients x {args.studies} studies x {args.instances} "
            f"instances of {args.rows}x{args.rows} ({files} files); store "
            f"{database_url.split(':', 1)[0]}; serve --workers {args.workers}"
        )
        server: Server | None = None
        pool: ClientPool | None = None
        sampler: RssSampler | None = None
        try:
            t0 = time.perf_counter()
            server = start_server(config, port, args.workers, tmp / "server.log")
            print(f"server up in {time.perf_counter() - t0:.1f} s at {server.base}")
            sampler = RssSampler(server.pid)
            sampler.start()
            probes = asyncio.run(discover(server.base, patients, args.studies, args.instances))
            check_ms = self_test(probes)
            counts = Counter(p.kind for p in probes)
            print(
                "requests: "
                + ", ".join(f"{counts[k]} {k}" for k in KINDS)
                + "; each sent once and checked.  Check ms light/full: "
                + ", ".join(f"{k} {a:.2f}/{b:.2f}" for k, (a, b) in check_ms.items())
                + f"; the load uses {'full' if args.full_check else 'light'}"
            )
            pool = ClientPool.start(args.client_procs, probes, weighted_plan(args.mix))
            run = load_phase(args, pool, sampler, server, deadline)
        finally:
            if pool is not None:
                pool.stop()
            if sampler is not None:
                sampler.stop()
            if server is not None:
                server.stop()
                if args.server_log:
                    shutil.copy(server.log, args.server_log)
        assert sampler is not None  # else the try block raised
        report(args, run, sampler, tmp / "server.log", started)


def parse_mix(text: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for item in text.split(","):
        kind, _, weight = item.strip().partition("=")
        if kind not in KINDS or not weight.isdigit():
            raise argparse.ArgumentTypeError(f"--mix items are KIND=WEIGHT, KIND in {KINDS}")
        mix[kind] = int(weight)
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("--mix needs a positive weight")
    return {k: w for k, w in mix.items() if w > 0}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,8,32 clients, 3 s")
    parser.add_argument("--levels", default="1,8,32,64,128,256", help="clients per level")
    parser.add_argument("--level-seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per level")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="whole-run cap")
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="idle RSS windows")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N when N > 1")
    parser.add_argument("--mix", default="XCPD=1,ITI-38=1,ITI-39=1,RAD-75=1")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--full-check", action="store_true", help="check answers with the project's parsers"
    )
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--studies", type=int, default=3, help="studies per patient")
    parser.add_argument("--instances", type=int, default=5, help="instances per study")
    parser.add_argument("--rows", type=int, default=64, help="rows = columns of the images")
    parser.add_argument("--scan-interval", type=float, default=30.0, help="folder re-scan, s")
    parser.add_argument("--database-url", help="the store (default: SQLite in the temp dir)")
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    parser.add_argument("--server-log", type=Path, help="keep the server's output here")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.level_seconds = "1,8,32", 3.0
        args.warmup_seconds, args.idle_seconds = 2.0, 2.0
    try:
        args.mix = parse_mix(args.mix)
        args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    if not args.levels or min(args.levels) < 1 or args.client_procs < 1 or args.workers < 1:
        parser.error("levels, --client-procs and --workers must be positive")
    args.mix_text = " ".join(f"{k} {w}" for k, w in args.mix.items())
    args.levels_text = ",".join(map(str, args.levels))
    return args


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        run_bench(args)
    except KeyboardInterrupt:
        print("\ninterrupted; server stopped, temporary files removed", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
