"""``imagebridge check``: the configuration is valid, every image source answers and
no TLS certificate has expired (fewer than 30 days left: a warning)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagebridge.app import build_source, open_store
from imagebridge.config import Config
from imagebridge.errors import ImageBridgeError
from imagebridge.security.certificate_expiry import CertificateExpiry, ExpiryStatus, expiry_of
from imagebridge.sources.base import ProbeResult


@dataclass(frozen=True, slots=True)
class UnreadableCertificate:
    """A configured TLS file that could not be read."""

    role: str
    path: Path
    problem: str


def tls_files(config: Config) -> list[tuple[str, Path]]:
    """Every TLS file the configuration names, with its role; each path once."""
    named: list[tuple[str, Path | None]] = [
        ("server certificate", config.server.tls_certificate),
        ("accepted client CAs (server.tls_client_ca)", config.server.tls_client_ca),
        ("our client certificate ([tls])", config.tls.client_certificate),
        ("partner CA bundle ([tls])", config.tls.ca_bundle),
    ]
    for community in config.communities:  # only what a community sets itself: [tls] is above
        tls = community.tls
        named.append((f"partner CA bundle ({community.name})", tls.ca_bundle))
        named.append((f"our client certificate for {community.name}", tls.client_certificate))
    roles: dict[Path, list[str]] = {}
    for role, path in named:
        if path is not None:
            roles.setdefault(path, []).append(role)
    return [(", ".join(r if len(r) < 4 else [*r[:3], "..."]), p) for p, r in roles.items()]


def certificate_report(
    config: Config, now: datetime
) -> list[CertificateExpiry | UnreadableCertificate]:
    """The expiry of every certificate in every configured TLS file at *now*."""
    report: list[CertificateExpiry | UnreadableCertificate] = []
    for role, path in tls_files(config):
        try:
            report.extend(expiry_of(role, path, now))
        except ImageBridgeError as exc:
            report.append(UnreadableCertificate(role, path, exc.message))
    return report


def print_certificates(
    out: Console, report: list[CertificateExpiry | UnreadableCertificate]
) -> bool:
    """Print the certificate table; False when one is expired, not yet valid or unreadable."""
    if not report:
        return True
    table = Table(title="TLS certificates")
    for column in ("file", "subject", "expires (UTC)", "days left", "status"):
        table.add_column(column)
    ok = True
    for row in report:
        if isinstance(row, UnreadableCertificate):
            ok = False
            where = escape(f"{row.role}\n{row.path}")
            table.add_row(where, "-", "-", "-", f"[red]{escape(row.problem)}[/red]")
            continue
        colour = {ExpiryStatus.OK: "green", ExpiryStatus.WARNING: "yellow"}.get(row.status, "red")
        ok = ok and row.status in (ExpiryStatus.OK, ExpiryStatus.WARNING)
        table.add_row(
            escape(f"{row.role}\n{row.path}"),
            escape(row.subject),
            row.not_after.strftime("%Y-%m-%d %H:%M"),
            str(row.days_left),
            f"[{colour}]{row.status.value}[/{colour}]",
        )
    out.print(table)
    return ok


@dataclass(frozen=True, slots=True)
class SourceProbe:
    """How one configured repository answered its probe (``ok`` None: not probed)."""

    repository: str
    source: str
    ok: bool | None
    detail: str


@dataclass(slots=True)
class CheckResult:
    """Everything ``imagebridge check`` found, for the table or the JSON document."""

    certificates: list[CertificateExpiry | UnreadableCertificate]
    store_error: str | None = None
    sources: list[SourceProbe] = field(default_factory=list)

    @property
    def certificates_ok(self) -> bool:
        return all(
            isinstance(row, CertificateExpiry)
            and row.status in (ExpiryStatus.OK, ExpiryStatus.WARNING)
            for row in self.certificates
        )

    @property
    def ok(self) -> bool:
        sources_ok = all(probe.ok is not False for probe in self.sources)
        return self.store_error is None and sources_ok and self.certificates_ok


async def gather_check(config: Config, now: datetime | None = None) -> CheckResult:
    """Read every certificate, open the store and probe every image source."""
    result = CheckResult(certificate_report(config, now or datetime.now(UTC)))
    try:
        store = open_store(config)
    except ImageBridgeError as exc:
        result.store_error = exc.message
        return result
    try:
        for repo in config.repositories:
            if repo.source == "ids":
                result.sources.append(
                    SourceProbe(repo.unique_id, repo.source, None, f"remote IDS at {repo.url}")
                )
                continue
            try:
                source = build_source(repo, store)
                try:
                    probe = await source.probe()
                finally:
                    await source.aclose()
            except ImageBridgeError as exc:
                probe = ProbeResult(False, exc.message)
            result.sources.append(SourceProbe(repo.unique_id, repo.source, probe.ok, probe.detail))
    finally:
        store.close()
    return result


def check_document(config: Config, result: CheckResult) -> dict[str, Any]:
    """The ``check --json`` document."""
    certificates: list[dict[str, Any]] = []
    for row in result.certificates:
        if isinstance(row, UnreadableCertificate):
            certificates.append(
                {
                    "role": row.role,
                    "path": str(row.path),
                    "status": "unreadable",
                    "problem": row.problem,
                }
            )
        else:
            certificates.append(
                {
                    "role": row.role,
                    "path": str(row.path),
                    "subject": row.subject,
                    "not_after": row.not_after.isoformat(),
                    "days_left": row.days_left,
                    "status": row.status.value,
                }
            )
    scheme = "https" if config.server.tls else "http"
    return {
        "ok": result.ok,
        "configuration": str(config.source_file) if config.source_file else None,
        "community": {
            "name": config.community.name,
            "home_community_id": config.community.home_community_id.oid,
        },
        "listens_on": f"{scheme}://{config.server.host}:{config.server.port}",
        "certificates": certificates,
        "store": {"ok": result.store_error is None, "error": result.store_error},
        "sources": [
            {"repository": p.repository, "source": p.source, "ok": p.ok, "detail": p.detail}
            for p in result.sources
        ],
    }


async def run_check(
    config: Config, console: Console | None = None, *, now: datetime | None = None
) -> int:
    """Probe each repository, report certificate expiry; 0 when all is well, 1 otherwise."""
    out = console or Console()
    result = await gather_check(config, now)
    out.print(f"configuration: {config.source_file or '(in memory)'}")
    out.print(f"community: {config.community.name} ({config.community.home_community_id.urn})")
    scheme = "https" if config.server.tls else "http"
    out.print(f"listens on: {scheme}://{config.server.host}:{config.server.port}")
    print_certificates(out, result.certificates)
    if result.store_error is not None:
        problem = f"store {config.store.database_url}: {result.store_error}"
        out.print(problem, style="red", markup=False)
        return 1
    table = Table(title="image sources")
    for column in ("repository", "source", "status", "detail"):
        table.add_column(column)
    for probe in result.sources:
        status = {None: "-", True: "[green]ok[/green]", False: "[red]FAILED[/red]"}[probe.ok]
        table.add_row(escape(probe.repository), probe.source, status, escape(probe.detail))
    out.print(table)
    if not config.repositories:
        out.print(
            "no [[repositories]] configured: nothing will be served", style="yellow", markup=False
        )
    return 0 if result.ok else 1
