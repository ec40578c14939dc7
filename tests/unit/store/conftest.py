"""Fixtures for the store tests: a fresh index on SQLite and on a real PostgreSQL.

``database_url`` (:mod:`tests.conftest`) is parametrized, so every store test
runs against both backends.  Tests of SQLite-only behaviour take ``sqlite_url``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagebridge.store import Store

DEFAULT_AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
"""The community's default assigning authority in these tests."""


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url, default_assigning_authority=DEFAULT_AUTHORITY)
    yield opened
    opened.close()
