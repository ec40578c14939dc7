"""Status consolidation and RegistryErrorList codec."""

from __future__ import annotations

import pytest

from imagebridge.errors import InvalidValue, MissingElement
from imagebridge.model.outcome import (
    RegistryError,
    RegistryResponse,
    Severity,
    Status,
    consolidate,
)
from imagebridge.wire import ns
from imagebridge.wire.xds.registry_response import (
    parse_registry_response,
    render_registry_error_list,
    render_registry_response,
)
from imagebridge.wire.xml import parse_xml, serialize
from tests.conformance_data import assert_valid

ERR = RegistryError("XDSDocumentUniqueIdError", "1.2.3 not found", Severity.ERROR, "urn:oid:1.2")
WARN = RegistryError("XDSRegistryBusy", "slow", Severity.WARNING)


def test_consolidation_rule() -> None:
    assert consolidate(True, []) is Status.SUCCESS
    assert consolidate(False, [WARN]) is Status.SUCCESS
    assert consolidate(True, [ERR]) is Status.PARTIAL_SUCCESS
    assert consolidate(False, [ERR, WARN]) is Status.FAILURE


def test_status_and_severity_parsing_is_lenient() -> None:
    assert Status.parse(" urn:ihe:iti:2007:ResponseStatusType:PartialSuccess ") is (
        Status.PARTIAL_SUCCESS
    )
    assert Status.parse("Success") is Status.SUCCESS
    assert Severity.parse(None) is Severity.ERROR
    assert Severity.parse("warning") is Severity.WARNING
    with pytest.raises(InvalidValue):
        Status.parse("urn:whatever:Maybe")
    with pytest.raises(InvalidValue):
        Severity.parse("urn:x:Fatal")
    with pytest.raises(InvalidValue):
        RegistryError(" ", "ctx")


def test_registry_response_round_trip_and_schema(schema_dir: object) -> None:
    resp = RegistryResponse(Status.PARTIAL_SUCCESS, (ERR, WARN), request_id="r1")
    el = render_registry_response(resp)
    assert_valid("rs", el)
    assert parse_registry_response(parse_xml(serialize(el))) == resp
    lst = render_registry_error_list((WARN,))
    assert lst.get("highestSeverity") == Severity.WARNING.value
    with pytest.raises(InvalidValue):
        render_registry_error_list(())


def test_lenient_registry_errors_from_partners() -> None:
    data = (
        f"<rs:RegistryResponse xmlns:rs='{ns.RS}' status='urn:oasis:names:tc:ebxml-regrep:"
        "ResponseStatusType:Failure'><rs:RegistryErrorList><rs:RegistryError "
        "errorCode='VendorSpecificCode'>text body</rs:RegistryError></rs:RegistryErrorList>"
        "</rs:RegistryResponse>"
    ).encode()
    resp = parse_registry_response(parse_xml(data))
    assert resp.errors == (RegistryError("VendorSpecificCode", "text body"),)
    with pytest.raises(MissingElement):
        parse_registry_response(parse_xml(f"<rs:RegistryResponse xmlns:rs='{ns.RS}'/>".encode()))
