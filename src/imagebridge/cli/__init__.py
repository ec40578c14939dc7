"""Command line: ``imagebridge <command>``.

Logging handlers are configured here and nowhere else; the library only
creates loggers.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
import uvicorn
from rich.console import Console

from imagebridge import __version__
from imagebridge.actors.initiating.pull import Demographics
from imagebridge.app import create_app
from imagebridge.cli.check import run_check
from imagebridge.cli.fetch import FetchRequest, run_fetch
from imagebridge.cli.jobs import jobs_app
from imagebridge.cli.selfcheck import run_selfcheck
from imagebridge.config import Config, load_config
from imagebridge.errors import ConfigError, ImageBridgeError
from imagebridge.model.ids import HomeCommunityId

app = typer.Typer(
    name="imagebridge",
    help="Carequality imaging data exchange gateway (XCPD, XCA, XCA-I).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(jobs_app, name="jobs")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # one line per HTTP request is noise for an operator
        logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the imagebridge version."""
    typer.echo(__version__)


@app.command()
def demo() -> None:
    """Run the codec self-check: every transaction encoded, packaged and decoded again."""
    raise typer.Exit(run_selfcheck())


ConfigOption = typer.Option(..., "--config", "-c", help="TOML configuration file.")


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(config: Path = ConfigOption) -> None:
    """Run the gateway: XCPD, XCA query/retrieve endpoints over HTTP(S)."""
    settings = _load(config)
    server = settings.server
    options: dict[str, Any] = {}
    if server.tls:
        options = {
            "ssl_certfile": str(server.tls_certificate),
            "ssl_keyfile": str(server.tls_private_key),
        }
        if server.tls_client_ca is not None:
            options["ssl_ca_certs"] = str(server.tls_client_ca)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    uvicorn.run(
        create_app(settings),
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        **options,
    )


@app.command()
def check(config: Path = ConfigOption) -> None:
    """Validate the configuration and probe every image source."""
    settings = _load(config)
    raise typer.Exit(anyio.run(run_check, settings))


@app.command()
def fetch(
    *,
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML configuration file.")],
    family: Annotated[str, typer.Option(help="Family name.")],
    given: Annotated[str, typer.Option(help="Given name.")],
    birth_date: Annotated[str, typer.Option("--birth-date", help="YYYYMMDD.")],
    gender: Annotated[str, typer.Option(help="M, F or O.")],
    community: Annotated[
        list[str] | None,
        typer.Option("--community", help="Ask only this homeCommunityId (repeatable)."),
    ] = None,
    into: Annotated[
        Path, typer.Option(help="Folder for the images, or 'pacs' for the [import] target.")
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
) -> None:
    """Pull a patient's prior imaging from the partner communities into a folder."""
    settings = _load(config)
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
        )
    except ImageBridgeError as exc:
        typer.secho(f"invalid input: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(anyio.run(run_fetch, settings, request, Console()))


def main() -> None:
    """Console-script entry point."""
    app()
