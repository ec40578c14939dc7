"""SOAP 1.2 envelopes, faults, mustUnderstand and WS-Addressing."""

from __future__ import annotations

import pytest
from lxml import etree

from imagebridge.errors import (
    ActionNotSupported,
    AddressingError,
    AddressingHeaderRequired,
    FaultCode,
    OnlyAnonymousAddressSupported,
    QName,
    SoapMustUnderstand,
    SoapNotEnvelope,
    SoapVersionMismatch,
    XmlTooDeep,
)
from imagebridge.transactions import TRANSACTIONS, Transaction, by_request_action, spec_of
from imagebridge.wire import ns
from imagebridge.wire.soap import (
    SoapFault,
    fault_for,
    parse_envelope,
    parse_fault,
    render_envelope,
    render_fault,
)
from imagebridge.wire.wsa import (
    ANONYMOUS,
    AddressingHeaders,
    check_request,
    check_response,
    normalise_message_id,
    request_headers,
    response_headers,
)
from imagebridge.wire.xml import parse_xml, serialize
from tests.conformance_data import assert_valid

MID = "urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11"
ITI38 = spec_of(Transaction.ITI_38)


def _payload() -> etree._Element:
    return etree.Element(ns.q(ns.QUERY, "AdhocQueryRequest"), nsmap={"query": ns.QUERY})


def _envelope(header: str, body: str = "<q:AdhocQueryRequest xmlns:q='{Q}'/>") -> bytes:
    return (
        f"<s:Envelope xmlns:s='{ns.SOAP12}' xmlns:a='{ns.WSA}'>"
        f"<s:Header>{header}</s:Header><s:Body>{body.replace('{Q}', ns.QUERY)}</s:Body>"
        "</s:Envelope>"
    ).encode()


GOOD_HEADER = (
    "<a:Action s:mustUnderstand='1'>\n   urn:ihe:iti:2007:CrossGatewayQuery\n  </a:Action>"
    "<a:MessageID>6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11</a:MessageID>"
    f"<a:ReplyTo s:mustUnderstand='true'><a:Address>{ANONYMOUS}</a:Address></a:ReplyTo>"
)


def test_request_round_trip_and_schema_valid(schema_dir: object) -> None:
    headers = request_headers(ITI38, MID, "https://rg.example.org/xca/query")
    env = render_envelope(headers, _payload())
    assert_valid("soap12", env)
    for block in env[0]:
        assert_valid("wsa", block)
    message = parse_envelope(parse_xml(serialize(env)))
    assert message.addressing == headers
    assert message.fault is None
    assert message.payload is not None
    assert message.payload.tag == ns.q(ns.QUERY, "AdhocQueryRequest")
    assert check_request(headers, (ITI38,)) is ITI38


def test_golden_request_envelope() -> None:
    headers = request_headers(ITI38, MID, "https://rg.example.org/xca/query")
    text = serialize(render_envelope(headers, _payload())).decode()
    assert text == (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<soap:Envelope xmlns:soap="{ns.SOAP12}" xmlns:wsa="{ns.WSA}"><soap:Header>'
        '<wsa:Action soap:mustUnderstand="1">urn:ihe:iti:2007:CrossGatewayQuery</wsa:Action>'
        f"<wsa:MessageID>{MID}</wsa:MessageID>"
        f"<wsa:ReplyTo><wsa:Address>{ANONYMOUS}</wsa:Address></wsa:ReplyTo>"
        '<wsa:To soap:mustUnderstand="1">https://rg.example.org/xca/query</wsa:To>'
        "</soap:Header><soap:Body>"
        f'<query:AdhocQueryRequest xmlns:query="{ns.QUERY}"/>'
        "</soap:Body></soap:Envelope>"
    )


def test_lenient_addressing_values_and_any_prefix() -> None:
    message = parse_envelope(parse_xml(_envelope(GOOD_HEADER)))
    assert message.addressing is not None
    assert message.addressing.action == ITI38.request_action
    assert normalise_message_id(message.addressing.message_id or "") == normalise_message_id(MID)
    check_request(message.addressing, (ITI38,))


def test_response_headers_relate_to_request() -> None:
    request = request_headers(ITI38, MID, "https://x")
    reply = response_headers(ITI38, request)
    assert reply.relates_to == MID and reply.to is None
    check_response(reply, ITI38, MID.upper().replace("URN:UUID:", ""))
    with pytest.raises(AddressingError):
        check_response(reply, ITI38, "urn:uuid:other")
    with pytest.raises(ActionNotSupported):
        check_response(reply, spec_of(Transaction.ITI_39), MID)
    with pytest.raises(AddressingHeaderRequired):
        check_response(AddressingHeaders(action=ITI38.response_action), ITI38, MID)


def test_unqualified_must_understand_is_ignored() -> None:
    header = GOOD_HEADER + "<x:Custom xmlns:x='urn:custom' mustUnderstand='true'/>"
    parse_envelope(parse_xml(_envelope(header)))


def test_unknown_must_understand_header_faults() -> None:
    header = GOOD_HEADER + "<x:Custom xmlns:x='urn:custom' s:mustUnderstand='1'/>"
    with pytest.raises(SoapMustUnderstand) as info:
        parse_envelope(parse_xml(_envelope(header)))
    assert info.value.not_understood == (QName("urn:custom", "Custom"),)
    fault = fault_for(info.value)
    assert fault.code is FaultCode.MUST_UNDERSTAND
    rendered = render_fault(fault, relates_to=MID)
    assert rendered.find(f"{{{ns.SOAP12}}}Header/{{{ns.SOAP12}}}NotUnderstood") is not None


def test_wsse_security_must_understand_is_understood() -> None:
    header = GOOD_HEADER + f"<w:Security xmlns:w='{ns.WSSE}' s:mustUnderstand='1'/>"
    message = parse_envelope(parse_xml(_envelope(header)))
    assert [b.tag for b in message.header_blocks] == [ns.q(ns.WSSE, "Security")]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"<a/>", SoapNotEnvelope),
        (
            b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body/>"
            b"</s:Envelope>",
            SoapVersionMismatch,
        ),
        (f"<s:Envelope xmlns:s='{ns.SOAP12}'/>".encode(), SoapNotEnvelope),
        (_envelope(GOOD_HEADER, body=""), SoapNotEnvelope),
        (_envelope(GOOD_HEADER, body="<a/><b/>"), SoapNotEnvelope),
        (_envelope(""), AddressingHeaderRequired),
        (_envelope(GOOD_HEADER + GOOD_HEADER), AddressingError),
        (_envelope("<a:Action>  </a:Action>"), AddressingError),
        (_envelope("<a:Action>x</a:Action><a:ReplyTo/>"), AddressingError),
    ],
)
def test_bad_envelopes(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_envelope(parse_xml(data))


def test_check_request_refuses_wrong_action_and_async_reply_to() -> None:
    with pytest.raises(ActionNotSupported) as info:
        check_request(AddressingHeaders(action="urn:nope"), (ITI38,))
    assert fault_for(info.value).subcodes == (QName(ns.WSA, "ActionNotSupported"),)
    with pytest.raises(ActionNotSupported):
        check_request(request_headers(spec_of(Transaction.ITI_39), MID, "x"), (ITI38,))
    async_headers = AddressingHeaders(
        action=ITI38.request_action, message_id=MID, reply_to="https://callback.example.org/"
    )
    with pytest.raises(OnlyAnonymousAddressSupported):
        check_request(async_headers, (ITI38,))


@pytest.mark.parametrize("code", list(FaultCode))
def test_every_fault_code_round_trips_and_is_schema_valid(
    code: FaultCode, schema_dir: object
) -> None:
    fault = SoapFault(
        code=code, reason="something precise", subcodes=(QName(ns.WSA, "ActionNotSupported"),)
    )
    env = render_fault(fault, relates_to=MID)
    assert_valid("soap12", env)
    message = parse_envelope(parse_xml(serialize(env)))
    assert message.payload is None
    assert message.fault == fault
    assert message.addressing is not None and message.addressing.relates_to == MID


def test_fault_from_a_foreign_stack_without_addressing() -> None:
    data = (
        f"<env:Envelope xmlns:env='{ns.SOAP12}'><env:Body><env:Fault>"
        "<env:Code><env:Value>env:Sender</env:Value><env:Subcode>"
        "<env:Value xmlns:ns1='urn:x'>ns1:Oops</env:Value></env:Subcode></env:Code>"
        "<env:Reason><env:Text xml:lang='de'>Kaputt</env:Text></env:Reason>"
        "<env:Detail>more</env:Detail></env:Fault></env:Body></env:Envelope>"
    ).encode()
    message = parse_envelope(parse_xml(data))
    assert message.addressing is None
    assert message.fault == SoapFault(
        code=FaultCode.SENDER,
        reason="Kaputt",
        subcodes=(QName("urn:x", "Oops"),),
        lang="de",
        detail="more",
    )


def test_parse_fault_defaults_for_an_empty_fault() -> None:
    fault = parse_fault(parse_xml(f"<f:Fault xmlns:f='{ns.SOAP12}'/>".encode()))
    assert fault.code is FaultCode.RECEIVER and fault.reason == ""


def test_every_error_maps_to_a_fault() -> None:
    fault = fault_for(XmlTooDeep("too deep"))
    assert fault.code is FaultCode.SENDER and fault.reason == "too deep"


def test_transaction_table_is_consistent() -> None:
    assert len({s.request_action for s in TRANSACTIONS.values()}) == len(TRANSACTIONS)
    for spec in TRANSACTIONS.values():
        assert by_request_action(" " + spec.request_action + "\n") is spec
        assert spec.code == spec.transaction.value
    assert spec_of(Transaction.RAD_69).response_action.startswith("urn:ihe:iti:")
    assert {s.endpoint for s in TRANSACTIONS.values() if s.endpoint} == {
        "/xcpd",
        "/xca/query",
        "/xca/retrieve",
        "/xcai/retrieve",
        "/ids/retrieve",
    }


def test_whitespace_inside_addressing_uris_is_removed() -> None:
    header = (
        "<a:Action>urn:ihe:iti: 2007:CrossGatewayQuery</a:Action>"
        "<a:RelatesTo>urn:uuid: 018f8214-a4ee-7365-a587-f7a8e01e25bd</a:RelatesTo>"
    )
    message = parse_envelope(parse_xml(_envelope(header)))
    assert message.addressing == AddressingHeaders(
        action=ITI38.request_action, relates_to="urn:uuid:018f8214-a4ee-7365-a587-f7a8e01e25bd"
    )


def test_replies_without_addressing_decode_when_allowed() -> None:
    data = _envelope("", body=f"<q:AdhocQueryResponse xmlns:q='{ns.QUERY}'/>")
    with pytest.raises(AddressingHeaderRequired):
        parse_envelope(parse_xml(data))
    message = parse_envelope(parse_xml(data), require_addressing=False)
    assert message.addressing is None and message.payload is not None
    with pytest.raises(AddressingError):
        parse_envelope(parse_xml(_envelope(GOOD_HEADER + GOOD_HEADER)), require_addressing=False)
