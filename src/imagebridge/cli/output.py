"""What every command shares about its output: exit codes, ``--json``, errors, help epilogs.

* ``--json``: exactly one JSON document on stdout (:func:`emit_json`) and
  nothing else there; the tables and progress bars a person reads are
  suppressed (:func:`narrative`), logs stay on stderr.
* Errors: one line on stderr, ``error: <what went wrong>`` (:func:`fail`);
  the traceback only with the root ``--verbose``.
* Help: every command's epilog shows examples and its exit codes
  (:func:`epilog`), rendered verbatim (brackets escaped for rich markup).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from imagebridge.config import Config, load_config
from imagebridge.errors import ConfigError, ImageBridgeError

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "success: everything asked for was done (complete)",
    EXIT_INCOMPLETE: "incomplete or refused: something is missing or failed (the output says what)",
    EXIT_USAGE: "usage or configuration error: nothing was done",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

MARKUP_MODE: Final[Literal["rich"]] = "rich"
"""The ``rich_markup_mode`` of every Typer app of the command line."""


@dataclass(slots=True)
class CliState:
    """Settings of the root command that every command honours."""

    verbose: bool = False


state = CliState()

JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON document on stdout (for scripts) and nothing else there."
    ),
]
ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="TOML configuration file.")]


def epilog(examples: Sequence[str], codes: Mapping[int, str] | None = None) -> str:
    """The help epilog: an ``Examples:`` block and the command's exit codes, shown verbatim."""
    lines = ["[bold]Examples:[/bold]"]
    for example in examples:  # a long one continues on lines of its own (shell \\)
        lines += [f"  {_verbatim(line)}" for line in example.splitlines()]
    lines += ["", "[bold]Exit codes:[/bold]"]
    for code, meaning in (codes or EXIT_CODES).items():
        lines.append(f"  {code:<4}{escape(meaning)}")
    return "\n".join(lines)


def _verbatim(line: str) -> str:
    """*line* as rich markup that renders exactly as written (a trailing ``\\`` included)."""
    if line.endswith("\\"):
        return escape(line[:-1]) + "\\"
    return escape(line)


def codes(**overrides: str) -> dict[int, str]:
    """The standard exit codes with command-specific meanings (``ok=``, ``incomplete=``...)."""
    names = {"ok": EXIT_OK, "incomplete": EXIT_INCOMPLETE, "usage": EXIT_USAGE}
    table = dict(EXIT_CODES)
    for name, meaning in overrides.items():
        table[names[name]] = meaning
    return table


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(document: Mapping[str, Any]) -> str:
    """*document* as indented JSON (datetimes ISO 8601, enums by value, paths as text)."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=_default)


def emit_json(document: Mapping[str, Any]) -> None:
    """Write *document* to stdout: the whole of stdout in ``--json`` mode."""
    sys.stdout.write(to_json(document) + "\n")
    sys.stdout.flush()


def narrative(json_mode: bool) -> Console:
    """The console for what a person reads: stdout, or silenced under ``--json``."""
    return Console(stderr=True, quiet=True) if json_mode else Console()


def error_line(message: str, exc: BaseException | None = None) -> None:
    """``error: message`` on stderr; with ``--verbose``, the traceback of *exc* first."""
    if state.verbose and exc is not None:
        sys.stderr.write("".join(traceback.format_exception(exc)))
    console = Console(stderr=True, highlight=False)
    console.print(f"error: {message}", style="red", markup=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_INCOMPLETE, exc: BaseException | None = None) -> NoReturn:
    """End the command with one error line and exit status *code*."""
    error_line(message, exc)
    raise typer.Exit(code)


def load(path: Path) -> Config:
    """The configuration at *path*; a bad one ends the command with status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(f"configuration error: {exc.message}", EXIT_USAGE, exc)


def unexpected(exc: Exception) -> int:
    """Report an exception no command handled; the exit status to end with."""
    if isinstance(exc, ConfigError):
        error_line(f"configuration error: {exc.message}", exc)
        return EXIT_USAGE
    hint = "" if state.verbose else " (run with --verbose for details)"
    if isinstance(exc, ImageBridgeError):
        error_line(f"{exc.message}{hint}", exc)
    else:
        error_line(f"{type(exc).__name__}: {exc}{hint}", exc)
    return EXIT_INCOMPLETE


def iso(value: datetime | None) -> str | None:
    """A timestamp for JSON (ISO 8601), or None."""
    return None if value is None else value.isoformat()
