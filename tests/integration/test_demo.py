"""``imagebridge demo`` as a person runs it: a real process, three communities on loopback.

The demo runs with ``--small`` (a 20-slice 64x64 CT, a 3x4 MR, small CRs: the
same flow and headers, a fraction of the bytes) in a temporary working
directory.  The tests check the exit status, the summary (both communities,
the shared patient's studies from each), the files in community C's local
archive (filed under the local MRN, the foreign ids kept in the Original
Attributes Sequence), a second run in the same folder, the staff page server
answering until SIGINT, and the refusal of a folder the demo did not make.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from imagebridge.cli.demo_world import LOCAL_MRN, DemoFolderRefused, prepare

FOREIGN_IDS = {"A-100232", "B-5512"}
DESCRIPTIONS = ("CT CHEST WITHOUT CONTRAST", "XR CHEST 2 VIEWS", "MR BRAIN WITHOUT CONTRAST")


def _cli() -> str:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        pytest.fail("the imagebridge console script is not installed")
    return found


def _env() -> dict[str, str]:
    """A wide terminal, so rich wraps no line the assertions read."""
    return {**os.environ, "COLUMNS": "200"}


def _demo(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_cli(), "demo", "--no-serve", "--small", "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        check=False,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "demo-data"


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> subprocess.CompletedProcess[str]:
    return _demo(workdir)


def _check_summary(out: str) -> None:
    assert "What came from where" in out
    summary = out.split("What came from where", 1)[1].splitlines()
    for community in ("Community A", "Community B"):
        row = next((line for line in summary if line.startswith(f"│ {community}")), "")
        assert re.search(r"│ ok\s+│", row), f"{community} is not ok in the summary:\n{out}"
    for description in DESCRIPTIONS:  # the shared patient's studies, from A and from B
        assert description in out
    assert "Total: 3 studies, 34 instances" in out
    for foreign in FOREIGN_IDS:
        assert re.search(rf"{foreign} \(issuer [0-9.]+\) from Community . -> {LOCAL_MRN}", out)
    assert "Timings:" in out


def _check_archive(workdir: Path) -> None:
    """Every imported file carries the local MRN; the foreign id is in its Original Attributes."""
    archive = workdir / "local-archive"
    sources: dict[str, int] = {}
    studies = [p for p in archive.iterdir() if p.is_dir()]
    assert len(studies) == 4  # the local prior and the three imported studies
    for study in studies:
        files = sorted(study.glob("*/*.dcm"))
        assert files, study
        for path in files[:3]:
            ds = dcmread(path, stop_before_pixels=True)
            assert ds.PatientID == LOCAL_MRN
            assert ds.PatientName == "DEMO^BOB"
            if "OriginalAttributesSequence" not in ds:
                sources["prior"] = sources.get("prior", 0) + 1
                continue
            item = ds.OriginalAttributesSequence[-1]
            assert item.ReasonForTheAttributeModification == "COERCE"
            old = item.ModifiedAttributesSequence[0]
            assert old.PatientID in FOREIGN_IDS
            sources[old.PatientID] = sources.get(old.PatientID, 0) + 1
            assert ds.AccessionNumber == ""  # cleared: a foreign number may be a local order's
    assert set(sources) == FOREIGN_IDS | {"prior"}


def test_demo_runs_the_referral_and_files_under_the_local_mrn(
    first_run: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "Traceback" not in first_run.stdout + first_run.stderr
    assert "generated" in first_run.stdout
    _check_summary(first_run.stdout)
    _check_archive(workdir)


def test_second_run_reuses_the_archives_and_starts_afresh(
    first_run: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    assert first_run.returncode == 0
    again = _demo(workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "archives reused from an earlier run" in again.stdout
    _check_summary(again.stdout)  # the databases and the local archive were recreated
    _check_archive(workdir)


@pytest.fixture
def serving(
    first_run: subprocess.CompletedProcess[str], workdir: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    assert first_run.returncode == 0
    process = subprocess.Popen(
        [_cli(), "demo", "--small", "--workdir", str(workdir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        url, seen = "", []
        for line in process.stdout:
            seen.append(line)
            found = re.search(r"Staff page: (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url, "no staff page URL:\n" + "".join(seen)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serves_community_c_until_ctrl_c(serving: tuple[subprocess.Popen[str], str]) -> None:
    process, url = serving
    answer = httpx.post(url + "xcpd", content=b"", timeout=10)
    assert answer.status_code < 500  # C's gateway answers (a fault for an empty body)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "Stopped." in rest
    assert "Traceback" not in rest


def test_a_folder_the_demo_did_not_make_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(DemoFolderRefused):
        prepare(tmp_path, small=True)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
