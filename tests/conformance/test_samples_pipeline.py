"""Every real-implementer sample through the whole decoding pipeline.

MIME (for the MTOM captures) -> hardened XML -> SOAP 1.2 envelope ->
payload codec chosen by the payload's element name -> XOP attachments
resolved.  Each sample must decode, or be refused with the typed error the
table below names (the reasons are those ``conformance/README.md`` gives for
the sample).  A new sample without a row fails the test, so nothing slips by.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from imagebridge.errors import ImageBridgeError
from imagebridge.model.retrieve import RetrieveDocumentSetResponse, XopInclude
from imagebridge.wire.audit import parse_audit_message
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    parse_patient_discovery_response,
)
from imagebridge.wire.mtom import MtomPackage, read_mtom
from imagebridge.wire.saml import parse_assertion
from imagebridge.wire.soap import SoapFault, parse_envelope
from imagebridge.wire.wsse import parse_security
from imagebridge.wire.xds.imaging_retrieve import parse_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import parse_adhoc_query_request, parse_adhoc_query_response
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
)
from imagebridge.wire.xml import Element, parse_xml
from tests.conformance_data import SAMPLES_DIR

pytestmark = pytest.mark.conformance

PARSERS: dict[str, Callable[[Element], Any]] = {
    "AdhocQueryRequest": parse_adhoc_query_request,
    "AdhocQueryResponse": parse_adhoc_query_response,
    "RetrieveDocumentSetRequest": parse_retrieve_document_set_request,
    "RetrieveDocumentSetResponse": parse_retrieve_document_set_response,
    "RetrieveImagingDocumentSetRequest": parse_retrieve_imaging_document_set_request,
    "PRPA_IN201305UV02": parse_patient_discovery_query,
    "PRPA_IN201306UV02": parse_patient_discovery_response,
    "Assertion": parse_assertion,
    "Security": parse_security,
    "AuditMessage": parse_audit_message,
}

# sample -> "decoded" or the name of the typed error it is refused with.
EXPECTED = {
    "connect/iti-39/saml_header_diff_order.xml": "decoded",
    "connect/xua-saml/authFrameworkAssertion.xml": "decoded",
    "connect/xua-saml/complete_saml.xml": "decoded",
    "connect/xua-saml/saml_missingValues.xml": "decoded",
    "ipf/atna-audit/audit-message-iti55.xml": "decoded",
    "ipf/atna-audit/xcpd.xml": "decoded",
    "ipf/iti-55/iti55-sample-request-deferred.xml": "decoded",
    "ipf/iti-55/iti55-sample-request.xml": "decoded",
    "ipf/iti-55/iti55-sample-response.xml": "decoded",
    "ipf/xua-saml/saml2-assertion-for-xua.xml": "decoded",
    "ipf/xua-saml/xua-assertion.xml": "decoded",
    "metriport/iti-38/dq_empty.xml": "decoded",
    "metriport/iti-38/dq_error.xml": "decoded",
    "metriport/iti-38/dq_multiple_docs.xml": "decoded",
    "metriport/iti-38/epic-iti-38-request.xml": "decoded",
    "metriport/iti-39/dr-insert-b64.xml": "decoded",
    # README: INVALID, required mimeType missing.
    "metriport/iti-39/dr-no-mime-type.xml": "MissingElement",
    # README: INVALID, rim:RegistryErrorList instead of rs:.
    "metriport/iti-39/dr-partial-success.xml": "WrongNamespace",
    "metriport/iti-39/dr_empty.xml": "decoded",
    "metriport/iti-39/dr_registry_error.xml": "decoded",
    # A SOAP 1.2 Fault: decoded as a fault, not as a payload.
    "metriport/iti-39/dr_soap_error.xml": "fault",
    # README: INVALID, Document holds plain text (not base64).
    "metriport/iti-39/dr_success.xml": "InvalidValue",
    "metriport/iti-39/epic-iti-39-request.xml": "decoded",
    "metriport/iti-39/mtom-binary-xml.txt": "decoded",
    "metriport/iti-39/mtom-non-xml.txt": "decoded",
    "metriport/iti-39/mtom-without-multipart.txt": "decoded",
    "metriport/iti-39/mtom-xml.txt": "decoded",
    "metriport/iti-39/multi-mtom.txt": "decoded",
    "metriport/iti-55/epic-iti-55-request.xml": "decoded",
    "metriport/iti-55/xcpd_error.xml": "decoded",
    "metriport/iti-55/xcpd_match.xml": "decoded",
    "metriport/iti-55/xcpd_match_multi_addr_name.xml": "decoded",
    "metriport/iti-55/xcpd_match_no_addresses.xml": "decoded",
    "metriport/iti-55/xcpd_no_match.xml": "decoded",
    # README: the HL7 body is bound to the ebXML query namespace.
    "metriport/xua-saml/valid-saml.xml": "PatientDiscoveryWrongNamespace",
}


def _content_type(data: bytes) -> str:
    """The captures lack HTTP headers: take the boundary from the first delimiter line."""
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0].strip()
    boundary = first[2:].decode()
    return f'multipart/related; boundary="{boundary}"; type="application/xop+xml"'


def decode(path: Path) -> str:
    """Decode one sample completely; returns what it was (for the assertion message)."""
    data = path.read_bytes()
    package: MtomPackage | None = None
    if path.suffix == ".txt":
        package = asyncio.run(read_mtom(_content_type(data), [data]))
        data = package.root
    try:
        root = parse_xml(data)
        payload = root
        if etree.QName(root).localname == "Envelope":
            message = parse_envelope(root, require_addressing=False)
            if message.fault is not None:
                assert isinstance(message.fault, SoapFault)
                return "fault"
            assert message.payload is not None
            payload = message.payload
        name = etree.QName(payload).localname
        if name not in PARSERS:
            # An element that merely holds the payload (e.g. a Security header in a wrapper).
            inner = [e for e in payload.iter() if etree.QName(e).localname in PARSERS]
            assert inner, f"no known payload in {path.name}"
            payload, name = inner[0], etree.QName(inner[0]).localname
        model = PARSERS[name](payload)
        if isinstance(model, RetrieveDocumentSetResponse) and package is not None:
            for doc in model.document_responses:
                if isinstance(doc.document, XopInclude):
                    assert package.part_for_href(doc.document.href).size > 0
        return "decoded"
    finally:
        if package is not None:
            package.close()


def test_every_sample_has_an_expectation(conformance_dir: Path) -> None:
    found = {str(p.relative_to(SAMPLES_DIR)) for p in SAMPLES_DIR.rglob("*") if p.is_file()}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_sample_decodes_or_is_refused_precisely(sample: str, conformance_dir: Path) -> None:
    expected = EXPECTED[sample]
    try:
        outcome = decode(SAMPLES_DIR / sample)
    except ImageBridgeError as exc:
        outcome = type(exc).__name__
    assert outcome == expected
