"""Certificate expiry as ``imagebridge check`` reports it: days left, a warning under
30 days, an error once expired, for every TLS file of the configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from rich.console import Console

from imagebridge.cli.check import UnreadableCertificate, certificate_report, run_check, tls_files
from imagebridge.config import config_from_mapping
from imagebridge.errors import ConfigError
from imagebridge.security.certificate_expiry import CertificateExpiry, ExpiryStatus, expiry_of

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _leaf(path: Path, ca: trustme.CA, days: int, name: str = "gateway.example.org") -> Path:
    leaf = ca.issue_cert(
        name, not_before=NOW - timedelta(days=400), not_after=NOW + timedelta(days=days)
    )
    leaf.cert_chain_pems[0].write_to_path(str(path))
    leaf.private_key_pem.write_to_path(str(path.with_suffix(".key")))
    return path


@pytest.mark.parametrize(
    ("days", "status"),
    [
        (200, ExpiryStatus.OK),
        (29, ExpiryStatus.WARNING),
        (-1, ExpiryStatus.EXPIRED),
    ],
)
def test_days_left_and_status(tmp_path: Path, days: int, status: ExpiryStatus) -> None:
    path = _leaf(tmp_path / "gw.pem", trustme.CA(), days)
    (row,) = expiry_of("server certificate", path, NOW)
    assert row.status is status
    assert row.days_left == days
    assert row.not_after == NOW + timedelta(days=days)


def test_not_yet_valid(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert(
        "x.example.org", not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=90)
    )
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "x.pem"))
    (row,) = expiry_of("x", tmp_path / "x.pem", NOW)
    assert row.status is ExpiryStatus.NOT_YET_VALID


def test_every_certificate_of_a_bundle_is_reported(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(trustme.CA().cert_pem.bytes() + trustme.CA().cert_pem.bytes())
    rows = expiry_of("partner CA bundle", bundle, datetime.now(UTC))
    assert len(rows) == 2
    assert all(r.status is ExpiryStatus.OK for r in rows)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        expiry_of("x", tmp_path / "missing.pem", NOW)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="no readable PEM certificate"):
        expiry_of("x", tmp_path / "junk.pem", NOW)


def _config(tmp_path: Path, *, client_days: int, hie_days: int) -> dict[str, object]:
    ca, partner_ca = trustme.CA(), trustme.CA()
    _leaf(tmp_path / "gw.pem", ca, 300)
    _leaf(tmp_path / "ours.pem", ca, client_days, "initiator.example.org")
    ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    partner_ca.cert_pem.write_to_path(str(tmp_path / "sequoia.pem"))
    _leaf(tmp_path / "hie-ca.pem", partner_ca, hie_days, "hie.example.org")
    return {
        "community": {"home_community_id": "1.2.3.4"},
        "store": {"database_url": f"sqlite:///{tmp_path / 'ib.db'}"},
        "server": {
            "tls_certificate": "gw.pem",
            "tls_private_key": "gw.key",
            "tls_client_ca": "clients-ca.pem",
        },
        "tls": {
            "ca_bundle": "sequoia.pem",
            "client_certificate": "ours.pem",
            "client_key": "ours.key",
        },
        "communities": [
            {"home_community_id": "1.2.3.5", "name": "plain", "xcpd_url": "https://a/x"},
            {
                "home_community_id": "1.2.3.6",
                "name": "HIE",
                "xcpd_url": "https://b/x",
                "tls_ca_bundle": "hie-ca.pem",
            },
        ],
    }


def test_report_covers_server_client_and_partner_bundles(tmp_path: Path) -> None:
    raw = _config(tmp_path, client_days=20, hie_days=-5)
    config = config_from_mapping(raw, {}, tmp_path / "imagebridge.toml")
    roles = {path.name: role for role, path in tls_files(config)}
    assert roles == {
        "gw.pem": "server certificate",
        "clients-ca.pem": "accepted client CAs (server.tls_client_ca)",
        "ours.pem": "our client certificate ([tls])",
        "sequoia.pem": "partner CA bundle ([tls])",
        "hie-ca.pem": "partner CA bundle (HIE)",  # only a community's own override
    }
    rows = {r.path.name: r for r in certificate_report(config, NOW)}
    assert all(isinstance(r, CertificateExpiry) for r in rows.values())
    assert rows["ours.pem"].status is ExpiryStatus.WARNING  # type: ignore[union-attr]
    assert rows["hie-ca.pem"].status is ExpiryStatus.EXPIRED  # type: ignore[union-attr]
    assert rows["gw.pem"].days_left == 300  # type: ignore[union-attr]


async def test_check_fails_on_an_expired_certificate_and_warns_before(tmp_path: Path) -> None:
    raw = _config(tmp_path, client_days=20, hie_days=-5)
    config = config_from_mapping(raw, {}, tmp_path / "imagebridge.toml")
    out = Console(record=True, width=200)
    assert await run_check(config, out, now=NOW) == 1
    text = out.export_text()
    assert "TLS certificates" in text
    assert "EXPIRED" in text and "expires soon" in text
    assert "initiator.example.org" in text


async def test_check_passes_with_only_a_warning(tmp_path: Path) -> None:
    raw = _config(tmp_path, client_days=20, hie_days=100)
    config = config_from_mapping(raw, {}, tmp_path / "imagebridge.toml")
    out = Console(record=True, width=200)
    assert await run_check(config, out, now=NOW) == 0
    assert "expires soon" in out.export_text()


async def test_check_fails_on_a_missing_certificate_file(tmp_path: Path) -> None:
    raw = _config(tmp_path, client_days=100, hie_days=100)
    (tmp_path / "hie-ca.pem").unlink()
    config = config_from_mapping(raw, {}, tmp_path / "imagebridge.toml")
    report = certificate_report(config, NOW)
    missing = [r for r in report if isinstance(r, UnreadableCertificate)]
    assert [r.path.name for r in missing] == ["hie-ca.pem"]
    assert await run_check(config, Console(record=True, width=200), now=NOW) == 1
