"""``imagebridge serve``: one gateway process, or N uvicorn workers sharing one socket.

With ``--workers 1`` (the default) the application is built in this process.
With more, uvicorn binds the socket once and starts N worker processes (it
restarts a worker that dies); each worker imports
:func:`app_from_environment`, which reads the configuration file named by
:data:`CONFIG_ENV` and builds its own gateway.  Workers share nothing but the
database, so several workers (or several hosts) need a store every one of
them reaches: PostgreSQL for hosts, SQLite only for workers of one host.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from imagebridge.config import Config, load_config

if TYPE_CHECKING:
    from starlette.applications import Starlette

CONFIG_ENV = "IMAGEBRIDGE_CONFIG"
"""Absolute path of the configuration file, for worker processes."""
VERBOSE_ENV = "IMAGEBRIDGE_VERBOSE"
"""``1``: worker processes log at DEBUG, as ``imagebridge --verbose`` does."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
QUIET_LOGGERS = ("httpx", "alembic")
"""One line per HTTP request or migration step is noise for an operator (not at DEBUG)."""

log = logging.getLogger(__name__)


def configure_logging(verbose: bool) -> None:
    """The root handler every command and worker process uses (INFO, or DEBUG if *verbose*)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    if not verbose:
        for noisy in QUIET_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)


def app_from_environment() -> Starlette:
    """The ASGI app of one worker process (uvicorn's factory with ``--workers N``)."""
    configure_logging(os.environ.get(VERBOSE_ENV) == "1")
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start workers with `imagebridge serve`")
    from imagebridge.app import create_app  # noqa: PLC0415 (the supervisor never needs it)

    return create_app(load_config(Path(path)))


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where to listen and how many worker processes (uvicorn keyword arguments in *extra*)."""

    host: str
    port: int
    workers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def serve(config: Config, config_path: Path, options: ServeOptions, *, verbose: bool) -> None:
    """Run the gateway until SIGINT/SIGTERM (blocks)."""
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_config": None,
        "access_log": False,
        **options.extra,
    }
    if options.workers <= 1:
        from imagebridge.app import create_app  # noqa: PLC0415 (see app_from_environment)

        uvicorn.run(create_app(config), **common)
        return
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    log.info("starting %d worker processes", options.workers)
    uvicorn.run(
        "imagebridge.serving:app_from_environment",
        factory=True,
        workers=options.workers,
        **common,
    )
