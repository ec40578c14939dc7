"""``imagebridge fetch``: pull a patient's prior imaging from every partner community.

The staff member's job of guide 10.1.1 from a terminal: demographics in,
images out in a folder, and a final table of what arrived from where,
including every community that failed and why.  Progress is shown per
community (each phase) and per study (bytes received while RAD-75 replies
stream in).  ``--dry-run`` stops after listing the studies on offer;
``--study`` restricts the retrieve to chosen Study Instance UIDs; ``--json``
prints one document (:class:`~imagebridge.cli.fetch_record.FetchRecord`)
instead of the tables and progress bars.

Exit status: 0 when every community answered and every requested instance
arrived, 1 when something is missing (the table says what), 2 for bad input
or configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.fanout import FanOutResult
from imagebridge.actors.initiating.folder_sink import FolderSink
from imagebridge.actors.initiating.observing import process_observers
from imagebridge.actors.initiating.pull import Demographics, PatientMatch, PullSettings, StudyOffer
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.app import open_store
from imagebridge.cli import output
from imagebridge.cli.fetch_import import import_offers
from imagebridge.cli.fetch_record import FetchRecord, match_json, offer_json, verdict
from imagebridge.config import Config
from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId
from imagebridge.security.xua_config import partner_security
from imagebridge.transport.events import NO_OBSERVER, TransactionObserver
from imagebridge.wire.mime import PartHeaders
from imagebridge.wire.spool import PartSink, StoredBody


@dataclass(slots=True)
class FetchRequest:
    """What the operator asked for on the command line."""

    demographics: Demographics
    communities: tuple[HomeCommunityId, ...] = ()
    into: Path = Path("retrieved")
    """A folder, or the word ``pacs``: import into the ``[import]`` target as durable jobs."""
    dry_run: bool = False
    studies: tuple[str, ...] = ()
    deadline: float = 60.0
    mrn: str | None = None
    mrn_issuer: str | None = None
    queue: bool = False
    """With ``--into pacs``: create the jobs and leave them to the ``serve`` workers."""

    @property
    def into_pacs(self) -> bool:
        return str(self.into) == "pacs"

    @property
    def destination(self) -> str:
        """``pacs``, or the folder as an absolute path."""
        return "pacs" if self.into_pacs else str(self.into.resolve())


class _CountingSink:
    """A part sink that reports each chunk's size to the progress display, then passes it on."""

    def __init__(self, inner: PartSink, progress: Progress, task: TaskID) -> None:
        self._inner = inner
        self._progress = progress
        self._task = task

    def start_part(self, headers: PartHeaders) -> None:
        self._inner.start_part(headers)

    def part_data(self, data: memoryview) -> None:
        self._progress.advance(self._task, len(data))
        self._inner.part_data(data)

    def end_part(self) -> StoredBody:
        return self._inner.end_part()

    def abort(self) -> None:
        self._inner.abort()


@asynccontextmanager
async def _partner_clients(config: Config) -> AsyncIterator[PartnerClients]:
    """Partner clients with the deployment's TLS; audited and counted when the
    configuration imports (its store is the one ``serve`` reads)."""
    async with AsyncExitStack() as stack:
        observer: TransactionObserver = NO_OBSERVER
        if config.importing is not None:
            store = open_store(config)
            stack.callback(store.close)
            observed = await stack.enter_async_context(process_observers(config, store.engine))
            observer = observed.observer
        yield await stack.enter_async_context(
            PartnerClients(
                observer=observer,
                tls_defaults=config.tls.defaults,
                security=partner_security(config.xua, config.community.home_community_id),
            )
        )


async def run_fetch(
    config: Config, request: FetchRequest, console: Console, record: FetchRecord | None = None
) -> int:
    """Run the pull, print progress and the final table, fill *record*; the exit status."""
    record = record if record is not None else FetchRecord()
    if request.into_pacs and config.importing is None:
        output.error_line("configuration error: --into pacs needs an [import] table")
        return output.EXIT_USAGE
    settings = PullSettings(
        home=config.community.home_community_id,
        patient_id_authority=config.community.patient_id_authority or None,
        deadline=request.deadline,
    )
    async with _partner_clients(config) as clients:
        flow = PullWorkflow(clients, config.communities, settings, breaker=CircuitBreaker())
        targets = flow.communities(request.communities)
        unknown = set(request.communities) - {c.home_community_id for c in targets}
        for hcid in sorted(unknown, key=lambda h: h.oid):
            record.warnings.append(f"community {hcid.oid} is not in the directory (or has no XCPD)")
            console.print(f"[red]{record.warnings[-1]}")
        if not targets:
            output.error_line("no partner community to ask: add [[communities]] to the config")
            return output.EXIT_USAGE
        with console.status(f"Looking for the patient in {len(targets)} communities…"):
            found = await flow.discover(request.demographics, targets)
        record.phase("discovery", found.outcomes)
        _print_phase(console, "Patient discovery (ITI-55)", found.outcomes)
        record.matches = [match_json(m) for m in found.matches]
        _print_matches(console, found.matches)
        if found.locators is not None:
            for note in found.locators.reports:
                record.warnings.append(f"Health Data Locator {note.community.oid}: {note.detail}")
                console.print(f"  [yellow]{escape(record.warnings[-1])}")
        if not found.matches:
            _final_table(console, record)
            return 1 if record.failed() else 0
        with console.status(f"Asking {len(found.matches)} match(es) for imaging manifests…"):
            offered = await flow.find_studies(found.matches)
        record.phase("query", offered.outcomes)
        _print_phase(console, "Imaging manifests (ITI-38, ITI-39)", offered.outcomes)
        for offer in offered.offers:
            record.line(offer.community).studies += 1
        record.offers = [offer_json(o) for o in offered.offers]
        for problem in offered.problems:
            record.warnings.append(problem)
            console.print(f"  [yellow]{escape(problem)}")
        _print_offers(console, offered.offers)
        chosen = _choose(offered.offers, request.studies)
        if request.into_pacs and chosen:
            _final_table(console, record)
            report = await import_offers(
                config,
                console,
                request.demographics,
                chosen,
                mrn=request.mrn,
                mrn_issuer=request.mrn_issuer,
                clients=clients,
                dry_run=request.dry_run,
                queue=request.queue,
            )
            record.imported = report.to_json()
            return max(report.status, 1 if record.failed() else 0)
        if request.dry_run or not chosen:
            _final_table(console, record)
            return 1 if record.failed() else 0
        sink = FolderSink(request.into)
        record.root = request.into.resolve()
        await _retrieve(console, flow, chosen, sink, record)
    _final_table(console, record)
    console.print(f"Images are in {request.into.resolve()}", markup=False)
    return 1 if record.incomplete() or record.failed() else 0


async def _retrieve(
    console: Console,
    flow: PullWorkflow,
    chosen: Sequence[StudyOffer],
    sink: FolderSink,
    record: FetchRecord,
) -> None:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[tuple[HomeCommunityId, str], TaskID] = {}

        def part_sink(community: Community, offer: StudyOffer) -> PartSink:
            key = (community.home_community_id, offer.entry.unique_id)
            if key not in tasks:
                label = f"{community.name}: {offer.service_date} {offer.description}".strip()
                tasks[key] = progress.add_task(escape(label), total=None)
            return _CountingSink(sink.part_sink(), progress, tasks[key])

        report = await flow.retrieve(chosen, part_sink)
        try:
            record.phase("retrieve", report.outcomes)
            for offer, why in report.unroutable:
                line = record.line(offer.community)
                line.requested += len(offer.locators)
                line.problems.append(why)
            for outcome in report.outcomes.outcomes:
                line = record.line(outcome.community)
                if outcome.value is None:
                    line.requested += sum(
                        len(o.locators) for o in chosen if _routed_to(flow, o, outcome.community)
                    )
                    continue
                for receipt in outcome.value:
                    line.requested += receipt.requested
                    stored = sink.store(receipt.result, receipt.offer.locators)
                    line.arrived += len(stored.paths)
                    line.bytes += stored.bytes
                    if receipt.failure is not None:
                        line.problems.append(
                            f"study {receipt.offer.description}: {receipt.failure}"
                        )
                    line.problems.extend(
                        f"{e.error_code}: {e.code_context}" for e in receipt.result.errors
                    )
            for task in tasks.values():
                progress.update(task, total=progress.tasks[task].completed)
        finally:
            report.close()


def _routed_to(flow: PullWorkflow, offer: StudyOffer, community: Community) -> bool:
    target = flow.imaging_community(offer)
    return target is not None and target.home_community_id == community.home_community_id


def _choose(offers: Sequence[StudyOffer], studies: Sequence[str]) -> list[StudyOffer]:
    if not studies:
        return list(offers)
    wanted = set(studies)
    return [o for o in offers if wanted & set(o.study_instance_uids)]


def _print_phase(console: Console, title: str, result: FanOutResult[Any]) -> None:
    console.print(f"[bold]{title}[/]: {result.elapsed:.1f} s")
    for outcome in result.outcomes:
        name = outcome.community.name or outcome.home_community_id.oid
        console.print(f"  {escape(name)}: {verdict(outcome)}")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _print_matches(console: Console, matches: Sequence[PatientMatch]) -> None:
    for match in matches:
        person = match.patient
        name = "; ".join(" ".join((*n.given, *n.family)) or (n.text or "") for n in person.names)
        hdl = " (Health Data Locator)" if match.health_data_locator else ""
        if match.located_by is not None:
            hdl = f" (located by {match.located_by.oid})"
        console.print(
            f"  match in {match.community.name}: {name or '?'}, born "
            f"{person.birth_time or '?'}, sex {person.administrative_gender or '?'}, "
            f"id {person.patient_id.cx}{hdl}",
            markup=False,
        )


def _print_offers(console: Console, offers: Sequence[StudyOffer]) -> None:
    if not offers:
        console.print("No imaging studies on offer.")
        return
    table = Table(title="Studies on offer")
    for column in ("community", "date", "description", "instances", "Study Instance UID"):
        table.add_column(column)
    for offer in offers:
        table.add_row(
            escape(offer.community.name),
            offer.service_date,
            escape(offer.description),
            str(len(offer.locators)),
            ", ".join(offer.study_instance_uids),
        )
    console.print(table)


def _final_table(console: Console, record: FetchRecord) -> None:
    table = Table(title="What arrived from where")
    for column in ("community", "discovery", "studies", "manifests", "images", "size", "retrieve"):
        table.add_column(column)
    for line in record.lines.values():
        images = f"{line.arrived}/{line.requested}" if line.requested else "-"
        table.add_row(
            escape(line.community.name or line.community.home_community_id.oid),
            line.discover,
            str(line.studies),
            line.query,
            images,
            _size(line.bytes) if line.bytes else "-",
            line.retrieve,
        )
    console.print(table)
    for line in record.lines.values():
        name = escape(line.community.name)
        for problem in line.problems[:20]:
            console.print(f"  [yellow]{name}: {escape(problem)}")
        if len(line.problems) > 20:
            console.print(f"  [yellow]{name}: … {len(line.problems) - 20} more")
