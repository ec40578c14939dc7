"""Audit Trail and Node Authentication [ITI-20], Secure Node: syslog transport of audit messages.

* :func:`syslog_frame` builds one RFC 5424 message: ``<85>1 TIMESTAMP HOSTNAME
  APP-NAME PROCID IHE+RFC-3881 - BOM<AuditMessage .../>`` (PRI 85 =
  facility 10 security/authorization, severity 5 notice; MSGID ``IHE+RFC-3881``
  and no structured data, as ITI TF-2 3.20 asks).  Pure: the time is passed in.
* :func:`octet_counted` adds RFC 5425 (TLS) framing: ``MSG-LEN SP SYSLOG-MSG``.
* :class:`TlsSyslog` keeps one TLS connection to the audit repository (RFC 5425,
  the repository verified with our trust settings, our client certificate
  when configured) and reconnects after a failure; :class:`UdpSyslog` sends
  one datagram per message (RFC 5426).  Every operation is bounded by the
  caller (``anyio.fail_after``); a failure raises :class:`OSError`,
  :class:`ssl.SSLError` or :class:`anyio.BrokenResourceError`.
"""

from __future__ import annotations

import contextlib
import ssl
from datetime import UTC, datetime
from typing import Final, Protocol

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

PRI_AUDIT: Final = 10 * 8 + 5
"""authpriv (10) . notice (5)."""
MSGID: Final = "IHE+RFC-3881"
BOM: Final = b"\xef\xbb\xbf"
_LIMITS: Final = {"HOSTNAME": 255, "APP-NAME": 48, "PROCID": 128, "MSGID": 32}


def _field(value: str, name: str) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, bounded, or NILVALUE."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[: _LIMITS[name]]
    return cleaned or "-"


def _timestamp(when: datetime) -> str:
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def syslog_frame(
    message: bytes,
    *,
    timestamp: datetime,
    hostname: str,
    app_name: str,
    procid: str,
    msgid: str = MSGID,
    bom: bool = True,
    pri: int = PRI_AUDIT,
) -> bytes:
    """One RFC 5424 syslog message carrying *message* (UTF-8 XML) as MSG."""
    header = " ".join(
        (
            f"<{pri}>1",
            _timestamp(timestamp),
            _field(hostname, "HOSTNAME"),
            _field(app_name, "APP-NAME"),
            _field(procid, "PROCID"),
            _field(msgid, "MSGID"),
            "-",
        )
    )
    return header.encode("ascii") + b" " + (BOM if bom else b"") + message


def octet_counted(frame: bytes) -> bytes:
    """RFC 5425 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(frame)).encode("ascii") + b" " + frame


class SyslogSender(Protocol):
    """Sends syslog messages to one audit repository."""

    async def send(self, frame: bytes) -> None: ...

    async def aclose(self) -> None: ...


class TlsSyslog:
    """RFC 5425: syslog over TLS, one long-lived connection, octet-counted framing."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self._host = host
        self._port = port
        self._context = context
        self._stream: TLSStream | None = None

    async def _connected(self) -> TLSStream:
        if self._stream is None:
            stream = await anyio.connect_tcp(
                self._host,
                self._port,
                ssl_context=self._context,
                tls_standard_compatible=False,
                tls_hostname=self._host,
            )
            self._stream = stream
        return self._stream

    async def send(self, frame: bytes) -> None:
        """Send one message; on any failure the connection is dropped (the next send reconnects)."""
        try:
            stream = await self._connected()
            await stream.send(octet_counted(frame))
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(1),
                contextlib.suppress(OSError, ssl.SSLError, anyio.BrokenResourceError),
            ):
                await stream.aclose()


class UdpSyslog:
    """RFC 5426: syslog over UDP, one message per datagram (best effort, no framing)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._socket: anyio.abc.ConnectedUDPSocket | None = None

    async def send(self, frame: bytes) -> None:
        try:
            if self._socket is None:
                self._socket = await anyio.create_connected_udp_socket(self._host, self._port)
            await self._socket.send(frame)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            await sock.aclose()
