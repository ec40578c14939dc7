"""Import target, a PACS over DIMSE: C-STORE to store, C-FIND (Study Root) to see what it holds.

* ``store``: :func:`~imagebridge.importing.instances.store_new` with one
  association per batch.  Each (SOP Class, transfer syntax) pair of the batch
  is proposed as its own presentation context (at most 128 an association),
  and each data set is sent from its file with pynetdicom's
  ``STORE_SEND_CHUNKED_DATASET`` (process-wide, set here): the bytes after
  the File Meta Information go out in PDU-sized chunks, never decoded, so
  memory stays flat whatever the study's size.  The price: no conversion, an
  instance whose exact syntax the PACS refuses fails with that reason.
  A stream that is not a file is spooled to one first.
* ``present``: C-FIND IMAGE level for the study.
* ``objects``: C-FIND IMAGE level with the UIDs given as keys.
* ``find_patients``: C-FIND STUDY level by birth date (or name prefix),
  each match checked by :func:`~imagebridge.importing.patients.matches`.

pynetdicom blocks, so every association runs in a worker thread.  A PACS
that cannot be reached, rejects the association or stops answering raises
:class:`TargetUnavailable` from the queries and fails the rest of ``store``;
the PACS's status names why an instance was refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Final, TypeVar

import anyio.to_thread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom.association import Association

from imagebridge.dicom.headers import patient_issuer, text, uid
from imagebridge.dicom.query import instance_identifier, is_single_value
from imagebridge.errors import (
    SourceProtocolError,
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
    StoreReport,
)
from imagebridge.importing.config import CStoreTargetConfig
from imagebridge.importing.instances import BatchResult, IdentifiedInstance, file_of, store_new
from imagebridge.importing.patients import CandidateSet, archive_keys
from imagebridge.sources.dimse_peer import DimsePeer, DimseTimeouts

logger = logging.getLogger(__name__)

MAX_CONTEXTS: Final = 128
_WARNINGS: Final = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP Class",
    0x0107: "attribute list error",
    0x0116: "attribute value out of range",
}
_T = TypeVar("_T")


def enable_chunked_send() -> None:
    """Make pynetdicom send C-STORE data sets given as paths in chunks (process-wide)."""
    _config.STORE_SEND_CHUNKED_DATASET = True


class CStoreTarget:
    """Import target, a PACS over DIMSE (C-STORE, C-FIND)."""

    def __init__(self, config: CStoreTargetConfig) -> None:
        self._config = config
        self._peer = DimsePeer(
            config.host,
            config.port,
            config.called_ae,
            config.calling_ae,
            DimseTimeouts(config.connect_timeout, config.dimse_timeout, config.network_timeout),
            config.max_pdu_size,
        )

    @property
    def name(self) -> str:
        """The configured name."""
        return self._config.name

    @property
    def kind(self) -> str:
        """Always ``cstore``."""
        return "cstore"

    async def store(
        self, instances: Sequence[ImportInstance], *, known_present: frozenset[str] | None = None
    ) -> StoreReport:
        """C-STORE, one association a batch, of the instances the PACS does not hold yet.

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
        """C-FIND IMAGE level: the SOP Instance UIDs held for the study."""
        if not is_single_value(study_instance_uid):
            return frozenset()
        identifier = instance_identifier(study_instance_uid, keywords=())
        matches = await self._run(partial(self._find, identifier, "C-FIND instance list"))
        return frozenset(
            sop
            for match in matches
            if (sop := uid(match, "SOPInstanceUID"))
            and uid(match, "StudyInstanceUID") in ("", study_instance_uid)
        )

    async def objects(
        self,
        *,
        study_instance_uid: str = "",
        series_instance_uid: str = "",
        sop_instance_uid: str = "",
    ) -> list[HeldInstance]:
        """C-FIND IMAGE level by the UIDs given, with Patient ID and issuer."""
        given = {
            "StudyInstanceUID": study_instance_uid,
            "SeriesInstanceUID": series_instance_uid,
            "SOPInstanceUID": sop_instance_uid,
        }
        if not any(given.values()):
            raise ValueError("objects() needs a Study, Series or SOP Instance UID")
        if not all(is_single_value(v) for v in given.values() if v):
            return []
        identifier = instance_identifier(
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
            keywords=("PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence"),
        )
        matches = await self._run(partial(self._find, identifier, "C-FIND instance search"))
        found: list[HeldInstance] = []
        for match in matches:
            if any(value and uid(match, key) != value for key, value in given.items()):
                continue  # a PACS that matched loosely
            found.append(
                HeldInstance(
                    study_instance_uid=uid(match, "StudyInstanceUID"),
                    series_instance_uid=uid(match, "SeriesInstanceUID"),
                    sop_instance_uid=uid(match, "SOPInstanceUID"),
                    patient_id=text(match, "PatientID"),
                    issuer=patient_issuer(match),
                )
            )
        return found

    async def find_patients(self, demographics: PatientDemographics) -> list[PatientCandidate]:
        """C-FIND STUDY level by birth date (or name prefix), matches checked here."""
        candidates = CandidateSet(demographics)
        for keys in archive_keys(demographics):
            identifier = _patient_identifier(keys.patient_name, keys.birth_date)
            matches = await self._run(partial(self._find, identifier, "C-FIND patient search"))
            for match in matches:
                candidates.add(
                    patient_id=text(match, "PatientID"),
                    issuer=patient_issuer(match),
                    name=text(match, "PatientName"),
                    birth_date=text(match, "PatientBirthDate"),
                    sex=text(match, "PatientSex"),
                    study_instance_uid=uid(match, "StudyInstanceUID"),
                )
        return candidates.result()

    async def aclose(self) -> None:
        """Nothing to release: associations last one batch or one query."""

    # --- blocking work, in worker threads ------------------------------------------------

    async def _run(self, work: Callable[[], _T]) -> _T:
        return await anyio.to_thread.run_sync(work)

    def _find(self, identifier: Dataset, what: str) -> list[Dataset]:
        with _translated():
            return self._peer.find(identifier, what)

    async def _send(self, batch: Sequence[IdentifiedInstance]) -> BatchResult:
        return await self._run(partial(self._store_batch, batch))

    def _store_batch(self, batch: Sequence[IdentifiedInstance]) -> BatchResult:
        enable_chunked_send()
        outcomes: list[InstanceOutcome] = []
        try:
            for group in _context_groups(batch):
                self._store_group(group, outcomes)
        except SourceUnavailable as exc:
            return BatchResult(outcomes, exc.message)
        return BatchResult(outcomes)

    def _store_group(
        self, group: Sequence[IdentifiedInstance], outcomes: list[InstanceOutcome]
    ) -> None:
        what = "C-STORE"
        contexts = sorted({(i.sop_class_uid, i.transfer_syntax_uid) for i in group})
        requested = [(sop_class, [syntax]) for sop_class, syntax in contexts]
        with self._peer.association(requested, what=what) as assoc:
            accepted = {
                (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts
                if cx.abstract_syntax and cx.transfer_syntax
            }
            for item in group:
                if (item.sop_class_uid, item.transfer_syntax_uid) not in accepted:
                    reason = (
                        f"the PACS {self._peer.where} accepts no presentation context for "
                        f"{_uid_name(item.sop_class_uid)} in {_uid_name(item.transfer_syntax_uid)}"
                    )
                    outcomes.append(item.outcome(ImportStatus.FAILED, reason))
                    continue
                outcomes.append(self._store_one(assoc, item))

    def _store_one(self, assoc: Association, item: IdentifiedInstance) -> InstanceOutcome:
        what = "C-STORE"
        if not assoc.is_established:
            raise SourceUnavailable(f"the PACS {self._peer.where} dropped the association")
        try:
            with file_of(item.source, self._config.spool_dir) as path:
                status = assoc.send_c_store(path)
        except (AttributeError, ValueError, InvalidDicomError) as exc:
            return item.outcome(ImportStatus.FAILED, f"cannot be sent by C-STORE ({exc})")
        except OSError as exc:
            return item.outcome(ImportStatus.FAILED, f"cannot be read ({exc.strerror or exc})")
        code = self._peer.status(status, what)
        if code == 0x0000:
            return item.outcome(ImportStatus.STORED)
        if code in _WARNINGS:
            warning = f"stored with warning 0x{code:04X} ({_WARNINGS[code]})"
            return item.outcome(ImportStatus.STORED, warning)
        reason = f"the PACS refused it with C-STORE status 0x{code:04X} ({_failure(code)})"
        return item.outcome(ImportStatus.FAILED, reason)


@contextmanager
def _translated() -> Iterator[None]:
    """Source errors of the shared DIMSE plumbing become target errors."""
    try:
        yield
    except SourceUnavailable as exc:
        raise TargetUnavailable(exc.message) from exc
    except SourceProtocolError as exc:
        raise TargetProtocolError(exc.message) from exc


def _context_groups(batch: Sequence[IdentifiedInstance]) -> Iterator[list[IdentifiedInstance]]:
    """Consecutive groups of the batch needing at most :data:`MAX_CONTEXTS` contexts each."""
    group: list[IdentifiedInstance] = []
    contexts: set[tuple[str, str]] = set()
    for item in batch:
        context = (item.sop_class_uid, item.transfer_syntax_uid)
        if context not in contexts and len(contexts) >= MAX_CONTEXTS:
            yield group
            group, contexts = [], set()
        group.append(item)
        contexts.add(context)
    if group:
        yield group


def _patient_identifier(patient_name: str, birth_date: str) -> Dataset:
    ds = Dataset()
    if not patient_name.isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientID = ""
    ds.IssuerOfPatientID = ""
    ds.IssuerOfPatientIDQualifiersSequence = DicomSequence()
    ds.PatientSex = ""
    ds.StudyInstanceUID = ""
    return ds


def _uid_name(value: str) -> str:
    name = UID(value).name if value else ""
    return name if name and name != value else value or "an unknown UID"


def _failure(code: int) -> str:
    high = code >> 8
    if high == 0xA7:
        return "out of resources"
    if high == 0xA9:
        return "data set does not match SOP Class"
    if high >> 4 == 0xC:
        return "cannot understand"
    return {
        0x0117: "invalid SOP Instance",
        0x0122: "SOP Class not supported",
        0x0124: "not authorised",
        0x0210: "duplicate invocation",
        0x0211: "unrecognised operation",
        0x0212: "mistyped argument",
        0x0213: "resource limitation",
    }.get(code, "failure")
