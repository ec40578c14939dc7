"""Import target, the shared store algorithm: identification, de-duplication, batches, outage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.errors import TargetUnavailable
from imagebridge.importing.base import IdentifiedFile, ImportStatus
from imagebridge.importing.instances import (
    BatchResult,
    IdentifiedInstance,
    batches,
    store_new,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _item(index: int, size: int) -> IdentifiedInstance:
    return IdentifiedInstance(index, "x", "1.2", f"2.25.{index}", "2.25.9", "2.25.8", "", size)


def test_batches_respect_count_and_bytes() -> None:
    items = [_item(i, 10) for i in range(7)]
    assert [len(b) for b in batches(items, 3, 1000)] == [3, 3, 1]
    assert [len(b) for b in batches(items, 100, 25)] == [2, 2, 2, 1]
    assert [len(b) for b in batches([_item(0, 99)], 5, 10)] == [1]  # one too big still goes


async def test_outage_fails_the_rest_without_more_attempts(tmp_path: Path) -> None:
    study = make_study(DEMO_PATIENTS[0], tmp_path, instances=6)
    calls: list[int] = []

    async def present(study_uid: str) -> frozenset[str]:
        return frozenset()

    async def send(batch: Sequence[IdentifiedInstance]) -> BatchResult:
        calls.append(len(batch))
        if len(calls) == 1:
            return BatchResult([batch[0].outcome(ImportStatus.STORED)], "PACS went away")
        raise TargetUnavailable("not reached")

    report = await store_new(
        study.files, present=present, send=send, batch_size=2, batch_bytes=1 << 30, target="t"
    )
    assert calls == [2]
    assert len(report.stored) == 1
    assert [o.reason for o in report.failed] == ["PACS went away"] * 5


async def test_known_present_skips_the_targets_own_lookup(tmp_path: Path) -> None:
    study = make_study(DEMO_PATIENTS[0], tmp_path, instances=4)
    held = read_instance_header(study.files[0]).sop_instance_uid
    sent: list[str] = []

    async def present(study_uid: str) -> frozenset[str]:
        raise AssertionError("the caller said what the target holds: not asked again")

    async def send(batch: Sequence[IdentifiedInstance]) -> BatchResult:
        sent.extend(i.sop_instance_uid for i in batch)
        return BatchResult([i.outcome(ImportStatus.STORED) for i in batch])

    report = await store_new(
        study.files,
        present=present,
        send=send,
        batch_size=2,
        batch_bytes=1 << 30,
        target="t",
        known_present=frozenset({held}),
    )
    assert report.already_present == {held}
    assert len(report.stored) == 3 and held not in sent


async def test_an_identified_file_is_not_read_and_batches_may_overlap(tmp_path: Path) -> None:
    study = make_study(DEMO_PATIENTS[0], tmp_path, instances=4)
    headers = [read_instance_header(p) for p in study.files]
    garbage = tmp_path / "not-dicom.dcm"  # identity given: the header is never parsed
    garbage.write_bytes(b"x" * 10)
    files = [
        IdentifiedFile(
            str(garbage if i == 0 else p),
            h.sop_class_uid,
            h.sop_instance_uid,
            h.study.study_instance_uid,
            h.series.series_instance_uid,
            h.transfer_syntax_uid,
        )
        for i, (p, h) in enumerate(zip(study.files, headers, strict=True))
    ]
    in_flight = [0, 0]

    async def present(study_uid: str) -> frozenset[str]:
        return frozenset()

    async def send(batch: Sequence[IdentifiedInstance]) -> BatchResult:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await anyio.sleep(0.01)
        in_flight[0] -= 1
        return BatchResult([i.outcome(ImportStatus.STORED) for i in batch])

    report = await store_new(
        files, present=present, send=send, batch_size=1, batch_bytes=1 << 30, target="t",
        parallel=2,
    )  # fmt: skip
    assert report.stored == {h.sop_instance_uid for h in headers}
    assert in_flight[1] == 2
