"""``imagebridge report --month YYYY-MM [--csv FILE]``: the QBD section 5 performance measures.

Reads ``transaction_counters`` from the store the configuration names and
prints one row per partner, transaction and role: requests, errors, mean
latency (ms), imaging studies and documents returned (counted separately).
With ``--csv`` the same rows are written as CSV (UTF-8, header line).

With ``--json``, one JSON document (the rows and their total) on stdout.

Exit status: 0 on success (also for a month without traffic), 2 for a bad
configuration or month, 1 for a store error.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagebridge.app import open_store
from imagebridge.cli import output
from imagebridge.cli.output import ConfigPath, JsonFlag, codes, epilog
from imagebridge.config import Config
from imagebridge.errors import ImageBridgeError, StoreError
from imagebridge.model.ids import HomeCommunityId
from imagebridge.store.counters import CounterRow, CounterValues, TransactionCounters

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
CSV_HEADER = (
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
)


def partner_name(config: Config, partner: str) -> str:
    """The directory name of a partner homeCommunityId ('' when unknown or an address)."""
    try:
        community = config.communities.get(HomeCommunityId.parse(partner))
    except ImageBridgeError:
        return ""
    return community.name if community is not None else ""


def read_month(config: Config, month: str) -> list[CounterRow]:
    """The counter rows of *month* from the store of *config* (raises StoreError)."""
    store = open_store(config)
    try:
        return TransactionCounters(store.engine).month(month)
    finally:
        store.close()


def csv_rows(config: Config, rows: list[CounterRow]) -> list[list[str]]:
    """The CSV body (without header) of *rows*."""
    return [
        [
            r.key.month,
            r.key.partner,
            partner_name(config, r.key.partner),
            r.key.transaction,
            r.key.role,
            str(r.values.requests),
            str(r.values.errors),
            f"{r.values.mean_latency_ms:.1f}",
            str(r.values.studies),
            str(r.values.documents),
        ]
        for r in rows
    ]


def _table(month: str, config: Config, rows: list[CounterRow]) -> Table:
    table = Table(title=f"Performance measures {month} (QBD section 5)")
    for name in ("Partner", "Name", "Transaction", "Role"):
        table.add_column(name)
    for name in ("Requests", "Errors", "Mean latency ms", "Studies", "Documents"):
        table.add_column(name, justify="right")
    total = CounterValues()
    for r in rows:
        total.add(r.values)
        v = r.values
        table.add_row(
            escape(r.key.partner),
            escape(partner_name(config, r.key.partner)),
            r.key.transaction,
            r.key.role,
            str(v.requests),
            str(v.errors),
            f"{v.mean_latency_ms:.1f}",
            str(v.studies),
            str(v.documents),
        )
    if rows:
        table.add_section()
        table.add_row(
            "all",
            "",
            "",
            "",
            str(total.requests),
            str(total.errors),
            f"{total.mean_latency_ms:.1f}",
            str(total.studies),
            str(total.documents),
        )
    return table


def _values_json(values: CounterValues) -> dict[str, Any]:
    return {
        "requests": values.requests,
        "errors": values.errors,
        "mean_latency_ms": round(values.mean_latency_ms, 1),
        "studies": values.studies,
        "documents": values.documents,
    }


def report_document(config: Config, month: str, rows: list[CounterRow]) -> dict[str, Any]:
    """The ``report --json`` document: the rows and their total."""
    total = CounterValues()
    for r in rows:
        total.add(r.values)
    return {
        "month": month,
        "rows": [
            {
                "partner": r.key.partner,
                "partner_name": partner_name(config, r.key.partner),
                "transaction": r.key.transaction,
                "role": r.key.role,
                **_values_json(r.values),
            }
            for r in rows
        ],
        "total": _values_json(total),
    }


REPORT_EPILOG = epilog(
    [
        "imagebridge report -c imagebridge.toml --month 2026-03",
        "imagebridge report -c imagebridge.toml --month 2026-03 --csv march.csv",
        "imagebridge report -c imagebridge.toml --month 2026-03 --json | jq .total",
    ],
    codes(ok="the month was reported (also a month without traffic)", incomplete="store error"),
)


def report_command(
    *,
    config: ConfigPath,
    month: Annotated[str, typer.Option(help="The month to report, YYYY-MM (UTC).")],
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write the rows to this CSV file.")
    ] = None,
    json_mode: JsonFlag = False,
) -> None:
    """Print the performance measures of one month per partner and transaction; optional CSV."""
    if not _MONTH.match(month):
        output.fail(f"--month must be YYYY-MM, not {month!r}", output.EXIT_USAGE)
    settings = output.load(config)
    try:
        rows = read_month(settings, month)
    except StoreError as exc:
        output.fail(exc.message, output.EXIT_INCOMPLETE, exc)
    if csv_file is not None:
        with csv_file.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(CSV_HEADER)
            writer.writerows(csv_rows(settings, rows))
    if json_mode:
        document = report_document(settings, month, rows)
        document["csv"] = None if csv_file is None else str(csv_file)
        output.emit_json(document)
        return
    console = Console()
    if rows:
        console.print(_table(month, settings, rows))
    else:
        console.print(f"no transactions recorded in {month}")
    if csv_file is not None:
        console.print(f"wrote {len(rows)} rows to {csv_file}")
