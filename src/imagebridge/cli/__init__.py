"""Command line: ``imagebridge <command>``.

Logging handlers are configured here and nowhere else; the library only
creates loggers.  Every command has ``--help`` with examples and its exit
codes; ``fetch``, ``check``, ``version``, ``report`` and ``jobs list|show``
take ``--json`` (one JSON document on stdout, nothing else there).  An error
is one line on stderr (``error: ...``); the root ``--verbose`` adds the
traceback.  :func:`main` turns an exception no command handled into such a
line and exit status 1; click's own usage errors keep their message and 2.

Exit codes (every command):

====  ===========================================================
code  meaning
====  ===========================================================
0     success: everything asked for was done (complete)
1     incomplete or refused: something is missing or failed (the
      output says what), or an unexpected error
2     usage or configuration error: nothing was done
130   interrupted (Ctrl-C)
====  ===========================================================
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console

from imagebridge import __version__, serving
from imagebridge.actors.initiating.pull import Demographics
from imagebridge.cli import output
from imagebridge.cli.check import check_document, gather_check, run_check
from imagebridge.cli.demo import DEFAULT_PORT, DEFAULT_WORKDIR, DemoOptions, run_demo
from imagebridge.cli.fetch import FetchRequest, run_fetch
from imagebridge.cli.fetch_record import FetchRecord
from imagebridge.cli.jobs import jobs_app
from imagebridge.cli.output import ConfigPath, JsonFlag, codes, epilog
from imagebridge.cli.report import REPORT_EPILOG, report_command
from imagebridge.cli.selfcheck import run_selfcheck
from imagebridge.cli.web_user import web_user_app
from imagebridge.errors import ConfigError, ImageBridgeError
from imagebridge.model.ids import HomeCommunityId
from imagebridge.security.tls import listen_plan, uvicorn_tls_options
from imagebridge.serving import configure_logging

_CFG = "imagebridge.toml"
_FETCH = (
    "imagebridge fetch -c imagebridge.toml --family Doe --given Jane \\\n"
    "    --birth-date 19700101 --gender F"
)

app = typer.Typer(
    name="imagebridge",
    help="Carequality imaging data exchange gateway (XCPD, XCA, XCA-I).",
    epilog=epilog(
        [
            f"imagebridge check -c {_CFG}",
            f"imagebridge serve -c {_CFG}",
            f"{_FETCH} --into retrieved",
            "imagebridge --verbose jobs list -c imagebridge.toml",
            "imagebridge COMMAND --help",
        ]
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=output.MARKUP_MODE,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Debug logging; tracebacks with errors."
    ),
) -> None:
    output.state.verbose = verbose
    configure_logging(verbose)


@app.command(
    epilog=epilog(
        ["imagebridge version", "imagebridge version --json"],
        {0: "the version was printed", 2: "usage error"},
    )
)
def version(json_mode: JsonFlag = False) -> None:
    """Print the imagebridge version."""
    if json_mode:
        output.emit_json({"name": "imagebridge", "version": __version__})
    else:
        typer.echo(__version__)


@app.command(
    epilog=epilog(
        ["imagebridge selfcheck"],
        codes(ok="every message survived the round trip", incomplete="a message did not"),
    )
)
def selfcheck() -> None:
    """Run the codec self-check: every transaction encoded, packaged and decoded again."""
    raise typer.Exit(run_selfcheck())


@app.command(
    epilog=epilog(
        [
            "imagebridge demo",
            "imagebridge demo --no-serve --small --workdir /tmp/imagebridge-demo",
            "imagebridge demo --port 0",
        ],
        codes(
            ok="the referral ran end to end",
            incomplete="a step of the referral failed",
            usage="usage error, or the working folder is refused",
        ),
    )
)
def demo(
    workdir: Annotated[
        Path,
        typer.Option(help="Working folder: archives reused, databases and imports recreated."),
    ] = DEFAULT_WORKDIR,
    serve: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Keep community C's staff page running."),
    ] = True,
    port: Annotated[
        int, typer.Option(help="Port of community C's staff page (busy or 0: a free one).")
    ] = DEFAULT_PORT,
    small: Annotated[
        bool, typer.Option("--small", help="Small CT, MR and CR (for tests): seconds, not MB.")
    ] = False,
) -> None:
    """Run a referral across three communities on loopback, end to end.

    Discover, query, KOS, RAD-75, import with reconciliation; then serve the
    initiating community's staff page until Ctrl-C.
    """
    if logging.getLogger().level > logging.DEBUG:  # library INFO lines would break the tables
        logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(workdir=workdir, serve=serve, port=port, small=small)
    raise typer.Exit(run_demo(options, Console()))


@app.command(
    epilog=epilog(
        [
            f"imagebridge serve -c {_CFG}",
            f"imagebridge --verbose serve -c {_CFG}",
            f"imagebridge serve -c {_CFG} --insecure-http   # behind a TLS proxy only",
        ],
        codes(
            ok="the gateway stopped (Ctrl-C or SIGTERM)",
            incomplete="the gateway could not start (e.g. the port is taken)",
        ),
    )
)
def serve(
    config: ConfigPath,
    insecure_http: bool = typer.Option(
        False,
        "--insecure-http",
        help="Allow plain HTTP on a non-loopback server.host (only behind a TLS proxy).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Worker processes sharing the port (more than 1: a store every worker reaches).",
    ),
) -> None:
    """Run the gateway: XCPD, XCA query/retrieve endpoints over mutual TLS (HTTP on loopback)."""
    settings = output.load(config)
    try:
        plan = listen_plan(settings.server, insecure_http=insecure_http)
        options: dict[str, Any] = uvicorn_tls_options(settings.server) if plan.tls else {}
    except ConfigError as exc:
        output.fail(f"configuration error: {exc.message}", output.EXIT_USAGE, exc)
    for warning in plan.warnings:
        typer.secho(f"WARNING: {warning}", fg=typer.colors.YELLOW, bold=True, err=True)
    if workers > 1 and settings.store.database_url in ("sqlite://", "sqlite:///:memory:"):
        output.fail(
            "configuration error: --workers needs a database file or PostgreSQL, "
            "not an in-memory store",
            output.EXIT_USAGE,
        )
    logging.getLogger(__name__).info("listening on %s", plan.url)
    serving.serve(
        settings,
        config,
        serving.ServeOptions(plan.host, plan.port, workers, options),
        verbose=output.state.verbose,
    )


@app.command(
    epilog=epilog(
        [f"imagebridge check -c {_CFG}", f"imagebridge check -c {_CFG} --json | jq .ok"],
        codes(
            ok="the configuration is valid, every source answers, no certificate has expired",
            incomplete="a source failed, a certificate expired or is unreadable, or no store",
        ),
    )
)
def check(config: ConfigPath, json_mode: JsonFlag = False) -> None:
    """Validate the configuration, probe every image source and check TLS certificate expiry."""
    settings = output.load(config)
    if not json_mode:
        raise typer.Exit(anyio.run(run_check, settings))
    result = anyio.run(gather_check, settings)
    output.emit_json(check_document(settings, result))
    raise typer.Exit(output.EXIT_OK if result.ok else output.EXIT_INCOMPLETE)


@app.command(
    epilog=epilog(
        [
            f"{_FETCH} --dry-run",
            f"{_FETCH} --into ./priors --study 1.2.840.113619.2.1",
            f"{_FETCH} --community 1.3.6.1.4.1.21367.13.70.101",
            f"{_FETCH} --into pacs --mrn 12345 --mrn-issuer HOSPITAL",
            f"{_FETCH} --into pacs --mrn 12345 --queue   # the serve workers import",
            f"{_FETCH} --dry-run --json | jq '.studies[]'",
        ],
        codes(
            ok="every community answered and every requested instance arrived (or was imported)",
            incomplete="incomplete: a community failed, or an image or a job is missing",
        ),
    )
)
def fetch(
    *,
    config: ConfigPath,
    family: Annotated[str, typer.Option(help="Family name.")],
    given: Annotated[str, typer.Option(help="Given name.")],
    birth_date: Annotated[str, typer.Option("--birth-date", help="YYYYMMDD.")],
    gender: Annotated[str, typer.Option(help="M, F or O.")],
    community: Annotated[
        list[str] | None,
        typer.Option("--community", help="Ask only this homeCommunityId (repeatable)."),
    ] = None,
    into: Annotated[
        Path, typer.Option(help="Folder for the images, or 'pacs' for the \\[import] target.")
    ] = Path("retrieved"),
    mrn: Annotated[
        str | None, typer.Option(help="Local MRN to file the studies under (--into pacs).")
    ] = None,
    mrn_issuer: Annotated[
        str | None, typer.Option("--mrn-issuer", help="Issuer of Patient ID of --mrn.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the studies; retrieve nothing.")
    ] = False,
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="Retrieve only this Study Instance UID (repeatable)."),
    ] = None,
    deadline: Annotated[float, typer.Option(help="Seconds for each discovery/query phase.")] = 60.0,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue", help="With --into pacs: create the jobs for the serve workers, run none."
        ),
    ] = False,
    json_mode: JsonFlag = False,
) -> None:
    """Pull a patient's prior imaging from the partner communities into a folder (or the PACS).

    Progress is shown per community and phase, then per study while the images
    stream in; a final table says what arrived from where and why anything is missing.
    """
    settings = output.load(config)
    if queue and str(into) != "pacs":
        output.fail("--queue needs --into pacs", output.EXIT_USAGE)
    try:
        request = FetchRequest(
            Demographics(family, given, birth_date, gender),
            tuple(HomeCommunityId.parse(c) for c in community or ()),
            into,
            dry_run,
            tuple(study or ()),
            deadline,
            mrn,
            mrn_issuer,
            queue,
        )
    except ImageBridgeError as exc:
        output.fail(f"invalid input: {exc.message}", output.EXIT_USAGE, exc)
    record = FetchRecord()
    console = output.narrative(json_mode)
    status = anyio.run(run_fetch, settings, request, console, record)
    if json_mode and status != output.EXIT_USAGE:
        output.emit_json(record.document(status, dry_run=dry_run, into=request.destination))
    raise typer.Exit(status)


app.command(name="report", epilog=REPORT_EPILOG)(report_command)
app.add_typer(jobs_app, name="jobs")
app.add_typer(web_user_app, name="web-user")


def main() -> None:
    """Console-script entry point: an unhandled exception becomes one ``error:`` line."""
    try:
        app()
    except Exception as exc:  # the last resort: one line, exit status 1
        raise SystemExit(output.unexpected(exc)) from None
