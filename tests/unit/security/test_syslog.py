"""RFC 5424 audit frames, RFC 5425 octet counting, the [audit] table and outbox backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagebridge.errors import ConfigError
from imagebridge.security.audit_config import AuditConfig, audit_config
from imagebridge.security.syslog import BOM, octet_counted, syslog_frame
from imagebridge.store.audit_outbox import backoff

WHEN = datetime(2026, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)


def test_rfc5424_frame() -> None:
    frame = syslog_frame(
        b"<AuditMessage/>",
        timestamp=WHEN,
        hostname="gw.example.org",
        app_name="imagebridge",
        procid="4242",
    )
    assert frame == (
        b"<85>1 2026-03-14T09:26:53.589Z gw.example.org imagebridge 4242 IHE+RFC-3881 - "
        + BOM
        + b"<AuditMessage/>"
    )


def test_header_fields_are_printable_ascii_and_bounded() -> None:
    frame = syslog_frame(
        b"x",
        timestamp=WHEN,
        hostname="",
        app_name="image bridge é" + "x" * 60,
        procid="1",
        bom=False,
    )
    header = frame.split(b" ")
    assert header[2] == b"-"  # NILVALUE hostname
    assert header[3] == b"image_bridge_" + b"_" + b"x" * 34  # 48 characters
    assert frame.endswith(b" - x")


def test_octet_counting() -> None:
    assert octet_counted(b"<85>1 abc") == b"9 <85>1 abc"


def test_audit_table(tmp_path: Path) -> None:
    config = audit_config(
        {
            "enabled": "true",
            "host": "arr.example.org",
            "port": "6514",
            "ca_bundle": "ca.pem",
            "client_certificate": "/abs/me.pem",
            "client_key": "me.key",
            "send_timeout": 2,
        },
        base_dir=tmp_path,
    )
    assert config.enabled and config.port == 6514 and config.send_timeout == 2.0
    assert config.ca_bundle == tmp_path / "ca.pem"
    assert config.client_certificate == Path("/abs/me.pem")
    assert audit_config({}) == AuditConfig()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"enabled": True}, "audit.host is required"),
        ({"transport": "tcp"}, "audit.transport"),
        ({"port": 0}, "audit.port"),
        ({"client_key": "k"}, "go together"),
        ({"transport": "udp", "ca_bundle": "x"}, "need transport = 'tls'"),
        ({"retry_initial": 0}, "must be positive"),
        ({"queue_size": 0}, "at least 1"),
        ({"hots": "x"}, "unknown key"),
        ({"port": "many"}, "invalid value"),
        ({"host": 5}, "must be a string"),
    ],
)
def test_audit_table_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        audit_config(table)


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, 2.0, 30.0) for n in (1, 2, 3, 4, 5)] == [
        timedelta(seconds=s) for s in (2, 4, 8, 16, 30)
    ]
