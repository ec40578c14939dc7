"""Staff page, patient search: demographics checked, every community asked, results kept.

:func:`parse_demographics` turns the search form into
:class:`~imagebridge.actors.initiating.pull.Demographics` or a message per
field (empty, absurd or malformed input never reaches a partner).
:class:`Searches` runs Cross Gateway Patient Discovery [ITI-55] and Cross
Gateway Query [ITI-38] / Retrieve [ITI-39] of the KOS manifests through
:class:`~imagebridge.actors.initiating.workflow.PullWorkflow` and keeps each
result in memory for a while under a random id, so the import form names the
studies by position rather than sending manifests through the browser.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

from imagebridge.actors.initiating.fanout import CommunityOutcome, OutcomeStatus
from imagebridge.actors.initiating.pull import Demographics, DiscoveryReport, StudyOffer
from imagebridge.actors.initiating.workflow import PullWorkflow
from imagebridge.dicom.coding import DCM_SCHEME_OID, SNOMED_CT_OID
from imagebridge.model.directory import Community

MAX_NAME: Final = 64
EARLIEST_BIRTH: Final = date(1900, 1, 1)
KEEP_SECONDS: Final = 3600.0
KEEP_COUNT: Final = 100
_FORBIDDEN: Final = set("^\\=<>{}|") | {chr(c) for c in range(32)} | {"\x7f"}


def parse_demographics(
    form: Mapping[str, str], today: date | None = None
) -> tuple[Demographics | None, dict[str, str]]:
    """The demographics of the search form, or a message for each field that is wrong."""
    errors: dict[str, str] = {}
    names = {}
    for key, label in (("family", "Family name"), ("given", "Given name")):
        value = " ".join(form.get(key, "").split())
        if not value:
            errors[key] = f"{label} is required."
        elif len(value) > MAX_NAME:
            errors[key] = f"{label} is longer than {MAX_NAME} characters."
        elif any(c in _FORBIDDEN for c in value) or not any(c.isalpha() for c in value):
            errors[key] = f"{label} must be letters (with spaces, hyphens or apostrophes)."
        names[key] = value
    birth = _birth_date(form.get("birth_date", ""), today or datetime.now(UTC).date(), errors)
    gender = form.get("gender", "").strip().upper()
    if gender not in ("M", "F", "O"):
        errors["gender"] = "Choose the sex: female, male or other."
    if errors:
        return None, errors
    return Demographics(names["family"], names["given"], birth, gender), {}


def _birth_date(raw: str, today: date, errors: dict[str, str]) -> str:
    text = raw.strip().replace("-", "")
    if not text:
        errors["birth_date"] = "Birth date is required (YYYY-MM-DD)."
        return ""
    if len(text) != 8 or not text.isdigit():
        errors["birth_date"] = "Birth date must be written YYYY-MM-DD, for example 1970-01-31."
        return ""
    try:
        value = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        errors["birth_date"] = "Birth date is not a real calendar date."
        return ""
    if value > today:
        errors["birth_date"] = "Birth date is in the future."
    elif value < EARLIEST_BIRTH:
        errors["birth_date"] = "Birth date is before 1900: check the year."
    return text


@dataclass(frozen=True, slots=True)
class PhaseCell:
    """One community's outcome of one phase, for the status table."""

    status: str
    code: str
    detail: str
    elapsed_ms: int

    @classmethod
    def of(cls, outcome: CommunityOutcome[Any]) -> PhaseCell:
        code = outcome.code or "" if outcome.status is not OutcomeStatus.OK else ""
        return cls(outcome.status.value, code, outcome.detail[:300], round(outcome.elapsed * 1000))


@dataclass(frozen=True, slots=True)
class CommunityRow:
    """A partner's line in the results: its discovery and query outcomes."""

    name: str
    home_community_id: str
    discovery: PhaseCell | None
    query: PhaseCell | None
    matches: int


@dataclass(frozen=True, slots=True)
class StudyRow:
    """A study on offer, as the table shows it (from the KOS entry and manifest)."""

    index: int
    date: str
    modality: str
    description: str
    body_part: str
    images: int
    accession: str
    community: str
    study_instance_uid: str


@dataclass(slots=True)
class SearchResult:
    """A finished search, kept for the import form."""

    id: str
    operator: str
    created: float
    demographics: Demographics
    communities: list[CommunityRow]
    offers: list[StudyOffer]
    problems: list[str] = field(default_factory=list)

    @property
    def studies(self) -> list[StudyRow]:
        return [study_row(i, offer) for i, offer in enumerate(self.offers)]


def study_row(index: int, offer: StudyOffer) -> StudyRow:
    codes = offer.entry.event_code_list
    date_text = offer.service_date
    if len(date_text) == 8:
        date_text = f"{date_text[:4]}-{date_text[4:6]}-{date_text[6:]}"
    return StudyRow(
        index=index,
        date=date_text,
        modality=", ".join(c.code for c in codes if c.scheme == DCM_SCHEME_OID),
        description=offer.description,
        body_part=", ".join(c.display_name or c.code for c in codes if c.scheme == SNOMED_CT_OID),
        images=offer.manifest.instance_count,
        accession=offer.manifest.accession_number,
        community=offer.community.name or offer.community.home_community_id.oid,
        study_instance_uid=", ".join(offer.study_instance_uids),
    )


class Searches:
    """Runs searches and keeps their results (per operator, bounded in time and number)."""

    def __init__(
        self,
        workflow: PullWorkflow,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workflow = workflow
        self._clock = clock
        self._kept: OrderedDict[str, SearchResult] = OrderedDict()

    async def run(self, demographics: Demographics, operator: str) -> SearchResult:
        """Discovery in every community, then the KOS manifests of every match."""
        communities = self.workflow.communities()
        discovery = await self.workflow.discover(demographics, communities)
        studies = await self.workflow.find_studies(discovery.matches)
        found = {o.home_community_id: o for o in discovery.outcomes.outcomes}
        queried = {o.home_community_id: o for o in studies.outcomes.outcomes}
        rows = [
            _row(c, found.get(c.home_community_id), queried.get(c.home_community_id), discovery)
            for c in communities
        ]
        for outcome in studies.outcomes.outcomes:  # located communities not asked with ITI-55
            if outcome.home_community_id not in found:
                rows.append(_row(outcome.community, None, outcome, discovery))
        result = SearchResult(
            secrets.token_urlsafe(16),
            operator,
            self._clock(),
            demographics,
            rows,
            list(studies.offers),
            list(studies.problems),
        )
        self._keep(result)
        return result

    def get(self, search_id: str, operator: str) -> SearchResult | None:
        """The kept result of *operator*'s search, None when unknown or expired."""
        self._expire()
        found = self._kept.get(search_id)
        return found if found is not None and found.operator == operator else None

    def _keep(self, result: SearchResult) -> None:
        self._kept[result.id] = result
        while len(self._kept) > KEEP_COUNT:
            self._kept.popitem(last=False)
        self._expire()

    def _expire(self) -> None:
        limit = self._clock() - KEEP_SECONDS
        for key in [k for k, v in self._kept.items() if v.created < limit]:
            del self._kept[key]


def _row(
    community: Community,
    discovery: CommunityOutcome[Any] | None,
    query: CommunityOutcome[Any] | None,
    report: DiscoveryReport,
) -> CommunityRow:
    hcid = community.home_community_id
    matches = sum(1 for m in report.matches if m.community.home_community_id == hcid)
    return CommunityRow(
        community.name or community.home_community_id.oid,
        community.home_community_id.oid,
        PhaseCell.of(discovery) if discovery is not None else None,
        PhaseCell.of(query) if query is not None else None,
        matches,
    )


def chosen_offers(result: SearchResult, picks: Sequence[str]) -> list[StudyOffer] | None:
    """The offers the import form ticked (positions in the result); None if one is not there."""
    chosen: list[StudyOffer] = []
    for pick in dict.fromkeys(picks):
        if not pick.isdigit() or int(pick) >= len(result.offers):
            return None
        chosen.append(result.offers[int(pick)])
    return chosen
