"""Responding Gateway access control: XUA verification [ITI-40] before the handler, and the
purpose-of-use / consent policy answered in-band.

:class:`XuaGuard` is the ``verifier`` hook of
:func:`~imagebridge.transport.server.soap_routes`: it verifies the
``wsse:Security`` header before the handler runs; what it raises becomes a
SOAP fault with the wsse subcode (carequality-qbd.md 17 R5/R6).  The
Responding Imaging Gateway enforces no access control (guide 8.4.1), so for
RAD-75 an assertion is verified when present, for the audit, and a bad one
is logged, not refused.

:func:`enforce_access` wraps the endpoints' handlers with the
:class:`~imagebridge.security.policy.AccessPolicy`: a refusal is a business
answer (R7/R8), written the way each responder writes its own errors:
ITI-38 ``AdhocQueryResponse`` and ITI-39 ``RetrieveDocumentSetResponse`` with
status Failure and an ``XDSRegistryError`` whose codeContext says "Access
denied: ..." or "Additional documentation needed: ..."; ITI-55 an HL7 ``AE``
with the XCPD issue code ``AnswerNotAvailable`` (existence is not revealed).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from imagebridge.errors import PatientDiscoveryQueryError, WsSecurityError
from imagebridge.model.caller import VerifiedCaller
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, Severity, Status
from imagebridge.model.retrieve import RetrieveDocumentSetResponse
from imagebridge.model.xcpd import II, AcknowledgementDetail, Device, response_for_query_error
from imagebridge.model.xds_query import AdhocQueryResponse
from imagebridge.security.policy import AccessPolicy, Refusal
from imagebridge.security.saml_verifier import AssertionVerifier
from imagebridge.transactions import Transaction
from imagebridge.transport.messages import SoapReply, SoapRequest, StreamedReply
from imagebridge.transport.server import Handler, SoapEndpoint
from imagebridge.wire import ns
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query_header,
    render_patient_discovery_response,
)
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import render_adhoc_query_response
from imagebridge.wire.xds.retrieve import render_retrieve_document_set_response

log = logging.getLogger(__name__)

GATEWAY_TRANSACTIONS: Final = frozenset(
    {Transaction.ITI_55, Transaction.ITI_38, Transaction.ITI_39}
)
"""Where Carequality requires the XUA assertion (carequality-qbd.md 10.2)."""
_SECURITY = ns.q(ns.WSSE, "Security")


class XuaGuard:
    """The ``verifier`` hook: XUA verification before the handler (ITI-40 X-Service Provider).

    ``required``: no valid assertion, no answer (a fault).  ``audit_only``:
    verified when present, a failure is logged and the request answered
    (RAD-75).  Any other transaction: verified when present, refused if bad.
    """

    def __init__(
        self,
        verifier: AssertionVerifier,
        *,
        required: frozenset[Transaction] = GATEWAY_TRANSACTIONS,
        audit_only: frozenset[Transaction] = frozenset({Transaction.RAD_75}),
    ) -> None:
        self._verifier = verifier
        self._required = required
        self._audit_only = audit_only

    async def __call__(self, request: SoapRequest) -> VerifiedCaller | None:
        transaction = request.spec.transaction
        if transaction not in self._required and not any(
            b.tag == _SECURITY for b in request.header_blocks
        ):
            return None
        try:
            return self._verifier.verify(request.header_blocks)
        except WsSecurityError as exc:
            if transaction in self._audit_only and transaction not in self._required:
                log.warning(
                    "%s %s: XUA assertion not accepted (%s), answered without access control",
                    transaction.value,
                    request.addressing.message_id,
                    type(exc).__name__,
                )
                return None
            log.info(
                "%s %s refused: %s: %s",
                transaction.value,
                request.addressing.message_id,
                type(exc).__name__,
                exc.message,
            )
            raise


class _PatientDiscoveryRefused(PatientDiscoveryQueryError):
    """ITI-55 refused by access policy: AE, AnswerNotAvailable (carequality-qbd.md 17 R7)."""

    hl7_detected_issue_management_code = "AnswerNotAvailable"


def enforce_access(
    endpoints: Sequence[SoapEndpoint],
    policy: AccessPolicy,
    home: HomeCommunityId,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[SoapEndpoint]:
    """*endpoints* whose handlers first ask *policy*; a refusal is answered in-band."""
    answer = _Refusals(home, clock, new_id)
    return [
        dataclasses.replace(
            e,
            handlers={t: _guarded(t, h, policy, answer) for t, h in e.handlers.items()},
        )
        for e in endpoints
    ]


def _guarded(
    transaction: Transaction, handler: Handler, policy: AccessPolicy, answer: _Refusals
) -> Handler:
    async def guarded(request: SoapRequest) -> SoapReply | StreamedReply:
        refusal = policy.decide(transaction, request.caller)
        if refusal is None:
            return await handler(request)
        log.info(
            "%s %s refused in-band: %s",
            transaction.value,
            request.addressing.message_id,
            refusal.kind.value,
        )
        return answer.reply(transaction, refusal, request)

    return guarded


@dataclasses.dataclass(frozen=True, slots=True)
class _Refusals:
    home: HomeCommunityId
    clock: Callable[[], datetime]
    new_id: Callable[[], str]

    def reply(self, transaction: Transaction, refusal: Refusal, request: SoapRequest) -> SoapReply:
        return refusal_reply(
            transaction,
            refusal,
            request,
            self.home,
            message_id=self.new_id(),
            now=self.clock(),
        )


def refusal_reply(
    transaction: Transaction,
    refusal: Refusal,
    request: SoapRequest,
    home: HomeCommunityId,
    *,
    message_id: str,
    now: datetime,
) -> SoapReply:
    """The business answer for *refusal* in *transaction*'s own response message."""
    error = RegistryError(v.XDS_REGISTRY_ERROR, refusal.code_context, Severity.ERROR, home.urn)
    if transaction is Transaction.ITI_38:
        return SoapReply(
            render_adhoc_query_response(AdhocQueryResponse(status=Status.FAILURE, errors=(error,)))
        )
    if transaction is Transaction.ITI_55:
        header = parse_patient_discovery_query_header(request.payload)
        response = response_for_query_error(
            header,
            _PatientDiscoveryRefused(refusal.code_context),
            message_id=II(home.oid, message_id),
            creation_time=now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
            sender=Device(II(home.oid), home),
        )
        ack = dataclasses.replace(
            response.acknowledgement,
            details=(AcknowledgementDetail("E", None, refusal.code_context),),
        )
        return SoapReply(
            render_patient_discovery_response(dataclasses.replace(response, acknowledgement=ack))
        )
    # ITI-39 and the retrieve family answer with a RegistryResponse in RetrieveDocumentSetResponse.
    return SoapReply(
        render_retrieve_document_set_response(
            RetrieveDocumentSetResponse.consolidated((), (error,))
        )
    )
