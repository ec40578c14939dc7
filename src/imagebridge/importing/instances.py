"""Import target, the store algorithm every target shares: identify, de-duplicate, batch, report.

:func:`store_new` is the body of every target's ``store``:

1. each instance's header is read (``stop_before_pixels``, in a worker
   thread) for its SOP Class, SOP Instance, Study and Series UIDs and
   transfer syntax (an :class:`~imagebridge.importing.base.IdentifiedFile` or a
   :class:`~imagebridge.importing.base.SplicedInstance` brings them); one
   that is not readable DICOM fails with the reason;
2. an instance whose SOP Instance UID came earlier in the same call is not
   sent twice: it gets the first one's outcome;
3. per study the target is asked what it already holds
   (:meth:`~imagebridge.importing.base.ImportTarget.present`); those
   instances are ``already present`` and not sent.  A caller that has just
   asked (the importer keeps the study's listing for a whole job) gives
   *known_present* instead and the target is not asked again;
4. the rest go out in batches (at most *batch_size* instances and about
   *batch_bytes* bytes each) through the target's *send*;
5. once the target is found unavailable, every instance not yet stored fails
   with that reason at once, without more connection attempts.

Bodies are never joined in memory: paths stay paths, streams are read in
1 MiB chunks (:func:`stream_chunks`) or spooled to a file (:func:`file_of`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from imagebridge.dicom.headers import parse_instance_header, read_instance_header
from imagebridge.errors import DicomError, TargetError, TargetUnavailable
from imagebridge.importing.base import (
    IdentifiedFile,
    ImportInstance,
    ImportStatus,
    InstanceOutcome,
    InstanceStream,
    SplicedInstance,
    StoreReport,
)
from imagebridge.model.imaging import InstanceHeader

logger = logging.getLogger(__name__)

CHUNK_SIZE: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class IdentifiedInstance:
    """One instance to store, with the UIDs read from its header."""

    index: int
    source: ImportInstance
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size: int

    def outcome(self, status: ImportStatus, reason: str = "") -> InstanceOutcome:
        """This instance's outcome."""
        return InstanceOutcome(self.index, self.sop_instance_uid, status, reason)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a target's sender did with one batch.

    An outcome per instance it got to (missing ones count as failed), and,
    when the target went away part-way, why (the rest then fail at once).
    """

    outcomes: list[InstanceOutcome]
    unavailable: str = ""


SendBatch = Callable[[Sequence[IdentifiedInstance]], Awaitable[BatchResult]]
"""Send one batch.  May raise TargetUnavailable / TargetError (the whole batch fails)."""
PresentLookup = Callable[[str], Awaitable[frozenset[str]]]


def identify(index: int, source: ImportInstance) -> IdentifiedInstance:
    """Read the header of one instance (blocking).  Raises DicomError or OSError."""
    if isinstance(source, SplicedInstance):  # known, size included
        return IdentifiedInstance(
            index=index,
            source=source,
            sop_class_uid=source.sop_class_uid,
            sop_instance_uid=source.sop_instance_uid,
            study_instance_uid=source.study_instance_uid,
            series_instance_uid=source.series_instance_uid,
            transfer_syntax_uid=source.transfer_syntax_uid,
            size=source.size,
        )
    if isinstance(source, IdentifiedFile):  # known: only its size is read
        return IdentifiedInstance(
            index=index,
            source=source,
            sop_class_uid=source.sop_class_uid,
            sop_instance_uid=source.sop_instance_uid,
            study_instance_uid=source.study_instance_uid,
            series_instance_uid=source.series_instance_uid,
            transfer_syntax_uid=source.transfer_syntax_uid,
            size=os.path.getsize(source.path),
        )
    if isinstance(source, str | os.PathLike):
        header = read_instance_header(source)
    else:
        with source.open() as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(0)
            header = parse_instance_header(stream, file_size=size)
    return _identified(index, source, header)


def _identified(index: int, source: ImportInstance, header: InstanceHeader) -> IdentifiedInstance:
    return IdentifiedInstance(
        index=index,
        source=source,
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study.study_instance_uid,
        series_instance_uid=header.series.series_instance_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        size=header.file_size or 0,
    )


def _identify_all(
    instances: Sequence[ImportInstance],
) -> list[IdentifiedInstance | InstanceOutcome]:
    found: list[IdentifiedInstance | InstanceOutcome] = []
    for index, source in enumerate(instances):
        try:
            found.append(identify(index, source))
        except DicomError as exc:
            found.append(_unreadable(index, f"not a usable DICOM instance: {exc.message}"))
        except OSError as exc:
            found.append(_unreadable(index, f"cannot be read: {exc.strerror or exc}"))
    return found


def _unreadable(index: int, reason: str) -> InstanceOutcome:
    return InstanceOutcome(index, "", ImportStatus.FAILED, reason)


async def store_new(
    instances: Sequence[ImportInstance],
    *,
    present: PresentLookup,
    send: SendBatch,
    batch_size: int,
    batch_bytes: int,
    target: str,
    known_present: frozenset[str] | None = None,
    parallel: int = 1,
) -> StoreReport:
    """Store what the target lacks, batch by batch; one outcome per instance (see module doc).

    *known_present*: the SOP Instance UIDs the caller knows the target holds
    (instead of asking :meth:`present`); *parallel*: batches sent at once.
    """
    outcomes: dict[int, InstanceOutcome] = {}
    first: dict[str, IdentifiedInstance] = {}
    repeats: list[IdentifiedInstance] = []
    by_study: dict[str, list[IdentifiedInstance]] = {}
    for item in await anyio.to_thread.run_sync(_identify_all, instances):
        if isinstance(item, InstanceOutcome):
            outcomes[item.index] = item
        elif item.sop_instance_uid in first:
            repeats.append(item)
        else:
            first[item.sop_instance_uid] = item
            by_study.setdefault(item.study_instance_uid, []).append(item)

    down = ""  # why the target is unavailable, once it is
    todo: list[IdentifiedInstance] = []
    for study_uid, group in by_study.items():
        held: frozenset[str] = frozenset()
        if known_present is not None:
            held = known_present
        elif not down:
            try:
                held = await present(study_uid)
            except TargetError as exc:
                down = exc.message if isinstance(exc, TargetUnavailable) else down
                _fail(outcomes, group, f"cannot ask the target what it holds: {exc.message}")
                continue
        for item in group:
            if item.sop_instance_uid in held:
                outcomes[item.index] = item.outcome(ImportStatus.ALREADY_PRESENT)
            else:
                todo.append(item)

    down = await _send_all(
        outcomes, list(batches(todo, batch_size, batch_bytes)), send, down, parallel
    )

    for item in repeats:
        earlier = outcomes[first[item.sop_instance_uid].index]
        status = ImportStatus.FAILED
        if earlier.status is not ImportStatus.FAILED:
            status = ImportStatus.ALREADY_PRESENT
        reason = f"same SOP Instance UID as instance #{earlier.index} of this request"
        outcomes[item.index] = item.outcome(status, reason)

    report = StoreReport(tuple(outcomes[i] for i in range(len(instances))))
    logger.info(
        "import target %s: %d stored, %d already present, %d failed",
        target,
        len(report.stored),
        len(report.already_present),
        len(report.failed),
    )
    return report


async def _send_all(
    outcomes: dict[int, InstanceOutcome],
    todo: list[list[IdentifiedInstance]],
    send: SendBatch,
    down: str,
    parallel: int,
) -> str:
    """Send every batch, *parallel* at once; once the target is down the rest fail at once."""
    state = {"down": down}

    async def one(batch: list[IdentifiedInstance]) -> None:
        if state["down"]:
            _fail(outcomes, batch, state["down"])
            return
        try:
            result = await send(batch)
        except TargetUnavailable as exc:
            state["down"] = exc.message
            _fail(outcomes, batch, exc.message)
            return
        except TargetError as exc:
            _fail(outcomes, batch, exc.message)
            return
        if result.unavailable:
            state["down"] = result.unavailable
        answered = {r.index: r for r in result.outcomes}
        reason = result.unavailable or "the target did not report this instance as stored"
        for item in batch:
            outcomes[item.index] = answered.get(item.index) or item.outcome(
                ImportStatus.FAILED, reason
            )

    if parallel <= 1 or len(todo) <= 1:
        for batch in todo:
            await one(batch)
        return state["down"]
    limiter = anyio.CapacityLimiter(parallel)

    async def limited(batch: list[IdentifiedInstance]) -> None:
        async with limiter:
            await one(batch)

    async with anyio.create_task_group() as tasks:
        for batch in todo:
            tasks.start_soon(limited, batch)
    return state["down"]


def _fail(
    outcomes: dict[int, InstanceOutcome], items: Sequence[IdentifiedInstance], reason: str
) -> None:
    for item in items:
        outcomes[item.index] = item.outcome(ImportStatus.FAILED, reason)


def batches(
    items: Sequence[IdentifiedInstance], batch_size: int, batch_bytes: int
) -> Iterator[list[IdentifiedInstance]]:
    """Consecutive batches of at most *batch_size* instances and *batch_bytes* (one at least)."""
    batch: list[IdentifiedInstance] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= batch_size or size + item.size > batch_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch


async def stream_chunks(source: InstanceStream) -> AsyncIterator[bytes]:
    """The bytes of a stream instance, 1 MiB at a time, read in a worker thread."""
    stream = await anyio.to_thread.run_sync(source.open)
    try:
        while chunk := await anyio.to_thread.run_sync(stream.read, CHUNK_SIZE):
            yield chunk
    finally:
        stream.close()


@contextmanager
def file_of(source: ImportInstance, spool_dir: str | None = None) -> Iterator[Path]:
    """A file holding the instance (blocking): its own path, or a spool file removed afterwards."""
    if isinstance(source, str | os.PathLike):
        yield Path(source)
        return
    spooled = None if isinstance(source, SplicedInstance) else getattr(source, "path", None)
    # ^ a SpooledBody on disk is its own file
    if isinstance(spooled, str) and spooled:
        yield Path(spooled)
        return
    fd, name = tempfile.mkstemp(prefix="imagebridge-import-", suffix=".dcm", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out, source.open() as stream:
            shutil.copyfileobj(stream, out, CHUNK_SIZE)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
