"""SOAP 1.2 client over ``httpx.AsyncClient``: synchronous exchanges only.

Requests are written as simple SOAP or MTOM/XOP per the transaction table;
replies are read incrementally, attachments handed to a spooling sink, never
buffered whole.  A SOAP fault reply raises :class:`SoapFaultReceived`; a reply
whose Action or RelatesTo does not fit the request raises an addressing error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from imagebridge.errors import (
    PartnerTimeout,
    PartnerUnavailable,
    SoapFaultReceived,
    SoapNotEnvelope,
)
from imagebridge.security.tls import CLOSED_BEFORE_ANSWER, describe_tls_failure
from imagebridge.transactions import TransactionSpec
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.wire.mtom import (
    DEFAULT_MTOM_LIMITS,
    Attachment,
    MtomLimits,
    MtomPackage,
    encode_mtom_async,
    mtom_content_type,
    read_mtom,
)
from imagebridge.wire.soap import SoapMessage, parse_envelope, render_envelope
from imagebridge.wire.spool import PartSink
from imagebridge.wire.wsa import check_response, request_headers
from imagebridge.wire.xml import DEFAULT_LIMITS, Element, XmlLimits, parse_xml, serialize

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SoapResponse:
    """A decoded reply; close it to release spooled attachments."""

    message: SoapMessage
    package: MtomPackage
    status_code: int

    @property
    def payload(self) -> Element:
        if self.message.payload is None:  # faults raise before a SoapResponse exists
            raise SoapNotEnvelope("the reply has no payload")
        return self.message.payload

    def close(self) -> None:
        self.package.close()

    def __enter__(self) -> SoapResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SoapClient:
    """Sends one transaction and returns its decoded reply."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        mtom_limits: MtomLimits = DEFAULT_MTOM_LIMITS,
        xml_limits: XmlLimits = DEFAULT_LIMITS,
    ) -> None:
        self._http = http
        self._mtom_limits = mtom_limits
        self._xml_limits = xml_limits

    async def call(
        self,
        spec: TransactionSpec,
        url: str,
        payload: Element,
        *,
        header_blocks: Sequence[Element] = (),
        attachments: Iterable[Attachment] | AsyncIterable[Attachment] = (),
        sink: PartSink | None = None,
        message_id: str | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> SoapResponse:
        """POST *payload* as *spec*'s request to *url* and decode the reply."""
        mid = message_id or f"urn:uuid:{uuid.uuid4()}"
        envelope = render_envelope(request_headers(spec, mid, url), payload, header_blocks)
        root = serialize(envelope)
        if spec.mtom:
            boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
            root_id = f"root.{uuid.uuid4().hex}@imagebridge"
            content: bytes | AsyncIterable[bytes] = encode_mtom_async(
                root, attachments, boundary=boundary, root_content_id=root_id
            )
            content_type = mtom_content_type(boundary, root_id)
        else:
            content, content_type = root, SOAP_CONTENT_TYPE
        request = self._http.build_request(
            "POST",
            url,
            content=content,
            headers={"Content-Type": content_type},
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            reply = await self._http.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise PartnerTimeout(f"{spec.code} to {url} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise PartnerUnavailable(f"{spec.code} to {url} failed: {_reason(exc, url)}") from exc
        try:
            package = await read_mtom(
                reply.headers.get("content-type", ""),
                reply.aiter_bytes(),
                sink=sink,
                limits=self._mtom_limits,
            )
        except httpx.TimeoutException as exc:
            raise PartnerTimeout(
                f"{spec.code} reply from {url} stalled: {type(exc).__name__}"
            ) from exc
        except httpx.TransportError as exc:
            tls = describe_tls_failure(exc)
            raise PartnerUnavailable(
                f"{spec.code} reply from {url} broke off" + (f": {tls}" if tls else "")
            ) from exc
        finally:
            await reply.aclose()
        try:
            reply_root = parse_xml(package.root, self._xml_limits)
            message = parse_envelope(reply_root, require_addressing=False)
            if message.fault is not None:
                fault = message.fault
                raise SoapFaultReceived(
                    f"{spec.code} fault from {url}: {fault.reason}",
                    fault.code.value,
                    tuple(s.clark for s in fault.subcodes),
                )
            if message.addressing is None:
                # Lenient: correlation is the HTTP exchange itself; note the omission.
                log.warning("%s reply from %s has no WS-Addressing headers", spec.code, url)
            else:
                check_response(message.addressing, spec, mid)
        except BaseException:
            package.close()
            raise
        return SoapResponse(message, package, reply.status_code)


def _reason(exc: httpx.TransportError, url: str) -> str:
    """Why a request failed: the TLS failure in words when it is one, else the error."""
    tls = describe_tls_failure(exc)
    if tls is None and isinstance(exc, httpx.ReadError) and url.lower().startswith("https:"):
        tls = CLOSED_BEFORE_ANSWER  # TLS 1.3: a refused client certificate shows up here
    if tls is not None:
        return tls
    reason = str(exc).strip()[:300]
    return type(exc).__name__ + (f" ({reason})" if reason else "")
