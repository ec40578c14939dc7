"""Figures the benchmarks hand to ``bench/results.py``, which writes ``bench/results.md``.

Each benchmark script prints its own report as before; when it is run with
``--results FILE`` (``make bench`` passes ``bench/.results.jsonl``) it also
appends one JSON line per headline figure with :func:`write_figure`.  A line
names the benchmark, the figure, its value and unit, the target it is judged
against (a comparison and a number, for example ``>= 0.8``) and whether the
target was met, so the results table needs no knowledge of any benchmark.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


def meets(value: float, target: str) -> bool:
    """Whether *value* meets *target* (``">= 0.8"``, ``"< 150"``, ...)."""
    sign, _, number = target.strip().partition(" ")
    if sign not in _COMPARE:
        raise ValueError(f"target {target!r} must start with one of {sorted(_COMPARE)}")
    return _COMPARE[sign](value, float(number))


def write_figure(
    results: Path | None,
    bench: str,
    figure: str,
    value: float,
    unit: str = "",
    *,
    target: str | None = None,
    detail: str = "",
) -> None:
    """Append one figure to *results* (a JSON-lines file); nothing when *results* is None.

    *unit* is free text (``"MB/s"``, ``"ratio"``, ``"ms"``); *target* is judged
    with :func:`meets`; *detail* says what the figure was measured against.
    """
    if results is None:
        return
    line = {
        "bench": bench,
        "figure": figure,
        "value": value,
        "unit": unit,
        "target": target,
        "met": None if target is None else meets(value, target),
        "detail": detail,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
