"""Responding Gateway figures: ITI-38 FindDocuments throughput and on-demand KOS build time.

Usage: ``python bench/responder.py [--duration 6] [--levels 1,8,32] [--max-requests 20000]
[--client-procs 2] [--servers bare,soap,gateway] [--instances 5] [--profile]
[--kos-instances 5000] [--skip-http] [--skip-kos] [--results FILE]``

* **ITI-38 FindDocuments** (issue 3 target: at least 300 req/s on a 2-core
  machine).  A folder archive gets 20 small synthetic studies (``--instances``
  5, 32x32) for one patient plus 2 studies each for 5 other patients.  Each
  server runs in its own process (``python bench/responder.py --serve KIND``,
  uvicorn on a free 127.0.0.1 port, the settings of ``imagebridge serve``), so
  client and server share no GIL or event loop:

  - ``gateway``: the real ``imagebridge.app.create_app(config)`` (folder
    repository, SQLite store in a temporary directory);
  - ``bare`` (the baseline): a minimal Starlette app that reads the request body
    and returns the gateway's own AdhocQueryResponse, captured byte for byte;
  - ``soap``: imagebridge's SOAP server layer (request parse, envelope and
    WS-Addressing checks, reply envelope serialisation) around a handler that
    returns the captured payload, so the gap between ``bare``, ``soap`` and
    ``gateway`` splits the cost between transport and query path.

  The first query to the gateway builds the 20 KOS manifests and is timed on
  its own ("cold").  Then, per concurrency level, every server gets an untimed
  warm-up and a run of ``--duration`` seconds (or ``--max-requests``) with N
  asyncio tasks sharing one ``httpx.AsyncClient`` (``--client-procs P``
  spreads them over P client processes), all posting the same FindDocuments
  request.  An answer counts as an error unless it is HTTP 200 with exactly
  20 ExtrinsicObjects.  The client and server CPU columns are the share of
  one core each used during the run: a client near 100 % is the bottleneck.
  ``--profile`` then samples the gateway with py-spy (all threads) under 8
  clients and prints its hottest functions.

* **KOS for a 5,000-instance study**: :func:`study_headers` (no pixel data),
  then, best of ``--kos-repeat``, :func:`manifest_uid` + :func:`manifest_series_uid`,
  :func:`build_kos` and :func:`document_entry_for_manifest`, against the 0.5 s
  target and two plain pydicom baselines on the same data: ``dcmwrite`` of a
  naive dataset with the same two reference sequences (about the same bytes),
  and ``dcmread`` + SHA-1 of the built KOS.

Nothing is asserted; the figures are printed.  With ``--results FILE`` the
headline figures are also appended to that JSON-lines file (``bench/record.py``,
read by ``bench/results.py``): the gateway's best ITI-38 req/s (target 300) and
its ratio to the bare baseline at that concurrency, the cold query, and the
on-demand KOS total against 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import psutil
import pydicom
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from record import write_figure
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.kos import build_kos, manifest_series_uid, manifest_uid
from imagebridge.dicom.metadata import document_entry_for_manifest
from imagebridge.dicom.synthetic import DEMO_ISSUER, make_study, study_headers
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import DicomPatient, InstanceHeader
from imagebridge.model.xds_query import AdhocQueryRequest, FindDocumentsQuery
from imagebridge.store import Store
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.transport.server import SoapEndpoint, soap_app
from imagebridge.wire.soap import parse_envelope, render_envelope
from imagebridge.wire.wsa import request_headers
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import render_adhoc_query_request
from imagebridge.wire.xml import parse_xml, serialize

HOME = "1.3.6.1.4.1.21367.13.70.201"
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
PATH = "/xca/query"
STUDIES = 20
OTHER_PATIENTS = 5
TARGET = DicomPatient("BENCH^TARGET", "BENCH-TARGET", DEMO_ISSUER, "19700101", "F")
TARGET_ID = PatientId(TARGET.id, DEMO_ISSUER.universal_id)
KOS_TARGET = 0.5  # seconds, issue 3
RATE_TARGET = 300  # ITI-38 req/s on a 2-core machine, issue 3
BENCH = "responder"
EXTRINSIC = re.compile(rb"<(?:[\w.-]+:)?ExtrinsicObject[\s>/]")
ENV_CONFIG = "BENCH_RESPONDER_CONFIG"  # JSON of the raw config mapping (gateway)
ENV_REPLY = "BENCH_RESPONDER_REPLY"  # captured AdhocQueryResponse bytes (bare, soap)


# --- server side (runs in its own process) ---------------------------------------------------


def gateway_app() -> Starlette:
    """uvicorn factory: the real gateway; config from JSON file $BENCH_RESPONDER_CONFIG."""
    raw = json.loads(Path(os.environ[ENV_CONFIG]).read_text(encoding="utf-8"))
    return create_app(config_from_mapping(raw, {}))


def bare_app() -> Starlette:
    """uvicorn factory: read the body, answer the captured reply bytes (no XML work at all)."""
    reply = Path(os.environ[ENV_REPLY]).read_bytes()

    async def query(request: Request) -> Response:
        await request.body()
        return Response(reply, media_type=SOAP_CONTENT_TYPE)

    return Starlette(routes=[Route(PATH, query, methods=["POST"])])


def soap_echo_app() -> Starlette:
    """uvicorn factory: imagebridge's SOAP server, its handler returning the captured payload."""
    root = parse_xml(Path(os.environ[ENV_REPLY]).read_bytes())
    payload = parse_envelope(root, require_addressing=False).payload
    if payload is None:
        raise SystemExit("the captured reply has no payload")

    async def handle(request: SoapRequest) -> SoapReply:
        return SoapReply(payload)  # lxml moves the element into each new envelope

    return soap_app([SoapEndpoint(PATH, {Transaction.ITI_38: handle})])


FACTORIES = {"gateway": gateway_app, "bare": bare_app, "soap": soap_echo_app}


def serve(kind: str) -> None:
    """Bind 127.0.0.1:0, print the port, serve until SIGINT/SIGTERM (settings of ``serve``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        FACTORIES[kind](), log_config=None, access_log=False, lifespan="on", backlog=2048
    )
    uvicorn.Server(config).run(sockets=[sock])


@dataclass(slots=True)
class Server:
    kind: str
    process: subprocess.Popen[bytes]
    url: str
    started_in: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(kind: str, env: dict[str, str]) -> Server:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind],
        stdout=subprocess.PIPE,
        env={**os.environ, **env},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise SystemExit(f"{kind} server did not start (printed {line!r})")
    url = f"http://127.0.0.1:{int(line)}{PATH}"
    deadline = time.monotonic() + 120
    while True:  # the socket only listens once the lifespan start-up (indexing) is done
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} server exited or never answered") from None
            time.sleep(0.05)
    return Server(kind, process, url, time.perf_counter() - started)


# --- client side ---------------------------------------------------------------------------


def find_documents_body(url: str) -> bytes:
    """One ITI-38 FindDocuments SOAP request (Approved, LeafClass), as sent on the wire."""
    spec = spec_of(Transaction.ITI_38)
    request = AdhocQueryRequest(
        query=FindDocumentsQuery(patient_id=TARGET_ID, status=(v.STATUS_APPROVED,))
    )
    headers = request_headers(spec, "urn:uuid:6b7d8b0e-8a4e-4a55-9a52-bench00000001", url)
    return serialize(render_envelope(headers, render_adhoc_query_request(request)))


@dataclass(slots=True)
class LevelResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds of the client process(es)


async def _drive(
    url: str, body: bytes, tasks: int, duration: float, max_requests: int, start_at: float
) -> LevelResult:
    result = LevelResult()
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    headers = {"Content-Type": SOAP_CONTENT_TYPE}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        # One connection per task before the clock starts.
        await asyncio.gather(
            *(client.post(url, content=body, headers=headers) for _ in range(tasks))
        )
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        deadline = started + duration
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    reply = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    result.errors += 1
                    result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                took = time.perf_counter() - t0
                found = len(EXTRINSIC.findall(reply.content))
                if reply.status_code != 200 or found != STUDIES:
                    result.errors += 1
                    result.first_error = result.first_error or (
                        f"HTTP {reply.status_code}, {found} ExtrinsicObjects"
                    )
                else:
                    result.latencies.append(took)

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        result.client_cpu = time.process_time() - cpu
        result.elapsed = time.perf_counter() - started
    return result


def client_process(
    url: str, body: bytes, tasks: int, duration: float, max_requests: int, start_at: float
) -> LevelResult:
    """One client process's share of a level (run in a spawned process)."""
    return asyncio.run(_drive(url, body, tasks, duration, max_requests, start_at))


def run_level(
    url: str,
    body: bytes,
    clients: int,
    duration: float,
    max_requests: int,
    pool: ProcessPoolExecutor | None,
    procs: int,
) -> LevelResult:
    procs = max(1, min(procs, clients))
    if pool is None or procs == 1:
        return asyncio.run(_drive(url, body, clients, duration, max_requests, time.time()))
    start_at = time.time() + 0.5  # every process has connected by then
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    futures = [
        pool.submit(client_process, url, body, n, duration, max_requests // procs, start_at)
        for n in shares
    ]
    total = LevelResult()
    for future in futures:
        part = future.result()
        total.latencies += part.latencies
        total.errors += part.errors
        total.first_error = total.first_error or part.first_error
        total.elapsed = max(total.elapsed, part.elapsed)
        total.client_cpu += part.client_cpu
    return total


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, round(q * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


# --- set-up ----------------------------------------------------------------------------------


def build_archive(archive: Path, rows: int, instances: int = 5) -> tuple[int, int]:
    """20 studies (*instances* each) for TARGET and 2 each for OTHER_PATIENTS; (studies, files)."""
    modalities = ("CT", "MR", "CR")
    files = 0
    jobs: list[tuple[DicomPatient, str, int]] = [
        (TARGET, modalities[i % 3], i) for i in range(STUDIES)
    ]
    for p in range(OTHER_PATIENTS):
        other = DicomPatient(f"BENCH^OTHER{p}", f"BENCH-{p:04d}", DEMO_ISSUER, "19800101", "M")
        jobs += [(other, modalities[(p + s) % 3], 1000 + p * 2 + s) for s in range(2)]
    for patient, modality, seed in jobs:
        study = make_study(
            patient,
            archive / f"{patient.id}-{seed}",
            modality=modality,
            series=1,
            instances=instances,
            rows=rows,
            columns=rows,
            seed=seed,
        )
        files += len(study.files)
    return len(jobs), files


def gateway_config(tmp: Path, archive: Path) -> dict[str, Any]:
    return {
        "community": {"home_community_id": f"urn:oid:{HOME}", "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / 'bench.db'}"},
        # No re-scan during the runs: the figures are for answering, not indexing.
        "repositories": [
            {"unique_id": REPO, "source": "folder", "path": str(archive), "scan_interval": 3600}
        ],
    }


# --- profiling -------------------------------------------------------------------------------


IDLE_FRAMES = frozenset({"Condition.wait (threading.py)", "EpollSelector.select (selectors.py)"})


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def summarise_profile(raw: Path, top: int) -> None:
    """Print self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = idle = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("thread ", "process "))]
        if not frames or frames[-1] in IDLE_FRAMES:
            idle += count
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        print("  (no samples)")
        return
    print(
        f"  {total} busy samples over all threads ({idle} more were idle waits: event loop"
        f" select,\n  worker threads waiting for work); top {top} functions by own time:"
    )
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")
    print(f"  top {top} imagebridge functions by inclusive time (% of busy samples):")
    ours = [(f, c) for f, c in inclusive.items() if "imagebridge/" in f]
    for frame, count in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")


def _short(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# --- the ITI-38 figures ----------------------------------------------------------------------


def http_figures(args: argparse.Namespace) -> None:
    print("== ITI-38 FindDocuments, folder source, patient with 20 studies ==")
    print(
        f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; uvicorn "
        f"{uvicorn.__version__} (h11, asyncio loop as `imagebridge serve` runs here); "
        f"client httpx {httpx.__version__}, {args.client_procs} client process(es)"
    )
    with tempfile.TemporaryDirectory(prefix="ib-bench-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "archive"
        started = time.perf_counter()
        studies, files = build_archive(archive, args.rows, args.instances)
        print(f"archive: {studies} studies, {files} files in {time.perf_counter() - started:.1f} s")
        config_file = tmp / "config.json"
        config_file.write_text(json.dumps(gateway_config(tmp, archive)), encoding="utf-8")
        servers: dict[str, Server] = {}
        pool = None
        if args.client_procs > 1:
            pool = ProcessPoolExecutor(args.client_procs, mp_context=get_context("spawn"))
        try:
            servers["gateway"] = gateway = start_server("gateway", {ENV_CONFIG: str(config_file)})
            print(f"gateway up (folder indexed) in {gateway.started_in:.2f} s")
            body = find_documents_body(gateway.url)
            headers = {"Content-Type": SOAP_CONTENT_TYPE}
            with httpx.Client(timeout=60) as client:
                t0 = time.perf_counter()
                cold = client.post(gateway.url, content=body, headers=headers)
                cold_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                warm = client.post(gateway.url, content=body, headers=headers)
                warm_s = time.perf_counter() - t0
            found = len(EXTRINSIC.findall(warm.content))
            print(
                f"cold query (builds {STUDIES} KOS): {cold_s * 1000:.0f} ms, HTTP "
                f"{cold.status_code}; next query {warm_s * 1000:.1f} ms, HTTP "
                f"{warm.status_code}, {found} ExtrinsicObjects, request {len(body):,} B, "
                f"reply {len(warm.content):,} B"
            )
            if warm.status_code != 200 or found != STUDIES:
                raise SystemExit(f"unexpected reply: {warm.content[:2000]!r}")
            reply_file = tmp / "reply.xml"
            reply_file.write_bytes(warm.content)
            for kind in args.servers:
                if kind != "gateway":
                    servers[kind] = start_server(kind, {ENV_REPLY: str(reply_file)})
            print()
            header = (
                f"{'server':<8} {'clients':>7} {'requests':>9} {'req/s':>8} {'p50 ms':>8} "
                f"{'p99 ms':>8} {'errors':>6} {'client cpu':>10} {'server cpu':>10} "
                f"{'vs bare':>8}"
            )
            print(header)
            print("-" * len(header))
            by_level: dict[int, dict[str, float]] = {}
            for clients in args.levels:
                rates: dict[str, float] = by_level.setdefault(clients, {})
                for kind in args.servers:
                    server = servers[kind]
                    # Warm-up: untimed, same concurrency.
                    run_level(
                        server.url, body, clients, args.warmup, 10**9, pool, args.client_procs
                    )
                    proc = psutil.Process(server.pid)
                    before = proc.cpu_times()
                    result = run_level(
                        server.url,
                        body,
                        clients,
                        args.duration,
                        args.max_requests,
                        pool,
                        args.client_procs,
                    )
                    after = proc.cpu_times()
                    server_cpu = (after.user + after.system) - (before.user + before.system)
                    done = len(result.latencies)
                    rate = done / result.elapsed if result.elapsed else 0.0
                    rates[kind] = rate
                    ordered = sorted(result.latencies)
                    ratio = f"{rate / rates['bare']:.2f}x" if rates.get("bare") else "-"
                    print(
                        f"{kind:<8} {clients:>7} {done + result.errors:>9,} {rate:>8,.0f} "
                        f"{percentile(ordered, 0.50) * 1000:>8.2f} "
                        f"{percentile(ordered, 0.99) * 1000:>8.2f} {result.errors:>6} "
                        f"{100 * result.client_cpu / result.elapsed:>9.0f}% "
                        f"{100 * server_cpu / result.elapsed:>9.0f}% {ratio:>8}"
                    )
                    if result.first_error:
                        print(f"         first error: {result.first_error}")
            rss = psutil.Process(gateway.pid).memory_info().rss / 2**20
            print(f"\ngateway RSS after the runs: {rss:.0f} MiB")
            print(
                "req/s and latencies are per request as the client sees them; cpu = share of "
                "one core\nused by the client process(es) / the server process during the run; "
                "'vs bare' = req/s\nratio to the bare Starlette reply of the same bytes at the "
                "same concurrency."
            )
            record_http(args.results, by_level, cold_s)
            if args.profile:
                profile_gateway(gateway, body, args, pool, tmp)
        finally:
            for server in servers.values():
                server.stop()
            if pool is not None:
                pool.shutdown()


def record_http(results: Path | None, by_level: dict[int, dict[str, float]], cold: float) -> None:
    """The gateway's best req/s over the levels, its ratio to ``bare`` there, the cold query."""
    rated = [(rates["gateway"], level) for level, rates in by_level.items() if "gateway" in rates]
    if not rated:
        return
    rate, level = max(rated)
    write_figure(
        results,
        BENCH,
        "ITI-38 FindDocuments req/s (gateway, best level)",
        round(rate, 1),
        "req/s",
        target=f">= {RATE_TARGET}",
        detail=f"{level} clients, folder source, {STUDIES} studies per reply, one worker",
    )
    bare = by_level[level].get("bare")
    if bare:
        write_figure(
            results,
            BENCH,
            "ITI-38 gateway / bare Starlette reply of the same bytes",
            round(rate / bare, 3),
            "ratio",
            detail=f"{level} clients; bare {bare:,.0f} req/s",
        )
    write_figure(
        results,
        BENCH,
        f"cold ITI-38 query (builds {STUDIES} KOS)",
        round(cold * 1000, 1),
        "ms",
        detail="first query after start-up",
    )


def profile_gateway(
    gateway: Server,
    body: bytes,
    args: argparse.Namespace,
    pool: ProcessPoolExecutor | None,
    tmp: Path,
) -> None:
    tool = py_spy()
    print()
    if tool is None:
        print("profile: py-spy not found (pip install py-spy); skipped")
        return
    raw = tmp / "gateway.collapsed"
    seconds = args.profile_seconds
    print(f"== profile: gateway under 8 clients, py-spy record --nonblocking, {seconds:.0f} s ==")
    spy = subprocess.Popen(
        [
            tool,
            "record",
            "--pid",
            str(gateway.pid),
            "--rate",
            "200",
            "--duration",
            str(int(seconds)),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    run_level(gateway.url, body, 8, seconds, 10**9, pool, args.client_procs)
    _, err = spy.communicate(timeout=seconds + 30)
    if not raw.exists():
        print(f"  py-spy failed: {err.decode(errors='replace').strip()[-500:]}")
        return
    summarise_profile(raw, args.profile_top)
    if args.profile_output:
        shutil.copy(raw, args.profile_output)
        print(f"  collapsed stacks copied to {args.profile_output}")


# --- the KOS figures -------------------------------------------------------------------------


def _best(fn: Any, repeat: int) -> tuple[float, float, Any]:
    timings = []
    value = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        timings.append(time.perf_counter() - t0)
    return min(timings), statistics.median(timings), value


def naive_kos_dataset(headers: Sequence[InstanceHeader]) -> Dataset:
    """Plain pydicom: a dataset with the KOS's two per-instance sequences (evidence + content)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.SOPInstanceUID = "2.25.1"
    ds.StudyInstanceUID = headers[0].study.study_instance_uid
    evidence, content = [], []
    for h in headers:
        ref = Dataset()
        ref.ReferencedSOPClassUID = h.sop_class_uid
        ref.ReferencedSOPInstanceUID = h.sop_instance_uid
        evidence.append(ref)
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        image = Dataset()
        image.ReferencedSOPClassUID = h.sop_class_uid
        image.ReferencedSOPInstanceUID = h.sop_instance_uid
        item.ReferencedSOPSequence = [image]
        content.append(item)
    study = Dataset()
    series = Dataset()
    series.SeriesInstanceUID = headers[0].series.series_instance_uid
    series.ReferencedSOPSequence = evidence
    study.ReferencedSeriesSequence = [series]
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    ds.ContentSequence = content
    return ds


def kos_figures(args: argparse.Namespace) -> None:
    n, series = args.kos_instances, args.kos_series
    print(f"== KOS manifest for a {n:,}-instance study ({series} CT series) ==")
    t0 = time.perf_counter()
    headers = study_headers(
        TARGET, modality="CT", series=series, instances=max(1, n // series), seed=4242
    )
    print(f"study_headers: {len(headers):,} headers in {time.perf_counter() - t0:.1f} s (untimed)")
    study_uid = headers[0].study.study_instance_uid
    when = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    repeat = args.kos_repeat

    def uids() -> tuple[str, str]:
        return manifest_uid(study_uid, headers), manifest_series_uid(study_uid, headers)

    uid_best, uid_median, (kos_uid, series_uid) = _best(uids, repeat)

    def build() -> bytes:
        return build_kos(
            headers,
            sop_instance_uid=kos_uid,
            series_instance_uid=series_uid,
            retrieve_location_uid=REPO,
            retrieve_ae_title="IMAGEBRIDGE",
            content_datetime=when,
            manufacturer="imagebridge",
        )

    build_best, build_median, kos = _best(build, repeat)

    def entry() -> object:
        return document_entry_for_manifest(
            headers,
            kos,
            patient_id=TARGET_ID,
            repository_unique_id=REPO,
            home=HomeCommunityId(HOME),
        )

    entry_best, entry_median, _ = _best(entry, repeat)

    def naive_write() -> bytes:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, naive_kos_dataset(headers), enforce_file_format=True)
        return buffer.getvalue()

    naive_best, naive_median, naive = _best(naive_write, repeat)
    prebuilt = naive_kos_dataset(headers)

    def naive_write_only() -> None:
        pydicom.dcmwrite(io.BytesIO(), prebuilt, enforce_file_format=True)

    write_best, write_median, _ = _best(naive_write_only, repeat)

    def naive_read() -> str:
        pydicom.dcmread(io.BytesIO(kos))
        return hashlib.sha1(kos, usedforsecurity=False).hexdigest()

    read_best, read_median, _ = _best(naive_read, repeat)
    with tempfile.TemporaryDirectory(prefix="ib-bench-kos-") as tmp:
        store = Store.open(f"sqlite:///{tmp}/kos.db")
        store.upsert_instances(REPO, headers)
        rows_best, rows_median, _ = _best(lambda: store.study_instances(study_uid, REPO), repeat)
        store.close()
    total = uid_best + build_best + entry_best
    print(f"KOS {len(kos):,} B; naive pydicom dataset {len(naive):,} B; best of {repeat} runs\n")
    header = f"{'step':<47} {'best ms':>8} {'median ms':>9} {'/ 0.5 s':>8} {'vs baseline':>12}"
    print(header)
    print("-" * len(header))
    rows = [
        ("manifest_uid + manifest_series_uid", uid_best, uid_median, None),
        ("build_kos", build_best, build_median, naive_best),
        ("document_entry_for_manifest", entry_best, entry_median, read_best),
        ("on-demand total (uids + build + entry)", total, None, None),
        ("store.study_instances (catalog reads it twice)", rows_best, rows_median, None),
        ("baseline: naive pydicom dataset + dcmwrite", naive_best, naive_median, None),
        ("baseline: dcmwrite only, naive dataset built", write_best, write_median, None),
        ("baseline: pydicom dcmread + SHA-1 of the KOS", read_best, read_median, None),
    ]
    for name, best, median, base in rows:
        med = f"{median * 1000:>9.1f}" if median is not None else f"{'-':>9}"
        vs = f"{best / base:>11.2f}x" if base else f"{'-':>12}"
        print(f"{name:<47} {best * 1000:>8.1f} {med} {best / KOS_TARGET:>7.2f}x {vs}")
    write_figure(
        args.results,
        BENCH,
        f"KOS on demand for a {len(headers):,}-instance study (uids + build + entry)",
        round(total, 4),
        "s",
        target=f"<= {KOS_TARGET}",
        detail=f"best of {repeat}; naive pydicom dataset + dcmwrite {naive_best:.3f} s",
    )
    print(
        "\n'/ 0.5 s' = best time over the issue's 0.5 s target (below 1 meets it); "
        "'vs baseline' =\nbuild_kos over the naive pydicom dataset + dcmwrite of the same "
        "references,\ndocument_entry_for_manifest over dcmread (lazy) + SHA-1 of the KOS. "
        "A cold query\nalso reads the study's instances from the store twice (catalog._build, "
        "entry_for)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", choices=sorted(FACTORIES), help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds per level")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--max-requests", type=int, default=20_000, help="cap per level")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    parser.add_argument("--servers", default="bare,soap,gateway", help="bare,soap,gateway")
    parser.add_argument("--instances", type=int, default=5, help="instances per study")
    parser.add_argument("--rows", type=int, default=32, help="rows = columns of the images")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway afterwards")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-top", type=int, default=20)
    parser.add_argument("--profile-output", type=Path, help="keep the collapsed stacks here")
    parser.add_argument("--kos-instances", type=int, default=5000)
    parser.add_argument("--kos-series", type=int, default=5)
    parser.add_argument("--kos-repeat", type=int, default=5)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-kos", action="store_true")
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = set(kinds) - set(FACTORIES)
    if unknown:
        parser.error(f"unknown server kind(s): {', '.join(sorted(unknown))}")
    # The baseline first, so every later row has its ratio; the gateway always runs.
    args.servers = [k for k in ("bare", "soap", "gateway") if k in {*kinds, "gateway"}]
    if not args.skip_http:
        http_figures(args)
    if not args.skip_kos:
        if not args.skip_http:
            print()
        kos_figures(args)


if __name__ == "__main__":
    main()
