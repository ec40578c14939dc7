"""Command line: ``imagebridge <command>``.

Logging handlers are configured here and nowhere else; the library only
creates loggers.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import anyio
import typer
import uvicorn

from imagebridge import __version__
from imagebridge.app import create_app
from imagebridge.cli.check import run_check
from imagebridge.cli.selfcheck import run_selfcheck
from imagebridge.config import Config, load_config
from imagebridge.errors import ConfigError

app = typer.Typer(
    name="imagebridge",
    help="Carequality imaging data exchange gateway (XCPD, XCA, XCA-I).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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


def main() -> None:
    """Console-script entry point."""
    app()
