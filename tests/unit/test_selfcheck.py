"""The codec self-check (`imagebridge selfcheck`): every message survives the round trip."""

from __future__ import annotations

import io

from rich.console import Console

from imagebridge.cli.selfcheck import run_selfcheck


def test_selfcheck_round_trips_every_message() -> None:
    buffer = io.StringIO()
    assert run_selfcheck(Console(file=buffer, width=200)) == 0
    text = buffer.getvalue()
    for code in ("ITI-55", "ITI-38", "ITI-39", "RAD-75"):
        assert code in text
    assert "NO" not in text
    assert "all messages survived the round trip" in text
