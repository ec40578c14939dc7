"""Imaging Document Consumer, the import job runner: retrieve, reconcile, store (stub).

``imagebridge jobs resume`` calls :func:`resume_jobs`; the runner itself
lands in the next commit.
"""

from __future__ import annotations

from collections.abc import Sequence

from imagebridge.config import Config


def resume_jobs(config: Config, job_ids: Sequence[int]) -> int:
    """Resume the given import jobs (every resumable one when empty); the CLI exit status."""
    raise NotImplementedError("the runner lands in the next commit")
