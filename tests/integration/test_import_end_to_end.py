"""Import end to end: pull a patient's priors from three communities into a real local Orthanc.

* community A: an imagebridge responder over a folder archive;
* community B: an imagebridge responder whose archive is a real Orthanc (DICOMweb);
* community C: down (connection refused).

The initiator is the real ``imagebridge`` console script, run as its own
process with ``fetch --into pacs``; it imports over STOW-RS into another real
Orthanc (the local PACS), which already knows the patient under a local MRN.
Every study must arrive reconciled to that MRN with the foreign identifiers
kept in the Original Attributes Sequence, the dead community must be
reported, and each job must record a verification count.  A second test
kills the initiator with SIGKILL in the middle of a transfer and runs
``imagebridge jobs resume``: nothing is lost and nothing is stored or
retrieved twice.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from pydicom import dcmread

from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.synthetic import DEMO_PATIENTS, SyntheticStudy, make_study
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator
from imagebridge.model.import_job import InstanceState, JobState
from imagebridge.store.jobs import JobStore
from tests.http_server import running_server
from tests.integration.orthanc import OrthancServer, free_port, start_orthanc

pytestmark = pytest.mark.anyio

ALICE = DEMO_PATIENTS[0]
A, B, C = (f"1.3.6.1.4.1.21367.13.70.{n}" for n in (111, 112, 113))
LOCAL_MRN = "LOC-0042"
LOCAL_ISSUER = HierarchicDesignator("HOSPITAL", "", "")
LOCAL_ALICE = DicomPatient("DEMO^ALICE", LOCAL_MRN, LOCAL_ISSUER, ALICE.birth_date, ALICE.sex)
WHO = ["--family", "Demo", "--given", "Alice", "--birth-date", ALICE.birth_date, "--gender", "F"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cli() -> str:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        pytest.fail("the imagebridge console script is not installed")
    return found


@pytest.fixture
def orthancs(tmp_path: Path) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    """(B's archive, the local PACS): two real Orthancs."""
    source = start_orthanc(tmp_path / "orthanc-b")
    try:
        local = start_orthanc(tmp_path / "orthanc-local")
        try:
            yield source, local
        finally:
            local.stop()
    finally:
        source.stop()


@dataclass
class World:
    config: Path
    database: Path
    studies: list[SyntheticStudy]
    local: OrthancServer


def _responder(tmp: Path, hcid: str, repository: dict[str, object]) -> object:
    raw = {
        "community": {"home_community_id": hcid, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / hcid / 'ib.db'}"},
        "repositories": [{"unique_id": hcid + ".1", "scan_interval": 3600, **repository}],
    }
    (tmp / hcid).mkdir(parents=True, exist_ok=True)
    return create_app(config_from_mapping(raw, {}))


def _initiator(tmp: Path, urls: dict[str, str], local: OrthancServer, batch: int) -> Path:
    lines = [
        "[community]",
        'home_community_id = "1.3.6.1.4.1.21367.13.70.1"',
        'name = "Local hospital"',
        "[store]",
        f'database_url = "sqlite:///{tmp / "initiator.db"}"',
        "[import]",
        'target = "stow"',
        f'url = "{local.dicomweb_url}"',
        f"batch_size = {batch}",
        'modifying_system = "imagebridge test"',
        "",
    ]
    for hcid, base in urls.items():
        lines += [
            "[[communities]]",
            f'home_community_id = "{hcid}"',
            f'name = "C{hcid.rsplit(".", 1)[-1]}"',
            f'xcpd_url = "{base}/xcpd"',
            f'xca_query_url = "{base}/xca/query"',
            f'xca_retrieve_url = "{base}/xca/retrieve"',
            f'xcai_retrieve_url = "{base}/xcai/retrieve"',
            "timeout_connect = 2",
            "timeout_read = 30",
            "timeout_overall = 60",
            "",
        ]
    path = tmp / "initiator.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
async def world(
    tmp_path: Path, orthancs: tuple[OrthancServer, OrthancServer], request: pytest.FixtureRequest
) -> AsyncIterator[World]:
    source, local = orthancs
    size = getattr(request, "param", 6)
    archive = tmp_path / "a-archive" / "s1"
    folder_study = make_study(
        ALICE, archive, modality="CT", instances=size, rows=64, columns=64, seed=51
    )
    pacs_study = make_study(ALICE, tmp_path / "b-files" / "s2", modality="MR", instances=5, seed=52)
    source.upload_study(pacs_study)
    # The local PACS already knows Alice under the hospital's MRN.
    known = make_study(LOCAL_ALICE, tmp_path / "local-files", modality="CR", seed=53)
    local.upload_study(known)
    app_a = _responder(tmp_path, A, {"source": "folder", "path": str(tmp_path / "a-archive")})
    app_b = _responder(tmp_path, B, {"source": "dicomweb", "url": source.dicomweb_url})
    async with AsyncExitStack() as stack:
        urls = {
            A: await stack.enter_async_context(running_server(app_a)),
            B: await stack.enter_async_context(running_server(app_b)),
            C: f"http://127.0.0.1:{free_port()}",
        }
        config = _initiator(tmp_path, urls, local, batch=getattr(request, "param", 6) // 10 or 3)
        yield World(config, tmp_path / "initiator.db", [folder_study, pacs_study], local)


async def _run(*args: str) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = await anyio.run_process([_cli(), *args], check=False, env=env)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def _local_instances(local: OrthancServer, study: SyntheticStudy) -> list[bytes]:
    files = []
    for path in study.files:
        sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        files.append(local.stored_file(sop))
    return files


def _check_reconciled(stored: bytes, original: Path) -> None:
    ds = dcmread(io.BytesIO(stored))
    foreign = dcmread(original)
    assert ds.PatientID == LOCAL_MRN
    assert ds.IssuerOfPatientID == "HOSPITAL"
    assert ds.SOPInstanceUID == foreign.SOPInstanceUID
    assert ds.StudyInstanceUID == foreign.StudyInstanceUID
    item = ds.OriginalAttributesSequence[-1]
    assert item.ModifiedAttributesSequence[0].PatientID == ALICE.id
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert ds.PixelData == foreign.PixelData


async def test_fetch_into_pacs_reconciles_every_study_and_reports_the_dead_partner(
    world: World,
) -> None:
    before = world.local.instance_count()
    code, out = await _run("fetch", "-c", str(world.config), *WHO, "--into", "pacs")
    assert code == 1, out  # C is down: the pull is incomplete, and says so
    assert "unreachable" in out and "C113" in out
    assert f"Local patient: MRN {LOCAL_MRN} (pacs-lookup)" in out
    assert "Import jobs" in out
    expected = sum(len(s.files) for s in world.studies)
    assert world.local.instance_count() == before + expected
    for study in world.studies:
        for stored, path in zip(_local_instances(world.local, study), study.files, strict=True):
            _check_reconciled(stored, path)
    jobs = JobStore.open(f"sqlite:///{world.database}")
    try:
        finished = jobs.list_jobs()
        assert len(finished) == 2
        for job in finished:
            assert job.state is JobState.COMPLETED, (job, jobs.events(job.id))
            assert job.verification is not None and job.verification.ok
            assert job.verification.found == job.verification.expected == job.total
    finally:
        jobs.close()

    # Asked again: the jobs exist and are complete; nothing is stored twice.
    code, out = await _run("fetch", "-c", str(world.config), *WHO, "--into", "pacs")
    assert world.local.instance_count() == before + expected
    assert out.count("completed") >= 2


@pytest.mark.parametrize("world", [120], indirect=True)
async def test_kill_during_import_then_resume_loses_and_duplicates_nothing(world: World) -> None:
    before = world.local.instance_count()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    args = [_cli(), "fetch", "-c", str(world.config), *WHO, "--into", "pacs"]
    process = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )
    stored_at_kill: set[str] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if world.database.exists():
                progress = _progress(world.database)
                if progress is not None and 0 < len(progress[0]) < progress[1]:
                    process.send_signal(signal.SIGKILL)
                    stored_at_kill = progress[0]
                    break
            await anyio.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
        await anyio.to_thread.run_sync(process.wait)
    assert stored_at_kill, "the initiator finished before it could be killed mid-transfer"

    jobs = JobStore.open(f"sqlite:///{world.database}")
    try:
        interrupted = [j for j in jobs.list_jobs() if j.state is JobState.RUNNING]
        assert interrupted, "a job should have been left running by the killed process"
    finally:
        jobs.close()

    code, out = await _run("jobs", "resume", "-c", str(world.config))
    assert code == 0, out

    expected = sum(len(s.files) for s in world.studies)
    assert world.local.instance_count() == before + expected
    jobs = JobStore.open(f"sqlite:///{world.database}")
    try:
        for job in jobs.list_jobs():
            assert job.state is JobState.COMPLETED, jobs.events(job.id)
            assert job.verification is not None and job.verification.ok
            for instance in jobs.instances(job.id):
                assert instance.state in (InstanceState.STORED, InstanceState.ALREADY_PRESENT)
                if instance.sop_instance_uid in stored_at_kill:
                    # stored before the kill: never retrieved again
                    assert instance.attempts == 1, instance
                else:
                    assert instance.attempts <= 2, instance
    finally:
        jobs.close()
    for study in world.studies:
        for stored, path in zip(_local_instances(world.local, study), study.files, strict=True):
            _check_reconciled(stored, path)


def _progress(database: Path) -> tuple[set[str], int] | None:
    """(SOP UIDs stored so far, total instances) of the biggest job, read from the store."""
    try:
        jobs = JobStore.open(f"sqlite:///{database}", migrate=False)
    except Exception:  # the initiator is still creating its database
        return None
    try:
        listed = jobs.list_jobs()
        if not listed:
            return None
        job = max(listed, key=lambda j: j.total)
        stored = {i.sop_instance_uid for i in jobs.instances(job.id, [InstanceState.STORED])}
        return stored, job.total
    except Exception:
        return None
    finally:
        jobs.close()


async def test_dry_run_shows_the_changes_per_attribute_and_stores_nothing(world: World) -> None:
    before = world.local.instance_count()
    code, out = await _run("fetch", "-c", str(world.config), *WHO, "--into", "pacs", "--dry-run")
    assert "study verdict: import" in out, out
    assert f"PatientID (0010,0020): '{ALICE.id}' -> '{LOCAL_MRN}'" in out
    assert "IssuerOfPatientID (0010,0021)" in out
    assert "OriginalAttributesSequence (0400,0561): + item COERCE" in out
    assert "nothing was stored and no job was created" in out
    assert world.local.instance_count() == before
    jobs = JobStore.open(f"sqlite:///{world.database}")
    try:
        assert jobs.list_jobs() == []
    finally:
        jobs.close()
    assert code == 1  # community C is down


async def test_a_uid_already_used_by_another_local_patient_holds_that_study(
    world: World, tmp_path: Path
) -> None:
    # The local PACS holds one of A's SOP Instance UIDs under somebody else.
    victim = world.studies[0].files[0]
    ds = dcmread(victim)
    ds.PatientID = "SOMEONE-ELSE"
    ds.PatientName = "OTHER^PERSON"
    impostor = tmp_path / "impostor.dcm"
    ds.save_as(impostor)
    world.local.upload([impostor])
    before = world.local.instance_count()

    code, out = await _run("fetch", "-c", str(world.config), *WHO, "--into", "pacs")
    assert code == 1, out
    jobs = JobStore.open(f"sqlite:///{world.database}")
    try:
        by_study = {j.request.study_instance_uid: j for j in jobs.list_jobs()}
        held = by_study[world.studies[0].study_instance_uid]
        assert held.state is JobState.HELD, jobs.events(held.id)
        assert held.hold_reason and "belongs to another local patient" in held.hold_reason
        done = by_study[world.studies[1].study_instance_uid]
        assert done.state is JobState.COMPLETED
    finally:
        jobs.close()
    # Only B's study arrived; nothing of A's was filed under either patient.
    assert world.local.instance_count() == before + len(world.studies[1].files)
    assert (
        dcmread(io.BytesIO(world.local.stored_file(ds.SOPInstanceUID))).PatientID == "SOMEONE-ELSE"
    )
