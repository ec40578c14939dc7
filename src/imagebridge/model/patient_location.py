"""Patient Location Query [ITI-56], Initiating Gateway and Health Data Locator: the values.

A Health Data Locator (an RLS that flags ``SupportsHealthDataLocator`` in its
ITI-55 answer) is asked, with the patient id it gave us, which communities
hold data for that patient.  Each answer names a community (homeCommunityId)
and the patient id valid there.  Constructors validate, so whatever the
parser builds can be rendered again; identifiers reuse the HL7 v3
:class:`~imagebridge.model.xcpd.II` of ITI-55.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from imagebridge.errors import InvalidValue
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.xcpd import II

MAX_NOTES: Final = 16
MAX_NOTE_LENGTH: Final = 200
NOT_HEALTH_DATA_LOCATOR_MARKERS: Final = ("nothealthdatalocator", "notahealthdatalocator")
"""Squashed (lower case, letters only) phrases read as "not a health data locator".

The HDL supplement's exact signal was not reviewed (spec digest, UNCONFIRMED):
the code ``NotHealthDataLocator`` of ITI-55 and the plain-English phrase both count.
"""


def _patient_ii(value: II, what: str) -> PatientId:
    """The CX form of *value*; an II without extension or with a non-OID root is refused."""
    try:
        return value.patient_id
    except InvalidValue as exc:
        raise type(exc)(f"{what}: {exc.message}") from exc


@dataclass(frozen=True, slots=True)
class PatientLocationQueryRequest:
    """xcpd:PatientLocationQueryRequest: the patient id the locator gave us in ITI-55."""

    requested_patient_id: II

    def __post_init__(self) -> None:
        _patient_ii(self.requested_patient_id, "RequestedPatientId")

    @classmethod
    def for_patient(cls, patient_id: PatientId) -> PatientLocationQueryRequest:
        return cls(II.from_patient_id(patient_id))

    @property
    def patient_id(self) -> PatientId:
        return self.requested_patient_id.patient_id


@dataclass(frozen=True, slots=True)
class PatientLocationResponse:
    """xcpd:PatientLocationResponse: one community holding data, and the patient's id there.

    ``requested_patient_id`` is required by the schema; ``None`` only records
    that a partner left it out (then the answer is taken to be about the
    patient asked for).
    """

    home_community_id: HomeCommunityId
    corresponding_patient_id: II
    requested_patient_id: II | None = None

    def __post_init__(self) -> None:
        _patient_ii(self.corresponding_patient_id, "CorrespondingPatientId")

    @property
    def patient_id(self) -> PatientId:
        """The id to use in ITI-38/ITI-39 with :attr:`home_community_id`."""
        return self.corresponding_patient_id.patient_id

    def answers(self, request: PatientLocationQueryRequest) -> bool:
        """False when the location names another requested patient than *request*'s."""
        asked = self.requested_patient_id
        return asked is None or asked.patient_id == request.patient_id


@dataclass(frozen=True, slots=True)
class RejectedLocation:
    """A PatientLocationResponse that could not be used, and why (kept, never dropped silently)."""

    index: int
    """0-based position among the PatientLocationResponse elements."""
    reason: str


@dataclass(frozen=True, slots=True)
class PatientLocationQueryResponse:
    """xcpd:PatientLocationQueryResponse: zero or more locations.

    ``rejected`` holds the entries the lenient parser could not read;
    ``notes`` what else the responder said (codes and text of elements the
    schema does not define), so that "not a health data locator for this
    patient" is recorded whatever form it takes.
    """

    locations: tuple[PatientLocationResponse, ...] = ()
    rejected: tuple[RejectedLocation, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.notes) > MAX_NOTES:
            raise InvalidValue(f"at most {MAX_NOTES} notes are kept, not {len(self.notes)}")
        if any(len(note) > MAX_NOTE_LENGTH for note in self.notes):
            raise InvalidValue(f"a note is longer than {MAX_NOTE_LENGTH} characters")

    @property
    def says_not_health_data_locator(self) -> bool:
        """True when no location came back and a note reads "not a health data locator"."""
        return not self.locations and any(says_not_health_data_locator(note) for note in self.notes)


def says_not_health_data_locator(text: str) -> bool:
    """Whether *text* (a fault reason, a code, a note) reads "not a health data locator"."""
    squashed = "".join(c for c in text.lower() if c.isalpha())
    return any(marker in squashed for marker in NOT_HEALTH_DATA_LOCATOR_MARKERS)
