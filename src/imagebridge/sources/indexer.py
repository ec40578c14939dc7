"""Imaging Document Source, index synchronisation for archives reached over the network.

A PACS (DICOMweb or DIMSE) is walked study by study and its instances are
written to the store, so that patient discovery can find its patients.
Studies the archive no longer holds are dropped from the index.  A folder
archive has its own incremental scan (:meth:`FolderSource.sync`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from imagebridge.errors import ImageBridgeError, PatientIdUnresolved, SourceUnavailable
from imagebridge.model.imaging import InstanceHeader
from imagebridge.sources.base import ImageSource
from imagebridge.sources.folder import FolderSource
from imagebridge.store import Store
from imagebridge.store.leases import ServiceLeases, worker_name

log = logging.getLogger(__name__)

LEASE_ROUNDS = 3
"""A periodic duty's lease lasts this many rounds, so one late round does not hand it over."""
MIN_LEASE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What one full walk of an archive did."""

    instances: int
    studies: int
    removed_studies: int


async def index_source(source: ImageSource, store: Store, *, batch_size: int = 500) -> IndexReport:
    """Walk *source* completely and bring its part of the index up to date."""
    repository = source.repository_unique_id
    batch: list[InstanceHeader] = []
    seen_studies: set[str] = set()
    count = 0
    skipped = 0
    async for header in source.iter_instances():
        try:
            store.patient_id_of(header)
        except PatientIdUnresolved:
            skipped += 1
            continue
        batch.append(header)
        seen_studies.add(header.study.study_instance_uid)
        if len(batch) >= batch_size:
            await anyio.to_thread.run_sync(store.upsert_instances, repository, batch)
            count += len(batch)
            batch = []
    if batch:
        await anyio.to_thread.run_sync(store.upsert_instances, repository, batch)
        count += len(batch)
    held = await anyio.to_thread.run_sync(store.repository_study_uids, repository)
    gone = [uid for uid in held if uid not in seen_studies]
    for uid in gone:
        await anyio.to_thread.run_sync(store.replace_study, repository, uid, [])
    if skipped:
        log.warning(
            "repository %s: %d instance(s) without a usable patient id", repository, skipped
        )
    return IndexReport(count, len(seen_studies), len(gone))


async def index_once(source: ImageSource, store: Store) -> None:
    """One :func:`index_source` pass, logged; an unreachable archive is logged and left."""
    try:
        report = await index_source(source, store)
        log.info("indexed repository %s: %s", source.repository_unique_id, report)
    except SourceUnavailable as exc:
        log.warning("repository %s not indexed: %s", source.repository_unique_id, exc.message)


async def sync_once(source: FolderSource) -> None:
    """One incremental scan of a folder archive; a failure is logged and tried next round."""
    try:
        await source.sync()
    except ImageBridgeError as exc:
        log.warning("folder source %s: sync failed: %s", source.repository_unique_id, exc.message)


async def while_leading(
    leases: ServiceLeases,
    name: str,
    interval: float,
    duty: Callable[[], Awaitable[None]],
    *,
    owner: str | None = None,
    first_wait: bool = True,
) -> None:
    """Run *duty* every *interval* seconds while this worker holds the service lease *name*.

    Workers sharing a database take turns: the one holding the lease does the
    duty (an archive is scanned by one worker, not by all), the others check
    every round and take over when its lease expires (it died or hung).
    The lease lasts :data:`LEASE_ROUNDS` rounds (at least a minute) and is
    renewed before every run of *duty*.  Runs until cancelled.
    """
    if interval <= 0:
        raise ValueError(f"interval must be > 0, not {interval}")
    me = owner or worker_name()
    seconds = max(interval * LEASE_ROUNDS, MIN_LEASE_SECONDS)
    try:
        if first_wait:
            await anyio.sleep(interval)
        while True:
            try:
                leading = await anyio.to_thread.run_sync(leases.hold, name, me, seconds)
            except ImageBridgeError as exc:
                log.warning("%s: the lease could not be checked: %s", name, exc.message)
                leading = False
            if leading:
                await duty()
            await anyio.sleep(interval)
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(leases.release, name, me)
            except ImageBridgeError:
                log.debug("%s: lease not released", name, exc_info=True)
