"""Shared fixtures: the conformance folder and the official schemas.

The conformance material lives at ``../shared/conformance`` relative to the
project root.  Outside CI a missing folder skips the tests that need it; in CI
(``CI=true``) it fails them loudly, so a broken checkout cannot pass green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conformance_data import CONFORMANCE_DIR, SCHEMA_DIR
from tests.postgres import PostgresCluster, find_bin_dir, running_cluster


def _require_conformance() -> Path:
    if not CONFORMANCE_DIR.is_dir():
        message = f"conformance folder not found at {CONFORMANCE_DIR}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (required in CI)", pytrace=False)
        pytest.skip(message)
    return CONFORMANCE_DIR


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """Root of ``../shared/conformance`` (fails in CI when missing)."""
    return _require_conformance()


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    """Root of the official XML schemas (fails in CI when missing)."""
    _require_conformance()
    return SCHEMA_DIR


Validator = Callable[[Path], list[str]]


@pytest.fixture(scope="session")
def dciodvfy() -> Validator:
    """Run dciodvfy on a file and return its message lines (fails the test on "Error" lines).

    Missing dciodvfy fails in CI (``CI=true``) and skips locally; install it
    with ``apt-get install dicom3tools``.
    """
    executable = shutil.which("dciodvfy")
    if executable is None:
        message = "dciodvfy (Debian package dicom3tools) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (required in CI)", pytrace=False)
        pytest.skip(message)

    def validate(path: Path) -> list[str]:
        result = subprocess.run(
            [executable, str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        lines = [
            line.strip()
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip().startswith(("Error", "Abort", "Warning"))
        ]
        errors = [line for line in lines if not line.startswith("Warning")]
        assert not errors, f"dciodvfy errors for {path.name}:\n" + "\n".join(errors)
        assert result.returncode == 0, f"dciodvfy exit status {result.returncode} for {path.name}"
        return [line for line in lines if line.startswith("Warning")]

    return validate


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the session (fails in CI when PostgreSQL is missing).

    Install it with ``apt-get install postgresql`` (``make test`` does).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL server programs (Debian package postgresql) are not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (required in CI)", pytrace=False)
        pytest.skip(message)
    with running_cluster(bin_dir) as cluster:
        yield cluster


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A new empty database: a SQLite file, then a database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url
    cluster = request.getfixturevalue("postgres")
    return str(cluster.create_database())
