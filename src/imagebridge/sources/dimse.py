"""Imaging Document Source backed by a DIMSE PACS: C-FIND, C-GET or C-MOVE, C-ECHO (pynetdicom).

* :meth:`DimseSource.patient_studies`: C-FIND Study Root, STUDY level, with
  Number of Study Related Instances (counted at IMAGE level when the PACS
  does not return it).
* :meth:`DimseSource.study_instances`: C-FIND IMAGE level with every
  attribute an :class:`InstanceHeader` needs
  (:data:`~imagebridge.dicom.query.INSTANCE_HEADER_KEYWORDS`).  A match says
  nothing of the stored bytes: the transfer syntax is ``""`` unless the PACS
  returns Available Transfer Syntax UID, the file size is None.
* :meth:`DimseSource.iter_instances`: every study (STUDY level, no Patient
  ID), then each study's instances.
* :meth:`DimseSource.read_instance`: a C-FIND for the instance's SOP Class
  (and to tell an unknown instance, :class:`InstanceNotFound`, from a failed
  retrieve), then C-GET on a second association that offers the SCP role for
  that SOP Class with one presentation context per transfer syntax, so the
  PACS can send the stored syntax unchanged.  The data set is written to a
  spool file as it arrives (pynetdicom's chunked receive) and yielded in
  1 MiB chunks.  With ``retrieve="move"`` a C-MOVE sends it to our Storage SCP
  (:class:`~imagebridge.sources.dimse_store.MoveReceiver`) instead.  The File
  Meta Information is written by the receiver (PS3.10): the data set bytes
  are the PACS's, the meta group is pynetdicom's.
* :meth:`DimseSource.probe`: C-ECHO.

pynetdicom blocks, so every association runs in a worker thread
(:func:`anyio.to_thread.run_sync`).  A PACS that cannot be reached, rejects
or aborts the association, or stops answering raises
:class:`SourceUnavailable`; a failure status raises :class:`SourceProtocolError`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Final, Literal, TypeVar

import anyio
import anyio.to_thread
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from imagebridge.dicom.query import (
    RETRIEVE_LOOKUP_KEYWORDS,
    instance_header_from_identifier,
    instance_identifier,
    instance_match_from_identifier,
    is_single_value,
    study_identifier,
    study_summary_from_identifier,
)
from imagebridge.errors import (
    DicomError,
    InstanceNotFound,
    SourceProtocolError,
    SourceUnavailable,
)
from imagebridge.model.imaging import InstanceHeader
from imagebridge.sources.base import ProbeResult, StudyVersion
from imagebridge.sources.dimse_peer import DimsePeer, DimseTimeouts, check_ae_title
from imagebridge.sources.dimse_store import (
    STATUS_SUCCESS,
    STATUS_UNEXPECTED,
    MoveReceiver,
    affected_sop_instance_uid,
    enable_spooled_receive,
    take_received_file,
)

__all__ = ["DimseSource", "DimseTimeouts"]

logger = logging.getLogger(__name__)

READ_CHUNK_SIZE: Final = 1024 * 1024
_WARNING: Final = 0xB000  # sub-operations complete, one or more failures or warnings
_DEFAULT_TIMEOUTS: Final = DimseTimeouts()
_UNCOMPRESSED: Final = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
_T = TypeVar("_T")


class DimseSource:
    """Imaging Document Source backed by a DIMSE PACS (C-FIND, C-GET or C-MOVE, C-ECHO)."""

    def __init__(
        self,
        repository_unique_id: str,
        host: str,
        port: int,
        called_ae: str,
        calling_ae: str = "IMAGEBRIDGE",
        *,
        retrieve: Literal["get", "move"] = "get",
        move_destination: str = "",
        move_host: str = "127.0.0.1",
        move_port: int | None = None,
        timeouts: DimseTimeouts = _DEFAULT_TIMEOUTS,
        max_pdu_size: int = 256 * 1024,
        spool_dir: str | None = None,
    ) -> None:
        self._peer = DimsePeer(host, port, called_ae, calling_ae, timeouts, max_pdu_size)
        if retrieve not in ("get", "move"):
            raise ValueError(f"retrieve must be 'get' or 'move', not {retrieve!r}")
        self._repository_unique_id = repository_unique_id
        self._host, self._port = host, port
        self._called_ae, self._calling_ae = called_ae, calling_ae
        self._timeouts = timeouts
        self._max_pdu_size = max_pdu_size
        self._spool_dir = spool_dir
        self._where = f"{called_ae}@{host}:{port}"
        self._move_destination = move_destination or calling_ae
        self._receiver: MoveReceiver | None = None
        if retrieve == "move":
            check_ae_title(self._move_destination, "move destination")
            if move_port is None:
                raise ValueError("retrieve='move' needs move_port, where the Storage SCP listens")
            self._receiver = MoveReceiver(
                self._move_destination,
                move_host,
                move_port,
                peer_ae_title=called_ae,
                spool_dir=spool_dir,
                network_timeout=timeouts.network,
            )

    @property
    def repository_unique_id(self) -> str:
        """The repositoryUniqueId (Retrieve Location UID) of this source."""
        return self._repository_unique_id

    @property
    def kind(self) -> str:
        """Always ``dimse``."""
        return "dimse"

    async def patient_studies(self, patient_id: str) -> Sequence[StudyVersion]:
        """C-FIND STUDY level for one Patient ID (exact match, wildcards refused)."""
        if not is_single_value(patient_id):
            return []
        return await self._run(partial(self._patient_studies, patient_id))

    async def study_instances(self, study_instance_uid: str) -> Sequence[InstanceHeader]:
        """C-FIND IMAGE level for one study; empty when the study is unknown."""
        if not is_single_value(study_instance_uid):
            return []
        return await self._run(partial(self._study_instances, study_instance_uid))

    async def iter_instances(self) -> AsyncIterator[InstanceHeader]:
        """Every instance: all studies at STUDY level, then each study at IMAGE level."""
        matches = await self._run(partial(self._find, study_identifier(""), "C-FIND study listing"))
        seen: set[str] = set()
        for match in matches:
            study_uid = study_summary_from_identifier(match).study_instance_uid
            if not study_uid or study_uid in seen:
                continue
            seen.add(study_uid)
            for header in await self.study_instances(study_uid):
                yield header

    async def read_instance(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> AsyncIterator[bytes]:
        """C-GET (or C-MOVE) of one instance into a spool file, yielded in 1 MiB chunks."""
        uids = (study_instance_uid, series_instance_uid, sop_instance_uid)
        if not all(is_single_value(u) for u in uids):
            raise InstanceNotFound("the requested instance UIDs are empty or not single values")
        # The worker thread cannot be interrupted: shield it, so a cancelled read
        # still gets the spool file back and deletes it.
        with anyio.CancelScope(shield=True):
            path = await self._run(partial(self._retrieve_to_spool, *uids))
        try:
            async with await anyio.open_file(path, "rb") as fp:
                while chunk := await fp.read(READ_CHUNK_SIZE):
                    yield chunk
        finally:
            path.unlink(missing_ok=True)

    async def probe(self) -> ProbeResult:
        """C-ECHO: does the PACS accept an association and answer?"""
        try:
            await self._run(self._echo)
        except (SourceUnavailable, SourceProtocolError) as exc:
            return ProbeResult(False, exc.message)
        return ProbeResult(True, f"the PACS {self._where} answers C-ECHO")

    async def aclose(self) -> None:
        """Stop the C-MOVE Storage SCP, if one was started."""
        if self._receiver is not None:
            await anyio.to_thread.run_sync(self._receiver.stop)

    # --- blocking work, in worker threads ------------------------------------------------

    async def _run(self, work: Callable[[], _T]) -> _T:
        return await anyio.to_thread.run_sync(work)

    def _patient_studies(self, patient_id: str) -> list[StudyVersion]:
        found: list[StudyVersion] = []
        for match in self._find(study_identifier(patient_id), "C-FIND study search"):
            summary = study_summary_from_identifier(match)
            if not summary.study_instance_uid or summary.patient_id != patient_id:
                continue  # a PACS that matched loosely (case, wildcards)
            count = summary.number_of_instances
            if count is None:
                identifier = instance_identifier(summary.study_instance_uid, keywords=())
                count = len(self._find(identifier, "C-FIND instance count"))
            found.append(StudyVersion(summary.study_instance_uid, count, patient_id))
        return found

    def _study_instances(self, study_instance_uid: str) -> list[InstanceHeader]:
        headers: list[InstanceHeader] = []
        for match in self._find(instance_identifier(study_instance_uid), "C-FIND instance search"):
            try:
                header = instance_header_from_identifier(match)
            except DicomError as exc:
                logger.warning("an instance match of a C-FIND answer is unusable and was skipped")
                logger.debug("unusable C-FIND match: %s", exc.message)
                continue
            if header.study.study_instance_uid == study_instance_uid:
                headers.append(header)
        return headers

    def _find(self, identifier: Dataset, what: str) -> list[Dataset]:
        return self._peer.find(identifier, what)

    def _retrieve_to_spool(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        identifier = instance_identifier(
            study_uid, series_uid, sop_uid, keywords=RETRIEVE_LOOKUP_KEYWORDS
        )
        found = self._find(identifier, "C-FIND instance lookup")
        matches = [instance_match_from_identifier(m) for m in found]
        match = next((m for m in matches if m.sop_instance_uid == sop_uid), None)
        if match is None:
            raise InstanceNotFound(f"the PACS {self._where} has no such instance")
        if not match.sop_class_uid:
            raise SourceProtocolError(f"the PACS {self._where} gave the instance no SOP Class UID")
        get_keys = instance_identifier(study_uid, series_uid, sop_uid, keywords=())
        if self._receiver is not None:
            return self._move(get_keys, sop_uid)
        return self._get(get_keys, sop_uid, match.sop_class_uid, match.transfer_syntax_uid)

    def _get(self, identifier: Dataset, sop_uid: str, sop_class: str, stored: str) -> Path:
        enable_spooled_receive()
        received: list[Path] = []

        def on_store(event: Event) -> int:
            if affected_sop_instance_uid(event) != sop_uid or received:
                return STATUS_UNEXPECTED
            received.append(take_received_file(event, self._spool_dir))
            return STATUS_SUCCESS

        syntaxes = [stored] if stored in AllTransferSyntaxes else []
        syntaxes += [ts for ts in AllTransferSyntaxes if ts != stored]
        model = StudyRootQueryRetrieveInformationModelGet
        contexts: list[tuple[str, Sequence[str]]] = [(model, _UNCOMPRESSED)]
        contexts += [(sop_class, [ts]) for ts in syntaxes]
        what = "C-GET instance retrieve"
        try:
            with self._association(
                contexts,
                what=what,
                ext_neg=[build_role(sop_class, scp_role=True)],
                handlers=[(evt.EVT_C_STORE, on_store)],
            ) as assoc:
                code = STATUS_SUCCESS
                for status, _ in assoc.send_c_get(identifier, model):
                    code = self._status(status, what)
            return self._delivered(received, code, what)
        except BaseException:
            for path in received:
                path.unlink(missing_ok=True)
            raise

    def _move(self, identifier: Dataset, sop_uid: str) -> Path:
        receiver = self._receiver
        if receiver is None:  # only called when configured for C-MOVE
            raise SourceProtocolError("C-MOVE is not configured for this source")
        try:
            receiver.start()
        except OSError as exc:
            raise SourceUnavailable(
                f"the C-MOVE destination {self._move_destination} cannot listen ({exc.strerror})"
            ) from exc
        slot = receiver.expect(sop_uid)
        model = StudyRootQueryRetrieveInformationModelMove
        what = "C-MOVE instance retrieve"
        code = STATUS_SUCCESS
        try:
            with self._association([(model, _UNCOMPRESSED)], what=what) as assoc:
                for status, _ in assoc.send_c_move(identifier, self._move_destination, model):
                    code = self._status(status, what)
        finally:
            path = receiver.collect(slot)
        try:
            return self._delivered([path] if path else [], code, what)
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise

    def _delivered(self, received: list[Path], code: int, what: str) -> Path:
        if received:
            return received[0]
        if code in (STATUS_SUCCESS, _WARNING):
            raise SourceProtocolError(
                f"the PACS {self._where} reported {what} done but sent nothing"
            )
        raise SourceProtocolError(f"the PACS {self._where} failed {what} with status 0x{code:04X}")

    def _echo(self) -> None:
        with self._association([(Verification, _UNCOMPRESSED)], what="C-ECHO") as assoc:
            code = self._status(assoc.send_c_echo(), "C-ECHO")
        if code != STATUS_SUCCESS:
            raise SourceProtocolError(f"the PACS {self._where} answered C-ECHO with 0x{code:04X}")

    def _association(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        what: str,
        ext_neg: list[object] | None = None,
        handlers: list[EventHandlerType] | None = None,
    ) -> AbstractContextManager[Association]:
        return self._peer.association(contexts, what=what, ext_neg=ext_neg, handlers=handlers)

    def _status(self, status: Dataset, what: str) -> int:
        return self._peer.status(status, what)
