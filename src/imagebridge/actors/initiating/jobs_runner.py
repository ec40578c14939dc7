"""Imaging Document Consumer, running import jobs for the command line (``fetch --into pacs``,
``jobs resume``).

:func:`run_jobs` opens what a run needs from the configuration (the job store,
the ``[import]`` target, the partner clients), runs the given jobs a few at a
time and closes everything.  :func:`take_back` (``jobs resume``) first takes back jobs whose
worker died: a ``running`` job whose lease owner is a process of this host
that no longer exists is released at once (no waiting for its lease to
expire); failed and partly failed jobs named explicitly are requeued with
their failed instances.  Held jobs wait for a reviewer and are not resumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import anyio

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.importer import ImportRunner, RunnerSettings
from imagebridge.actors.initiating.observing import process_observers
from imagebridge.app import open_store
from imagebridge.config import Config
from imagebridge.errors import ConfigError
from imagebridge.importing import open_target
from imagebridge.model.import_job import ImportJob, JobState
from imagebridge.security.xua_config import partner_security
from imagebridge.store.jobs import JobStore
from imagebridge.store.leases import dead_local_owner

log = logging.getLogger(__name__)

Progress = Callable[[ImportJob], None]
PARALLEL_JOBS = 4


def runner_settings(config: Config) -> RunnerSettings:
    if config.importing is None:
        raise ConfigError("no [import] table: where should the images go?")
    return RunnerSettings(
        batch_size=config.importing.batch_size,
        spool_dir=config.importing.spool_dir,
        lease_seconds=config.importing.workers.lease_seconds,
    )


async def run_jobs(
    config: Config, job_ids: Sequence[int], progress: Progress | None = None
) -> list[ImportJob]:
    """Run *job_ids* against the configured target; their final records, in order."""
    if config.importing is None:
        raise ConfigError("no [import] table: where should the images go?")
    store = open_store(config)
    jobs = JobStore(store.engine)
    target = open_target(config.importing.target)
    results: dict[int, ImportJob] = {}
    try:
        async with (
            process_observers(config, store.engine) as observers,
            PartnerClients(
                observer=observers.observer,
                tls_defaults=config.tls.defaults,
                security=partner_security(config.xua, config.community.home_community_id),
            ) as clients,
        ):
            runner = ImportRunner(
                jobs, clients, config.communities, target, runner_settings(config),
                progress=progress, audit=observers.audit,
            )  # fmt: skip
            limiter = anyio.CapacityLimiter(PARALLEL_JOBS)

            async def one(job_id: int) -> None:
                async with limiter:
                    results[job_id] = await runner.run(job_id)

            async with anyio.create_task_group() as tasks:
                for job_id in job_ids:
                    tasks.start_soon(one, job_id)
    finally:
        await target.aclose()
        store.close()
    return [results[i] for i in job_ids]


def take_back(jobs: JobStore, job_ids: Sequence[int]) -> list[int]:
    """The jobs to resume: the ones named (or every resumable one), made runnable again."""
    named = bool(job_ids)
    if named:
        candidates = [jobs.get_job(i) for i in job_ids]
    else:
        candidates = jobs.list_jobs(states=[JobState.PENDING, JobState.RUNNING], limit=10_000)
    runnable: list[int] = []
    for job in candidates:
        if job.state is JobState.RUNNING:
            if not dead_local_owner(job.lease_owner):
                continue  # a live worker (or another host) holds it; its lease decides
            jobs.release(job.id, job.lease_owner or "")
            jobs.add_event(job.id, "taken back: its worker process has ended")
        elif job.state in (JobState.FAILED, JobState.COMPLETED_WITH_ERRORS) and named:
            jobs.requeue(job.id, retry_failed=True)
        elif job.state in (JobState.HELD, JobState.CANCELLED, JobState.COMPLETED):
            continue
        runnable.append(job.id)
    return runnable
