"""Import target, a PACS over DICOMweb: STOW-RS to store, QIDO-RS to see what it holds.

* ``store``: :func:`~imagebridge.importing.instances.store_new` with
  :meth:`~imagebridge.sources.dicomweb.DicomWebSource.store_instances` as the
  sender: one multipart/related request per batch, its body streamed from
  the files (1 MiB chunks), never a whole study in memory.  The STOW-RS
  answer's Referenced and Failed SOP Sequences give each instance's outcome.
* ``present``: QIDO-RS ``/studies/{uid}/instances``, paged.
* ``objects``: QIDO-RS instance search with the UIDs as matching keys and
  Patient ID and its issuer as return keys.
* ``find_patients``: QIDO-RS ``/studies`` by birth date (or name prefix),
  each match checked by :func:`~imagebridge.importing.patients.matches`.

A PACS that cannot be reached, times out or answers 5xx/401/403/408/429
raises :class:`TargetUnavailable` from the queries and fails every instance
of ``store``; an answer that breaks the protocol raises :class:`TargetProtocolError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import anyio
import httpx

from imagebridge.dicom.dicom_json import JsonObject, first_string, items, text
from imagebridge.dicom.query import is_single_value
from imagebridge.errors import (
    SourceError,
    SourceUnavailable,
    TargetProtocolError,
    TargetUnavailable,
)
from imagebridge.importing.base import (
    HeldInstance,
    ImportInstance,
    ImportStatus,
    InstanceOutcome,
    PatientCandidate,
    PatientDemographics,
    SplicedInstance,
    StoreReport,
)
from imagebridge.importing.config import StowTargetConfig
from imagebridge.importing.instances import (
    BatchResult,
    IdentifiedInstance,
    store_new,
    stream_chunks,
)
from imagebridge.importing.patients import CandidateSet, archive_keys
from imagebridge.model.imaging import HierarchicDesignator
from imagebridge.sources.dicomweb import DicomWebSource
from imagebridge.sources.storage import InstanceBody

logger = logging.getLogger(__name__)

DICOM_JSON: Final = "application/dicom+json"
_UNAVAILABLE_STATUS: Final = frozenset({401, 403, 408, 429})
_PATIENT_FIELDS: Final = ("00100010", "00100020", "00100021", "00100024", "00100030", "00100040")
_OBJECT_FIELDS: Final = ("00100020", "00100021", "00100024", "0020000D", "0020000E")
READ_WHOLE: Final = 4 << 20
"""A file up to this size is read at once while a STOW-RS request body streams."""
SOP_LIST_SIZE: Final = 40
"""SOP Instance UIDs per QIDO-RS UID list query (at most about 2.6 kB of URL)."""


class StowTarget:
    """Import target, a PACS over DICOMweb (STOW-RS, QIDO-RS)."""

    def __init__(
        self, config: StowTargetConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self._config = config
        self._base = config.base_url.rstrip("/")
        url = httpx.URL(self._base)
        port = f":{url.port}" if url.port else ""
        self._where = f"{url.scheme}://{url.host}{port}{url.path}"  # no credentials
        auth = (config.username, config.password) if config.username else None
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout), auth=auth
        )
        self._stow = DicomWebSource(config.name, self._base, client=self._client)
        self._lists_refused = False

    @property
    def name(self) -> str:
        """The configured name."""
        return self._config.name

    @property
    def kind(self) -> str:
        """Always ``stow``."""
        return "stow"

    async def store(
        self, instances: Sequence[ImportInstance], *, known_present: frozenset[str] | None = None
    ) -> StoreReport:
        """STOW-RS, batch by batch, of the instances the PACS does not hold yet.

        *known_present*: what the caller knows this target holds (then not asked again).
        """
        return await store_new(
            instances,
            present=self.present,
            known_present=known_present,
            send=self._send,
            batch_size=self._config.batch_size,
            batch_bytes=self._config.batch_bytes,
            target=self.name,
        )

    async def present(self, study_instance_uid: str) -> frozenset[str]:
        """QIDO-RS ``/studies/{uid}/instances``: the SOP Instance UIDs held for the study."""
        if not is_single_value(study_instance_uid):
            return frozenset()
        path = f"/studies/{_segment(study_instance_uid)}/instances"
        found: set[str] = set()
        async for match in self._qido(path, [], what="QIDO-RS instance list"):
            study = first_string(match, "0020000D")
            sop = first_string(match, "00080018")
            if sop and study in ("", study_instance_uid):
                found.add(sop)
        return frozenset(found)

    async def objects(
        self,
        *,
        study_instance_uid: str = "",
        series_instance_uid: str = "",
        sop_instance_uid: str = "",
    ) -> list[HeldInstance]:
        """QIDO-RS instance search by the UIDs given, with Patient ID and issuer."""
        keys = {
            "0020000D": study_instance_uid,
            "0020000E": series_instance_uid,
            "00080018": sop_instance_uid,
        }
        given = {tag: uid for tag, uid in keys.items() if uid}
        if not given:
            raise ValueError("objects() needs a Study, Series or SOP Instance UID")
        if not all(is_single_value(uid) for uid in given.values()):
            return []
        params = [(tag, uid) for tag, uid in given.items()]
        params += [("includefield", tag) for tag in _OBJECT_FIELDS]
        found: list[HeldInstance] = []
        async for match in self._qido("/instances", params, what="QIDO-RS instance search"):
            if any(first_string(match, tag) != uid for tag, uid in given.items()):
                continue  # a server that matched loosely
            found.append(_held(match))
        return found

    async def objects_by_sop(self, sop_instance_uids: Sequence[str]) -> list[HeldInstance]:
        """QIDO-RS instance searches by lists of SOP Instance UIDs (UID list matching,
        PS3.18 8.3.4.1), :data:`SOP_LIST_SIZE` a query; a PACS that refuses a list
        (HTTP 400) is asked one UID at a time from then on."""
        wanted = [u for u in dict.fromkeys(sop_instance_uids) if is_single_value(u)]
        found: list[HeldInstance] = []
        for start in range(0, len(wanted), SOP_LIST_SIZE):
            found += await self._sop_list(wanted[start : start + SOP_LIST_SIZE])
        return found

    async def _sop_list(self, uids: Sequence[str]) -> list[HeldInstance]:
        if len(uids) > 1 and not self._lists_refused:
            params = [("00080018", ",".join(uids))]
            params += [("includefield", tag) for tag in _OBJECT_FIELDS]
            try:
                matches = [
                    m async for m in self._qido("/instances", params, what="QIDO-RS UID list")
                ]
            except TargetProtocolError:
                self._lists_refused = True  # no UID list matching: one UID at a time
            else:
                wanted = set(uids)  # a server that matched loosely
                return [_held(m) for m in matches if first_string(m, "00080018") in wanted]
        return [item for uid in uids for item in await self.objects(sop_instance_uid=uid)]

    async def find_patients(self, demographics: PatientDemographics) -> list[PatientCandidate]:
        """QIDO-RS study search by birth date (or name prefix), matches checked here."""
        candidates = CandidateSet(demographics)
        for keys in archive_keys(demographics):
            params = [("fuzzymatching", "false")]
            if keys.birth_date:
                params.append(("PatientBirthDate", keys.birth_date))
            if keys.patient_name:
                params.append(("PatientName", keys.patient_name))
            params += [("includefield", tag) for tag in _PATIENT_FIELDS]
            async for match in self._qido("/studies", params, what="QIDO-RS patient search"):
                candidates.add(
                    patient_id=text(match, "00100020"),
                    issuer=_issuer(match),
                    name=text(match, "00100010"),
                    birth_date=text(match, "00100030"),
                    sex=text(match, "00100040"),
                    study_instance_uid=first_string(match, "0020000D"),
                )
        return candidates.result()

    async def aclose(self) -> None:
        """Close the HTTP client if this target created it."""
        if self._owns_client:
            await self._client.aclose()

    # --- STOW-RS ----------------------------------------------------------------------

    async def _send(self, batch: Sequence[IdentifiedInstance]) -> BatchResult:
        bodies = [_body(item.source, item.size) for item in batch]
        try:
            outcome = await self._stow.store_instances(bodies)
        except SourceUnavailable as exc:
            raise TargetUnavailable(exc.message) from exc
        except SourceError as exc:
            raise TargetProtocolError(exc.message) from exc
        failed = {f.sop_instance_uid: f.reason for f in outcome.failed}
        if "" in failed:  # refused as a whole (an HTTP status without a Failed SOP Sequence)
            reason = f"the PACS at {self._where} refused the STOW-RS request ({failed['']})"
            return BatchResult([item.outcome(ImportStatus.FAILED, reason) for item in batch])
        stored = set(outcome.stored)
        results: list[InstanceOutcome] = []
        for item in batch:
            uid = item.sop_instance_uid
            if uid in failed:
                reason = f"the PACS refused it (STOW-RS failure reason {failed[uid]})"
                results.append(item.outcome(ImportStatus.FAILED, reason))
            elif uid in stored:
                results.append(item.outcome(ImportStatus.STORED))
        return BatchResult(results)

    # --- QIDO-RS ----------------------------------------------------------------------

    async def _qido(
        self, path: str, params: list[tuple[str, str]], *, what: str
    ) -> AsyncIterator[JsonObject]:
        """QIDO-RS matches, paged with ``limit``/``offset`` until a short page."""
        size = self._config.page_size
        offset = 0
        while True:
            query = [*params, ("limit", str(size)), ("offset", str(offset))]
            page = await self._get_json(path, query, what)
            for match in page:
                yield match
            more = len(page) >= size
            if not more:
                return
            offset += len(page)

    async def _get_json(
        self, path: str, params: list[tuple[str, str]], what: str
    ) -> list[JsonObject]:
        try:
            response = await self._client.get(
                httpx.URL(f"{self._base}{path}?{_query(params)}"),
                headers={"Accept": DICOM_JSON},
            )
        except httpx.TimeoutException as exc:
            raise TargetUnavailable(
                f"the PACS at {self._where} did not answer {what} in time"
            ) from exc
        except httpx.TransportError as exc:
            raise TargetUnavailable(
                f"the PACS at {self._where} cannot be reached for {what} ({_reason(exc)})"
            ) from exc
        status = response.status_code
        if status in (204, 404):
            return []
        if status >= 500 or status in _UNAVAILABLE_STATUS:
            raise TargetUnavailable(f"the PACS at {self._where} answered {what} with HTTP {status}")
        if not 200 <= status < 300:
            raise TargetProtocolError(
                f"the PACS at {self._where} answered {what} with HTTP {status}"
            )
        if not response.content.strip():
            return []
        try:
            answer: Any = response.json()
        except ValueError as exc:
            raise TargetProtocolError(
                f"the PACS at {self._where} answered {what} with invalid JSON"
            ) from exc
        if not isinstance(answer, list) or not all(isinstance(m, dict) for m in answer):
            raise TargetProtocolError(
                f"the PACS at {self._where} answered {what} with JSON that is not a match list"
            )
        return [{key.upper(): value for key, value in m.items()} for m in answer]


def _body(source: ImportInstance, size: int = 0) -> InstanceBody:
    """A small file read at once (one worker-thread hop, not four), a larger path as it is
    (read 1 MiB at a time by the sender), a small spliced instance as its head and the
    rest read at once, else the stream's chunks."""
    if isinstance(source, str | os.PathLike):
        return _whole(source) if 0 < size <= READ_WHOLE else source
    if isinstance(source, SplicedInstance) and source.size <= READ_WHOLE:
        return _spliced(source)
    return stream_chunks(source)


async def _spliced(source: SplicedInstance) -> AsyncIterator[bytes]:
    yield source.head
    yield await anyio.to_thread.run_sync(source.read_tail)


async def _whole(path: str | os.PathLike[str]) -> AsyncIterator[bytes]:
    yield await anyio.to_thread.run_sync(Path(path).read_bytes)


def _held(match: JsonObject) -> HeldInstance:
    return HeldInstance(
        study_instance_uid=first_string(match, "0020000D"),
        series_instance_uid=first_string(match, "0020000E"),
        sop_instance_uid=first_string(match, "00080018"),
        patient_id=text(match, "00100020"),
        issuer=_issuer(match),
    )


def _issuer(match: JsonObject) -> HierarchicDesignator | None:
    local = text(match, "00100021")
    qualifiers = next(iter(items(match, "00100024")), None)
    universal = text(qualifiers, "00400032") if qualifiers is not None else ""
    universal_type = text(qualifiers, "00400033") if qualifiers is not None else ""
    if not local and not universal:
        return None
    return HierarchicDesignator(local, universal, universal_type)


def _query(params: list[tuple[str, str]]) -> str:
    """The query string, wildcards ``*`` and ``?`` left as they are.

    Orthanc 1.10 does not percent-decode QIDO-RS arguments, and httpx would
    send ``*`` as ``%2A``: a wildcard search would then match nothing.
    """
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='*?')}" for key, value in params)


def _segment(uid: str) -> str:
    return quote(uid.strip(), safe="")


def _reason(exc: Exception) -> str:
    message = str(exc).strip()
    return message.splitlines()[0][:200] if message else type(exc).__name__
