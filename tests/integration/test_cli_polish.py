"""The command line as scripts and operators meet it: a real process each time.

* every command's ``--help`` shows examples and exit codes;
* ``--json`` prints exactly one JSON document on stdout (``fetch`` against
  real imagebridge responders, ``jobs list|show``, ``check``, ``version``);
* an error is one line on stderr (exit 2 for configuration, 1 for the
  unexpected), with the traceback only under ``--verbose``; click's usage
  errors keep exit 2.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from imagebridge.store import JobStore
from tests.http_server import running_server
from tests.integration.test_fetch_cli import DEAD, _cli, _config
from tests.integration.test_jobs_cli import STUDY, _make
from tests.integration.test_pull_workflow import ALICE, A, B, _responder

COMMANDS = [
    [],
    ["version"],
    ["selfcheck"],
    ["demo"],
    ["serve"],
    ["check"],
    ["fetch"],
    ["report"],
    ["jobs"],
    ["jobs", "list"],
    ["jobs", "show"],
    ["jobs", "cancel"],
    ["jobs", "resume"],
    ["web-user"],
    ["web-user", "add"],
]
WHO = [
    "--family", "Demo", "--given", "Alice",
    "--birth-date", ALICE.birth_date, "--gender", ALICE.sex,
]  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), *args], capture_output=True, text=True, env=_env(), timeout=120, check=False
    )


async def _arun(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([*_cli(), *args], check=False, env=_env())


def _one_document(stdout: str | bytes) -> Any:
    """The whole of stdout is one JSON document (json.loads refuses anything else)."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return json.loads(text)


def _store_config(tmp: Path) -> Path:
    config = tmp / "imagebridge.toml"
    config.write_text(
        "\n".join(
            [
                "[community]",
                'home_community_id = "1.3.6.1.4.1.21367.13.70.1"',
                'name = "Us"',
                "",
                "[store]",
                f'database_url = "sqlite:///{tmp / "imagebridge.db"}"',
                "",
            ]
        )
    )
    return config


def test_every_command_has_help_with_examples_and_exit_codes() -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(lambda c: _run(*c, "--help"), COMMANDS))
    for command, result in zip(COMMANDS, done, strict=True):
        name = " ".join(command) or "imagebridge"
        assert result.returncode == 0, (name, result.stderr)
        assert "Examples:" in result.stdout, name
        assert "Exit codes:" in result.stdout, name
    fetch_help = done[COMMANDS.index(["fetch"])].stdout
    assert "130 interrupted" in fetch_help
    assert "'pacs' for the [import] target" in fetch_help  # brackets shown verbatim
    assert "--json" in fetch_help and "--dry-run --json | jq" in fetch_help


@pytest.mark.anyio
async def test_fetch_json_dry_run_is_one_document_with_every_community(tmp_path: Path) -> None:
    app_a, studies_a = _responder(tmp_path, A, A + ".1", [11])
    app_b, studies_b = _responder(tmp_path, B, B + ".1", [21, 22])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    async with AsyncExitStack() as stack:
        urls = {
            A: await stack.enter_async_context(running_server(app_a)),
            B: await stack.enter_async_context(running_server(app_b)),
            DEAD: dead,
        }
        config = _config(tmp_path, urls)
        done = await _arun("fetch", "-c", str(config), *WHO, "--dry-run", "--json")
        assert done.returncode == 1, done.stderr  # the dead partner: incomplete
        document = _one_document(done.stdout)
        assert document["status"] == 1 and document["complete"] is False
        assert document["dry_run"] is True and document["arrived"] is None
        communities = {c["home_community_id"]: c for c in document["communities"]}
        assert set(communities) == {A, B, DEAD}
        for hcid in (A, B):
            assert communities[hcid]["discovery"]["status"] == "ok"
            assert communities[hcid]["query"]["status"] == "ok"
            assert communities[hcid]["discovery"]["elapsed"] >= 0
        down = communities[DEAD]["discovery"]
        assert down["status"] == "unreachable" and down["detail"]
        assert communities[DEAD]["query"] is None
        assert set(document["phases"]) == {"discovery", "query"}
        matched = {m["community"]: m["patient_id"]["id"] for m in document["matches"]}
        assert set(matched) == {A, B} and all(matched.values())
        offered = {u for s in document["studies"] for u in s["study_instance_uids"]}
        assert offered == {s.study_instance_uid for s in (*studies_a, *studies_b)}
        assert "Studies on offer" not in done.stdout.decode()  # no table on stdout

        # a retrieve into a folder: what arrived, and where
        chosen = studies_b[0].study_instance_uid
        into = tmp_path / "into"
        done = await _arun(
            "fetch", "-c", str(config), *WHO, "--json", "--into", str(into),
            "--study", chosen, "--community", A, "--community", B,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        document = _one_document(done.stdout)
        assert document["complete"] is True and document["into"] == str(into.resolve())
        arrived = document["arrived"]
        assert arrived["root"] == str(into.resolve())
        assert arrived["instances"] == arrived["requested"] == len(studies_b[0].files)
        assert arrived["bytes"] == sum(p.stat().st_size for p in into.rglob("*.dcm"))
        retrieve = {c["home_community_id"]: c["retrieve"] for c in document["communities"]}
        assert retrieve[B] is not None and retrieve[B]["status"] == "ok"


def test_jobs_list_and_show_json(tmp_path: Path) -> None:
    config = _store_config(tmp_path)
    jobs = JobStore.open(f"sqlite:///{tmp_path / 'imagebridge.db'}")
    try:
        done_id = _make(jobs, STUDY + ".1", 3, finish=True)
        pending_id = _make(jobs, STUDY + ".2", 2, claim=False)
    finally:
        jobs.close()
    listed = _run("jobs", "list", "-c", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    document = _one_document(listed.stdout)
    assert document["count"] == 2
    by_id = {job["id"]: job for job in document["jobs"]}
    assert by_id[done_id]["state"] == "completed_with_errors"
    assert by_id[done_id]["instances"]["done"] == 2 and by_id[done_id]["instances"]["total"] == 3
    assert by_id[pending_id]["state"] == "pending"
    assert by_id[done_id]["verification"]["ok"] is False

    shown = _run("jobs", "show", str(done_id), "-c", str(config), "--json")
    assert shown.returncode == 0, shown.stderr
    document = _one_document(shown.stdout)
    assert document["job"]["study_instance_uid"] == STUDY + ".1"
    assert [i["error_code"] for i in document["instances_with_errors"]] == ["0xA700"]
    assert any("finished" in e["message"] for e in document["events"])

    missing = _run("jobs", "show", "999", "-c", str(config), "--json")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == "error: no import job 999"


def test_check_and_version_json(tmp_path: Path) -> None:
    config = _store_config(tmp_path)
    checked = _run("check", "-c", str(config), "--json")
    assert checked.returncode == 0, checked.stderr
    document = _one_document(checked.stdout)
    assert document["ok"] is True and document["store"]["ok"] is True
    assert document["community"]["home_community_id"] == "1.3.6.1.4.1.21367.13.70.1"
    version = _run("version", "--json")
    assert version.returncode == 0 and _one_document(version.stdout)["version"]


def test_bad_configuration_is_one_line_and_exit_2_with_detail_under_verbose(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[community]\nname = "Us"\n')  # no home_community_id
    for args in (["jobs", "list", "-c", str(bad)], ["fetch", "-c", str(bad), *WHO, "--json"]):
        result = _run(*args)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: configuration error: [community]")
        assert "Traceback" not in result.stderr

    verbose = _run("--verbose", "jobs", "list", "-c", str(bad))
    assert verbose.returncode == 2
    assert "Traceback" in verbose.stderr and "ConfigError" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[0]


def test_unexpected_error_is_one_line_exit_1_and_usage_errors_stay_2(tmp_path: Path) -> None:
    config = _store_config(tmp_path)
    args = ["report", "-c", str(config), "--month", "2026-03", "--csv", str(tmp_path)]
    result = _run(*args)  # the CSV "file" is a folder
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: IsADirectoryError: [Errno 21] Is a directory: '{tmp_path}'"
        " (run with --verbose for details)"
    ]
    verbose = _run("-v", *args)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr

    usage = _run("fetch", "-c", str(config))  # the demographics are missing
    assert usage.returncode == 2 and "Missing option" in usage.stderr
    assert "error: " not in usage.stderr
