"""Integration fixtures: a real Orthanc PACS shared by the session (see ``orthanc.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.orthanc import OrthancServer, require_orthanc, running_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc (DICOMweb + DIMSE) on free loopback ports for the whole session.

    Tests load their own studies (distinct patients) and never stop it; a
    test that needs a PACS going down starts its own with ``start_orthanc``.
    """
    require_orthanc()
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
