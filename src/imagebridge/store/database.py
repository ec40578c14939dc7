"""Imaging Document Source index, the database engine and its schema migrations (Alembic).

The engine is plain SQLAlchemy: SQLite by default, PostgreSQL (psycopg 3)
when the URL says so.  For SQLite each connection gets WAL journaling, a
busy timeout, foreign keys and ``synchronous=NORMAL``; an in-memory database
(``sqlite://``) is one shared connection.  Migrations are Alembic scripts
shipped inside the package and run programmatically (no ``alembic.ini``):
:func:`upgrade` brings any database to the head revision and does nothing
on one that is already there.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x1B_0001
"""PostgreSQL advisory lock key held while the schema is migrated."""
BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another writer before failing."""


def is_sqlite(engine: Engine) -> bool:
    """True for a SQLite database (which has a single writer at a time)."""
    return engine.dialect.name == "sqlite"


def is_memory(engine: Engine) -> bool:
    """True for an in-memory SQLite database (one connection shared by every thread)."""
    return is_sqlite(engine) and engine.url.database in (None, "", ":memory:")


def open_engine(database_url: str) -> Engine:
    """An engine for *database_url*, with the SQLite settings described above."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    if url.database in (None, "", ":memory:"):
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
        event.listen(engine, "connect", _memory_pragmas)
    else:
        # Enough pooled connections for anyio's worker threads (40 by default), so
        # concurrent requests reuse connections instead of reopening them.
        engine = create_engine(url, connect_args=connect_args, pool_size=16, max_overflow=32)
        event.listen(engine, "connect", _file_pragmas)
    return engine


def _memory_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _file_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config() -> Config:
    """An Alembic configuration pointing at the package's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the head revision (idempotent).

    Several workers or hosts may start at once: on PostgreSQL the migration
    runs under a transaction-scoped advisory lock, on a SQLite file under an
    exclusive lock on ``<file>.migrate-lock``, so one process migrates and the
    others then find the schema at the head.
    """
    config = alembic_config()
    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    folder = Path(engine.url.database or "").parent
    if not is_sqlite(engine) or is_memory(engine) or not folder.is_dir():
        yield  # no file to guard (a missing folder fails when the database is opened)
        return
    with open(f"{engine.url.database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def head_revision() -> str | None:
    """The newest migration revision shipped with this version."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
