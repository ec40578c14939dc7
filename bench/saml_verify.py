"""XUA [ITI-40] verification cost: µs per assertion, and ITI-38 req/s with verification on vs off.

Usage: ``python bench/saml_verify.py [--verify-samples 300] [--requests 1500]
[--concurrency 8] [--rounds 5] [--results FILE]``

* **µs per verification**: ``--verify-samples`` distinct signed ``wsse:Security``
  headers (our issuer, RSA-2048, RSA-SHA256, holder-of-key) are verified
  in-process by :class:`AssertionVerifier` (trust cache warm), twice: every
  header with a new assertion (full check: assertion signature, chain, parse,
  attributes, holder-of-key proof), and headers that resend an assertion the
  verifier has seen (as our issuer does for ``reuse_for`` seconds: only the
  per-message Timestamp, holder-of-key proof, windows and replay are checked;
  the verifier caches an assertion the second time it sees it, so the warm-up
  header and the first sample verify it in full).  Each header is parsed from
  bytes just before it is verified, as the server does.  For new assertions the
  µs per request are also split by step: the ID walk (``check_envelope_ids``),
  ``parse_assertion``, the assertion signature (``verify_enveloped``), the
  holder-of-key proof (``verify_proof``) and the rest (size check, cache key,
  Timestamp, attributes, replay).
* **ITI-38 req/s, verification on vs off, same run**: two servers, each in its
  own process (uvicorn on a free loopback port), built from the same folder
  archive (one patient, 5 small studies) by :func:`imagebridge.app.open_gateway`:
  ``off`` serves the endpoints as they are; ``on`` adds the
  :class:`XuaGuard` verifier hook and the access policy.  Both get the very
  same request bodies: ``--requests`` FindDocuments envelopes, each with its
  own freshly signed header (the replay cache refuses a header seen twice),
  made before the clock starts.  ``--concurrency`` tasks share one
  ``httpx.AsyncClient``.  An answer counts as an error unless HTTP 200 with 5
  ExtrinsicObjects.  ``on`` runs twice: with the issuer's default assertion
  reuse, and with a new assertion in every request (the worst case).
  Target: ratio on/off >= 0.7.  The ratios are printed for the whole run and,
  as min / median / max, per round (the servers take turns in every round).

Nothing is asserted; the figures are printed, with the load average before and
after (the figures mean little on a loaded machine).  With ``--results FILE``
the headline figures are also appended to that JSON-lines file
(``bench/record.py``, read by ``bench/results.py``): both on/off ratios (the
new-assertion one against the 0.7 target) and the mean µs of one verification
of a new assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import trustme
import uvicorn
from cryptography import x509
from record import write_figure
from starlette.applications import Starlette

from imagebridge.actors.responding.access import XuaGuard, enforce_access
from imagebridge.app import open_gateway
from imagebridge.config import Config, config_from_mapping
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.xds_query import AdhocQueryRequest, FindDocumentsQuery
from imagebridge.security import saml_verifier
from imagebridge.security.policy import AccessPolicy
from imagebridge.security.saml_issuer import (
    AssertionIssuer,
    IssuerSettings,
    Principal,
    SigningKey,
    purpose_code,
    role_code,
)
from imagebridge.security.saml_verifier import AssertionVerifier, VerifierSettings
from imagebridge.security.xml_signature import TrustStore
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.faults import SOAP_CONTENT_TYPE
from imagebridge.transport.server import soap_routes
from imagebridge.wire import ns
from imagebridge.wire.soap import render_envelope
from imagebridge.wire.wsa import request_headers
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import render_adhoc_query_request
from imagebridge.wire.xml import Element, parse_xml, serialize

BENCH = "saml_verify"
RATIO_TARGET = 0.7  # ITI-38 with XUA on (a new assertion each request) / off, issue 7
STEPS = ("check_envelope_ids", "parse_assertion", "verify_enveloped", "verify_proof")
"""The functions of :mod:`imagebridge.security.saml_verifier` timed one by one."""
HOME = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.201")
US = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.202")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
ALICE = DEMO_PATIENTS[0]
STUDIES = 5
RSA = trustme.KeyType.RSA
PRINCIPAL = Principal(
    subject_id="Bench User",
    organization="Bench Org",
    organization_id=US.urn,
    role=role_code("112247003", "Medical doctor"),
    purpose_of_use=purpose_code("TREATMENT"),
)


def _config(work: Path) -> Config:
    archive = work / "archive"
    if not archive.exists():
        for i in range(STUDIES):
            make_study(ALICE, archive / f"s{i}", modality="CT", instances=2, seed=i + 1)
    raw = {
        "community": {"home_community_id": HOME.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{work / 'ib.db'}"},
        "repositories": [{"unique_id": REPO, "source": "folder", "path": str(archive)}],
    }
    return config_from_mapping(raw, {})


# --- server process -----------------------------------------------------------------------


def serve(kind: str, work: Path, port: int) -> None:
    config = _config(work)
    ca = x509.load_pem_x509_certificate((work / "ca.pem").read_bytes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_gateway(config) as gateway:
            endpoints = gateway.endpoints
            guard = None
            if kind == "on":
                endpoints = enforce_access(endpoints, AccessPolicy(), HOME)
                guard = XuaGuard(AssertionVerifier(TrustStore([ca]), VerifierSettings()))
            app.router.routes.extend(soap_routes(endpoints, verifier=guard))
            yield

    uvicorn.run(
        Starlette(lifespan=lifespan),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


# --- client -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _envelopes(issuer: AssertionIssuer, url: str, count: int) -> list[bytes]:
    spec = spec_of(Transaction.ITI_38)
    payload = render_adhoc_query_request(
        AdhocQueryRequest(
            query=FindDocumentsQuery(
                patient_id=PatientId(ALICE.id, "2.25.1"), status=(v.STATUS_APPROVED,)
            ),
            home_community_id=HOME,
        )
    )
    out = []
    for _ in range(count):
        block = issuer.security_header(PRINCIPAL, url)
        headers = request_headers(spec, f"urn:uuid:{uuid.uuid4()}", url)
        out.append(serialize(render_envelope(headers, payload, (block,))))
    return out


def _security_of(envelope: bytes) -> Element:
    found = parse_xml(envelope).find(f"{{{ns.SOAP12}}}Header/{{{ns.WSSE}}}Security")
    assert found is not None
    return found


@contextlib.contextmanager
def _timed_steps(spent: dict[str, float]) -> Iterator[None]:
    """Time :data:`STEPS` (seconds summed into *spent*) while the block runs."""
    real = {name: getattr(saml_verifier, name) for name in STEPS}

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return run

    try:
        for name, function in real.items():
            setattr(saml_verifier, name, timed(name, function))
        yield
    finally:
        for name, function in real.items():
            setattr(saml_verifier, name, function)


def _verification(
    trust: TrustStore, issuer: AssertionIssuer, samples: int, label: str, *, steps: bool
) -> float:
    """Print the µs of one verification (and, with *steps*, per step); the mean µs."""
    verifier = AssertionVerifier(trust, VerifierSettings())
    envelopes = _envelopes(issuer, "http://127.0.0.1/xca/query", samples + 1)
    verifier.verify([_security_of(envelopes.pop())])  # warm the trust cache
    gc.collect()  # not a full collection of what signing the envelopes left, inside the samples
    times = []
    spent: dict[str, float] = {}
    with _timed_steps(spent):
        for envelope in envelopes:
            block = _security_of(envelope)
            t = time.perf_counter()
            verifier.verify([block])
            times.append((time.perf_counter() - t) * 1e6)
    p95 = sorted(times)[int(len(times) * 0.95)]
    print(
        f"XUA verification, {label:>21} ({len(times)}): "
        f"mean {statistics.mean(times):5.0f} µs, "
        f"median {statistics.median(times):5.0f} µs, p95 {p95:5.0f} µs"
    )
    if steps:
        per_step = {name: seconds * 1e6 / len(times) for name, seconds in spent.items()}
        rest = statistics.mean(times) - sum(per_step.values())
        print(
            "  µs per request: "
            + ", ".join(f"{name} {per_step.get(name, 0.0):.0f}" for name in STEPS)
            + f", rest {rest:.0f}"
        )
    return statistics.mean(times)


async def _wait(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start")


async def _run(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    queue = list(reversed(bodies))
    errors = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:

        async def worker() -> None:
            nonlocal errors
            while queue:
                body = queue.pop()
                r = await http.post(url, content=body, headers={"content-type": SOAP_CONTENT_TYPE})
                if r.status_code != 200 or r.content.count(b"ExtrinsicObject ") != STUDIES:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify-samples", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", choices=["on", "off"])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.work, args.port)
        return

    ca = trustme.CA(key_type=RSA)
    leaf = ca.issue_cert("bench.example.org", key_type=RSA)
    key = SigningKey.from_pem(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())
    reusing = AssertionIssuer(key, IssuerSettings(home_community_id=US))
    fresh = AssertionIssuer(key, IssuerSettings(home_community_id=US, reuse_for=0))

    print(f"load average before: {_loadavg()}")
    # 1. µs per verification, in process.
    trust = TrustStore([x509.load_pem_x509_certificate(ca.cert_pem.bytes())])
    verify_us = [
        _verification(trust, issuer, args.verify_samples, label, steps=issuer is fresh)
        for label, issuer in (("new assertion each", fresh), ("assertion seen before", reusing))
    ]

    # 2. ITI-38 req/s, verification off vs on, same run, rounds interleaved.
    runs = (("off", reusing), ("on", reusing), ("on", fresh))
    labels = ("off", "on, assertion reused", "on, new assertion each request")
    per_round = max(1, args.requests // args.rounds)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        urls: list[str] = []
        bodies: list[list[bytes]] = []
        for index, (kind, issuer) in enumerate(runs):
            work = Path(tmp) / str(index)
            work.mkdir()
            (work / "ca.pem").write_bytes(ca.cert_pem.bytes())
            port = _free_port()
            command = [sys.executable, __file__, "--serve", kind]
            command += ["--work", str(work), "--port", str(port)]
            proc = subprocess.Popen(command)
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
            urls.append(f"http://127.0.0.1:{port}/xca/query")
            bodies.append(_envelopes(issuer, urls[-1], per_round * args.rounds + args.warmup))
        elapsed = [0.0] * len(runs)
        errors = [0] * len(runs)
        round_rates: list[list[float]] = [[] for _ in runs]
        for index, url in enumerate(urls):
            asyncio.run(_wait(url.rsplit("/", 2)[0] + "/"))
            asyncio.run(_run(url, bodies[index][: args.warmup], args.concurrency))
        for r in range(args.rounds):
            for index, url in enumerate(urls):
                start = args.warmup + r * per_round
                chunk = bodies[index][start : start + per_round]
                spent, failed = asyncio.run(_run(url, chunk, args.concurrency))
                elapsed[index] += spent
                errors[index] += failed
                round_rates[index].append(len(chunk) / spent)
        rates = [per_round * args.rounds / e for e in elapsed]
        for label, rate, failed in zip(labels, rates, errors, strict=True):
            print(
                f"ITI-38 verification {label:>31}: {rate:7.1f} req/s "
                f"({per_round * args.rounds} requests, {args.concurrency} clients, "
                f"{failed} errors)"
            )
        print(
            f"ratio on/off, assertion reused: {rates[1] / rates[0]:.2f}; "
            f"new assertion each request: {rates[2] / rates[0]:.2f} (target >= 0.70)"
        )
        for index, label in ((1, "assertion reused"), (2, "new assertion each request")):
            ratios = sorted(
                on / off for on, off in zip(round_rates[index], round_rates[0], strict=True)
            )
            print(
                f"  per round, {label}: min {ratios[0]:.2f}, "
                f"median {statistics.median(ratios):.2f}, max {ratios[-1]:.2f}"
            )
    load = _loadavg()
    requests = f"{per_round * args.rounds} ITI-38 requests, {args.concurrency} clients"
    for index, name, target in (
        (2, "ITI-38 rate, XUA on (new assertion each request) / off", f">= {RATIO_TARGET}"),
        (1, "ITI-38 rate, XUA on (assertion reused) / off", None),
    ):
        write_figure(
            args.results,
            BENCH,
            name,
            round(rates[index] / rates[0], 3),
            "ratio",
            target=target,
            detail=f"{rates[index]:.0f} vs {rates[0]:.0f} req/s; {requests}; load {load}",
        )
    write_figure(
        args.results,
        BENCH,
        "one verification of a new assertion",
        round(verify_us[0]),
        "µs",
        detail=f"mean of {args.verify_samples}, in process",
    )
    print(f"load average after: {load}")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
