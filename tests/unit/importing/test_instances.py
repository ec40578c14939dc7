"""Import target, the shared store algorithm: identification, de-duplication, batches, outage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.errors import TargetUnavailable
from imagebridge.importing.base import ImportStatus
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
