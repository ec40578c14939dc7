"""Imaging Document Consumer, durable import jobs: creation, leases, progress, outcome.

A SQLite file in a temporary folder, a clock the tests move by hand (lease
expiry without sleeping), and real threads for the concurrent claims.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.dialects import postgresql, sqlite

from imagebridge.dicom.synthetic import DEMO_PATIENTS, study_headers
from imagebridge.errors import JobCancelled, JobLeaseLost, JobNotFound, JobStateError
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.import_job import (
    InstanceState,
    InstanceUpdate,
    JobRequest,
    JobState,
    KosInstance,
)
from imagebridge.store import JobStore, Store, database, job_writes
from imagebridge.store import store as store_module

SOURCE = HomeCommunityId("1.3.6.1.4.1.21367.13.70.101")
PATIENT = PatientId("FOREIGN-1", "1.3.6.1.4.1.21367.13.20.2000")
STUDY = "1.2.826.0.1.3680043.8.498.1"
LEASE = 30.0


class Clock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(database_url: str, clock: Clock) -> Iterator[JobStore]:
    opened = JobStore.open(database_url, clock=clock)
    yield opened
    opened.close()


def _request(study: str = STUDY, target: str = "pacs", **changes: object) -> JobRequest:
    values: dict[str, object] = {
        "source_community": SOURCE,
        "source_community_name": "Community A",
        "imaging_community": SOURCE,
        "foreign_patient": PATIENT,
        "study_instance_uid": study,
        "kos_document_id": study + ".99",
        "kos_repository_id": "1.3.6.1.4.1.21367.13.71.101",
        "target_name": target,
        "target_kind": "dicomweb",
        "reconciliation": {"patient_id": "replace", "keep_original": True},
        **changes,
    }
    return JobRequest(**values)  # type: ignore[arg-type]


def _instances(count: int, study: str = STUDY) -> list[KosInstance]:
    return [
        KosInstance(f"{study}.1.{n}", f"{study}.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")
        for n in range(1, count + 1)
    ]


def _job_with(jobs: JobStore, count: int, **changes: object) -> int:
    job, _ = jobs.create_job(_request(**changes))
    jobs.add_instances(job.id, _instances(count, job.request.study_instance_uid))
    return job.id


def _mark(uids: list[str], state: InstanceState, **fields: object) -> list[InstanceUpdate]:
    return [InstanceUpdate(sop_instance_uid=u, state=state, **fields) for u in uids]  # type: ignore[arg-type]


def test_create_job_is_idempotent_on_study_patient_and_target(jobs: JobStore, clock: Clock) -> None:
    job, created = jobs.create_job(_request())
    assert created and job.state is JobState.PENDING and job.total == 0
    assert job.request == _request()
    assert job.created_at == clock.now and job.created_at.tzinfo is UTC
    again, created_again = jobs.create_job(_request(kos_document_id="1.2.3.other"))
    assert not created_again and again.id == job.id
    assert again.request.kos_document_id == STUDY + ".99"  # the existing job, unchanged
    other_target, created_other = jobs.create_job(_request(target="folder"))
    assert created_other and other_target.id != job.id
    other_patient, _ = jobs.create_job(
        _request(foreign_patient=PatientId("F-2", PATIENT.assigning_authority))
    )
    assert other_patient.id not in (job.id, other_target.id)
    assert [e.message for e in jobs.events(job.id)] == ["created for target pacs"]


def test_concurrent_creates_make_one_job(database_url: str, jobs: JobStore) -> None:
    stores = [JobStore.open(database_url, migrate=False) for _ in range(6)]
    barrier = threading.Barrier(len(stores))

    def create(store: JobStore) -> tuple[int, bool]:
        barrier.wait()
        job, created = store.create_job(_request())
        return job.id, created

    with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(create, stores))
    for store in stores:
        store.close()
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_add_instances_is_idempotent_and_keeps_progress(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 5)
    claimed = jobs.claim(job_id, "worker-a", LEASE)
    assert claimed is not None
    jobs.mark_instances(job_id, "worker-a", _mark([f"{STUDY}.1.1"], InstanceState.STORED))
    assert jobs.add_instances(job_id, _instances(7)) == 2  # the KOS grew by two
    job = jobs.get_job(job_id)
    assert job.total == 7 and job.counts == {InstanceState.STORED: 1, InstanceState.PENDING: 6}


def test_claim_takes_a_lease_other_owners_must_respect(jobs: JobStore, clock: Clock) -> None:
    job_id = _job_with(jobs, 3)
    job = jobs.claim_next("worker-a", LEASE)
    assert job is not None and job.id == job_id
    assert (job.state, job.lease_owner, job.attempts) == (JobState.RUNNING, "worker-a", 1)
    assert job.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert jobs.claim_next("worker-b", LEASE) is None
    assert jobs.claim(job_id, "worker-b", LEASE) is None
    clock.advance(20)
    jobs.heartbeat(job_id, "worker-a", LEASE)  # renewed until t+50
    clock.advance(20)
    assert jobs.claim_next("worker-b", LEASE) is None
    renewed = jobs.claim(job_id, "worker-a", LEASE)  # the owner may re-claim its own job
    assert renewed is not None and renewed.lease_owner == "worker-a"


def test_expired_lease_is_reclaimed_and_the_old_owner_is_fenced_off(
    jobs: JobStore, clock: Clock
) -> None:
    job_id = _job_with(jobs, 3)
    assert jobs.claim_next("worker-a", LEASE) is not None
    clock.advance(LEASE + 1)  # worker-a crashed: no heartbeat
    taken = jobs.claim_next("worker-b", LEASE)
    assert taken is not None and taken.id == job_id
    assert (taken.lease_owner, taken.attempts) == ("worker-b", 2)
    with pytest.raises(JobLeaseLost):
        jobs.heartbeat(job_id, "worker-a", LEASE)
    with pytest.raises(JobLeaseLost):
        jobs.mark_instances(job_id, "worker-a", _mark([f"{STUDY}.1.1"], InstanceState.STORED))
    with pytest.raises(JobLeaseLost):
        jobs.finish(job_id, "worker-a")
    assert jobs.get_job(job_id).counts == {InstanceState.PENDING: 3}
    messages = [e.message for e in jobs.events(job_id)]
    assert messages[-2:] == ["claimed by worker-a (attempt 1)", "claimed by worker-b (attempt 2)"]


def test_concurrent_claimers_never_share_a_job(database_url: str, jobs: JobStore) -> None:
    job_ids = {_job_with(jobs, 1, study=f"{STUDY}.{n}") for n in range(12)}
    stores = [JobStore.open(database_url, migrate=False) for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def claim_all(index: int) -> list[int]:
        barrier.wait()
        mine = []
        while (job := stores[index].claim_next(f"worker-{index}", 300)) is not None:
            mine.append(job.id)
        return mine

    with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
        claimed = [j for found in pool.map(claim_all, range(len(stores))) for j in found]
    for store in stores:
        store.close()
    assert sorted(claimed) == sorted(job_ids)  # every job once, none twice
    assert {j.attempts for j in jobs.list_jobs()} == {1}


def test_missing_instances_after_partial_progress(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 10)
    jobs.claim(job_id, "worker-a", LEASE)
    uids = [f"{STUDY}.1.{n}" for n in range(1, 11)]
    updates = [
        *_mark(uids[0:3], InstanceState.STORED, bytes=1000, attempted=True),
        *_mark(uids[3:5], InstanceState.ALREADY_PRESENT),
        *_mark(uids[5:6], InstanceState.FAILED, error_code="0xA700", error_text="out of resources"),
        *_mark(uids[6:7], InstanceState.RETRIEVED, bytes=2000, attempted=True),
        *_mark(uids[7:8], InstanceState.HELD, error_text="patient name differs"),
    ]
    assert jobs.mark_instances(job_id, "worker-a", updates, batch=3) == 8
    # a crash here: a new worker retrieves only what is missing
    missing = jobs.missing_instances(job_id)
    assert {m.sop_instance_uid: m.state for m in missing} == {
        uids[6]: InstanceState.RETRIEVED,
        uids[8]: InstanceState.PENDING,
        uids[9]: InstanceState.PENDING,
    }
    retrieved = next(m for m in missing if m.state is InstanceState.RETRIEVED)
    assert (retrieved.attempts, retrieved.bytes) == (1, 2000)
    jobs.mark_instances(job_id, "worker-a", _mark(uids[6:7], InstanceState.STORED))
    stored = {i.sop_instance_uid: i for i in jobs.instances(job_id, [InstanceState.STORED])}
    assert (stored[uids[6]].bytes, stored[uids[6]].attempts) == (2000, 1)  # bytes kept
    (failed,) = jobs.instances(job_id, [InstanceState.FAILED])
    assert (failed.error_code, failed.error_text) == ("0xA700", "out of resources")
    job = jobs.get_job(job_id)
    assert (job.total, job.done, job.errors, job.outstanding) == (10, 6, 2, 2)


def test_an_update_for_an_unlisted_instance_is_refused(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 2)
    jobs.claim(job_id, "worker-a", LEASE)
    updates = _mark([f"{STUDY}.1.1", "9.9.9"], InstanceState.STORED)
    with pytest.raises(JobStateError, match="not listed"):
        jobs.mark_instances(job_id, "worker-a", updates)
    assert jobs.get_job(job_id).counts == {InstanceState.PENDING: 2}  # the batch rolled back


def test_finish_is_refused_while_instances_are_outstanding(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 3)
    jobs.claim(job_id, "worker-a", LEASE)
    uids = [i.sop_instance_uid for i in _instances(3)]
    jobs.mark_instances(job_id, "worker-a", _mark(uids[:2], InstanceState.STORED))
    jobs.mark_instances(job_id, "worker-a", _mark(uids[2:], InstanceState.RETRIEVED))
    with pytest.raises(JobStateError, match="1 instances outstanding"):
        jobs.finish(job_id, "worker-a")
    assert jobs.get_job(job_id).state is JobState.RUNNING
    jobs.mark_instances(job_id, "worker-a", _mark(uids[2:], InstanceState.ALREADY_PRESENT))
    assert jobs.finish(job_id, "worker-a") is JobState.COMPLETED
    job = jobs.get_job(job_id)
    assert job.state is JobState.COMPLETED and job.lease_owner is None
    assert job.finished_at is not None
    assert jobs.claim_next("worker-b", LEASE) is None


def test_failed_or_held_instances_complete_with_errors(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 3)
    jobs.claim(job_id, "worker-a", LEASE)
    uids = [i.sop_instance_uid for i in _instances(3)]
    jobs.mark_instances(job_id, "worker-a", _mark(uids[:2], InstanceState.STORED))
    jobs.mark_instances(
        job_id, "worker-a", _mark(uids[2:], InstanceState.FAILED, error_text="refused")
    )
    assert jobs.finish(job_id, "worker-a") is JobState.COMPLETED_WITH_ERRORS


def test_verification_is_recorded_and_a_mismatch_is_an_error(jobs: JobStore, clock: Clock) -> None:
    job_id = _job_with(jobs, 2)
    jobs.claim(job_id, "worker-a", LEASE)
    uids = [i.sop_instance_uid for i in _instances(2)]
    jobs.mark_instances(job_id, "worker-a", _mark(uids, InstanceState.STORED))
    result = jobs.record_verification(job_id, expected=2, found=1)
    assert (result.expected, result.found, result.ok, result.checked_at) == (2, 1, False, clock.now)
    assert jobs.get_job(job_id).verification == result
    assert jobs.events(job_id)[-1].message == "verified: 1 of 2 found (MISMATCH)"
    assert jobs.finish(job_id, "worker-a") is JobState.COMPLETED_WITH_ERRORS

    good = _job_with(jobs, 1, study=STUDY + ".2")
    jobs.claim(good, "worker-a", LEASE)
    jobs.mark_instances(good, "worker-a", _mark([f"{STUDY}.2.1.1"], InstanceState.STORED))
    assert jobs.record_verification(good, expected=1, found=1).ok
    assert jobs.finish(good, "worker-a") is JobState.COMPLETED


def test_cancel_stops_a_running_job_between_batches(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 6)
    jobs.claim(job_id, "worker-a", LEASE)
    uids = [i.sop_instance_uid for i in _instances(6)]

    def updates() -> Iterator[InstanceUpdate]:
        for n, uid in enumerate(uids):
            if n == 2:  # the operator cancels while the first batch is written
                jobs.cancel(job_id)
            yield InstanceUpdate(sop_instance_uid=uid, state=InstanceState.STORED)

    with pytest.raises(JobCancelled):
        jobs.mark_instances(job_id, "worker-a", updates(), batch=2)
    assert jobs.is_cancelled(job_id)
    job = jobs.get_job(job_id)
    assert job.state is JobState.CANCELLED and job.lease_owner is None
    assert job.counts == {InstanceState.STORED: 2, InstanceState.PENDING: 4}
    with pytest.raises(JobCancelled):
        jobs.heartbeat(job_id, "worker-a", LEASE)
    assert jobs.claim_next("worker-b", LEASE) is None
    assert jobs.cancel(job_id).state is JobState.CANCELLED  # twice is harmless


def test_cancel_pending_job_and_refuse_completed(jobs: JobStore) -> None:
    pending = _job_with(jobs, 1)
    assert jobs.cancel(pending).state is JobState.CANCELLED
    done = _job_with(jobs, 1, study=STUDY + ".2")
    jobs.claim(done, "worker-a", LEASE)
    jobs.mark_instances(done, "worker-a", _mark([f"{STUDY}.2.1.1"], InstanceState.STORED))
    jobs.finish(done, "worker-a")
    with pytest.raises(JobStateError, match="completed and cannot be cancelled"):
        jobs.cancel(done)
    with pytest.raises(JobStateError):
        jobs.add_instances(done, _instances(2))


def test_hold_then_requeue_retries_failed_instances(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 3)
    jobs.claim(job_id, "worker-a", LEASE)
    uids = [i.sop_instance_uid for i in _instances(3)]
    jobs.mark_instances(job_id, "worker-a", _mark(uids[:1], InstanceState.STORED))
    jobs.mark_instances(job_id, "worker-a", _mark(uids[1:2], InstanceState.FAILED))
    jobs.hold(job_id, "Patient Name differs: DOE^JANE / DOE^J", owner="worker-a")
    held = jobs.get_job(job_id)
    assert held.state is JobState.HELD and held.lease_owner is None
    assert held.hold_reason == "Patient Name differs: DOE^JANE / DOE^J"
    assert jobs.claim_next("worker-b", LEASE) is None
    requeued = jobs.requeue(job_id)
    assert requeued.state is JobState.PENDING and requeued.hold_reason is None
    assert requeued.counts == {InstanceState.STORED: 1, InstanceState.PENDING: 2}
    again = jobs.claim_next("worker-b", LEASE)
    assert again is not None and again.id == job_id and again.attempts == 2
    with pytest.raises(JobStateError, match="running and cannot be requeued"):
        jobs.requeue(job_id)


def test_fail_and_release(jobs: JobStore) -> None:
    job_id = _job_with(jobs, 1)
    jobs.claim(job_id, "worker-a", LEASE)
    jobs.release(job_id, "worker-a")
    assert jobs.get_job(job_id).state is JobState.PENDING
    jobs.claim(job_id, "worker-a", LEASE)
    jobs.fail(job_id, "worker-a", "KOS cannot be retrieved: XDSUnknownRepositoryId")
    job = jobs.get_job(job_id)
    assert job.state is JobState.FAILED and job.last_error is not None
    assert jobs.requeue(job_id).state is JobState.PENDING


def test_list_jobs_filters_by_state_and_counts_instances(jobs: JobStore, clock: Clock) -> None:
    first = _job_with(jobs, 2)
    clock.advance(1)
    second = _job_with(jobs, 3, study=STUDY + ".2")
    clock.advance(1)
    jobs.claim(first, "worker-a", LEASE)
    listed = jobs.list_jobs()
    assert [j.id for j in listed] == [first, second]  # most recently updated first
    assert [j.total for j in listed] == [2, 3]
    assert [j.id for j in jobs.list_jobs(states=[JobState.PENDING])] == [second]
    assert [j.id for j in jobs.list_jobs(study_instance_uid=STUDY)] == [first]
    assert len(jobs.list_jobs(limit=1)) == 1


def test_unknown_job_is_job_not_found(jobs: JobStore) -> None:
    with pytest.raises(JobNotFound):
        jobs.get_job(404)
    with pytest.raises(JobNotFound):
        jobs.claim(404, "worker-a", LEASE)
    with pytest.raises(JobNotFound):
        jobs.cancel(404)
    with pytest.raises(JobNotFound):
        jobs.record_verification(404, 1, 1)


def test_claim_statement_skips_locked_rows_on_postgresql() -> None:
    statement = job_writes.next_claimable(datetime(2025, 1, 1, tzinfo=UTC))
    assert "FOR UPDATE SKIP LOCKED" in str(statement.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE" not in str(statement.compile(dialect=sqlite.dialect()))


def test_database_at_0001_upgrades_to_the_head_keeping_its_data(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url)
    config = database.alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    assert database.current_revision(engine) == "0001"
    assert "import_jobs" not in inspect(engine).get_table_names()
    # The version of 0001 wrote the index without the shared generation row (0004).
    monkeypatch.setattr(store_module, "_BUMP_GENERATION", text("SELECT 1"))
    old = Store.open(database_url, migrate=False)
    headers = study_headers(DEMO_PATIENTS[0], modality="CT", seed=7)
    old.upsert_instances("1.2.3", headers)
    old.close()
    engine.dispose()

    monkeypatch.undo()
    upgraded = Store.open(database_url)  # migrates to the head
    try:
        assert database.current_revision(upgraded.engine) == database.head_revision()
        assert upgraded.repository_counts("1.2.3").instances == len(headers)
        assert upgraded.study_instances(headers[0].study.study_instance_uid) == headers
        jobs = JobStore(upgraded.engine)
        job, created = jobs.create_job(_request())
        assert created and jobs.add_instances(job.id, _instances(2)) == 2
    finally:
        upgraded.close()
