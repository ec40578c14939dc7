"""Cross Gateway Patient Discovery [ITI-55], Responding Gateway.

Looks candidates up in the store's patient index (by birth date and
normalised family name, and by any identifier sent), applies the configured
:class:`~imagebridge.actors.responding.matching.MatchPolicy`, and answers:
one match (AA/OK with the patient id in our domain and our homeCommunityId),
no match (AA/NF), an ambiguous match (AA/OK without a patient, with a
DetectedIssueEvent asking for more attributes), or an unusable query
(AE/AE, in-band, as long as the request's header can be read; otherwise a
SOAP fault).  Message ids come from a generator so the code stays testable.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import anyio.to_thread

from imagebridge.actors.responding.matching import (
    MatchFound,
    MatchPolicy,
    MatchQueryError,
    candidate_identifiers,
    candidate_keys,
    match_patients,
)
from imagebridge.errors import PatientDiscoveryQueryError
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.patient import PatientRecord
from imagebridge.model.xcpd import (
    II,
    Acknowledgement,
    Device,
    MatchedPatient,
    PatientDiscoveryQuery,
    PatientDiscoveryQueryHeader,
    PatientDiscoveryResponse,
    PersonName,
    QueryAck,
    response_for_query_error,
)
from imagebridge.store import Store
from imagebridge.transport.events import Decoded
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    parse_patient_discovery_query_header,
    render_patient_discovery_response,
)

log = logging.getLogger(__name__)


def hl7_now(clock: Callable[[], datetime]) -> str:
    """HL7 TS of the current instant in UTC (``YYYYMMDDHHMMSS``)."""
    return clock().astimezone(UTC).strftime("%Y%m%d%H%M%S")


class PatientDiscoveryResponder:
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway."""

    def __init__(
        self,
        store: Store,
        home: HomeCommunityId,
        policy: MatchPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._store = store
        self._home = home
        self._policy = policy
        self._clock = clock
        self._new_id = new_id
        self._device = Device(II(home.oid), home)

    async def handle(self, request: SoapRequest) -> SoapReply:
        """SOAP handler: decode, match, answer (bad queries in-band when possible)."""
        try:
            query = parse_patient_discovery_query(request.payload)
        except PatientDiscoveryQueryError as exc:
            header = parse_patient_discovery_query_header(request.payload)
            log.info("ITI-55 query refused in-band: %s", type(exc).__name__)
            response = response_for_query_error(
                header,
                exc,
                message_id=II(self._home.oid, self._new_id()),
                creation_time=hl7_now(self._clock),
                sender=self._device,
            )
            return SoapReply(render_patient_discovery_response(response))
        response = await self.answer(query)
        return SoapReply(
            render_patient_discovery_response(response), decoded=Decoded(query, response)
        )

    async def answer(self, query: PatientDiscoveryQuery) -> PatientDiscoveryResponse:
        """The PRPA_IN201306UV02 for a decoded query."""
        parameters = query.query_by_parameter.parameters
        candidates = await anyio.to_thread.run_sync(self._candidates, query)
        outcome = match_patients(
            parameters,
            candidates,
            self._policy,
            minimum_degree_match=query.query_by_parameter.minimum_degree_match,
        )
        if isinstance(outcome, MatchQueryError):
            return response_for_query_error(
                PatientDiscoveryQueryHeader(
                    query.message_id, query.sender, query.query_by_parameter.query_id
                ),
                outcome.error,
                message_id=II(self._home.oid, self._new_id()),
                creation_time=hl7_now(self._clock),
                sender=self._device,
            )
        patients: tuple[MatchedPatient, ...] = ()
        if isinstance(outcome, MatchFound):
            patients = tuple(self._matched(c.record, c.degree) for c in outcome.candidates)
        issue = outcome.detected_issue
        log.info(
            "ITI-55 answered %s with %d patient(s)",
            outcome.query_response_code.value,
            len(patients),
        )
        return PatientDiscoveryResponse(
            message_id=II(self._home.oid, self._new_id()),
            creation_time=hl7_now(self._clock),
            sender=self._device,
            receiver=query.sender,
            acknowledgement=Acknowledgement(outcome.acknowledgement_type, query.message_id),
            query_ack=QueryAck(
                outcome.query_response_code,
                query.query_by_parameter.query_id,
                "deliveredResponse",
            ),
            patients=patients,
            detected_issues=(issue,) if issue is not None else (),
            query_by_parameter=query.query_by_parameter,
        )

    def _candidates(self, query: PatientDiscoveryQuery) -> list[PatientRecord]:
        parameters = query.query_by_parameter.parameters
        found: list[PatientRecord] = []
        for key in candidate_keys(parameters):
            found.extend(
                self._store.patient_candidates(
                    birth_date=key.birth_date or None, family_key=key.family_key or None
                )
            )
        identifiers = candidate_identifiers(parameters)
        if identifiers:
            found.extend(self._store.patients_by_identifier(identifiers))
        return found

    def _matched(self, record: PatientRecord, degree: int) -> MatchedPatient:
        return MatchedPatient(
            patient_id=record.patient_id,
            home_community_id=self._home,
            names=(PersonName(given=record.given, family=(record.family,)),),
            administrative_gender=record.sex or None,
            birth_time=record.birth_date or None,
            match_degree=degree,
        )
