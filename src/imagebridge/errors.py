"""The one exception tree of imagebridge.

Every error that can reach the wire knows what it becomes there: a SOAP 1.2
fault (code and optional subcode) and, for ebXML transactions answered
in-band, an XDS error code.  The transport layer translates an error exactly
once, at its boundary; nothing else inspects messages or types by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

SOAP_ENV_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


class FaultCode(Enum):
    """The five SOAP 1.2 fault codes (SOAP 1.2 Part 1, 5.4.6)."""

    VERSION_MISMATCH = "VersionMismatch"
    MUST_UNDERSTAND = "MustUnderstand"
    DATA_ENCODING_UNKNOWN = "DataEncodingUnknown"
    SENDER = "Sender"
    RECEIVER = "Receiver"


@dataclass(frozen=True, slots=True)
class QName:
    """A namespace-qualified name, written ``{namespace}local`` in Clark notation."""

    namespace: str
    local: str

    @property
    def clark(self) -> str:
        return f"{{{self.namespace}}}{self.local}"

    def __str__(self) -> str:
        return self.clark


class ImageBridgeError(Exception):
    """Root of every error raised by imagebridge."""

    fault_code: ClassVar[FaultCode] = FaultCode.RECEIVER
    fault_subcode: ClassVar[QName | None] = None
    xds_error_code: ClassVar[str | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WireError(ImageBridgeError):
    """A message could not be decoded; the sender is at fault."""

    fault_code = FaultCode.SENDER


# --- XML ---------------------------------------------------------------------


class XmlError(WireError):
    """Untrusted XML was refused by the hardened parser."""


class XmlMalformed(XmlError):
    """The bytes are not well-formed XML."""


class XmlTooLarge(XmlError):
    """The document is larger than the configured limit."""


class XmlTooDeep(XmlError):
    """Elements nest deeper than the configured limit."""


class XmlForbiddenConstruct(XmlError):
    """A construct that untrusted input may never carry."""


class XmlDtdForbidden(XmlForbiddenConstruct):
    """A DOCTYPE declaration (internal or external DTD)."""


class XmlEntityForbidden(XmlForbiddenConstruct):
    """An entity declaration or a reference to a non-predefined entity."""


class XmlProcessingInstructionForbidden(XmlForbiddenConstruct):
    """A processing instruction inside the document (not the XML declaration)."""


# --- SOAP and WS-Addressing ----------------------------------------------------


class SoapError(WireError):
    """The SOAP envelope is unusable."""


class SoapVersionMismatch(SoapError):
    """The root element is not a SOAP 1.2 Envelope (for example SOAP 1.1)."""

    fault_code = FaultCode.VERSION_MISMATCH


class SoapNotEnvelope(SoapError):
    """The XML is not a SOAP envelope at all, or its Body is not usable."""


class SoapMustUnderstand(SoapError):
    """A header block marked mustUnderstand is not one we process."""

    fault_code = FaultCode.MUST_UNDERSTAND

    def __init__(self, message: str, not_understood: tuple[QName, ...]) -> None:
        super().__init__(message)
        self.not_understood = not_understood


class SoapFaultReceived(ImageBridgeError):
    """A partner answered with a SOAP fault; carried as data for the caller."""

    fault_code = FaultCode.RECEIVER

    def __init__(self, message: str, code: str, subcodes: tuple[str, ...]) -> None:
        super().__init__(message)
        self.code = code
        self.subcodes = subcodes


class AddressingError(SoapError):
    """A WS-Addressing header is missing, duplicated or malformed."""

    fault_subcode = QName(WSA_NS, "InvalidAddressingHeader")


class AddressingHeaderRequired(AddressingError):
    """A required WS-Addressing header (for example wsa:Action) is absent."""

    fault_subcode = QName(WSA_NS, "MessageAddressingHeaderRequired")


class ActionNotSupported(AddressingError):
    """The wsa:Action is not served at this endpoint."""

    fault_subcode = QName(WSA_NS, "ActionNotSupported")


class OnlyAnonymousAddressSupported(AddressingError):
    """A non-anonymous wsa:ReplyTo reached a synchronous-only endpoint."""

    fault_subcode = QName(WSA_NS, "InvalidAddressingHeader")


# --- MIME / MTOM ----------------------------------------------------------------


class MimeError(WireError):
    """The multipart/related (MTOM/XOP) package is unusable."""


class MimeMalformed(MimeError):
    """Headers or boundaries are not valid MIME."""


class MimeTruncated(MimeError):
    """The stream ended before the closing boundary."""


class MimeMissingRoot(MimeError):
    """No part carries the start Content-ID (or there is no part at all)."""


class MimeUnknownCid(MimeError):
    """An xop:Include points at a Content-ID that no part carries."""


class MimePartTooLarge(MimeError):
    """A part (or the root part) exceeds the configured limit."""


# --- Payload structure -------------------------------------------------------------


class PayloadError(WireError):
    """The payload is well-formed XML but not the message it should be."""


class WrongNamespace(PayloadError):
    """An element has the right local name but the wrong namespace."""


class UnexpectedElement(PayloadError):
    """The element is not the one this codec decodes."""


class MissingElement(PayloadError):
    """A required element or attribute is absent."""


class InvalidValue(PayloadError):
    """A value does not have the required syntax."""


class InvalidUid(InvalidValue):
    """A DICOM UID that is empty, too long or not dotted decimal."""


class InvalidOid(InvalidValue):
    """An ISO OID (or urn:oid:) that is not dotted decimal."""


# --- XDS stored-query errors (answered in-band, not as faults) ----------------------


class StoredQueryError(PayloadError):
    """An ITI-38 stored query is unusable; answered with a RegistryErrorList."""

    xds_error_code = "XDSRegistryError"


class UnknownStoredQuery(StoredQueryError):
    xds_error_code = "XDSUnknownStoredQuery"


class StoredQueryMissingParam(StoredQueryError):
    xds_error_code = "XDSStoredQueryMissingParam"


class StoredQueryParamNumber(StoredQueryError):
    xds_error_code = "XDSStoredQueryParamNumber"


class StoredQueryParamSyntax(StoredQueryError):
    """A slot value does not follow the stored-query value syntax."""

    xds_error_code = "XDSRegistryError"


class MissingHomeCommunityId(StoredQueryError):
    xds_error_code = "XDSMissingHomeCommunityId"


# --- Limits on repeated elements ---------------------------------------------------


class TooManyElements(PayloadError):
    """A message repeats an element (e.g. DocumentRequest) more often than the configured limit.

    Raised before the model is built, so a hostile or runaway request cannot
    grow an unbounded model.  A SOAP fault (env:Sender), not an in-band error.
    """

    def __init__(self, message: str, element: str, limit: int) -> None:
        super().__init__(message)
        self.element = element
        self.limit = limit


# --- Cross-community routing -------------------------------------------------------


class UnknownCommunity(StoredQueryError):
    """A homeCommunityId that is malformed or not served here (``XDSUnknownCommunity``)."""

    xds_error_code = "XDSUnknownCommunity"


class MimeTooManyParts(MimeError):
    """A multipart/related package has more parts than the configured limit."""


# --- HL7 v3: Cross Gateway Patient Discovery [ITI-55] ---------------------------------


class InvalidHl7Timestamp(InvalidValue):
    """An HL7 v3 TS value that is not ``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZzz]``."""


class PatientDiscoveryQueryError(PayloadError):
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: a query that cannot be used.

    The XML was well formed but the PRPA_IN201305UV02 is not usable.  XCPD answers
    this in-band with a PRPA_IN201306UV02 (ITI TF-2 3.55.4.2.3 case 5), not with a
    SOAP fault, whenever the request message id and sender could still be read
    (``parse_patient_discovery_query_header``); the class variables say what the
    answer carries.  ``QE`` is not an XCPD case, so ``query_response_code`` is
    ``AE`` (IPF does the same).
    """

    hl7_acknowledgement_type_code: ClassVar[str] = "AE"
    hl7_query_response_code: ClassVar[str] = "AE"
    # HL7 AcknowledgementDetailCode (2.16.840.1.113883.5.1100): SYN = syntax error.
    hl7_acknowledgement_detail_code: ClassVar[str] = "SYN"
    # IHE XCPD detectedIssueManagement code (1.3.6.1.4.1.19376.1.2.27.3); None = no reasonOf.
    hl7_detected_issue_management_code: ClassVar[str | None] = "AnswerNotAvailable"


class PatientDiscoveryWrongNamespace(PatientDiscoveryQueryError, WrongNamespace):
    """An ITI-55 query element is in a namespace other than ``urn:hl7-org:v3``."""


class PatientDiscoveryUnexpectedElement(PatientDiscoveryQueryError, UnexpectedElement):
    """An ITI-55 query element that is not allowed there, or repeated beyond its limit."""


class PatientDiscoveryMissingElement(PatientDiscoveryQueryError, MissingElement):
    """A required element or attribute of an ITI-55 query is absent."""

    hl7_acknowledgement_detail_code = "SYN105"  # required element missing


class PatientDiscoveryMissingParameter(PatientDiscoveryMissingElement):
    """Neither a livingSubjectId nor both livingSubjectName and livingSubjectBirthTime."""


class PatientDiscoveryInvalidValue(PatientDiscoveryQueryError, InvalidValue):
    """A value in an ITI-55 query does not have the required syntax."""

    hl7_acknowledgement_detail_code = "SYN102"  # data type error


class PatientDiscoveryInvalidOid(PatientDiscoveryInvalidValue, InvalidOid):
    """An identifier root or homeCommunityId in an ITI-55 query is not a valid OID/UID."""


class PatientDiscoveryInvalidTimestamp(PatientDiscoveryInvalidValue, InvalidHl7Timestamp):
    """A creationTime or livingSubjectBirthTime in an ITI-55 query is not an HL7 TS."""


# --- DICOM objects: instance headers and KOS manifests ------------------------------


class DicomError(ImageBridgeError):
    """A DICOM object (an image header or a KOS manifest) is unusable."""


class NotDicom(DicomError):
    """The bytes are not a decodable DICOM Part-10 object (preamble, ``DICM``, meta group)."""


class DicomHeaderTruncated(DicomError):
    """A header prefix ends before the pixel data; more bytes are needed."""


class DicomMissingUid(DicomError):
    """A DICOM object lacks a Study, Series, SOP Instance or SOP Class UID."""

    def __init__(self, message: str, keyword: str) -> None:
        super().__init__(message)
        self.keyword = keyword


class NotKeyObjectSelection(DicomError):
    """A DICOM object whose SOP Class is not Key Object Selection Document Storage."""


class KosMalformed(DicomError):
    """A KOS lacks its evidence sequence, a referenced UID, or another required part."""


class KosMissingRetrieveLocation(KosMalformed):
    """A KOS Referenced Series has no Retrieve Location UID (0040,E011) nor a tolerated fallback."""

    def __init__(self, message: str, series_instance_uid: str) -> None:
        super().__init__(message)
        self.series_instance_uid = series_instance_uid


class KosBuildError(DicomError):
    """The instances given to the KOS builder are inconsistent (two studies, duplicate UIDs)."""


# --- WS-Security and SAML 2.0: Cross-Enterprise User Assertion [ITI-40] ---------------


class InvalidTimestamp(InvalidValue):
    """An xs:dateTime (SAML instant, wsu:Created/Expires, ATNA EventDateTime) is malformed."""


class WsSecurityError(WireError):
    """Cross-Enterprise User Assertion [ITI-40]: the wsse:Security header or its token is unusable.

    Answered with a SOAP fault ``env:Sender`` and a wsse subcode (WSS core 12,
    soap-transport.md 6.5).  Deliberately not a :class:`PayloadError`: a
    security failure is a fault, never an in-band RegistryError.
    """

    fault_subcode = QName(WSSE_NS, "InvalidSecurity")


class InvalidSecurity(WsSecurityError):
    """The wsse:Security header is malformed or could not be processed."""


class InvalidSecurityToken(WsSecurityError):
    """The SAML 2.0 assertion (the security token) is malformed."""

    fault_subcode = QName(WSSE_NS, "InvalidSecurityToken")


class UnsupportedSecurityToken(WsSecurityError):
    """A token imagebridge does not process (SAML 1.x, EncryptedAssertion, Version not 2.0)."""

    fault_subcode = QName(WSSE_NS, "UnsupportedSecurityToken")


class XuaAttributeMissing(InvalidSecurity):
    """A XUA attribute the caller requires is absent or has only empty values."""

    def __init__(self, message: str, attribute_name: str) -> None:
        super().__init__(message)
        self.attribute_name = attribute_name


class XuaAttributeInvalid(InvalidSecurityToken):
    """A XUA attribute is present but its value is malformed, ambiguous or of the wrong form."""

    def __init__(self, message: str, attribute_name: str) -> None:
        super().__init__(message)
        self.attribute_name = attribute_name


class AuthnStatementInvalid(InvalidSecurityToken):
    """No usable AuthnStatement: none, two, two AuthnContexts, a future AuthnInstant."""


class SecurityHeaderTooLarge(InvalidSecurity):
    """The wsse:Security header (or its assertion) is larger than the configured ceiling."""


class ReplayedMessage(InvalidSecurity):
    """A message whose holder-of-key signature was already accepted (WSS4J: a replay attack)."""


class FailedAuthentication(WsSecurityError):
    """The token could not be authenticated: unsigned, untrusted issuer, outside its validity
    window, another audience, no holder-of-key proof."""

    fault_subcode = QName(WSSE_NS, "FailedAuthentication")


class FailedCheck(WsSecurityError):
    """A signature or digest does not verify."""

    fault_subcode = QName(WSSE_NS, "FailedCheck")


class SignatureWrapping(FailedCheck):
    """What was signed is not what would be read (moved signed element, duplicate IDs)."""


class UnsupportedAlgorithm(WsSecurityError):
    """A signature, digest or canonicalization algorithm imagebridge does not accept."""

    fault_subcode = QName(WSSE_NS, "UnsupportedAlgorithm")


class MessageExpired(WsSecurityError):
    """The wsu:Timestamp has expired or lies in the future (WSS core 12: wsse:MessageExpired)."""

    fault_subcode = QName(WSSE_NS, "MessageExpired")


class SecurityTokenUnavailable(WsSecurityError):
    """A referenced security token (the assertion named by a SecurityTokenReference) is absent."""

    fault_subcode = QName(WSSE_NS, "SecurityTokenUnavailable")


# --- Retrieve Imaging Document Set [RAD-69] / Cross Gateway Retrieve Imaging Document Set [RAD-75]


class RetrieveInvalidUid(InvalidUid):
    """RAD-69/RAD-75 request: an empty or malformed Study/Series/SOP Instance/Transfer Syntax UID.

    The schema lets such a request through (the UIDs are plain strings), so it is
    answered in-band, Failure with ``XDSRepositoryError``, as NIST's ids_4812
    empty-UID cases expect; schema-invalid requests stay SOAP faults.
    """

    xds_error_code = "XDSRepositoryError"


# --- Image sources -------------------------------------------------------------------


class SourceError(ImageBridgeError):
    """An image source (folder archive or PACS) could not do what was asked."""

    fault_code = FaultCode.RECEIVER
    xds_error_code = "XDSRegistryError"


class SourceUnavailable(SourceError):
    """The archive cannot be reached (PACS down, folder missing, timeout)."""


class InstanceNotFound(SourceError):
    """The archive does not hold the requested instance."""

    xds_error_code = "XDSDocumentUniqueIdError"


class PartnerUnavailable(ImageBridgeError):
    """A partner gateway could not be reached, or its reply broke off."""

    fault_code = FaultCode.RECEIVER
    xds_error_code = "XDSUnavailableCommunity"


class PartnerTimeout(PartnerUnavailable):
    """A partner gateway did not connect, answer or finish within its configured time."""


class ConfigError(ImageBridgeError):
    """The configuration file is missing, unreadable or invalid (says which key)."""


# --- Store (index of patients, studies, instances, manifests) -------------------------


class StoreError(ImageBridgeError):
    """The index store could not do what was asked (database unreachable or refused a write)."""

    fault_code = FaultCode.RECEIVER
    xds_error_code = "XDSRegistryError"


class PatientIdUnresolved(StoreError):
    """An instance's Patient ID cannot become a community identifier (no ID or no authority)."""


class JobError(StoreError):
    """An import job operation was refused (see :mod:`imagebridge.store.jobs`)."""


class JobNotFound(JobError):
    """No import job has this id."""


class JobStateError(JobError):
    """The job's state does not allow it (finishing with instances outstanding, and so on)."""


class JobLeaseLost(JobError):
    """The worker no longer holds the job: its lease expired and another worker took it."""


class JobCancelled(JobLeaseLost):
    """The job was cancelled while a worker ran it; the worker stops between batches."""


class SourceProtocolError(SourceError):
    """The archive answered, but not as its protocol requires (bad JSON, multipart or status)."""


class JsonMalformed(WireError):
    """A JSON document (a DICOMweb answer, say) is not well formed or not of the expected shape."""


class PatientDiscoveryRequiredAttributeMissing(PatientDiscoveryMissingElement):
    """Cross Gateway Patient Discovery [ITI-55], Responding Gateway: the matching policy needs
    a name part or birth date that the query lacks and that XCPD has no "requested" code for.

    Answered as case 5 (AE, AnswerNotAvailable) with the missing attribute named in the text.
    """


# --- Imaging Document Source: transcoding to a requested transfer syntax ------------


class TranscodeError(DicomError):
    """Imaging Document Source [RAD-69]: an instance could not be written in the syntax asked.

    Answered in-band for that instance (spec digest 3.1), never as a fault.
    """

    xds_error_code = "XDSRepositoryError"

    def __init__(self, message: str, transfer_syntax: str = "") -> None:
        super().__init__(message)
        self.transfer_syntax = transfer_syntax


class TranscodeNotDicom(TranscodeError, NotDicom):
    """The object to transcode is not a decodable DICOM Part-10 object."""

    xds_error_code = "XDSRepositoryError"


class TransferSyntaxUnsupported(TranscodeError):
    """A source or target transfer syntax imagebridge does not convert (e.g. Big Endian)."""

    xds_error_code = "XDSRepositoryError"


class DecoderUnavailable(TranscodeError):
    """No pixel data decoder is installed (or exists in pydicom) for the stored syntax."""

    xds_error_code = "XDSRepositoryError"


class PixelDataCorrupt(TranscodeError):
    """The pixel data cannot be decoded, or the object ends before it is complete."""

    xds_error_code = "XDSRepositoryError"


# --- Import targets (local folder or PACS receiving retrieved images) --------------


class TargetError(SourceError):
    """Import target: the local folder or PACS receiving retrieved images failed a request."""


class TargetUnavailable(TargetError, SourceUnavailable):
    """Import target: it cannot be reached (PACS down, folder not writable, timeout)."""


class TargetProtocolError(TargetError, SourceProtocolError):
    """Import target: the PACS answered, but not as its protocol requires."""


# --- Import reconciliation (dicom/reconcile) -------------------------------------------


class ReconcileError(DicomError):
    """Import reconciliation: a plan cannot be made or applied as asked."""


class ReconcilePlanRefused(ReconcileError):
    """A plan whose verdict is not IMPORT (held for review, or already stored) was applied."""


class ReconcilePlanMismatch(ReconcileError):
    """The data set is not the one planned: another SOP Instance UID, or values changed since."""
