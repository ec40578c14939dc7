"""Import targets (local folder, PACS over STOW-RS, PACS over C-STORE) against a real Orthanc.

Every behaviour is checked for the three targets through the same
:class:`Harness`, which looks at the target from the outside: the folder
tree on disk, or Orthanc's own REST API (never the target's own queries).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from pydicom import dcmread

from imagebridge.dicom.synthetic import DEMO_ISSUER, SyntheticStudy, make_study
from imagebridge.errors import TargetUnavailable
from imagebridge.importing import (
    CStoreTargetConfig,
    FolderTargetConfig,
    ImportStatus,
    ImportTarget,
    PatientDemographics,
    StowTargetConfig,
    open_target,
)
from imagebridge.importing.folder import instance_path
from imagebridge.model.imaging import DicomPatient
from imagebridge.wire.spool import SpooledBody
from tests.integration.orthanc import OrthancServer, start_orthanc

pytestmark = pytest.mark.anyio

KINDS = ("folder", "stow", "cstore")
MULLER = DicomPatient("MÜLLER^JOSÉ", "IB-IMP-0001", DEMO_ISSUER, "19620315", "M")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _patient(number: int) -> DicomPatient:
    return DicomPatient(f"IMPORT^CASE{number}", f"IB-IMP-{number:04d}", DEMO_ISSUER, "19700101")


def _sops(study: SyntheticStudy) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study.files}


def _after_meta(data: bytes) -> bytes:
    """The data set bytes of a Part-10 object: after the preamble and File Meta group."""
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, explicit VR
    return data[144 + group_length :]


@dataclass
class Harness:
    """One target under test, and a view of what it holds that does not go through it."""

    kind: str
    target: ImportTarget
    orthanc: OrthancServer | None
    root: Path | None

    def held(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs the target holds for a study, seen from outside."""
        if self.root is not None:
            study = self.root / study_uid
            return {p.stem for p in study.glob("*/*.dcm")} if study.is_dir() else set()
        assert self.orthanc is not None
        response = httpx.post(
            f"{self.orthanc.base_url}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
            timeout=30.0,
        )
        response.raise_for_status()
        return {item["MainDicomTags"]["SOPInstanceUID"] for item in response.json()}

    def stored(self, path: Path) -> bytes:
        """The bytes the target keeps for the instance of the file at *path*."""
        ds = dcmread(path, stop_before_pixels=True)
        if self.root is not None:
            uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            return instance_path(self.root, *uids).read_bytes()
        assert self.orthanc is not None
        return self.orthanc.stored_file(ds.SOPInstanceUID)

    def same_instance(self, path: Path) -> bool:
        """Byte-identical file (folder, STOW-RS) or data set after the meta group (C-STORE)."""
        sent, kept = path.read_bytes(), self.stored(path)
        if self.kind == "cstore":  # the receiver writes its own File Meta Information
            return _after_meta(sent) == _after_meta(kept)
        return sent == kept

    def remove(self, path: Path) -> None:
        """Delete one instance at the target, behind its back."""
        ds = dcmread(path, stop_before_pixels=True)
        if self.root is not None:
            uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            instance_path(self.root, *uids).unlink()
        else:
            assert self.orthanc is not None
            self.orthanc.delete_instance(ds.SOPInstanceUID)


def _config(
    kind: str, orthanc: OrthancServer, root: Path
) -> FolderTargetConfig | StowTargetConfig | CStoreTargetConfig:
    if kind == "folder":
        return FolderTargetConfig(root)
    if kind == "stow":
        return StowTargetConfig(orthanc.dicomweb_url, batch_size=5, connect_timeout=2.0)
    return CStoreTargetConfig(
        "127.0.0.1",
        orthanc.dicom_port,
        orthanc.aet,
        orthanc.scu_aet,
        batch_size=5,
        connect_timeout=2.0,
    )


@pytest.fixture(params=KINDS)
async def harness(
    request: pytest.FixtureRequest, orthanc: OrthancServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    kind: str = request.param
    root = tmp_path / "target" if kind == "folder" else None
    target = open_target(_config(kind, orthanc, tmp_path / "target"))
    yield Harness(kind, target, None if root else orthanc, root)
    await target.aclose()


def _seed(harness: Harness, base: int) -> int:
    return base + KINDS.index(harness.kind)


# --- storing ---------------------------------------------------------------------------


async def test_store_puts_exactly_the_study_at_the_target(harness: Harness, tmp_path: Path) -> None:
    seed = _seed(harness, 7100)
    study = make_study(_patient(seed), tmp_path / "study", instances=12, seed=seed)
    expected = _sops(study)

    assert isinstance(harness.target, ImportTarget)
    report = await harness.target.store(study.files)

    assert report.ok, report.failed
    assert [o.index for o in report.outcomes] == list(range(12))
    assert report.stored == expected
    assert harness.held(study.study_instance_uid) == expected
    assert await harness.target.present(study.study_instance_uid) == expected
    assert all(harness.same_instance(path) for path in study.files)


async def test_storing_again_sends_only_what_is_missing(harness: Harness, tmp_path: Path) -> None:
    seed = _seed(harness, 7200)
    study = make_study(_patient(seed), tmp_path / "study", instances=12, seed=seed)
    expected = _sops(study)
    assert (await harness.target.store(study.files)).stored == expected
    total = harness.orthanc.instance_count() if harness.orthanc else None

    again = await harness.target.store(study.files)
    assert again.ok
    assert again.stored == frozenset()
    assert again.already_present == expected
    assert harness.held(study.study_instance_uid) == expected
    if harness.orthanc is not None:
        assert harness.orthanc.instance_count() == total

    harness.remove(study.files[3])  # lost at the target: only that one is sent again
    third = await harness.target.store(study.files)
    assert third.stored == {str(dcmread(study.files[3]).SOPInstanceUID)}
    assert len(third.already_present) == 11
    assert harness.held(study.study_instance_uid) == expected


async def test_a_corrupt_file_fails_alone(harness: Harness, tmp_path: Path) -> None:
    seed = _seed(harness, 7300)
    study = make_study(_patient(seed), tmp_path / "study", instances=6, seed=seed)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\x00" * 128 + b"NOT DICOM AT ALL" * 64)
    as_stream = SpooledBody(study.files[1].stat().st_size, data=study.files[1].read_bytes())
    instances = [study.files[0], as_stream, corrupt, *study.files[2:], study.files[0]]

    report = await harness.target.store(instances)

    expected = _sops(study)
    by_index = {o.index: o for o in report.outcomes}
    assert by_index[2].status is ImportStatus.FAILED
    assert "DICOM" in by_index[2].reason
    assert by_index[1].status is ImportStatus.STORED  # the stream was read like a file
    assert by_index[7].status is ImportStatus.ALREADY_PRESENT  # repeated in the request
    assert "same SOP Instance UID" in by_index[7].reason
    assert report.stored == expected
    assert len(report.failed) == 1
    assert harness.held(study.study_instance_uid) == expected


async def test_a_target_that_is_down_fails_every_instance_with_the_reason(
    tmp_path: Path, orthanc: OrthancServer
) -> None:
    study = make_study(_patient(7400), tmp_path / "study", instances=4, seed=7400)
    down = start_orthanc(tmp_path / "orthanc-down")
    down.kill()
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")
    configs = {
        "folder": FolderTargetConfig(blocked / "images"),
        "stow": _config("stow", down, tmp_path),
        "cstore": _config("cstore", down, tmp_path),
    }
    for kind, config in configs.items():
        target = open_target(config)
        try:
            started = time.monotonic()
            report = await target.store(study.files)
            assert time.monotonic() - started < 30, kind
            assert len(report.failed) == 4, kind
            reasons = {o.reason for o in report.failed}
            assert len(reasons) == 1, (kind, reasons)
            (reason,) = reasons
            if kind == "folder":
                assert "cannot be created" in reason
            else:
                assert "cannot be reached" in reason, (kind, reason)
                with pytest.raises(TargetUnavailable):
                    await target.present(study.study_instance_uid)
        finally:
            await target.aclose()


# --- looking at the target -----------------------------------------------------------


async def test_objects_tell_what_the_target_holds_and_for_whom(
    harness: Harness, tmp_path: Path
) -> None:
    seed = _seed(harness, 7500)
    patient = _patient(seed)
    study = make_study(patient, tmp_path / "study", modality="MR", instances=2, seed=seed)
    await harness.target.store(study.files)
    first = dcmread(study.files[0], stop_before_pixels=True)

    (one,) = await harness.target.objects(sop_instance_uid=first.SOPInstanceUID)
    assert one.study_instance_uid == study.study_instance_uid
    assert one.series_instance_uid == first.SeriesInstanceUID
    assert one.patient_id == patient.id
    assert one.issuer is not None
    assert one.issuer.local_namespace == DEMO_ISSUER.local_namespace

    whole = await harness.target.objects(study_instance_uid=study.study_instance_uid)
    assert {o.sop_instance_uid for o in whole} == _sops(study)
    assert {o.patient_id for o in whole} == {patient.id}
    series = await harness.target.objects(
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=first.SeriesInstanceUID,
    )
    assert len(series) == 2
    assert await harness.target.objects(sop_instance_uid="2.25.1234567") == []
    assert await harness.target.present("2.25.1234567") == frozenset()


async def test_find_patients_by_demographics(harness: Harness, tmp_path: Path) -> None:
    seed = _seed(harness, 7600)
    study = make_study(MULLER, tmp_path / "study", modality="CR", seed=seed)
    await harness.target.store(study.files)
    find = harness.target.find_patients

    for query in (
        PatientDemographics("muller", "jose", "19620315", "M"),
        PatientDemographics("MÜLLER", birth_date="19620315"),
        PatientDemographics("Müller", "José"),  # no birth date: a name-prefix search
    ):
        (found,) = await find(query)
        assert found.patient_id == MULLER.id, query
        assert found.issuer is not None
        assert found.issuer.local_namespace == DEMO_ISSUER.local_namespace
        assert found.birth_date == MULLER.birth_date
        assert study.study_instance_uid in found.study_instance_uids

    assert await find(PatientDemographics("muller", birth_date="19620316")) == []
    assert await find(PatientDemographics("muller", "anna", "19620315")) == []
    assert await find(PatientDemographics("muller", birth_date="19620315", sex="F")) == []
    assert await find(PatientDemographics("nobody", birth_date="19620315")) == []
    assert await find(PatientDemographics("*")) == []


# --- memory ----------------------------------------------------------------------------


class PeakRss:
    """The peak resident set size of this process while the block runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


@pytest.fixture(scope="module")
def big_study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    """About 200 MB: 400 CT slices of 512x512, 16 bits."""
    folder = tmp_path_factory.mktemp("big-study")
    return make_study(_patient(7700), folder, rows=512, columns=512, instances=400, seed=7700)


@pytest.fixture
def fresh_orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["stow", "cstore"])
async def test_a_200_mb_study_is_stored_in_flat_memory(
    kind: str,
    big_study: SyntheticStudy,
    fresh_orthanc: OrthancServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Memory ceiling (slow: about 200 MB into a fresh Orthanc): RSS grows < 60 MB.

    Prints the throughput for the report; the test never asserts on time.
    """
    target = open_target(_config(kind, fresh_orthanc, tmp_path))
    try:
        started = time.monotonic()
        with PeakRss() as rss:
            report = await target.store(big_study.files)
        elapsed = time.monotonic() - started
    finally:
        await target.aclose()
    assert report.ok, report.failed[:3]
    assert len(report.stored) == 400
    assert fresh_orthanc.instance_count() == 400
    with capsys.disabled():
        print(
            f"\n{kind}: {big_study.total_bytes / 1e6:.0f} MB in {elapsed:.1f} s "
            f"({big_study.total_bytes / 1e6 / elapsed:.0f} MB/s), RSS growth {rss.growth_mb:.1f} MB"
        )
    assert rss.growth_mb < 60
