"""``imagebridge demo``: a whole referral on loopback, everything embedded.

Generates synthetic, PHI-free studies (:mod:`.demo_world`), starts the
responding gateways of communities A and B in this process (uvicorn on
loopback, SQLite, folder archives), then runs community C's referral for the
shared patient: Cross Gateway Patient Discovery [ITI-55] → Cross Gateway
Query [ITI-38] and Retrieve [ITI-39] of the KOS manifests → Cross Gateway
Retrieve Imaging Document Set [RAD-75] → import into C's local folder archive
as durable jobs, reconciled to the local MRN found there by demographics.
It prints what came from where and how long it took (:mod:`.demo_report`),
then serves community C (its staff page) until Ctrl-C, unless ``--no-serve``.

Exit status: 0 when every study arrived and was filed, 1 when something is
missing, 2 for an unusable working directory, 130 when interrupted during
the referral.  Ctrl-C while serving is the normal end (0).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import uvicorn
from anyio.abc import TaskGroup
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.import_plan import create_jobs, resolve_local_patient
from imagebridge.actors.initiating.jobs_runner import run_jobs
from imagebridge.actors.initiating.pull import Demographics, PullSettings, StudyOffer
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.app import create_app, open_store
from imagebridge.cli import demo_report as report
from imagebridge.cli.demo_world import (
    SHARED_PATIENT,
    STAFF_USER,
    DemoFolderRefused,
    prepare,
    write_configs,
)
from imagebridge.config import Config, load_config
from imagebridge.errors import ImageBridgeError
from imagebridge.importing import open_target
from imagebridge.model.import_job import ImportJob
from imagebridge.store.jobs import JobStore

DEFAULT_WORKDIR = Path("demo-data")
DEFAULT_PORT = 8080


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``imagebridge demo`` was asked for."""

    workdir: Path = DEFAULT_WORKDIR
    serve: bool = True
    port: int = DEFAULT_PORT
    """Community C's port (its staff page); a busy port falls back to a free one."""
    small: bool = False
    """A 20-slice 64x64 CT and small MR and CR instead of the full sizes (for tests)."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the demo (several run in one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(slots=True)
class _Servers:
    """The uvicorn servers the demo runs in its task group, stopped together."""

    tasks: TaskGroup
    running: list[tuple[uvicorn.Server, anyio.Event]] = field(default_factory=list)

    async def start(self, config: Config, sock: socket.socket) -> str:
        """Serve *config*'s gateway on the pre-bound *sock*; its base URL once it answers."""
        server = _EmbeddedServer(
            uvicorn.Config(
                create_app(config),
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        failed: list[BaseException] = []
        done = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve([sock])
            except SystemExit as exc:  # uvicorn's answer to a failed lifespan startup
                failed.append(exc)
            finally:
                done.set()

        self.running.append((server, done))
        self.tasks.start_soon(serve)
        with anyio.fail_after(120):
            while not server.started:
                if failed:
                    raise ImageBridgeError(f"{config.community.name} did not start")
                await anyio.sleep(0.02)
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        """Ask every server to shut down (lifespan included) and wait for them, shielded."""
        for server, _ in self.running:
            server.should_exit = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            for _, done in self.running:
                await done.wait()


def _bind(port: int) -> tuple[socket.socket, bool]:
    """A listening-ready socket on 127.0.0.1:*port* (0: any); False when *port* was busy."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        if port == 0:
            sock.close()
            raise
        sock.bind(("127.0.0.1", 0))
        return sock, False
    return sock, True


def run_demo(options: DemoOptions, console: Console) -> int:
    """The whole demo; returns the exit status (see the module docstring)."""
    try:
        return _run(options, console)
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted.")
        return 130
    except ImageBridgeError as exc:
        console.print(f"[red]The demo stopped: {exc.message}")
        return 1


def _run(options: DemoOptions, console: Console) -> int:
    console.rule("[bold]imagebridge demo: a referral across three communities on loopback")
    started = time.monotonic()
    try:
        paths, made, reused = prepare(options.workdir, small=options.small)
    except DemoFolderRefused as exc:
        console.print(f"[red]{exc.message}")
        return 2
    report.print_generated(console, made, reused, time.monotonic() - started, paths.root)
    sockets: dict[str, socket.socket] = {}
    try:
        for key in ("a", "b"):
            sockets[key], _ = _bind(0)
        sockets["c"], wanted = _bind(options.port if options.serve else 0)
        if options.serve and not wanted:
            console.print(f"[yellow]Port {options.port} is busy; community C uses another one.")
        ports = {key: int(sock.getsockname()[1]) for key, sock in sockets.items()}
        write_configs(paths, ports)
        configs = {key: load_config(paths.config(key), {}) for key in ports}
        console.print(f"Configurations: {', '.join(str(paths.config(k)) for k in ports)}")
        return anyio.run(_main, options, configs, sockets, console)
    finally:
        for sock in sockets.values():
            sock.close()


async def _main(
    options: DemoOptions,
    configs: dict[str, Config],
    sockets: dict[str, socket.socket],
    console: Console,
) -> int:
    work = anyio.CancelScope()
    watching = anyio.CancelScope()
    interrupted = serving = False

    async def watch(signals: AsyncIterator[signal.Signals]) -> None:
        nonlocal interrupted
        with watching:
            async for _ in signals:
                interrupted = True
                work.cancel()
                return

    status = 1
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch, signals)
            servers = _Servers(tasks)
            try:
                with work:
                    status = await _referral(configs, sockets, servers, console)
                    if options.serve:
                        url = await servers.start(configs["c"], sockets["c"])
                        console.print(
                            f"\n[bold green]Staff page: {url}/[/]  (community C; log in as "
                            f"{STAFF_USER} / {STAFF_USER}; A and B keep answering; "
                            "Ctrl-C to stop)"
                        )
                        serving = True
                        await anyio.sleep_forever()
            finally:
                watching.cancel()
                await servers.close()
    if interrupted and not serving:
        console.print("\n[yellow]Interrupted.")
        return 130
    if interrupted:
        console.print("\nStopped.")
    return status


async def _referral(
    configs: dict[str, Config],
    sockets: dict[str, socket.socket],
    servers: _Servers,
    console: Console,
) -> int:
    """Start A and B, then run C's referral for the shared patient; the exit status."""
    clock = report.Clock()
    for key in ("a", "b"):
        url = await servers.start(configs[key], sockets[key])
        console.print(f"{configs[key].community.name}: responding gateway at {url}")
    clock.mark("start A and B (index their archives)")
    config = configs["c"]
    who = Demographics(
        SHARED_PATIENT.name.split("^")[0].title(),
        SHARED_PATIENT.name.split("^")[1].title(),
        SHARED_PATIENT.birth_date,
        SHARED_PATIENT.sex,
    )
    console.print(
        f"\n[bold]{config.community.name} pulls the priors of {who.family} {who.given}, "
        f"born {who.birth_date}, sex {who.gender}"
    )
    settings = PullSettings(
        home=config.community.home_community_id,
        patient_id_authority=config.community.patient_id_authority or None,
        deadline=60.0,
    )
    flow_started = time.monotonic()
    async with PartnerClients() as clients:
        flow = PullWorkflow(clients, config.communities, settings)
        found = await flow.discover(who, flow.communities())
        report.print_discovery(console, found)
        clock.mark("discover (ITI-55)")
        offered = await flow.find_studies(found.matches)
        report.print_offers(console, offered)
        clock.mark("query + KOS (ITI-38, ITI-39)")
    if not offered.offers:
        console.print("[red]No study on offer: nothing to import.")
        return 1
    jobs = await _import(config, who, offered.offers, console)
    clock.mark("RAD-75 + import (jobs)")
    if jobs is None:
        return 1
    finished_at, imported = jobs
    lines = report.community_lines(found, offered, imported, finished_at, flow_started)
    store = open_store(config)
    try:
        job_store = JobStore(store.engine)
        for line in lines:
            line.bytes = sum(i.bytes or 0 for job in line.jobs for i in job_store.instances(job.id))
    finally:
        store.close()
    return report.print_summary(console, config, lines, imported, clock)


async def _import(
    config: Config, who: Demographics, offers: Sequence[StudyOffer], console: Console
) -> tuple[dict[int, float], list[ImportJob]] | None:
    """The import jobs of *offers*, run to the end: (job id -> finish time, final jobs)."""
    importing = config.importing
    if importing is None:
        raise ImageBridgeError("community C has no [import] table")
    target = open_target(importing.target)
    try:
        choice = await resolve_local_patient(target, who)
    finally:
        await target.aclose()
    if choice.patient is None:
        console.print(f"[red]Local patient not found: {choice.reason}")
        return None
    report.print_local_patient(console, choice.patient, importing.target.name)
    store = open_store(config)
    try:
        jobs = create_jobs(
            JobStore(store.engine),
            offers,
            target_name=importing.target.name,
            target_kind=type(importing.target).__name__,
            settings=importing.reconcile,
            choice=choice,
        )
    finally:
        store.close()
    finished_at: dict[int, float] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        bars: dict[int, TaskID] = {
            job.id: progress.add_task(report.job_label(job), total=job.total) for job in jobs
        }

        def show(job: ImportJob) -> None:
            progress.update(bars[job.id], completed=job.done + job.errors)
            finished_at[job.id] = time.monotonic()

        final = await run_jobs(config, [job.id for job in jobs], show)
    return finished_at, final
