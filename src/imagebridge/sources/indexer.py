"""Imaging Document Source, index synchronisation for archives reached over the network.

A PACS (DICOMweb or DIMSE) is walked study by study and its instances are
written to the store, so that patient discovery can find its patients.
Studies the archive no longer holds are dropped from the index.  A folder
archive has its own incremental scan (:meth:`FolderSource.sync`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import anyio.to_thread

from imagebridge.errors import PatientIdUnresolved, SourceUnavailable
from imagebridge.model.imaging import InstanceHeader
from imagebridge.sources.base import ImageSource
from imagebridge.store import Store

log = logging.getLogger(__name__)


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


async def keep_indexed(source: ImageSource, store: Store, interval: float) -> None:
    """Re-index *source* every *interval* seconds; an unreachable archive is retried later."""
    while True:
        try:
            report = await index_source(source, store)
            log.info("indexed repository %s: %s", source.repository_unique_id, report)
        except SourceUnavailable as exc:
            log.warning("repository %s not indexed: %s", source.repository_unique_id, exc.message)
        await anyio.sleep(interval)
