"""Imaging Document Consumer, turning pulled studies into import jobs.

* :func:`resolve_local_patient`: the local patient a pull is filed under:
  the MRN the operator gave, or the one patient the local PACS finds for the
  demographics (C-FIND or QIDO-RS); none or several found is a hold reason,
  never a guess.
* :func:`create_jobs`: one durable job per study per patient, listing every
  instance its KOS references; the reconciliation settings and the local
  patient are snapshot into the job so a resumed job reconciles as it started.
* :func:`local_patient_from` / :func:`settings_from` / :func:`accepted_from`: read the
  snapshot back; :func:`reviewed` is the snapshot after a reviewer accepted a held study.
* :func:`target_objects`: what the target holds under the UIDs of a batch,
  in the planner's terms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.pull import Demographics, StudyOffer
from imagebridge.dicom.headers import parse_instance_header
from imagebridge.dicom.reconcile import plan_study
from imagebridge.errors import JobStateError, PartnerUnavailable
from imagebridge.importing.base import (
    HeldInstance,
    ImportTarget,
    PatientDemographics,
    SopListLookup,
)
from imagebridge.model.directory import DirectorySnapshot
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator, InstanceHeader
from imagebridge.model.import_job import ImportJob, JobRequest, KosInstance
from imagebridge.model.normalise import GivenNameRule
from imagebridge.model.reconcile import (
    ACCEPTABLE,
    AccessionMapping,
    AccessionPolicy,
    IssueKind,
    Level,
    LocalAccession,
    LocalPatient,
    PatientSource,
    ReconcileSettings,
    StudyPlan,
    TargetObject,
    TargetObjects,
    UidCollisionPolicy,
)
from imagebridge.model.retrieve import imaging_request_for
from imagebridge.store.jobs import JobStore


@dataclass(frozen=True, slots=True)
class LocalPatientChoice:
    """The local patient of a pull, or why there is none (the jobs are then held)."""

    patient: LocalPatient | None
    reason: str = ""


async def resolve_local_patient(
    target: ImportTarget,
    demographics: Demographics,
    *,
    mrn: str | None = None,
    issuer: str | None = None,
) -> LocalPatientChoice:
    """The operator's MRN (with the operator's demographics), else a unique PACS match."""
    sex = demographics.gender.upper() if demographics.gender.upper() in ("M", "F", "O") else ""
    name = f"{demographics.family}^{demographics.given}"
    if mrn:
        designator = HierarchicDesignator(local_namespace=issuer) if issuer else None
        return LocalPatientChoice(
            LocalPatient(
                mrn=mrn,
                source=PatientSource.OPERATOR,
                issuer=designator,
                name=name,
                birth_date=demographics.birth_date,
                sex=sex,
            )
        )
    found = await target.find_patients(
        PatientDemographics(demographics.family, demographics.given, demographics.birth_date, sex)
    )
    ids = {(c.patient_id, c.issuer) for c in found}
    if len(ids) != 1:
        what = "no local patient" if not ids else f"{len(ids)} local patients"
        return LocalPatientChoice(None, f"{what} match the demographics: give the MRN")
    one = found[0]
    return LocalPatientChoice(
        LocalPatient(
            mrn=one.patient_id,
            source=PatientSource.PACS_LOOKUP,
            issuer=one.issuer,
            name=one.name,
            birth_date=one.birth_date,
            sex=one.sex if one.sex in ("M", "F", "O") else "",
        )
    )


def snapshot(settings: ReconcileSettings, patient: LocalPatient | None) -> dict[str, Any]:
    """The JSON the job keeps: reconciliation settings and the local patient."""
    out: dict[str, Any] = {
        "modifying_system": settings.modifying_system,
        "accession": settings.accession.value,
        "accession_map": {m.foreign: m.local.number for m in settings.accession_map},
        "uid_collision": settings.uid_collision.value,
        "given_names": settings.given_names.value,
        "allow_initials": settings.allow_initials,
        "coerce_demographics": settings.coerce_demographics,
    }
    if patient is not None:
        out["local_patient"] = {
            "mrn": patient.mrn,
            "source": patient.source.value,
            "issuer": _designator_json(patient.issuer),
            "name": patient.name,
            "birth_date": patient.birth_date,
            "sex": patient.sex,
        }
    return out


def settings_from(job: ImportJob) -> ReconcileSettings:
    """The reconciliation settings the job was created with."""
    data = job.request.reconciliation
    mapping = data.get("accession_map") or {}
    return ReconcileSettings(
        modifying_system=str(data.get("modifying_system", "imagebridge")),
        accession=AccessionPolicy(data.get("accession", "clear")),
        accession_map=tuple(AccessionMapping(k, LocalAccession(v)) for k, v in mapping.items()),
        uid_collision=UidCollisionPolicy(data.get("uid_collision", "hold")),
        given_names=GivenNameRule(data.get("given_names", "first")),
        allow_initials=bool(data.get("allow_initials", True)),
        coerce_demographics=bool(data.get("coerce_demographics", True)),
    )


def local_patient_from(job: ImportJob) -> LocalPatient | None:
    """The local patient the job files its study under (None: not resolved)."""
    data = job.request.reconciliation.get("local_patient")
    if not isinstance(data, Mapping):
        return None
    return LocalPatient(
        mrn=str(data["mrn"]),
        source=PatientSource(data.get("source", "operator")),
        issuer=_designator(data.get("issuer")),
        name=str(data.get("name", "")),
        birth_date=str(data.get("birth_date", "")),
        sex=str(data.get("sex", "")),
    )


def accepted_from(job: ImportJob) -> frozenset[IssueKind]:
    """The demographic conflicts a reviewer accepted for the job's study (none by default)."""
    kinds = job.request.reconciliation.get("accept") or ()
    return frozenset(IssueKind(k) for k in kinds if k in ACCEPTABLE)


def foreign_patient_from(job: ImportJob) -> dict[str, str]:
    """The patient as the foreign KOS names it (name, id, birth_date, sex; may be empty)."""
    data = job.request.reconciliation.get("foreign_patient")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, Mapping) else {}


def reviewed(job: ImportJob, patient: LocalPatient, accept: frozenset[IssueKind]) -> dict[str, Any]:
    """The job's snapshot after review: filed under *patient*, *accept* conflicts accepted."""
    data = dict(job.request.reconciliation)
    local = snapshot(settings_from(job), patient)["local_patient"]
    data["local_patient"] = local
    data["accept"] = sorted(k.value for k in accept & ACCEPTABLE)
    return data


def _patient_json(patient: DicomPatient) -> dict[str, str]:
    return {
        "name": patient.name,
        "id": patient.id,
        "birth_date": patient.birth_date,
        "sex": patient.sex,
    }


def create_jobs(
    jobs: JobStore,
    offers: Sequence[StudyOffer],
    *,
    target_name: str,
    target_kind: str,
    settings: ReconcileSettings,
    choice: LocalPatientChoice,
    extra: Mapping[str, Any] | None = None,
) -> list[ImportJob]:
    """One job per study of each offer (a KOS may reference several studies), idempotent.

    Without a local patient the jobs are created and held with the reason.  The
    snapshot keeps the KOS's patient (for a reviewer) and the *extra* values.
    """
    created: list[ImportJob] = []
    for offer in offers:
        for series_study in _studies(offer):
            request = JobRequest(
                source_community=offer.community.home_community_id,
                source_community_name=offer.community.name,
                imaging_community=offer.imaging_home,
                foreign_patient=offer.patient_id,
                study_instance_uid=series_study,
                kos_document_id=offer.entry.unique_id,
                kos_repository_id=offer.entry.repository_unique_id or "",
                target_name=target_name,
                target_kind=target_kind,
                reconciliation={
                    **snapshot(settings, choice.patient),
                    "foreign_patient": _patient_json(offer.manifest.patient),
                    **(extra or {}),
                },
                local_patient_id=choice.patient.mrn if choice.patient else None,
                local_patient_issuer=_issuer_text(choice.patient),
            )
            job, _new = jobs.create_job(request)
            listed = [
                KosInstance(
                    item.sop_instance_uid,
                    series.series_instance_uid,
                    item.sop_class_uid,
                    series.retrieve_location_uid,
                )
                for series in offer.manifest.series
                if series.study_instance_uid == series_study
                for item in series.instances
            ]
            if not job.state.terminal:
                # A job that finished (even just now) keeps the instances it listed.
                with contextlib.suppress(JobStateError):
                    jobs.add_instances(job.id, listed)
            if choice.patient is None and not job.state.terminal:
                jobs.hold(job.id, choice.reason)
            created.append(jobs.get_job(job.id))
    return created


LOOKUPS_IN_FLIGHT = 4
"""By-UID lookups at the target kept in flight at once (per-UID targets)."""


async def target_objects(
    target: ImportTarget,
    headers: Sequence[InstanceHeader],
    *,
    listed: Mapping[str, Iterable[HeldInstance]] | None = None,
    looked_up: Mapping[str, Iterable[HeldInstance]] | None = None,
    uids: Collection[str] | None = None,
) -> TargetObjects:
    """What *target* holds under the study, series and SOP UIDs of *headers*.

    *listed*: what the target holds per Study Instance UID, when the caller
    already knows (a study in it is not listed again).  SOP Instance UIDs the
    study listings do not answer are looked up by UID (held in another study?),
    a few at a time, unless *looked_up* (by SOP Instance UID, see
    :func:`held_by_sop_uid`) already has the answer.  *uids*: the UIDs the
    plan will look up (the study, series and SOP Instance UIDs of *headers*
    and, under the remap policy, their remapped UIDs): only the objects under
    those are made (a listing of a large study is not turned into objects
    batch after batch); None: every object held.
    """
    held: dict[str, HeldInstance] = {}
    for study in sorted({h.study.study_instance_uid for h in headers}):
        known = listed.get(study) if listed is not None else None
        found = await target.objects(study_instance_uid=study) if known is None else known
        for item in found:
            held[item.sop_instance_uid] = item
    answered = looked_up or {}
    unknown = list(
        dict.fromkeys(h.sop_instance_uid for h in headers if h.sop_instance_uid not in held)
    )
    for uid in unknown:
        for item in answered.get(uid, ()):
            held[item.sop_instance_uid] = item
    asked = await held_by_sop_uid(target, [u for u in unknown if u not in answered])
    for items in asked.values():
        for item in items:
            held[item.sop_instance_uid] = item
    # The first object under a UID stands; only those under UIDs the plan looks up are made.
    first: dict[str, tuple[Level, HeldInstance]] = {}
    for item in held.values():
        first.setdefault(item.study_instance_uid, (Level.STUDY, item))
        first.setdefault(item.series_instance_uid, (Level.SERIES, item))
        first.setdefault(item.sop_instance_uid, (Level.INSTANCE, item))
    return TargetObjects(
        tuple(
            _object(level, item, uid)
            for uid, (level, item) in first.items()
            if uids is None or uid in uids
        )
    )


def _object(level: Level, item: HeldInstance, uid: str) -> TargetObject:
    return TargetObject(
        level=level,
        uid=uid,
        patient_id=item.patient_id,
        patient_issuer=item.issuer,
        study_uid=item.study_instance_uid if level is not Level.STUDY else "",
        series_uid=item.series_instance_uid if level is Level.INSTANCE else "",
    )


async def held_by_sop_uid(
    target: ImportTarget, uids: Sequence[str]
) -> dict[str, list[HeldInstance]]:
    """What *target* holds under each of *uids*, whatever the study: in lists where the
    target takes them, else one UID a query, a few in flight."""
    if not uids:
        return {}
    if isinstance(target, SopListLookup):
        held: dict[str, list[HeldInstance]] = {uid: [] for uid in uids}
        for item in await target.objects_by_sop(uids):
            if item.sop_instance_uid in held:
                held[item.sop_instance_uid].append(item)
        return held
    found: list[list[HeldInstance]] = [[] for _ in uids]
    failure: list[BaseException] = []
    limiter = anyio.CapacityLimiter(LOOKUPS_IN_FLIGHT)

    async def one(i: int) -> None:
        async with limiter:
            if failure:
                return
            try:
                found[i] = await target.objects(sop_instance_uid=uids[i])
            except Exception as exc:  # re-raised as it is below, not as a group
                failure.append(exc)

    async with anyio.create_task_group() as tasks:
        for i in range(len(uids)):
            tasks.start_soon(one, i)
    if failure:
        raise failure[0]
    return dict(zip(uids, found, strict=True))


def _studies(offer: StudyOffer) -> list[str]:
    seen: list[str] = []
    for series in offer.manifest.series:
        if series.study_instance_uid not in seen:
            seen.append(series.study_instance_uid)
    return seen


def _issuer_text(patient: LocalPatient | None) -> str | None:
    if patient is None or patient.issuer is None:
        return None
    return patient.issuer.universal_id or patient.issuer.local_namespace


def _designator_json(value: HierarchicDesignator | None) -> dict[str, str] | None:
    if value is None:
        return None
    return {
        "local_namespace": value.local_namespace,
        "universal_id": value.universal_id,
        "universal_id_type": value.universal_id_type,
    }


def _designator(value: Any) -> HierarchicDesignator | None:
    if not isinstance(value, Mapping):
        return None
    return HierarchicDesignator(
        str(value.get("local_namespace", "")),
        str(value.get("universal_id", "")),
        str(value.get("universal_id_type", "")),
    )


async def preview(
    clients: PartnerClients,
    directory: DirectorySnapshot,
    target: ImportTarget,
    offer: StudyOffer,
    *,
    settings: ReconcileSettings,
    patient: LocalPatient,
    now: datetime,
    transfer_syntaxes: Sequence[str],
) -> StudyPlan:
    """The dry run of importing *offer*: the plan made on its first instance, retrieved with
    RAD-75 (nothing is stored).  Study-level decisions follow from that instance's header;
    per-instance collisions of the other instances show only in the real run."""
    community = directory.get(offer.imaging_home) or offer.community
    first = offer.locators[0]
    request = imaging_request_for([first], offer.imaging_home, tuple(transfer_syntaxes))
    result = await clients.for_community(community).retrieve_images(request)
    with result:
        if not result.documents:
            why = "; ".join(e.code_context for e in result.errors) or "nothing returned"
            raise PartnerUnavailable(f"the first instance could not be retrieved: {why}")
        with result.documents[0].open() as stream:
            header = parse_instance_header(stream)
    held = await target_objects(target, [header])
    return plan_study([header], patient, settings, held, now=now, source=offer.community.name[:64])
