"""The one place where errors become SOAP faults or RegistryErrors.

Security faults keep a generic reason (WS-Security 1.0 section 12: do not tell
an attacker which check failed); every other fault carries the error's own
message, which never holds patient data or stack traces.
"""

from __future__ import annotations

import logging

from starlette.responses import Response

from imagebridge.errors import FaultCode, ImageBridgeError
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.wire import ns
from imagebridge.wire.soap import SoapFault, fault_for, render_fault
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xml import serialize

log = logging.getLogger(__name__)

SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
_SECURITY_REASON = "The security header of the message could not be accepted."


def http_status(fault: SoapFault) -> int:
    """SOAP 1.2 HTTP binding: Sender faults are 400, every other fault 500."""
    return 400 if fault.code is FaultCode.SENDER else 500


def fault_from_error(error: ImageBridgeError) -> SoapFault:
    """The fault *error* becomes; security faults get a generic reason."""
    fault = fault_for(error)
    if any(sub.namespace == ns.WSSE for sub in fault.subcodes):
        return SoapFault(code=fault.code, reason=_SECURITY_REASON, subcodes=fault.subcodes)
    return fault


def internal_fault() -> SoapFault:
    """The fault for an unexpected failure: no detail leaves the process."""
    return SoapFault(code=FaultCode.RECEIVER, reason="Internal error while processing the request.")


def fault_response(fault: SoapFault, relates_to: str | None = None) -> Response:
    """A simple-SOAP HTTP response carrying *fault* (also on MTOM endpoints)."""
    body = serialize(render_fault(fault, relates_to=relates_to))
    return Response(body, status_code=http_status(fault), media_type=SOAP_CONTENT_TYPE)


def registry_error(
    error: ImageBridgeError,
    location: str | None,
    *,
    default_code: str = v.XDS_REGISTRY_ERROR,
    context: str | None = None,
) -> RegistryError:
    """The in-band RegistryError for *error* (ebXML transactions answer errors in-band)."""
    return RegistryError(
        error_code=error.xds_error_code or default_code,
        code_context=context if context is not None else error.message,
        severity=Severity.ERROR,
        location=location,
    )
