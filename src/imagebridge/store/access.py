"""Transactions on the store's engine for the tables beside the index: jobs, audit, counters.

:class:`EngineAccess` gives a subclass ``_writing()`` (one transaction) and
``_reading()`` connections, with database errors translated to
:class:`~imagebridge.errors.StoreError` once.  SQLite has a single writer,
so writes in this process are serialised by one lock *per engine*, shared by
every accessor of that engine (jobs, audit outbox and counters write to the
same file); an in-memory database serialises reads too.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Executable

from imagebridge.store import database
from imagebridge.store.store import _translated

_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _engine_lock(engine: Engine) -> contextlib.AbstractContextManager[Any]:
    if not database.is_sqlite(engine):
        return contextlib.nullcontext()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(engine, threading.Lock())


class EngineAccess:
    """Base of the store's table accessors: the engine, a write lock, translated errors."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._write_lock = _engine_lock(engine)
        self._read_lock: contextlib.AbstractContextManager[Any] = (
            self._write_lock if database.is_memory(engine) else contextlib.nullcontext()
        )

    @property
    def engine(self) -> Engine:
        """The database these tables live in (other accessors share it)."""
        return self._engine

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._write_lock, _translated(), self._engine.begin() as conn:
            yield conn

    def _insert_once(self, statement: Executable) -> bool:
        """Run an INSERT in its own transaction; False when a unique key already had the row."""
        with _translated():
            try:
                with self._write_lock, self._engine.begin() as conn:
                    conn.execute(statement)
            except IntegrityError:
                return False
        return True

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._read_lock, _translated(), self._engine.connect() as conn:
            yield conn
