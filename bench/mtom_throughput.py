"""MTOM/XOP codec throughput and memory: writer, reader, and plain loops over the same bytes.

Usage: ``python bench/mtom_throughput.py [--size-mb 2048] [--steps 256,1024] [--chunk-kib 64]
[--results FILE]``

For every size (the ``--steps`` below ``--size-mb``, then ``--size-mb`` itself)
a fresh subprocess generates a synthetic RAD-69/RAD-75 style response on the
fly (a SOAP root part, then DICOM-sized attachments of 1-8 MB of random bytes,
CRLF framing, delimiters straddling 64 KiB chunk borders; nothing is
materialised) and times four pairs, each a plain loop and the codec doing the
same job on the same bytes, interleaved and best of ``--repeat``:

* ``read()`` / ``read/pipe``: a child process writes the package into a pipe;
  a plain ``os.read`` loop drains it, then :func:`read_mtom` (discarding sink)
  reads it the same way.  This is the "plain read() loop" comparison;
* ``source`` / ``read/discard``: the same, from an in-memory generator that
  only copies each chunk out of a buffer.  The worst case for the ratio: the
  reader's ``bytes.find`` (about 13 GB/s here) is compared with a memcpy;
* ``bodies`` / ``write``: the attachment bodies consumed alone, then through
  :func:`encode_mtom_async`;
* ``store`` / ``read/spool``: the chunks written to one spool file per
  attachment, then :func:`read_mtom` with the default spooling sink (disk
  runs last, after an untimed warm-up and an ``os.sync()`` before each run).

Peak RSS is the subprocess's ``ru_maxrss``, so it shows whether memory grows
with the package size (target < 100 MB).  Nothing is asserted.  With
``--results FILE`` the headline figures of the largest size (reader vs the
plain read() loop on a pipe, target 0.5; writer and spooling reader vs their
plain loops) and the highest peak RSS are also appended to that JSON-lines file
(``bench/record.py``, read by ``bench/results.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import resource
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
from record import write_figure

from imagebridge.wire.mime import PartHeaders
from imagebridge.wire.mtom import Attachment, encode_mtom_async, mtom_content_type, read_mtom
from imagebridge.wire.spool import SpooledBody, SpoolingSink

MB = 1_000_000
BOUNDARY = "uuid:34605f3a-f898-4d62-99a5-c0fc113a7e59+id=51889"
ROOT_ID = "root.message@imagebridge.example.org"
ROOT = b'<?xml version="1.0" encoding="UTF-8"?><env:Envelope/>' + b" " * 4000
PAYLOAD = random.Random(7).randbytes(9 * 1024 * 1024)
PIECE = 1024 * 1024  # segment size; also the largest --chunk-kib
BENCH = "mtom_throughput"
READER_TARGET = 0.5  # reader / plain read() loop
RSS_TARGET_MIB = 100


def plan(total: int, seed: int = 42) -> list[int]:
    """Attachment sizes (1-8 MB) adding up to *total* bytes."""
    rng = random.Random(seed)
    sizes: list[int] = []
    left = total
    while left > 0:
        size = min(left, rng.randint(1 * MB, 8 * MB))
        sizes.append(size)
        left -= size
    return sizes


def body_chunks(index: int, size: int, chunk: int) -> Iterator[bytes]:
    """One attachment body: fresh ``bytes`` per chunk, cut from the random payload."""
    view = memoryview(PAYLOAD)
    offset = index * 4099
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        start = (offset + sent) % (len(PAYLOAD) - PIECE)
        yield bytes(view[start : start + n])
        sent += n


def attachments(sizes: list[int], chunk: int) -> Iterator[Attachment]:
    for i, size in enumerate(sizes):
        yield Attachment(
            f"{i}.part@imagebridge.example.org", "application/dicom", body_chunks(i, size, chunk)
        )


def segments(sizes: list[int]) -> Iterator[bytes | memoryview]:
    """The MTOM package as segments; framing built like a partner's (CRLF, WCF-style ids)."""
    dash = b"--" + BOUNDARY.encode()
    yield (
        dash
        + b'\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"'
        + b"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <"
        + ROOT_ID.encode()
        + b">\r\n\r\n"
        + ROOT
    )
    for i, size in enumerate(sizes):
        yield b"\r\n%s\r\nContent-Type: application/dicom\r\n%s<%d.part@%s>\r\n\r\n" % (
            dash,
            b"Content-Transfer-Encoding: binary\r\nContent-ID: ",
            i,
            b"imagebridge.example.org",
        )
        view = memoryview(PAYLOAD)
        sent = 0
        while sent < size:
            n = min(PIECE, size - sent)
            start = (i * 4099 + sent) % (len(PAYLOAD) - PIECE)
            yield view[start : start + n]
            sent += n
    yield b"\r\n" + dash + b"--\r\n"


async def stream(sizes: list[int], chunk: int) -> AsyncIterator[bytes]:
    """The package as fixed-size fresh ``bytes`` chunks; delimiters straddle chunk borders."""
    pieces: list[memoryview] = []
    have = 0
    for segment in segments(sizes):
        view = memoryview(segment)
        pos = 0
        while pos < len(view):
            if not have and len(view) - pos >= chunk:
                yield bytes(view[pos : pos + chunk])
                pos += chunk
                continue
            take = min(chunk - have, len(view) - pos)
            pieces.append(view[pos : pos + take])
            have += take
            pos += take
            if have == chunk:
                yield b"".join(pieces)
                pieces, have = [], 0
    if have:
        yield b"".join(pieces)


class Stopwatch:
    """Wall-clock timer a run may restart once its set-up is done."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def restart(self) -> None:
        self.start = time.perf_counter()


@contextlib.contextmanager
def pipe_source(size_mb: int, clock: Stopwatch) -> Iterator[int]:
    """A pipe fed by a child process that writes the package (a real read() source).

    The clock restarts when the first bytes are readable, so the child's
    interpreter start-up is not counted.
    """
    cmd = [sys.executable, __file__, "--emit", "--size-mb", str(size_mb)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert child.stdout is not None
    fd = child.stdout.fileno()
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIECE)
    select.select([fd], [], [])
    clock.restart()
    try:
        yield fd
    finally:
        child.stdout.close()
        child.wait()


async def pipe_chunks(fd: int, chunk: int) -> AsyncIterator[bytes]:
    while data := os.read(fd, chunk):
        yield data


def content_type() -> str:
    return mtom_content_type(BOUNDARY, ROOT_ID)


def stream_length(sizes: list[int]) -> int:
    """Bytes in the synthetic package (what the plain loops count)."""
    return sum(len(segment) for segment in segments(sizes))


class DiscardSink:
    """A part sink that counts and drops the bodies."""

    def __init__(self) -> None:
        self._size = 0

    def start_part(self, headers: PartHeaders) -> None:
        self._size = 0

    def part_data(self, data: memoryview) -> None:
        self._size += len(data)

    def end_part(self) -> SpooledBody:
        return SpooledBody(self._size, data=b"")

    def abort(self) -> None:
        self._size = 0


async def run_source(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    n = 0
    async for c in stream(sizes, chunk):
        n += len(c)
    return n


async def run_read_discard(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    package = await read_mtom(content_type(), stream(sizes, chunk), sink=DiscardSink())
    return stream_length(sizes) if package.parts else 0


async def run_read_loop(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    """The plain read() loop: os.read from the pipe until end of file."""
    n = 0
    with pipe_source(sum(sizes) // MB, clock) as fd:
        while data := os.read(fd, chunk):
            n += len(data)
    return n


async def run_read_pipe(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    with pipe_source(sum(sizes) // MB, clock) as fd:
        package = await read_mtom(content_type(), pipe_chunks(fd, chunk), sink=DiscardSink())
    return stream_length(sizes) if package.parts else 0


async def run_store(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    """Plain loop: the same chunks into one spool file per attachment size."""
    n = 0
    files: list[str] = []
    it = iter(sizes)
    limit = next(it)
    fd, path = tempfile.mkstemp(dir=spool)
    files.append(path)
    out = os.fdopen(fd, "wb")
    written = 0
    async for c in stream(sizes, chunk):
        out.write(c)
        n += len(c)
        written += len(c)
        if written >= limit:
            out.close()
            limit = next(it, 1 << 62)
            fd, path = tempfile.mkstemp(dir=spool)
            files.append(path)
            out = os.fdopen(fd, "wb")
            written = 0
    out.close()
    for path in files:
        os.unlink(path)
    return n


async def run_read_spool(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    sink = SpoolingSink(directory=spool)
    with await read_mtom(content_type(), stream(sizes, chunk), sink=sink) as package:
        return stream_length(sizes) if package.parts else 0


async def run_bodies(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    n = 0
    for i, size in enumerate(sizes):
        for c in body_chunks(i, size, chunk):
            n += len(c)
    return n


async def run_write(sizes: list[int], chunk: int, spool: Path, clock: Stopwatch) -> int:
    n = 0
    async for c in encode_mtom_async(
        ROOT, attachments(sizes, chunk), boundary=BOUNDARY, root_content_id=ROOT_ID
    ):
        n += len(c)
    return n


Runner = Callable[[list[int], int, Path, Stopwatch], Awaitable[int]]
RUNS: dict[str, Runner] = {
    "read()": run_read_loop,
    "read/pipe": run_read_pipe,
    "source": run_source,
    "read/discard": run_read_discard,
    "store": run_store,
    "read/spool": run_read_spool,
    "bodies": run_bodies,
    "write": run_write,
}


def measure(size_mb: int, chunk_kib: int, repeat: int, spool: Path) -> dict[str, float]:
    """Every pair (plain loop, codec), interleaved *repeat* times; disk pairs last."""
    sizes = plan(size_mb * MB)
    chunk = chunk_kib * 1024
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, float] = {"size_mb": size_mb, "parts": len(sizes), "rss_start_mib": rss_start}
    best = dict.fromkeys(RUNS, float("inf"))
    for base, codec in PAIRS:
        disk = base == "store"
        if disk:  # untimed warm-up: first touch of fresh page-cache pages is slow on a VM
            anyio.run(run_store, sizes, chunk, spool, Stopwatch())
        for _ in range(repeat):
            for name in (base, codec):
                if disk:
                    os.sync()  # start each disk run without another run's dirty pages
                clock = Stopwatch()
                moved = anyio.run(RUNS[name], sizes, chunk, spool, clock)
                best[name] = min(best[name], time.perf_counter() - clock.start)
                result[name] = moved
    for name, seconds in best.items():
        result[name] = result[name] / seconds / MB
    result["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


LABELS = {
    "read()": "plain read() loop on a pipe",
    "read/pipe": "reader on the same pipe, discarding sink",
    "source": "in-memory chunk source, consumed only",
    "read/discard": "reader on it, discarding sink",
    "store": "plain loop storing the chunks to files",
    "read/spool": "reader on it, spooling sink (disk)",
    "bodies": "attachment bodies, consumed only",
    "write": "writer over the same attachments",
}
PAIRS = (
    ("read()", "read/pipe"),
    ("source", "read/discard"),
    ("bodies", "write"),
    ("store", "read/spool"),
)


def report(rows: list[dict[str, float]]) -> str:
    """Per-size figures, then a summary of ratios and peak RSS across sizes."""
    lines: list[str] = []
    for r in rows:
        lines.append(f"\n{r['size_mb']:.0f} MB package, {r['parts']:.0f} attachments")
        for base, codec in PAIRS:
            lines.append(f"  {LABELS[base]:<44} {r[base]:>9.0f} MB/s")
            ratio = r[codec] / r[base]
            lines.append(f"  {LABELS[codec]:<44} {r[codec]:>9.0f} MB/s   ratio {ratio:.2f}")
        lines.append(
            f"  peak RSS {r['rss_peak_mib']:.1f} MiB (after start-up {r['rss_start_mib']:.1f})"
        )
    names = ("pipe", "memory", "write", "spool")  # the codecs of PAIRS, in order
    head = f"{'size MB':>8} " + " ".join(f"{n:>7}" for n in names) + f" {'peak RSS':>9}"
    lines += ["", "ratios codec / plain loop (target reader >= 0.5), peak RSS in MiB", head]
    for r in rows:
        ratios = " ".join(f"{r[codec] / r[base]:>7.2f}" for base, codec in PAIRS)
        lines.append(f"{r['size_mb']:>8.0f} {ratios} {r['rss_peak_mib']:>9.1f}")
    lines.append("MB = 10^6 bytes; each figure is the best of --repeat runs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="largest package size (MB)")
    parser.add_argument("--steps", default="256,1024", help="smaller sizes to run too (MB)")
    parser.add_argument("--chunk-kib", type=int, default=64, help="reader input chunk size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--spool-dir", default=None, help="where spool files go")
    parser.add_argument("--results", type=Path, help="append headline figures (JSON lines)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emit:
        with open(sys.stdout.fileno(), "wb", buffering=0, closefd=False) as out:
            for segment in segments(plan(args.size_mb * MB)):
                out.write(segment)
        return
    if not 0 < args.chunk_kib * 1024 <= PIECE:
        parser.error(f"--chunk-kib must be 1..{PIECE // 1024}")
    spool = Path(args.spool_dir or tempfile.gettempdir())
    if args.one:
        print(json.dumps(measure(args.size_mb, args.chunk_kib, args.repeat, spool)))
        return
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    sizes = sorted({s for s in steps if s < args.size_mb} | {args.size_mb})
    print(f"MTOM/XOP codec bench: sizes {sizes} MB, {args.chunk_kib} KiB chunks, spool in {spool}")
    rows = []
    for size in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--size-mb",
            str(size),
            "--chunk-kib",
            str(args.chunk_kib),
        ]
        cmd += ["--repeat", str(args.repeat), "--spool-dir", str(spool)]
        result = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(result.strip().splitlines()[-1]))
        print(f"  {size} MB done", flush=True)
    print(report(rows))
    record(args.results, rows)


def record(results: Path | None, rows: list[dict[str, float]]) -> None:
    """The largest size's ratios and the highest peak RSS, as headline figures."""
    if not rows:
        return
    last = rows[-1]
    size = f"{last['size_mb']:.0f} MB package, {last['parts']:.0f} attachments"
    figures = (
        ("read()", "read/pipe", "MTOM reader / plain read() loop on a pipe", READER_TARGET),
        ("bodies", "write", "MTOM writer / attachment bodies consumed alone", None),
        ("store", "read/spool", "spooling reader / plain store-to-disk loop", None),
    )
    for base, codec, name, target in figures:
        write_figure(
            results,
            BENCH,
            name,
            round(last[codec] / last[base], 3),
            "ratio",
            target=None if target is None else f">= {target}",
            detail=f"{size}; {last[codec]:,.0f} vs {last[base]:,.0f} MB/s",
        )
    peak = max(r["rss_peak_mib"] for r in rows)
    sizes = ", ".join(f"{r['size_mb']:.0f}" for r in rows)
    write_figure(
        results,
        BENCH,
        "peak RSS of the codec process",
        round(peak, 1),
        "MiB",
        target=f"< {RSS_TARGET_MIB}",
        detail=f"highest over the {sizes} MB packages",
    )


if __name__ == "__main__":
    main()
