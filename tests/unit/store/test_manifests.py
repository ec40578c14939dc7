"""Imaging Document Source index: KOS manifests are deterministic per study version."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from imagebridge.dicom.kos import build_kos, manifest_series_uid, manifest_uid
from imagebridge.dicom.synthetic import DEMO_PATIENTS, study_headers
from imagebridge.errors import InvalidValue
from imagebridge.model.index import ManifestRecord
from imagebridge.store import Store

REPO = "1.3.6.1.4.1.21367.13.71.201.1"


def _build(store: Store, study_uid: str, when: datetime) -> ManifestRecord:
    """What the XCA responder does: reuse the stored build time of this version, else *when*."""
    study = store.study(study_uid)
    assert study is not None
    headers = store.study_instances(study_uid)
    stored = store.manifest_for_study(study_uid)
    content_datetime = stored.content_datetime if stored is not None else when
    document = build_kos(
        headers,
        sop_instance_uid=manifest_uid(study_uid, headers),
        series_instance_uid=manifest_series_uid(study_uid, headers),
        retrieve_location_uid=REPO,
        retrieve_ae_title="IMAGEBRIDGE",
        content_datetime=content_datetime,
        manufacturer="imagebridge",
    )
    return ManifestRecord.of_document(
        document,
        repository_unique_id=REPO,
        study_instance_uid=study_uid,
        sop_instance_uid=manifest_uid(study_uid, headers),
        series_instance_uid=manifest_series_uid(study_uid, headers),
        content_datetime=content_datetime,
        fingerprint=study.fingerprint,
    )


def test_same_study_version_gives_the_same_manifest_bytes(store: Store) -> None:
    headers = study_headers(DEMO_PATIENTS[0], modality="MR", seed=1)
    study_uid = headers[0].study.study_instance_uid
    store.upsert_instances(REPO, headers)
    assert store.manifest_for_study(study_uid) is None
    first = store.save_manifest(_build(store, study_uid, datetime(2025, 3, 1, 10, 0, 0)))
    assert store.manifest_for_study(study_uid) == first
    assert store.manifest_by_uid(first.sop_instance_uid) == first
    rebuilt = _build(store, study_uid, datetime(2031, 1, 1))  # the stored time wins
    assert rebuilt.document == first.document
    assert (rebuilt.size, rebuilt.sha1) == (first.size, first.sha1)
    assert first.sop_instance_uid == manifest_uid(study_uid, headers)


def test_saving_a_different_build_of_the_same_uid_keeps_the_first(store: Store) -> None:
    headers = study_headers(DEMO_PATIENTS[0], modality="CR", seed=2)
    study_uid = headers[0].study.study_instance_uid
    store.upsert_instances(REPO, headers)
    first = store.save_manifest(_build(store, study_uid, datetime(2025, 3, 1)))
    other = build_kos(
        store.study_instances(study_uid),
        sop_instance_uid=first.sop_instance_uid,
        series_instance_uid=first.series_instance_uid,
        retrieve_location_uid=REPO,
        retrieve_ae_title="IMAGEBRIDGE",
        content_datetime=datetime(2030, 1, 1),
        manufacturer="imagebridge",
    )
    later = ManifestRecord.of_document(
        other,
        repository_unique_id=REPO,
        study_instance_uid=study_uid,
        sop_instance_uid=first.sop_instance_uid,
        series_instance_uid=first.series_instance_uid,
        content_datetime=datetime(2030, 1, 1),
        fingerprint=first.fingerprint,
    )
    assert later.sha1 != first.sha1
    assert store.save_manifest(later) == first


def test_changed_study_gets_a_new_manifest_row(store: Store) -> None:
    headers = study_headers(DEMO_PATIENTS[1], modality="CT", seed=3)
    study_uid = headers[0].study.study_instance_uid
    store.upsert_instances(REPO, headers[:-1])
    old = store.save_manifest(_build(store, study_uid, datetime(2025, 3, 1)))
    store.upsert_instances(REPO, headers[-1:])
    assert store.manifest_for_study(study_uid) is None  # the current version has none yet
    new = store.save_manifest(_build(store, study_uid, datetime(2025, 3, 2)))
    assert new.sop_instance_uid != old.sop_instance_uid
    assert new.fingerprint != old.fingerprint
    assert store.manifest_for_study(study_uid) == new
    assert store.manifest_by_uid(old.sop_instance_uid) == old  # history stays until pruned
    assert store.prune_manifests() == 1
    assert store.manifest_by_uid(old.sop_instance_uid) is None
    store.remove_instances(REPO, [headers[-1].sop_instance_uid])  # back to the first version
    assert store.manifest_for_study(study_uid) is None
    again = store.save_manifest(_build(store, study_uid, datetime(2025, 3, 3)))
    assert again.sop_instance_uid == old.sop_instance_uid  # same instance set, same UID


def test_content_datetime_with_timezone_round_trips(store: Store) -> None:
    headers = study_headers(DEMO_PATIENTS[2], modality="CR", seed=4)
    study_uid = headers[0].study.study_instance_uid
    store.upsert_instances(REPO, headers)
    when = datetime(2025, 3, 1, 10, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    saved = store.save_manifest(_build(store, study_uid, when))
    loaded = store.manifest_for_study(study_uid)
    assert loaded is not None and loaded.content_datetime == when
    assert loaded.content_datetime.utcoffset() == timedelta(hours=2)
    assert _build(store, study_uid, datetime.now(UTC)).document == saved.document


def test_manifest_record_checks_size_and_hash() -> None:
    good = ManifestRecord.of_document(
        b"KOS",
        repository_unique_id=REPO,
        study_instance_uid="1.2.3",
        sop_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3.5",
        content_datetime=datetime(2025, 1, 1),
        fingerprint="f",
    )
    assert good.sha1 == "e3795ef445d98c98e0a85936fb3d4185b9b18704"
    with pytest.raises(InvalidValue, match="size"):
        dataclasses.replace(good, size=4)
    with pytest.raises(InvalidValue, match="sha1"):
        dataclasses.replace(good, sha1="0" * 40)
