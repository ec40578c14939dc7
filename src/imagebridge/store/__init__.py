"""Imaging Document Source index: patients, studies, instances, files and KOS manifests.

SQLAlchemy Core on SQLite by default (PostgreSQL when the URL says so),
with Alembic migrations run by :meth:`Store.open`.  See :mod:`.store` for the
API, :mod:`.schema` for the tables and :mod:`.authority` for how Patient IDs
get their assigning authority; :mod:`.jobs` keeps the durable import jobs.
"""

from imagebridge.store.jobs import JobStore
from imagebridge.store.names import normalise_name
from imagebridge.store.store import RepresentationKey, Store

__all__ = ["JobStore", "RepresentationKey", "Store", "normalise_name"]
