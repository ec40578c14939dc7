"""Hardened XML parsing: every hostile or malformed input gets its own typed error."""

from __future__ import annotations

import pytest

from imagebridge.errors import (
    FaultCode,
    MissingElement,
    UnexpectedElement,
    WrongNamespace,
    XmlDtdForbidden,
    XmlEntityForbidden,
    XmlError,
    XmlMalformed,
    XmlTooDeep,
    XmlTooLarge,
)
from imagebridge.wire.xml import (
    XmlLimits,
    expect,
    parse_xml,
    require_attr,
    require_child,
    require_text,
    text_of,
)

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol9;</lolz>"""

EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://example.org/a.dtd"><a/>'

# A DOCTYPE hidden behind 5 KB of leading whitespace is past the cheap byte scan.
LATE_DTD = b'<?xml version="1.0"?>' + b" " * 5000 + b"<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (XXE, XmlDtdForbidden),
        (BILLION_LAUGHS, XmlDtdForbidden),
        (EXTERNAL_DTD, XmlDtdForbidden),
        (LATE_DTD, XmlDtdForbidden),
        (b"<a>&undefined;</a>", XmlEntityForbidden),
        (b"<a><b></a>", XmlMalformed),
        (b"", XmlMalformed),
        (b"not xml at all", XmlMalformed),
        (b"<a>", XmlMalformed),
        (b"\xff\xfe<\x00a\x00", XmlMalformed),
    ],
)
def test_hostile_and_malformed_inputs_have_specific_errors(
    data: bytes, error: type[XmlError]
) -> None:
    with pytest.raises(error):
        parse_xml(data)


def test_errors_know_their_soap_fault() -> None:
    with pytest.raises(XmlError) as info:
        parse_xml(XXE)
    assert info.value.fault_code is FaultCode.SENDER


def test_nesting_ten_thousand_levels_is_too_deep() -> None:
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    with pytest.raises(XmlTooDeep):
        parse_xml(deep)


def test_depth_limit_is_configurable() -> None:
    doc = b"<a>" * 20 + b"</a>" * 20
    parse_xml(doc, XmlLimits(max_depth=20))
    with pytest.raises(XmlTooDeep):
        parse_xml(doc, XmlLimits(max_depth=19))


def test_two_hundred_megabyte_body_is_refused_before_parsing() -> None:
    body = bytearray(b"<a>")
    body.extend(b"x" * (200 * 1024 * 1024))
    body.extend(b"</a>")
    with pytest.raises(XmlTooLarge) as info:
        parse_xml(bytes(body))
    assert "exceeds the limit" in str(info.value)


def test_size_limit_is_configurable() -> None:
    with pytest.raises(XmlTooLarge):
        parse_xml(b"<a>0123456789</a>", XmlLimits(max_bytes=10))


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        XmlLimits(max_depth=0)


def test_predefined_and_character_entities_still_work() -> None:
    root = parse_xml(b"<a>&lt;&amp;&#65;&#x42;</a>")
    assert root.text == "<&AB"


def test_comments_and_processing_instructions_are_dropped() -> None:
    root = parse_xml(b"<a><!-- c --><?pi x?><b>t</b></a>")
    assert [c.tag for c in root] == ["b"]


def test_accessors_report_precise_structure_errors() -> None:
    root = parse_xml(b'<r xmlns="urn:x" xmlns:o="urn:other"><o:c/><d a=" v "> t </d><e/></r>')
    assert expect(root, "urn:x", "r") is root
    with pytest.raises(WrongNamespace):
        expect(root, "urn:y", "r")
    with pytest.raises(UnexpectedElement):
        expect(root, "urn:x", "s")
    with pytest.raises(WrongNamespace, match="urn:other"):
        require_child(root, "urn:x", "c")
    with pytest.raises(MissingElement):
        require_child(root, "urn:x", "zz")
    d = require_child(root, "urn:x", "d")
    assert text_of(d) == "t"
    assert require_attr(d, "a") == "v"
    with pytest.raises(MissingElement):
        require_attr(d, "b")
    with pytest.raises(MissingElement, match="empty"):
        require_text(root, "urn:x", "e")
