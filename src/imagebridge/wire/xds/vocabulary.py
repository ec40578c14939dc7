"""Every XDS constant in one place: error codes, stored-query UUIDs, schemes, slots.

Status and severity URNs are the enums of :mod:`imagebridge.model.outcome`.
"""

from __future__ import annotations

from typing import Final

from imagebridge.model.xds import AvailabilityStatus, DocumentEntryType
from imagebridge.model.xds_query import StoredQueryType

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

# --- Cross Gateway Query [ITI-38]: ebRIM/XDS metadata vocabulary ------------------------
# Stored-query ids, DocumentEntry objectTypes and availability status URNs are the
# enums StoredQueryType, DocumentEntryType and AvailabilityStatus of the model; the
# constants below are their values under the names the rest of the code greps for.

FIND_DOCUMENTS: Final = StoredQueryType.FIND_DOCUMENTS.value
FIND_SUBMISSION_SETS: Final = StoredQueryType.FIND_SUBMISSION_SETS.value
FIND_FOLDERS: Final = StoredQueryType.FIND_FOLDERS.value
GET_ALL: Final = StoredQueryType.GET_ALL.value
GET_DOCUMENTS: Final = StoredQueryType.GET_DOCUMENTS.value
GET_FOLDERS: Final = StoredQueryType.GET_FOLDERS.value
GET_ASSOCIATIONS: Final = StoredQueryType.GET_ASSOCIATIONS.value
GET_DOCUMENTS_AND_ASSOCIATIONS: Final = StoredQueryType.GET_DOCUMENTS_AND_ASSOCIATIONS.value
GET_SUBMISSION_SETS: Final = StoredQueryType.GET_SUBMISSION_SETS.value
GET_SUBMISSION_SET_AND_CONTENTS: Final = StoredQueryType.GET_SUBMISSION_SET_AND_CONTENTS.value
GET_FOLDER_AND_CONTENTS: Final = StoredQueryType.GET_FOLDER_AND_CONTENTS.value
GET_FOLDERS_FOR_DOCUMENT: Final = StoredQueryType.GET_FOLDERS_FOR_DOCUMENT.value
GET_RELATED_DOCUMENTS: Final = StoredQueryType.GET_RELATED_DOCUMENTS.value
FIND_DOCUMENTS_BY_REFERENCE_ID: Final = StoredQueryType.FIND_DOCUMENTS_BY_REFERENCE_ID.value

DOCUMENT_ENTRY_STABLE: Final = DocumentEntryType.STABLE.value
DOCUMENT_ENTRY_ON_DEMAND: Final = DocumentEntryType.ON_DEMAND.value

STATUS_SUBMITTED: Final = AvailabilityStatus.SUBMITTED.value
STATUS_APPROVED: Final = AvailabilityStatus.APPROVED.value
STATUS_DEPRECATED: Final = AvailabilityStatus.DEPRECATED.value

# Classification schemes (ITI TF-3 4.2.5); author uses nodeRepresentation "".
DE_AUTHOR: Final = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE: Final = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY_CODE: Final = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_EVENT_CODE_LIST: Final = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_FORMAT_CODE: Final = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_HEALTHCARE_FACILITY_TYPE_CODE: Final = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING_CODE: Final = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE: Final = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
SS_AUTHOR: Final = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE_CODE: Final = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
FOLDER_CODE_LIST: Final = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"
ASSOCIATION_DOCUMENTATION: Final = "urn:uuid:abd807a3-4432-4053-87b4-fd82c643d1f3"

# Classification nodes.
LIMITED_METADATA_NODE: Final = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85"
SUBMISSION_SET_NODE: Final = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FOLDER_NODE: Final = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"

# ExternalIdentifier schemes and the Name each one carries.
DE_PATIENT_ID: Final = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID: Final = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_PATIENT_ID: Final = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_UNIQUE_ID: Final = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID: Final = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
FOLDER_PATIENT_ID: Final = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
FOLDER_UNIQUE_ID: Final = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"
DE_PATIENT_ID_NAME: Final = "XDSDocumentEntry.patientId"
DE_UNIQUE_ID_NAME: Final = "XDSDocumentEntry.uniqueId"

# ebRIM objectTypes written by some partners on Classification/ExternalIdentifier.
OBJECT_TYPE_CLASSIFICATION: Final = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
)
OBJECT_TYPE_EXTERNAL_IDENTIFIER: Final = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
)

# Association types.
ASSOCIATION_HAS_MEMBER: Final = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
ASSOCIATION_RPLC: Final = "urn:ihe:iti:2007:AssociationType:RPLC"
ASSOCIATION_APND: Final = "urn:ihe:iti:2007:AssociationType:APND"
ASSOCIATION_XFRM: Final = "urn:ihe:iti:2007:AssociationType:XFRM"
ASSOCIATION_XFRM_RPLC: Final = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
ASSOCIATION_SIGNS: Final = "urn:ihe:iti:2007:AssociationType:signs"
ASSOCIATION_IS_SNAPSHOT_OF: Final = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"

# DocumentEntry slot names (case-sensitive).
SLOT_CREATION_TIME: Final = "creationTime"
SLOT_HASH: Final = "hash"
SLOT_SIZE: Final = "size"
SLOT_LANGUAGE_CODE: Final = "languageCode"
SLOT_REPOSITORY_UNIQUE_ID: Final = "repositoryUniqueId"
SLOT_SERVICE_START_TIME: Final = "serviceStartTime"
SLOT_SERVICE_STOP_TIME: Final = "serviceStopTime"
SLOT_SOURCE_PATIENT_ID: Final = "sourcePatientId"
SLOT_SOURCE_PATIENT_INFO: Final = "sourcePatientInfo"
SLOT_LEGAL_AUTHENTICATOR: Final = "legalAuthenticator"
SLOT_REFERENCE_ID_LIST: Final = "urn:ihe:iti:xds:2013:referenceIdList"
SLOT_URI: Final = "URI"
SLOT_DOCUMENT_AVAILABILITY: Final = "documentAvailability"
SLOT_CODING_SCHEME: Final = "codingScheme"
SLOT_AUTHOR_PERSON: Final = "authorPerson"
SLOT_AUTHOR_INSTITUTION: Final = "authorInstitution"
SLOT_AUTHOR_ROLE: Final = "authorRole"
SLOT_AUTHOR_SPECIALTY: Final = "authorSpecialty"
SLOT_AUTHOR_TELECOMMUNICATION: Final = "authorTelecommunication"

DOCUMENT_AVAILABILITY_ONLINE: Final = "urn:ihe:iti:2010:DocumentAvailability:Online"
DOCUMENT_AVAILABILITY_OFFLINE: Final = "urn:ihe:iti:2010:DocumentAvailability:Offline"

# Reference ID types (CXi component 5) for urn:ihe:iti:xds:2013:referenceIdList.
REFERENCE_ID_ACCESSION: Final = "urn:ihe:iti:xds:2013:accession"
REFERENCE_ID_STUDY_INSTANCE_UID: Final = "urn:ihe:iti:xds:2016:studyInstanceUID"
REFERENCE_ID_ORDER: Final = "urn:ihe:iti:xds:2013:order"
REFERENCE_ID_REFERRAL: Final = "urn:ihe:iti:xds:2013:referral"
REFERENCE_ID_ENCOUNTER: Final = "urn:ihe:iti:xds:2015:encounterId"
REFERENCE_ID_UNIQUE_ID: Final = "urn:ihe:iti:xds:2013:uniqueId"

# Stored-query parameter names (ITI TF-2 3.18.4.1.2.3.7).
QP_DE_PATIENT_ID: Final = "$XDSDocumentEntryPatientId"
QP_DE_CLASS_CODE: Final = "$XDSDocumentEntryClassCode"
QP_DE_TYPE_CODE: Final = "$XDSDocumentEntryTypeCode"
QP_DE_PRACTICE_SETTING_CODE: Final = "$XDSDocumentEntryPracticeSettingCode"
QP_DE_CREATION_TIME_FROM: Final = "$XDSDocumentEntryCreationTimeFrom"
QP_DE_CREATION_TIME_TO: Final = "$XDSDocumentEntryCreationTimeTo"
QP_DE_SERVICE_START_TIME_FROM: Final = "$XDSDocumentEntryServiceStartTimeFrom"
QP_DE_SERVICE_START_TIME_TO: Final = "$XDSDocumentEntryServiceStartTimeTo"
QP_DE_SERVICE_STOP_TIME_FROM: Final = "$XDSDocumentEntryServiceStopTimeFrom"
QP_DE_SERVICE_STOP_TIME_TO: Final = "$XDSDocumentEntryServiceStopTimeTo"
QP_DE_HEALTHCARE_FACILITY_TYPE_CODE: Final = "$XDSDocumentEntryHealthcareFacilityTypeCode"
QP_DE_EVENT_CODE_LIST: Final = "$XDSDocumentEntryEventCodeList"
QP_DE_CONFIDENTIALITY_CODE: Final = "$XDSDocumentEntryConfidentialityCode"
QP_DE_AUTHOR_PERSON: Final = "$XDSDocumentEntryAuthorPerson"
QP_DE_FORMAT_CODE: Final = "$XDSDocumentEntryFormatCode"
QP_DE_STATUS: Final = "$XDSDocumentEntryStatus"
QP_DE_TYPE: Final = "$XDSDocumentEntryType"
QP_DE_REFERENCE_ID_LIST: Final = "$XDSDocumentEntryReferenceIdList"
QP_DE_ENTRY_UUID: Final = "$XDSDocumentEntryEntryUUID"
QP_DE_UNIQUE_ID: Final = "$XDSDocumentEntryUniqueId"
QP_HOME_COMMUNITY_ID: Final = "$homeCommunityId"
QP_PATIENT_ID: Final = "$patientId"
QP_UUID: Final = "$uuid"
QP_METADATA_LEVEL: Final = "$MetadataLevel"
QP_SS_PATIENT_ID: Final = "$XDSSubmissionSetPatientId"
QP_SS_SOURCE_ID: Final = "$XDSSubmissionSetSourceId"
QP_SS_SUBMISSION_TIME_FROM: Final = "$XDSSubmissionSetSubmissionTimeFrom"
QP_SS_SUBMISSION_TIME_TO: Final = "$XDSSubmissionSetSubmissionTimeTo"
QP_SS_AUTHOR_PERSON: Final = "$XDSSubmissionSetAuthorPerson"
QP_SS_CONTENT_TYPE: Final = "$XDSSubmissionSetContentType"
QP_SS_STATUS: Final = "$XDSSubmissionSetStatus"
QP_SS_ENTRY_UUID: Final = "$XDSSubmissionSetEntryUUID"
QP_SS_UNIQUE_ID: Final = "$XDSSubmissionSetUniqueId"
QP_FOLDER_PATIENT_ID: Final = "$XDSFolderPatientId"
QP_FOLDER_STATUS: Final = "$XDSFolderStatus"
QP_FOLDER_ENTRY_UUID: Final = "$XDSFolderEntryUUID"
QP_FOLDER_UNIQUE_ID: Final = "$XDSFolderUniqueId"
QP_ASSOCIATION_TYPES: Final = "$AssociationTypes"

# Parameters that take exactly one value (a second one is XDSStoredQueryParamNumber).
SINGLE_VALUED_PARAMETERS: Final = frozenset(
    {
        QP_DE_PATIENT_ID,
        QP_DE_CREATION_TIME_FROM,
        QP_DE_CREATION_TIME_TO,
        QP_DE_SERVICE_START_TIME_FROM,
        QP_DE_SERVICE_START_TIME_TO,
        QP_DE_SERVICE_STOP_TIME_FROM,
        QP_DE_SERVICE_STOP_TIME_TO,
        QP_HOME_COMMUNITY_ID,
        QP_PATIENT_ID,
        QP_METADATA_LEVEL,
        QP_SS_PATIENT_ID,
        QP_SS_SUBMISSION_TIME_FROM,
        QP_SS_SUBMISSION_TIME_TO,
        QP_SS_AUTHOR_PERSON,
        QP_SS_ENTRY_UUID,
        QP_SS_UNIQUE_ID,
        QP_FOLDER_PATIENT_ID,
        QP_FOLDER_ENTRY_UUID,
        QP_FOLDER_UNIQUE_ID,
    }
)
# Parameters where a repeated Slot means AND (values inside one Slot mean OR).
AND_OR_PARAMETERS: Final = frozenset({QP_DE_EVENT_CODE_LIST, QP_DE_CONFIDENTIALITY_CODE})

# KOS manifest (RAD TF-3 4.68, Carequality imaging IG 8.7).
KOS_FORMAT_CODE: Final = "1.2.840.10008.5.1.4.1.1.88.59"
KOS_FORMAT_CODE_SCHEME: Final = "1.2.840.10008.2.6.1"
KOS_FORMAT_CODE_DISPLAY: Final = "Key Object Selection Document"
MIME_DICOM: Final = "application/dicom"

# Delayed Document Assembly: size 0 and the SHA-1 of nothing mean "assembled at retrieve".
DELAYED_ASSEMBLY_SIZE: Final = 0
DELAYED_ASSEMBLY_HASH: Final = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
