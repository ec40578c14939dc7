"""Debian's nginx as a load balancer on loopback, for the multi-worker tests.

:func:`load_balancer` writes a minimal configuration (an ``upstream`` of the
given loopback servers, round robin, retrying a request on the next server
when one refuses or drops the connection) and runs nginx in the foreground
as a child process on a free port.  Outside CI a machine without nginx
skips; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.integration.orthanc import free_port


def require_nginx() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        message = "nginx (Debian package nginx) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (required in CI)", pytrace=False)
        pytest.skip(message)
    return binary


def _configuration(prefix: Path, port: int, upstreams: Sequence[str]) -> str:
    temp = {k: prefix / k for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=30s;" for u in upstreams)
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    upstream gateway {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream error timeout non_idempotent;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


@contextlib.contextmanager
def load_balancer(upstreams: Sequence[str], folder: Path) -> Iterator[str]:
    """nginx balancing over *upstreams* (``127.0.0.1:port``); yields its base URL."""
    binary = require_nginx()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(_configuration(folder, port, upstreams), encoding="utf-8")
    log = folder / "error.log"
    with open(folder / "stderr.log", "wb") as err:
        process = subprocess.Popen(
            [binary, "-p", str(folder), "-e", str(log), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"nginx exited: {(folder / 'stderr.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(base + "/metrics", timeout=2.0)
                break
            if time.monotonic() > deadline:
                pytest.fail("nginx did not answer within 15 s")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
