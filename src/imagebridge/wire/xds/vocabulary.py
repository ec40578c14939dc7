"""Every XDS constant in one place: error codes, stored-query UUIDs, schemes, slots.

Status and severity URNs are the enums of :mod:`imagebridge.model.outcome`.
"""

from __future__ import annotations

from typing import Final

# --- error codes (ITI TF-3 Table 4.2.4.1-2 family) ------------------------------------
XDS_REGISTRY_ERROR: Final = "XDSRegistryError"
XDS_REPOSITORY_ERROR: Final = "XDSRepositoryError"
XDS_REGISTRY_BUSY: Final = "XDSRegistryBusy"
XDS_REPOSITORY_BUSY: Final = "XDSRepositoryBusy"
XDS_REGISTRY_OUT_OF_RESOURCES: Final = "XDSRegistryOutOfResources"
XDS_REPOSITORY_OUT_OF_RESOURCES: Final = "XDSRepositoryOutOfResources"
XDS_REGISTRY_NOT_AVAILABLE: Final = "XDSRegistryNotAvailable"
XDS_TOO_MANY_RESULTS: Final = "XDSTooManyResults"
XDS_UNKNOWN_PATIENT_ID: Final = "XDSUnknownPatientId"
XDS_RESULT_NOT_SINGLE_PATIENT: Final = "XDSResultNotSinglePatient"
XDS_UNKNOWN_STORED_QUERY: Final = "XDSUnknownStoredQuery"
XDS_STORED_QUERY_MISSING_PARAM: Final = "XDSStoredQueryMissingParam"
XDS_STORED_QUERY_PARAM_NUMBER: Final = "XDSStoredQueryParamNumber"
XDS_UNKNOWN_REPOSITORY_ID: Final = "XDSUnknownRepositoryId"
XDS_DOCUMENT_UNIQUE_ID_ERROR: Final = "XDSDocumentUniqueIdError"
XDS_UNKNOWN_COMMUNITY: Final = "XDSUnknownCommunity"
XDS_MISSING_HOME_COMMUNITY_ID: Final = "XDSMissingHomeCommunityId"
XDS_UNAVAILABLE_COMMUNITY: Final = "XDSUnavailableCommunity"
XDS_PATIENT_ID_DOES_NOT_MATCH: Final = "XDSPatientIdDoesNotMatch"
