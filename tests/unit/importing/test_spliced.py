"""Import target, a spliced instance (new head in memory, the rest in a received body):
identified without being read, and stored as its bytes by every kind of target."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
from pydicom import dcmread

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.importing import stow
from imagebridge.importing.base import ImportStatus, SplicedInstance
from imagebridge.importing.config import FolderTargetConfig
from imagebridge.importing.folder import FolderTarget
from imagebridge.importing.instances import (
    BatchResult,
    IdentifiedInstance,
    file_of,
    store_new,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Body:
    """A received body on disk (as a spooled part: it has a path, its own bytes)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.opened = 0

    def open(self) -> BinaryIO:
        self.opened += 1
        return open(self.path, "rb")


def spliced(path: Path, head: bytes, offset: int) -> tuple[SplicedInstance, Body, bytes]:
    """A spliced instance of *path*: *head*, then the file from *offset*; and its bytes."""
    header = read_instance_header(path)
    body = Body(path)
    data = head + path.read_bytes()[offset:]
    instance = SplicedInstance(
        head=head,
        rest=body,
        offset=offset,
        size=len(data),
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study.study_instance_uid,
        series_instance_uid=header.series.series_instance_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
    )
    return instance, body, data


def one_file(tmp_path: Path) -> Path:
    return make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]


def test_a_spliced_instance_opens_as_its_bytes(tmp_path: Path) -> None:
    path = one_file(tmp_path)
    raw = path.read_bytes()
    instance, body, data = spliced(path, raw[:500], 500)
    assert data == raw
    with instance.open() as stream:
        assert stream.read(10) == raw[:10]
        assert stream.read() == raw[10:]
    instance, body, data = spliced(path, b"HEAD", 1000)
    with instance.open() as stream:
        assert stream.read() == b"HEAD" + raw[1000:]
    assert instance.read_tail() == raw[1000:]
    assert body.opened == 2


async def test_a_spliced_instance_is_identified_without_being_read(tmp_path: Path) -> None:
    path = one_file(tmp_path)
    instance, body, data = spliced(path, b"", 0)
    got: list[IdentifiedInstance] = []

    async def present(study_uid: str) -> frozenset[str]:
        return frozenset()

    async def send(batch: Sequence[IdentifiedInstance]) -> BatchResult:
        got.extend(batch)
        return BatchResult([i.outcome(ImportStatus.STORED) for i in batch])

    report = await store_new(
        [instance], present=present, send=send, batch_size=5, batch_bytes=1 << 30, target="t"
    )
    assert report.stored == {instance.sop_instance_uid}
    assert body.opened == 0
    assert got[0].size == len(data) and got[0].source is instance


def test_a_spliced_instance_given_as_a_file_is_its_bytes_not_its_rest(tmp_path: Path) -> None:
    path = one_file(tmp_path)
    raw = path.read_bytes()
    instance, _, data = spliced(path, raw[:132] + b"\0" * 10, 132)  # not the rest's file
    with file_of(instance, str(tmp_path)) as written:
        assert written != path and written.read_bytes() == data
    assert not written.exists()


async def test_the_folder_target_writes_the_spliced_bytes(tmp_path: Path) -> None:
    path = one_file(tmp_path)
    raw = path.read_bytes()
    ds = dcmread(path)
    ds.PatientComments = "spliced"  # any different head
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    new = out.getvalue()
    pixels = raw.index(b"\xe0\x7f\x10\x00")
    instance, _, data = spliced(path, new[: new.index(b"\xe0\x7f\x10\x00")], pixels)
    assert data == new
    target = FolderTarget(FolderTargetConfig(root=tmp_path / "pacs"))
    report = await target.store([instance])
    assert report.stored == {instance.sop_instance_uid}
    (stored,) = (tmp_path / "pacs").rglob("*.dcm")
    assert stored.read_bytes() == new
    assert dcmread(stored).PatientComments == "spliced"


async def test_stow_sends_the_head_then_the_rest(tmp_path: Path) -> None:
    path = one_file(tmp_path)
    raw = path.read_bytes()
    instance, _, data = spliced(path, b"NEWHEAD", 2000)
    body = stow._body(instance, instance.size)
    chunks = [c async for c in body]  # type: ignore[union-attr]
    assert chunks == [b"NEWHEAD", raw[2000:]]
    big = SplicedInstance(**{**_fields(instance), "size": stow.READ_WHOLE + 1})
    chunks = [c async for c in stow._body(big, big.size)]  # type: ignore[union-attr]
    assert b"".join(chunks) == data  # streamed in chunks


def _fields(instance: SplicedInstance) -> dict[str, object]:
    return {name: getattr(instance, name) for name in SplicedInstance.__slots__}
