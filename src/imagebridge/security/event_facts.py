"""What one finished transaction was about: patients, query, documents, studies, outcome, user.

:func:`facts_of` decodes a :class:`~imagebridge.transport.events.TransactionEvent`
with the existing codecs (ITI-55, ITI-38, ITI-39, RAD-69/RAD-75 requests and
replies, the ``wsse:Security`` header's SAML assertion) into
:class:`EventFacts`, the input of the ATNA audit mapping
(:mod:`imagebridge.security.audit_events`) and of the performance counters
(:mod:`imagebridge.security.measures`).

Called inline by observers (the payload elements are only valid during the
call), so it is pure and quick: a part that does not decode is left out
(logged at DEBUG without values) and never fails the caller.  The facts hold
patient identifiers: they must not reach INFO logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeVar

from imagebridge.model.outcome import Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
)
from imagebridge.model.saml import Assertion
from imagebridge.model.xcpd import (
    AcknowledgementType,
    PatientDiscoveryQuery,
    PatientDiscoveryResponse,
    QueryResponseCode,
)
from imagebridge.model.xds_query import (
    PATIENT_ID_PARAMETERS,
    AdhocQueryRequest,
    AdhocQueryResponse,
    FindDocumentsFilters,
    GenericStoredQuery,
)
from imagebridge.transactions import Transaction
from imagebridge.transport.events import TransactionEvent
from imagebridge.wire import ns
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    parse_patient_discovery_response,
)
from imagebridge.wire.wsse import parse_security
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import parse_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import parse_adhoc_query_request, parse_adhoc_query_response
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
)
from imagebridge.wire.xml import Element, serialize

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_RETRIEVES = frozenset({Transaction.ITI_39, Transaction.ITI_43})
_IMAGING = frozenset({Transaction.RAD_69, Transaction.RAD_75})
_QUERIES = frozenset({Transaction.ITI_38, Transaction.ITI_18})


class Outcome(Enum):
    """How the transaction ended, as the audit's EventOutcomeIndicator sees it."""

    SUCCESS = "success"
    PARTIAL = "partial"
    """In-band partial success (some documents, some errors)."""
    FAILURE = "failure"
    """In-band failure (RegistryResponse Failure, XCPD AE/QE)."""
    ERROR = "error"
    """The exchange failed as a whole (fault, partner unreachable, timeout)."""


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """A document named by the exchange: its ids, and for an image its study."""

    document_unique_id: str
    repository_unique_id: str | None = None
    home_community_id: str | None = None
    """``urn:oid:`` form."""
    study_instance_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Requestor:
    """The human (or system) user the SAML assertion names."""

    user_id: str
    """``alias<user@issuer>`` (ITI-40 3.40.4.2)."""
    user_name: str | None = None
    role: tuple[str, str, str] | None = None
    """(code, code system name, display) of the XUA role."""
    purpose_of_use: tuple[str, str, str] | None = None
    home_community_id: str | None = None
    """Bare OID of the requestor's community."""
    patient_id: str | None = None
    """The XUA resource-id (CX), when sent."""


@dataclass(frozen=True, slots=True)
class EventFacts:
    """Decoded content of one transaction (see the module docstring)."""

    outcome: Outcome
    patient_ids: tuple[str, ...] = ()
    """CX patient ids: queried, matched, or the XUA resource-id."""
    query: bytes | None = None
    """ITI-55: the queryByParameter XML; ITI-38: the AdhocQueryRequest XML."""
    query_id: str | None = None
    query_home: str | None = None
    """The homeCommunityId the query names (ITI-55 sender, ITI-38 ``AdhocQuery/@home``)."""
    documents: tuple[DocumentRef, ...] = ()
    """Returned documents, or the requested ones when none came back."""
    studies: tuple[str, ...] = ()
    """Study Instance UIDs requested (RAD-69/RAD-75)."""
    documents_returned: int = 0
    """DocumentResponses (ITI-39, RAD-69, RAD-75); registry objects (ITI-38)."""
    studies_returned: int = 0
    """Studies with a returned image (RAD-69/75), KOS manifests (ITI-38 entries, ITI-39)."""
    requestor: Requestor | None = None
    errors: tuple[str, ...] = field(default=())
    """In-band error codes (RegistryError codes, XCPD acknowledgement details)."""


def _attempt(what: str, decode: Callable[[], _T]) -> _T | None:
    try:
        return decode()
    except Exception as exc:  # a bad payload is audited with what could be read
        log.debug("%s did not decode for the audit/counters: %s", what, type(exc).__name__)
        return None


def _decode(
    what: str, parser: Callable[[Element], _T], element: Element | None, known: _T | None = None
) -> _T | None:
    """*known* (the model the reporting side already had), else *element* decoded."""
    if known is not None:
        return known
    if element is None:
        return None
    return _attempt(what, lambda: parser(element))


def _known(event: TransactionEvent, side: str, kind: type[_T]) -> _T | None:
    """The event's decoded request or reply (*side*) if it is a *kind*; None otherwise."""
    if event.decoded is None:
        return None
    model = event.decoded.request if side == "request" else event.decoded.reply
    return model if isinstance(model, kind) else None


def facts_of(event: TransactionEvent) -> EventFacts:
    """Decode *event* (never raises; parts that do not decode are left out)."""
    requestor = _attempt("wsse:Security", lambda: _requestor(event.header_blocks))
    t = event.transaction
    if t is Transaction.ITI_55:
        facts = _patient_discovery(event)
    elif t in _QUERIES:
        facts = _query(event)
    elif t in _RETRIEVES:
        facts = _retrieve(event)
    elif t in _IMAGING:
        facts = _imaging(event)
    else:
        facts = EventFacts(outcome=_outcome(event, None))
    patients = facts.patient_ids
    if not patients and t is not Transaction.ITI_55 and requestor and requestor.patient_id:
        patients = (requestor.patient_id,)
    return EventFacts(
        outcome=facts.outcome,
        patient_ids=patients,
        query=facts.query,
        query_id=facts.query_id,
        query_home=facts.query_home,
        documents=facts.documents,
        studies=facts.studies,
        documents_returned=facts.documents_returned,
        studies_returned=facts.studies_returned,
        requestor=requestor,
        errors=facts.errors,
    )


def _outcome(event: TransactionEvent, status: Status | None) -> Outcome:
    if event.failed:
        return Outcome.ERROR
    if status is Status.FAILURE:
        return Outcome.FAILURE
    if status is Status.PARTIAL_SUCCESS:
        return Outcome.PARTIAL
    return Outcome.SUCCESS


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


# --- ITI-55 ------------------------------------------------------------------------------


def _patient_discovery(event: TransactionEvent) -> EventFacts:
    query = _decode(
        "ITI-55 request",
        parse_patient_discovery_query,
        event.request,
        _known(event, "request", PatientDiscoveryQuery),
    )
    reply = _decode(
        "ITI-55 reply",
        parse_patient_discovery_response,
        event.reply,
        _known(event, "reply", PatientDiscoveryResponse),
    )
    queried: list[str] = []
    query_id = home = None
    if query is not None:
        qbp = query.query_by_parameter
        queried = [
            i.patient_id.cx for i in qbp.parameters.living_subject_ids if i.extension is not None
        ]
        qid = qbp.query_id
        query_id = f"{qid.extension}@{qid.root}" if qid.extension else qid.root
        sender = query.sender.home_community_id
        home = sender.oid if sender is not None else None
    matched = [p.patient_id.cx for p in reply.patients] if reply is not None else []
    element = _first(event.request, ns.q(ns.HL7, "queryByParameter"))
    return EventFacts(
        outcome=_xcpd_outcome(event, reply),
        patient_ids=_unique([*matched, *queried]),
        query=serialize(element) if element is not None else None,
        query_id=query_id,
        query_home=home,
        errors=tuple(d.code.code for d in reply.acknowledgement.details if d.code is not None)
        if reply is not None
        else (),
    )


def _xcpd_outcome(event: TransactionEvent, reply: PatientDiscoveryResponse | None) -> Outcome:
    if event.failed:
        return Outcome.ERROR
    if reply is None:  # an answer that does not decode is not a usable answer
        return Outcome.FAILURE if event.reply is not None else Outcome.SUCCESS
    if reply.acknowledgement.type_code is not AcknowledgementType.AA or (
        reply.query_ack.query_response_code in (QueryResponseCode.AE, QueryResponseCode.QE)
    ):
        return Outcome.FAILURE
    return Outcome.SUCCESS


def _first(root: Element | None, tag: str) -> Element | None:
    if root is None:
        return None
    return next(root.iter(tag), None)


# --- ITI-38 ------------------------------------------------------------------------------


def _query(event: TransactionEvent) -> EventFacts:
    request = _decode(
        "ITI-38 request",
        parse_adhoc_query_request,
        event.request,
        _known(event, "request", AdhocQueryRequest),
    )
    reply = _decode(
        "ITI-38 reply",
        parse_adhoc_query_response,
        event.reply,
        _known(event, "reply", AdhocQueryResponse),
    )
    patients: list[str] = []
    query_id = home = None
    if request is not None:
        q = request.query
        query_id = q.query_type.value
        home = request.home_community_id.urn if request.home_community_id else None
        if isinstance(q, FindDocumentsFilters):
            patients.append(q.patient_id.cx)
        elif isinstance(q, GenericStoredQuery):
            patients.extend(
                value.strip().strip("'")
                for name in sorted(PATIENT_ID_PARAMETERS)
                for value in q.values(name)
            )
    elif event.request is not None:
        adhoc = _first(event.request, ns.q(ns.RIM, "AdhocQuery"))
        query_id = adhoc.get("id") if adhoc is not None else None
    return EventFacts(
        outcome=_outcome(event, reply.status if reply is not None else None),
        patient_ids=_unique(patients),
        query=serialize(event.request) if event.request is not None else None,
        query_id=query_id,
        query_home=home,
        documents_returned=len(reply.registry_objects) if reply is not None else 0,
        studies_returned=_manifests(reply),
        errors=tuple(e.error_code for e in reply.errors) if reply is not None else (),
    )


def _manifests(reply: AdhocQueryResponse | None) -> int:
    """KOS entries of an ITI-38 answer: one per imaging study."""
    if reply is None:
        return 0
    return sum(
        1
        for e in reply.document_entries
        if (e.format_code is not None and e.format_code.code == v.KOS_FORMAT_CODE)
        or e.mime_type.strip().lower() == v.MIME_DICOM
    )


# --- ITI-39, RAD-69, RAD-75 ------------------------------------------------------------


def _retrieve_reply(event: TransactionEvent) -> RetrieveDocumentSetResponse | None:
    return _decode(
        "retrieve reply",
        parse_retrieve_document_set_response,
        event.reply,
        _known(event, "reply", RetrieveDocumentSetResponse),
    )


def _ref(d: DocumentRequest, study: str | None = None) -> DocumentRef:
    home = d.home_community_id.urn if d.home_community_id is not None else None
    return DocumentRef(d.document_unique_id, d.repository_unique_id, home, study)


def _retrieve(event: TransactionEvent) -> EventFacts:
    request = _decode(
        "ITI-39 request",
        parse_retrieve_document_set_request,
        event.request,
        _known(event, "request", RetrieveDocumentSetRequest),
    )
    reply = _retrieve_reply(event)
    asked = [_ref(d) for d in request.document_requests] if request is not None else []
    returned = [
        DocumentRef(
            d.document_unique_id,
            d.repository_unique_id,
            d.home_community_id.urn if d.home_community_id is not None else None,
        )
        for d in (reply.document_responses if reply is not None else ())
    ]
    kos = sum(
        1
        for d in (reply.document_responses if reply is not None else ())
        if d.mime_type.strip().lower() == v.MIME_DICOM
    )
    return EventFacts(
        outcome=_outcome(event, reply.registry_response.status if reply is not None else None),
        documents=tuple(returned or asked),
        documents_returned=len(returned),
        studies_returned=kos,
        errors=_error_codes(reply),
    )


def _imaging(event: TransactionEvent) -> EventFacts:
    request: RetrieveImagingDocumentSetRequest | None = _decode(
        "imaging retrieve request", parse_retrieve_imaging_document_set_request, event.request
    )
    reply = _retrieve_reply(event)
    study_of: dict[str, str] = {}
    asked: list[DocumentRef] = []
    studies: list[str] = []
    if request is not None:
        for study in request.study_requests:
            studies.append(study.study_instance_uid)
            for series in study.series_requests:
                for d in series.document_requests:
                    study_of[d.document_unique_id] = study.study_instance_uid
                    asked.append(_ref(d, study.study_instance_uid))
    responses = reply.document_responses if reply is not None else ()
    returned = [
        DocumentRef(
            d.document_unique_id,
            d.repository_unique_id,
            d.home_community_id.urn if d.home_community_id is not None else None,
            study_of.get(d.document_unique_id),
        )
        for d in responses
    ]
    with_images = {r.study_instance_uid for r in returned if r.study_instance_uid is not None}
    return EventFacts(
        outcome=_outcome(event, reply.registry_response.status if reply is not None else None),
        documents=tuple(returned or asked),
        studies=_unique(studies),
        documents_returned=len(returned),
        studies_returned=len(with_images),
        errors=_error_codes(reply),
    )


def _error_codes(reply: RetrieveDocumentSetResponse | None) -> tuple[str, ...]:
    if reply is None:
        return ()
    return tuple(e.error_code for e in reply.registry_response.errors)


# --- the requestor (XUA) ----------------------------------------------------------------


def _requestor(blocks: Iterable[Element]) -> Requestor | None:
    security = next((b for b in blocks if b.tag == ns.q(ns.WSSE, "Security")), None)
    if security is None:
        return None
    assertion = parse_security(security).assertion
    if assertion is None:
        return None
    return Requestor(
        user_id=assertion.audit_user_id(),
        user_name=_attempt("XUA subject-id", assertion.subject_id),
        role=_attempt("XUA role", lambda: _code(assertion, "role")),
        purpose_of_use=_attempt("XUA purpose of use", lambda: _code(assertion, "purpose")),
        home_community_id=_attempt(
            "XUA homeCommunityId", lambda: assertion.home_community_id().oid
        ),
        patient_id=_attempt("XUA resource-id", lambda: _resource(assertion)),
    )


def _code(assertion: Assertion, which: str) -> tuple[str, str, str]:
    coded = assertion.role() if which == "role" else assertion.purpose_of_use()
    system = coded.code_system_name or coded.code_system or "unknown"
    return coded.code, system, coded.display_name or coded.code


def _resource(assertion: Assertion) -> str | None:
    pid = assertion.resource_id()
    return pid.cx if pid is not None else None


class FactsConsumer(Protocol):
    """An observer that takes an already decoded event (audit trail, counters)."""

    def record(self, event: TransactionEvent, facts: EventFacts) -> None: ...


class DecodedObservers:
    """A :class:`~imagebridge.transport.events.TransactionObserver` that decodes each event
    once and hands the facts to every consumer; one that raises is logged and skipped."""

    def __init__(self, consumers: Iterable[FactsConsumer]) -> None:
        self._consumers = list(consumers)

    def observe(self, event: TransactionEvent) -> None:
        facts = facts_of(event)
        for consumer in self._consumers:
            try:
                consumer.record(event, facts)
            except Exception:
                log.exception("%s failed on a %s event", type(consumer).__name__, event.transaction)
