"""Two gateway workers on one PostgreSQL behind nginx: a worker killed mid-import is replaced.

The deployment under test is the real thing, each part its own process:

* community A: ``imagebridge serve`` over a folder archive holding one
  500-instance study of Alice;
* the local hospital: two ``imagebridge serve`` processes with one
  configuration (but their own port), standing for two hosts (each with its
  own ``IMAGEBRIDGE_NODE_NAME``, so neither can see the other's processes and
  only the lease can hand a job over), sharing a throwaway PostgreSQL
  cluster, importing over STOW-RS into a real Orthanc, behind Debian's nginx;
* ``imagebridge fetch --into pacs --queue`` creates the import job and
  leaves it to the workers.

One worker claims the job; once part of the study is stored, that worker is
killed with SIGKILL.  Its lease expires, the other worker claims the job and
retrieves only what is missing.  Then: the local Orthanc holds the 500
instances exactly once, the job completed with a matching verification,
every instance stored before the kill was retrieved exactly once, and the
load balancer kept answering through the kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.model.import_job import ImportJob, InstanceState, JobState
from imagebridge.store.jobs import JobStore
from imagebridge.store.leases import NODE_ENV
from imagebridge.transport.client import SoapClient
from tests.integration.nginx import load_balancer
from tests.integration.orthanc import OrthancServer, free_port, start_orthanc
from tests.integration.test_responding_gateway import HOME as RESPONDER_HOME
from tests.integration.test_responding_gateway import _discover, _xcpd
from tests.postgres import PostgresCluster

ALICE = DEMO_PATIENTS[0]
A = "1.3.6.1.4.1.21367.13.70.121"
HOME = "1.3.6.1.4.1.21367.13.70.120"
INSTANCES = 500
LEASE_SECONDS = 4
QUEUE = ["--into", "pacs", "--mrn", "LOC-0042", "--mrn-issuer", "HOSPITAL", "--queue"]
WHO = ["--family", "Demo", "--given", "Alice", "--birth-date", ALICE.birth_date, "--gender", "F"]


def _cli() -> str:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        pytest.fail("the imagebridge console script is not installed")
    return found


@dataclass
class Worker:
    node: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _serve(config: Path, log: Path, node: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, NODE_ENV: node, "NO_COLOR": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [_cli(), "serve", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _wait_up(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serve on port {port} did not answer within 60 s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _responder_config(tmp: Path, port: int, home: str = A) -> Path:
    path = tmp / "community-a.toml"
    path.write_text(
        "\n".join(
            [
                "[community]",
                f'home_community_id = "{home}"',
                'patient_id_authority = "2.25.1"',
                "[server]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "[store]",
                f'database_url = "sqlite:///{tmp / "a.db"}"',
                "[[repositories]]",
                f'unique_id = "{A}.1"',
                'source = "folder"',
                f'path = "{tmp / "a-archive"}"',
                "scan_interval = 3600",
                "",
            ]
        )
    )
    return path


def _worker_config(tmp: Path, name: str, port: int, url: str, pacs: str, community: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        "\n".join(
            [
                "[community]",
                f'home_community_id = "{HOME}"',
                'name = "Local hospital"',
                "[server]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "[store]",
                f'database_url = "{url}"',
                "[import]",
                'target = "stow"',
                f'url = "{pacs}"',
                "batch_size = 10",
                f"lease_seconds = {LEASE_SECONDS}",
                "sweep_interval = 0.3",
                "pending_grace = 0",
                "[[communities]]",
                f'home_community_id = "{A}"',
                'name = "Community A"',
                f'xcpd_url = "{community}/xcpd"',
                f'xca_query_url = "{community}/xca/query"',
                f'xca_retrieve_url = "{community}/xca/retrieve"',
                f'xcai_retrieve_url = "{community}/xcai/retrieve"',
                "timeout_connect = 2",
                "timeout_read = 30",
                "timeout_overall = 60",
                "",
            ]
        )
    )
    return path


@dataclass
class Deployment:
    workers: list[Worker]
    balancer: str
    database_url: str
    local: OrthancServer
    config: Path


@pytest.fixture
def deployment(tmp_path: Path, postgres: PostgresCluster) -> Iterator[Deployment]:
    make_study(
        ALICE, tmp_path / "a-archive" / "s1", modality="CT", instances=INSTANCES, rows=64,
        columns=64, seed=91,
    )  # fmt: skip
    url = postgres.create_database("workers")
    with ExitStack() as stack:
        local = start_orthanc(tmp_path / "orthanc-local")
        stack.callback(local.stop)
        a_port = free_port()
        a_log = tmp_path / "community-a.log"
        a = _serve(_responder_config(tmp_path, a_port), a_log, "node-a-community")
        stack.callback(_stop, a)
        _wait_up(a_port, a, a_log)
        workers: list[Worker] = []
        configs = []
        for node in ("node-1", "node-2"):
            port = free_port()
            config = _worker_config(
                tmp_path, node, port, url, local.dicomweb_url, f"http://127.0.0.1:{a_port}"
            )
            configs.append(config)
            log = tmp_path / f"{node}.log"
            process = _serve(config, log, node)
            stack.callback(_stop, process)
            workers.append(Worker(node, port, process, log))
        for worker in workers:
            _wait_up(worker.port, worker.process, worker.log)
        balancer = stack.enter_context(
            load_balancer([w.address for w in workers], tmp_path / "nginx")
        )
        yield Deployment(workers, balancer, url, local, configs[0])


def _job(jobs: JobStore) -> ImportJob | None:
    listed = jobs.list_jobs()
    return listed[0] if listed else None


def _through_balancer(base: str, count: int) -> list[int]:
    with httpx.Client(base_url=base, timeout=10) as client:
        return [client.get("/metrics").status_code for _ in range(count)]


def test_a_killed_worker_is_replaced_and_nothing_is_lost_or_stored_twice(
    deployment: Deployment,
) -> None:
    before = deployment.local.instance_count()
    assert _through_balancer(deployment.balancer, 10) == [200] * 10
    queued = subprocess.run(
        [_cli(), "fetch", "-c", str(deployment.config), *WHO, *QUEUE],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert "queued for the gateway's workers" in queued.stdout

    jobs = JobStore.open(deployment.database_url, migrate=False)
    try:
        victim: Worker | None = None
        stored_at_kill: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and victim is None:
            job = _job(jobs)
            if job is not None and job.state is JobState.RUNNING and job.lease_owner:
                stored = jobs.instances(job.id, [InstanceState.STORED])
                if 30 <= len(stored) < INSTANCES - 100:
                    node = job.lease_owner.rpartition(":")[0]
                    victim = next(w for w in deployment.workers if w.node == node)
                    victim.process.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    stored_at_kill = {i.sop_instance_uid for i in stored}
            time.sleep(0.05)
        assert victim is not None, "the job finished (or never started) before the kill"
        victim.process.wait(10)
        survivor = next(w for w in deployment.workers if w is not victim)

        # The balancer keeps answering: a request to the dead worker goes to the other.
        assert _through_balancer(deployment.balancer, 20) == [200] * 20

        deadline = time.monotonic() + 180
        job = _job(jobs)
        while time.monotonic() < deadline and job is not None and job.state not in FINAL:
            time.sleep(0.2)
            job = _job(jobs)
        taken_over = time.monotonic() - killed_at
        assert job is not None
        history = [e.message for e in jobs.events(job.id, limit=500)]
        assert job.state is JobState.COMPLETED, (job, history, survivor.log.read_text()[-3000:])
        assert job.verification is not None and job.verification.ok, job.verification
        claims = [m for m in history if m.startswith("claimed by ")]
        assert [c.split()[2].rpartition(":")[0] for c in claims] == [victim.node, survivor.node]
        # Only the lease handed the job over: it was not taken before the lease ran out.
        assert taken_over >= LEASE_SECONDS - 1.5, taken_over

        instances = jobs.instances(job.id)
        assert len(instances) == INSTANCES
        for instance in instances:
            assert instance.state in (InstanceState.STORED, InstanceState.ALREADY_PRESENT)
            if instance.sop_instance_uid in stored_at_kill:
                assert instance.attempts == 1, instance  # stored before the kill: never again
            else:
                assert instance.attempts <= 2, instance
    finally:
        jobs.close()
    assert deployment.local.instance_count() == before + INSTANCES
    assert survivor.process.poll() is None, "the surviving worker must still be serving"


FINAL = (JobState.COMPLETED, JobState.COMPLETED_WITH_ERRORS, JobState.FAILED, JobState.HELD)


def test_serve_with_two_workers_shares_the_port_and_replaces_a_killed_worker(
    tmp_path: Path,
) -> None:
    """``serve --workers 2``: two processes answer on one port; uvicorn restarts a dead one."""
    for n in range(4):  # enough files that a worker answering before the scan would show
        make_study(ALICE, tmp_path / "a-archive" / f"s{n}", modality="CT", instances=40, seed=n)
    port = free_port()
    config = _responder_config(tmp_path, port, RESPONDER_HOME)
    log = tmp_path / "serve.log"
    env = {**os.environ, "NO_COLOR": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [_cli(), "serve", "-c", str(config), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_up(port, process, log)

        def workers() -> set[int]:
            return {child.pid for child in psutil.Process(process.pid).children()}

        deadline = time.monotonic() + 60
        while len(_serving(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = _serving(log)
        assert len(first) == 2, log.read_text()[-3000:]
        assert first <= workers()
        # Each worker answers from the complete index: the one that did not scan waited.
        assert anyio.run(_discover_alice, f"http://127.0.0.1:{port}", 20) == [1] * 20

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(_serving(log) - {victim}) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_serving(log) - {victim}) == 2, log.read_text()[-3000:]
        assert _through_balancer(f"http://127.0.0.1:{port}", 20) == [200] * 20
        # One archive scan at start-up, whichever worker got the lease; the other reused it.
        assert "is indexed by another worker" in log.read_text()
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text()[-3000:]


def _serving(log: Path) -> set[int]:
    """Worker processes that finished starting (``Application startup complete``), by pid."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        if "Application startup complete" in line:
            pids.add(int(line.split()[3]))
    return pids


async def _discover_alice(base: str, count: int) -> list[int]:
    """Patients found for Alice by *count* XCPD queries on fresh connections (any worker)."""
    found = []
    for _ in range(count):
        async with httpx.AsyncClient(timeout=30) as http:
            query = _xcpd("Demo", "Alice", ALICE.birth_date, "F")
            answer = await _discover(base, SoapClient(http), query)
            found.append(len(answer.patients))
    return found
