"""The one table of transactions: actions, payload elements, packaging, endpoints, audit.

Routing (server), clients and audit are all driven from :data:`TRANSACTIONS`,
so an action URI is written exactly once in the code base.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from imagebridge.wire import ns


class Transaction(Enum):
    """The IHE transactions imagebridge sends or answers."""

    ITI_55 = "ITI-55"
    ITI_56 = "ITI-56"
    ITI_38 = "ITI-38"
    ITI_39 = "ITI-39"
    ITI_18 = "ITI-18"
    ITI_43 = "ITI-43"
    RAD_69 = "RAD-69"
    RAD_75 = "RAD-75"


@dataclass(frozen=True, slots=True)
class TransactionSpec:
    """Everything the SOAP layer needs to know about one transaction."""

    transaction: Transaction
    name: str
    request_action: str
    response_action: str
    request_element: tuple[str, str]
    response_element: tuple[str, str]
    mtom: bool
    endpoint: str | None
    """Path at which imagebridge answers it (None: we only send it)."""

    @property
    def code(self) -> str:
        return self.transaction.value


_HL7_REQ = (ns.HL7, "PRPA_IN201305UV02")
_HL7_RESP = (ns.HL7, "PRPA_IN201306UV02")
_ADHOC_REQ = (ns.QUERY, "AdhocQueryRequest")
_ADHOC_RESP = (ns.QUERY, "AdhocQueryResponse")
_RDS_REQ = (ns.XDS, "RetrieveDocumentSetRequest")
_RDS_RESP = (ns.XDS, "RetrieveDocumentSetResponse")
_RIDS_REQ = (ns.XDSI, "RetrieveImagingDocumentSetRequest")

TRANSACTIONS: Final[dict[Transaction, TransactionSpec]] = {
    spec.transaction: spec
    for spec in (
        TransactionSpec(
            Transaction.ITI_55,
            "Cross Gateway Patient Discovery",
            "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
            "urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery",
            _HL7_REQ,
            _HL7_RESP,
            mtom=False,
            endpoint="/xcpd",
        ),
        TransactionSpec(
            Transaction.ITI_56,
            "Patient Location Query",
            "urn:ihe:iti:2009:PatientLocationQuery",
            "urn:ihe:iti:2009:PatientLocationQueryResponse",
            (ns.XCPD, "PatientLocationQueryRequest"),
            (ns.XCPD, "PatientLocationQueryResponse"),
            mtom=False,
            endpoint=None,
        ),
        TransactionSpec(
            Transaction.ITI_38,
            "Cross Gateway Query",
            "urn:ihe:iti:2007:CrossGatewayQuery",
            "urn:ihe:iti:2007:CrossGatewayQueryResponse",
            _ADHOC_REQ,
            _ADHOC_RESP,
            mtom=False,
            endpoint="/xca/query",
        ),
        TransactionSpec(
            Transaction.ITI_39,
            "Cross Gateway Retrieve",
            "urn:ihe:iti:2007:CrossGatewayRetrieve",
            "urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
            _RDS_REQ,
            _RDS_RESP,
            mtom=True,
            endpoint="/xca/retrieve",
        ),
        TransactionSpec(
            Transaction.ITI_18,
            "Registry Stored Query",
            "urn:ihe:iti:2007:RegistryStoredQuery",
            "urn:ihe:iti:2007:RegistryStoredQueryResponse",
            _ADHOC_REQ,
            _ADHOC_RESP,
            mtom=False,
            endpoint=None,
        ),
        TransactionSpec(
            Transaction.ITI_43,
            "Retrieve Document Set",
            "urn:ihe:iti:2007:RetrieveDocumentSet",
            "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
            _RDS_REQ,
            _RDS_RESP,
            mtom=True,
            endpoint=None,
        ),
        TransactionSpec(
            Transaction.RAD_69,
            "Retrieve Imaging Document Set",
            "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
            # RAD-69 answers with the ITI-43 response action (an ITI URN).
            "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
            _RIDS_REQ,
            _RDS_RESP,
            mtom=True,
            # Also answered at /iig/retrieve: the Initiating Imaging Gateway, which
            # forwards it by community as RAD-75.
            endpoint="/ids/retrieve",
        ),
        TransactionSpec(
            Transaction.RAD_75,
            "Cross Gateway Retrieve Imaging Document Set",
            "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet",
            "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSetResponse",
            _RIDS_REQ,
            _RDS_RESP,
            mtom=True,
            endpoint="/xcai/retrieve",
        ),
    )
}

_BY_REQUEST_ACTION: Final = {s.request_action: s for s in TRANSACTIONS.values()}


def by_request_action(action: str) -> TransactionSpec | None:
    """The transaction whose request carries *action* (whitespace-tolerant), or None."""
    return _BY_REQUEST_ACTION.get(action.strip())


def spec_of(transaction: Transaction) -> TransactionSpec:
    """The table row of *transaction*."""
    return TRANSACTIONS[transaction]
