"""Imaging Document Source backed by a DICOMweb PACS: QIDO-RS, WADO-RS and STOW-RS over httpx.

* :meth:`DicomWebSource.patient_studies`: QIDO-RS ``/studies?PatientID=...``
  with ``includefield=NumberOfStudyRelatedInstances``.
* :meth:`DicomWebSource.study_instances`: WADO-RS ``/studies/{uid}/metadata``.
  It is the one DICOMweb answer that carries every attribute a header needs
  (Orthanc's QIDO-RS leaves out sequences such as Issuer of Patient ID
  Qualifiers and Procedure Code, even when asked for them).  The JSON array is
  decoded item by item as it arrives, so a 5,000-instance study never sits in
  memory as one document.  DICOMweb says nothing of the stored transfer syntax
  unless the server adds (0002,0010) or (0008,3002): otherwise a header's
  ``transfer_syntax_uid`` is ``""`` (unknown).
* :meth:`DicomWebSource.iter_instances`: QIDO-RS ``/studies`` paged with
  ``limit``/``offset``, then each study's metadata.
* :meth:`DicomWebSource.read_instance`: WADO-RS
  ``/studies/{s}/series/{se}/instances/{i}`` with ``transfer-syntax=*`` (the
  stored bytes, unchanged), the multipart answer parsed incrementally and the
  part body yielded chunk by chunk.
* :meth:`DicomWebSource.store_instances`: STOW-RS with a streamed request body.

Errors: no connection, a timeout, a dropped connection, HTTP 5xx, 408, 429,
401 and 403 raise :class:`SourceUnavailable`; 404 on an instance raises
:class:`InstanceNotFound`; an answer that breaks the protocol raises
:class:`SourceProtocolError`.  Messages name the operation and the server
(without credentials), never a patient identifier.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, BinaryIO, Final, cast
from urllib.parse import quote

import httpx

from imagebridge.dicom.dicom_json import instance_header_from_json, study_summary_from_json
from imagebridge.dicom.query import StudySummary, is_single_value
from imagebridge.dicom.tag_scan import identity_of
from imagebridge.errors import (
    DicomError,
    InstanceNotFound,
    JsonMalformed,
    MimeError,
    NotDicom,
    SourceError,
    SourceProtocolError,
    SourceUnavailable,
)
from imagebridge.model.imaging import InstanceHeader
from imagebridge.sources.base import ProbeResult, StudyVersion
from imagebridge.sources.storage import (
    InstanceBody,
    StoreFailure,
    StoreOutcome,
    instance_chunks,
    store_outcome_from_json,
)
from imagebridge.wire.json_stream import JsonArrayReader
from imagebridge.wire.multipart_related import (
    PartStart,
    boundary_of,
    encode_multipart_related,
    iter_multipart,
    iter_parts,
    multipart_related_content_type,
)

logger = logging.getLogger(__name__)

DICOM_JSON: Final = "application/dicom+json"
INSTANCE_ACCEPT: Final = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_JSON_TYPES: Final = frozenset({DICOM_JSON, "application/json"})
_UNAVAILABLE_STATUS: Final = frozenset({401, 403, 408, 429})
PART_IN_MEMORY: Final = 2 << 20
"""A series part up to this size stays in memory; a larger one goes to a temporary file."""


class DicomWebSource:
    """Imaging Document Source backed by a DICOMweb PACS (QIDO-RS, WADO-RS, STOW-RS)."""

    def __init__(
        self,
        repository_unique_id: str,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        page_size: int = 100,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._repository_unique_id = repository_unique_id
        self._base = base_url.rstrip("/")
        url = httpx.URL(self._base)
        port = f":{url.port}" if url.port else ""
        self._where = f"{url.scheme}://{url.host}{port}{url.path}"  # no credentials
        self._auth: httpx.Auth | tuple[str, str] | None = auth
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout)
        )
        self._page_size = page_size

    @property
    def repository_unique_id(self) -> str:
        """The repositoryUniqueId (Retrieve Location UID) of this source."""
        return self._repository_unique_id

    @property
    def kind(self) -> str:
        """Always ``dicomweb``."""
        return "dicomweb"

    async def patient_studies(self, patient_id: str) -> Sequence[StudyVersion]:
        """QIDO-RS study search for one Patient ID (exact match, wildcards refused)."""
        if not is_single_value(patient_id):
            return []
        params = [
            ("PatientID", patient_id),
            ("includefield", "00201208"),  # NumberOfStudyRelatedInstances
        ]
        found: list[StudyVersion] = []
        async for summary in self._studies(params, what="QIDO-RS study search"):
            if summary.patient_id and summary.patient_id != patient_id:
                continue  # a server that matched loosely (case, wildcards)
            count = summary.number_of_instances
            if count is None:
                count = await self._count_instances(summary.study_instance_uid)
            found.append(StudyVersion(summary.study_instance_uid, count, patient_id))
        return found

    async def study_instances(self, study_instance_uid: str) -> Sequence[InstanceHeader]:
        """WADO-RS study metadata, read item by item; empty when the study is unknown."""
        if not is_single_value(study_instance_uid):
            return []
        path = f"/studies/{_segment(study_instance_uid)}/metadata"
        headers: list[InstanceHeader] = []
        what = "WADO-RS study metadata"
        async with self._stream(
            "GET", path, what=what, headers={"Accept": DICOM_JSON}, allow={404}
        ) as response:
            if response.status_code in (204, 404):
                return []
            _check_json(response, what)
            async for item in self._json_items(response, what):
                header = _header_or_none(item)
                if header is not None and header.study.study_instance_uid == study_instance_uid:
                    headers.append(header)
        return headers

    async def iter_instances(self) -> AsyncIterator[InstanceHeader]:
        """Every instance: QIDO-RS ``/studies`` paged, then each study's metadata."""
        seen: set[str] = set()
        async for summary in self._studies([], what="QIDO-RS study listing"):
            if summary.study_instance_uid in seen:
                continue
            seen.add(summary.study_instance_uid)
            for header in await self.study_instances(summary.study_instance_uid):
                yield header

    async def read_instance(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> AsyncIterator[bytes]:
        """WADO-RS retrieve of one instance in its stored transfer syntax, chunk by chunk."""
        uids = (study_instance_uid, series_instance_uid, sop_instance_uid)
        if not all(is_single_value(u) for u in uids):
            raise InstanceNotFound("the requested instance UIDs are empty or not single values")
        path = "/studies/{}/series/{}/instances/{}".format(*(_segment(u) for u in uids))
        what = "WADO-RS instance retrieve"
        async with self._stream(
            "GET", path, what=what, headers={"Accept": INSTANCE_ACCEPT}, allow={404}
        ) as response:
            if response.status_code == 404:
                raise InstanceNotFound(
                    f"the DICOMweb archive at {self._where} has no such instance"
                )
            try:
                boundary = boundary_of(response.headers.get("content-type", ""))
                parts = 0
                async for event in iter_multipart(response.aiter_bytes(), boundary):
                    if isinstance(event, bytes):
                        yield event
                    elif isinstance(event, PartStart):
                        parts += 1
                        if parts > 1:
                            raise SourceProtocolError(
                                f"{what} at {self._where} answered more than one part"
                            )
                if parts == 0:
                    raise SourceProtocolError(f"{what} at {self._where} answered no part")
            except MimeError as exc:
                raise SourceProtocolError(
                    f"{what} at {self._where} answered a malformed multipart body: {exc.message}"
                ) from exc

    async def read_series(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> AsyncGenerator[tuple[str, str, bytes | BinaryIO]]:
        """WADO-RS retrieve of a whole series in one request, instance by instance.

        Yields ``(SOP Instance UID, transfer syntax, body)`` for each part once it
        is complete: ``bytes`` up to :data:`PART_IN_MEMORY`, else a temporary
        file the caller must close.  The identity is read by a direct element
        scan (pydicom only when the scan cannot settle it); parts that are not
        DICOM raise :class:`SourceProtocolError`.
        """
        uids = (study_instance_uid, series_instance_uid)
        if not all(is_single_value(u) for u in uids):
            raise InstanceNotFound("the requested series UIDs are empty or not single values")
        path = "/studies/{}/series/{}".format(*(_segment(u) for u in uids))
        what = "WADO-RS series retrieve"
        async with self._stream(
            "GET", path, what=what, headers={"Accept": INSTANCE_ACCEPT}, allow={404}
        ) as response:
            if response.status_code == 404:
                raise InstanceNotFound(f"the DICOMweb archive at {self._where} has no such series")
            try:
                boundary = boundary_of(response.headers.get("content-type", ""))
                parts = iter_parts(
                    response.aiter_bytes(), boundary, in_memory=PART_IN_MEMORY, spill=_spill
                )
                async for _, body in parts:
                    try:
                        sop, syntax = identity_of(body)
                    except NotDicom as exc:
                        if not isinstance(body, bytes):
                            body.close()
                        raise SourceProtocolError(
                            f"{what} at {self._where} answered a part that is not DICOM"
                        ) from exc
                    yield sop, syntax, body
            except MimeError as exc:
                raise SourceProtocolError(
                    f"{what} at {self._where} answered a malformed multipart body: {exc.message}"
                ) from exc

    async def store_instances(self, instances: Sequence[InstanceBody]) -> StoreOutcome:
        """STOW-RS: send Part-10 instances in one streamed multipart request."""
        if not instances:
            return StoreOutcome()
        boundary = uuid.uuid4().hex
        body = encode_multipart_related(
            (instance_chunks(item) for item in instances),
            boundary=boundary,
            part_type="application/dicom",
        )
        headers = {
            "Content-Type": multipart_related_content_type(boundary, "application/dicom"),
            "Accept": DICOM_JSON,
        }
        what = "STOW-RS store"
        async with self._stream(
            "POST", "/studies", what=what, headers=headers, content=body, allow={400, 409}
        ) as response:
            raw = await response.aread()
            status = response.status_code
            is_json = _media_type(response) in _JSON_TYPES
        answer: object = {}
        if is_json and raw.strip():
            try:
                answer = json.loads(raw)
            except ValueError as exc:
                raise SourceProtocolError(f"{what} at {self._where} answered invalid JSON") from exc
        if not isinstance(answer, dict):
            raise SourceProtocolError(
                f"{what} at {self._where} answered JSON that is not an object"
            )
        outcome = store_outcome_from_json(answer)
        if status >= 400 and not outcome.failed:  # refused without saying which instance
            return StoreOutcome(outcome.stored, (StoreFailure("", f"HTTP {status}"),))
        return outcome

    async def probe(self) -> ProbeResult:
        """QIDO-RS ``/studies?limit=1``: does the archive answer?"""
        try:
            async with self._stream(
                "GET",
                "/studies",
                what="QIDO-RS probe",
                params=[("limit", "1")],
                headers={"Accept": DICOM_JSON},
            ):
                pass
        except SourceError as exc:
            return ProbeResult(False, exc.message)
        return ProbeResult(True, f"DICOMweb archive at {self._where} answers QIDO-RS")

    async def aclose(self) -> None:
        """Close the HTTP client if this source created it."""
        if self._owns_client:
            await self._client.aclose()

    # --- HTTP plumbing -------------------------------------------------------------

    @asynccontextmanager
    async def _stream(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        content: AsyncIterator[bytes] | None = None,
        allow: set[int] | frozenset[int] = frozenset(),
    ) -> AsyncIterator[httpx.Response]:
        """One streamed exchange; transport failures and bad statuses become source errors."""
        url = self._base + path
        try:
            async with self._client.stream(
                method,
                url,
                params=tuple(params) if params else None,
                headers=headers,
                content=content,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            ) as response:
                status = response.status_code
                if status not in allow and not 200 <= status < 300:
                    raise self._status_error(status, what)
                yield response
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(
                f"the DICOMweb archive at {self._where} did not answer {what} in time"
            ) from exc
        except httpx.ConnectError as exc:
            raise SourceUnavailable(
                f"the DICOMweb archive at {self._where} cannot be reached ({_reason(exc)})"
            ) from exc
        except httpx.TransportError as exc:
            raise SourceUnavailable(
                f"the connection to the DICOMweb archive at {self._where} broke off "
                f"during {what} ({_reason(exc)})"
            ) from exc

    def _status_error(self, status: int, what: str) -> SourceError:
        text = f"the DICOMweb archive at {self._where} answered {what} with HTTP {status}"
        if status >= 500 or status in _UNAVAILABLE_STATUS:
            return SourceUnavailable(text)
        return SourceProtocolError(text)

    async def _studies(
        self, params: list[tuple[str, str]], *, what: str
    ) -> AsyncIterator[StudySummary]:
        """QIDO-RS study matches; one without a Study Instance UID is logged and skipped."""
        async for page in self._qido_pages("/studies", params, what=what):
            for item in page:
                try:
                    yield study_summary_from_json(item)
                except DicomError:
                    logger.warning("a study match of a DICOMweb answer has no Study Instance UID")

    async def _qido_pages(
        self, path: str, params: list[tuple[str, str]], *, what: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """QIDO-RS matches, page by page (``limit``/``offset``) until a short page.

        Each page is read whole (it is at most ``page_size`` matches) before it
        is handed on, so no connection stays open while the caller works.
        """
        offset = 0
        while True:
            query = [*params, ("limit", str(self._page_size)), ("offset", str(offset))]
            async with self._stream(
                "GET", path, what=what, params=query, headers={"Accept": DICOM_JSON}
            ) as response:
                if response.status_code == 204:
                    return
                _check_json(response, what)
                more = "additional results" in response.headers.get("warning", "").lower()
                page = [item async for item in self._json_items(response, what)]
            if page:
                yield page
            if not page or (len(page) < self._page_size and not more):
                return
            offset += len(page)

    async def _json_items(
        self, response: httpx.Response, what: str
    ) -> AsyncIterator[dict[str, Any]]:
        reader = JsonArrayReader()
        try:
            async for chunk in response.aiter_bytes():
                for item in reader.feed(chunk):
                    yield item
            for item in reader.close():
                yield item
        except JsonMalformed as exc:
            raise SourceProtocolError(
                f"{what} at {self._where} answered malformed JSON: {exc.message}"
            ) from exc

    async def _count_instances(self, study_instance_uid: str) -> int:
        """Instance count of a study whose QIDO-RS match lacked NumberOfStudyRelatedInstances."""
        path = f"/studies/{_segment(study_instance_uid)}/instances"
        count = 0
        async for page in self._qido_pages(path, [], what="QIDO-RS instance count"):
            count += len(page)
        return count


def _spill() -> BinaryIO:
    return cast(BinaryIO, tempfile.TemporaryFile())


def _segment(uid: str) -> str:
    return quote(uid.strip(), safe="")


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip().lower()


def _check_json(response: httpx.Response, what: str) -> None:
    media = _media_type(response)
    if media not in _JSON_TYPES:
        raise SourceProtocolError(f"{what} answered {media or 'no content type'}, not DICOM JSON")


def _header_or_none(item: Mapping[str, Any]) -> InstanceHeader | None:
    try:
        return instance_header_from_json(item)
    except DicomError as exc:
        logger.warning("an instance entry of a DICOMweb answer is unusable and was skipped")
        logger.debug("unusable DICOM JSON entry: %s", exc.message)
        return None
