"""A real uvicorn server on a free loopback port, for tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn


@asynccontextmanager
async def running_server(app: Any, **tls: Any) -> AsyncIterator[str]:
    """Serve *app* on 127.0.0.1:<free port> for the duration of the block; yields the base URL.

    Keyword arguments are uvicorn's TLS options (``ssl_certfile``, ``ssl_keyfile``,
    ``ssl_ca_certs``, ``ssl_cert_reqs``); with them the URL is ``https://``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False, **tls)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            scheme = "https" if tls.get("ssl_certfile") else "http"
            yield f"{scheme}://127.0.0.1:{port}"
        finally:
            server.should_exit = True
    sock.close()
