"""Worker scaling: ITI-38 FindDocuments throughput of ``imagebridge serve --workers N``, N = 1, 2.

Usage: ``python bench/worker_scaling.py [--workers 1,2] [--connections 8,32,64]
[--threads 1] [--duration 10] [--warmup 3] [--rounds 2] [--instances 5]
[--database-url URL] [--profile] [--results FILE]``

Issue 9: "two workers serve at least 1.7 times the ITI-38 rate of one on this
2-core machine, or name the bound you hit with a profile".

* **World** (the one of ``bench/responder.py``): a folder archive of 20 small
  synthetic studies for one patient plus 2 studies each for 5 other patients,
  a SQLite store in a temporary directory (one database file per server), or
  ``--database-url`` (for example a PostgreSQL URL; then both servers share it).
* **Servers**: the real console script, ``imagebridge serve -c CONFIG --workers
  N``, one per N, with the same generated TOML config except the port (and the
  SQLite file); both are started first and stay up, so the rounds can be
  interleaved.  When ``serve`` has no ``--workers`` option yet, only N = 1 runs.
* **Client**: ``wrk`` (Debian package ``wrk``; ``make bench`` installs it), a C
  load generator, so the client is not the bottleneck on 2 cores.  A small Lua
  script POSTs the FindDocuments request of ``bench/responder.py`` with its
  SOAP 1.2 Content-Type (``action`` parameter included) and checks every reply:
  it counts as good only when it is HTTP 200 with exactly 20 ExtrinsicObjects.
  Before any timed run one reply of each server is checked by hand with httpx.
* **Runs**: for every connection count, each server gets an untimed warm-up
  of ``--warmup`` seconds, then ``--rounds`` timed runs of ``--duration``
  seconds, interleaved (1, 2, then 2, 1, ...).  A level's figure is the median
  of its rounds (the upper one of an even count: on a shared machine the less
  disturbed run); the headline ratio is the best 2-worker rate over the best
  1-worker rate (each at the connection count that suits it best).  The
  connections each worker holds are sampled during every run (the kernel hands
  the shared socket's connections to whichever worker accepts first).
* **CPU**: during every timed run the CPU seconds of wrk (``getrusage`` of the
  waited child), of every process of the server tree (psutil: the uvicorn
  supervisor and its workers) and of the whole machine (``/proc/stat``) are
  taken, so the share of the 2 cores used by the client, by the server and by
  everything else (other users of the machine) is printed per run, with the
  server's CPU seconds per request.
* **Bound**: when the ratio misses 1.7 (or with ``--profile``), the analysis
  says which bound the numbers point at: the cores (wrk and other processes
  taking what two workers would need), a per-request cost that grows with two
  workers (contention), or workers that are not CPU-saturated (waiting on
  locks or I/O); py-spy then records the server tree (all workers, all
  threads, idle samples included so waits show) under the best connection
  count and prints the hottest functions and where the samples fall (store /
  SQLite, XML, HTTP, locks).

Nothing is asserted; the figures are printed.  ``--results FILE`` appends the
headline figures to that JSON-lines file (``bench/record.py``).  The machine is
shared with other work: the "others" CPU column shows how much.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from record import write_figure
from responder import EXTRINSIC, HOME, REPO, STUDIES, build_archive, find_documents_body, py_spy

from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.faults import SOAP_CONTENT_TYPE

BENCH = "worker_scaling"
TARGET_RATIO = 1.7
PATH = "/xca/query"
MARKER = b"ExtrinsicObject "  # what the Lua check counts (checked against the regex first)
START_TIMEOUT = 180.0
CONTENT_TYPE = f'{SOAP_CONTENT_TYPE}; action="{spec_of(Transaction.ITI_38).request_action}"'

LUA = """-- imagebridge bench/worker_scaling.py: ITI-38 FindDocuments, every reply checked
local f = assert(io.open({body}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = {content_type}
local expected = {expected}
local marker = {marker}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  good = 0
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  local n, pos = 0, 1
  while true do
    local at = string.find(body, marker, pos, true)
    if not at then break end
    n = n + 1
    pos = at + 1
  end
  if status == 200 and n == expected then
    good = good + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = string.format("HTTP %d, %d ExtrinsicObjects: %s", status, n,
        string.gsub(string.sub(body, 1, 300), "%s+", " "))
    end
  end
end

function done(summary, latency, requests)
  local g, b, fb = 0, 0, ""
  for _, t in ipairs(threads) do
    g = g + t:get("good")
    b = b + t:get("bad")
    local x = t:get("first_bad")
    if fb == "" and x then fb = x end
  end
  local e = summary.errors
  io.write(string.format("IBRESULT %d %d %d %d %d %d %d %d %d %.1f %.1f %.1f\\n",
    summary.duration, summary.requests, g, b, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
  io.write("IBFIRSTBAD " .. fb .. "\\n")
end
"""


# --- the servers ------------------------------------------------------------------------------


def cli() -> str:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        raise SystemExit("the imagebridge console script is not installed (pip install -e .)")
    return found


def serve_has_workers() -> bool:
    """Whether ``imagebridge serve`` accepts ``--workers`` (issue 9 adds it)."""
    out = subprocess.run(
        [cli(), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return "--workers" in out.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(path: Path, port: int, database_url: str, archive: Path) -> None:
    path.write_text(
        f"""[community]
home_community_id = "urn:oid:{HOME}"
name = "Worker scaling bench"
patient_id_authority = "2.25.1"

[server]
host = "127.0.0.1"
port = {port}

[store]
database_url = {toml_string(database_url)}

[[repositories]]
unique_id = "{REPO}"
source = "folder"
path = {toml_string(str(archive))}
scan_interval = 3600
""",
        encoding="utf-8",
    )


@dataclass
class Gateway:
    """One ``imagebridge serve`` process tree."""

    workers: int
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    started_in: float = 0.0
    tree: list[psutil.Process] = field(default_factory=list)

    def label(self, proc: psutil.Process) -> str:
        if proc.pid == self.process.pid:
            return "main" if self.workers == 1 else "supervisor"
        with contextlib.suppress(psutil.Error):
            if "resource_tracker" in " ".join(proc.cmdline()):
                return "tracker"
        return f"worker {proc.pid}"

    def refresh_tree(self) -> None:
        root = psutil.Process(self.process.pid)
        self.tree = [root, *root.children(recursive=True)]

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.process.pid]
        return [p.pid for p in self.tree if self.label(p).startswith("worker")]

    def connections(self) -> dict[str, int]:
        """Established client connections each process of the tree holds on the gateway port."""
        port = int(self.url.split(":")[2].split("/")[0])
        out: dict[str, int] = {}
        for proc in self.tree:
            with contextlib.suppress(psutil.Error):
                held = [
                    c
                    for c in proc.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
                ]
                if held:
                    out[self.label(proc)] = len(held)
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) of every process of the tree, by label."""
        out: dict[str, float] = {}
        for proc in self.tree:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[self.label(proc)] = times.user + times.system
        return out

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for proc in self.tree[1:]:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def start_gateway(workers: int, config: Path, port: int, log: Path, with_option: bool) -> Gateway:
    started = time.perf_counter()
    args = [cli(), "serve", "-c", str(config)]
    if with_option:
        args += ["--workers", str(workers)]
    with open(log, "wb") as err:
        process = subprocess.Popen(
            args, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    gateway = Gateway(workers, process, f"http://127.0.0.1:{port}{PATH}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:  # listening once the lifespan start-up (indexing) is done
        if process.poll() is not None:
            raise RuntimeError(f"serve --workers {workers} exited:\n{gateway.log_tail()}")
        if time.monotonic() > deadline:
            gateway.stop()
            raise RuntimeError(f"serve --workers {workers} did not answer in time")
        try:
            httpx.get(gateway.url, timeout=2.0)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    while True:  # every worker process is up
        gateway.refresh_tree()
        if len(gateway.worker_pids()) >= workers or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    gateway.started_in = time.perf_counter() - started
    return gateway


def check_by_hand(gateway: Gateway, body: bytes) -> tuple[int, str]:
    """Replies checked with httpx (HTTP 200, 20 ExtrinsicObjects): (reply size, note).

    Each request opens a new connection, so with several workers the kernel
    likely hands them to different workers.  A worker may answer before the
    shared index is complete (another worker holds the indexing lease): wrong
    answers are counted and retried until ``2 x workers`` answers in a row are
    right, or START_TIMEOUT.
    """
    wrong, first_wrong, right, size = 0, "", 0, 0
    started = time.monotonic()
    while right < 2 * gateway.workers:
        with httpx.Client(timeout=60) as client:
            reply = client.post(gateway.url, content=body, headers={"Content-Type": CONTENT_TYPE})
        found = len(EXTRINSIC.findall(reply.content))
        counted = reply.content.count(MARKER)
        if reply.status_code == 200 and found == STUDIES and counted == STUDIES:
            right += 1
            size = len(reply.content)
            continue
        if found == STUDIES and counted != STUDIES:
            raise SystemExit(f"the Lua marker {MARKER!r} counts {counted}, not {found}")
        right = 0
        wrong += 1
        first_wrong = first_wrong or (
            f"HTTP {reply.status_code}, {found} ExtrinsicObjects: "
            + " ".join(reply.content[-700:].decode(errors="replace").split())
        )
        if time.monotonic() - started > START_TIMEOUT:
            raise SystemExit(f"{gateway.workers} worker(s) never answered right: {first_wrong}")
        time.sleep(0.05)
    note = ""
    if wrong:
        note = (
            f"WARNING: {wrong} wrong answer(s) in the first {time.monotonic() - started:.1f} s "
            f"after the port answered (first: {first_wrong[:400]})"
        )
    return size, note


# --- wrk --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run against one server."""

    workers: int
    connections: int
    seconds: float
    requests: int
    good: int
    bad: int
    socket_errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    first_bad: str
    client_cpu: float  # CPU seconds of wrk
    server_cpu: dict[str, float]  # CPU seconds per process of the server tree
    machine_cpu: float  # busy CPU seconds of the whole machine
    held: dict[str, int]  # connections per server process, sampled during the run

    @property
    def rate(self) -> float:
        return self.good / self.seconds if self.seconds else 0.0

    @property
    def server_total(self) -> float:
        return sum(self.server_cpu.values())

    @property
    def others(self) -> float:
        return max(0.0, self.machine_cpu - self.client_cpu - self.server_total)

    def share(self, seconds: float) -> float:
        """CPU seconds as a share of one core over the run."""
        return seconds / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request_ms(self) -> float:
        return 1000 * self.server_total / self.good if self.good else float("nan")


def machine_busy() -> float:
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0)


def run_wrk(gateway: Gateway, lua: Path, connections: int, threads: int, seconds: float) -> Run:
    threads = max(1, min(threads, connections))
    args = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
        "--timeout", "10s", "-s", str(lua), gateway.url,
    ]  # fmt: skip
    gateway.refresh_tree()
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = gateway.cpu()
    busy0 = machine_busy()
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        time.sleep(min(1.0, seconds / 3))
        held = gateway.connections()
        try:
            stdout, stderr = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    busy = machine_busy() - busy0
    cpu1 = gateway.cpu()
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
    line = next((x for x in stdout.splitlines() if x.startswith("IBRESULT ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{stdout}\n{stderr}")
    f = line.split()[1:]
    first_bad = next(
        (x[len("IBFIRSTBAD ") :] for x in stdout.splitlines() if x.startswith("IBFIRSTBAD ")),
        "",
    )
    errors = dict(
        zip(("connect", "read", "write", "status", "timeout"), map(int, f[4:9]), strict=True)
    )
    return Run(
        workers=gateway.workers,
        connections=connections,
        seconds=int(f[0]) / 1e6,
        requests=int(f[1]),
        good=int(f[2]),
        bad=int(f[3]),
        socket_errors={k: v for k, v in errors.items() if v},
        p50_ms=float(f[9]) / 1000,
        p99_ms=float(f[10]) / 1000,
        first_bad=first_bad.strip(),
        client_cpu=client,
        server_cpu={k: cpu1.get(k, v) - v for k, v in cpu0.items()},
        machine_cpu=busy,
        held=held,
    )


def print_run(run: Run, round_no: int) -> None:
    per_proc = ", ".join(
        f"{k} {100 * run.share(v):.0f}%" for k, v in run.server_cpu.items() if v > 0.05
    )
    errors = run.bad + sum(run.socket_errors.values())
    held = ""
    if run.workers > 1:
        held = "  conns held: " + (", ".join(f"{k} {v}" for k, v in run.held.items()) or "not seen")
    print(
        f"  {run.workers:>2} worker(s) {run.connections:>4} conns  round {round_no}: "
        f"{run.rate:>7.1f} req/s  p50 {run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms  "
        f"errors {errors:<3} cpu: wrk {100 * run.share(run.client_cpu):3.0f}%  server "
        f"{100 * run.share(run.server_total):3.0f}% ({per_proc})  others "
        f"{100 * run.share(run.others):3.0f}%  {run.cpu_per_request_ms:.2f} cpu-ms/req{held}"
    )
    if run.bad or run.socket_errors:
        print(f"      bad replies {run.bad}, socket errors {run.socket_errors}; {run.first_bad}")


# --- analysis ---------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


def bound_analysis(one: Run, two: Run) -> list[str]:
    """What the CPU figures say about the 2-worker run's limit, compared with 1 worker's."""
    cores = os.cpu_count() or 1
    lines = []
    left = cores - two.share(two.client_cpu) - two.share(two.others)
    worker_shares = [
        two.share(v) for k, v in two.server_cpu.items() if k.startswith("worker") or k == "main"
    ]
    ceiling = left / (two.cpu_per_request_ms / 1000) if two.good else 0.0
    lines.append(
        f"2 workers at {two.connections} conns: {two.rate:.0f} req/s; wrk used "
        f"{two.share(two.client_cpu):.2f} cores, other processes {two.share(two.others):.2f}, "
        f"so {left:.2f} of {cores} cores were left for the server; at "
        f"{two.cpu_per_request_ms:.2f} cpu-ms per request that is a CPU ceiling of "
        f"{ceiling:.0f} req/s = {ceiling / one.rate:.2f}x the 1-worker rate ({one.rate:.0f})"
    )
    lines.append(
        "per-worker CPU: "
        + ", ".join(f"{100 * s:.0f}%" for s in worker_shares)
        + f" of a core (1 worker alone: {100 * one.share(one.server_total):.0f}%)"
    )
    growth = two.cpu_per_request_ms / one.cpu_per_request_ms if one.good else float("nan")
    lines.append(
        f"server CPU per request: {one.cpu_per_request_ms:.2f} ms (1 worker) vs "
        f"{two.cpu_per_request_ms:.2f} ms (2 workers), x{growth:.2f}"
    )
    verdict = []
    for run, name in ((one, "1-worker"), (two, "2-worker")):
        if run.share(run.others) > 0.3:
            verdict.append(
                f"other processes took {run.share(run.others):.2f} cores during the {name} "
                "run (the machine is shared): its figure is low"
            )
    held = [v for k, v in two.held.items() if k.startswith("worker")]
    if len(held) < two.workers or (held and max(held) >= 0.8 * sum(held)):
        spread = ", ".join(f"{k} {v}" for k, v in two.held.items()) or "none seen"
        verdict.append(
            f"the connections were spread unevenly over the workers ({spread}): the kernel "
            "hands a shared socket's connections to whichever worker accepts first"
        )
    if one.share(one.server_total) < 0.85 and one.share(one.others) <= 0.3:
        verdict.append(
            "one worker did not saturate its core: it waits (locks, I/O, the client), so the "
            "1-worker rate is not a CPU-bound baseline"
        )
    if two.rate >= 0.9 * ceiling:
        verdict.append(
            f"the 2-worker rate is at the CPU left by wrk and other processes: the bound is "
            f"the machine's {cores} cores (the ideal 2x needs "
            f"{2 * one.share(one.server_total):.2f} cores for the server alone)"
        )
    if growth > 1.15:
        verdict.append(
            f"each request costs {100 * (growth - 1):.0f}% more CPU with two workers: "
            "contention (shared cores with the client, cache, lock spinning)"
        )
    if worker_shares and max(worker_shares) < 0.8 and two.rate < 0.9 * ceiling:
        verdict.append(
            "the workers are not CPU-saturated and CPU is left: they wait (SQLite locks, "
            "I/O) - see the profile"
        )
    lines.append("bound: " + ("; ".join(verdict) if verdict else "no single bound stands out"))
    return lines


# --- profile ----------------------------------------------------------------------------------

IDLE_LEAVES = (
    "select (selectors.py",
    "poll (selectors.py",
    "wait (threading.py",
    "_worker (concurrent/futures/thread.py",
    "get (queue.py",
    "run_forever",
    "_run_once",
    "sleep (",
    "Runner.run (asyncio/runners.py",  # uvloop's C loop waiting in epoll
    "_recv (multiprocessing/connection.py",  # the supervisor waiting on its workers
    "main (multiprocessing/resource_tracker.py",
    "<module> (<string>",
)
CATEGORIES = (
    ("store (SQLAlchemy / sqlite3)", ("sqlalchemy/", "sqlite3", "imagebridge/store/")),
    ("threading lock acquire", ("acquire (", "__enter__ (threading.py")),
    ("XML (lxml parse/serialise)", ("lxml", "imagebridge/wire/")),
    ("HTTP (uvicorn, h11/httptools)", ("uvicorn/", "h11/", "httptools")),
    ("Starlette / anyio", ("starlette/", "anyio/")),
    ("audit / event observers (imagebridge/security)", ("imagebridge/security/",)),
)


def profile(gateway: Gateway, lua: Path, connections: int, threads: int, seconds: float) -> None:
    tool = py_spy()
    print()
    if tool is None:
        print("profile: py-spy not found (.venv/bin/pip install py-spy); skipped")
        return
    raw = gateway.log.with_suffix(".collapsed")
    print(
        f"== profile: {gateway.workers} worker(s) under {connections} connections, py-spy "
        f"record --subprocesses --idle --threads, {seconds:g} s =="
    )
    spy = subprocess.Popen(
        [tool, "record", "--pid", str(gateway.process.pid), "--subprocesses", "--idle",
         "--threads", "--rate", "100", "--nonblocking", "--duration", str(int(seconds) + 1),
         "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)
    try:
        run = run_wrk(gateway, lua, connections, threads, seconds)
        print(f"  under py-spy: {run.rate:.0f} req/s")
    finally:
        try:
            _, err = spy.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    if not raw.exists():
        print(f"  py-spy failed: {err.decode(errors='replace').strip()[-500:]}")
        return
    gateway.refresh_tree()
    summarise(raw, 20, {p.pid: gateway.label(p) for p in gateway.tree})


def _short(frame: str) -> str:
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarise(raw: Path, top: int, labels: dict[int, str] | None = None) -> None:
    """Per process: busy vs idle samples; top own-time functions; samples by category."""
    own: dict[str, int] = {}
    ours: dict[str, int] = {}
    category: dict[str, int] = {}
    processes: dict[str, list[int]] = {}
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        procs = [p.split(":")[0] for p in parts if p.startswith("process ")]
        proc = procs[-1] if procs else "process ?"  # the innermost: the sampled process
        frames = [_short(f) for f in parts if not f.startswith(("thread ", "process "))]
        seen = processes.setdefault(proc, [0, 0])
        if not frames or any(m in frames[-1] for m in IDLE_LEAVES):
            seen[1] += count
            continue
        seen[0] += count
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in {f for f in frames if "imagebridge/" in f}:
            ours[frame] = ours.get(frame, 0) + count
        for name, markers in CATEGORIES:
            if any(m in f for f in frames for m in markers):
                category[name] = category.get(name, 0) + count
    if not total:
        print("  (no samples)")
        return
    print("  samples per process (busy or blocked outside the event loop / idle waits):")
    for proc, (busy, idle) in sorted(processes.items()):
        pid = proc.removeprefix("process ").strip()
        name = (labels or {}).get(int(pid), "") if pid.isdigit() else ""
        print(f"    {proc} {name}: {busy} busy, {idle} idle")
    print("  where the busy samples fall (a sample can count in several lines):")
    for name, _ in CATEGORIES:
        print(f"    {100 * category.get(name, 0) / total:5.1f} %  {name}")
    print(f"  top {top} functions by own time (% of busy samples, all processes):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {frame}")
    print(f"  top {top // 2} imagebridge functions by inclusive time:")
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[: top // 2]:
        print(f"    {100 * count / total:5.1f} %  {frame}")


# --- main -------------------------------------------------------------------------------------


def machine_line() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    version = (wrk.stdout or wrk.stderr).split("[")[0].strip() or "wrk"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} CPUs ({model}); Python {sys.version.split()[0]}; "
        f"client {version}; load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--connections", default="8,32,64", help="wrk connection counts")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per timed run")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds per level")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per server and level")
    parser.add_argument("--instances", type=int, default=5, help="instances per study")
    parser.add_argument("--rows", type=int, default=32, help="rows = columns of the images")
    parser.add_argument("--database-url", help="store URL shared by the servers (else SQLite)")
    parser.add_argument("--profile", action="store_true", help="py-spy even if the target is met")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    args = parser.parse_args()
    counts = sorted({int(x) for x in args.workers.split(",") if x.strip()})
    levels = [int(x) for x in args.connections.split(",") if x.strip()]
    if not counts or not levels or min(counts) < 1 or min(levels) < 1:
        parser.error("--workers and --connections need positive integers")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk, or make bench)")
    print("== ITI-38 FindDocuments: imagebridge serve --workers N, wrk client ==")
    print(machine_line())
    has_option = serve_has_workers()
    if not has_option:
        dropped = [n for n in counts if n != 1]
        counts = [1]
        if dropped:
            print(f"`imagebridge serve` has no --workers option yet: only 1 worker (not {dropped})")
    with tempfile.TemporaryDirectory(prefix="ib-workers-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "archive"
        started = time.perf_counter()
        studies, files = build_archive(archive, args.rows, args.instances)
        print(f"archive: {studies} studies, {files} files in {time.perf_counter() - started:.1f} s")
        store = "shared " + args.database_url.split("://")[0] if args.database_url else "SQLite"
        print(f"store: {store}; wrk {args.threads} thread(s), {args.duration:g} s runs, "
              f"{args.warmup:g} s warm-up, {args.rounds} round(s)")  # fmt: skip
        gateways: dict[int, Gateway] = {}
        try:
            for n in counts:
                config = tmp / f"serve-{n}.toml"
                url = args.database_url or f"sqlite:///{tmp / f'serve-{n}.db'}"
                port = free_port()
                write_config(config, port, url, archive)
                gateways[n] = start_gateway(n, config, port, tmp / f"serve-{n}.log", has_option)
                body = find_documents_body(gateways[n].url)
                size, note = check_by_hand(gateways[n], body)
                procs = ", ".join(gateways[n].label(p) for p in gateways[n].tree)
                print(
                    f"serve --workers {n}: up in {gateways[n].started_in:.1f} s ({procs}); "
                    f"checked by hand: HTTP 200, {STUDIES} ExtrinsicObjects, {size:,} B reply"
                )
                if note:
                    print("  " + note)
            body_file = tmp / "find-documents.xml"
            body_file.write_bytes(find_documents_body(gateways[counts[0]].url))
            lua = tmp / "iti38.lua"
            lua.write_text(
                LUA.format(
                    body=json.dumps(str(body_file)),
                    content_type=json.dumps(CONTENT_TYPE),
                    expected=STUDIES,
                    marker=json.dumps(MARKER.decode()),
                ),
                encoding="utf-8",
            )
            results = measure(args, gateways, counts, levels, lua)
            report(args, gateways, counts, results, lua)
        finally:
            for gateway in gateways.values():
                gateway.stop()


def measure(
    args: argparse.Namespace,
    gateways: dict[int, Gateway],
    counts: list[int],
    levels: list[int],
    lua: Path,
) -> dict[tuple[int, int], list[Run]]:
    results: dict[tuple[int, int], list[Run]] = {}
    print()
    for connections in levels:
        for n in counts:
            run_wrk(gateways[n], lua, connections, args.threads, args.warmup)
        for round_no in range(1, args.rounds + 1):
            order = counts if round_no % 2 else counts[::-1]
            for n in order:
                run = run_wrk(gateways[n], lua, connections, args.threads, args.duration)
                results.setdefault((n, connections), []).append(run)
                print_run(run, round_no)
    return results


def report(
    args: argparse.Namespace,
    gateways: dict[int, Gateway],
    counts: list[int],
    results: dict[tuple[int, int], list[Run]],
    lua: Path,
) -> None:
    levels = sorted({c for _, c in results})
    print(f"\nmedian of {args.rounds} round(s), good replies per second:")
    head = f"{'conns':>6} " + " ".join(f"{f'{n} worker(s)':>12}" for n in counts)
    if 1 in counts and 2 in counts:
        head += f" {'2 / 1':>7}"
    print(head)
    medians = {key: median_run(runs) for key, runs in results.items()}
    for c in levels:
        row = f"{c:>6} " + " ".join(f"{medians[(n, c)].rate:>12.1f}" for n in counts)
        if 1 in counts and 2 in counts:
            row += f" {medians[(2, c)].rate / medians[(1, c)].rate:>7.2f}"
        print(row)
    best = {n: max((medians[(n, c)] for c in levels), key=lambda r: r.rate) for n in counts}
    for n, run in best.items():
        write_figure(
            args.results,
            BENCH,
            f"ITI-38 req/s, imagebridge serve --workers {n}",
            round(run.rate, 1),
            "req/s",
            detail=(
                f"best median over {', '.join(map(str, levels))} wrk connections (at "
                f"{run.connections}); server {100 * run.share(run.server_total):.0f}% of a "
                f"core, wrk {100 * run.share(run.client_cpu):.0f}%, others "
                f"{100 * run.share(run.others):.0f}%"
            ),
        )
    if 1 not in best or 2 not in best:
        print("\nno 2-worker figure: the ratio needs serve --workers 1 and 2")
        return
    one, two = best[1], best[2]
    ratio = two.rate / one.rate if one.rate else 0.0
    met = ratio >= TARGET_RATIO
    print(
        f"\nbest 2 workers / best 1 worker: {two.rate:.1f} / {one.rate:.1f} = {ratio:.2f} "
        f"(target >= {TARGET_RATIO}: {'met' if met else 'NOT met'})"
    )
    analysis = bound_analysis(one, two)
    for line in analysis:
        print("  " + line)
    write_figure(
        args.results,
        BENCH,
        "ITI-38 req/s, 2 workers / 1 worker (scaling)",
        round(ratio, 3),
        "ratio",
        target=f">= {TARGET_RATIO}",
        detail=f"{two.rate:.0f} req/s at {two.connections} vs {one.rate:.0f} at "
        f"{one.connections} connections; other processes used {two.share(two.others):.2f} / "
        f"{one.share(one.others):.2f} cores meanwhile" + ("" if met else "; " + analysis[-1]),
    )
    write_figure(
        args.results,
        BENCH,
        "CPU of the wrk client during the best 2-worker run",
        round(100 * two.share(two.client_cpu), 1),
        "% of a core",
        detail=f"{two.connections} connections, {args.threads} wrk thread(s)",
    )
    if not met or args.profile:
        profile(gateways[2], lua, two.connections, args.threads, args.profile_seconds)


if __name__ == "__main__":
    main()
