"""Imaging Document Source, on-demand KOS manifests and their DocumentEntries (guide 10.4).

The catalog answers "which imaging manifests does this patient have here?".
For each repository it makes sure the store's index is current (a folder
source keeps its own index; a PACS is asked live which studies it holds and
changed studies are re-read), builds the KOS of every study version that has
none yet (deterministic UIDs; the first build's content time is kept so the
bytes, size and hash stay the same), and maps it to its XDS DocumentEntry.

A repository that cannot be reached becomes an ``XDSRegistryError`` for that
repository; the other repositories still answer (PartialSuccess).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import anyio.to_thread

from imagebridge.dicom.kos import build_kos, manifest_series_uid, manifest_uid
from imagebridge.dicom.metadata import ManifestMetadataSettings, document_entry_for_manifest
from imagebridge.errors import SourceUnavailable
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.index import ManifestRecord, StudyRecord
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.xds import DocumentEntry
from imagebridge.sources.base import ImageSource
from imagebridge.store import Store
from imagebridge.wire.xds import vocabulary as v

log = logging.getLogger(__name__)

_ENTRY_CACHE_SIZE = 20_000
_STUDIES_CACHE_SIZE = 5_000


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    """What the catalog needs from the configuration."""

    home: HomeCommunityId
    metadata: ManifestMetadataSettings
    retrieve_ae_titles: Mapping[str, str]
    manufacturer: str = "imagebridge"
    institution_name: str = ""


@dataclass(frozen=True, slots=True)
class PatientManifests:
    """The DocumentEntries of one patient, and the repositories that failed."""

    entries: tuple[DocumentEntry, ...]
    errors: tuple[RegistryError, ...]


class ManifestCatalog:
    """Builds and caches KOS manifests and DocumentEntries from the index and the sources."""

    def __init__(
        self,
        store: Store,
        sources: Mapping[str, ImageSource],
        settings: CatalogSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._sources = sources
        self._settings = settings
        self._clock = clock
        # DocumentEntry per study version (repository, study UID, fingerprint): a query
        # for a patient whose studies did not change touches the store once.
        self._entries: OrderedDict[tuple[str, str, str], DocumentEntry] = OrderedDict()
        self._by_entry_uuid: dict[str, str] = {}
        self._studies_cache: OrderedDict[PatientId, tuple[int, list[StudyRecord]]] = OrderedDict()
        self._build_lock = anyio.Lock()

    @property
    def repositories(self) -> tuple[str, ...]:
        return tuple(self._sources)

    async def for_patient(self, patient_id: PatientId) -> PatientManifests:
        """Every manifest DocumentEntry of *patient_id* (refreshing live sources first)."""
        errors = [await self._refresh(repo, src, patient_id) for repo, src in self._live_sources()]
        studies = await self._studies(patient_id)
        entries = [await self.entry_for(study) for study in studies]
        return PatientManifests(tuple(entries), tuple(e for e in errors if e is not None))

    async def _studies(self, patient_id: PatientId) -> list[StudyRecord]:
        """The patient's studies from the index, reused while the index has not changed."""
        generation = self._store.generation
        cached = self._studies_cache.get(patient_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        studies = await anyio.to_thread.run_sync(
            lambda: self._store.studies_for_patient(patient_id, tuple(self._sources))
        )
        self._studies_cache[patient_id] = (generation, studies)
        while len(self._studies_cache) > _STUDIES_CACHE_SIZE:
            self._studies_cache.popitem(last=False)
        return studies

    def _live_sources(self) -> list[tuple[str, ImageSource]]:
        return [(r, s) for r, s in self._sources.items() if s.kind != "folder"]

    async def _refresh(
        self, repository: str, source: ImageSource, patient_id: PatientId
    ) -> RegistryError | None:
        """Bring the index of one PACS up to date for one patient."""
        try:
            versions = await source.patient_studies(patient_id.id)
            known = {
                s.study_instance_uid: s
                for s in await anyio.to_thread.run_sync(
                    lambda: self._store.studies_for_patient(patient_id, (repository,))
                )
            }
            for version in versions:
                held = known.pop(version.study_instance_uid, None)
                if held is not None and held.number_of_instances == version.number_of_instances:
                    continue
                headers = await source.study_instances(version.study_instance_uid)
                await anyio.to_thread.run_sync(
                    self._store.replace_study, repository, version.study_instance_uid, headers
                )
            for gone in known:
                await anyio.to_thread.run_sync(self._store.replace_study, repository, gone, [])
        except SourceUnavailable as exc:
            log.warning("repository %s unavailable: %s", repository, exc.message)
            return RegistryError(
                v.XDS_REGISTRY_ERROR,
                f"The image archive of repository {repository} is not reachable; "
                "its studies could not be listed.",
                Severity.ERROR,
                self._settings.home.urn,
            )
        return None

    async def manifest_for(self, study: StudyRecord) -> ManifestRecord:
        """The KOS of the current version of *study*, built now if it has none."""
        found = await anyio.to_thread.run_sync(
            self._store.manifest_for_study, study.study_instance_uid, study.repository_unique_id
        )
        if found is not None and found.fingerprint == study.fingerprint:
            return found
        async with self._build_lock:
            return await anyio.to_thread.run_sync(self._build, study)

    def _build(self, study: StudyRecord) -> ManifestRecord:
        store, repo, uid = self._store, study.repository_unique_id, study.study_instance_uid
        found = store.manifest_for_study(uid, repo)
        if found is not None and found.fingerprint == study.fingerprint:
            return found
        instances = store.study_instances(uid, repo)
        kos_uid = manifest_uid(uid, instances, repository_unique_id=repo)
        previous = store.manifest_by_uid(kos_uid)
        content = previous.content_datetime if previous is not None else self._clock()
        series_uid = manifest_series_uid(uid, instances, repository_unique_id=repo)
        kos = build_kos(
            instances,
            sop_instance_uid=kos_uid,
            series_instance_uid=series_uid,
            retrieve_location_uid=repo,
            retrieve_ae_title=self._settings.retrieve_ae_titles.get(repo, "IMAGEBRIDGE"),
            content_datetime=content,
            manufacturer=self._settings.manufacturer,
            institution_name=self._settings.institution_name,
        )
        record = ManifestRecord.of_document(
            repository_unique_id=repo,
            study_instance_uid=uid,
            sop_instance_uid=kos_uid,
            series_instance_uid=series_uid,
            content_datetime=content,
            fingerprint=study.fingerprint,
            document=kos,
        )
        log.debug("built KOS %s for study %s (%d instances)", kos_uid, uid, len(instances))
        return store.save_manifest(record)

    async def entry_for(self, study: StudyRecord) -> DocumentEntry:
        """The DocumentEntry of *study*'s current manifest (cached per study version)."""
        key = (study.repository_unique_id, study.study_instance_uid, study.fingerprint)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        manifest = await self.manifest_for(study)
        instances = await anyio.to_thread.run_sync(
            self._store.study_instances, study.study_instance_uid, study.repository_unique_id
        )
        entry = document_entry_for_manifest(
            instances,
            manifest.document,
            patient_id=study.patient_id,
            repository_unique_id=study.repository_unique_id,
            home=self._settings.home,
            settings=self._settings.metadata,
        )
        self._remember(key, entry)
        return entry

    def _remember(self, key: tuple[str, str, str], entry: DocumentEntry) -> None:
        self._entries[key] = entry
        self._by_entry_uuid[entry.entry_uuid] = entry.unique_id
        while len(self._entries) > _ENTRY_CACHE_SIZE:
            _, old = self._entries.popitem(last=False)
            self._by_entry_uuid.pop(old.entry_uuid, None)

    async def entries_by_unique_ids(self, kos_uids: Sequence[str]) -> list[DocumentEntry]:
        """The DocumentEntries of the manifests we built among *kos_uids*, in order.

        The look-ups run in one worker thread (one hop, not two per id), so a
        GetDocuments does not queue once per id behind other requests.
        """
        studies = await anyio.to_thread.run_sync(self._current_studies, list(kos_uids))
        return [await self.entry_for(study) for study in studies]

    def _current_studies(self, kos_uids: list[str]) -> list[StudyRecord]:
        found = []
        for kos_uid in kos_uids:
            manifest = self._store.manifest_by_uid(kos_uid)
            if manifest is None:
                continue
            study = self._store.study(manifest.study_instance_uid, manifest.repository_unique_id)
            if study is not None and study.fingerprint == manifest.fingerprint:
                found.append(study)  # else the study changed: the manifest is no longer offered
        return found

    async def manifest_by_unique_id(self, kos_uid: str) -> ManifestRecord | None:
        """The KOS bytes ITI-39 returns (any version we built and still hold)."""
        return await anyio.to_thread.run_sync(self._store.manifest_by_uid, kos_uid)

    def unique_id_for_entry_uuid(self, entry_uuid: str) -> str | None:
        """GetDocuments by entryUUID: UUIDs of entries handed out since start-up."""
        return self._by_entry_uuid.get(entry_uuid.strip().lower())
