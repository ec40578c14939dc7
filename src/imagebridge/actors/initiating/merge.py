"""Cross Gateway Query [ITI-38] and Cross Gateway Retrieve [ITI-39], Initiating Gateway:
the answers of several Responding Gateways merged into one.

Pure functions over what a fan-out collected: one ``(Community, answer)``
pair per community, in the order the communities were asked, where the
answer is the partner's reply, the exception its call raised, or a
:class:`CommunityFailure` (a fan-out that reports outcomes rather than
exceptions maps each failed outcome to one).  The rules are ITI TF-2
3.38.4.1.3 / 3.39.4.1.3 as digested in the spec notes (section 6):

* registry objects (and retrieved documents) are concatenated in community
  order, each keeping the ``home`` its community gave it;
* every partner RegistryError is kept with the location the partner gave it;
  one without a location gets the community's homeCommunityId, so the
  consumer can tell which gateway said what;
* ``XDSUnknownPatientId`` from a responder is dropped (the patient is simply
  not known there), unless the caller asks to keep it;
* a community that failed as a whole contributes one RegistryError: its
  exception's XDS code (``XDSUnavailableCommunity`` when unreachable, timed
  out, or when the failure has no XDS code), location = its homeCommunityId;
* objects returned without ``home`` are kept and reported as
  ``XDSMissingHomeCommunityId`` naming the gateway and the element ids;
* a partner Failure that carries no error at all is reported as
  ``XDSRegistryError`` rather than dropped silently;
* the status is consolidated (:func:`~imagebridge.model.outcome.consolidate`):
  no errors Success (warnings allowed), results and errors PartialSuccess,
  only errors Failure.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from imagebridge.actors.initiating.client import ReceivedDocument, RetrieveResult
from imagebridge.errors import ImageBridgeError
from imagebridge.model.directory import Community
from imagebridge.model.outcome import RegistryError, Severity, Status, consolidate
from imagebridge.model.retrieve import DocumentResponse, RetrieveDocumentSetResponse
from imagebridge.model.xds_query import AdhocQueryResponse, ResponseObject
from imagebridge.wire.xds import vocabulary as v

log = logging.getLogger(__name__)

_MAX_IDS_IN_CONTEXT = 20


@dataclass(frozen=True, slots=True)
class CommunityFailure:
    """A community whose call failed as a whole: the XDS error code and a detail for people.

    ``code`` ``None`` stands for ``XDSUnavailableCommunity``.  The detail never
    carries patient data.
    """

    code: str | None = None
    detail: str = ""


QueryAnswer = AdhocQueryResponse | CommunityFailure | Exception
"""What one community's Cross Gateway Query [ITI-38] came to."""

RetrieveAnswer = RetrieveResult | CommunityFailure | Exception
"""What one community's Cross Gateway Retrieve [ITI-39] came to."""


def _label(community: Community) -> str:
    urn = community.home_community_id.urn
    return f"{community.name} ({urn})" if community.name else urn


def community_error(community: Community, failure: CommunityFailure | Exception) -> RegistryError:
    """Cross Gateway Query/Retrieve [ITI-38, ITI-39], Initiating Gateway: the one RegistryError
    for a community that failed as a whole, located at its homeCommunityId."""
    if isinstance(failure, CommunityFailure):
        code, detail = failure.code, failure.detail
    elif isinstance(failure, ImageBridgeError):
        code, detail = failure.xds_error_code, f"{type(failure).__name__}: {failure.message}"
    else:
        # Not an error of ours nor of the partner's making: a bug or a transport
        # error the client did not wrap.  Reported, never dropped.
        log.warning(
            "merge: %s from the call to %s",
            type(failure).__name__,
            _label(community),
            exc_info=failure,
        )
        code, detail = None, type(failure).__name__
    context = f"Community {_label(community)} did not answer usefully"
    return RegistryError(
        code or v.XDS_UNAVAILABLE_COMMUNITY,
        f"{context}: {detail}" if detail else context,
        Severity.ERROR,
        community.home_community_id.urn,
    )


def _located(error: RegistryError, community: Community) -> RegistryError:
    if error.location and error.location.strip():
        return error
    return dataclasses.replace(error, location=community.home_community_id.urn)


def _partner_errors(
    errors: Iterable[RegistryError], community: Community, *, keep_unknown_patient: bool
) -> list[RegistryError]:
    return [
        _located(e, community)
        for e in errors
        if keep_unknown_patient or e.error_code != v.XDS_UNKNOWN_PATIENT_ID
    ]


def _silent_failure(community: Community) -> RegistryError:
    return RegistryError(
        v.XDS_REGISTRY_ERROR,
        f"Community {_label(community)} answered Failure without a RegistryError",
        Severity.ERROR,
        community.home_community_id.urn,
    )


def _missing_home(community: Community, ids: tuple[str, ...]) -> RegistryError:
    shown = ", ".join(ids[:_MAX_IDS_IN_CONTEXT])
    more = f" and {len(ids) - _MAX_IDS_IN_CONTEXT} more" if len(ids) > _MAX_IDS_IN_CONTEXT else ""
    return RegistryError(
        v.XDS_MISSING_HOME_COMMUNITY_ID,
        f"Responding Gateway {_label(community)} returned objects without home: {shown}{more}",
        Severity.ERROR,
        community.home_community_id.urn,
    )


def merge_query_responses(
    answers: Iterable[tuple[Community, QueryAnswer]], *, keep_unknown_patient: bool = False
) -> AdhocQueryResponse:
    """Cross Gateway Query [ITI-38], Initiating Gateway: one AdhocQueryResponse from the
    answers of several communities (see the module notes for the rules)."""
    objects: list[ResponseObject] = []
    errors: list[RegistryError] = []
    for community, answer in answers:
        if not isinstance(answer, AdhocQueryResponse):
            errors.append(community_error(community, answer))
            continue
        objects.extend(answer.registry_objects)
        if answer.status is Status.FAILURE and not answer.errors:
            errors.append(_silent_failure(community))
        errors.extend(
            _partner_errors(answer.errors, community, keep_unknown_patient=keep_unknown_patient)
        )
        without_home = answer.ids_without_home()
        if without_home:
            errors.append(_missing_home(community, without_home))
    return AdhocQueryResponse(
        status=consolidate(bool(objects), errors),
        registry_objects=tuple(objects),
        errors=tuple(errors),
    )


@dataclass(slots=True)
class MergedRetrieve:
    """Cross Gateway Retrieve [ITI-39], Initiating Gateway: the documents of every community
    and the errors, under one consolidated status.

    It owns the per-community :class:`RetrieveResult` objects it was built from
    (their received parts back the documents); close it to release them.
    """

    documents: tuple[ReceivedDocument, ...] = ()
    errors: tuple[RegistryError, ...] = ()
    results: tuple[RetrieveResult, ...] = field(default=(), repr=False)

    @property
    def status(self) -> Status:
        return consolidate(bool(self.documents), self.errors)

    @property
    def document_responses(self) -> tuple[DocumentResponse, ...]:
        return tuple(d.response for d in self.documents)

    def response(self) -> RetrieveDocumentSetResponse:
        """The merged answer as a model (documents still reference the partners' parts)."""
        return RetrieveDocumentSetResponse.consolidated(self.document_responses, self.errors)

    def close(self) -> None:
        for result in self.results:
            result.close()

    def __enter__(self) -> MergedRetrieve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_home(document: ReceivedDocument, community: Community) -> ReceivedDocument:
    """The document, with the community asked as HomeCommunityId if the echo came back empty."""
    if document.response.home_community_id is not None:
        return document
    response = dataclasses.replace(document.response, home_community_id=community.home_community_id)
    return ReceivedDocument(response, document.body)


def merge_retrieve_results(answers: Iterable[tuple[Community, RetrieveAnswer]]) -> MergedRetrieve:
    """Cross Gateway Retrieve [ITI-39], Initiating Gateway: one result from the answers of
    several communities; it takes ownership of the :class:`RetrieveResult` objects given."""
    documents: list[ReceivedDocument] = []
    errors: list[RegistryError] = []
    results: list[RetrieveResult] = []
    for community, answer in answers:
        if not isinstance(answer, RetrieveResult):
            errors.append(community_error(community, answer))
            continue
        results.append(answer)
        documents.extend(_with_home(d, community) for d in answer.documents)
        # XDSUnknownPatientId makes no sense for a retrieve; every error is kept.
        errors.extend(_partner_errors(answer.errors, community, keep_unknown_patient=True))
    return MergedRetrieve(tuple(documents), tuple(errors), tuple(results))
