"""Imaging Document Consumer, the stages of an import job run: what travels between them.

:class:`~imagebridge.actors.initiating.importer.ImportRunner` runs three
stages, one batch in each (retrieve, plan and rewrite, store and mark);
these are the values handed from one stage to the next, and the DICOM
rewrite that puts the reconciled header in front of the original pixel
data bytes (copied as they are when the file allows it, else a full
read and write).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebridge.actors.initiating.client import ReceivedDocument, RetrieveResult
from imagebridge.dicom.headers import instance_header_from_dataset
from imagebridge.dicom.reconcile_apply import apply_plan
from imagebridge.errors import NotDicom
from imagebridge.importing.base import (
    HeldInstance,
    IdentifiedFile,
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
    paths: list[str] = field(default_factory=list)
    parsed: dict[str, Parsed] = field(default_factory=dict)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    hold: str | None = None
    error: Exception | None = None

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

    *tail* is where its Pixel Data element starts when that element, of
    defined length, ends the file in a little endian uncompressed syntax: the
    rewritten header is then followed by those bytes as they are.
    """

    header: InstanceHeader
    dataset: Dataset
    tail: int | None


SPLICEABLE: dict[str, bool] = {
    str(ImplicitVRLittleEndian): True,
    str(ExplicitVRLittleEndian): False,
}
"""Syntaxes whose pixel data can be copied after a rewritten header -> implicit VR."""
PIXEL_DATA_LE = struct.pack("<HH", 0x7FE0, 0x0010)
PIXEL_TAGS = frozenset(
    struct.pack(fmt, 0x7FE0, element) for fmt in ("<HH", ">HH") for element in (0x10, 0x08, 0x09)
)
UNDEFINED = 0xFFFFFFFF


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
        head = stream.read(12)
    header = instance_header_from_dataset(
        dataset, has_pixel_data=head[:4] in PIXEL_TAGS, file_size=size
    )
    return Parsed(header, dataset, tail(dataset, at, head, size))


def tail(dataset: Dataset, at: int, head: bytes, size: int) -> int | None:
    syntax = str(getattr(dataset, "file_meta", Dataset()).get("TransferSyntaxUID", ""))
    implicit = SPLICEABLE.get(syntax)
    if implicit is None or head[:4] != PIXEL_DATA_LE:
        return None
    if implicit:
        length, start = struct.unpack("<I", head[4:8])[0], 8
    elif len(head) == 12 and head[4:6] in (b"OB", b"OW"):
        length, start = struct.unpack("<I", head[8:12])[0], 12
    else:
        return None
    if length == UNDEFINED or at + start + length != size:
        return None  # encapsulated, or elements after the pixel data: rewritten whole
    return at


def parse_all(received: dict[str, ReceivedDocument]) -> dict[str, Parsed]:
    return {uid: parse(document) for uid, document in received.items()}


def rewrite(document: ReceivedDocument, parsed: Parsed, plan: ReconcilePlan, path: str) -> None:
    """Apply *plan* to the received instance and write it to *path* (pixel data untouched).

    The pixel data is not decoded: it is copied byte for byte after the
    rewritten header (or, when that is not safe, the whole file is read and written).
    """
    if parsed.tail is None:
        with document.open() as stream:
            dataset = dcmread(stream)
        apply_plan(dataset, plan)
        dataset.save_as(path, enforce_file_format=True)
        return
    apply_plan(parsed.dataset, plan)
    with open(path, "wb") as out:
        parsed.dataset.save_as(out, enforce_file_format=True)
        with document.open() as stream:
            stream.seek(parsed.tail)
            shutil.copyfileobj(stream, out, COPY_CHUNK)


COPY_CHUNK = 1024 * 1024


def rewrite_all(work: Sequence[tuple[ReceivedDocument, Parsed, ReconcilePlan, str]]) -> None:
    for document, parsed, plan, path in work:
        rewrite(document, parsed, plan, path)


def error_for(errors: Sequence[Any], uid: str) -> tuple[str, str]:
    for error in errors:
        if uid in error.code_context:
            return error.error_code, error.code_context[:500]
    return "XDSDocumentUniqueIdError", f"{uid} was not returned"
