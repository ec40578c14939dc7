"""Imaging sources, a DICOMweb archive: a series retrieve only for most of a series, the
others one instance at a time; a series response closed once every asked instance came."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from imagebridge.actors.responding.imaging_sources import ArchiveImagingSource
from imagebridge.actors.responding.retrieved import RetrievedInstance
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.index import InstanceLocation
from imagebridge.sources.dicomweb import DicomWebSource
from imagebridge.store import Store

pytestmark = pytest.mark.anyio
REPO = "1.2.3.4.5"
SYNTAXES = ("1.2.840.10008.1.2.1",)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Record:
    number_of_series: int
    number_of_instances: int
    fingerprint: str = "f"


class Archive(DicomWebSource):
    """Serves a study from files; counts what it was asked and how far a series was read."""

    def __init__(self, files: dict[str, bytes], series_uid: str) -> None:
        super().__init__(REPO, "http://archive.invalid/dicom-web")
        self.files = files
        self.series_uid = series_uid
        self.instance_reads: list[str] = []
        self.series_reads = 0
        self.parts_sent = 0
        self.closed_early = False

    async def read_instance(self, study: str, series: str, sop: str) -> AsyncIterator[bytes]:
        self.instance_reads.append(sop)
        yield self.files[sop]

    async def read_series(
        self, study: str, series: str
    ) -> AsyncGenerator[tuple[str, str, bytes | BinaryIO]]:
        self.series_reads += 1
        try:
            for sop, data in self.files.items():
                self.parts_sent += 1
                yield sop, SYNTAXES[0], data
        except GeneratorExit:
            self.closed_early = True
            raise


class Index:
    def __init__(self, locations: dict[str, InstanceLocation], series: int) -> None:
        self.locations = locations
        self.series = series

    def study(self, study_uid: str, repository_unique_id: str | None = None) -> Record:
        return Record(self.series, len(self.locations))

    def instance_locations_many(
        self, uids: Collection[str], repository_unique_id: str | None = None
    ) -> dict[str, list[InstanceLocation]]:
        return {u: [self.locations[u]] for u in uids if u in self.locations}


def _world(
    tmp_path: Path, n: int
) -> tuple[Archive, ArchiveImagingSource, list[ImagingDocumentLocator]]:
    study = make_study(DEMO_PATIENTS[0], tmp_path, instances=n, series=1)
    headers = [read_instance_header(p) for p in study.files]
    files = {h.sop_instance_uid: p.read_bytes() for h, p in zip(headers, study.files, strict=True)}
    series = headers[0].series.series_instance_uid
    locations = {
        h.sop_instance_uid: InstanceLocation(
            REPO, h.study.study_instance_uid, series, h.sop_instance_uid, h.sop_class_uid, ""
        )
        for h in headers
    }
    archive = Archive(files, series)
    source = ArchiveImagingSource(archive, cast(Store, Index(locations, 1)), REPO)
    locators = [
        ImagingDocumentLocator(REPO, h.study.study_instance_uid, series, h.sop_instance_uid)
        for h in headers
    ]
    return archive, source, locators


async def _sent(source: ArchiveImagingSource, locators: list[ImagingDocumentLocator]) -> list[str]:
    out: list[str] = []
    async for outcome in source.retrieve(locators, SYNTAXES):
        assert isinstance(outcome, RetrievedInstance), outcome
        out.append(outcome.locator.sop_instance_uid)
        await outcome.body.aclose()
    return out


async def test_a_few_instances_of_a_large_series_are_fetched_one_by_one(tmp_path: Path) -> None:
    archive, source, locators = _world(tmp_path, 20)
    asked = locators[3:8]  # 5 of 20: not worth the whole series
    assert sorted(await _sent(source, asked)) == sorted(loc.sop_instance_uid for loc in asked)
    assert archive.series_reads == 0
    assert sorted(archive.instance_reads) == sorted(loc.sop_instance_uid for loc in asked)


async def test_most_of_a_series_is_one_retrieve_closed_once_all_arrived(tmp_path: Path) -> None:
    archive, source, locators = _world(tmp_path, 20)
    asked = locators[:12]  # the first 12 parts of the answer are the ones asked for
    assert await _sent(source, asked) == [loc.sop_instance_uid for loc in asked]
    assert archive.series_reads == 1 and not archive.instance_reads
    assert archive.parts_sent == 12 and archive.closed_early
