"""Partner gateways that misbehave on purpose, for tests of the initiating side.

Each is a small Starlette app served over real loopback HTTP by
:func:`tests.http_server.running_server`; the fan-out must report each one for
its community without disturbing the others.

* ``fault``: answers every request with a SOAP 1.2 Receiver fault.
* ``garbage``: answers 200 with a SOAP content type and a body that is not XML.
* ``hang``: sends the status line and headers, then nothing, forever.
* :func:`truncating_proxy`: forwards to a real gateway and cuts the reply's
  body after *keep* bytes (a truncated MTOM package).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from imagebridge.errors import FaultCode
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.wire.soap import SoapFault, render_fault
from imagebridge.wire.xml import serialize


async def _fault(request: Request) -> Response:
    await request.body()
    fault = SoapFault(FaultCode.RECEIVER, "partner is closed for maintenance")
    return Response(serialize(render_fault(fault)), 500, media_type=SOAP_CONTENT_TYPE)


async def _garbage(request: Request) -> Response:
    await request.body()
    return Response(b"<Envelope><unclosed>", 200, media_type=SOAP_CONTENT_TYPE)


async def _hang(request: Request) -> Response:
    await request.body()

    async def never() -> AsyncIterator[bytes]:
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    return StreamingResponse(never(), media_type=SOAP_CONTENT_TYPE)


BEHAVIOURS = {"fault": _fault, "garbage": _garbage, "hang": _hang}


def misbehaving_app(behaviour: str) -> Starlette:
    """Every POST path answered the way *behaviour* names."""
    endpoint = BEHAVIOURS[behaviour]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])


def truncating_proxy(target: str, keep: int) -> Starlette:
    """Forward each POST to ``target + path`` and relay only the first *keep* body bytes."""

    async def forward(request: Request) -> Response:
        body = await request.body()
        client = httpx.AsyncClient(timeout=30)
        upstream = await client.send(
            client.build_request(
                "POST",
                target + request.url.path,
                content=body,
                headers={"Content-Type": request.headers["content-type"]},
            ),
            stream=True,
        )

        async def cut() -> AsyncIterator[bytes]:
            sent = 0
            try:
                async for chunk in upstream.aiter_raw():
                    room = keep - sent
                    if room <= 0:
                        break
                    yield chunk[:room]
                    sent += min(room, len(chunk))
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(cut(), media_type=upstream.headers["content-type"])

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])
