"""``imagebridge jobs list|show|cancel|resume`` as an operator runs them: a real process.

The jobs are made through :class:`~imagebridge.store.jobs.JobStore` in a
SQLite file the configuration names; the installed console script reads
and changes them, and the test checks exit statuses, output and the store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.import_job import (
    InstanceState,
    InstanceUpdate,
    JobRequest,
    JobState,
    KosInstance,
)
from imagebridge.store import JobStore

COMMUNITY = HomeCommunityId("1.3.6.1.4.1.21367.13.70.101")
PATIENT = PatientId("FOREIGN-7", "1.3.6.1.4.1.21367.13.20.2000")
STUDY = "1.2.826.0.1.3680043.8.498.77"


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        pytest.fail("the imagebridge console script is not installed in this environment")
    return [found]


def _run(*args: str) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    done = subprocess.run(
        [*_cli(), "jobs", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, JobStore, dict[str, int]]:
    database_url = f"sqlite:///{tmp_path / 'imagebridge.db'}"
    config = tmp_path / "imagebridge.toml"
    config.write_text(
        "\n".join(
            [
                "[community]",
                'home_community_id = "1.3.6.1.4.1.21367.13.70.1"',
                'name = "Us"',
                "",
                "[store]",
                f'database_url = "{database_url}"',
                "",
            ]
        )
    )
    jobs = JobStore.open(database_url)
    ids = {
        "done": _make(jobs, STUDY + ".1", 3, finish=True),
        "running": _make(jobs, STUDY + ".2", 4, finish=False),
        "pending": _make(jobs, STUDY + ".3", 2, claim=False),
    }
    return config, jobs, ids


def _make(
    jobs: JobStore, study: str, count: int, *, claim: bool = True, finish: bool = False
) -> int:
    request = JobRequest(
        source_community=COMMUNITY,
        source_community_name="Community A",
        imaging_community=COMMUNITY,
        foreign_patient=PATIENT,
        study_instance_uid=study,
        kos_document_id=study + ".99",
        kos_repository_id="1.3.6.1.4.1.21367.13.71.101",
        target_name="pacs",
        target_kind="dimse",
    )
    job, _ = jobs.create_job(request)
    uids = [f"{study}.1.{n}" for n in range(1, count + 1)]
    jobs.add_instances(
        job.id, [KosInstance(u, study + ".1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3") for u in uids]
    )
    if claim:
        jobs.claim(job.id, "worker-a", 600)
        stored = [InstanceUpdate(sop_instance_uid=u, state=InstanceState.STORED) for u in uids[:-1]]
        failed = InstanceUpdate(
            sop_instance_uid=uids[-1],
            state=InstanceState.FAILED,
            error_code="0xA700",
            error_text="target out of resources",
            attempted=True,
        )
        jobs.mark_instances(job.id, "worker-a", [*stored, *([failed] if finish else [])])
        if finish:
            jobs.record_verification(job.id, expected=count, found=count - 1)
            jobs.finish(job.id, "worker-a")
    return job.id


def test_jobs_list_shows_every_job_and_filters_by_state(
    setup: tuple[Path, JobStore, dict[str, int]],
) -> None:
    config, _, _ = setup
    status, out = _run("list", "--config", str(config))
    assert status == 0, out
    assert "Import jobs (3)" in out
    for study in (STUDY + ".1", STUDY + ".2", STUDY + ".3"):
        assert study in out
    assert "completed_with_errors" in out and "running" in out and "pending" in out
    assert "2/3" in out and "3/4" in out and "0/2" in out
    status, out = _run("list", "-c", str(config), "--state", "pending", "--state", "running")
    assert status == 0, out
    assert "Import jobs (2)" in out and STUDY + ".1" not in out
    status, out = _run("list", "-c", str(config), "--limit", "1")
    assert status == 0 and "Import jobs (1)" in out
    status, out = _run("list", "-c", str(config), "--state", "bogus")
    assert status == 2


def test_jobs_show_details_counts_errors_verification_and_events(
    setup: tuple[Path, JobStore, dict[str, int]],
) -> None:
    config, _, ids = setup
    status, out = _run("show", str(ids["done"]), "--config", str(config))
    assert status == 0, out
    assert f"Import job {ids['done']}" in out
    assert "completed_with_errors" in out and STUDY + ".1" in out
    assert "Community A (1.3.6.1.4.1.21367.13.70.101)" in out
    assert "2 stored of 3, 1 with errors" in out
    assert "2 of 3 found, MISMATCH" in out
    assert "0xA700 target out of resources" in out  # the failed instance and why
    assert "claimed by worker-a (attempt 1)" in out and "finished: completed_with_errors" in out
    status, out = _run("show", "999", "-c", str(config))
    assert status == 1 and "no import job 999" in out


def test_jobs_cancel_stops_running_and_pending_jobs_but_not_completed_ones(
    setup: tuple[Path, JobStore, dict[str, int]],
) -> None:
    config, jobs, ids = setup
    status, out = _run("cancel", str(ids["running"]), "-c", str(config))
    assert status == 0 and "runner stops at the next batch" in out, out
    assert jobs.is_cancelled(ids["running"])
    status, out = _run("cancel", str(ids["pending"]), "-c", str(config))
    assert status == 0 and f"job {ids['pending']} cancelled" in out
    status, out = _run("cancel", str(ids["pending"]), "-c", str(config))
    assert status == 0 and "already cancelled" in out
    status, out = _run("cancel", str(ids["done"]), "-c", str(config))
    assert status == 1 and "cannot be cancelled" in out
    assert jobs.get_job(ids["done"]).state is JobState.COMPLETED_WITH_ERRORS
    jobs.close()


def test_jobs_resume_is_wired_to_the_runner(setup: tuple[Path, JobStore, dict[str, int]]) -> None:
    config, _, ids = setup
    status, out = _run("resume", "--help")
    assert status == 0 and "Resume jobs" in out
    status, out = _run("resume", str(ids["pending"]), "-c", str(config))
    assert status == 2 and "no [import] table" in out  # the runner needs a target


def test_bad_configuration_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    status, out = _run("list", "-c", str(missing))
    assert status == 2 and "configuration error" in out
