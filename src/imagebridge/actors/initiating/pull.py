"""Initiating Gateway and Initiating Imaging Gateway: what a pull works with and reports.

The operator's demographics, the pull settings, the matches of Cross Gateway
Patient Discovery [ITI-55], the studies offered through Cross Gateway Query
[ITI-38] and Retrieve [ITI-39] of KOS manifests, what arrived with Cross
Gateway Retrieve Imaging Document Set [RAD-75], and the ITI-55 query builder.
:mod:`imagebridge.actors.initiating.workflow` runs the pull with these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from imagebridge.actors.initiating.client import RetrieveResult
from imagebridge.actors.initiating.fanout import CommunityOutcome, FanOutResult, OutcomeStatus
from imagebridge.actors.initiating.locator import HealthDataLocatorResult
from imagebridge.errors import ImageBridgeError, InvalidValue
from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import ImagingDocumentLocator, Manifest
from imagebridge.model.xcpd import (
    II,
    Device,
    HealthDataLocator,
    MatchedPatient,
    ParameterList,
    PatientDiscoveryQuery,
    PatientDiscoveryResponse,
    PersonName,
    QueryByParameter,
    TimeInterval,
)
from imagebridge.model.xds import Code, DocumentEntry
from imagebridge.wire.xds import vocabulary as v

KOS_FORMAT: Final = Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME)
DEFAULT_TRANSFER_SYNTAXES: Final = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
"""What we accept by default: uncompressed and the lossless syntaxes a PACS stores as is."""

_HL7_GENDER: Final = {"M": "M", "F": "F", "O": "UN", "U": "UN", "UN": "UN"}


@dataclass(frozen=True, slots=True)
class Demographics:
    """Who we are looking for: family and given name, birth date ``YYYYMMDD``, sex M/F/O."""

    family: str
    given: str
    birth_date: str
    gender: str

    def __post_init__(self) -> None:
        if not self.family.strip() or not self.given.strip():
            raise InvalidValue("family and given name are required")
        if len(self.birth_date) != 8 or not self.birth_date.isdigit():
            raise InvalidValue(f"birth date must be YYYYMMDD, not {self.birth_date!r}")
        if self.gender.upper() not in _HL7_GENDER:
            raise InvalidValue(f"gender must be M, F or O, not {self.gender!r}")


@dataclass(frozen=True, slots=True)
class PullSettings:
    """Our identity and the knobs of a pull."""

    home: HomeCommunityId
    patient_id_authority: str | None = None
    deadline: float = 60.0
    """Seconds each discovery/query phase may take as a whole (one fan-out)."""
    retrieve_deadline: float = 3600.0
    max_concurrency: int | None = 32
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    query_by_format_code: bool = True
    """False: FindDocuments for all formats, keeping only the KOS entries of the answer."""


@dataclass(frozen=True, slots=True)
class PatientMatch:
    """One patient record a community returned for the demographics."""

    community: Community
    """The community that answered ITI-55 (or, for a located match, the one to query)."""
    patient: MatchedPatient
    located_by: HomeCommunityId | None = None
    """The Health Data Locator that named this location (None: a direct ITI-55 match)."""

    @property
    def home(self) -> HomeCommunityId:
        return self.patient.home_community_id or self.community.home_community_id

    @property
    def health_data_locator(self) -> bool:
        return self.patient.health_data_locator is HealthDataLocator.SUPPORTS_HEALTH_DATA_LOCATOR


@dataclass(frozen=True, slots=True)
class StudyOffer:
    """A study a community offers: its KOS DocumentEntry, the parsed manifest, its instances."""

    community: Community
    """The community that answered ITI-38/ITI-39."""
    patient_id: PatientId
    entry: DocumentEntry
    manifest: Manifest
    locators: tuple[ImagingDocumentLocator, ...]

    @property
    def imaging_home(self) -> HomeCommunityId:
        """Where RAD-75 goes: the KOS entry's ``home`` (else the community that answered)."""
        return self.entry.home or self.community.home_community_id

    @property
    def study_instance_uids(self) -> tuple[str, ...]:
        return self.manifest.study_instance_uids

    @property
    def description(self) -> str:
        title = self.entry.title
        return title.localized[0].value if title is not None and title.localized else ""

    @property
    def service_date(self) -> str:
        start = self.entry.service_start_time
        return "" if start is None else str(start)[:8]


@dataclass(slots=True)
class StudyReceipt:
    """What arrived for one study from its imaging community (one RAD-75, maybe batched).

    ``failure`` is set when the study's retrieve failed as a whole; ``result``
    is then empty.
    """

    community: Community
    offer: StudyOffer
    result: RetrieveResult
    failure: ImageBridgeError | None = None

    @property
    def requested(self) -> int:
        return len(self.offer.locators)


@dataclass(slots=True)
class DiscoveryReport:
    """Phase 1: per community, its ITI-55 outcome, and the matches found."""

    outcomes: FanOutResult[PatientDiscoveryResponse]
    matches: list[PatientMatch] = field(default_factory=list)
    locators: HealthDataLocatorResult | None = None
    """What the Health Data Locators among the responders said (None: none flagged)."""


@dataclass(slots=True)
class StudiesReport:
    """Phase 2: per community, its ITI-38/ITI-39 outcome, and the studies offered."""

    outcomes: FanOutResult[list[StudyOffer]]
    offers: list[StudyOffer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RetrieveReport:
    """Phase 3: per imaging community, its RAD-75 outcome; unknown communities listed."""

    outcomes: FanOutResult[list[StudyReceipt]]
    unroutable: list[tuple[StudyOffer, str]] = field(default_factory=list)

    @property
    def receipts(self) -> list[StudyReceipt]:
        """Every study's receipt, community by community, in request order."""
        return [r for receipts in self.outcomes.values() for r in receipts]

    def close(self) -> None:
        for receipt in self.receipts:
            receipt.result.close()


def discovery_query(
    demographics: Demographics,
    sender: HomeCommunityId,
    receiver: HomeCommunityId,
    *,
    message_root: str,
    creation_time: str,
    authority: str | None = None,
) -> PatientDiscoveryQuery:
    """Cross Gateway Patient Discovery [ITI-55], Initiating Gateway: the query for
    *demographics* from *sender* to *receiver* (ids under *message_root*)."""
    return PatientDiscoveryQuery(
        message_id=II(message_root, "m"),
        creation_time=creation_time,
        sender=Device(II(sender.oid), sender),
        receiver=Device(II(receiver.oid), receiver),
        query_by_parameter=QueryByParameter(
            query_id=II(message_root, "q"),
            parameters=ParameterList(
                living_subject_administrative_gender=_HL7_GENDER[demographics.gender.upper()],
                living_subject_birth_time=TimeInterval(demographics.birth_date),
                living_subject_names=(
                    PersonName(given=(demographics.given,), family=(demographics.family,)),
                ),
            ),
        ),
        patient_id_assigning_authority=authority,
    )


def outcome_line(outcome: CommunityOutcome[Any]) -> str:
    """One line for logs and tables: community, status, code, detail (no patient data)."""
    parts = [outcome.community.name or outcome.community.home_community_id.oid, outcome.status]
    if outcome.status is not OutcomeStatus.OK and outcome.code:
        parts.append(outcome.code)
    if outcome.detail:
        parts.append(outcome.detail)
    return " | ".join(str(p) for p in parts)
