"""Import figures: a study pulled from a partner's Orthanc into the local Orthanc, vs Orthanc.

Usage: ``python bench/import_throughput.py [--instances 400] [--batch-size 50]
[--repeat 1] [--data-dir DIR] [--profile] [--keep-logs] [--results FILE]``

Issue 6: "end-to-end time to bring a 1 GB study from one community's Orthanc
into the local Orthanc, against a direct Orthanc-to-Orthanc transfer of the
same study in the same run; target: a ratio of at most 2".  A synthetic CT
study (``make_study``, one series of 512x512 slices of 16 bits, about
0.53 MB per instance: ``--instances 2000`` is the issue's 1 GB, whose import
alone took about 5 minutes at ``batch_size = 50`` on a 2-CPU machine; the
default, 400, keeps ``make bench`` within a few minutes, and since some costs
grow with the square of the study size, its ratio understates 1 GB's) is written
once under ``--data-dir`` (default ``~/.cache/imagebridge-bench/import``) and
uploaded once into community B's Orthanc, whose storage is kept there too.
Everything runs in processes of its own and listens on loopback:

* community B's PACS: an Orthanc (``tests/integration/orthanc.py``, with the
  local Orthanc added as a DICOM modality and as an HTTP peer);
* community B's gateway: ``imagebridge serve`` with a generated config, one
  ``dicomweb`` repository pointing at B's Orthanc;
* the local PACS: a second, empty Orthanc (DICOMweb plugin for STOW-RS);
* the initiator: ``imagebridge fetch -c ... --into pacs --mrn LOC-0042`` (the
  real console script, a process of its own), ``[import] target = "stow"``
  at the local Orthanc.  Its wall time, start to exit, is the figure; the
  local Orthanc must then hold every instance and the job must be
  ``completed`` with a verification that found them all (read from the
  initiator's SQLite job store).

The C-STORE baseline runs with ``TCP_NODELAY=1`` in Orthanc's environment
(DCMTK otherwise keeps Nagle's algorithm and C-STORE is about 6x slower on
loopback): the baseline is Orthanc at its best.  The baselines, in the same
run, move the same study straight from B's Orthanc to the local one with
Orthanc's REST API, synchronously: C-STORE
push (``POST /modalities/local/store``) and HTTP peer transfer (``POST
/peers/local/store``); the faster is the baseline of the ratio.  The local
Orthanc is emptied (``DELETE /studies/{id}``) before every run, and runs are
interleaved (C-STORE, peers, imagebridge; ``--repeat`` rounds; medians).

Also printed: the load average before every round, peak RSS of the
initiator and of B's gateway (psutil, sampled every 50 ms), CPU seconds of
every process during the run (on 2 CPUs the sum shows who is busy) and how
busy the whole machine was (CPU seconds of every process, ours and
others': on a shared machine the others' share says how far a run's wall
time is to be trusted), and a breakdown of the imagebridge run: process
start, patient discovery and manifest phases (from the fetch output), the
import job (created to finished, from the job store).

``--profile`` adds two more imagebridge runs: one with ``-v`` whose log
gives the time of each stage of the import pipeline summed over the
batches (retrieve, prepare: parse, plan and rewrite, store; the stages run
at once, so the one busy for about the whole job bounds it) and the HTTP
requests by kind, and one under py-spy (initiator and gateway) with the
hot spots.

MB is 10^6 bytes.  Nothing is asserted; the figures are printed.  With
``--results FILE`` the headline figures are also appended to *FILE*
(``bench/record.py``, read by ``bench/results.py``): the imagebridge run's
end-to-end time and its ratio to the faster Orthanc-to-Orthanc baseline
(target <= 2), both medians of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from record import write_figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.integration.orthanc, as `python bench/...` runs

from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study  # noqa: E402
from imagebridge.model.import_job import JobState  # noqa: E402
from imagebridge.store.jobs import JobStore  # noqa: E402
from tests.integration.orthanc import (  # noqa: E402
    OrthancServer,
    find_orthanc,
    free_port,
)

MB = 1_000_000
ROWS = COLUMNS = 512
SEED = 6600  # the study of N instances uses seed SEED + N: every size has its own UIDs
TARGET_RATIO = 2.0
BENCH = "import_throughput"
SAMPLE_EVERY = 0.05
RUN_TIMEOUT = 1800.0  # seconds: every transfer is bounded
START_TIMEOUT = 600.0  # the gateway indexes B's Orthanc before it listens
PATIENT = DEMO_PATIENTS[0]
B = "1.3.6.1.4.1.21367.13.70.112"
LOCAL_HCID = "1.3.6.1.4.1.21367.13.70.1"
LOCAL_MRN = "LOC-0042"
SOURCE_AET, LOCAL_AET = "IBSOURCE", "IBLOCAL"


# --- Orthanc ---------------------------------------------------------------------------------


@dataclass
class BenchOrthanc(OrthancServer):
    """The test Orthanc, with the other Orthanc of the bench as its modality and peer."""

    modalities: dict[str, dict[str, object]] = field(default_factory=dict)
    peers: dict[str, dict[str, object]] = field(default_factory=dict)

    def configuration(self) -> dict[str, object]:
        config = super().configuration()
        config["Name"] = f"imagebridge-bench-{self.aet.lower()}"
        config["DicomModalities"] = self.modalities
        config["OrthancPeers"] = self.peers
        return config

    def get(self, path: str) -> Any:
        response = httpx.get(self.base_url + path, timeout=60.0)
        response.raise_for_status()
        return response.json()

    def clear(self) -> None:
        for study in self.get("/studies"):
            httpx.delete(f"{self.base_url}/studies/{study}", timeout=120.0).raise_for_status()

    def find_study(self, study_uid: str) -> str:
        found = httpx.post(f"{self.base_url}/tools/lookup", content=study_uid, timeout=30.0).json()
        ids = [f["ID"] for f in found if f.get("Type") == "Study"]
        if not ids:
            raise RuntimeError(f"the source Orthanc has no study {study_uid}")
        return str(ids[0])


def orthanc_pair(data: Path, instances: int, tmp: Path) -> tuple[BenchOrthanc, BenchOrthanc]:
    """(B's Orthanc, its storage kept under *data*; the local Orthanc, fresh under *tmp*)."""
    install = find_orthanc()
    if install is None:
        raise SystemExit(
            "Orthanc with its DICOMweb plugin is not installed "
            "(apt-get install orthanc orthanc-dicomweb, or make bench)"
        )
    ports = {k: free_port() for k in ("sh", "sd", "lh", "ld")}
    source = BenchOrthanc(
        install, data / "orthanc" / f"ct-{instances}x{ROWS}", ports["sh"], ports["sd"], 0,
        aet=SOURCE_AET,
        modalities={"local": {"AET": LOCAL_AET, "Host": "127.0.0.1", "Port": ports["ld"]}},
        peers={"local": {"Url": f"http://127.0.0.1:{ports['lh']}/"}},
    )  # fmt: skip
    local = BenchOrthanc(
        install, tmp / "orthanc-local", ports["lh"], ports["ld"], 0,
        aet=LOCAL_AET,
        modalities={"source": {"AET": SOURCE_AET, "Host": "127.0.0.1", "Port": ports["sd"]}},
    )  # fmt: skip
    return source, local


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    instances: int
    folder: Path
    study_uid: str
    total_bytes: int

    @property
    def label(self) -> str:
        return f"{self.instances} x {ROWS}x{COLUMNS} CT, {self.total_bytes / MB:,.1f} MB"


def prepare_study(data: Path, instances: int) -> Study:
    """Make (once) the study of *instances* CT slices and its manifest."""
    name = f"ct-{instances}x{ROWS}"
    folder = data / "studies" / name
    manifest = data / "studies" / f"{name}.json"
    if not manifest.exists():
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted earlier run
        print(f"  making the study of {instances} instances in {folder} ...", flush=True)
        started = time.monotonic()
        study = make_study(
            PATIENT, folder, modality="CT", series=1, instances=instances,
            rows=ROWS, columns=COLUMNS, seed=SEED + instances,
        )  # fmt: skip
        record = {
            "study_uid": study.study_instance_uid,
            "files": [str(p.relative_to(folder)) for p in study.files],
            "bytes": sum(p.stat().st_size for p in study.files),
        }
        manifest.write_text(json.dumps(record), encoding="utf-8")
        print(f"  ... {time.monotonic() - started:.1f} s", flush=True)
    record = json.loads(manifest.read_text(encoding="utf-8"))
    return Study(len(record["files"]), folder, record["study_uid"], int(record["bytes"]))


def load_source(source: BenchOrthanc, study: Study) -> None:
    """Upload the study into B's Orthanc unless its kept storage already holds it."""
    held = int(source.get("/statistics")["CountInstances"])
    if held == study.instances:
        return
    source.clear()
    print(f"  uploading {study.instances} instances to B's Orthanc (once; kept)", flush=True)
    started = time.monotonic()
    source.upload(sorted(study.folder.rglob("*.dcm")))
    print(f"  ... {time.monotonic() - started:.1f} s", flush=True)


# --- imagebridge processes -------------------------------------------------------------------


def cli() -> str:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        raise SystemExit("the imagebridge console script is not installed (pip install -e .)")
    return found


def responder_config(tmp: Path, source: BenchOrthanc, port: int) -> Path:
    path = tmp / "responder.toml"
    path.write_text(
        f"""[community]
home_community_id = "{B}"
name = "Community B"
patient_id_authority = "2.25.1"
[server]
host = "127.0.0.1"
port = {port}
[store]
database_url = "sqlite:///{tmp / "responder.db"}"
[[repositories]]
unique_id = "{B}.1"
source = "dicomweb"
url = "{source.dicomweb_url}"
scan_interval = 3600
""",
        encoding="utf-8",
    )
    return path


def initiator_config(tmp: Path, name: str, gateway: str, local: BenchOrthanc, batch: int) -> Path:
    """A config of its own per run: a fresh job store, so every run imports the whole study."""
    path = tmp / f"{name}.toml"
    path.write_text(
        f"""[community]
home_community_id = "{LOCAL_HCID}"
name = "Local hospital"
[store]
database_url = "sqlite:///{tmp / f"{name}.db"}"
[import]
target = "stow"
url = "{local.dicomweb_url}"
batch_size = {batch}
spool_dir = "{tmp / "spool"}"
modifying_system = "imagebridge bench"
[[communities]]
home_community_id = "{B}"
name = "Community B"
xcpd_url = "{gateway}/xcpd"
xca_query_url = "{gateway}/xca/query"
xca_retrieve_url = "{gateway}/xca/retrieve"
xcai_retrieve_url = "{gateway}/xcai/retrieve"
timeout_connect = 5
timeout_read = 600
timeout_overall = 1800
""",
        encoding="utf-8",
    )
    (tmp / "spool").mkdir(exist_ok=True)
    return path


def start_responder(config: Path, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    with open(tmp / "responder.log", "wb") as log:
        process = subprocess.Popen(
            [cli(), "serve", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (tmp / "responder.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"imagebridge serve exited:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("imagebridge serve did not listen in time")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --- measuring ----------------------------------------------------------------------------------


class Watch:
    """Peak RSS and CPU seconds of some processes while a run lasts (sampled every 50 ms)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self._cpu0: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        for name, pid in pids.items():
            self.add(name, pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._machine0 = _busy()
        self.machine = 0.0
        """CPU seconds the whole machine was busy (every process, ours and others')."""

    def add(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            self._procs[name] = proc
            times = proc.cpu_times()
            self._cpu0[name] = times.user + times.system
            self.cpu[name] = 0.0
            self.peak[name] = proc.memory_info().rss

    def _sample(self) -> None:
        for name, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                    times = proc.cpu_times()
                    self.cpu[name] = times.user + times.system - self._cpu0[name]
            except psutil.Error:
                self._procs.pop(name)  # it has exited: its last sample stands

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self.machine = _busy() - self._machine0
        self._stop.set()
        self._thread.join()


def _busy() -> float:
    """CPU seconds the machine has been busy since boot (all CPUs; not idle, not I/O wait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclass
class Run:
    """One transfer of the study into the local Orthanc."""

    what: str
    seconds: float
    stored: int
    ok: bool
    note: str = ""
    peak: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    machine: float = 0.0


@dataclass
class World:
    study: Study
    source: BenchOrthanc
    local: BenchOrthanc
    source_study: str
    responder: subprocess.Popen[bytes]
    gateway: str
    tmp: Path
    batch: int
    runs: int = 0

    def pids(self) -> dict[str, int]:
        assert self.source.process is not None and self.local.process is not None
        return {
            "gateway": self.responder.pid,
            "B's Orthanc": self.source.process.pid,
            "local Orthanc": self.local.process.pid,
        }


def orthanc_push(world: World, how: str) -> Run:
    """``POST /modalities/local/store`` (C-STORE) or ``/peers/local/store`` (HTTP), synchronous."""
    world.local.clear()
    path = "/modalities/local/store" if how == "cstore" else "/peers/local/store"
    body = {"Resources": [world.source_study], "Synchronous": True}
    with Watch(world.pids()) as watch:
        started = time.monotonic()
        response = httpx.post(world.source.base_url + path, json=body, timeout=RUN_TIMEOUT)
        seconds = time.monotonic() - started
    stored = world.local.instance_count()
    ok = response.status_code == 200 and stored == world.study.instances
    note = "" if ok else f"HTTP {response.status_code} {response.text[:300]}"
    label = "C-STORE push" if how == "cstore" else "HTTP peer transfer"
    return Run(label, seconds, stored, ok, note, watch.peak, watch.cpu, machine=watch.machine)


def imagebridge_import(world: World, *, verbose: bool = False, spy: bool = False) -> Run:
    """``imagebridge fetch --into pacs`` from start to exit, then the local count and the job."""
    world.local.clear()
    world.runs += 1
    name = f"initiator-{world.runs}"
    config = initiator_config(world.tmp, name, world.gateway, world.local, world.batch)
    given, family = PATIENT.name.split("^")[1], PATIENT.name.split("^")[0]
    args = [
        cli(), *(["-v"] if verbose else []), "fetch", "-c", str(config),
        "--family", family.title(), "--given", given.title(),
        "--birth-date", PATIENT.birth_date, "--gender", PATIENT.sex,
        "--into", "pacs", "--mrn", LOCAL_MRN,
    ]  # fmt: skip
    spies: list[subprocess.Popen[bytes]] = []
    if spy:
        spies.append(py_spy(["--pid", str(world.responder.pid)], world.tmp / "spy-gateway.txt"))
        args = [*py_spy_args(world.tmp / "spy-initiator.txt"), "--", *args]
        time.sleep(1.0)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    out_path, err_path = world.tmp / f"{name}.out", world.tmp / f"{name}.err"
    with Watch(world.pids()) as watch, open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        watch.add("initiator", process.pid)
        if spy:  # py-spy started the initiator: watch that, not py-spy
            with contextlib.suppress(psutil.Error):
                time.sleep(0.3)
                kids = psutil.Process(process.pid).children()
                if kids:
                    watch.add("initiator", kids[0].pid)
        try:
            code = process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        seconds = time.monotonic() - started
    for s in spies:
        s.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.communicate(timeout=60)
    stored = world.local.instance_count()
    output = out_path.read_text(errors="replace")
    phases = fetch_phases(output)
    jobs = JobStore.open(f"sqlite:///{world.tmp / f'{name}.db'}", migrate=False)
    try:
        listed = jobs.list_jobs()
        job = listed[0] if len(listed) == 1 else None
    finally:
        jobs.close()
    ok = code == 0 and stored == world.study.instances and job is not None
    note = f"exit {code}, {len(listed)} job(s)"
    if job is not None:
        check = job.verification
        ok = ok and job.state is JobState.COMPLETED and check is not None and check.ok
        verified = "not verified" if check is None else f"verified {check.found}/{check.expected}"
        note = f"exit {code}, job {job.state.value}, {job.done}/{job.total} done, {verified}"
        if job.finished_at is not None:
            phases["import job (created..finished)"] = (
                job.finished_at - job.created_at
            ).total_seconds()
    if not ok:
        note += "\n" + "\n".join(output.splitlines()[-25:])
        note += "\n" + err_path.read_text(errors="replace")[-2000:]
    run = Run("imagebridge fetch --into pacs", seconds, stored, ok, note, watch.peak, watch.cpu)
    run.machine = watch.machine
    run.phases = phases
    if verbose:
        run.phases |= exchange_breakdown(err_path.read_text(errors="replace"))
    return run


def fetch_phases(output: str) -> dict[str, float]:
    phases: dict[str, float] = {}
    for title, key in (
        ("Patient discovery", "discovery (ITI-55)"),
        ("Imaging manifests", "manifests (ITI-38, ITI-39)"),
    ):
        match = re.search(rf"{title}[^:]*: ([\d.]+) s", output)
        if match:
            phases[key] = float(match.group(1))
    return phases


# --- the -v log: where the initiator's wall time goes --------------------------------------

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (?:\d+ )?([\w.]+): (.*)$")


STAGE = re.compile(
    r"import job \d+: a batch of (\d+) (retrieved|prepared|stored) in ([\d.]+) s"
    r"(?:, waited ([\d.]+) s)?(?: \(([^)]*)\))?"
)


def exchange_breakdown(log: str) -> dict[str, float]:
    """Where the import job's time went, from the initiator's ``-v`` log.

    The importer runs three stages at once (retrieve batch k+2, prepare k+1,
    store k) and logs each batch's time in each; their sums show which stage
    bounds the job (the one busy for about the job's whole time, the store
    stage idle only while it waits for a prepared batch).  The HTTP requests
    are counted by kind (they overlap, so their times are not summed).
    """
    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    stamps: list[datetime] = []
    for line in log.splitlines():
        match = STAMP.match(line)
        if not match:
            continue
        logger, message = match.group(2), match.group(3)
        if logger == "httpx" and message.startswith("HTTP Request:"):
            kind = _kind(message)
            counts[kind] = counts.get(kind, 0) + 1
            stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
        stage = STAGE.search(message)
        if stage is None:
            continue
        name = f"stage {stage.group(2)} (busy, summed over batches)"
        out[name] = out.get(name, 0.0) + float(stage.group(3))
        if stage.group(4) is not None:
            key = "stage stored: idle, waiting for a prepared batch"
            out[key] = out.get(key, 0.0) + float(stage.group(4))
        for what, seconds in re.findall(r"(\w+) ([\d.]+) s", stage.group(5) or ""):
            key = f"  of which {what}"
            out[key] = out.get(key, 0.0) + float(seconds)
    out |= {f"HTTP requests: {k}": float(v) for k, v in sorted(counts.items())}
    if len(stamps) > 1:
        out["HTTP span (first..last answer)"] = (stamps[-1] - stamps[0]).total_seconds()
    return out


def _kind(message: str) -> str:
    if "/xcai/" in message:
        return "RAD-75 retrieve"
    if "/xcpd" in message or "/xca/" in message:
        return "ITI-55/38/39"
    if "POST" in message and "/studies" in message:
        return "STOW-RS"
    if "00080018=" in message:
        return "QIDO-RS by SOP UID"
    if "GET" in message:
        return "QIDO-RS study/instance list"
    return "other"


# --- py-spy ------------------------------------------------------------------------------------


def py_spy_tool() -> str | None:
    tool = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return tool if Path(tool).exists() else None


def py_spy_args(out: Path) -> list[str]:
    return [
        str(py_spy_tool()), "record", "--rate", "100", "--gil", "--threads",
        "--format", "raw", "--output", str(out),
    ]  # fmt: skip


def py_spy(target: list[str], out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*py_spy_args(out), "--nonblocking", *target],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


IDLE = ("select (selectors.py", "wait (threading.py", "_worker (concurrent/futures/thread.py")
# The steps of an import batch (importer.py) and of the gateway's RAD-75 answer, inclusive.
STEPS = (
    ("initiator start-up (imports)", "<module> (imagebridge/cli/__init__.py"),
    ("RAD-75 exchange (MTOM read, spool)", "PartnerClient.retrieve_images ("),
    ("  of which read_mtom", "read_mtom ("),
    ("header parse (pydicom, up to the pixel data)", "parse_all (imagebridge/actors/"),
    ("target_objects (QIDO study + per SOP)", "target_objects ("),
    ("plan_study", "plan_study ("),
    ("rewrite (splice, or full read and write)", "rewrite_all (imagebridge/actors/"),
    ("  of which splice_plan", "splice_plan ("),
    ("  of which full_rewrite", "full_rewrite ("),
    ("STOW-RS store (incl. present())", "StowTarget.store ("),
    ("  of which QIDO-RS paging + JSON", "StowTarget._qido ("),
    ("job store writes", "ImportRunner._mark ("),
    ("verification", "ImportRunner._verify ("),
    ("gateway: WADO-RS series read", "DicomWebSource.read_series ("),
    ("gateway: RAD-75 answer", "_Retrieval._serve ("),
)


def summarise(raw: Path, title: str, top: int, seconds: float) -> None:
    """Own time per function and inclusive time per imagebridge function, GIL-holding samples."""
    if not raw.exists():
        print(f"  {title}: no py-spy output")
        return
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
        if not frames or any(marker in frames[-1] for marker in IDLE):
            continue
        total += count
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames if "imagebridge/" in f}:
            ours[frame] = ours.get(frame, 0) + count
        for step, marker in STEPS:
            if any(f.startswith(marker) for f in frames):
                steps[step] = steps.get(step, 0) + count
    if not total:
        print(f"  {title}: no samples")
        return
    print(
        f"  {title}: {total / 100:.1f} s holding the GIL in a {seconds:.1f} s run "
        f"({100 * total / 100 / seconds:.0f} % of one core)"
    )
    print("    steps (inclusive):")
    for step, _ in STEPS:
        if step in steps:
            print(f"      {steps[step] / 100:6.2f} s {100 * steps[step] / total:5.1f} %  {step}")
    print("    own time:")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"      {count / 100:6.2f} s {100 * count / total:5.1f} %  {frame}")
    print("    imagebridge functions, inclusive:")
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[:top]:
        print(f"      {count / 100:6.2f} s {100 * count / total:5.1f} %  {frame}")


def _short(frame: str) -> str:
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame
    name, path, line = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{line})"


# --- report -------------------------------------------------------------------------------------


def median_run(runs: Sequence[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[len(ordered) // 2]


def print_run(run: Run, study: Study) -> None:
    mb_s = study.total_bytes / MB / run.seconds
    state = "ok" if run.ok else "FAILED"
    print(f"  {run.what:<30} {run.seconds:8.1f} s {mb_s:8.1f} MB/s  {run.stored} stored  {state}")
    if run.note:
        print("      " + run.note.replace("\n", "\n      "))


def print_usage(run: Run) -> None:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
    rss = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in run.peak.items() if "Orthanc" not in k)
    print(f"      CPU seconds: {cpu}")
    if run.machine:
        cores = os.cpu_count() or 1
        others = run.machine - sum(run.cpu.values())
        print(
            f"      machine busy {run.machine:.1f} CPU-s of {cores * run.seconds:.1f} "
            f"({100 * run.machine / (cores * run.seconds):.0f} %), of which other processes "
            f"{max(others, 0.0):.1f} CPU-s"
        )
    if "initiator" in run.peak:
        print(f"      peak RSS: {rss}")


def report(
    study: Study, results: dict[str, list[Run]], repeat: int
) -> tuple[Run, Run, list[Run]] | None:
    print(f"\n== results: {study.label}; median of {repeat} (of the runs that passed) ==")
    medians = {k: median_run([r for r in v if r.ok] or v) for k, v in results.items() if v}
    for key, run in medians.items():
        print_run(run, study)
        if len(results[key]) > 1:
            print(f"      all runs: {', '.join(f'{r.seconds:.1f}' for r in results[key])} s")
        print_usage(run)
    ib = medians.get("imagebridge")
    if ib is not None and ib.phases:
        print("  imagebridge breakdown (median run):")
        known = 0.0
        for key, value in ib.phases.items():
            print(f"      {key:<40} {value:7.1f} s")
            if not key.startswith("import"):
                known += value
        if "import job (created..finished)" in ib.phases:
            known += ib.phases["import job (created..finished)"]
            print(f"      {'rest (start-up, job creation, exit)':<40} {ib.seconds - known:7.1f} s")
    baselines = [medians[k] for k in ("cstore", "peers") if k in medians and medians[k].ok]
    if ib is None or not ib.ok or not baselines:
        print("  no ratio: no imagebridge run or no baseline passed its checks")
        return None
    base = min(baselines, key=lambda r: r.seconds)
    ratio = ib.seconds / base.seconds
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(
        f"  ratio imagebridge / {base.what} (the faster baseline): {ratio:.2f} "
        f"(target <= {TARGET_RATIO:g}: {verdict})"
    )
    return ib, base, baselines


def record(
    results: Path | None,
    study: Study,
    medians: tuple[Run, Run, list[Run]] | None,
    repeat: int,
    load: tuple[float, float],
) -> None:
    """The headline figures: imagebridge's end-to-end time and its ratio to the baseline."""
    if medians is None:
        return
    ib, base, baselines = medians
    busy = 100 * ib.machine / ((os.cpu_count() or 1) * ib.seconds)
    runs = (
        f"median of {repeat} interleaved round(s); load average {load[0]:.1f} -> {load[1]:.1f}; "
        f"machine {busy:.0f} % busy during the import, "
        f"{max(ib.machine - sum(ib.cpu.values()), 0.0):.0f} CPU-s of it other processes'"
    )
    write_figure(
        results,
        BENCH,
        f"end-to-end import of a {study.total_bytes / MB:,.0f} MB study (imagebridge fetch)",
        round(ib.seconds, 2),
        "s",
        detail=f"{study.label}; start to exit of `imagebridge fetch --into pacs` (STOW-RS); {runs}",
    )
    others = ", ".join(f"{r.what} {r.seconds:.1f} s" for r in baselines)
    write_figure(
        results,
        BENCH,
        "end-to-end import / direct Orthanc-to-Orthanc transfer of the same study",
        round(ib.seconds / base.seconds, 2),
        "ratio",
        target=f"<= {TARGET_RATIO:g}",
        detail=f"{ib.seconds:.1f} s vs {base.what} {base.seconds:.1f} s, the faster baseline "
        f"({others}), same run; {study.label}; {runs}",
    )


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=400, help="CT slices (2000: ~1 GB)")
    parser.add_argument("--batch-size", type=int, default=50, help="[import] batch_size")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of runs (median)")
    parser.add_argument("--no-peers", action="store_true", help="skip the HTTP peer baseline")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the study is cached")
    parser.add_argument("--profile", action="store_true", help="-v and py-spy runs afterwards")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder")
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    args = parser.parse_args()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    data: Path = args.data_dir or cache / "imagebridge-bench" / "import"
    data.mkdir(parents=True, exist_ok=True)
    # DCMTK (Orthanc's DICOM stack) leaves Nagle's algorithm on unless TCP_NODELAY is set:
    # each C-STORE then waits for a delayed ACK (~6x slower on loopback).  The baseline is
    # Orthanc at its best, so it is set for the Orthancs (and, harmlessly, inherited by all).
    os.environ.setdefault("TCP_NODELAY", "1")
    print("Import figures (issue 6); MB = 10^6 bytes; nothing is asserted")
    print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"Python {sys.version.split()[0]}; code: {code_version()}; data in {data}; "
        f"TCP_NODELAY={os.environ['TCP_NODELAY']} for DCMTK"
    )
    study = prepare_study(data, args.instances)
    tmp = Path(tempfile.mkdtemp(prefix="ib-import-"))
    source, local = orthanc_pair(data, study.instances, tmp)
    responder = None
    try:
        source.start()
        local.start()
        load_source(source, study)
        version = source.get("/system").get("Version", "?")
        port = free_port()
        started = time.monotonic()
        responder = start_responder(responder_config(tmp, source, port), port, tmp)
        print(
            f"study: {study.label}; Orthanc {version}; B's gateway (imagebridge serve, "
            f"dicomweb source) up in {time.monotonic() - started:.1f} s; "
            f"import batch_size {args.batch_size}"
        )
        world = World(
            study, source, local, source.find_study(study.study_uid), responder,
            f"http://127.0.0.1:{port}", tmp, args.batch_size,
        )  # fmt: skip
        kinds: list[tuple[str, Callable[[], Run]]] = [
            ("cstore", lambda: orthanc_push(world, "cstore")),
            *([] if args.no_peers else [("peers", lambda: orthanc_push(world, "peers"))]),
            ("imagebridge", lambda: imagebridge_import(world)),
        ]
        results: dict[str, list[Run]] = {k: [] for k, _ in kinds}
        load_before = os.getloadavg()[0]
        for round_ in range(args.repeat):
            print(f"  round {round_ + 1}, load average {os.getloadavg()[0]:.2f}")
            for key, run in kinds:
                result = run()
                results[key].append(result)
                print("    ", end="")
                print_run(result, study)
        load = (load_before, os.getloadavg()[0])
        print(f"  load average (1 min) {load[0]:.2f} before the rounds, {load[1]:.2f} after")
        record(args.results, study, report(study, results, args.repeat), args.repeat, load)
        if args.profile:
            profile(world, args)
    finally:
        stop(responder)
        local.stop()
        source.stop()
        if args.keep_logs:
            print(f"\nlogs and configs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def profile(world: World, args: argparse.Namespace) -> None:
    print("\n== profile: one imagebridge run with -v (log timestamps) ==")
    run = imagebridge_import(world, verbose=True)
    print_run(run, world.study)
    for key, value in run.phases.items():
        print(f"      {key:<52} {value:7.1f} s")
    print_usage(run)
    if py_spy_tool() is None:
        print("  py-spy not found (.venv/bin/pip install py-spy): no py-spy run")
        return
    print("\n== profile: one imagebridge run under py-spy (initiator and B's gateway) ==")
    run = imagebridge_import(world, spy=True)
    print_run(run, world.study)
    summarise(world.tmp / "spy-initiator.txt", "initiator", args.profile_top, run.seconds)
    summarise(world.tmp / "spy-gateway.txt", "B's gateway", args.profile_top, run.seconds)


def code_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return head + (" + uncommitted changes in src/" if dirty else "")
    return "unknown (not a git checkout)"


if __name__ == "__main__":
    main()
