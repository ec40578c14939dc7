"""What ``imagebridge fetch`` did, kept for its final table and its ``--json`` document.

Each phase (discovery, query, retrieve) records every community's outcome:
the coloured verdict for the table and the status, code, detail and elapsed
seconds for scripts.  The document carries the matched patient ids (scripts
need them) but no other demographics the partners returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from imagebridge.actors.initiating.fanout import CommunityOutcome, FanOutResult, OutcomeStatus
from imagebridge.actors.initiating.pull import PatientMatch, StudyOffer
from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId

STYLE = {
    OutcomeStatus.OK: "green",
    OutcomeStatus.NO_MATCH: "yellow",
    OutcomeStatus.ERROR: "red",
    OutcomeStatus.TIMEOUT: "red",
    OutcomeStatus.UNREACHABLE: "red",
    OutcomeStatus.SKIPPED: "magenta",
}
FAILED = frozenset(
    (OutcomeStatus.ERROR, OutcomeStatus.TIMEOUT, OutcomeStatus.UNREACHABLE, OutcomeStatus.SKIPPED)
)
ATTRIBUTE = {"discovery": "discover", "query": "query", "retrieve": "retrieve"}
"""Phase name (JSON) -> the :class:`CommunityLine` column of its verdict."""


@dataclass(slots=True)
class CommunityLine:
    """One row of the final table (and one community of the JSON document)."""

    community: Community
    discover: str = "-"
    studies: int = 0
    query: str = "-"
    requested: int = 0
    arrived: int = 0
    bytes: int = 0
    retrieve: str = "-"
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, CommunityOutcome[Any]] = field(default_factory=dict)

    def failed(self) -> bool:
        return any(o.status in FAILED for o in self.outcomes.values())

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "home_community_id": self.community.home_community_id.oid,
            "name": self.community.name,
        }
        for phase in ATTRIBUTE:
            outcome = self.outcomes.get(phase)
            document[phase] = None if outcome is None else outcome_json(outcome)
        document |= {
            "studies": self.studies,
            "requested": self.requested,
            "arrived": self.arrived,
            "bytes": self.bytes,
            "problems": list(self.problems),
        }
        return document


def verdict(outcome: CommunityOutcome[Any]) -> str:
    """The outcome as rich markup: status, and for a failure its code and detail."""
    text = f"[{STYLE[outcome.status]}]{outcome.status.value}[/]"
    if outcome.status is not OutcomeStatus.OK and outcome.status is not OutcomeStatus.NO_MATCH:
        why = " ".join(x for x in (outcome.code or "", outcome.detail) if x)
        text += f" {escape(why)}"
    return text


def outcome_json(outcome: CommunityOutcome[Any]) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "code": outcome.code,
        "detail": outcome.detail or None,
        "elapsed": round(outcome.elapsed, 3),
    }


def match_json(match: PatientMatch) -> dict[str, Any]:
    """A match: where, and the patient id to use there (no other demographics)."""
    patient = match.patient
    return {
        "community": match.community.home_community_id.oid,
        "community_name": match.community.name,
        "patient_id": {
            "id": patient.patient_id.id,
            "assigning_authority": patient.patient_id.assigning_authority,
            "cx": patient.patient_id.cx,
        },
        "home_community_id": match.home.oid,
        "located_by": None if match.located_by is None else match.located_by.oid,
        "health_data_locator": match.health_data_locator,
        "match_degree": patient.match_degree,
    }


def offer_json(offer: StudyOffer) -> dict[str, Any]:
    """A study on offer: what ``--study`` takes, where it comes from, how many instances."""
    return {
        "community": offer.community.home_community_id.oid,
        "community_name": offer.community.name,
        "imaging_community": offer.imaging_home.oid,
        "study_instance_uids": list(offer.study_instance_uids),
        "kos_document_id": offer.entry.unique_id,
        "service_date": offer.service_date or None,
        "description": offer.description or None,
        "instances": len(offer.locators),
    }


@dataclass(slots=True)
class FetchRecord:
    """Everything a fetch did, phase by phase."""

    lines: dict[HomeCommunityId, CommunityLine] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    matches: list[dict[str, Any]] = field(default_factory=list)
    offers: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    root: Path | None = None
    """The folder the images went into (None: nothing was retrieved into a folder)."""
    imported: dict[str, Any] | None = None

    def line(self, community: Community) -> CommunityLine:
        hcid = community.home_community_id
        return self.lines.setdefault(hcid, CommunityLine(community))

    def phase(self, name: str, result: FanOutResult[Any]) -> None:
        """Record every community's outcome of phase *name* (``discovery``, ``query``...)."""
        self.phases[name] = {
            "elapsed": round(result.elapsed, 3),
            "deadline_reached": result.deadline_reached,
        }
        for outcome in result.outcomes:
            line = self.line(outcome.community)
            line.outcomes[name] = outcome
            setattr(line, ATTRIBUTE[name], verdict(outcome))

    def failed(self) -> bool:
        return any(line.failed() for line in self.lines.values())

    def incomplete(self) -> bool:
        return any(line.arrived < line.requested for line in self.lines.values())

    def document(self, status: int, *, dry_run: bool, into: str) -> dict[str, Any]:
        """The ``fetch --json`` document."""
        arrived = None
        if self.root is not None:
            lines = self.lines.values()
            arrived = {
                "root": str(self.root),
                "instances": sum(line.arrived for line in lines),
                "requested": sum(line.requested for line in lines),
                "bytes": sum(line.bytes for line in lines),
            }
        return {
            "status": status,
            "complete": status == 0,
            "dry_run": dry_run,
            "into": into,
            "phases": self.phases,
            "communities": [line.to_json() for line in self.lines.values()],
            "matches": self.matches,
            "studies": self.offers,
            "arrived": arrived,
            "import": self.imported,
            "warnings": self.warnings,
        }
