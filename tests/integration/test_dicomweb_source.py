"""DICOMweb image source (QIDO-RS, WADO-RS, STOW-RS) against a real Orthanc."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_ISSUER, SyntheticStudy, make_study
from imagebridge.errors import InstanceNotFound, SourceProtocolError, SourceUnavailable
from imagebridge.model.imaging import DicomPatient, InstanceHeader
from imagebridge.sources import dicomweb
from imagebridge.sources.base import ImageSource
from imagebridge.sources.dicomweb import DicomWebSource
from tests.http_server import running_server
from tests.integration.orthanc import OrthancServer, start_orthanc

pytestmark = pytest.mark.anyio

REPOSITORY = "1.3.6.1.4.1.21367.13.71.201.1"
ALICE = DicomPatient("DICOMWEB^ALICE", "IB-DW-0001", DEMO_ISSUER, "19700101", "F")
BOB = DicomPatient("DICOMWEB^BOB", "IB-DW-0002", DEMO_ISSUER, "19580101", "M")
CAROL = DicomPatient("DICOMWEB^CAROL", "IB-DW-0003", DEMO_ISSUER, "19851111", "F")
DAVE = DicomPatient("DICOMWEB^DAVE", "IB-DW-0004", DEMO_ISSUER, "19900202", "M")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclasses.dataclass(frozen=True)
class Loaded:
    alice_mr: SyntheticStudy
    alice_cr: SyntheticStudy
    bob_ct: SyntheticStudy


@pytest.fixture(scope="module")
def loaded(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    folder = tmp_path_factory.mktemp("dicomweb-studies")
    studies = Loaded(
        alice_mr=make_study(ALICE, folder / "mr", modality="MR", instances=2, seed=1001),
        alice_cr=make_study(ALICE, folder / "cr", modality="CR", seed=1002),
        bob_ct=make_study(BOB, folder / "ct", modality="CT", instances=5, seed=1003),
    )
    for study in (studies.alice_mr, studies.alice_cr, studies.bob_ct):
        orthanc.upload_study(study)
    return studies


@pytest.fixture
async def source(orthanc: OrthancServer) -> AsyncIterator[DicomWebSource]:
    source = DicomWebSource(REPOSITORY, orthanc.dicomweb_url)
    yield source
    await source.aclose()


def _file_headers(study: SyntheticStudy) -> dict[str, InstanceHeader]:
    headers = (read_instance_header(path) for path in study.files)
    return {h.sop_instance_uid: h for h in headers}


async def _read(source: DicomWebSource, header: InstanceHeader) -> bytes:
    chunks = [
        chunk
        async for chunk in source.read_instance(
            header.study.study_instance_uid,
            header.series.series_instance_uid,
            header.sop_instance_uid,
        )
    ]
    return b"".join(chunks)


async def test_is_an_image_source(source: DicomWebSource) -> None:
    assert isinstance(source, ImageSource)
    assert source.kind == "dicomweb"
    assert source.repository_unique_id == REPOSITORY


async def test_patient_studies_lists_studies_with_instance_counts(
    source: DicomWebSource, loaded: Loaded
) -> None:
    studies = {s.study_instance_uid: s for s in await source.patient_studies(ALICE.id)}
    assert {uid: s.number_of_instances for uid, s in studies.items()} == {
        loaded.alice_mr.study_instance_uid: len(loaded.alice_mr.files),
        loaded.alice_cr.study_instance_uid: len(loaded.alice_cr.files),
    }
    assert {s.patient_id for s in studies.values()} == {ALICE.id}
    (bob,) = await source.patient_studies(BOB.id)
    assert (bob.study_instance_uid, bob.number_of_instances) == (
        loaded.bob_ct.study_instance_uid,
        5,
    )


@pytest.mark.parametrize(
    "patient_id", ["IB-DW-9999", "", "*", "IB-DW-*", "IB-DW-000?", "ib-dw-0001"]
)
async def test_patient_studies_matches_one_patient_exactly(
    source: DicomWebSource, loaded: Loaded, patient_id: str
) -> None:
    assert await source.patient_studies(patient_id) == []


async def test_study_instances_equal_the_headers_of_the_uploaded_files(
    source: DicomWebSource, loaded: Loaded
) -> None:
    for study in (loaded.alice_mr, loaded.alice_cr, loaded.bob_ct):
        expected = _file_headers(study)
        got = {
            h.sop_instance_uid: h for h in await source.study_instances(study.study_instance_uid)
        }
        assert got.keys() == expected.keys()
        for uid, header in got.items():
            # DICOMweb metadata carries no file size, and Orthanc's no transfer syntax.
            assert header.file_size is None
            assert header.transfer_syntax_uid in ("", expected[uid].transfer_syntax_uid)
            assert header == dataclasses.replace(
                expected[uid], file_size=None, transfer_syntax_uid=header.transfer_syntax_uid
            )


async def test_study_instances_of_an_unknown_study_is_empty(source: DicomWebSource) -> None:
    assert await source.study_instances("2.25.1234567") == []
    assert await source.study_instances("2.25.*") == []


async def test_read_instance_returns_the_stored_bytes(
    source: DicomWebSource, orthanc: OrthancServer, loaded: Loaded
) -> None:
    for path in (*loaded.alice_mr.files[:2], loaded.bob_ct.files[-1]):
        header = read_instance_header(path)
        data = await _read(source, header)
        assert data == orthanc.stored_file(header.sop_instance_uid)
        assert data == path.read_bytes()


async def test_read_instance_of_an_unknown_instance_raises_instance_not_found(
    source: DicomWebSource, loaded: Loaded
) -> None:
    header = read_instance_header(loaded.bob_ct.files[0])
    with pytest.raises(InstanceNotFound):
        await _read(source, dataclasses.replace(header, sop_instance_uid="2.25.999"))
    with pytest.raises(InstanceNotFound):
        await _read(source, dataclasses.replace(header, sop_instance_uid="*"))


async def test_iter_instances_covers_the_whole_archive(
    orthanc: OrthancServer, loaded: Loaded
) -> None:
    source = DicomWebSource(REPOSITORY, orthanc.dicomweb_url, page_size=2)  # several pages
    try:
        seen = [h.sop_instance_uid async for h in source.iter_instances()]
    finally:
        await source.aclose()
    assert len(seen) == len(set(seen)) == orthanc.instance_count()
    for study in (loaded.alice_mr, loaded.alice_cr, loaded.bob_ct):
        assert _file_headers(study).keys() <= set(seen)


async def test_store_instances_makes_a_study_visible(
    source: DicomWebSource, orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = make_study(CAROL, tmp_path, modality="CR", seed=1004)
    first, second = study.files

    async def chunks() -> AsyncIterator[bytes]:
        data = second.read_bytes()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    outcome = await source.store_instances([first, chunks()])
    expected = _file_headers(study)
    assert outcome.ok
    assert set(outcome.stored) == expected.keys()
    (version,) = await source.patient_studies(CAROL.id)
    assert version.study_instance_uid == study.study_instance_uid
    assert version.number_of_instances == 2
    for path in study.files:
        assert await _read(source, read_instance_header(path)) == path.read_bytes()


async def test_store_instances_reports_refused_instances(
    source: DicomWebSource,
) -> None:
    outcome = await source.store_instances([b"this is not DICOM"])
    assert not outcome.ok
    assert outcome.stored == ()


async def test_probe_answers(source: DicomWebSource) -> None:
    result = await source.probe()
    assert result.ok, result.detail


# --- the PACS is down -----------------------------------------------------------------


def _assert_clear(exc: BaseException, *secrets: str) -> None:
    text = str(exc)
    assert "Traceback" not in text
    assert "DICOMweb archive" in text
    for secret in secrets:
        assert secret not in text


async def _every_method_unavailable(source: DicomWebSource, header: InstanceHeader) -> None:
    with pytest.raises(SourceUnavailable) as info:
        await source.patient_studies(header.patient.id)
    _assert_clear(info.value, header.patient.id)
    with pytest.raises(SourceUnavailable) as info:
        await source.study_instances(header.study.study_instance_uid)
    _assert_clear(info.value)
    with pytest.raises(SourceUnavailable) as info:
        _ = [h async for h in source.iter_instances()]
    _assert_clear(info.value)
    with pytest.raises(SourceUnavailable) as info:
        await _read(source, header)
    _assert_clear(info.value)
    with pytest.raises(SourceUnavailable) as info:
        await source.store_instances([b"\x00" * 200])
    _assert_clear(info.value)
    probe = await source.probe()
    assert not probe.ok
    assert "DICOMweb archive" in probe.detail


async def test_every_method_raises_source_unavailable_when_orthanc_stops(
    tmp_path: Path,
) -> None:
    study = make_study(ALICE, tmp_path / "study", modality="CR", seed=1005)
    header = read_instance_header(study.files[0])
    server = start_orthanc(tmp_path / "pacs")
    source = DicomWebSource(REPOSITORY, server.dicomweb_url, connect_timeout=2.0)
    try:
        server.upload_study(study)
        assert len(await source.patient_studies(ALICE.id)) == 1
        server.kill()
        await _every_method_unavailable(source, header)
        with pytest.raises(SourceUnavailable, match="cannot be reached"):
            await source.patient_studies(ALICE.id)
    finally:
        server.kill()
        await source.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_a_pacs_that_does_not_answer_times_out(silent_port: int, loaded: Loaded) -> None:
    header = read_instance_header(loaded.bob_ct.files[0])
    source = DicomWebSource(
        REPOSITORY, f"http://127.0.0.1:{silent_port}/dicom-web", read_timeout=0.3
    )
    try:
        with pytest.raises(SourceUnavailable, match=r"did not answer .* in time"):
            await source.patient_studies(BOB.id)
        with pytest.raises(SourceUnavailable, match="in time"):
            await _read(source, header)
    finally:
        await source.aclose()


def _asgi_answer(status: int, content_type: bytes, body: bytes) -> object:
    """A tiny real ASGI app that always gives the same answer."""

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        await send(  # type: ignore[operator]
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    return app


async def test_server_errors_and_malformed_answers(loaded: Loaded) -> None:
    header = read_instance_header(loaded.bob_ct.files[0])
    cases = [
        (503, b"text/plain", b"down for maintenance", SourceUnavailable, "HTTP 503"),
        (200, b"application/dicom+json", b'[{"0020000D": ', SourceProtocolError, "malformed JSON"),
        (200, b"text/html", b"<html></html>", SourceProtocolError, "not DICOM JSON"),
        (400, b"text/plain", b"bad", SourceProtocolError, "HTTP 400"),
    ]
    for status, content_type, body, error, message in cases:
        app = _asgi_answer(status, content_type, body)
        async with running_server(app) as url:
            source = DicomWebSource(REPOSITORY, url)
            try:
                with pytest.raises(error, match=message):
                    await source.study_instances(header.study.study_instance_uid)
            finally:
                await source.aclose()
    app = _asgi_answer(200, b'multipart/related; boundary="b1"', b"--b1\r\n\r\nDICM")
    async with running_server(app) as url:
        source = DicomWebSource(REPOSITORY, url)
        try:
            with pytest.raises(SourceProtocolError, match="malformed multipart"):
                await _read(source, header)
        finally:
            await source.aclose()


# --- memory -----------------------------------------------------------------------------


async def test_read_instance_streams_a_large_instance_in_bounded_memory(
    source: DicomWebSource, orthanc: OrthancServer, tmp_path: Path
) -> None:
    big = make_study(DAVE, tmp_path, modality="CT", instances=1, rows=5000, columns=5000, seed=1006)
    (path,) = big.files
    size = path.stat().st_size
    assert size > 50_000_000
    orthanc.upload(big.files)
    header = read_instance_header(path)
    digest = hashlib.sha256()
    received = 0
    tracemalloc.start()
    try:
        async for chunk in source.read_instance(
            header.study.study_instance_uid,
            header.series.series_instance_uid,
            header.sop_instance_uid,
        ):
            digest.update(chunk)
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    with open(path, "rb") as fp:
        assert digest.hexdigest() == hashlib.file_digest(fp, "sha256").hexdigest()
    assert peak < size // 10, f"peak traced memory {peak} bytes for a {size}-byte instance"
    orthanc.delete_instance(header.sop_instance_uid)


async def test_read_series_gives_each_stored_part_with_its_identity(
    source: DicomWebSource, orthanc: OrthancServer, loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dicomweb, "PART_IN_MEMORY", 64 * 1024)  # some parts go to a file
    expected = {
        h.sop_instance_uid: (h, path)
        for path in loaded.bob_ct.files
        for h in (read_instance_header(path),)
    }
    first = next(iter(expected.values()))[0]
    seen: dict[str, bytes] = {}
    async for sop, syntax, body in source.read_series(
        first.study.study_instance_uid, first.series.series_instance_uid
    ):
        header, path = expected[sop]
        assert syntax == header.transfer_syntax_uid
        if isinstance(body, bytes):
            seen[sop] = body
        else:
            with body:
                seen[sop] = body.read()
        assert seen[sop] == path.read_bytes() == orthanc.stored_file(sop)
    assert seen.keys() == expected.keys()
