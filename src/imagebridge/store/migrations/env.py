"""Imaging Document Source index, Alembic environment: runs on the connection it is given.

:func:`imagebridge.store.database.upgrade` puts an open connection into
``config.attributes["connection"]``; there is no ``alembic.ini`` and no
offline (SQL script) mode.  ``render_as_batch`` lets later migrations alter
SQLite tables.
"""

from __future__ import annotations

from alembic import context

from imagebridge.errors import StoreError
from imagebridge.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise StoreError("imagebridge migrations run through imagebridge.store, with a connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
