"""Fan-out figures: Cross Gateway Patient Discovery [ITI-55] to 100 communities under one deadline.

Usage: ``python bench/fanout.py [--deadline 5] [--answering 85] [--refusing 10] [--silent 5]
[--full-sequential] [--skip-breaker] [--results FILE]``

* **Communities** (issue: fan-out with one overall deadline), all on loopback,
  each with its own homeCommunityId:

  - ``--answering`` (85): real imagebridge XCPD responders
    (:class:`PatientDiscoveryResponder`, the one ``imagebridge serve`` runs),
    one per path (``/c<n>/xcpd``) of one uvicorn server in its own process, so
    client and server share no GIL or event loop.  Four in five know the
    patient (answer OK), one in five has an empty index (answers NF: no match);
  - ``--refusing`` (10): ports that were bound, then closed (connection refused);
  - ``--silent`` (5): TCP servers that accept, read the request and never reply.

  Per-community timeouts are longer than the deadline (read 2x, overall 3x),
  so the deadline alone bounds the fan-out.  One untimed ITI-55 call first
  warms the server; each timed phase uses a fresh ``httpx.AsyncClient``.

* **Fan-out**: :func:`fan_out` over the 100 communities (no concurrency
  cap).  Printed: the total time against the deadline (target: below 1.10x),
  counts and per-community times per status.
* **Sequential walk** (the baseline): the same calls one after the other with
  the same per-call timeouts.  The answering and refusing communities are
  measured; each silent one would cost its read timeout, so those are added as
  ``silent x read timeout`` (say ``--full-sequential`` to wait them out too).
* **Circuit breaker**: the fan-out is repeated with the same breaker
  (3 failures) until the dead partners are skipped, and that round is timed.

Nothing is asserted; the figures are printed.  With ``--results FILE`` the
headline figures are also appended to that JSON-lines file (``bench/record.py``,
read by ``bench/results.py``): the fan-out's total time over the deadline
(target below 1.10), the sequential walk over the fan-out, and the round with the
dead partners skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

import anyio
import anyio.abc
import httpx
import uvicorn
from record import write_figure

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.actors.initiating.client import PartnerClient
from imagebridge.actors.initiating.fanout import FanOutResult, OutcomeStatus, fan_out
from imagebridge.actors.initiating.pull import Demographics, discovery_query
from imagebridge.actors.responding.matching import MatchPolicy
from imagebridge.actors.responding.patient_discovery import PatientDiscoveryResponder
from imagebridge.dicom.synthetic import DEMO_ISSUER, study_headers
from imagebridge.model.directory import Community, CommunityEndpoint, PartnerLimits, Timeouts
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import DicomPatient
from imagebridge.model.xcpd import (
    PatientDiscoveryResponse,
    QueryResponseCode,
)
from imagebridge.store import Store
from imagebridge.transactions import Transaction
from imagebridge.transport.client import SoapClient
from imagebridge.transport.server import SoapEndpoint, soap_app

BASE_OID = "1.3.6.1.4.1.21367.13.70.5"  # community n is BASE_OID.n
US = HomeCommunityId("1.3.6.1.4.1.21367.13.70.499")
TARGET = DicomPatient("BENCH^FANOUT", "BENCH-FANOUT", DEMO_ISSUER, "19700101", "F")
NO_MATCH_EVERY = 5  # answering community n has an empty index when n % 5 == 0
TARGET_RATIO = 1.10
BENCH = "fanout"
S = OutcomeStatus


# --- server side (runs in its own process) ---------------------------------------------------


def hcid(n: int) -> HomeCommunityId:
    return HomeCommunityId(f"{BASE_OID}.{n}")


def serve(answering: int, tmp: Path) -> None:
    """Bind 127.0.0.1:0, print the port, serve *answering* XCPD responders until SIGTERM."""
    known = Store.open(f"sqlite:///{tmp / 'known.db'}")
    known.upsert_instances("2.25.77", study_headers(TARGET, modality="CR", seed=77))
    empty = Store.open(f"sqlite:///{tmp / 'empty.db'}")
    policy = MatchPolicy()
    endpoints = [
        SoapEndpoint(
            f"/c{n}/xcpd",
            {
                Transaction.ITI_55: PatientDiscoveryResponder(
                    empty if n % NO_MATCH_EVERY == 0 else known, hcid(n), policy
                ).handle
            },
        )
        for n in range(answering)
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        soap_app(endpoints), log_config=None, access_log=False, lifespan="off", backlog=2048
    )
    uvicorn.Server(config).run(sockets=[sock])


def start_server(answering: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--answering", str(answering), "--tmp", str(tmp)],
        stdout=subprocess.PIPE,
    )
    line = process.stdout.readline() if process.stdout is not None else b""
    if not line.strip().isdigit():
        process.kill()
        raise SystemExit(f"responder server did not start (printed {line!r})")
    base = f"http://127.0.0.1:{int(line)}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/c0/xcpd", timeout=1)  # 405: listening
            return process, base
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("responder server exited or never listened") from None
            time.sleep(0.05)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the partners that do not answer -------------------------------------------------------


def refused_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/xcpd"


async def never_answers(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            while True:
                await stream.receive()


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, never_answers)
        try:
            yield f"http://127.0.0.1:{port}/xcpd"
        finally:
            tasks.cancel_scope.cancel()


# --- client side ---------------------------------------------------------------------------


def community(n: int, url: str, timeouts: Timeouts) -> Community:
    return Community(
        hcid(n),
        f"bench partner {n}",
        endpoints=(CommunityEndpoint(Transaction.ITI_55, url),),
        limits=PartnerLimits(timeouts=timeouts),
    )


def discover(client: SoapClient) -> Callable[[Community], Awaitable[PatientDiscoveryResponse]]:
    """ITI-55 to one community with the initiating side's own client and query builder."""

    async def call(c: Community) -> PatientDiscoveryResponse:
        query = discovery_query(
            Demographics("Bench", "Fanout", TARGET.birth_date, TARGET.sex),
            US,
            c.home_community_id,
            message_root="2.25.9",
            creation_time="20260101120000",
        )
        return await PartnerClient(c, client).discover(query)

    return call


def no_match(response: PatientDiscoveryResponse) -> bool:
    return response.query_ack.query_response_code is QueryResponseCode.NF


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=200)
    )


def print_result(result: FanOutResult[PatientDiscoveryResponse], deadline: float) -> None:
    print(f"{'status':<12} {'count':>5} {'median s':>9} {'max s':>7}")
    for status, count in result.counts().items():
        if not count:
            continue
        times = [o.elapsed for o in result.with_status(status)]
        print(f"{status.value:<12} {count:>5} {statistics.median(times):>9.3f} {max(times):>7.3f}")
    print(
        f"total {result.elapsed:.3f} s = {result.elapsed / deadline:.3f}x the {deadline:g} s "
        f"deadline (target < {TARGET_RATIO:.2f}x)"
    )


async def sequential(
    communities: list[Community],
    silent: list[Community],
    full: bool,
    timeouts: Timeouts,
    fanned_out: float,
) -> float:
    """The baseline: one call after the other, same per-call timeouts."""
    walked = communities + (silent if full else [])
    async with http_client() as http:
        call = discover(SoapClient(http))
        started = time.perf_counter()
        statuses = []
        for c in walked:
            one = await fan_out([c], call, timeout=timeouts.overall, is_no_match=no_match)
            statuses.append(one.outcomes[0].status)
        measured = time.perf_counter() - started
    counts = {s.value: statuses.count(s) for s in OutcomeStatus if statuses.count(s)}
    print(
        f"\n== sequential walk, same per-call timeouts ==\nmeasured: {len(walked)} calls in "
        f"{measured:.3f} s ({counts})"
    )
    if full:
        print(f"sequential total (all measured): {measured:.3f} s")
        total = measured
    else:
        per_silent = min(timeouts.read, timeouts.overall)
        estimate = len(silent) * per_silent
        total = measured + estimate
        print(
            f"not walked: {len(silent)} silent communities x {per_silent:g} s read timeout = "
            f"{estimate:g} s (computed, not measured; --full-sequential waits them out)"
        )
        print(f"sequential total: {measured:.3f} + {estimate:g} = {total:.3f} s")
    print(f"sequential walk / fan-out total ({fanned_out:.3f} s): {total / fanned_out:.1f}x")
    return total


async def run(args: argparse.Namespace) -> None:
    deadline = args.deadline
    timeouts = Timeouts(connect=10.0, read=2 * deadline, overall=3 * deadline)
    print(
        f"== Fan-out: ITI-55 to {args.answering + args.refusing + args.silent} communities on "
        f"loopback ({args.answering} answering, {args.refusing} refusing, {args.silent} silent) =="
    )
    print(
        f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; httpx "
        f"{httpx.__version__}, uvicorn {uvicorn.__version__}; deadline {deadline:g} s; "
        f"per-community timeouts connect {timeouts.connect:g} s, read {timeouts.read:g} s, "
        f"overall {timeouts.overall:g} s; no concurrency cap"
    )
    with tempfile.TemporaryDirectory(prefix="ib-bench-fanout-") as tmp:
        process, base = start_server(args.answering, Path(tmp))
        try:
            async with AsyncExitStack() as stack:
                silent_urls = [
                    await stack.enter_async_context(silent_server()) for _ in range(args.silent)
                ]
                n = args.answering
                answering = [community(i, f"{base}/c{i}/xcpd", timeouts) for i in range(n)]
                refusing = [community(n + i, refused_url(), timeouts) for i in range(args.refusing)]
                silent = [
                    community(n + args.refusing + i, url, timeouts)
                    for i, url in enumerate(silent_urls)
                ]
                communities = answering + refusing + silent
                knowing = sum(1 for i in range(n) if i % NO_MATCH_EVERY)
                print(
                    f"responders: {n} imagebridge XCPD responders (one uvicorn process, one path "
                    f"each): {knowing} know the patient, {n - knowing} do not"
                )
                if answering:
                    async with http_client() as http:
                        warm = await discover(SoapClient(http))(answering[-1])
                        code = warm.query_ack.query_response_code.value
                        print(f"warm-up call (untimed): queryResponseCode {code}")
                breaker = CircuitBreaker(failure_threshold=3, cool_down=600)
                print("\n== fan-out (round 1) ==")
                async with http_client() as http:
                    call = discover(SoapClient(http))
                    result = await fan_out(
                        communities, call, timeout=deadline, is_no_match=no_match, breaker=breaker
                    )
                print_result(result, deadline)
                counts = ", ".join(f"{c} {s.value}" for s, c in result.counts().items() if c)
                write_figure(
                    args.results,
                    BENCH,
                    f"ITI-55 fan-out to {len(communities)} communities: total / deadline",
                    round(result.elapsed / deadline, 4),
                    "ratio",
                    target=f"< {TARGET_RATIO:.2f}",
                    detail=(
                        f"{result.elapsed:.3f} s for a {deadline:g} s deadline; {n} answering, "
                        f"{args.refusing} refusing, {args.silent} silent ({counts})"
                    ),
                )
                walked = await sequential(
                    answering + refusing, silent, args.full_sequential, timeouts, result.elapsed
                )
                write_figure(
                    args.results,
                    BENCH,
                    "sequential walk / fan-out, same per-call timeouts",
                    round(walked / result.elapsed, 2),
                    "ratio",
                    detail=f"walk {walked:.2f} s"
                    + ("" if args.full_sequential else " (silent ones computed, not waited)"),
                )
                if not args.skip_breaker:
                    skipped = await breaker_rounds(communities, n, breaker, deadline)
                    write_figure(
                        args.results,
                        BENCH,
                        "fan-out round with the dead partners skipped (circuit breaker)",
                        round(skipped, 3),
                        "s",
                        detail=f"breaker opens after {breaker.failure_threshold} failures",
                    )
        finally:
            stop_server(process)


async def breaker_rounds(
    communities: list[Community], answering: int, breaker: CircuitBreaker, deadline: float
) -> float:
    print(
        f"\n== circuit breaker ({breaker.failure_threshold} failures, cool-down "
        f"{breaker.cool_down:g} s) =="
    )
    async with http_client() as http:
        call = discover(SoapClient(http))
        for round_no in range(2, breaker.failure_threshold + 2):
            result = await fan_out(
                communities, call, timeout=deadline, is_no_match=no_match, breaker=breaker
            )
            counts = ", ".join(f"{c} {s.value}" for s, c in result.counts().items() if c)
            print(f"round {round_no}: {result.elapsed:.3f} s ({counts})")
            for o in result.outcomes[:answering]:
                if o.status not in (S.OK, S.NO_MATCH):
                    print(f"  answering {o.community.name}: {o.status.value}: {o.detail}")
    print(
        f"with the dead partners skipped, the fan-out took {result.elapsed:.3f} s = "
        f"{result.elapsed / deadline:.3f}x the deadline"
    )
    return result.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=5.0, help="overall deadline, seconds")
    parser.add_argument("--answering", type=int, default=85)
    parser.add_argument("--refusing", type=int, default=10)
    parser.add_argument("--silent", type=int, default=5)
    parser.add_argument(
        "--full-sequential", action="store_true", help="also wait out the silent ones"
    )
    parser.add_argument("--skip-breaker", action="store_true")
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    args = parser.parse_args()
    if args.serve:
        serve(args.answering, args.tmp)
        return
    if not args.deadline > 0 or min(args.answering, args.refusing, args.silent) < 0:
        parser.error("--deadline must be positive and the counts not negative")
    if args.answering + args.refusing + args.silent > 1000:
        parser.error("at most 1000 communities")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
