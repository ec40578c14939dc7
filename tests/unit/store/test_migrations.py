"""Imaging Document Source index: Alembic migrations run programmatically, idempotently."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from imagebridge.dicom.synthetic import DEMO_PATIENTS, study_headers
from imagebridge.errors import StoreError
from imagebridge.store import Store, database
from imagebridge.store.schema import metadata

TABLES = {
    "patients",
    "patient_other_ids",
    "studies",
    "series",
    "instances",
    "representations",
    "indexed_files",
    "manifests",
    "import_jobs",
    "import_instances",
    "import_job_events",
    "audit_outbox",
    "service_leases",
    "gateway_settings",
    "index_generation",
    "transaction_counters",
}


def test_fresh_database_is_migrated_to_head(database_url: str) -> None:
    store = Store.open(database_url)
    try:
        assert database.current_revision(store.engine) == database.head_revision() == "0004"
        assert set(inspect(store.engine).get_table_names()) >= TABLES
    finally:
        store.close()


def test_opening_twice_is_idempotent_and_keeps_data(database_url: str) -> None:
    first = Store.open(database_url)
    first.upsert_instances("1.2.3", study_headers(DEMO_PATIENTS[0], modality="CR"))
    first.close()
    second = Store.open(database_url)
    try:
        assert database.current_revision(second.engine) == "0004"
        assert second.repository_counts("1.2.3").instances == 2
    finally:
        second.close()


def test_migrated_schema_matches_the_table_definitions(database_url: str) -> None:
    store = Store.open(database_url)
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, metadata) == []
    finally:
        store.close()


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    engine = create_engine(database_url)
    database.upgrade(engine)
    config = database.alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    database.upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_sqlite_file_uses_wal_and_foreign_keys(sqlite_url: str) -> None:
    store = Store.open(sqlite_url)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    finally:
        store.close()


def test_in_memory_database_works_across_threads() -> None:
    store = Store.open("sqlite://")
    headers = [study_headers(DEMO_PATIENTS[0], modality="CR", seed=i) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda h: store.upsert_instances("1.2.3", h), headers))
    assert store.repository_counts("1.2.3").studies == 8
    store.close()


def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot be opened"):
        Store.open(f"sqlite:///{tmp_path / 'missing-folder' / 'index.db'}")
