"""Command line: ``imagebridge <command>``.

Logging handlers are configured here and nowhere else; the library only
creates loggers.
"""

from __future__ import annotations

import logging

import typer

from imagebridge import __version__
from imagebridge.cli.selfcheck import run_selfcheck

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


def main() -> None:
    """Console-script entry point."""
    app()
