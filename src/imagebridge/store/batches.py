"""Imaging Document Source index, batched reads and writes by natural key (SQLAlchemy Core).

Writes touch many rows at once: each table is read once per batch with
``IN`` lists of at most :data:`CHUNK` values, then rows are updated and
inserted with ``executemany`` (SQLAlchemy's "insertmanyvalues" turns the
inserts into multi-row ``INSERT ... RETURNING`` on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql

CHUNK = 500
"""Largest ``IN`` list sent in one statement (well under every driver's parameter limit)."""


def chunked(values: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    """Consecutive lists of at most *size* values."""
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def upsert_rows(
    conn: Connection, table: Table, key: tuple[str, ...], rows_: Sequence[dict[str, Any]]
) -> dict[tuple[Any, ...], int]:
    """Insert or update *rows_* by their natural *key* columns; returns key → primary key.

    The last column of *key* is looked up with ``IN``; each other key column
    that has one value in the whole batch (the repository, typically) is an
    equality condition, so the lookup can use the table's unique index.  The
    rows must all carry the same columns.  A key given twice keeps its last row.
    """
    by_key = {tuple(r[c] for c in key): r for r in rows_}
    if not by_key:
        return {}
    ids: dict[tuple[Any, ...], int] = {}
    lookup = table.c[key[-1]]
    fixed = []
    for index, column in enumerate(key[:-1]):
        values = {k[index] for k in by_key}
        if len(values) == 1:
            fixed.append(table.c[column] == values.pop())
    for batch in chunked({k[-1] for k in by_key}):
        query = select(table.c.id, *(table.c[c] for c in key)).where(*fixed, lookup.in_(batch))
        for found in conn.execute(query):
            found_key = tuple(found[1:])
            if found_key in by_key:
                ids[found_key] = found[0]
    # Rows are written in primary-key / key order, so concurrent writers on
    # PostgreSQL lock shared rows in the same order and cannot deadlock on them.
    updates = sorted(
        ({"pk_": ids[k], **r} for k, r in by_key.items() if k in ids), key=lambda u: u["pk_"]
    )
    if updates:
        conn.execute(update(table).where(table.c.id == bindparam("pk_")), updates)
    new_keys = sorted((k for k in by_key if k not in ids), key=repr)
    if not new_keys:
        return ids
    if conn.dialect.name == "postgresql":
        ids.update(_insert_or_update(conn, table, key, [by_key[k] for k in new_keys]))
    else:  # SQLite: one writer at a time, nobody can insert the key in between
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        result = conn.execute(statement, [by_key[k] for k in new_keys])
        ids.update(zip(new_keys, result.scalars(), strict=True))
    return ids


def _insert_or_update(
    conn: Connection, table: Table, key: tuple[str, ...], rows_: Sequence[dict[str, Any]]
) -> dict[tuple[Any, ...], int]:
    """PostgreSQL: ``INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING``.

    Another worker may insert one of these keys after our look-up; the
    conflict then turns our insert into an update of its row (after its
    transaction commits) instead of failing the whole batch.
    """
    statement = postgresql.insert(table)
    changed = {c: statement.excluded[c] for c in rows_[0] if c not in key}
    upsert = statement.on_conflict_do_update(
        index_elements=[table.c[c] for c in key],
        set_=changed or {key[-1]: statement.excluded[key[-1]]},
    ).returning(table.c.id, *(table.c[c] for c in key))
    ids: dict[tuple[Any, ...], int] = {}
    for found in conn.execute(upsert, list(rows_)):
        ids[tuple(found[1:])] = found[0]
    return ids
