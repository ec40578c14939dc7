"""Imaging Document Source, folder archive: incremental indexing, streaming, safety rules."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.errors import InstanceNotFound, SourceUnavailable
from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import DicomPatient
from imagebridge.model.index import FileResult
from imagebridge.sources.base import ImageSource
from imagebridge.sources.folder import CHUNK_SIZE, FolderSource
from imagebridge.sources.indexer import sync_once, while_leading
from imagebridge.store import Store
from imagebridge.store.leases import ServiceLeases

REPO = "1.3.6.1.4.1.21367.13.71.201.1"
AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
NATIVE = "1.2.840.10008.1.2.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'index.db'}", default_assigning_authority=AUTHORITY)
    yield opened
    opened.close()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """Three synthetic studies: CT and MR of Alice, CR of Bob (2 + 30 + 2 files, 20 CT slices)."""
    root = tmp_path / "archive"
    make_study(DEMO_PATIENTS[0], root / "alice-ct", modality="CT", seed=1, instances=2)
    make_study(DEMO_PATIENTS[0], root / "alice-mr", modality="MR", seed=2)
    make_study(DEMO_PATIENTS[1], root / "bob-cr", modality="CR", seed=3)
    return root


async def _drain(chunks: object) -> bytes:
    data = bytearray()
    async for chunk in chunks:  # type: ignore[attr-defined]
        data += chunk
    return bytes(data)


@pytest.mark.anyio
async def test_folder_source_is_an_image_source(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    assert isinstance(source, ImageSource)
    assert (source.kind, source.repository_unique_id) == ("folder", REPO)


@pytest.mark.anyio
async def test_indexes_synthetic_studies(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store, batch_size=7)
    report = await source.sync()
    assert (report.seen, report.read, report.indexed, report.unchanged) == (34, 34, 34, 0)
    alice = PatientId("DEMO-0001", "2.25.1")
    studies = store.studies_for_patient(alice)
    assert sorted(s.modalities for s in studies) == [("CT",), ("MR",)]
    assert sorted(s.number_of_instances for s in studies) == [2, 30]
    versions = await source.patient_studies("DEMO-0002")
    assert [v.number_of_instances for v in versions] == [2]
    mr = next(s for s in studies if s.modalities == ("MR",))
    headers = await source.study_instances(mr.study_instance_uid)
    on_disk = {read_instance_header(p) for p in (archive / "alice-mr").rglob("*.dcm")}
    assert set(headers) == on_disk
    assert sum(h.file_size or 0 for h in headers) == mr.total_size
    everything = [h async for h in source.iter_instances()]
    assert len(everything) == 34
    probe = await source.probe()
    assert probe.ok and "34 files indexed, 3 studies, 34 instances" in probe.detail


@pytest.mark.anyio
async def test_incremental_sync(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    untouched = await source.sync()
    assert (untouched.seen, untouched.unchanged, untouched.read, untouched.indexed) == (
        34,
        34,
        0,
        0,
    )

    make_study(DEMO_PATIENTS[2], archive / "carol-cr", modality="CR", seed=4, instances=1)
    added = await source.sync()
    assert (added.read, added.indexed, added.unchanged) == (1, 1, 34)
    carol = store.studies_for_dicom_patient_id("DEMO-0003")
    assert [s.number_of_instances for s in carol] == [1]

    victim = archive / "alice-ct" / "series-001" / "00001.dcm"
    sop = read_instance_header(victim).sop_instance_uid
    victim.unlink()
    removed = await source.sync()
    assert (removed.removed, removed.read) == (1, 0)
    assert store.instance_location(sop) is None

    (archive / "notes.txt").write_text("not an image")
    (archive / "DICOMDIR-like.bin").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    skipped = await source.sync()
    assert (skipped.read, skipped.not_dicom, skipped.indexed) == (2, 2, 0)
    files = store.indexed_files(REPO)
    assert files["notes.txt"].result is FileResult.NOT_DICOM
    assert "not a DICOM" in files["notes.txt"].error or files["notes.txt"].error
    again = await source.sync()
    assert (again.read, again.not_dicom) == (0, 0)

    (archive / "notes.txt").write_text("changed, and longer than before")
    changed = await source.sync()
    assert (changed.read, changed.not_dicom) == (1, 1)


@pytest.mark.anyio
async def test_changed_file_with_same_size_is_reread(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    path = archive / "bob-cr" / "series-001" / "00001.dcm"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    report = await source.sync()
    assert (report.read, report.indexed) == (1, 1)


@pytest.mark.anyio
async def test_duplicate_file_keeps_the_first_and_takes_over_when_it_goes(
    archive: Path, store: Store
) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    original = archive / "bob-cr" / "series-001" / "00001.dcm"
    copy = archive / "zz-copies" / "copy.dcm"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    sop = read_instance_header(original).sop_instance_uid
    report = await source.sync()
    assert (report.read, report.duplicates, report.indexed) == (1, 1, 0)
    assert store.indexed_files(REPO)["zz-copies/copy.dcm"].result is FileResult.DUPLICATE
    assert store.instance_location(sop).path == "bob-cr/series-001/00001.dcm"  # type: ignore[union-attr]
    assert (await source.sync()).read == 0
    original.unlink()
    report = await source.sync()
    assert (report.removed, report.read, report.indexed, report.duplicates) == (1, 1, 1, 0)
    assert store.instance_location(sop).path == "zz-copies/copy.dcm"  # type: ignore[union-attr]
    assert store.repository_counts(REPO).instances == 34


@pytest.mark.anyio
async def test_renamed_file_keeps_its_instance(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    old = archive / "bob-cr" / "series-001" / "00002.dcm"
    sop = read_instance_header(old).sop_instance_uid
    old.rename(archive / "bob-cr" / "renamed.dcm")
    report = await source.sync()
    assert (report.removed, report.read, report.indexed, report.duplicates) == (1, 1, 1, 0)
    assert store.instance_location(sop).path == "bob-cr/renamed.dcm"  # type: ignore[union-attr]
    assert store.repository_counts(REPO).instances == 34


@pytest.mark.anyio
async def test_hidden_files_and_unindexable_dicom(archive: Path, store: Store) -> None:
    shutil.copy(archive / "bob-cr" / "series-001" / "00001.dcm", archive / ".partial.dcm")
    make_study(DicomPatient("NO^ID", ""), archive / "no-id", modality="CR", seed=5, instances=1)
    source = FolderSource(REPO, archive, store)
    report = await source.sync()
    assert (report.seen, report.errors, report.indexed) == (35, 1, 34)
    entry = store.indexed_files(REPO)["no-id/series-001/00001.dcm"]
    assert entry.result is FileResult.ERROR and "Patient ID" in entry.error
    assert (await source.sync()).read == 0


@pytest.mark.anyio
async def test_read_instance_streams_the_file(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    path = archive / "alice-mr" / "series-002" / "00003.dcm"
    header = read_instance_header(path)
    uids = (header.study.study_instance_uid, header.series.series_instance_uid)
    data = await _drain(source.read_instance(*uids, header.sop_instance_uid))
    assert data == path.read_bytes()
    with pytest.raises(InstanceNotFound):
        await _drain(source.read_instance(*uids, "1.2.3.4"))
    with pytest.raises(InstanceNotFound):
        await _drain(source.read_instance("1.2.3", uids[1], header.sop_instance_uid))
    path.unlink()
    with pytest.raises(SourceUnavailable, match="cannot be read"):
        await _drain(source.read_instance(*uids, header.sop_instance_uid))


@pytest.mark.anyio
async def test_large_file_streams_in_chunks(tmp_path: Path, store: Store) -> None:
    study = make_study(
        DEMO_PATIENTS[0], tmp_path / "big", modality="CT", instances=1, rows=1024, columns=1024
    )
    source = FolderSource(REPO, tmp_path / "big", store)
    await source.sync()
    header = read_instance_header(study.files[0])
    sizes = [
        len(chunk)
        async for chunk in source.read_instance(
            header.study.study_instance_uid,
            header.series.series_instance_uid,
            header.sop_instance_uid,
        )
    ]
    assert sizes[:2] == [CHUNK_SIZE, CHUNK_SIZE] and len(sizes) == 3
    assert sum(sizes) == study.total_bytes


@pytest.mark.anyio
async def test_missing_or_emptied_folder_leaves_the_index_alone(
    archive: Path, tmp_path: Path, store: Store
) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    moved = tmp_path / "elsewhere"
    archive.rename(moved)
    with pytest.raises(SourceUnavailable, match="missing"):
        await source.sync()
    probe = await source.probe()
    assert not probe.ok and "missing" in probe.detail
    archive.mkdir()
    with pytest.raises(SourceUnavailable, match="empty"):
        await source.sync()
    assert store.repository_counts(REPO).instances == 34
    report = await source.sync(allow_empty=True)
    assert report.removed == 34
    assert store.repository_counts(REPO) == store.repository_counts("nothing")


@pytest.mark.anyio
async def test_watch_indexes_files_as_they_arrive(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    async with anyio.create_task_group() as group:
        leases = ServiceLeases(store.engine)
        group.start_soon(
            partial(while_leading, leases, f"index:{REPO}", 0.05, partial(sync_once, source))
        )
        make_study(DEMO_PATIENTS[2], archive / "carol", modality="CR", seed=6)
        with anyio.fail_after(10):
            while not store.studies_for_dicom_patient_id("DEMO-0003"):
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()
    assert store.repository_counts(REPO).instances == 36


@pytest.mark.anyio
async def test_nist_images_keep_every_transfer_syntax(conformance_dir: Path, store: Store) -> None:
    root = conformance_dir / "nist-images" / "sim"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    source = FolderSource(REPO, root, store)
    report = await source.sync()
    assert (report.seen, report.indexed, report.errors, report.not_dicom) == (
        len(files),
        len(files),
        0,
        0,
    )
    counts = store.repository_counts(REPO)
    assert counts.representations == len(files)
    instance_folders = {p.parent for p in files}
    assert counts.instances == len(instance_folders)
    assert counts.studies == len({p.parent.parent.parent for p in files})
    for path in files[:8]:
        transfer_syntax = path.name
        sop = path.parent.name
        series_uid = path.parent.parent.name
        study_uid = path.parent.parent.parent.name
        locations = store.instance_locations(sop, REPO)
        assert {loc.transfer_syntax_uid for loc in locations} == {
            p.name for p in path.parent.iterdir()
        }
        assert locations[0].transfer_syntax_uid == NATIVE
        data = await _drain(source.read_instance(study_uid, series_uid, sop, transfer_syntax))
        assert data == path.read_bytes()
    for study_uid in store.repository_study_uids(REPO):
        headers = await source.study_instances(study_uid)
        assert len({h.sop_instance_uid for h in headers}) == len(headers)
        assert all(h.transfer_syntax_uid == NATIVE for h in headers)
    assert (await source.sync()).read == 0


@pytest.mark.anyio
async def test_files_still_being_written_wait_for_min_age(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store, min_age=3600)
    first = await source.sync()
    assert (first.settling, first.read, first.unchanged) == (34, 0, 0)
    hour_ago = time.time_ns() - 3_700 * 1_000_000_000
    for path in archive.rglob("*.dcm"):
        os.utime(path, ns=(hour_ago, hour_ago))
    second = await source.sync()
    assert (second.settling, second.read, second.indexed) == (0, 34, 34)


@pytest.mark.anyio
async def test_file_overwritten_with_another_instance(archive: Path, store: Store) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    first = archive / "bob-cr" / "series-001" / "00001.dcm"
    second = archive / "bob-cr" / "series-001" / "00002.dcm"
    lost = read_instance_header(first)
    shutil.copy(second, first)
    os.utime(first, ns=(1, 1_000_000_000))
    report = await source.sync()
    assert (report.read, report.duplicates, report.indexed) == (1, 1, 0)
    assert store.instance_location(lost.sop_instance_uid) is None
    study = store.study(lost.study.study_instance_uid)
    assert study is not None and study.number_of_instances == 1
    assert store.indexed_files(REPO)["bob-cr/series-001/00001.dcm"].result is FileResult.DUPLICATE


@pytest.mark.anyio
async def test_read_whole_reads_several_files_and_reports_each_failure(
    archive: Path, store: Store
) -> None:
    source = FolderSource(REPO, archive, store)
    await source.sync()
    paths = sorted((archive / "alice-mr" / "series-002").glob("*.dcm"))[:3]
    sops = [read_instance_header(p).sop_instance_uid for p in paths]
    locations = [store.instance_locations(sop, REPO)[0] for sop in sops]
    paths[1].unlink()
    read = await source.read_whole(locations)
    assert read[0] == paths[0].read_bytes()
    assert isinstance(read[1], SourceUnavailable)
    assert read[2] == paths[2].read_bytes()
    other = FolderSource("1.2.3.4.5", archive, store)
    assert isinstance((await other.read_whole(locations[:1]))[0], InstanceNotFound)
