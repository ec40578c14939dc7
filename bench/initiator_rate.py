"""Initiator rate: the HTTP client's raw download rate vs ``imagebridge fetch`` end to end.

Usage: ``python bench/initiator_rate.py [--instances 2000 | --quick] [--repeat 2]
[--data-dir DIR] [--profile] [--results FILE] [--keep]``

Issue 9: "the initiator's end-to-end rate is bound by its HTTP client.  Measure
the client's raw download rate from nginx in the same run, and reach at least
0.7 of it end to end into a folder target.  If httpx is the limit, show the
numbers before you choose another client."

The study is the synthetic CT of ``bench/rad75_throughput.py`` (its
``prepare_study``: ``--instances`` slices of 512x512x16 bits, about 0.53 MB
each, 2,000 make about 1 GB; ``--quick`` uses 200), made once in its cache
(``~/.cache/imagebridge-bench/rad75``) with the same bytes concatenated into one
file.  Everything listens on 127.0.0.1, in processes of its own:

* **raw rate** (a): Debian's nginx (its own generated config, as
  ``rad75_throughput.py`` starts it) serves the concatenated file; each client
  downloads it once per round, discarding the bytes, in a fresh process:

  - ``curl -o /dev/null`` (C, the reference);
  - ``httpx aiter_bytes``: ``httpx.AsyncClient.stream`` read with
    ``aiter_bytes()``, exactly as the initiator's ``SoapClient`` reads a reply
    (asyncio loop, as ``anyio.run`` in the CLI) - the denominator of the target;
  - ``httpx aiter_raw(1 MiB)``: the same with 1 MiB re-chunking;
  - ``httpx, 1 MiB socket reads``: httpcore's read size (64 KiB) raised to
    1 MiB for this process only, to show whether the read size is the cap;
  - ``asyncio streams`` and ``asyncio BufferedProtocol``: a hand-written
    HTTP/1.1 GET on the same loop, without httpx (``StreamReader.read`` of 1 MiB;
    ``recv_into`` a preallocated buffer);
  - ``blocking socket recv_into``: the Python ceiling of this machine.

* **responder cap**: curl posting one RAD-75 request for the whole study to the
  ``imagebridge serve`` below and discarding the MTOM reply: what the responder
  can send, whoever reads it.
* **end to end** (b): ``imagebridge serve`` with a folder repository holding the
  study, and ``imagebridge fetch -c INITIATOR --family .. --given ..
  --birth-date .. --gender .. --into FOLDER --json`` (the real console script:
  ITI-55, ITI-38, ITI-39, then one RAD-75 for the study, spooled and moved into
  the folder), timed from start to exit.  MB/s is the study's bytes over that
  wall time; also printed: the time without the CLI's start-up (the wall time of
  ``imagebridge version``, best of 3) and the rate of the retrieve phase alone
  (``phases.retrieve.elapsed`` of the JSON document).  The first run is
  verified (every instance in the folder, SHA-1 equal to the source file); every
  run must exit 0 with every instance arrived.  The folder is emptied between
  runs (untimed).

Rounds are interleaved (every client, then the responder cap, then the fetch)
``--repeat`` times; each figure is the best of its rounds (the machine is
shared: the best run is the least disturbed).  CPU shares (of one core) of the
client, the server and the rest of the machine are printed per figure.  The
headline ratio is end to end / ``httpx aiter_bytes`` (target at least 0.7).
When it is missed (or with ``--profile``) one more fetch runs under py-spy
(``record``, the fetch process and its threads) and the hot spots are printed:
the initiator's own work per byte (MTOM reader, spooling, placing the files,
start-up imports) against httpx's share.

MB is 10^6 bytes.  Nothing is asserted; ``--results FILE`` appends the headline
figures to that JSON-lines file (``bench/record.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
from rad75_throughput import (
    HOME,
    PATIENT,
    REPO,
    CurlRequest,
    Server,
    Study,
    nginx_version,
    prepare_study,
    rad75_request,
    start_nginx,
    timed,
)
from record import write_figure

MB = 1_000_000
MIB = 1024 * 1024
BENCH = "initiator_rate"
TARGET = 0.7
LOCAL_HCID = "1.3.6.1.4.1.21367.13.70.1"
START_TIMEOUT = 600.0  # the responder indexes the study before it listens
RUN_TIMEOUT = 1800.0
HEADLINE = "httpx aiter_bytes"


# --- the raw clients (each runs in a process of its own: --client NAME --url URL) -------------


async def httpx_client(url: str, mode: str) -> int:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client,
        client.stream("GET", url) as reply,
    ):
        reply.raise_for_status()
        n = 0
        if mode == "bytes":
            async for chunk in reply.aiter_bytes():
                n += len(chunk)
        else:
            async for chunk in reply.aiter_raw(MIB):
                n += len(chunk)
        return n


async def httpx_big_reads(url: str) -> int:
    from httpcore._async.http11 import AsyncHTTP11Connection  # noqa: PLC0415

    AsyncHTTP11Connection.READ_NUM_BYTES = MIB  # this process only
    return await httpx_client(url, "bytes")


def _request(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    return host, port, head.encode()


def _content_length(head: bytes) -> int:
    lines = head.split(b"\r\n")
    if b" 200 " not in lines[0]:
        raise RuntimeError(f"unexpected status line {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError("no Content-Length")


async def streams_client(url: str) -> int:
    host, port, request = _request(url)
    reader, writer = await asyncio.open_connection(host, port, limit=4 * MIB)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _content_length(head)
    n = 0
    while n < length:
        data = await reader.read(MIB)
        if not data:
            break
        n += len(data)
    writer.close()
    return n


class _Counting(asyncio.BufferedProtocol):
    """Reads the reply into one preallocated buffer; counts the body bytes."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.buffer = bytearray(MIB)
        self.view = memoryview(self.buffer)
        self.head = b""
        self.length = -1
        self.body = 0
        self.done = done

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.length >= 0:
            self.body += nbytes
        else:
            self.head += bytes(self.view[:nbytes])
            end = self.head.find(b"\r\n\r\n")
            if end >= 0:
                self.length = _content_length(self.head[:end])
                self.body = len(self.head) - end - 4
        if self.length >= 0 and self.body >= self.length and not self.done.done():
            self.done.set_result(self.body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.body)


async def protocol_client(url: str) -> int:
    host, port, request = _request(url)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Counting(done), host, port)
    transport.write(request)
    n = await done
    transport.close()
    return n


def socket_client(url: str) -> int:
    host, port, request = _request(url)
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(request)
        head = b""
        while (end := head.find(b"\r\n\r\n")) < 0:
            got = sock.recv_into(view)
            if not got:
                raise RuntimeError("closed before the headers")
            head += bytes(view[:got])
        length = _content_length(head[:end])
        n = len(head) - end - 4
        while n < length:
            got = sock.recv_into(view)
            if not got:
                break
            n += got
    return n


CLIENTS: dict[str, Callable[[str], int]] = {
    HEADLINE: lambda url: asyncio.run(httpx_client(url, "bytes")),
    "httpx aiter_raw(1 MiB)": lambda url: asyncio.run(httpx_client(url, "raw")),
    "httpx, 1 MiB socket reads": lambda url: asyncio.run(httpx_big_reads(url)),
    "asyncio streams, read(1 MiB)": lambda url: asyncio.run(streams_client(url)),
    "asyncio BufferedProtocol": lambda url: asyncio.run(protocol_client(url)),
    "blocking socket recv_into": socket_client,
}


def client_main(name: str, url: str) -> None:
    """Child process: one download; prints bytes, seconds, CPU seconds as JSON."""
    cpu = time.process_time()
    started = time.perf_counter()
    n = CLIENTS[name](url)
    seconds = time.perf_counter() - started
    print(json.dumps({"bytes": n, "seconds": seconds, "cpu": time.process_time() - cpu}))


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Run:
    what: str
    size: int
    seconds: float
    client_cpu: float  # CPU seconds
    server_cpu: float
    machine_cpu: float
    ok: bool = True
    note: str = ""
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.size / MB / self.seconds if self.seconds > 0 and self.ok else 0.0

    def share(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else 0.0

    @property
    def others(self) -> float:
        return max(0.0, self.machine_cpu - self.client_cpu - self.server_cpu)


def machine_busy() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def python_client(name: str, url: str, server: Server, expect: int) -> Run:
    """One download by a Python client in a fresh process (its start-up is not timed)."""
    busy0, server0 = machine_busy(), cpu_of([server.pid])
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--client", name, "--url", url],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    wall = time.perf_counter() - started
    busy, server_cpu = machine_busy() - busy0, cpu_of([server.pid]) - server0
    if out.returncode != 0:
        return Run(name, 0, 0.0, 0, 0, 0, ok=False, note=out.stderr.strip()[-500:])
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    ok = fig["bytes"] == expect
    # The machine's CPU covers the child's start-up too: scale it to the timed part.
    wall_cpu = busy * min(1.0, fig["seconds"] / wall)
    run = Run(name, fig["bytes"], fig["seconds"], fig["cpu"], server_cpu, wall_cpu, ok)
    if not ok:
        run.note = f"{fig['bytes']:,} bytes, expected {expect:,}"
    return run


def curl_run(what: str, request: CurlRequest, server: Server, expect: int | None) -> Run:
    busy0 = machine_busy()
    got = timed(request, server, expect=expect)
    busy = machine_busy() - busy0
    return Run(
        what,
        got.size,
        got.seconds,
        got.client_cpu * got.seconds,
        got.server_cpu * got.seconds,
        busy,
        got.ok,
        got.note,
    )


# --- imagebridge: the responder and the initiator ----------------------------------------------


def cli() -> str:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        raise SystemExit("the imagebridge console script is not installed (pip install -e .)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def responder_config(tmp: Path, study: Study, port: int) -> Path:
    path = tmp / "responder.toml"
    path.write_text(
        f"""[community]
home_community_id = "{HOME.urn}"
name = "Responding community"
patient_id_authority = "2.25.1"

[server]
host = "127.0.0.1"
port = {port}

[store]
database_url = {json.dumps(f"sqlite:///{tmp / 'responder.db'}")}

[[repositories]]
unique_id = "{REPO}"
source = "folder"
path = {json.dumps(str(study.folder))}
scan_interval = 3600
""",
        encoding="utf-8",
    )
    return path


def initiator_config(tmp: Path, base: str) -> Path:
    path = tmp / "initiator.toml"
    path.write_text(
        f"""[community]
home_community_id = "{LOCAL_HCID}"
name = "Local hospital"

[store]
database_url = {json.dumps(f"sqlite:///{tmp / 'initiator.db'}")}

[[communities]]
home_community_id = "{HOME.oid}"
name = "Responding community"
xcpd_url = "{base}/xcpd"
xca_query_url = "{base}/xca/query"
xca_retrieve_url = "{base}/xca/retrieve"
xcai_retrieve_url = "{base}/xcai/retrieve"
timeout_connect = 5
timeout_read = 600
timeout_overall = {RUN_TIMEOUT:g}
""",
        encoding="utf-8",
    )
    return path


def start_responder(config: Path, port: int, tmp: Path) -> Server:
    log = tmp / "responder.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [cli(), "serve", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server("imagebridge serve", process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"imagebridge serve exited:\n{server.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("imagebridge serve did not listen in time")


def cli_startup() -> float:
    """Wall time of ``imagebridge version`` (interpreter and CLI imports), best of 3."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([cli(), "version"], capture_output=True, timeout=120, check=False)
        best = min(best, time.perf_counter() - started)
    return best


def fetch_args(config: Path, into: Path) -> list[str]:
    family, given = (p.title() for p in PATIENT.name.split("^")[:2])
    return [
        cli(), "fetch", "-c", str(config), "--family", family, "--given", given,
        "--birth-date", PATIENT.birth_date, "--gender", PATIENT.sex,
        "--into", str(into), "--json",
    ]  # fmt: skip


def fetch_run(config: Path, into: Path, responder: Server, study: Study) -> Run:
    """``imagebridge fetch --into FOLDER`` from start to exit; checks the JSON document."""
    if into.exists():
        shutil.rmtree(into)
    os.sync()  # start without the previous run's dirty pages
    busy0, server0 = machine_busy(), cpu_of([responder.pid])
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        fetch_args(config, into), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    seconds = time.perf_counter() - started
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, server_cpu = machine_busy() - busy0, cpu_of([responder.pid]) - server0
    client = (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
    run = Run("imagebridge fetch --into FOLDER", 0, seconds, client, server_cpu, busy)
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        run.ok = False
        run.note = f"exit {out.returncode}; no JSON: {out.stdout[-300:]} {out.stderr[-1500:]}"
        return run
    arrived = doc.get("arrived") or {}
    run.size = int(arrived.get("bytes", 0))
    run.phases = {k: float(v["elapsed"]) for k, v in doc.get("phases", {}).items()}
    if out.returncode != 0 or arrived.get("instances") != study.instances:
        run.ok = False
        run.note = (
            f"exit {out.returncode}, {arrived.get('instances')} of {study.instances} instances; "
            f"warnings {doc.get('warnings')}; {out.stderr[-1000:]}"
        )
    elif run.size != study.total_bytes:
        run.ok = False
        run.note = f"{run.size:,} bytes arrived, the study has {study.total_bytes:,}"
    return run


def verify_folder(into: Path, study: Study) -> str:
    """Every instance of *study* under *into*, byte-identical (SHA-1) to its source."""
    found = {p.stem: p for p in into.rglob("*.dcm") if ".incoming" not in p.parts}
    missing = bad = 0
    for entry in study.entries:
        path = found.get(entry["sop"])
        if path is None:
            missing += 1
            continue
        digest = hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()
        bad += digest != entry["sha1"]
    if missing or bad:
        return f"FAILED: {missing} missing, {bad} differ of {study.instances}"
    return f"ok: {study.instances} instances, every SHA-1 equal to its source file"


# --- report ---------------------------------------------------------------------------------


def best(runs: list[Run]) -> Run | None:
    ok = [r for r in runs if r.ok]
    return max(ok, key=lambda r: r.mb_s) if ok else None


def print_row(label: str, runs: list[Run], base: float | None) -> None:
    top = best(runs)
    if top is None:
        note = runs[-1].note if runs else "no run"
        print(f"  {label:<44} FAILED: {note}")
        return
    rates = ", ".join(f"{r.mb_s:.0f}" for r in runs)
    ratio = f"{top.mb_s / base:>6.2f}" if base else f"{'-':>6}"
    print(
        f"  {label:<44} {top.mb_s:>8.1f} {ratio}  client {100 * top.share(top.client_cpu):3.0f}%"
        f"  server {100 * top.share(top.server_cpu):3.0f}%  others "
        f"{100 * top.share(top.others):3.0f}%   ({rates})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000, help="instances in the study")
    parser.add_argument("--quick", action="store_true", help="200 instances (about 105 MB)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--data-dir", type=Path, default=None, help="the rad75 study cache")
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--profile", action="store_true", help="py-spy a fetch even if met")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--client", choices=sorted(CLIENTS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.url)
        return
    instances = 200 if args.quick else args.instances
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    data: Path = args.data_dir or cache / "imagebridge-bench" / "rad75"
    data.mkdir(parents=True, exist_ok=True)
    print("Initiator rate (issue 9): raw HTTP client vs imagebridge fetch; MB = 10^6 bytes")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; httpx "
        f"{httpx.__version__}; nginx {nginx_version()}; load average {load}"
    )
    study = prepare_study(data, instances)
    print(f"study: {study.label}, {study.total_bytes:,} bytes; data in {data}")
    tmp = Path(tempfile.mkdtemp(prefix="ib-initiator-"))
    nginx: Server | None = None
    responder: Server | None = None
    try:
        nginx = start_nginx(study.blob.parent, tmp)
        port = free_port()
        started = time.perf_counter()
        responder = start_responder(responder_config(tmp, study, port), port, tmp)
        print(f"imagebridge serve up (folder indexed) in {time.perf_counter() - started:.1f} s")
        measure(args, study, nginx, responder, tmp)
    finally:
        for server in (responder, nginx):
            if server is not None:
                server.stop()
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(
    args: argparse.Namespace, study: Study, nginx: Server, responder: Server, tmp: Path
) -> None:
    blob_url = f"{nginx.base}/{study.blob.name}"
    size = study.blob.stat().st_size
    rad75_url = f"{responder.base}/xcai/retrieve"
    body, content_type = rad75_request(study, REPO, rad75_url)
    request_file = tmp / "rad75.bin"
    request_file.write_bytes(body)
    rad75 = CurlRequest(rad75_url, (f"Content-Type: {content_type}",), request_file)
    config = initiator_config(tmp, responder.base)
    into = tmp / "retrieved"
    startup = cli_startup()
    print(f"CLI start-up (imagebridge version, best of 3): {startup:.2f} s")
    runs: dict[str, list[Run]] = {}
    # Untimed: the first fetch builds the manifest (KOS) and warms the page cache; verified.
    first = fetch_run(config, into, responder, study)
    print(
        f"first fetch (untimed, builds the KOS): {first.seconds:.1f} s, "
        f"{'ok' if first.ok else 'FAILED ' + first.note}; folder check: "
        f"{verify_folder(into, study) if first.ok else 'skipped'}"
    )
    for round_no in range(1, args.repeat + 1):
        print(f"round {round_no} of {args.repeat} ...", flush=True)
        curl = curl_run("curl", CurlRequest(blob_url), nginx, size)
        runs.setdefault("curl -o /dev/null", []).append(curl)
        for name in CLIENTS:
            runs.setdefault(name, []).append(python_client(name, blob_url, nginx, size))
        runs.setdefault("responder cap", []).append(
            curl_run("responder cap", rad75, responder, None)
        )
        runs.setdefault("fetch", []).append(fetch_run(config, into, responder, study))
    met = report(args, study, runs, startup)
    if args.profile or not met:
        steps = profile_fetch(config, into, tmp, args.profile_top)
        if steps:
            total = sum(steps.values())
            ranked = sorted(steps.items(), key=lambda kv: -kv[1])
            write_figure(
                args.results,
                BENCH,
                "share of the fetch process's CPU spent in httpx/httpcore (py-spy)",
                round(100 * steps.get(STEPS[1][0], 0) / total, 1),
                "%",
                detail="; ".join(f"{name} {100 * n / total:.0f}%" for name, n in ranked[:6]),
            )


def report(
    args: argparse.Namespace, study: Study, runs: dict[str, list[Run]], startup: float
) -> bool:
    """Print the tables and write the figures; whether the end-to-end target was met."""
    head = best(runs[HEADLINE])
    base = head.mb_s if head else None
    print(
        f"\n== raw download of {study.blob.stat().st_size / MB:,.1f} MB from nginx "
        f"(best of {args.repeat}; MB/s, / {HEADLINE}, CPU share of one core) =="
    )
    for name in ("curl -o /dev/null", *CLIENTS):
        print_row(name, runs[name], base)
    print("\n== imagebridge ==")
    print_row("curl: RAD-75 from imagebridge serve (cap)", runs["responder cap"], base)
    fetches = runs["fetch"]
    print_row("imagebridge fetch --into FOLDER (wall)", fetches, base)
    top = best(fetches)
    for run in fetches:
        if not run.ok:
            print(f"    failed run: {run.note}")
    if top is None or head is None:
        print("\nno end-to-end ratio: a run failed")
        return False
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in top.phases.items())
    retrieve = top.phases.get("retrieve", 0.0)
    without = top.seconds - startup
    print(
        f"  best fetch: {top.seconds:.2f} s wall ({phases}); without the CLI start-up "
        f"({startup:.2f} s): {without:.2f} s = {top.size / MB / without:.1f} MB/s; retrieve "
        f"phase alone: {top.size / MB / retrieve if retrieve else 0:.1f} MB/s"
    )
    ratio = top.mb_s / head.mb_s
    ratio_net = top.size / MB / without / head.mb_s
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(
        f"\nend to end / raw httpx: {top.mb_s:.1f} / {head.mb_s:.1f} MB/s = {ratio:.2f} "
        f"(target >= {TARGET}: {verdict}); without start-up {ratio_net:.2f}"
    )
    limit = httpx_limit(runs)
    print(f"is httpx the limit? {limit}")
    curl = best(runs["curl -o /dev/null"])
    cap = best(runs["responder cap"])
    label = f"{study.instances} x 512x512 CT, {study.total_bytes / MB:,.0f} MB"
    write_figure(
        args.results,
        BENCH,
        "fetch into a folder, end to end / raw httpx download from nginx",
        round(ratio, 3),
        "ratio",
        target=f">= {TARGET}",
        detail=(
            f"{label}; fetch {top.mb_s:.0f} MB/s wall ({top.seconds:.1f} s incl. "
            f"{startup:.1f} s CLI start-up; {ratio_net:.2f} without), httpx {head.mb_s:.0f} MB/s; "
            f"fetch process {100 * top.share(top.client_cpu):.0f}% of a core, other processes "
            f"{top.share(top.others):.2f} cores"
        ),
    )
    write_figure(
        args.results,
        BENCH,
        "raw httpx download from nginx (aiter_bytes, as SoapClient)",
        round(head.mb_s, 1),
        "MB/s",
        detail=f"curl {curl.mb_s:.0f} MB/s" if curl else "",
    )
    write_figure(
        args.results,
        BENCH,
        "imagebridge fetch into a folder, end to end",
        round(top.mb_s, 1),
        "MB/s",
        detail=(
            f"{label}; retrieve phase {top.size / MB / retrieve if retrieve else 0:.0f} MB/s; "
            f"responder cap (curl RAD-75) {cap.mb_s if cap else 0:.0f} MB/s"
        ),
    )
    fastest = max(
        (r for name in CLIENTS if (r := best(runs[name])) is not None), key=lambda r: r.mb_s
    )
    write_figure(
        args.results,
        BENCH,
        "raw httpx / fastest Python client on the same download",
        round(head.mb_s / fastest.mb_s, 3),
        "ratio",
        detail=f"fastest: {fastest.what} {fastest.mb_s:.0f} MB/s; {limit}",
    )
    return ratio >= TARGET


# --- profile -------------------------------------------------------------------------------------

STEPS = (
    ("CLI start-up (module imports)", ("_find_and_load (",)),
    ("httpx / httpcore / anyio (reading the reply)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    (
        "MTOM reader (imagebridge/wire/mtom, mime)",
        ("imagebridge/wire/mtom", "imagebridge/wire/mime"),
    ),
    ("spool sink writes (imagebridge/wire/spool)", ("imagebridge/wire/spool",)),
    ("progress bar (rich)", ("rich/",)),
    ("placing files (folder_sink)", ("imagebridge/actors/initiating/folder_sink",)),
    ("ITI-55/38/39 phases (pull, workflow)", ("discover (", "find_studies (")),
    ("asyncio loop and socket transport", ("asyncio/",)),
)


def step_of(frames: list[str]) -> str:
    """The step a sample belongs to: start-up if importing, else its innermost known frame."""
    if any(STEPS[0][1][0] in f for f in frames):
        return STEPS[0][0]
    for frame in reversed(frames):
        for step, markers in STEPS[1:]:
            if any(m in frame for m in markers):
                return step
    return "other"


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path or where})"


def profile_fetch(config: Path, into: Path, tmp: Path, top: int) -> dict[str, int]:
    """One more fetch under py-spy; where the initiator's CPU goes (samples per step)."""
    tool = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    print()
    if not Path(tool).exists():
        print("profile: py-spy not found (.venv/bin/pip install py-spy); skipped")
        return {}
    if into.exists():
        shutil.rmtree(into)
    raw = tmp / "fetch.collapsed"
    started = time.perf_counter()
    out = subprocess.run(
        [tool, "record", "--rate", "200", "--threads", "--format", "raw", "--output", str(raw),
         "--", *fetch_args(config, into)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"== profile: imagebridge fetch under py-spy ({seconds:.1f} s, 200 samples/s) ==")
    if not raw.exists():
        print(f"  py-spy failed: {out.stderr.strip()[-500:]}")
        return {}
    own: dict[str, int] = {}
    ours: dict[str, int] = {}
    steps: dict[str, int] = {}
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in {f for f in frames if "imagebridge/" in f}:
            ours[frame] = ours.get(frame, 0) + count
        step = step_of(frames)
        steps[step] = steps.get(step, 0) + count
    if not total:
        print("  (no samples)")
        return {}
    print(
        f"  {total} busy samples = {total / 200:.1f} s of CPU in a {seconds:.1f} s run; "
        "by step (each sample counted once, at its innermost known frame):"
    )
    for step in [*(name for name, _ in STEPS), "other"]:
        print(f"    {100 * steps.get(step, 0) / total:5.1f} %  {step}")
    print(f"  top {top} functions by own time:")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")
    print(f"  top {top} imagebridge functions by inclusive time:")
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")
    return steps


def httpx_limit(runs: dict[str, list[Run]]) -> str:
    """Whether httpx caps the raw rate: compare it with the other Python clients."""
    head = best(runs[HEADLINE])
    others = [
        (name, r)
        for name in CLIENTS
        if name != HEADLINE and not name.startswith("httpx") and (r := best(runs[name]))
    ]
    if head is None or not others:
        return "unknown (a client failed)"
    name, top = max(others, key=lambda x: x[1].mb_s)
    share = head.share(head.client_cpu)
    gap = top.mb_s / head.mb_s
    if gap >= 1.3:
        return (
            f"yes for the raw download: {name} reads the same bytes {gap:.1f}x faster "
            f"({top.mb_s:.0f} vs {head.mb_s:.0f} MB/s; httpx used {100 * share:.0f}% of a core)"
        )
    return (
        f"no: the fastest non-httpx Python client ({name}) is only {gap:.2f}x httpx "
        f"({top.mb_s:.0f} vs {head.mb_s:.0f} MB/s)"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        main()
