"""Imaging Document Consumer, the stages of an import job run: what travels between them.

:class:`~imagebridge.actors.initiating.importer.ImportRunner` runs three
stages, one batch in each (retrieve, plan and rewrite, store and mark);
these are the values handed from one stage to the next, and the DICOM
rewrite that splices the reconciled elements into the received bytes
(pixel data copied as it is; a full read and write where splicing is not safe).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from imagebridge.actors.initiating.client import ReceivedDocument, RetrieveResult
from imagebridge.dicom.headers import instance_header_from_dataset
from imagebridge.dicom.reconcile_apply import apply_plan
from imagebridge.dicom.reconcile_splice import Splicer
from imagebridge.errors import NotDicom
from imagebridge.importing.base import (
    HeldInstance,
    IdentifiedFile,
    SplicedInstance,
)
from imagebridge.model.imaging import InstanceHeader
from imagebridge.model.import_job import InstanceState, InstanceUpdate, JobInstance
from imagebridge.model.reconcile import (
    ReconcilePlan,
)


@dataclass(slots=True)
class Fetched:
    """One batch as retrieved: the RAD-75 result, or why the whole batch failed."""

    batch: Sequence[JobInstance]
    result: RetrieveResult | None = None
    failure: tuple[str, str] | None = None
    looked_up: dict[str, list[HeldInstance]] | None = None
    """What the target held under the batch's SOP UIDs not in the study's listing."""

    def close(self) -> None:
        if self.result is not None:
            self.result.close()

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class Listing:
    """What the target holds under the job's study: listed once a run, then kept up to date."""

    study_instance_uid: str
    held: dict[str, HeldInstance]

    def listed(self) -> dict[str, list[HeldInstance]]:
        return {self.study_instance_uid: list(self.held.values())}

    def sop_uids(self) -> frozenset[str]:
        return frozenset(self.held)

    def add(self, header: InstanceHeader, patient_id: str) -> None:
        """An instance the target confirmed it holds (stored under *patient_id*)."""
        study = header.study.study_instance_uid
        if study != self.study_instance_uid:
            return
        self.held[header.sop_instance_uid] = HeldInstance(
            study_instance_uid=study,
            series_instance_uid=header.series.series_instance_uid,
            sop_instance_uid=header.sop_instance_uid,
            patient_id=patient_id,
        )


@dataclass(slots=True)
class Prepared:
    """One batch planned (and rewritten into *tmp*), or held, or broken: for the last stage."""

    fetched: Fetched
    updates: list[InstanceUpdate] = field(default_factory=list)
    planned: list[ReconcilePlan] = field(default_factory=list)
    instances: list[SplicedInstance | str] = field(default_factory=list)
    """The rewritten instances, one per plan: spliced, or a file in *tmp*."""
    parsed: dict[str, Parsed] = field(default_factory=dict)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    hold: str | None = None
    error: Exception | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step (parse, plan, rewrite), for the log."""

    def close(self) -> None:
        self.fetched.close()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def __enter__(self) -> Prepared:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Closable(Protocol):
    def close(self) -> None: ...


async def hand_over(send: MemoryObjectSendStream[Any], item: Closable) -> bool:
    """Give *item* to the next stage; False (*item* released) when that stage is gone."""
    try:
        await send.send(item)
    except anyio.BrokenResourceError:
        item.close()
        return False
    except BaseException:
        item.close()  # cancelled before it was taken: its files are removed
        raise
    return True


def failed(batch: Sequence[JobInstance], code: str, text: str) -> list[InstanceUpdate]:
    return [
        InstanceUpdate(
            sop_instance_uid=i.sop_instance_uid,
            state=InstanceState.FAILED,
            error_code=code,
            error_text=text[:500],
            attempted=True,
        )
        for i in batch
    ]


def identified(path: str, header: InstanceHeader) -> IdentifiedFile:
    return IdentifiedFile(
        path=path,
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study.study_instance_uid,
        series_instance_uid=header.series.series_instance_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
    )


UID_KEYWORDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})


def keeps_uids(plan: ReconcilePlan) -> bool:
    """True when the rewritten instance keeps its study, series and SOP Instance UIDs."""
    return not plan.uid_map and not any(c.keyword in UID_KEYWORDS for c in plan.changes)


@dataclass(slots=True)
class Parsed:
    """A received instance read up to its pixel data.

    *at* is where pydicom stopped reading: the offset of the pixel data
    element, or the end of the object when it has none.
    """

    header: InstanceHeader
    dataset: Dataset
    at: int


PIXEL_TAGS = frozenset(
    struct.pack(fmt, 0x7FE0, element) for fmt in ("<HH", ">HH") for element in (0x10, 0x08, 0x09)
)


def parse(document: ReceivedDocument) -> Parsed:
    """Read a received instance's header (blocking); NotDicom when it is not usable DICOM."""
    with document.open() as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        try:  # as parse_instance_header, keeping the data set for the rewrite
            dataset = dcmread(stream, stop_before_pixels=True)
        except InvalidDicomError as exc:
            raise NotDicom(f"received instance: not a DICOM Part-10 object ({exc})") from exc
        except (EOFError, struct.error, ValueError, KeyError, NotImplementedError) as exc:
            raise NotDicom(f"received instance: could not be decoded ({exc})") from exc
        if "TransferSyntaxUID" not in dataset.file_meta:
            raise NotDicom("received instance: no Transfer Syntax UID in its meta group")
        at = stream.tell()
        head = stream.read(4)
    header = instance_header_from_dataset(
        dataset, has_pixel_data=head in PIXEL_TAGS, file_size=size
    )
    return Parsed(header, dataset, at)


def parse_all(received: dict[str, ReceivedDocument]) -> dict[str, Parsed]:
    return {uid: parse(document) for uid, document in received.items()}


HEAD_IN_MEMORY = 256 * 1024
"""A rewritten head up to this size waits in memory for the store (the pixel data stays in
the received part); a larger one is written out, with the rest, to a file."""


def rewrite(
    document: ReceivedDocument,
    parsed: Parsed,
    plan: ReconcilePlan,
    path: str,
    splicer: Splicer | None = None,
) -> SplicedInstance | str:
    """Apply *plan* to the received instance (pixel data untouched): the instance to store.

    The result is the :func:`full_rewrite`'s, made by splicing bytes
    (:class:`~imagebridge.dicom.reconcile_splice.Splicer`): the touched
    elements are encoded again, the rest and the pixel data are copied as
    they are.  It is a :class:`~imagebridge.importing.base.SplicedInstance`
    (the new head in memory, then the received bytes) when the UIDs are
    kept and the head is small, else *path*, where it is written.  Where
    splicing cannot promise that result, the full rewrite, written to *path*.
    """
    splicer = splicer or Splicer()
    with document.open() as stream:
        head = splicer.splice(stream, parsed.dataset, plan, stop=parsed.at)
        if head is None:
            full_rewrite(stream, plan, path)
            return path
        size = stream.seek(0, os.SEEK_END)
        if len(head) <= HEAD_IN_MEMORY and keeps_uids(plan):
            header = parsed.header
            return SplicedInstance(
                head=head,
                rest=document,
                offset=parsed.at,
                size=len(head) + size - parsed.at,
                sop_class_uid=header.sop_class_uid,
                sop_instance_uid=header.sop_instance_uid,
                study_instance_uid=header.study.study_instance_uid,
                series_instance_uid=header.series.series_instance_uid,
                transfer_syntax_uid=header.transfer_syntax_uid,
            )
        with open(path, "wb") as out:
            out.write(head)
            stream.seek(parsed.at)
            shutil.copyfileobj(stream, out, COPY_CHUNK)
        return path


def full_rewrite(stream: BinaryIO, plan: ReconcilePlan, path: str) -> None:
    """The whole object read, *plan* applied, the whole object written (pydicom)."""
    stream.seek(0)
    dataset = dcmread(stream)
    apply_plan(dataset, plan)
    dataset.save_as(path, enforce_file_format=True)


COPY_CHUNK = 1024 * 1024


def rewrite_all(
    work: Sequence[tuple[ReceivedDocument, Parsed, ReconcilePlan, str]],
) -> list[SplicedInstance | str]:
    splicer = Splicer()  # a batch's instances share what their plans change
    return [rewrite(document, parsed, plan, path, splicer) for document, parsed, plan, path in work]


def size_of(instance: SplicedInstance | str) -> int:
    return instance.size if isinstance(instance, SplicedInstance) else os.path.getsize(instance)


def error_for(errors: Sequence[Any], uid: str) -> tuple[str, str]:
    for error in errors:
        if uid in error.code_context:
            return error.error_code, error.code_context[:500]
    return "XDSDocumentUniqueIdError", f"{uid} was not returned"
