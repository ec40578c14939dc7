"""Mutual TLS between real gateways, and the usual field failures in words an operator can act on.

The responding side is a real imagebridge gateway (``create_app``) served by
uvicorn with exactly the options ``imagebridge serve`` uses
(``uvicorn_tls_options``: TLS 1.2+, client certificate required).  The
initiating side is our ``PartnerClients``/``PartnerClient`` with the
deployment's ``[tls]`` defaults.  Every certificate is made at run time by
trustme test CAs:

* ``partner_ca`` issues the gateways' server certificates (good, expired,
  for another host);
* ``our_ca`` issues initiators' client certificates, the only ones the
  gateway accepts;
* ``impostor_ca`` issues nothing we trust and a "stranger" client certificate.

``imagebridge serve`` itself is run as a process to show it refuses plain
HTTP on a non-loopback address before binding anything.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.pull import discovery_query
from imagebridge.app import create_app
from imagebridge.config import ServerConfig, config_from_mapping
from imagebridge.directory.static import parse_community
from imagebridge.errors import PartnerUnavailable
from imagebridge.model.directory import Community, TlsSettings
from imagebridge.model.ids import HomeCommunityId
from imagebridge.security.tls import (
    EXPIRED,
    HOST_MISMATCH,
    UNKNOWN_CA,
    describe_tls_failure,
    uvicorn_tls_options,
)
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.hl7v3.patient_discovery import render_patient_discovery_query
from tests.http_server import running_server
from tests.integration.test_pull_workflow import ALICE_DEMOGRAPHICS, US, A, _responder

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Pki:
    files: dict[str, Path]
    servers: dict[str, str]
    """name -> base URL: "gateway" (good certificate), "expired", "wrong-host"."""

    def tls(self, ca: str | None, client: str | None) -> TlsSettings:
        return TlsSettings(
            ca_bundle=self.files[ca] if ca else None,
            client_certificate=self.files[f"{client}-cert"] if client else None,
            client_key=self.files[f"{client}-key"] if client else None,
        )


@pytest.fixture
async def pki(tmp_path: Path) -> AsyncIterator[Pki]:
    partner_ca, our_ca, impostor_ca = trustme.CA(), trustme.CA(), trustme.CA()
    files: dict[str, Path] = {}

    def write(name: str, blob: trustme.Blob) -> Path:
        path = files[name] = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        return path

    past = datetime.now(UTC) - timedelta(days=3)
    servers = {
        "gateway": partner_ca.issue_cert("127.0.0.1"),
        "expired": partner_ca.issue_cert(
            "127.0.0.1", not_before=past - timedelta(days=90), not_after=past
        ),
        "wrong-host": partner_ca.issue_cert("partner.example.org"),
    }
    for name, leaf in servers.items():
        write(f"{name}-cert", leaf.cert_chain_pems[0])
        write(f"{name}-key", leaf.private_key_pem)
    for name, leaf in (
        ("ours", our_ca.issue_cert("initiator.example.org")),
        ("stranger", impostor_ca.issue_cert("initiator.example.org")),
    ):
        write(f"{name}-cert", leaf.cert_chain_pems[0])
        write(f"{name}-key", leaf.private_key_pem)
    write("partner-ca", partner_ca.cert_pem)
    write("our-ca", our_ca.cert_pem)
    write("impostor-ca", impostor_ca.cert_pem)
    app, _ = _responder(tmp_path, A, A + ".1", [31])
    async with AsyncExitStack() as stack:
        urls = {}
        for name in servers:
            server = ServerConfig(
                tls_certificate=files[f"{name}-cert"],
                tls_private_key=files[f"{name}-key"],
                tls_client_ca=files["our-ca"],
            )
            urls[name] = await stack.enter_async_context(
                running_server(app, **uvicorn_tls_options(server))
            )
        yield Pki(files, urls)


def _community(base: str, **tls: Path) -> Community:
    return parse_community(
        {
            "home_community_id": A,
            "name": "partner",
            "xcpd_url": f"{base}/xcpd",
            "timeout_connect": 5,
            "timeout_read": 10,
            "timeout_overall": 20,
            **{key: str(path) for key, path in tls.items()},
        }
    )


QUERY = discovery_query(
    ALICE_DEMOGRAPHICS,
    US,
    HomeCommunityId(A),
    message_root="2.25.4242",
    creation_time="20260101120000",
)


async def _refusal(clients: PartnerClients, base: str, **tls: Path) -> str:
    community = _community(base, **tls)
    with pytest.raises(PartnerUnavailable) as caught:
        await clients.for_community(community).discover(QUERY)
    return caught.value.message


async def test_mutual_tls_with_the_deployment_defaults_answers_iti55(pki: Pki) -> None:
    """[tls] defaults only (no per-partner keys): verified server, our certificate accepted."""
    async with PartnerClients(tls_defaults=pki.tls("partner-ca", "ours")) as clients:
        community = _community(pki.servers["gateway"])
        answer = await clients.for_community(community).discover(QUERY)
    assert answer.acknowledgement.type_code == "AA"
    assert len(answer.patients) == 1


async def test_a_per_partner_ca_bundle_replaces_the_deployment_one(pki: Pki) -> None:
    """The override applies to that partner only; unknown CA is said in words."""
    async with PartnerClients(tls_defaults=pki.tls("partner-ca", "ours")) as clients:
        message = await _refusal(
            clients, pki.servers["gateway"], tls_ca_bundle=pki.files["impostor-ca"]
        )
        assert UNKNOWN_CA in message
        assert "ITI-55" in message and pki.servers["gateway"] in message
        still = await clients.for_community(_community(pki.servers["gateway"])).discover(QUERY)
        assert len(still.patients) == 1


async def test_partner_certificate_signed_by_a_ca_we_do_not_hold(pki: Pki) -> None:
    async with PartnerClients(tls_defaults=pki.tls(None, "ours")) as clients:
        message = await _refusal(clients, pki.servers["gateway"])  # system store only
    assert UNKNOWN_CA in message


async def test_expired_partner_certificate(pki: Pki) -> None:
    async with PartnerClients(tls_defaults=pki.tls("partner-ca", "ours")) as clients:
        message = await _refusal(clients, pki.servers["expired"])
    assert EXPIRED in message


async def test_partner_certificate_for_another_host(pki: Pki) -> None:
    async with PartnerClients(tls_defaults=pki.tls("partner-ca", "ours")) as clients:
        message = await _refusal(clients, pki.servers["wrong-host"])
    assert HOST_MISMATCH in message


async def test_gateway_refuses_a_client_without_certificate(pki: Pki) -> None:
    async with PartnerClients(tls_defaults=pki.tls("partner-ca", None)) as clients:
        message = await _refusal(clients, pki.servers["gateway"])
    assert "requires a client certificate" in message


async def test_gateway_refuses_a_client_certificate_from_another_ca(pki: Pki) -> None:
    async with PartnerClients(tls_defaults=pki.tls("partner-ca", None)) as clients:
        message = await _refusal(
            clients,
            pki.servers["gateway"],
            tls_client_certificate=pki.files["stranger-cert"],
            tls_client_key=pki.files["stranger-key"],
        )
    assert "refused ours" in message


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_refusal_at_the_handshake_is_explained_in_both_tls_versions(
    pki: Pki, version: ssl.TLSVersion
) -> None:
    """TLS 1.2: the gateway ends the handshake; TLS 1.3: the connection closes before any answer.

    Either way the request never reaches the SOAP layer and the message names
    the client certificate.
    """
    context = ssl.create_default_context(cafile=str(pki.files["partner-ca"]))
    context.maximum_version = version
    async with httpx.AsyncClient(verify=context) as http:
        with pytest.raises(PartnerUnavailable, match="client certificate"):
            await SoapClient(http).call(
                spec_of(Transaction.ITI_55),
                f"{pki.servers['gateway']}/xcpd",
                render_patient_discovery_query(QUERY),
            )


async def test_gateway_refuses_tls_older_than_1_2(pki: Pki) -> None:
    """A TLS 1.1 client is refused by the gateway; the same client at TLS 1.2 gets in."""

    def client(version: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(pki.files["partner-ca"]))
        context.load_cert_chain(str(pki.files["ours-cert"]), str(pki.files["ours-key"]))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer TLS 1.1 at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = version
            context.maximum_version = version
        return context

    url = f"{pki.servers['gateway']}/"
    async with httpx.AsyncClient(verify=client(ssl.TLSVersion.TLSv1_2)) as http:
        assert (await http.get(url)).status_code < 500
    async with httpx.AsyncClient(verify=client(ssl.TLSVersion.TLSv1_1)) as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(url)
    reason = describe_tls_failure(caught.value) or ""
    if "NO_PROTOCOLS_AVAILABLE" in reason:
        pytest.skip("this OpenSSL will not send a TLS 1.1 hello")
    assert reason  # a TLS failure (protocol_version alert or the handshake cut), not a crash


# --- imagebridge serve ----------------------------------------------------------------


def _serve(tmp_path: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "imagebridge.toml"
    config.write_text(
        '[community]\nhome_community_id = "1.2.3.4"\n'
        f'[store]\ndatabase_url = "sqlite:///{tmp_path / "ib.db"}"\n'
        f"[server]\n{server}\n"
    )
    script = Path(sys.executable).parent / "imagebridge"
    return subprocess.run(
        [str(script), "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_plain_http_on_a_public_address(tmp_path: Path) -> None:
    done = _serve(tmp_path, 'host = "0.0.0.0"\nport = 18443')
    assert done.returncode == 2, done.stderr
    assert "refusing to serve plain HTTP on 0.0.0.0" in done.stderr
    assert "--insecure-http" in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout
    assert not (tmp_path / "ib.db").exists()  # stopped before the app was even built


def test_serve_refuses_tls_without_client_certificates(tmp_path: Path) -> None:
    cert = tmp_path / "gateway.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    done = _serve(tmp_path, f'tls_certificate = "{cert}"\ntls_private_key = "{cert}"')
    assert done.returncode == 2, done.stderr
    assert "server.tls_client_ca is required" in done.stderr


def test_config_with_tls_loads_for_the_gateway(tmp_path: Path) -> None:
    """The [server] keys the fixture's ServerConfig stands for are accepted by the loader."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "gw.pem")
    )
    config = config_from_mapping(
        {
            "community": {"home_community_id": "1.2.3.4"},
            "store": {"database_url": f"sqlite:///{tmp_path / 'ib.db'}"},
            "server": {
                "host": "0.0.0.0",
                "tls_certificate": "gw.pem",
                "tls_private_key": "gw.pem",
                "tls_client_ca": "ca.pem",
            },
        },
        {},
        tmp_path / "imagebridge.toml",
    )
    assert config.server.tls_client_ca == tmp_path / "ca.pem"
    options = uvicorn_tls_options(config.server)
    context = options["ssl_context_factory"](None, None)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    create_app(config)  # the gateway is built from it
