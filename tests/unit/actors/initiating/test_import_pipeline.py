"""Import pipeline pieces: the study listing kept for a run, batched UID lookups, and the
rewrite that copies pixel data after a rewritten header (byte for byte what a full
pydicom read and write gives)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from pydicom import dcmread

from imagebridge.actors.initiating.client import ReceivedDocument
from imagebridge.actors.initiating.import_plan import held_by_sop_uid, target_objects
from imagebridge.actors.initiating.import_stages import Listing, keeps_uids, parse, rewrite
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.reconcile import plan_study
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.importing.base import HeldInstance
from imagebridge.model.imaging import HierarchicDesignator, InstanceHeader
from imagebridge.model.reconcile import (
    Level,
    LocalPatient,
    PatientSource,
    ReconcilePlan,
    ReconcileSettings,
    TargetObject,
    TargetObjects,
)

pytestmark = pytest.mark.anyio
SETTINGS = ReconcileSettings(modifying_system="imagebridge test")
NOW = datetime(2025, 3, 1, 12, 30, 5, tzinfo=UTC)
LOCAL = LocalPatient(
    mrn="MRN0042",
    source=PatientSource.OPERATOR,
    issuer=HierarchicDesignator("OURHOSP"),
    name="Demo^Alice",
    birth_date="19700101",
    sex="F",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _File:
    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


def _doc(path: Path) -> ReceivedDocument:
    return cast(ReceivedDocument, _File(path))


class Target:
    """Counts the queries; holds *held*; takes UID lists when *lists* is set."""

    def __init__(self, held: Sequence[HeldInstance]) -> None:
        self.held = list(held)
        self.study_queries = 0
        self.uid_queries: list[str] = []

    async def objects(
        self, *, study_instance_uid: str = "", series_instance_uid: str = "",
        sop_instance_uid: str = "",
    ) -> list[HeldInstance]:  # fmt: skip
        if study_instance_uid:
            self.study_queries += 1
            return [h for h in self.held if h.study_instance_uid == study_instance_uid]
        self.uid_queries.append(sop_instance_uid)
        return [h for h in self.held if h.sop_instance_uid == sop_instance_uid]


class ListTarget(Target):
    async def objects_by_sop(self, sop_instance_uids: Sequence[str]) -> list[HeldInstance]:
        self.uid_queries.append(",".join(sop_instance_uids))
        return [h for h in self.held if h.sop_instance_uid in sop_instance_uids]


def _headers(tmp_path: Path, n: int = 3) -> list[InstanceHeader]:
    study = make_study(DEMO_PATIENTS[0], tmp_path, instances=n, series=1)
    return [read_instance_header(p) for p in study.files]


async def test_a_listed_study_is_not_listed_again_and_looked_up_uids_not_asked(
    tmp_path: Path,
) -> None:
    headers = _headers(tmp_path)
    elsewhere = HeldInstance("2.25.77", "2.25.78", headers[1].sop_instance_uid, "OTHER")
    target = Target([elsewhere])
    found = await target_objects(
        target,
        headers,
        listed={headers[0].study.study_instance_uid: []},
        looked_up={headers[1].sop_instance_uid: [elsewhere]},
    )
    assert target.study_queries == 0
    assert target.uid_queries == [headers[0].sop_instance_uid, headers[2].sop_instance_uid]
    held = found.find(headers[1].sop_instance_uid)
    assert held is not None and held.level is Level.INSTANCE and held.patient_id == "OTHER"


async def test_uid_lookups_go_in_lists_where_the_target_takes_them(tmp_path: Path) -> None:
    headers = _headers(tmp_path)
    uids = [h.sop_instance_uid for h in headers]
    one_by_one, lists = Target([]), ListTarget([HeldInstance("2.25.1", "2.25.2", uids[2], "X")])
    assert await held_by_sop_uid(one_by_one, uids) == {u: [] for u in uids}
    assert sorted(one_by_one.uid_queries) == sorted(uids)
    found = await held_by_sop_uid(lists, uids)
    assert lists.uid_queries == [",".join(uids)]
    assert [h.patient_id for h in found[uids[2]]] == ["X"] and not found[uids[0]]


def test_the_listing_learns_what_was_stored_and_plans_see_it(tmp_path: Path) -> None:
    headers = _headers(tmp_path, 2)
    study = headers[0].study.study_instance_uid
    listing = Listing(study, {})
    listing.add(headers[0], LOCAL.mrn)
    assert listing.sop_uids() == {headers[0].sop_instance_uid}
    held = listing.listed()[study]
    assert [(h.patient_id, h.issuer) for h in held] == [(LOCAL.mrn, None)]
    objects = TargetObjects(
        tuple(o for h in held for o in _objects(h))  # the study, series and instance levels
    )
    plan = plan_study(headers, LOCAL, SETTINGS, objects, now=NOW)
    verdicts = {p.sop_instance_uid: p.verdict.value for p in plan.plans}
    assert verdicts[headers[0].sop_instance_uid] != verdicts[headers[1].sop_instance_uid]


def _objects(held: HeldInstance) -> list[TargetObject]:
    return [
        TargetObject(level=Level.STUDY, uid=held.study_instance_uid, patient_id=held.patient_id),
        TargetObject(
            level=Level.SERIES, uid=held.series_instance_uid, patient_id=held.patient_id,
            study_uid=held.study_instance_uid,
        ),
        TargetObject(
            level=Level.INSTANCE, uid=held.sop_instance_uid, patient_id=held.patient_id,
            study_uid=held.study_instance_uid, series_uid=held.series_instance_uid,
        ),
    ]  # fmt: skip


def _plan(path: Path) -> ReconcilePlan:
    header = read_instance_header(path)
    return plan_study([header], LOCAL, SETTINGS, TargetObjects(), now=NOW).plans[0]


def test_the_pixel_data_is_copied_after_the_rewritten_header(tmp_path: Path) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    plan = _plan(path)
    assert plan.changes and keeps_uids(plan)
    parsed = parse(_doc(path))
    assert parsed.tail is not None  # explicit VR little endian, pixel data last
    rewrite(_doc(path), parsed, plan, str(tmp_path / "spliced.dcm"))
    full = dataclasses.replace(parse(_doc(path)), tail=None)
    rewrite(_doc(path), full, plan, str(tmp_path / "full.dcm"))
    spliced = (tmp_path / "spliced.dcm").read_bytes()
    assert spliced == (tmp_path / "full.dcm").read_bytes()
    ds = dcmread(tmp_path / "spliced.dcm")
    assert ds.PatientID == LOCAL.mrn
    assert ds.PixelData == dcmread(path).PixelData


def test_elements_after_the_pixel_data_mean_a_full_rewrite(tmp_path: Path) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    ds = dcmread(path)
    ds.add_new(0xFFFCFFFC, "OB", b"\0\0")  # Data Set Trailing Padding
    ds.save_as(path)
    parsed = parse(_doc(path))
    assert parsed.tail is None
    rewrite(_doc(path), parsed, _plan(path), str(tmp_path / "out.dcm"))
    out = dcmread(tmp_path / "out.dcm")
    assert out.PatientID == LOCAL.mrn and 0xFFFCFFFC in out
