"""``imagebridge check``: the configuration is valid and every image source answers."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from imagebridge.app import build_source, open_store
from imagebridge.config import Config
from imagebridge.errors import ImageBridgeError
from imagebridge.sources.base import ProbeResult


async def run_check(config: Config, console: Console | None = None) -> int:
    """Probe each repository; print a table; 0 when everything answers, 1 otherwise."""
    out = console or Console()
    out.print(f"configuration: {config.source_file or '(in memory)'}")
    out.print(f"community: {config.community.name} ({config.community.home_community_id.urn})")
    scheme = "https" if config.server.tls else "http"
    out.print(f"listens on: {scheme}://{config.server.host}:{config.server.port}")
    try:
        store = open_store(config)
    except ImageBridgeError as exc:
        out.print(f"[red]store {config.store.database_url}: {exc.message}[/red]")
        return 1
    table = Table(title="image sources")
    for column in ("repository", "source", "status", "detail"):
        table.add_column(column)
    ok = True
    try:
        for repo in config.repositories:
            if repo.source == "ids":
                table.add_row(repo.unique_id, repo.source, "-", f"remote IDS at {repo.url}")
                continue
            try:
                source = build_source(repo, store)
                try:
                    result = await source.probe()
                finally:
                    await source.aclose()
            except ImageBridgeError as exc:
                result = ProbeResult(False, exc.message)
            ok = ok and result.ok
            status = "[green]ok[/green]" if result.ok else "[red]FAILED[/red]"
            table.add_row(repo.unique_id, repo.source, status, result.detail)
    finally:
        store.close()
    out.print(table)
    if not config.repositories:
        out.print("[yellow]no [[repositories]] configured: nothing will be served[/yellow]")
    return 0 if ok else 1
