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
