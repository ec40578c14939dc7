"""Access to ``../shared/conformance``: schema validators and toolkit placeholders."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_DIR = (ROOT / ".." / "shared" / "conformance").resolve()
SCHEMA_DIR = CONFORMANCE_DIR / "schemas"
TESTKIT_DIR = CONFORMANCE_DIR / "nist-testkit"
SAMPLES_DIR = CONFORMANCE_DIR / "samples"

# libxml2 reads the catalog on first use; the WS-Security schemas import by URL.
os.environ.setdefault("XML_CATALOG_FILES", str(SCHEMA_DIR / "catalog.xml"))

# Schema entry points by payload namespace.  Each file imports what it needs.
SCHEMA_FILES = {
    "soap12": "soap12/soap-1.2-envelope.xsd",
    "wsa": "wsa/ws-addr200508.xsd",
    "query": "xds-ebrim3/query.xsd",
    "rs": "xds-ebrim3/rs.xsd",
    "rim": "xds-ebrim3/rim.xsd",
    "xds": "xds-ebrim3/XDS.b_DocumentRepository.xsd",
    "xdsi": "xds-ebrim3/XDSI.b_ImagingDocumentSource.xsd",
    "PRPA_IN201305UV02": "hl7v3-ne2008/multicacheschemas/PRPA_IN201305UV02.xsd",
    "PRPA_IN201306UV02": "hl7v3-ne2008/multicacheschemas/PRPA_IN201306UV02.xsd",
    "xop": "xop/xop-include.xsd",
    "saml2": "saml2/saml-schema-assertion-2.0.xsd",
    "wsse": "wss/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "wss/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "audit": "audit/dicom2017c.xsd",
}


@functools.cache
def schema(name: str) -> etree.XMLSchema:
    """A compiled official schema (see :data:`SCHEMA_FILES`)."""
    path = SCHEMA_DIR / SCHEMA_FILES[name]
    parser = etree.XMLParser(no_network=True)
    return etree.XMLSchema(etree.parse(str(path), parser))


def assert_valid(name: str, element: etree._Element) -> None:
    """Validate *element* against schema *name*, failing with every schema message."""
    validator = schema(name)
    doc = etree.fromstring(etree.tostring(element))
    if not validator.validate(doc):
        errors = "\n".join(f"  line {e.line}: {e.message}" for e in validator.error_log)
        raise AssertionError(f"not valid against {SCHEMA_FILES[name]}:\n{errors}")


# Values for the XDS Toolkit's run-time tokens ($home$, $patient_id$, ...).
TEST_HOME = "urn:oid:1.3.6.1.4.1.21367.13.70.201"
TEST_PATIENT = "IBTEST01^^^&1.3.6.1.4.1.21367.13.20.1000&ISO"
TEST_REPOSITORY = "1.3.6.1.4.1.21367.13.71.201.1"
TEST_UID = "1.3.6.1.4.1.21367.13.99.1"
TEST_UUID = "urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11"

_TOKEN = re.compile(rb"\$([A-Za-z_0-9]+)\$")


def _value_for(token: str) -> bytes:
    name = token.lower()
    if "home" in name:
        value = TEST_HOME
    elif "patient" in name:
        value = TEST_PATIENT
    elif "mime" in name:
        value = "application/dicom"
    elif "uuid" in name:
        value = TEST_UUID
    elif "rep" in name:
        value = TEST_REPOSITORY
    else:
        value = TEST_UID
    # The values land inside XML text and attributes; escape what needs it.
    return value.replace("&", "&amp;").encode()


def substitute_placeholders(data: bytes) -> bytes:
    """Replace every ``$token$`` with a fixed test value of the right kind."""
    return _TOKEN.sub(lambda m: _value_for(m.group(1).decode()), data)


# Namespaces a XUA header brings together; HL7 is there so xsi:type="hl7:CE" resolves.
_XUA_IMPORTS = {
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd": (
        "wss/oasis-200401-wss-wssecurity-secext-1.0.xsd"
    ),
    "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd": (
        "wss/oasis-wss-wssecurity-secext-1.1.xsd"
    ),
    "urn:oasis:names:tc:SAML:2.0:assertion": "saml2/saml-schema-assertion-2.0.xsd",
    "http://www.w3.org/2001/10/xml-exc-c14n#": "xmldsig/exc-c14n.xsd",
    "urn:hl7-org:v3": "hl7v3-ne2008/multicacheschemas/PRPA_IN201305UV02.xsd",
}


@functools.cache
def xua_schema() -> etree.XMLSchema:
    """One schema set: WSS 1.0/1.1, SAML 2.0, xmldsig, exc-c14n and the HL7 datatypes."""
    imports = "".join(
        f'<xs:import namespace="{n}" schemaLocation="{SCHEMA_DIR / p}"/>'
        for n, p in _XUA_IMPORTS.items()
    )
    driver = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    parser = etree.XMLParser(no_network=True)
    root = etree.fromstring(driver.encode(), parser, base_url=str(SCHEMA_DIR / "xua.xsd"))
    return etree.XMLSchema(root)


def assert_xua_valid(element: etree._Element) -> None:
    """Validate a SAML assertion or WS-Security header against the XUA schema set."""
    validator = xua_schema()
    if not validator.validate(etree.fromstring(etree.tostring(element))):
        errors = "\n".join(f"  line {e.line}: {e.message}" for e in validator.error_log)
        raise AssertionError(f"not valid against the XUA schema set:\n{errors}")
