"""SOAP 1.2 server: an ASGI app that routes by endpoint path and WS-Addressing Action.

Each request body is read incrementally (simple SOAP or MTOM/XOP), its root
part parsed by the hardened XML parser, the envelope and addressing checked,
and the payload handed to the transaction's handler.  Replies are written as
simple SOAP or as a streamed MTOM/XOP package, as the transaction table says.
Every error is answered once, here, through :mod:`imagebridge.transport.faults`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from imagebridge.errors import ImageBridgeError, SoapNotEnvelope, UnexpectedElement
from imagebridge.model.caller import VerifiedCaller
from imagebridge.transactions import Transaction, TransactionSpec, spec_of
from imagebridge.transport.events import (
    NO_OBSERVER,
    Decoded,
    Role,
    TransactionEvent,
    TransactionObserver,
)
from imagebridge.transport.faults import (
    SOAP_CONTENT_TYPE,
    fault_from_error,
    fault_response,
    internal_fault,
)
from imagebridge.transport.messages import SoapReply, SoapRequest, StreamedReply
from imagebridge.transport.streaming import ProducedMtomResponse
from imagebridge.wire.mtom import (
    DEFAULT_MTOM_LIMITS,
    MtomLimits,
    MtomPackage,
    encode_mtom_async,
    mtom_content_type,
    read_mtom,
)
from imagebridge.wire.soap import parse_envelope, render_envelope
from imagebridge.wire.wsa import AddressingHeaders, check_request, response_headers
from imagebridge.wire.xml import DEFAULT_LIMITS, Element, XmlLimits, parse_xml, qname_of, serialize

log = logging.getLogger(__name__)

Handler = Callable[[SoapRequest], Awaitable[SoapReply | StreamedReply]]
SecurityCheck = Callable[[SoapRequest], Awaitable[VerifiedCaller | None]]
"""Runs before every handler (XUA verification); what it raises is answered as a fault."""


@dataclass(frozen=True, slots=True)
class SoapEndpoint:
    """One URL path and the transactions answered there."""

    path: str
    handlers: Mapping[Transaction, Handler]

    @property
    def specs(self) -> tuple[TransactionSpec, ...]:
        return tuple(spec_of(t) for t in self.handlers)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Ceilings for one request: MIME framing, root part size, XML depth."""

    mtom: MtomLimits = DEFAULT_MTOM_LIMITS
    xml: XmlLimits = DEFAULT_LIMITS


def _new_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


class SoapDispatcher:
    """Decodes one HTTP request, runs the handler, encodes the reply or the fault."""

    def __init__(
        self,
        endpoint: SoapEndpoint,
        limits: ServerLimits,
        observer: TransactionObserver = NO_OBSERVER,
        verifier: SecurityCheck | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._limits = limits
        self._observer = observer
        self._verifier = verifier

    async def dispatch(self, request: Request) -> Response:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        peer = request.client.host if request.client else ""
        content_type = request.headers.get("content-type", "")
        try:
            package = await read_mtom(content_type, request.stream(), limits=self._limits.mtom)
        except ImageBridgeError as exc:
            log.info("refused request body on %s: %s", self._endpoint.path, exc.message)
            return fault_response(fault_from_error(exc))
        relates_to: str | None = None
        spec: TransactionSpec | None = None
        message = None
        caller: VerifiedCaller | None = None

        def report(
            reply: Element | None,
            error: ImageBridgeError | Exception | None,
            decoded: Decoded | None = None,
        ) -> None:
            if spec is None:
                return  # not a transaction we answer: nothing to audit or count
            code = None
            if isinstance(error, ImageBridgeError):
                code = error.xds_error_code or error.fault_code.value
            elif error is not None:
                code = "Receiver"
            self._observer.observe(
                TransactionEvent(
                    transaction=spec.transaction,
                    role=Role.RESPONDER,
                    started=started,
                    elapsed=time.perf_counter() - clock,
                    peer=peer,
                    request=message.payload if message is not None else None,
                    reply=reply,
                    message_id=relates_to,
                    endpoint=self._endpoint.path,
                    error=code,
                    detail=getattr(error, "message", "") if error is not None else "",
                    header_blocks=message.header_blocks if message is not None else (),
                    user=caller.audit_user_id if caller is not None else None,
                    decoded=decoded,
                )
            )

        try:
            root = parse_xml(package.root, self._limits.xml)
            message = parse_envelope(root)
            if message.fault is not None or message.payload is None or message.addressing is None:
                raise SoapNotEnvelope("a SOAP fault is not a request")
            relates_to = message.addressing.message_id
            spec = check_request(message.addressing, self._endpoint.specs)
            _check_payload(spec, message.payload)
            soap_request = SoapRequest(
                spec=spec,
                addressing=message.addressing,
                payload=message.payload,
                header_blocks=message.header_blocks,
                attachments=package.parts,
                client_host=request.client.host if request.client else None,
            )
            if self._verifier is not None:
                caller = await self._verifier(soap_request)
                soap_request = replace(soap_request, caller=caller)
            handler = self._endpoint.handlers[spec.transaction]
            log.info("%s request %s on %s", spec.code, relates_to, self._endpoint.path)
            reply = await handler(soap_request)
        except ImageBridgeError as exc:
            log.info("fault on %s (%s): %s", self._endpoint.path, type(exc).__name__, exc.message)
            report(None, exc)
            return fault_response(fault_from_error(exc), relates_to)
        except Exception as exc:
            log.exception("unexpected failure on %s", self._endpoint.path)
            report(None, exc)
            return fault_response(internal_fault(), relates_to)
        finally:
            package.close()
        if isinstance(reply, StreamedReply):
            reply = _observed(reply, report)
        else:
            report(reply.payload, None, reply.decoded)
        return _encode_reply(spec, soap_request, reply)


def _observed(
    reply: StreamedReply, report: Callable[[Element | None, Exception | None], None]
) -> StreamedReply:
    """*reply* whose final payload (the root written last) is reported when it is made."""

    async def payload() -> Element:
        try:
            made = await reply.payload()
        except Exception as exc:
            report(None, exc)
            raise
        report(made, None)
        return made

    return replace(reply, payload=payload)


def _check_payload(spec: TransactionSpec, payload: Any) -> None:
    namespace, local = qname_of(payload)
    expected_ns, expected_local = spec.request_element
    if (namespace, local) != (expected_ns, expected_local):
        raise UnexpectedElement(
            f"{spec.code} expects {expected_local} in {expected_ns}, found {local} in {namespace!r}"
        )


def _encode_reply(
    spec: TransactionSpec, request: SoapRequest, reply: SoapReply | StreamedReply
) -> Response:
    headers = response_headers(spec, request.addressing, message_id=_new_id())
    if isinstance(reply, StreamedReply):
        return _streamed(headers, reply)
    root = serialize(render_envelope(headers, reply.payload))
    if not spec.mtom:
        return Response(root, media_type=SOAP_CONTENT_TYPE)
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@imagebridge"
    body = encode_mtom_async(root, reply.attachments, boundary=boundary, root_content_id=root_id)
    return StreamingResponse(body, media_type=mtom_content_type(boundary, root_id))


def _streamed(headers: AddressingHeaders, reply: StreamedReply) -> Response:
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@imagebridge"

    async def root(payload: Element) -> bytes:
        return serialize(render_envelope(headers, payload))

    return ProducedMtomResponse(reply, root, boundary=boundary, root_content_id=root_id)


def soap_routes(
    endpoints: Sequence[SoapEndpoint],
    limits: ServerLimits | None = None,
    observer: TransactionObserver = NO_OBSERVER,
    verifier: SecurityCheck | None = None,
) -> list[Route]:
    """Starlette routes (POST only) for *endpoints*; *observer* hears every transaction,
    *verifier* (XUA) runs before every handler."""
    chosen = limits or ServerLimits()
    return [
        Route(e.path, SoapDispatcher(e, chosen, observer, verifier).dispatch, methods=["POST"])
        for e in endpoints
    ]


def soap_app(
    endpoints: Sequence[SoapEndpoint],
    limits: ServerLimits | None = None,
    observer: TransactionObserver = NO_OBSERVER,
    verifier: SecurityCheck | None = None,
) -> Starlette:
    """A bare ASGI application serving *endpoints* (the composition root adds lifespan)."""
    return Starlette(routes=soap_routes(endpoints, limits, observer, verifier))


__all__ = [
    "Handler",
    "MtomPackage",
    "SecurityCheck",
    "ServerLimits",
    "SoapDispatcher",
    "SoapEndpoint",
    "soap_app",
    "soap_routes",
]
