"""Writes ``bench/results.md``: every bench's headline figures of one ``make bench`` run.

Usage: ``python bench/results.py [--input bench/.results.jsonl] [--output bench/results.md]``

Each bench run with ``--results FILE`` appends one JSON line per headline
figure (``bench/record.py``: bench, figure, value, unit, target, met, detail,
time).  This script reads those lines and writes a Markdown page: the date and
the machine (cores, CPU model, RAM, kernel, Debian release, Python, and the
versions of nginx, Orthanc, PostgreSQL, curl and wrk where installed; the code's
commit), then one table per bench (figure, value, unit, target, met, detail),
in the order ``make bench`` runs them, a bench that wrote nothing listed as "not
run", and a summary of the targets met and missed.  Figures are copied as the
benches wrote them; nothing is measured here.  A missing or empty input file
gives a page whose every bench is "not run".
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The benches of `make bench`, in its order; the title is the first line of the script's
# docstring, this text only when the script is missing.
BENCHES: dict[str, str] = {
    "mtom_throughput": "MTOM/XOP codec: reader and writer vs plain loops over the same bytes",
    "responder": "ITI-38 responder throughput (one worker) and on-demand KOS build time",
    "rad75_throughput": "RAD-75 retrieve of a study vs curl from nginx, a Starlette "
    "streaming baseline and Orthanc WADO-RS",
    "fanout": "ITI-55 fan-out to 100 communities with dead and silent ones vs the deadline",
    "import_throughput": "End-to-end import of a study vs direct Orthanc-to-Orthanc",
    "load": "Responding Gateway under mixed load",
    "worker_scaling": "ITI-38 throughput of `imagebridge serve` on 1 and 2 workers",
    "initiator_rate": "Initiator: HTTP client raw download rate vs `imagebridge fetch` end to end",
    "saml_verify": "XUA assertion verification cost and ITI-38 rate with it on vs off",
}


@dataclass(frozen=True)
class Figure:
    bench: str
    figure: str
    value: float
    unit: str
    target: str | None
    met: bool | None
    detail: str
    at: str


def read_figures(path: Path) -> tuple[list[Figure], list[str]]:
    """The figures of *path* and a note per line that could not be read."""
    figures: list[Figure] = []
    problems: list[str] = []
    if not path.exists():
        return figures, problems
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw: dict[str, Any] = json.loads(line)
            figures.append(
                Figure(
                    bench=str(raw["bench"]),
                    figure=str(raw["figure"]),
                    value=float(raw["value"]),
                    unit=str(raw.get("unit") or ""),
                    target=raw.get("target") or None,
                    met=raw.get("met"),
                    detail=str(raw.get("detail") or ""),
                    at=str(raw.get("at") or ""),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"line {number}: {type(exc).__name__}: {exc}")
    return figures, problems


# --- machine facts ------------------------------------------------------------------------------


def _run(args: list[str]) -> str:
    """First line of a command's output (stdout, else stderr); empty when it cannot run."""
    if shutil.which(args[0]) is None and not Path(args[0]).exists():
        return ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
        text = (out.stdout.strip() or out.stderr.strip()).splitlines()
        return text[0].strip() if text else ""
    return ""


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ram() -> str:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def postgres_version() -> str:
    candidates = [shutil.which("postgres") or ""]
    candidates += sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    for binary in filter(None, candidates):
        found = _run([binary, "--version"])
        if found:
            return found.replace("postgres (PostgreSQL) ", "")
    return ""


def tool_versions() -> dict[str, str]:
    nginx = _run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"])
    curl = _run(["curl", "--version"])
    wrk = _run(["wrk", "-v"])
    return {
        "nginx": nginx.rpartition("/")[2],
        "Orthanc": " ".join(
            _run([shutil.which("Orthanc") or "/usr/sbin/Orthanc", "--version"]).split()[-1:]
        ),
        "PostgreSQL": postgres_version(),
        "curl": " ".join(curl.split()[1:2]),
        "wrk": wrk.split()[1] if len(wrk.split()) > 1 else "",
    }


def code_version() -> str:
    head = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if not head:
        return "unknown (not a git checkout)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "bench"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
        if dirty:
            return f"{head} + uncommitted changes in src/ or bench/"
    return head


def machine_facts() -> list[tuple[str, str]]:
    facts = [
        ("cores", str(os.cpu_count() or "unknown")),
        ("CPU model", cpu_model()),
        ("RAM", ram()),
        ("kernel", platform.release()),
        ("system", os_release()),
        ("Python", sys.version.split()[0]),
    ]
    facts += [(name, version or "not installed") for name, version in tool_versions().items()]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    facts += [("code", code_version()), ("load average when written", load)]
    return facts


# --- the page -----------------------------------------------------------------------------------


def title_of(bench: str) -> str:
    """The first line of ``bench/<bench>.py``'s docstring, else the text of BENCHES."""
    with contextlib.suppress(OSError, SyntaxError, ValueError):
        source = (HERE / f"{bench}.py").read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source))
        if doc:
            return doc.strip().splitlines()[0].rstrip(".").replace("``", "`")
    return BENCHES.get(bench, "")


def cell(text: str) -> str:
    """Table-safe text: no pipes or line breaks."""
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def mark(met: bool | None) -> str:
    if met is None:
        return ""
    return "✔" if met else "✘"


def render(figures: list[Figure], problems: list[str], source: Path) -> str:
    now = datetime.now(UTC)
    stamps = sorted(f.at for f in figures if f.at)
    lines = [
        "# Benchmark results",
        "",
        f"Written {now:%Y-%m-%d %H:%M} UTC by `bench/results.py` from `{source.name}`"
        + (f" (figures measured {stamps[0]} to {stamps[-1]})." if stamps else "."),
        "Each bench measures its figures against a baseline in the same run; the machine may "
        "be shared with other work, so treat them as indicative.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
    ]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in machine_facts()]
    by_bench: dict[str, list[Figure]] = {}
    for figure in figures:
        by_bench.setdefault(figure.bench, []).append(figure)
    order = list(BENCHES) + [b for b in by_bench if b not in BENCHES]
    for bench in order:
        title = title_of(bench)
        lines += ["", f"## {bench}" + (f": {title}" if title else ""), ""]
        rows = by_bench.get(bench)
        if not rows:
            lines.append(f"Not run: `bench/{bench}.py` wrote no figures in this run.")
            continue
        lines += [
            "| figure | value | unit | target | met | detail |",
            "|---|---:|---|---|:-:|---|",
        ]
        lines += [
            f"| {cell(f.figure)} | {number(f.value)} | {cell(f.unit)} | {cell(f.target or '')} "
            f"| {mark(f.met)} | {cell(f.detail)} |"
            for f in rows
        ]
    lines += ["", "## Summary", ""]
    judged = [f for f in figures if f.met is not None]
    met = [f for f in judged if f.met]
    missed = [f for f in judged if not f.met]
    not_run = [b for b in BENCHES if b not in by_bench]
    lines.append(f"{len(met)} of {len(judged)} targets met.")
    if missed:
        lines += ["", "Missed:", ""]
        lines += [
            f"- {f.bench}: {cell(f.figure)} = {number(f.value)} {cell(f.unit)} "
            f"(target {cell(f.target or '')})"
            for f in missed
        ]
    if met:
        lines += ["", "Met:", ""]
        lines += [
            f"- {f.bench}: {cell(f.figure)} = {number(f.value)} {cell(f.unit)} "
            f"(target {cell(f.target or '')})"
            for f in met
        ]
    if not_run:
        lines += ["", "Not run: " + ", ".join(f"`{b}`" for b in not_run) + "."]
    if problems:
        lines += ["", "Lines of the input that could not be read:", ""]
        lines += [f"- {cell(p)}" for p in problems]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / ".results.jsonl")
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    figures, problems = read_figures(args.input)
    page = render(figures, problems, args.input)
    args.output.write_text(page, encoding="utf-8")
    judged = [f for f in figures if f.met is not None]
    print(
        f"{args.output}: {len(figures)} figures from {len({f.bench for f in figures})} benches, "
        f"{sum(1 for f in judged if f.met)} of {len(judged)} targets met"
    )


if __name__ == "__main__":
    main()
