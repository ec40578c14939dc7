"""``imagebridge web-user add NAME``: the line that lets an operator log in to the staff page.

Prompts for the password twice (never echoed, never written anywhere) and
prints ``NAME = "scrypt$..."`` to put under ``[web.users]`` in the
configuration, or in the file named by ``web.users_file``.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from imagebridge.cli import output
from imagebridge.cli.output import epilog
from imagebridge.web.settings import hash_password

web_user_app = typer.Typer(
    help="Staff page operator accounts.",
    epilog=epilog(["imagebridge web-user add alice", "imagebridge web-user add --help"]),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=output.MARKUP_MODE,
)

MIN_PASSWORD = 10


@web_user_app.command(
    "add",
    epilog=epilog(
        [
            "imagebridge web-user add alice",
            "imagebridge web-user add alice >> users.toml   # the prompt goes to the terminal",
        ],
        {
            0: "the [web.users] line was printed",
            1: "aborted at the password prompt",
            2: "usage error: a bad user name or a password shorter than 10 characters",
            130: "interrupted (Ctrl-C)",
        },
    ),
)
def add(name: Annotated[str, typer.Argument(help="The operator's user name.")]) -> None:
    """Prompt for a password and print the \\[web.users] line with its scrypt hash."""
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name):
        output.fail("a user name is 1-64 letters, digits, or . _ @ -", output.EXIT_USAGE)
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        output.fail(f"use at least {MIN_PASSWORD} characters", output.EXIT_USAGE)
    typer.echo("# put this line under [web.users] (or in web.users_file):", err=True)
    typer.echo(f'{name} = "{hash_password(password)}"')
