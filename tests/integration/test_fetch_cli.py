"""``imagebridge fetch`` as an operator runs it: a real process, real partner gateways.

The command runs as a subprocess (the installed console script) against two
real imagebridge responders on loopback plus one community that refuses
connections; the test checks the exit status, the final table and the files.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from tests.http_server import running_server
from tests.integration.test_pull_workflow import ALICE, A, B, _responder

pytestmark = pytest.mark.anyio

DEAD = "1.3.6.1.4.1.21367.13.70.103"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "imagebridge"
    found = str(script) if script.exists() else shutil.which("imagebridge")
    if found is None:
        pytest.fail("the imagebridge console script is not installed in this environment")
    return [found]


def _config(tmp: Path, urls: dict[str, str]) -> Path:
    lines = [
        "[community]",
        'home_community_id = "1.3.6.1.4.1.21367.13.70.1"',
        'name = "Us"',
        "",
    ]
    for hcid, base in urls.items():
        lines += [
            "[[communities]]",
            f'home_community_id = "{hcid}"',
            f'name = "C{hcid.rsplit(".", 1)[-1]}"',
            f'xcpd_url = "{base}/xcpd"',
            f'xca_query_url = "{base}/xca/query"',
            f'xca_retrieve_url = "{base}/xca/retrieve"',
            f'xcai_retrieve_url = "{base}/xcai/retrieve"',
            "timeout_connect = 2",
            "timeout_read = 5",
            "timeout_overall = 10",
            "",
        ]
    path = tmp / "fetch.toml"
    path.write_text("\n".join(lines))
    return path


async def _run(args: list[str]) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = await anyio.run_process([*_cli(), *args], check=False, env=env)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_fetch_pulls_what_it_can_and_reports_the_dead_partner(tmp_path: Path) -> None:
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
        who = [
            "--family", "Demo", "--given", "Alice",
            "--birth-date", ALICE.birth_date, "--gender", ALICE.sex,
        ]  # fmt: skip

        code, out = await _run(["fetch", "-c", str(config), *who, "--dry-run"])
        assert code == 1, out  # the dead partner makes the run incomplete
        assert "Studies on offer" in out and "unreachable" in out
        for study in (*studies_a, *studies_b):
            assert study.study_instance_uid in out
        assert not (tmp_path / "into").exists()

        chosen = studies_b[0].study_instance_uid
        into = tmp_path / "into"
        args = ["fetch", "-c", str(config), *who, "--into", str(into), "--study", chosen]
        code, out = await _run([*args, "--community", A, "--community", B])
        assert code == 0, out
        assert "What arrived from where" in out and "4/4" in out
        assert "match in C102: ALICE DEMO" in out
        arrived = sorted(p.read_bytes() for p in into.rglob("*.dcm"))
        assert arrived == sorted(f.read_bytes() for f in studies_b[0].files)

        code, out = await _run(["fetch", "-c", str(config), *who[:-1], "X"])
        assert code == 2 and "gender must be M, F or O" in out
