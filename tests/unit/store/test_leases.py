"""Service leases, shared settings and the shared index generation, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from imagebridge.dicom.synthetic import DEMO_PATIENTS, study_headers
from imagebridge.store import Store
from imagebridge.store import store as store_module
from imagebridge.store.leases import GatewaySettings, ServiceLeases, worker_name


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_one_holder_at_a_time_until_the_lease_expires(store: Store) -> None:
    clock = Clock()
    leases = ServiceLeases(store.engine, clock=clock)
    assert leases.hold("audit-sender", "host:1", 30)
    assert not leases.hold("audit-sender", "host:2", 30)
    assert leases.holder("audit-sender") == "host:1"
    clock.advance(20)
    assert leases.hold("audit-sender", "host:1", 30)  # renewed until +50 s
    clock.advance(20)
    assert not leases.hold("audit-sender", "host:2", 30)
    clock.advance(11)  # host:1 stopped renewing (it died): its lease has expired
    assert leases.holder("audit-sender") is None
    assert leases.hold("audit-sender", "host:2", 30)
    assert not leases.hold("audit-sender", "host:1", 30)
    assert leases.hold("index:1.2.3", "host:1", 30)  # another duty, another lease


def test_release_hands_the_duty_over_at_once(store: Store) -> None:
    leases = ServiceLeases(store.engine)
    assert leases.hold("audit-sender", "a", 60)
    leases.release("audit-sender", "b")  # not b's: nothing happens
    assert leases.holder("audit-sender") == "a"
    leases.release("audit-sender", "a")
    assert leases.hold("audit-sender", "b", 60)


def test_concurrent_workers_never_both_hold_a_free_lease(database_url: str) -> None:
    stores = [Store.open(database_url) for _ in range(8)]
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            won = list(
                pool.map(
                    lambda i: ServiceLeases(stores[i].engine).hold("sender", f"w{i}", 60), range(8)
                )
            )
    finally:
        for opened in stores:
            opened.close()
    assert won.count(True) == 1


def test_bad_lease_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        ServiceLeases(store.engine).hold("x", "", 10)
    with pytest.raises(ValueError):
        ServiceLeases(store.engine).hold("x", "me", 0)


def test_every_worker_gets_the_same_shared_secret(database_url: str) -> None:
    stores = [Store.open(database_url) for _ in range(6)]
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            secrets = set(
                pool.map(lambda s: GatewaySettings(s.engine).shared_secret("web-session"), stores)
            )
        assert len(secrets) == 1
        assert len(secrets.pop()) >= 40
        other = GatewaySettings(stores[0].engine).shared_secret("another")
        assert other != GatewaySettings(stores[0].engine).shared_secret("web-session")
    finally:
        for opened in stores:
            opened.close()


def test_a_write_by_another_worker_changes_the_generation(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SHARED_GENERATION_POLL", 0.0)
    reader, writer = Store.open(database_url), Store.open(database_url)
    try:
        before = reader.generation
        assert reader.generation == before  # nothing written: stable, caches stay valid
        writer.upsert_instances("1.2.3", study_headers(DEMO_PATIENTS[0], modality="CT", seed=3))
        assert reader.generation != before
    finally:
        reader.close()
        writer.close()


def test_a_lease_of_an_ended_process_on_this_host_is_taken_at_once(store: Store) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    leases = ServiceLeases(store.engine)
    assert leases.hold("index:1.2.3", f"{os.uname().nodename}:{ended.pid}", 600)
    assert leases.hold("index:1.2.3", worker_name(), 60)
    assert leases.holder("index:1.2.3") == worker_name()
    assert not leases.hold("index:1.2.3", "other-host:1", 60)  # a live holder keeps it
