"""Shared fixtures: the conformance folder and the official schemas.

The conformance material lives at ``../shared/conformance`` relative to the
project root.  Outside CI a missing folder skips the tests that need it; in CI
(``CI=true``) it fails them loudly, so a broken checkout cannot pass green.
"""

from __future__ import annotations

import os
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
