"""Import pipeline pieces: the study listing kept for a run, batched UID lookups, and the
rewrite that splices the reconciled elements into the received bytes (byte for byte what
the full pydicom read and write gives; the splice itself is tested against that oracle
in tests/unit/dicom/test_reconcile_splice.py)."""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from pydicom import dcmread

from imagebridge.actors.initiating import import_stages
from imagebridge.actors.initiating.client import ReceivedDocument
from imagebridge.actors.initiating.import_plan import held_by_sop_uid, target_objects
from imagebridge.actors.initiating.import_stages import (
    Listing,
    full_rewrite,
    keeps_uids,
    parse,
    rewrite,
    rewrite_all,
    size_of,
)
from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.reconcile import plan_study
from imagebridge.dicom.reconcile_checks import hierarchy
from imagebridge.dicom.reconcile_splice import splice_plan
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.importing.base import HeldInstance, SplicedInstance
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


def _full(path: Path, plan: ReconcilePlan, out: Path) -> bytes:
    with open(path, "rb") as stream:
        full_rewrite(stream, plan, str(out))
    return out.read_bytes()


def _bytes(instance: SplicedInstance | str) -> bytes:
    if isinstance(instance, str):
        return Path(instance).read_bytes()
    with instance.open() as stream:
        return stream.read()


def test_the_rewrite_splices_the_full_rewrites_bytes(tmp_path: Path) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    plan = _plan(path)
    assert plan.changes and keeps_uids(plan)
    parsed = parse(_doc(path))
    assert parsed.at < path.stat().st_size  # stopped at the pixel data
    spliced = rewrite(_doc(path), parsed, plan, str(tmp_path / "spliced.dcm"))
    assert isinstance(spliced, SplicedInstance)  # nothing written out
    assert not (tmp_path / "spliced.dcm").exists()
    data = _bytes(spliced)
    assert data == _full(path, plan, tmp_path / "full.dcm")
    assert spliced.size == len(data) == size_of(spliced)
    assert spliced.head + spliced.read_tail() == data
    header = read_instance_header(path)
    assert (spliced.sop_instance_uid, spliced.transfer_syntax_uid) == (
        header.sop_instance_uid,
        header.transfer_syntax_uid,
    )
    ds = dcmread(io.BytesIO(data))
    assert ds.PatientID == LOCAL.mrn
    assert ds.PixelData == dcmread(path).PixelData


def test_a_spliced_instance_reads_in_any_chunks(tmp_path: Path) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    parsed = parse(_doc(path))
    spliced = rewrite(_doc(path), parsed, _plan(path), str(tmp_path / "out.dcm"))
    assert isinstance(spliced, SplicedInstance)
    whole = _bytes(spliced)
    for size in (1, 7, len(spliced.head) - 1, len(spliced.head), 4096, 10**6):
        with spliced.open() as stream:
            chunks = iter(lambda: stream.read(size), b"")  # noqa: B023
            assert b"".join(chunks) == whole


def test_elements_after_the_pixel_data_are_copied_too(tmp_path: Path) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    ds = dcmread(path)
    ds.add_new(0xFFFCFFFC, "OB", b"\0\0")  # Data Set Trailing Padding
    ds.save_as(path)
    plan = _plan(path)
    out = _bytes(rewrite(_doc(path), parse(_doc(path)), plan, str(tmp_path / "out.dcm")))
    assert out == _full(path, plan, tmp_path / "full.dcm")
    back = dcmread(io.BytesIO(out))
    assert back.PatientID == LOCAL.mrn and 0xFFFCFFFC in back


def test_an_object_the_splice_declines_is_rewritten_whole(tmp_path: Path) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    ds = dcmread(path)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstitutionName = "Hôpital Général"
    ds.save_as(path, enforce_file_format=True)
    header = read_instance_header(path)
    local = dataclasses.replace(LOCAL, name="Démo^Alice")  # every text value decoded
    plan = plan_study([header], local, SETTINGS, TargetObjects(), now=NOW).plans[0]
    assert plan.needs_unicode
    parsed = parse(_doc(path))
    with open(path, "rb") as stream:
        assert splice_plan(stream, copy.deepcopy(parsed.dataset), plan, stop=parsed.at) is None
    written = rewrite(_doc(path), parsed, plan, str(tmp_path / "out.dcm"))
    assert written == str(tmp_path / "out.dcm")
    assert Path(written).read_bytes() == _full(path, plan, tmp_path / "full.dcm")
    out = dcmread(written)
    assert out.PatientID == LOCAL.mrn and out.SpecificCharacterSet == "ISO_IR 192"


def test_a_big_head_is_written_out_with_its_pixel_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=1, series=1).files[0]
    monkeypatch.setattr(import_stages, "HEAD_IN_MEMORY", 100)
    plan = _plan(path)
    written = rewrite(_doc(path), parse(_doc(path)), plan, str(tmp_path / "out.dcm"))
    assert written == str(tmp_path / "out.dcm")
    assert Path(written).read_bytes() == _full(path, plan, tmp_path / "full.dcm")


def test_a_batch_shares_one_splicer_and_gives_the_full_rewrites(tmp_path: Path) -> None:
    files = make_study(DEMO_PATIENTS[0], tmp_path / "in", instances=6, series=2).files
    headers = [read_instance_header(f) for f in files]
    plans = plan_study(headers, LOCAL, SETTINGS, TargetObjects(), now=NOW).plans
    parsed = [parse(_doc(f)) for f in files]
    work = [
        (_doc(f), p, plan, str(tmp_path / f"{n}.dcm"))
        for n, (f, p, plan) in enumerate(zip(files, parsed, plans, strict=True))
    ]
    done = rewrite_all(work)
    assert all(isinstance(d, SplicedInstance) for d in done)
    for n, (f, plan, d) in enumerate(zip(files, plans, done, strict=True)):
        assert _bytes(d) == _full(f, plan, tmp_path / f"full-{n}.dcm")


async def test_objects_are_made_only_for_the_uids_plans_look_up(tmp_path: Path) -> None:
    """A large study listing is not turned into objects for every batch; every UID the plan
    looks up is answered as if it had been (the first object under a UID stands)."""
    headers = _headers(tmp_path, 4)
    study = headers[0].study.study_instance_uid
    series = headers[0].series.series_instance_uid
    listing = [HeldInstance(study, series, f"2.25.{n}", LOCAL.mrn) for n in range(1, 300)]
    # a UID the target holds at two levels: an instance UID that is a batch's series UID
    listing.insert(0, HeldInstance(study, "2.25.999", headers[1].series.series_instance_uid, "X"))
    target = Target([])
    everything = await target_objects(target, headers[:2], listed={study: listing})
    wanted = {u for h in headers[:2] for u in hierarchy(h)}
    few = await target_objects(target, headers[:2], listed={study: listing}, uids=wanted)
    assert len(few.objects) < 10 < len(everything.objects)
    for uid in wanted | {"2.25.5", "2.25.999"}:
        assert few.find(uid) == (everything.find(uid) if uid in wanted else None)
    clash = few.find(headers[1].series.series_instance_uid)
    assert clash is not None and clash.level is Level.INSTANCE
    plans = [
        plan_study(headers[:2], LOCAL, SETTINGS, objects, now=NOW).plans
        for objects in (everything, few)
    ]
    assert plans[0] == plans[1]
