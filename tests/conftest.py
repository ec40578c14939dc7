"""Shared fixtures: the conformance folder and the official schemas.

The conformance material lives at ``../shared/conformance`` relative to the
project root.  Outside CI a missing folder skips the tests that need it; in CI
(``CI=true``) it fails them loudly, so a broken checkout cannot pass green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conformance_data import CONFORMANCE_DIR, SCHEMA_DIR


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
