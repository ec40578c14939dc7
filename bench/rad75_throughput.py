"""RAD-75 retrieve figures: throughput against nginx and a Python ceiling, peak RSS, Orthanc.

Usage: ``python bench/rad75_throughput.py [--sizes 500,2000] [--repeat 3]
[--orthanc-size 500] [--data-dir DIR] [--profile] [--keep-logs]``

Issue 4, "Figures (bench/)".  A synthetic CT study (``make_study``, 512x512
slices of 16 bits, about 0.53 MB per instance, so 2,000 instances make about
1 GB) is written once into ``--data-dir`` (default
``~/.cache/imagebridge-bench/rad75``) with a manifest (UIDs, sizes, SHA-1 of
every file) and the same bytes concatenated into one file; re-runs reuse them.
``curl`` is the client of every figure (``-o /dev/null -w '%{size_download}
%{time_total}'``), over loopback, so the client is the same for every server.
Every server binds 127.0.0.1 and runs in a process of its own:

* ``imagebridge``: the real gateway, ``imagebridge.app.create_app`` under
  uvicorn with the settings of ``imagebridge serve`` (``auto`` loop and http,
  ``log_config=None``, no access log), a folder repository holding the study,
  a fresh SQLite store; one RAD-75 request (MTOM/XOP, SOAP 1.2, WS-Addressing)
  asks for every instance of the study;
* ``nginx`` (the Debian package, ``make bench`` installs it) serving the
  concatenated study as one static file, with a generated minimal config: the
  physical limit of the machine (target: imagebridge at least 0.4 of it);
* ``ceiling``: a minimal Starlette ``StreamingResponse`` streaming the same file
  in 1 MiB chunks, same uvicorn settings (target: at least 0.8 of it).

For every size the gateway is started fresh; a first, untimed retrieve is piped
from curl into imagebridge's MTOM reader and checked (HTTP 200, status Success,
no RegistryError, one part per instance, every part byte-identical to its file
by SHA-1); the timed runs are then interleaved (nginx, ceiling, imagebridge,
``--repeat`` rounds) and each must return HTTP 200 and exactly the verified
number of bytes.  The gateway's RSS is sampled with psutil every 50 ms during
every retrieve: its peak, at every size, shows whether memory stays flat
(target below 150 MB).  Server and client CPU columns are the share of one
core used during the run (a client near 100 % would be the bottleneck).

``--orthanc-size N`` (0: skipped) uploads the N-instance study once into an
Orthanc kept under the data directory (``tests/integration/orthanc.py``), then
compares, in the same run, a RAD-75 retrieve served by the gateway through its
``dicomweb`` source with Orthanc's own WADO-RS study retrieve
(``GET /dicom-web/studies/{uid}``, ``Accept: multipart/related;
type="application/dicom"; transfer-syntax=*``); target at least 0.8.
``--profile`` samples the gateway with py-spy during one more folder retrieve
of the largest size (and one Orthanc retrieve) and prints the hot spots.

MB is 10^6 bytes.  Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import Status
from imagebridge.model.retrieve import XopInclude, imaging_request_for
from imagebridge.transactions import Transaction, spec_of
from imagebridge.wire.mime import PartHeaders
from imagebridge.wire.mtom import MtomLimits, encode_mtom, mtom_content_type, read_mtom
from imagebridge.wire.soap import parse_envelope, render_envelope
from imagebridge.wire.wsa import request_headers
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response
from imagebridge.wire.xml import XmlLimits, parse_xml, serialize

MB = 1_000_000
MIB = 1024 * 1024
HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
PACS_REPO = "1.3.6.1.4.1.21367.13.71.201.7"
EXPLICIT = "1.2.840.10008.1.2.1"
PATIENT = DEMO_PATIENTS[0]
ROWS = COLUMNS = 512
SEED = 7500  # the study of N instances uses seed SEED + N, so every size has its own UIDs
TARGET_NGINX = 0.4
TARGET_CEILING = 0.8
TARGET_ORTHANC = 0.8
TARGET_RSS_MB = 150
SAMPLE_EVERY = 0.05
CURL_MAX_TIME = 900  # seconds: every load is bounded
START_TIMEOUT = 600.0  # a gateway indexes its archive before it listens
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ROOT = Path(__file__).resolve().parents[1]


# --- server side (runs in a process of its own) ----------------------------------------------


def ceiling_app(path: Path) -> Starlette:
    """The Python ceiling: one file streamed by a Starlette StreamingResponse in 1 MiB chunks."""

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while chunk := f.read(MIB):
                yield chunk

    async def study(request: Request) -> Response:
        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return Starlette(routes=[Route("/study.bin", study, methods=["GET"])])


def serve(kind: str, spec_path: Path) -> None:
    """Child process: the gateway or the ceiling under uvicorn; prints ``PORT n`` once listening."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("imagebridge.app", "imagebridge.sources.indexer"):
        logging.getLogger(name).setLevel(logging.INFO)  # start-up indexing reports only
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if kind == "gateway":
        app = create_app(config_from_mapping(spec["config"], {}))
    else:
        app = ceiling_app(Path(spec["file"]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The settings of `imagebridge serve` (cli/__init__.py): no log config, no access log.
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            print(f"PORT {port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server subprocess started by the bench."""

    name: str
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def start_python_server(kind: str, spec: dict[str, Any], tmp: Path, name: str) -> Server:
    spec_path = tmp / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log = tmp / f"{name}.log"
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--spec", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    assert process.stdout is not None
    port = None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and port is None:
        line = process.stdout.readline().decode(errors="replace")
        if not line:
            break
        if line.startswith("PORT "):
            port = int(line.split()[1])
    if port is None:
        process.kill()
        process.wait()
        text = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} did not start:\n{text}")
    return Server(name, process, f"http://127.0.0.1:{port}", log)


def start_nginx(root: Path, tmp: Path) -> Server:
    """nginx (Debian package) serving *root* statically on a free loopback port."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        raise RuntimeError("nginx is not installed (apt-get install nginx, or make bench)")
    prefix = tmp / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
    temp = {k: prefix / k for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
""",
        encoding="utf-8",
    )
    log = prefix / "error.log"
    with open(prefix / "stderr.log", "wb") as err:
        process = subprocess.Popen(
            [binary, "-p", str(prefix), "-e", str(log), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(prefix / 'stderr.log').read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(base + "/", timeout=1.0)
            return Server("nginx", process, base, log)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("nginx did not answer within 15 s")


def nginx_version() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [binary, "-v"], check=False, capture_output=True, text=True, timeout=10
        )
        return (out.stderr or out.stdout).strip().rpartition("/")[2]
    return "?"


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A synthetic study on disk, its manifest and the concatenated copy."""

    instances: int
    folder: Path
    blob: Path
    study_uid: str
    entries: tuple[dict[str, Any], ...]  # series, sop, path (relative), size, sha1

    @property
    def total_bytes(self) -> int:
        return sum(int(e["size"]) for e in self.entries)

    @property
    def label(self) -> str:
        return f"{self.instances} x {ROWS}x{COLUMNS} CT ({self.total_bytes / MB:,.1f} MB)"

    def locators(self, repo: str) -> list[ImagingDocumentLocator]:
        return [
            ImagingDocumentLocator(repo, self.study_uid, e["series"], e["sop"])
            for e in self.entries
        ]

    def digests(self) -> dict[str, str]:
        return {e["sop"]: e["sha1"] for e in self.entries}


def prepare_study(data: Path, instances: int) -> Study:
    """Make (once) the study of *instances* CT slices, its manifest and its concatenation."""
    name = f"ct-{instances}x{ROWS}"
    folder = data / "studies" / name
    manifest = data / "studies" / f"{name}.json"
    blob = data / "blobs" / f"{name}.bin"
    if not manifest.exists():
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted earlier run
        print(f"  making the study of {instances} instances in {folder} ...", flush=True)
        started = time.monotonic()
        study = make_study(
            PATIENT,
            folder,
            modality="CT",
            instances=instances,
            rows=ROWS,
            columns=COLUMNS,
            seed=SEED + instances,
        )
        entries = []
        for path in study.files:
            header = read_instance_header(path)
            entries.append(
                {
                    "series": header.series.series_instance_uid,
                    "sop": header.sop_instance_uid,
                    "path": str(path.relative_to(folder)),
                    "size": path.stat().st_size,
                    "sha1": hashlib.sha1(path.read_bytes()).hexdigest(),
                }
            )
        record = {"study_uid": study.study_instance_uid, "entries": entries}
        manifest.write_text(json.dumps(record), encoding="utf-8")
        print(f"  ... {time.monotonic() - started:.1f} s", flush=True)
    record = json.loads(manifest.read_text(encoding="utf-8"))
    entries = tuple(record["entries"])
    total = sum(int(e["size"]) for e in entries)
    if not blob.exists() or blob.stat().st_size != total:
        blob.parent.mkdir(parents=True, exist_ok=True)
        partial = blob.with_suffix(".partial")
        with open(partial, "wb") as out:
            for e in entries:
                with open(folder / e["path"], "rb") as f:
                    shutil.copyfileobj(f, out, MIB)
        partial.replace(blob)
    return Study(instances, folder, blob, record["study_uid"], entries)


def rad75_request(study: Study, repo: str, url: str) -> tuple[bytes, str]:
    """The RAD-75 request for every instance of *study*, MTOM-framed: (body, Content-Type)."""
    spec = spec_of(Transaction.RAD_75)
    request = imaging_request_for(study.locators(repo), HOME, (EXPLICIT,))
    payload = render_retrieve_imaging_document_set_request(request)
    headers = request_headers(spec, "urn:uuid:5f0c1c1e-6a0b-4d38-9a57-0b3e0c0ad075", url)
    root = serialize(render_envelope(headers, payload))
    boundary = "MIMEBoundary_bench_rad75_0001"
    root_id = "root.bench@imagebridge"
    body = b"".join(encode_mtom(root, (), boundary=boundary, root_content_id=root_id))
    return body, mtom_content_type(boundary, root_id)


def warm_page_cache(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(8 * MIB):
                pass


# --- the client: curl ---------------------------------------------------------------------------


@dataclass
class Run:
    """One timed retrieve."""

    code: int
    size: int
    seconds: float
    server_cpu: float  # share of one core
    client_cpu: float
    peak_rss: int  # bytes, 0 when not sampled
    behind_cpu: float = 0.0  # share of one core used by the PACS behind the server
    ok: bool = True
    note: str = ""

    @property
    def mb_s(self) -> float:
        return self.size / MB / self.seconds if self.seconds > 0 else 0.0


@dataclass
class CurlRequest:
    """What curl sends: URL, method, headers and an optional body file."""

    url: str
    headers: tuple[str, ...] = ()
    body: Path | None = None

    def curl_args(self) -> list[str]:
        args = ["curl", "-s", "--max-time", str(CURL_MAX_TIME)]
        for header in self.headers:
            args += ["-H", header]
        if self.body is not None:  # no "Expect: 100-continue" round trip
            args += ["-X", "POST", "--data-binary", f"@{self.body}", "-H", "Expect:"]
        return [*args, self.url]


class RssSampler:
    """psutil RSS of one process, every 50 ms, in a thread."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self._proc.memory_info().rss)
            if self._stop.wait(SAMPLE_EVERY):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def timed(
    request: CurlRequest,
    server: Server,
    *,
    expect: int | None,
    rss: bool = False,
    behind: Server | None = None,
) -> Run:
    """One curl retrieve to /dev/null; the server's CPU and (optionally) its peak RSS."""
    proc = psutil.Process(server.pid)
    back = psutil.Process(behind.pid) if behind is not None else None
    back_before = _cpu(back) if back is not None else 0.0
    fmt = "%{http_code} %{size_download} %{time_total}"
    args = [*request.curl_args()[:-1], "-o", "/dev/null", "-w", fmt, request.url]
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = _cpu(proc)
    sampler = RssSampler(server.pid) if rss else None
    started = time.monotonic()
    with sampler or contextlib.nullcontext():
        out = subprocess.run(
            args, check=False, capture_output=True, text=True, timeout=CURL_MAX_TIME + 30
        )
    wall = time.monotonic() - started
    cpu_after = _cpu(proc)
    back_cpu = _cpu(back) - back_before if back is not None else 0.0
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 3:
        return Run(0, 0, wall, 0, 0, 0, ok=False, note=f"curl exit {out.returncode}")
    code, size, seconds = int(fields[0]), int(fields[1]), float(fields[2])
    run = Run(
        code,
        size,
        seconds,
        (cpu_after - cpu_before) / seconds if seconds else 0.0,
        client / seconds if seconds else 0.0,
        sampler.peak if sampler else 0,
        back_cpu / seconds if seconds else 0.0,
    )
    if code != 200:
        run.ok, run.note = False, f"HTTP {code}"
    elif expect is not None and size != expect:
        run.ok, run.note = False, f"{size} bytes, verified reply had {expect}"
    return run


class HashingSink:
    """A part sink that keeps only each part's size and SHA-1."""

    def __init__(self) -> None:
        self._hash = hashlib.sha1()
        self._size = 0

    def start_part(self, headers: PartHeaders) -> None:
        self._hash, self._size = hashlib.sha1(), 0

    def part_data(self, data: memoryview) -> None:
        self._hash.update(data)
        self._size += len(data)

    def end_part(self) -> HashedBody:
        return HashedBody(self._size, self._hash.hexdigest())

    def abort(self) -> None:
        self._size = 0


@dataclass
class HashedBody:
    size: int
    sha1: str

    def open(self) -> Any:
        raise OSError("the bench keeps only the digest of a part")

    def close(self) -> None:
        pass


@dataclass
class Verified:
    ok: bool
    size: int
    note: str
    peak_rss: int = 0
    seconds: float = 0.0


def verify_rad75(request: CurlRequest, server: Server, study: Study) -> Verified:
    """An untimed retrieve piped from curl into the MTOM reader; checks every part's bytes."""
    args = [*request.curl_args()[:-1], "-D", "-", "-o", "-", request.url]
    # Headers and body go to stdout: the header block ends at the first blank line.
    started = time.monotonic()
    with (
        RssSampler(server.pid) as sampler,
        subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as curl,
    ):
        assert curl.stdout is not None
        status_line, content_type, pending = _read_http_head(curl.stdout)
        counted = [len(pending)]

        def chunks() -> Iterator[bytes]:
            if pending:
                yield pending
            while chunk := curl.stdout.read(MIB):  # type: ignore[union-attr]
                counted[0] += len(chunk)
                yield chunk

        try:
            limits = MtomLimits(max_root_bytes=64 * MB, max_parts=study.instances + 10)
            package = asyncio.run(
                read_mtom(content_type, chunks(), sink=HashingSink(), limits=limits)
            )
        except Exception as exc:
            curl.kill()
            return Verified(False, counted[0], f"{status_line}: unreadable reply ({exc})")
        curl.wait(timeout=60)
    seconds = time.monotonic() - started
    size = counted[0]
    if " 200" not in status_line:
        return Verified(False, size, status_line, sampler.peak, seconds)
    limits = XmlLimits(max_bytes=64 * MB)
    message = parse_envelope(parse_xml(package.root, limits), require_addressing=False)
    if message.payload is None:
        return Verified(False, size, "SOAP fault in the reply", sampler.peak, seconds)
    response = parse_retrieve_document_set_response(message.payload)
    problems = []
    if response.status is not Status.SUCCESS or response.errors:
        first = response.errors[0].code_context if response.errors else ""
        problems.append(f"status {response.status.name}, {len(response.errors)} error(s) {first}")
    expected = study.digests()
    got: dict[str, str] = {}
    for doc in response.document_responses:
        if isinstance(doc.document, XopInclude):
            body = package.part_for_href(doc.document.href).body
            got[doc.document_unique_id] = getattr(body, "sha1", "")
    if len(got) != len(expected):
        problems.append(f"{len(got)} of {len(expected)} instances returned")
    differing = sum(1 for sop, digest in expected.items() if got.get(sop, digest) != digest)
    if differing:
        problems.append(f"{differing} instance(s) differ from their files")
    note = "; ".join(problems) or (
        f"complete: Success, {len(got)} parts byte-identical to the files, envelope last"
    )
    return Verified(not problems, size, note, sampler.peak, seconds)


def _read_http_head(stream: Any) -> tuple[str, str, bytes]:
    """Status line and Content-Type from curl's ``-D -`` output; returns body bytes read past it."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = stream.read1(64 * 1024) if hasattr(stream, "read1") else stream.read(64 * 1024)
        if not chunk:
            break
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if re.match(r"HTTP/\S+ 1\d\d", lines[0]):  # an interim response: the real head follows
        more = _read_http_head(_Prefixed(rest, stream))
        return more
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    return lines[0], content_type, rest


class _Prefixed:
    """A byte stream that first returns *first*, then reads *rest*."""

    def __init__(self, first: bytes, rest: Any) -> None:
        self._first, self._rest = first, rest

    def read1(self, n: int) -> bytes:
        if self._first:
            out, self._first = self._first, b""
            return out
        data: bytes = self._rest.read1(n)
        return data


def verify_wado(request: CurlRequest, study: Study) -> Verified:
    """An untimed WADO-RS study retrieve: counts the DICOM parts and the bytes, streaming."""
    args = [*request.curl_args()[:-1], "-f", "-o", "-", request.url]
    marker = b"Content-Type: application/dicom"
    parts = size = 0
    tail = b""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as curl:
        assert curl.stdout is not None
        while chunk := curl.stdout.read(MIB):
            size += len(chunk)
            window = tail + chunk
            parts += window.count(marker)
            tail = window[-(len(marker) - 1) :]
        code = curl.wait(timeout=60)
    ok = code == 0 and parts == study.instances and size >= study.total_bytes
    note = (
        f"curl exit {code}, {parts} application/dicom parts, "
        f"{size - study.total_bytes:,} bytes of multipart framing"
    )
    return Verified(ok, size, note)


# --- figures ------------------------------------------------------------------------------------


@dataclass
class Timings:
    """The timed runs of one server."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def best(self) -> float:
        return max((r.mb_s for r in self.good), default=0.0)

    def median(self) -> float:
        return statistics.median([r.mb_s for r in self.good]) if self.good else 0.0

    def cpu(self) -> tuple[float, float]:
        good = self.good or self.runs
        if not good:
            return 0.0, 0.0
        return (
            statistics.median(r.server_cpu for r in good),
            statistics.median(r.client_cpu for r in good),
        )

    def notes(self) -> str:
        bad = [r.note for r in self.runs if not r.ok]
        return f"{len(bad)} bad run(s): {bad[0]}" if bad else ""


def print_table(series: Sequence[Timings], repeat: int) -> None:
    print(
        f"  {'server':<44} {'best MB/s':>10} {'median MB/s':>12} {'server CPU':>11} "
        f"{'curl CPU':>9}  runs"
    )
    for s in series:
        server_cpu, client_cpu = s.cpu()
        runs = f"{len(s.good)}/{repeat}"
        print(
            f"  {s.name:<44} {s.best():>10,.1f} {s.median():>12,.1f} {server_cpu:>10.0%} "
            f"{client_cpu:>9.0%}  {runs} {s.notes()}"
        )


def print_ratio(name: str, ours: Timings, base: Timings, target: float) -> None:
    best = ours.best() / base.best() if base.best() else 0.0
    median = ours.median() / base.median() if base.median() else 0.0
    verdict = "met" if median >= target else "NOT met"
    print(
        f"  {name:<44} {best:>10.2f} {median:>12.2f}   target >= {target:.1f}: {verdict} "
        "(on the median)"
    )


def rounds(
    repeat: int, plan: Sequence[tuple[Timings, Callable[[], Run]]]
) -> None:  # interleaved: drift and cache state hit every server alike
    for _ in range(repeat):
        for s, run in plan:
            s.runs.append(run())


def folder_figures(args: argparse.Namespace, studies: list[Study], tmp: Path) -> None:
    rss: list[tuple[Study, int, int, Verified]] = []
    nginx_root = studies[0].blob.parent
    nginx = start_nginx(nginx_root, tmp)
    try:
        for study in studies:
            print()
            print(f"== RAD-75 from the folder source: {study.label}, curl, {args.repeat} runs ==")
            warm_page_cache([study.blob, *(study.folder / e["path"] for e in study.entries)])
            spec = {
                "config": gateway_config(
                    tmp, f"ib-{study.instances}", {"source": "folder", "path": str(study.folder)}
                )
            }
            started = time.monotonic()
            gateway = start_python_server("gateway", spec, tmp, f"gateway-{study.instances}")
            print(f"  gateway up (folder indexed) in {time.monotonic() - started:.1f} s")
            ceiling = start_python_server(
                "ceiling", {"file": str(study.blob)}, tmp, f"ceiling-{study.instances}"
            )
            try:
                idle = psutil.Process(gateway.pid).memory_info().rss
                url = f"{gateway.base}/xcai/retrieve"
                body, content_type = rad75_request(study, REPO, url)
                request_file = tmp / f"rad75-{study.instances}.bin"
                request_file.write_bytes(body)
                ib_request = CurlRequest(url, (f"Content-Type: {content_type}",), request_file)
                checked = verify_rad75(ib_request, gateway, study)
                mark = "ok" if checked.ok else "FAILED"
                print(
                    f"  check ({mark}): {checked.size:,} bytes for {study.total_bytes:,} bytes "
                    f"of DICOM (+{checked.size - study.total_bytes:,} MIME/SOAP); {checked.note}"
                )
                n = Timings(f"nginx {nginx_version()} (static file, sendfile)")
                c = Timings("Starlette StreamingResponse, 1 MiB chunks")
                ib = Timings("imagebridge RAD-75 (MTOM, folder source)")
                nginx_get = CurlRequest(f"{nginx.base}/{study.blob.name}")
                ceiling_get = CurlRequest(f"{ceiling.base}/study.bin")
                rounds(
                    args.repeat,
                    [
                        (n, partial(timed, nginx_get, nginx, expect=study.total_bytes)),
                        (c, partial(timed, ceiling_get, ceiling, expect=study.total_bytes)),
                        (ib, partial(timed, ib_request, gateway, rss=True, expect=checked.size)),
                    ],
                )
                print_table([n, c, ib], args.repeat)
                print(f"  {'ratio imagebridge / baseline':<44} {'best':>10} {'median':>12}")
                print_ratio("  vs nginx", ib, n, TARGET_NGINX)
                print_ratio("  vs Python ceiling", ib, c, TARGET_CEILING)
                peak = max([checked.peak_rss, *(r.peak_rss for r in ib.runs)])
                rss.append((study, idle, peak, checked))
                if args.profile and study is studies[-1]:
                    load = partial(timed, ib_request, gateway, expect=None)
                    profile(gateway, load, args, tmp, "folder")
            finally:
                gateway.stop()
                ceiling.stop()
                if args.keep_logs:
                    print(f"  logs: {gateway.log} {ceiling.log}")
    finally:
        nginx.stop()
    print()
    print(
        "== Peak RSS of the imagebridge server during RAD-75 (psutil every 50 ms, "
        f"fresh server per size; target < {TARGET_RSS_MB} MB) =="
    )
    print(f"  {'study':<36} {'RSS before':>11} {'peak RSS':>10} {'growth':>9}  target")
    for study, idle, peak, _ in rss:
        verdict = "met" if peak < TARGET_RSS_MB * MB else "NOT met"
        print(
            f"  {study.label:<36} {idle / MB:>8.1f} MB {peak / MB:>7.1f} MB "
            f"{(peak - idle) / MB:>6.1f} MB  {verdict}"
        )


def gateway_config(tmp: Path, name: str, repo: dict[str, Any]) -> dict[str, Any]:
    return {
        "community": {"home_community_id": HOME.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / (name + '.db')}"},
        "repositories": [
            {
                "unique_id": PACS_REPO if repo["source"] == "dicomweb" else REPO,
                "scan_interval": 3600,
                **repo,
            }
        ],
    }


def orthanc_figures(args: argparse.Namespace, study: Study, data: Path, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.integration.orthanc import find_orthanc, start_orthanc  # noqa: PLC0415

    print()
    print(f"== RAD-75 through the dicomweb source vs Orthanc's WADO-RS: {study.label} ==")
    install = find_orthanc()
    if install is None:
        print("  Orthanc with its DICOMweb plugin is not installed: skipped")
        return
    folder = data / "orthanc" / f"ct-{study.instances}x{ROWS}"
    folder.mkdir(parents=True, exist_ok=True)
    orthanc = start_orthanc(folder, install)
    gateway: Server | None = None
    try:
        held = orthanc.instance_count()
        if held != study.instances:
            started = time.monotonic()
            print(f"  uploading {study.instances} instances to Orthanc (once; kept in {folder})")
            orthanc.upload(study.folder / e["path"] for e in study.entries)
            print(f"  ... {time.monotonic() - started:.1f} s")
        version = httpx.get(f"{orthanc.base_url}/system", timeout=10).json().get("Version", "?")
        config = gateway_config(
            tmp, "ib-orthanc", {"source": "dicomweb", "url": orthanc.dicomweb_url}
        )
        started = time.monotonic()
        gateway = start_python_server("gateway", {"config": config}, tmp, "gateway-orthanc")
        indexed = wait_indexed(gateway, 600)
        print(
            f"  Orthanc {version}; gateway up in {time.monotonic() - started:.1f} s "
            f"(QIDO index walk: {indexed})"
        )
        url = f"{gateway.base}/xcai/retrieve"
        body, content_type = rad75_request(study, PACS_REPO, url)
        request_file = tmp / "rad75-orthanc.bin"
        request_file.write_bytes(body)
        ib_request = CurlRequest(url, (f"Content-Type: {content_type}",), request_file)
        wado = CurlRequest(
            f"{orthanc.dicomweb_url}/studies/{study.study_uid}", (f"Accept: {WADO_ACCEPT}",)
        )
        direct = verify_wado(wado, study)
        print(f"  check Orthanc WADO-RS ({'ok' if direct.ok else 'FAILED'}): {direct.note}")
        checked = verify_rad75(ib_request, gateway, study)
        mark = "ok" if checked.ok else "FAILED"
        print(f"  check imagebridge ({mark}): {checked.size:,} bytes; {checked.note}")
        assert orthanc.process is not None
        orthanc_server = Server("orthanc", orthanc.process, orthanc.base_url, orthanc.log_path)
        o = Timings(f"Orthanc {version} WADO-RS study retrieve")
        ib = Timings("imagebridge RAD-75 via dicomweb source")
        rounds(
            args.repeat,
            [
                (o, partial(timed, wado, orthanc_server, expect=direct.size)),
                (
                    ib,
                    partial(
                        timed,
                        ib_request,
                        gateway,
                        rss=True,
                        expect=checked.size,
                        behind=orthanc_server,
                    ),
                ),
            ],
        )
        print_table([o, ib], args.repeat)
        behind = statistics.median(r.behind_cpu for r in ib.runs) if ib.runs else 0.0
        print(
            f"  (server CPU: Orthanc's for its row, the gateway's for ours; Orthanc used "
            f"{behind:.0%} of a core meanwhile)"
        )
        print(f"  {'ratio imagebridge / baseline':<44} {'best':>10} {'median':>12}")
        print_ratio("  vs Orthanc WADO-RS", ib, o, TARGET_ORTHANC)
        peak = max([checked.peak_rss, *(r.peak_rss for r in ib.runs)])
        print(f"  gateway peak RSS: {peak / MB:.1f} MB")
        if args.profile:
            profile(
                gateway, partial(timed, ib_request, gateway, expect=None), args, tmp, "dicomweb"
            )
    finally:
        if gateway is not None:
            gateway.stop()
        orthanc.stop()


def wait_indexed(server: Server, timeout: float) -> str:
    """Wait for the gateway's first index walk of a PACS (its log line); return the report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log.read_text(errors="replace")
        found = re.search(r"indexed repository \S+: (.*)", text)
        if found:
            return found.group(1)
        if "not indexed" in text:
            return "FAILED: " + text.strip().splitlines()[-1]
        time.sleep(0.2)
    return "not finished"


# --- profiling --------------------------------------------------------------------------------


IDLE = ("select (selectors.py", "wait (threading.py", "_worker (concurrent/futures/thread.py")


def profile(
    server: Server, load: Callable[[], Run], args: argparse.Namespace, tmp: Path, what: str
) -> None:
    tool = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    print()
    if not Path(tool).exists():
        print("  profile: py-spy not found (.venv/bin/pip install py-spy); skipped")
        return
    raw = tmp / f"gateway-{what}.collapsed"
    spy = subprocess.Popen(
        [tool, "record", "--pid", str(server.pid), "--rate", "100", "--nonblocking", "--gil",
         "--threads", "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)
    run = load()
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    print(f"== profile: gateway during one {what} retrieve ({run.mb_s:,.1f} MB/s under py-spy) ==")
    if not raw.exists():
        print(f"  py-spy failed: {err.decode(errors='replace').strip()[-500:]}")
        return
    summarise(raw, args.profile_top)
    if args.keep_logs:
        print(f"  collapsed stacks: {raw}")


def summarise(raw: Path, top: int) -> None:
    """Where the GIL goes: own time per function, inclusive time per imagebridge line."""
    own: dict[str, int] = {}
    ours: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = idle = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        names = stack.split(";")
        frames = [_short(f) for f in names if not f.startswith(("thread ", "process "))]
        if not frames or any(marker in frames[-1] for marker in IDLE):
            idle += count
            continue
        total += count
        thread = next((n for n in names if n.startswith("thread ")), "thread ?")
        kind = "event loop" if "MainThread" in thread else "worker threads"
        threads[kind] = threads.get(kind, 0) + count
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        for frame in {f for f in frames if "imagebridge/" in f}:
            ours[frame] = ours.get(frame, 0) + count
    if not total:
        print("  (no samples)")
        return
    split = ", ".join(f"{k} {100 * c / total:.0f} %" for k, c in sorted(threads.items()))
    print(f"  {total} samples holding the GIL ({split}; {idle} more were idle waits)")
    print(f"  top {top} functions by own time (share of GIL-holding samples):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")
    print(f"  top {top} imagebridge lines by inclusive time (the call on the stack):")
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")


def _short(frame: str) -> str:
    """``func (/long/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame
    name, path, line = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{line})"


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000", help="study sizes in instances")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per server")
    parser.add_argument(
        "--orthanc-size", type=int, default=500, help="instances for the Orthanc figure (0: skip)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where studies are cached")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway afterwards")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder")
    parser.add_argument("--serve", choices=("gateway", "ceiling"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.spec)
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    data: Path = args.data_dir or cache / "imagebridge-bench" / "rad75"
    data.mkdir(parents=True, exist_ok=True)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    print("RAD-75 retrieve figures (issue 4); MB = 10^6 bytes; nothing is asserted")
    print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"Python {sys.version.split()[0]}; uvicorn {uvicorn.__version__} ({uvicorn_stack()}, "
        f"as `imagebridge serve` runs here); {curl_version()}; data in {data}"
    )
    print(f"code: {code_version()}")
    needed = sorted({*sizes, *([args.orthanc_size] if args.orthanc_size else [])})
    studies = {n: prepare_study(data, n) for n in needed}
    tmp = Path(tempfile.mkdtemp(prefix="ib-rad75-"))
    try:
        folder_figures(args, [studies[n] for n in sizes], tmp)
        if args.orthanc_size:
            orthanc_figures(args, studies[args.orthanc_size], data, tmp)
    finally:
        if args.keep_logs:
            print(f"\nlogs and configs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def code_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + (" + uncommitted changes in src/" if dirty else "")
    return "unknown (not a git checkout)"


def uvicorn_stack() -> str:
    """What uvicorn's ``auto`` loop and http settings pick on this machine."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http}, {loop}"


def curl_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["curl", "--version"], check=False, capture_output=True, text=True, timeout=10
        )
        return " ".join(out.stdout.split()[:2])
    return "curl ?"


if __name__ == "__main__":
    main()
