"""Fixtures for the store tests: a fresh SQLite index in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebridge.store import Store

DEFAULT_AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
"""The community's default assigning authority in these tests."""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.db'}"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url, default_assigning_authority=DEFAULT_AUTHORITY)
    yield opened
    opened.close()
