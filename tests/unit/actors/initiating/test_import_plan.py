"""Import jobs from pulled studies: local patient choice, settings snapshot, taking back
the jobs of a dead worker (pure logic plus a SQLite job store in a temporary folder)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebridge.actors.initiating.import_plan import (
    local_patient_from,
    resolve_local_patient,
    settings_from,
    snapshot,
)
from imagebridge.actors.initiating.jobs_runner import take_back
from imagebridge.actors.initiating.pull import Demographics
from imagebridge.importing.base import PatientCandidate, PatientDemographics
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import HierarchicDesignator
from imagebridge.model.import_job import JobRequest, JobState, KosInstance
from imagebridge.model.reconcile import (
    AccessionMapping,
    AccessionPolicy,
    LocalAccession,
    LocalPatient,
    PatientSource,
    ReconcileSettings,
    UidCollisionPolicy,
)
from imagebridge.store.jobs import JobStore

pytestmark = pytest.mark.anyio
ALICE = Demographics("Demo", "Alice", "19700101", "F")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTarget:
    """Only ``find_patients`` matters here (a logic test of the choice)."""

    def __init__(self, found: list[PatientCandidate]) -> None:
        self.found = found
        self.asked: list[PatientDemographics] = []

    async def find_patients(self, demographics: PatientDemographics) -> list[PatientCandidate]:
        self.asked.append(demographics)
        return self.found


def _candidate(mrn: str) -> PatientCandidate:
    return PatientCandidate(mrn, HierarchicDesignator("HOSP"), "DEMO^ALICE", "19700101", "F")


async def test_operator_mrn_wins_and_pacs_lookup_needs_exactly_one_patient() -> None:
    none, one, two = (
        FakeTarget([]),
        FakeTarget([_candidate("L1")]),
        FakeTarget([_candidate("L1"), _candidate("L2")]),
    )
    chosen = await resolve_local_patient(one, ALICE, mrn="OP-9", issuer="HOSP")  # type: ignore[arg-type]
    assert chosen.patient is not None and chosen.patient.mrn == "OP-9"
    assert chosen.patient.source is PatientSource.OPERATOR and one.asked == []
    found = await resolve_local_patient(one, ALICE)  # type: ignore[arg-type]
    assert found.patient is not None and found.patient.mrn == "L1"
    assert found.patient.source is PatientSource.PACS_LOOKUP
    assert one.asked == [PatientDemographics("Demo", "Alice", "19700101", "F")]
    for target, words in ((none, "no local patient"), (two, "2 local patients")):
        held = await resolve_local_patient(target, ALICE)  # type: ignore[arg-type]
        assert held.patient is None and words in held.reason


def _job_request(reconciliation: dict[str, object], study: str = "1.2.3") -> JobRequest:
    return JobRequest(
        source_community=HomeCommunityId("1.2.9"),
        source_community_name="partner",
        imaging_community=HomeCommunityId("1.2.9"),
        foreign_patient=PatientId("F-1", "2.25.1"),
        study_instance_uid=study,
        kos_document_id="1.2.3.4",
        kos_repository_id="1.2.3.5",
        target_name="pacs",
        target_kind="stow",
        reconciliation=reconciliation,
    )


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield store
    store.close()


def test_settings_and_local_patient_survive_the_job_store(jobs: JobStore) -> None:
    settings = ReconcileSettings(
        modifying_system="site X",
        accession=AccessionPolicy.MAP,
        accession_map=(AccessionMapping("A1", LocalAccession("L1")),),
        uid_collision=UidCollisionPolicy.REMAP,
    )
    patient = LocalPatient(
        mrn="L-7",
        source=PatientSource.PACS_LOOKUP,
        issuer=HierarchicDesignator("HOSP", "1.2.840.99", "ISO"),
        name="DEMO^ALICE",
        birth_date="19700101",
        sex="F",
    )
    job, created = jobs.create_job(_job_request(snapshot(settings, patient)))
    assert created
    stored = jobs.get_job(job.id)
    assert settings_from(stored) == settings
    assert local_patient_from(stored) == patient
    bare, _ = jobs.create_job(_job_request(snapshot(settings, None), study="1.2.4"))
    assert local_patient_from(jobs.get_job(bare.id)) is None


def test_take_back_releases_jobs_of_a_dead_local_worker_only(jobs: JobStore) -> None:
    ended = subprocess.run(["true"], check=True)  # a pid that has surely ended
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    host = os.uname().nodename
    ids = []
    for n, owner in enumerate(
        (f"{host}:{dead_pid.pid}", f"{host}:{os.getpid()}", f"other:{dead_pid.pid}")
    ):
        job, _ = jobs.create_job(_job_request({}, study=f"1.2.{n + 10}"))
        jobs.add_instances(
            job.id, [KosInstance(f"1.2.{n}.1", "1.2.0", "1.2.840.10008.5.1.4.1.1.2", "1.9")]
        )
        assert jobs.claim(job.id, owner, 3600) is not None
        ids.append(job.id)
    held, _ = jobs.create_job(_job_request({}, study="1.2.99"))
    jobs.hold(held.id, "review")
    assert ended.returncode == 0
    runnable = take_back(jobs, [])
    assert runnable == [ids[0]]  # live worker and other host keep their leases; held stays held
    assert jobs.get_job(ids[0]).state is JobState.PENDING
    assert jobs.get_job(ids[1]).state is JobState.RUNNING
    assert jobs.get_job(held.id).state is JobState.HELD
