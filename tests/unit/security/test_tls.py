"""TLS policy as pure logic: how ``serve`` listens, which TLS material a partner gets,
the server context, and field failures put into words."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme

from imagebridge.errors import ConfigError
from imagebridge.model.directory import TlsSettings
from imagebridge.security.tls import (
    CLIENT_CERTIFICATE_REFUSED,
    CLIENT_CERTIFICATE_REQUIRED,
    EXPIRED,
    HOST_MISMATCH,
    UNKNOWN_CA,
    describe_tls_failure,
    effective_tls,
    is_loopback,
    listen_plan,
    server_context,
    uvicorn_tls_options,
)


@dataclass(frozen=True)
class Server:
    host: str = "127.0.0.1"
    port: int = 8443
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None


TLS = Server(
    tls_certificate=Path("gw.pem"),
    tls_private_key=Path("gw.key"),
    tls_client_ca=Path("ca.pem"),
)


# --- listen_plan ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_plain_http_on_loopback_is_fine(host: str) -> None:
    plan = listen_plan(Server(host=host))
    assert plan.tls is False
    assert plan.warnings == ()
    assert plan.url.startswith("http://")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.example.org"])
def test_plain_http_elsewhere_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="refusing to serve plain HTTP") as caught:
        listen_plan(Server(host=host))
    assert "--insecure-http" in caught.value.message
    assert "tls_client_ca" in caught.value.message


def test_insecure_http_flag_allows_it_with_a_loud_warning() -> None:
    plan = listen_plan(Server(host="0.0.0.0"), insecure_http=True)
    assert plan.tls is False
    assert plan.host == "0.0.0.0"
    (warning,) = plan.warnings
    assert warning.startswith("INSECURE")
    assert "unencrypted" in warning


def test_tls_listens_anywhere_with_client_certificates_required() -> None:
    plan = listen_plan(replace(TLS, host="0.0.0.0"))
    assert plan.tls is True
    assert plan.warnings == ()
    assert plan.url == "https://0.0.0.0:8443"


def test_insecure_http_is_ignored_when_tls_is_configured() -> None:
    plan = listen_plan(TLS, insecure_http=True)
    assert plan.tls is True
    assert plan.warnings == ("--insecure-http ignored: TLS is configured",)


def test_tls_without_client_ca_is_refused() -> None:
    with pytest.raises(ConfigError, match="tls_client_ca is required"):
        listen_plan(Server(tls_certificate=Path("gw.pem"), tls_private_key=Path("gw.key")))
    with pytest.raises(ConfigError, match="tls_client_ca is required"):
        listen_plan(
            Server(tls_certificate=Path("gw.pem"), tls_private_key=Path("gw.key")),
            insecure_http=True,
        )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"tls_certificate": Path("gw.pem"), "tls_client_ca": Path("ca.pem")}, "go together"),
        ({"tls_client_ca": Path("ca.pem")}, "needs server.tls_certificate"),
    ],
)
def test_half_configured_tls_is_refused(keys: dict[str, Path], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        listen_plan(Server(**keys))  # type: ignore[arg-type]


def test_host_names_are_not_taken_for_loopback() -> None:
    assert is_loopback("localhost")
    assert not is_loopback("localhost.example.org")
    assert not is_loopback("127.0.0.1.nip.io")


# --- effective_tls --------------------------------------------------------------------

DEPLOYMENT = TlsSettings(Path("/trust/sequoia.pem"), Path("/certs/gw.pem"), Path("/certs/gw.key"))


def test_a_partner_without_tls_keys_gets_the_deployment_settings() -> None:
    assert effective_tls(TlsSettings(), DEPLOYMENT) == DEPLOYMENT


def test_a_partner_ca_bundle_replaces_only_the_bundle() -> None:
    own = TlsSettings(ca_bundle=Path("/trust/hie.pem"))
    got = effective_tls(own, DEPLOYMENT)
    assert got.ca_bundle == Path("/trust/hie.pem")
    assert (got.client_certificate, got.client_key) == (
        Path("/certs/gw.pem"),
        Path("/certs/gw.key"),
    )


def test_a_partner_client_pair_replaces_the_pair_together() -> None:
    own = TlsSettings(client_certificate=Path("/certs/hie.pem"), client_key=Path("/certs/hie.key"))
    got = effective_tls(own, DEPLOYMENT)
    assert got == TlsSettings(
        Path("/trust/sequoia.pem"), Path("/certs/hie.pem"), Path("/certs/hie.key")
    )


def test_no_deployment_settings_leaves_the_partner_as_configured() -> None:
    own = TlsSettings(ca_bundle=Path("/trust/hie.pem"))
    assert effective_tls(own, TlsSettings()) == own
    assert effective_tls(TlsSettings(), TlsSettings()) == TlsSettings()


# --- server_context -------------------------------------------------------------------


@pytest.fixture
def gateway_files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("gateway.example.org")
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return files


def test_server_context_requires_client_certificates_and_tls_1_2(
    gateway_files: dict[str, Path],
) -> None:
    server = Server(
        tls_certificate=gateway_files["cert"],
        tls_private_key=gateway_files["key"],
        tls_client_ca=gateway_files["ca"],
    )
    context = server_context(server)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.get_ca_certs()  # the client CA is loaded
    options = uvicorn_tls_options(server)
    assert options["ssl_context_factory"](None, None) is not None
    assert options["ssl_certfile"] == str(gateway_files["cert"])


def test_server_context_says_which_file_is_wrong(gateway_files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"tls_client_ca .*could not be loaded"):
        server_context(
            Server(
                tls_certificate=gateway_files["cert"],
                tls_private_key=gateway_files["key"],
                tls_client_ca=gateway_files["ca"].with_name("missing.pem"),
            )
        )
    with pytest.raises(ConfigError, match=r"tls_certificate .*could not be loaded"):
        server_context(
            Server(
                tls_certificate=gateway_files["ca"],  # a certificate without its key
                tls_private_key=gateway_files["ca"],
                tls_client_ca=gateway_files["ca"],
            )
        )
    with pytest.raises(ConfigError, match="tls_client_ca is required"):
        server_context(
            Server(tls_certificate=gateway_files["cert"], tls_private_key=gateway_files["key"])
        )


# --- describe_tls_failure -------------------------------------------------------------


def _verification(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


def _alert(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] alert")
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (20, "unable to get local issuer certificate", UNKNOWN_CA),
        (19, "self-signed certificate in certificate chain", UNKNOWN_CA),
        (18, "self-signed certificate", UNKNOWN_CA),
        (10, "certificate has expired", EXPIRED),
        (62, "Hostname mismatch", HOST_MISMATCH),
        (64, "IP address mismatch", HOST_MISMATCH),
        (9, "certificate is not yet valid", "partner certificate not yet valid"),
    ],
)
def test_server_certificate_failures_in_words(code: int, message: str, expected: str) -> None:
    wrapped = RuntimeError("ConnectError")
    wrapped.__cause__ = _verification(code, message)
    described = describe_tls_failure(wrapped)
    assert described is not None
    assert described.startswith(expected)
    assert message in described  # OpenSSL's own words stay for the operator


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", CLIENT_CERTIFICATE_REQUIRED),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", "requires a client certificate"),
        ("TLSV1_ALERT_UNKNOWN_CA", CLIENT_CERTIFICATE_REFUSED),
        ("SSLV3_ALERT_CERTIFICATE_EXPIRED", CLIENT_CERTIFICATE_REFUSED + ": it has expired"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", CLIENT_CERTIFICATE_REFUSED),
        ("TLSV1_ALERT_PROTOCOL_VERSION", "TLS 1.2 or later"),
        ("WRONG_VERSION_NUMBER", "did not answer with TLS"),
        ("UNEXPECTED_EOF_WHILE_READING", "client certificate"),
        ("SOMETHING_NEW", "TLS failure (SOMETHING_NEW)"),
    ],
)
def test_alerts_from_the_partner_in_words(reason: str, expected: str) -> None:
    described = describe_tls_failure(_alert(reason))
    assert described is not None
    assert expected in described


def test_failures_that_are_not_tls_are_left_alone() -> None:
    reset = OSError("Connection refused")
    assert describe_tls_failure(reset) is None
    outer = RuntimeError("outer")
    outer.__context__ = outer  # a cycle never loops forever
    assert describe_tls_failure(outer) is None
