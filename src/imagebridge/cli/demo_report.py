"""``imagebridge demo``: what the terminal shows (data made, each phase, the final summary).

The summary is built from what actually happened: the fan-out outcomes, the
import jobs as stored, and the headers of the files now in the local archive
(so "filed under the local MRN" is read back, not assumed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from imagebridge.actors.initiating.fanout import CommunityOutcome, OutcomeStatus
from imagebridge.actors.initiating.pull import DiscoveryReport, StudiesReport
from imagebridge.cli.demo_world import NAMES, MadeStudy
from imagebridge.config import Config
from imagebridge.dicom.headers import read_instance_header
from imagebridge.errors import DicomError
from imagebridge.importing.config import FolderTargetConfig
from imagebridge.model.directory import Community
from imagebridge.model.import_job import ImportJob, JobState
from imagebridge.model.reconcile import LocalPatient

_MB = 1e6


class Clock:
    """Named laps of the demo, for the timings table."""

    def __init__(self) -> None:
        self._start = self._last = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        now = time.monotonic()
        self.laps.append((what, now - self._last))
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._start


@dataclass(slots=True)
class CommunityLine:
    """One responding community in the summary."""

    community: Community
    status: str
    patient_ids: list[str] = field(default_factory=list)
    studies: int = 0
    jobs: list[ImportJob] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _name(community: Community) -> str:
    return community.name or community.home_community_id.oid


def _short(community: Community) -> str:
    """``Community A`` of ``Community A (Riverside Imaging)``, for tables."""
    return _name(community).split(" (")[0]


def _verdict(outcome: CommunityOutcome[Any]) -> str:
    if outcome.status is OutcomeStatus.OK:
        return "ok"
    return " ".join(x for x in (outcome.status.value, outcome.code or "", outcome.detail) if x)


def print_generated(
    console: Console, made: Sequence[MadeStudy], reused: bool, seconds: float, root: Path
) -> None:
    """The synthetic studies of A, B and C's local prior, with their sizes."""
    table = Table(title=f"Synthetic studies (PHI-free) in {root}")
    for column in ("community", "patient", "id there", "study", "instances", "MB"):
        table.add_column(column, justify="right" if column in ("instances", "MB") else "left")
    for study in made:
        spec = study.spec
        shape = f"{spec.rows or '?'}x{spec.columns or '?'}"
        series = f"{spec.series} series, " if spec.series else ""
        table.add_row(
            NAMES[spec.community].split(" (")[0],
            spec.patient.name,
            spec.patient.id,
            f"{spec.modality} ({series}{shape})",
            str(study.instances),
            f"{study.bytes / _MB:.1f}",
        )
    console.print(table)
    total = sum(s.bytes for s in made) / _MB
    how = "archives reused from an earlier run" if reused else "generated"
    console.print(f"{total:.1f} MB, {how}, ready in {seconds:.1f} s")


def print_discovery(console: Console, found: DiscoveryReport) -> None:
    console.print(f"[bold]Patient discovery (ITI-55)[/]: {found.outcomes.elapsed:.2f} s")
    for outcome in found.outcomes.outcomes:
        ids = [
            m.patient.patient_id.cx
            for m in found.matches
            if m.community.home_community_id == outcome.home_community_id
        ]
        console.print(
            f"  {_name(outcome.community)}: {_verdict(outcome)} {', '.join(ids)}", soft_wrap=True
        )


def print_offers(console: Console, offered: StudiesReport) -> None:
    console.print(
        f"[bold]Query and KOS manifests (ITI-38, ITI-39)[/]: {offered.outcomes.elapsed:.2f} s"
    )
    for outcome in offered.outcomes.outcomes:
        console.print(f"  {_name(outcome.community)}: {_verdict(outcome)}")
    for problem in offered.problems:
        console.print(f"  [yellow]{problem}")
    table = Table(title="Studies on offer")
    for column in ("community", "date", "description", "instances"):
        table.add_column(column)
    for offer in offered.offers:
        table.add_row(
            _short(offer.community),
            offer.service_date,
            offer.description,
            str(len(offer.locators)),
        )
    console.print(table)


def print_local_patient(console: Console, patient: LocalPatient, target: str) -> None:
    issuer = patient.issuer.local_namespace if patient.issuer is not None else ""
    console.print(
        f"Local patient found in the {target} by demographics: MRN [bold]{patient.mrn}[/]"
        f"{f' ({issuer})' if issuer else ''}, {patient.name}, born {patient.birth_date}"
    )
    console.print("[bold]Retrieve (RAD-75) and import with reconciliation (durable jobs)")


def job_label(job: ImportJob) -> str:
    return f"job {job.id} from {job.request.source_community_name.split(' (')[0]}"


def community_lines(
    found: DiscoveryReport,
    offered: StudiesReport,
    jobs: Sequence[ImportJob],
    finished_at: dict[int, float],
    flow_started: float,
) -> list[CommunityLine]:
    """One line per community asked, in directory order (bytes are filled in by the caller)."""
    queried = {o.home_community_id: o for o in offered.outcomes.outcomes}
    lines: list[CommunityLine] = []
    for outcome in found.outcomes.outcomes:
        hcid = outcome.home_community_id
        line = CommunityLine(outcome.community, _verdict(outcome))
        line.seconds = outcome.elapsed
        line.patient_ids = [
            m.patient.patient_id.id for m in found.matches if m.community.home_community_id == hcid
        ]
        query = queried.get(hcid)
        if line.ok and query is not None:
            line.status = _verdict(query)
            line.seconds = found.outcomes.elapsed + query.elapsed
        line.studies = sum(1 for o in offered.offers if o.community.home_community_id == hcid)
        line.jobs = [j for j in jobs if j.request.source_community == hcid]
        bad = [j for j in line.jobs if j.state is not JobState.COMPLETED]
        if line.ok and bad:
            line.status = ", ".join(
                f"job {j.id} {j.state.value}" + (f" ({j.hold_reason})" if j.hold_reason else "")
                for j in bad
            )
        ends = [finished_at[j.id] for j in line.jobs if j.id in finished_at]
        if ends:
            line.seconds = max(ends) - flow_started
        lines.append(line)
    return lines


def print_summary(
    console: Console,
    config: Config,
    lines: Sequence[CommunityLine],
    jobs: Sequence[ImportJob],
    clock: Clock,
) -> int:
    """The final summary; 0 when every community answered and every study was filed."""
    table = Table(
        title="What came from where",
        caption="s: from the first ITI-55 until the community's last image was filed",
    )
    for column in ("community", "status", "patient id there", "studies", "instances", "MB", "s"):
        numeric = column in ("studies", "instances", "MB", "s")
        table.add_column(column, justify="right" if numeric else "left")
    for line in lines:
        done = sum(j.done for j in line.jobs)
        total = sum(j.total for j in line.jobs)
        table.add_row(
            _short(line.community),
            f"[green]{line.status}[/]" if line.ok else f"[red]{line.status}[/]",
            "\n".join(line.patient_ids) or "-",
            str(line.studies),
            f"{done}/{total}" if total else "-",
            f"{line.bytes / _MB:.1f}",
            f"{line.seconds:.1f}",
        )
    console.print(table)
    instances = sum(j.done for j in jobs)
    size = sum(line.bytes for line in lines) / _MB
    console.print(
        f"[bold]Total: {len(jobs)} studies, {instances} instances, {size:.1f} MB "
        f"from {sum(1 for line in lines if line.jobs)} communities in "
        f"{sum(s for _, s in clock.laps[1:]):.1f} s[/] (discover to filed)"
    )
    console.print("Timings:")
    for what, seconds in clock.laps:
        console.print(f"  {seconds:6.1f} s  {what}")
    _print_reconciliation(console, jobs)
    filed = _print_archive(console, config, jobs)
    clean = all(line.ok for line in lines) and filed
    return 0 if clean else 1


def _print_reconciliation(console: Console, jobs: Sequence[ImportJob]) -> None:
    console.print("[bold]Reconciliation applied")
    seen: dict[tuple[str, str], int] = {}
    for job in jobs:
        request = job.request
        local = request.local_patient_id or "(none: held)"
        if request.local_patient_issuer:
            local += f" (issuer {request.local_patient_issuer})"
        foreign = request.foreign_patient
        key = (
            f"{foreign.id} (issuer {foreign.assigning_authority}) "
            f"from {request.source_community_name.split(' (')[0]}",
            local,
        )
        seen[key] = seen.get(key, 0) + 1
    for (source, local), count in seen.items():
        console.print(
            f"  {source} -> {local}: {count} stud{'y' if count == 1 else 'ies'}", soft_wrap=True
        )
    console.print(
        "  Patient ID and issuer coerced to the local MRN, the foreign values kept in the "
        "Original Attributes Sequence (0400,0561); accession numbers cleared; UIDs kept."
    )


def _print_archive(console: Console, config: Config, jobs: Sequence[ImportJob]) -> bool:
    """Where the images are now, read back from the files; True when all carry the local MRN."""
    target = config.importing.target if config.importing is not None else None
    if not isinstance(target, FolderTargetConfig):
        return False
    root = Path(target.root)
    console.print(f"[bold]The images are now in the local archive[/] {root}", soft_wrap=True)
    ok = True
    for job in jobs:
        folder = root / job.request.study_instance_uid
        files = sorted(folder.glob("*/*.dcm"))
        if not files:
            console.print(f"  [red]{folder}: nothing filed")
            ok = False
            continue
        try:
            header = read_instance_header(files[0])
        except (DicomError, OSError) as exc:
            console.print(f"  [red]{files[0]}: unreadable ({exc})")
            ok = False
            continue
        filed = header.patient.id == job.request.local_patient_id
        ok = ok and filed
        console.print(
            f"  {folder.name}/  {header.study.description}: {len(files)} "
            f"{header.series.modality} files, PatientID {header.patient.id}"
            f"{'' if filed else ' [red](not the local MRN)[/]'}",
            soft_wrap=True,
        )
    studies = sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0
    console.print(f"  The local archive now holds {studies} studies (the prior included).")
    return ok
