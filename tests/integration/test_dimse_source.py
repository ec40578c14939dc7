"""DIMSE image source (C-FIND, C-GET, C-MOVE, C-ECHO through pynetdicom) against a real Orthanc."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.synthetic import DEMO_ISSUER, SyntheticStudy, make_study
from imagebridge.errors import InstanceNotFound, SourceUnavailable
from imagebridge.model.imaging import DicomPatient, InstanceHeader
from imagebridge.sources.base import ImageSource
from imagebridge.sources.dimse import DimseSource, DimseTimeouts
from tests.integration.orthanc import OrthancServer, start_orthanc

pytestmark = pytest.mark.anyio

REPOSITORY = "1.3.6.1.4.1.21367.13.71.201.2"
ERIN = DicomPatient("DIMSE^ERIN", "IB-DM-0001", DEMO_ISSUER, "19700101", "F")
FRANK = DicomPatient("DIMSE^FRANK", "IB-DM-0002", DEMO_ISSUER, "19580101", "M")
GRACE = DicomPatient("DIMSE^GRACE", "IB-DM-0003", DEMO_ISSUER, "19900202", "F")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclasses.dataclass(frozen=True)
class Loaded:
    erin_mr: SyntheticStudy
    erin_cr: SyntheticStudy
    frank_ct: SyntheticStudy


@pytest.fixture(scope="module")
def loaded(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    folder = tmp_path_factory.mktemp("dimse-studies")
    studies = Loaded(
        erin_mr=make_study(ERIN, folder / "mr", modality="MR", instances=2, seed=2001),
        erin_cr=make_study(ERIN, folder / "cr", modality="CR", seed=2002),
        frank_ct=make_study(FRANK, folder / "ct", modality="CT", instances=4, seed=2003),
    )
    for study in (studies.erin_mr, studies.erin_cr, studies.frank_ct):
        orthanc.upload_study(study)
    return studies


def _source(orthanc: OrthancServer, **options: object) -> DimseSource:
    return DimseSource(
        REPOSITORY,
        "127.0.0.1",
        orthanc.dicom_port,
        orthanc.aet,
        orthanc.scu_aet,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def source(orthanc: OrthancServer) -> AsyncIterator[DimseSource]:
    source = _source(orthanc)
    yield source
    await source.aclose()


def _file_headers(study: SyntheticStudy) -> dict[str, InstanceHeader]:
    headers = (read_instance_header(path) for path in study.files)
    return {h.sop_instance_uid: h for h in headers}


async def _read(source: DimseSource, header: InstanceHeader) -> bytes:
    chunks = [
        chunk
        async for chunk in source.read_instance(
            header.study.study_instance_uid,
            header.series.series_instance_uid,
            header.sop_instance_uid,
        )
    ]
    return b"".join(chunks)


def _meta_length(data: bytes) -> int:
    """Bytes before the data set: preamble, DICM, and the File Meta group (length in 0002,0000)."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise AssertionError("not a Part-10 object with a group length")
    return 144 + int.from_bytes(data[140:144], "little")


def _split_part10(data: bytes) -> tuple[dict[str, str], bytes]:
    """(key File Meta elements, the data set bytes after the meta group)."""
    meta = dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    keys = {
        "sop_class": str(meta.MediaStorageSOPClassUID),
        "sop_instance": str(meta.MediaStorageSOPInstanceUID),
        "transfer_syntax": str(meta.TransferSyntaxUID),
    }
    return keys, data[_meta_length(data) :]


async def test_is_an_image_source(source: DimseSource) -> None:
    assert isinstance(source, ImageSource)
    assert source.kind == "dimse"
    assert source.repository_unique_id == REPOSITORY


async def test_patient_studies_lists_studies_with_instance_counts(
    source: DimseSource, loaded: Loaded
) -> None:
    studies = {s.study_instance_uid: s for s in await source.patient_studies(ERIN.id)}
    assert {uid: s.number_of_instances for uid, s in studies.items()} == {
        loaded.erin_mr.study_instance_uid: len(loaded.erin_mr.files),
        loaded.erin_cr.study_instance_uid: len(loaded.erin_cr.files),
    }
    assert {s.patient_id for s in studies.values()} == {ERIN.id}
    (frank,) = await source.patient_studies(FRANK.id)
    assert (frank.study_instance_uid, frank.number_of_instances) == (
        loaded.frank_ct.study_instance_uid,
        4,
    )


@pytest.mark.parametrize(
    "patient_id", ["IB-DM-9999", "", "*", "IB-DM-*", "IB-DM-000?", "ib-dm-0001"]
)
async def test_patient_studies_matches_one_patient_exactly(
    source: DimseSource, loaded: Loaded, patient_id: str
) -> None:
    assert await source.patient_studies(patient_id) == []


async def test_study_instances_equal_the_headers_of_the_uploaded_files(
    source: DimseSource, loaded: Loaded
) -> None:
    for study in (loaded.erin_mr, loaded.erin_cr, loaded.frank_ct):
        expected = _file_headers(study)
        got = {
            h.sop_instance_uid: h for h in await source.study_instances(study.study_instance_uid)
        }
        assert got.keys() == expected.keys()
        for uid, header in got.items():
            # A C-FIND match carries no file size, and Orthanc's no transfer syntax.
            assert header.file_size is None
            assert header.transfer_syntax_uid in ("", expected[uid].transfer_syntax_uid)
            assert header == dataclasses.replace(
                expected[uid], file_size=None, transfer_syntax_uid=header.transfer_syntax_uid
            )


async def test_study_instances_of_an_unknown_study_is_empty(source: DimseSource) -> None:
    assert await source.study_instances("2.25.1234567") == []
    assert await source.study_instances("2.25.*") == []


async def test_c_get_returns_the_stored_data_set_unchanged(
    source: DimseSource, orthanc: OrthancServer, loaded: Loaded
) -> None:
    for path in (*loaded.erin_mr.files[:2], loaded.frank_ct.files[-1]):
        header = read_instance_header(path)
        meta, dataset = _split_part10(await _read(source, header))
        stored_meta, stored_dataset = _split_part10(orthanc.stored_file(header.sop_instance_uid))
        assert dataset == stored_dataset  # byte for byte, in the stored transfer syntax
        assert meta == stored_meta


async def test_c_move_returns_the_stored_data_set_unchanged(
    orthanc: OrthancServer, loaded: Loaded
) -> None:
    source = _source(orthanc, retrieve="move", move_port=orthanc.move_port)
    try:
        for path in (loaded.erin_cr.files[0], loaded.frank_ct.files[1]):
            header = read_instance_header(path)
            meta, dataset = _split_part10(await _read(source, header))
            stored_meta, stored_dataset = _split_part10(
                orthanc.stored_file(header.sop_instance_uid)
            )
            assert (meta, dataset) == (stored_meta, stored_dataset)
        unknown = dataclasses.replace(header, sop_instance_uid="2.25.999")
        with pytest.raises(InstanceNotFound):
            await _read(source, unknown)
    finally:
        await source.aclose()


async def test_read_instance_of_an_unknown_instance_raises_instance_not_found(
    source: DimseSource, loaded: Loaded
) -> None:
    header = read_instance_header(loaded.frank_ct.files[0])
    with pytest.raises(InstanceNotFound):
        await _read(source, dataclasses.replace(header, sop_instance_uid="2.25.999"))
    with pytest.raises(InstanceNotFound):
        await _read(source, dataclasses.replace(header, sop_instance_uid="*"))


async def test_iter_instances_covers_the_whole_archive(
    source: DimseSource, orthanc: OrthancServer, loaded: Loaded
) -> None:
    seen = [h.sop_instance_uid async for h in source.iter_instances()]
    assert len(seen) == len(set(seen)) == orthanc.instance_count()
    for study in (loaded.erin_mr, loaded.erin_cr, loaded.frank_ct):
        assert _file_headers(study).keys() <= set(seen)


async def test_probe_answers_c_echo(source: DimseSource) -> None:
    result = await source.probe()
    assert result.ok, result.detail


# --- the PACS is down, refuses us, or is silent -------------------------------------------


def _assert_clear(exc: BaseException, *secrets: str) -> None:
    text = str(exc)
    assert "Traceback" not in text
    assert "the PACS" in text
    for secret in secrets:
        assert secret not in text


async def _every_method_unavailable(source: DimseSource, header: InstanceHeader) -> str:
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
    probe = await source.probe()
    assert not probe.ok
    assert "the PACS" in probe.detail
    return str(info.value)


async def test_every_method_raises_source_unavailable_when_orthanc_stops(
    tmp_path: Path,
) -> None:
    study = make_study(ERIN, tmp_path / "study", modality="CR", seed=2005)
    header = read_instance_header(study.files[0])
    server = start_orthanc(tmp_path / "pacs")
    source = _source(server, timeouts=DimseTimeouts(connect=2.0, dimse=5.0, network=5.0))
    try:
        server.upload_study(study)
        assert len(await source.patient_studies(ERIN.id)) == 1
        server.kill()
        message = await _every_method_unavailable(source, header)
        assert "cannot be reached" in message
    finally:
        server.kill()
        await source.aclose()


async def test_an_unknown_calling_ae_is_rejected(orthanc: OrthancServer, loaded: Loaded) -> None:
    header = read_instance_header(loaded.frank_ct.files[0])
    stranger = DimseSource(REPOSITORY, "127.0.0.1", orthanc.dicom_port, orthanc.aet, "STRANGER")
    wrong_called = DimseSource(REPOSITORY, "127.0.0.1", orthanc.dicom_port, "NOTORTHANC")
    for source in (stranger, wrong_called):
        message = await _every_method_unavailable(source, header)
        assert "rejected the association" in message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_a_pacs_that_does_not_answer_times_out(silent_port: int, loaded: Loaded) -> None:
    header = read_instance_header(loaded.frank_ct.files[0])
    timeouts = DimseTimeouts(connect=0.5, dimse=0.5, network=0.5)
    source = DimseSource(REPOSITORY, "127.0.0.1", silent_port, "SILENT", timeouts=timeouts)
    message = await _every_method_unavailable(source, header)
    assert "within 0.5 s" in message


async def test_c_move_destination_port_taken_is_reported(
    orthanc: OrthancServer, loaded: Loaded
) -> None:
    header = read_instance_header(loaded.frank_ct.files[0])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        source = _source(orthanc, retrieve="move", move_port=taken.getsockname()[1])
        try:
            with pytest.raises(SourceUnavailable, match="cannot listen"):
                await _read(source, header)
        finally:
            await source.aclose()


def test_constructor_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="AE title"):
        DimseSource(REPOSITORY, "127.0.0.1", 104, "A" * 17)
    with pytest.raises(ValueError, match="AE title"):
        DimseSource(REPOSITORY, "127.0.0.1", 104, "PACS", "BAD\\AE")
    with pytest.raises(ValueError, match="move_port"):
        DimseSource(REPOSITORY, "127.0.0.1", 104, "PACS", retrieve="move")


# --- memory -----------------------------------------------------------------------------


async def test_c_get_streams_a_large_instance_in_bounded_memory(
    source: DimseSource, orthanc: OrthancServer, tmp_path: Path
) -> None:
    big = make_study(
        GRACE, tmp_path, modality="CT", instances=1, rows=5000, columns=5000, seed=2006
    )
    (path,) = big.files
    size = path.stat().st_size
    assert size > 50_000_000
    orthanc.upload(big.files)
    header = read_instance_header(path)
    digest = hashlib.sha256()
    first = b""
    tracemalloc.start()
    try:
        async for chunk in source.read_instance(
            header.study.study_instance_uid,
            header.series.series_instance_uid,
            header.sop_instance_uid,
        ):
            if not first:
                first = chunk
                digest.update(chunk[_meta_length(chunk) :])
            else:
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stored = orthanc.stored_file(header.sop_instance_uid)
    assert digest.hexdigest() == hashlib.sha256(stored[_meta_length(stored) :]).hexdigest()
    assert peak < size // 10, f"peak traced memory {peak} bytes for a {size}-byte instance"
    orthanc.delete_instance(header.sop_instance_uid)
