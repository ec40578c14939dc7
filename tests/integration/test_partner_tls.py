"""Partners over real TLS: the initiating side verifies every peer and presents its own
certificate when the directory says so.

Certificates are made at run time by the test (trustme CAs); the partner is a
real imagebridge responder under uvicorn with TLS on loopback.  A partner
whose certificate does not chain to the CA we hold for it, or names another
host, is reported unreachable with the TLS reason, while a correctly trusted
partner in the same fan-out answers.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.initiating.fanout import OutcomeStatus
from imagebridge.actors.initiating.pull import PullSettings
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.directory.static import communities_from_config
from imagebridge.model.directory import DirectorySnapshot
from imagebridge.security.tls import HOST_MISMATCH, UNKNOWN_CA
from tests.http_server import running_server
from tests.integration.test_pull_workflow import ALICE_DEMOGRAPHICS, US, A, _responder

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Pki:
    partner_ca: Path
    impostor_ca: Path
    ours_cert: Path
    ours_key: Path
    servers: dict[str, str]
    """name -> base URL: "good" (127.0.0.1 cert), "wrong-host" (cert for another name),
    "mutual" (requires a client certificate from our CA)."""


@pytest.fixture
async def pki(tmp_path: Path) -> AsyncIterator[Pki]:
    partner_ca, impostor_ca, our_ca = trustme.CA(), trustme.CA(), trustme.CA()
    files: dict[str, Path] = {}

    def write(name: str, blob: trustme.Blob) -> Path:
        path = files[name] = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        return path

    good = partner_ca.issue_cert("127.0.0.1")
    other = partner_ca.issue_cert("partner.example.org")
    ours = our_ca.issue_cert("initiator.example.org")
    write("partner-ca", partner_ca.cert_pem)
    write("impostor-ca", impostor_ca.cert_pem)
    write("our-ca", our_ca.cert_pem)
    write("good-cert", good.private_key_and_cert_chain_pem)
    write("other-cert", other.private_key_and_cert_chain_pem)
    write("ours-cert", ours.cert_chain_pems[0])
    write("ours-key", ours.private_key_pem)
    app, _ = _responder(tmp_path, A, A + ".1", [11])
    async with AsyncExitStack() as stack:
        servers = {
            "good": await stack.enter_async_context(
                running_server(app, ssl_certfile=str(files["good-cert"]))
            ),
            "wrong-host": await stack.enter_async_context(
                running_server(app, ssl_certfile=str(files["other-cert"]))
            ),
            "mutual": await stack.enter_async_context(
                running_server(
                    app,
                    ssl_certfile=str(files["good-cert"]),
                    ssl_ca_certs=str(files["our-ca"]),
                    ssl_cert_reqs=ssl.CERT_REQUIRED,
                )
            ),
        }
        yield Pki(
            files["partner-ca"],
            files["impostor-ca"],
            files["ours-cert"],
            files["ours-key"],
            servers,
        )


def _entry(hcid: str, base: str, **tls: object) -> dict[str, object]:
    return {
        "home_community_id": hcid,
        "name": hcid.rsplit(".", 1)[-1],
        "xcpd_url": f"{base}/xcpd",
        "timeout_connect": 3,
        "timeout_read": 5,
        "timeout_overall": 10,
        **{k: str(v) for k, v in tls.items()},
    }


async def _discover(directory: DirectorySnapshot) -> dict[str, tuple[OutcomeStatus, str]]:
    async with PartnerClients() as clients:
        flow = PullWorkflow(clients, directory, PullSettings(home=US, deadline=15))
        found = await flow.discover(ALICE_DEMOGRAPHICS, flow.communities())
    return {o.community.name: (o.status, o.detail) for o in found.outcomes.outcomes}


async def test_only_partners_whose_certificate_we_trust_are_asked(pki: Pki) -> None:
    s = pki.servers
    directory = communities_from_config(
        {
            "communities": [
                _entry("1.2.3.1", s["good"], tls_ca_bundle=pki.partner_ca),
                _entry("1.2.3.2", s["good"], tls_ca_bundle=pki.impostor_ca),
                _entry("1.2.3.3", s["good"]),  # system trust store: a private CA is not in it
                _entry("1.2.3.4", s["wrong-host"], tls_ca_bundle=pki.partner_ca),
            ]
        }
    )
    got = await _discover(directory)
    assert got["1"][0] is OutcomeStatus.OK
    for name in ("2", "3"):
        status, detail = got[name]
        assert status is OutcomeStatus.UNREACHABLE
        assert UNKNOWN_CA in detail  # "partner certificate not trusted (unknown CA): ..."
    status, detail = got["4"]
    assert status is OutcomeStatus.UNREACHABLE
    assert HOST_MISMATCH in detail


async def test_mutual_tls_presents_our_certificate_when_configured(pki: Pki) -> None:
    base = pki.servers["mutual"]
    ours = {"tls_client_certificate": pki.ours_cert, "tls_client_key": pki.ours_key}
    directory = communities_from_config(
        {
            "communities": [
                _entry("1.2.3.5", base, tls_ca_bundle=pki.partner_ca, **ours),
                _entry("1.2.3.6", base, tls_ca_bundle=pki.partner_ca),
            ]
        }
    )
    got = await _discover(directory)
    assert got["5"][0] is OutcomeStatus.OK
    assert got["6"][0] in (OutcomeStatus.UNREACHABLE, OutcomeStatus.ERROR)
    assert "client certificate" in got["6"][1]
