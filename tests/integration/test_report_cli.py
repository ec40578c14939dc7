"""The performance measures, two views of the same counters:

* ``imagebridge report --month YYYY-MM --csv FILE`` as an operator runs it (a real
  process): the table per partner, transaction and role, the CSV, the exit statuses;
* ``/metrics`` scraped over real HTTP (uvicorn on loopback): the Prometheus text with the
  stored counters plus the ones not flushed yet.

Until ``report`` is registered in :mod:`imagebridge.cli`, the process runs a small
wrapper that adds the command to ``imagebridge.cli.app`` first (the same app otherwise).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from imagebridge.model.ids import HomeCommunityId
from imagebridge.security.measures import PROMETHEUS_CONTENT_TYPE, Measures, metrics_route
from imagebridge.store import Store
from imagebridge.store.counters import CounterKey, CounterValues, TransactionCounters
from imagebridge.transactions import Transaction
from imagebridge.transport.events import Role, TransactionEvent
from tests.http_server import running_server

A = "1.3.6.1.4.1.21367.13.70.101"
B = "1.3.6.1.4.1.21367.13.70.102"

WRAPPER = """
import sys
from imagebridge.cli import app
from imagebridge.cli.report import report_command
if not any(c.name == "report" or c.callback is report_command for c in app.registered_commands):
    app.command(name="report")(report_command)
app(prog_name="imagebridge")
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str]:
    database_url = f"sqlite:///{tmp_path / 'imagebridge.db'}"
    config = tmp_path / "imagebridge.toml"
    config.write_text(
        "\n".join(
            [
                "[community]",
                'home_community_id = "1.3.6.1.4.1.21367.13.70.1"',
                "",
                "[store]",
                f'database_url = "{database_url}"',
                "",
                "[[communities]]",
                f'home_community_id = "{A}"',
                'name = "Community A"',
                'xcpd_url = "https://a.example.org/xcpd"',
                "",
            ]
        )
    )
    store = Store.open(database_url)
    counters = TransactionCounters(store.engine)
    counters.add(
        {
            CounterKey("2026-03", A, "RAD-75", "initiator"): CounterValues(4, 1, 2000.0, 3, 120),
            CounterKey("2026-03", A, "ITI-38", "initiator"): CounterValues(2, 0, 300.0, 2, 2),
            CounterKey("2026-03", "192.0.2.7", "ITI-55", "responder"): CounterValues(
                1, 1, 50.0, 0, 0
            ),
            CounterKey("2026-04", A, "RAD-75", "initiator"): CounterValues(9, 0, 900.0, 9, 9),
        }
    )
    # a second process adds to the same row
    counters.add(
        {CounterKey("2026-03", A, "RAD-75", "initiator"): CounterValues(1, 0, 500.0, 1, 30)}
    )
    store.close()
    return config, database_url


def _report(*args: str) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, "report", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_report_prints_the_month_and_writes_csv(setup: tuple[Path, str], tmp_path: Path) -> None:
    config, _ = setup
    out = tmp_path / "march.csv"
    status, text = _report("--config", str(config), "--month", "2026-03", "--csv", str(out))
    assert status == 0, text
    lines = {line.split("│")[3].strip(): line for line in text.splitlines() if "│" in line}
    rad75 = [c.strip() for c in lines["RAD-75"].split("│")]
    # partner, name, transaction, role, requests, errors, mean ms, studies, documents
    assert rad75[1:10] == [A, "Community A", "RAD-75", "initiator", "5", "1", "500.0", "4", "150"]
    assert "192.0.2.7" in lines["ITI-55"]
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "month",
        "partner",
        "partner_name",
        "transaction",
        "role",
        "requests",
        "errors",
        "mean_latency_ms",
        "studies",
        "documents",
    ]
    assert sorted(rows[1:]) == sorted(
        [
            ["2026-03", A, "Community A", "ITI-38", "initiator", "2", "0", "150.0", "2", "2"],
            ["2026-03", A, "Community A", "RAD-75", "initiator", "5", "1", "500.0", "4", "150"],
            ["2026-03", "192.0.2.7", "", "ITI-55", "responder", "1", "1", "50.0", "0", "0"],
        ]
    )


def test_report_of_an_empty_month_and_bad_input(setup: tuple[Path, str], tmp_path: Path) -> None:
    config, _ = setup
    status, text = _report("--config", str(config), "--month", "2025-01")
    assert status == 0 and "no transactions recorded in 2025-01" in text
    status, text = _report("--config", str(config), "--month", "2026-13")
    assert status == 2 and "YYYY-MM" in text
    status, text = _report("--config", str(tmp_path / "missing.toml"), "--month", "2026-03")
    assert status == 2 and "configuration error" in text


@pytest.mark.anyio
async def test_metrics_scraped_over_http(setup: tuple[Path, str]) -> None:
    _, database_url = setup
    store = Store.open(database_url)
    try:
        measures = Measures(TransactionCounters(store.engine))
        measures.observe(  # not flushed yet: part of the scrape all the same
            TransactionEvent(
                transaction=Transaction.RAD_75,
                role=Role.INITIATOR,
                started=datetime(2026, 4, 2, tzinfo=UTC),
                elapsed=0.5,
                peer="https://a.example.org/xcai",
                request=None,
                reply=None,
                partner=HomeCommunityId(A),
                error="XDSUnavailableCommunity",
            )
        )
        app = Starlette(routes=[metrics_route(measures)])
        async with running_server(app) as base, httpx.AsyncClient() as http:
            first = await http.get(f"{base}/metrics")
            await measures.flush()
            second = await http.get(f"{base}/metrics")
    finally:
        store.close()
    assert first.status_code == 200
    assert first.headers["content-type"] == PROMETHEUS_CONTENT_TYPE
    assert first.text == second.text  # flushing moves counts, it does not change them
    labels = f'{{partner="{A}",transaction="RAD-75",role="initiator"}}'
    samples = dict(
        line.rsplit(" ", 1) for line in first.text.splitlines() if not line.startswith("#")
    )
    # all-time: March (5) + April (9) + the unflushed one
    assert samples[f"imagebridge_transactions_total{labels}"] == "15"
    assert samples[f"imagebridge_transaction_errors_total{labels}"] == "2"
    assert samples[f"imagebridge_studies_returned_total{labels}"] == "13"
    assert samples[f"imagebridge_documents_returned_total{labels}"] == "159"
    assert samples[f"imagebridge_transaction_duration_seconds_sum{labels}"] == "3.9"
    assert samples[f"imagebridge_transaction_duration_seconds_count{labels}"] == "15"
    responder = '{partner="192.0.2.7",transaction="ITI-55",role="responder"}'
    assert samples[f"imagebridge_transactions_total{responder}"] == "1"
