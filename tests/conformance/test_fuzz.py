"""Property-based fuzzing of every parser with mutated real messages.

Seeds are the real requests and responses in ``../shared/conformance``
(toolkit tokens filled in) plus messages rendered by our own codecs.  Each
example mutates one seed, at byte level (flips, deletions, insertions of
XML-significant tokens, truncation, duplication) or at tree level (an element
dropped, emptied, moved to another namespace, an attribute set to junk), and
feeds it to one parser.  The only acceptable outcomes are a parsed model or
an :class:`~imagebridge.errors.ImageBridgeError`; anything else is a defect.

The number of examples per parser is ``FUZZ_EXAMPLES`` (environment variable,
default 300); the total is printed at the end of the module's run.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from imagebridge.errors import ImageBridgeError
from imagebridge.wire import ns
from imagebridge.wire.audit import parse_audit_message
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    parse_patient_discovery_response,
)
from imagebridge.wire.mtom import MtomReader
from imagebridge.wire.saml import parse_assertion
from imagebridge.wire.soap import parse_envelope
from imagebridge.wire.wsse import parse_security
from imagebridge.wire.xds.imaging_retrieve import parse_retrieve_imaging_document_set_request
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    parse_document_entry,
)
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
)
from imagebridge.wire.xml import parse_xml
from tests.conformance_data import SAMPLES_DIR, TESTKIT_DIR, substitute_placeholders

pytestmark = pytest.mark.conformance

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
RAN: dict[str, int] = {}

TOKENS = [
    b"<",
    b">",
    b"</",
    b"/>",
    b"&",
    b"&amp;",
    b"&#0;",
    b"&#xD800;",
    b"&ent;",
    b"<!DOCTYPE a [<!ENTITY ent 'x'>]>",
    b"]]>",
    b"<![CDATA[",
    b'"',
    b"'",
    b' xmlns="urn:evil"',
    b' xmlns:soap="urn:x"',
    b"urn:oid:",
    b"^^^&",
    b"\x00",
    b"\xff\xfe",
    b"1.2..3",
    b"..",
    b" ",
    b"\n",
    b"-1",
    b"99999999999999999999999",
    b"\xc3\x28",
]


def _via_payload(parse: Callable[[Any], object]) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        root = parse_xml(data)
        if etree.QName(root).localname == "Envelope":
            message = parse_envelope(root)
            if message.payload is None:
                return message
            root = message.payload
        return parse(root)

    return run


def _mtom(data: bytes) -> object:
    """Read a whole MTOM capture; the boundary comes from its first delimiter line."""
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0].strip()[2:]
    boundary = first.decode("latin-1").replace('"', "")
    reader = MtomReader(f'multipart/related; boundary="{boundary}"; type="application/xop+xml"')
    reader.feed(data)
    package = reader.close()
    package.close()
    return package


# name -> (root element local name used to pick seeds, parser); "MIME" seeds are the captures

PARSERS: dict[str, tuple[str, Callable[[bytes], object]]] = {
    "xml": ("*", parse_xml),
    "mtom-package": ("MIME", _mtom),
    "soap-envelope": ("Envelope", lambda d: parse_envelope(parse_xml(d))),
    "iti55-query": ("PRPA_IN201305UV02", _via_payload(parse_patient_discovery_query)),
    "iti55-response": ("PRPA_IN201306UV02", _via_payload(parse_patient_discovery_response)),
    "iti38-request": ("AdhocQueryRequest", _via_payload(parse_adhoc_query_request)),
    "iti38-response": ("AdhocQueryResponse", _via_payload(parse_adhoc_query_response)),
    "document-entry": ("ExtrinsicObject", _via_payload(parse_document_entry)),
    "saml-assertion": ("Assertion", _via_payload(parse_assertion)),
    "wsse-security": ("Security", _via_payload(parse_security)),
    "atna-audit": ("AuditMessage", _via_payload(parse_audit_message)),
    "iti39-request": (
        "RetrieveDocumentSetRequest",
        _via_payload(parse_retrieve_document_set_request),
    ),
    "iti39-response": (
        "RetrieveDocumentSetResponse",
        _via_payload(parse_retrieve_document_set_response),
    ),
    "rad69-request": (
        "RetrieveImagingDocumentSetRequest",
        _via_payload(parse_retrieve_imaging_document_set_request),
    ),
}


@functools.cache
def _all_seeds() -> tuple[tuple[str, bytes], ...]:
    """(root-or-body-child local name, bytes) of every XML message in the folder."""
    found: list[tuple[str, bytes]] = []
    for path in sorted([*TESTKIT_DIR.rglob("*.xml"), *SAMPLES_DIR.rglob("*.xml")]):
        data = substitute_placeholders(path.read_bytes())
        try:
            root = etree.fromstring(data, etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError:
            continue
        found.append((etree.QName(root).localname, data))
        for el in root.iter():
            if not isinstance(el.tag, str) or el is root:
                continue
            name = etree.QName(el).localname
            if name in {tag for tag, _ in PARSERS.values()}:
                found.append((name, etree.tostring(el)))
    return tuple(found)


def _seeds_for(tag: str) -> list[bytes]:
    if tag == "MIME":
        return [p.read_bytes() for p in sorted(SAMPLES_DIR.rglob("*.txt"))]
    seeds = [data for name, data in _all_seeds() if tag in ("*", name)]
    # Keep the run fast: the shortest hundred seeds carry every structure anyway.
    return sorted(seeds, key=len)[:100]


@st.composite
def _byte_mutation(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "insert":
            token = draw(st.sampled_from(TOKENS) | st.binary(max_size=16))
            data[pos:pos] = token
        elif op == "truncate":
            del data[pos:]
        else:
            length = draw(st.integers(1, 256))
            data[pos:pos] = data[pos : pos + length]
    return bytes(data)


@st.composite
def _tree_mutation(draw: st.DrawFn, seed: bytes) -> bytes:
    root = etree.fromstring(seed, etree.XMLParser(resolve_entities=False))
    nodes = [el for el in root.iter() if isinstance(el.tag, str)]
    for _ in range(draw(st.integers(1, 3))):
        el = draw(st.sampled_from(nodes))
        op = draw(st.sampled_from(["drop", "empty", "namespace", "attribute", "text", "dup"]))
        parent = el.getparent()
        if op == "drop" and parent is not None:
            parent.remove(el)
            nodes = [n for n in root.iter() if isinstance(n.tag, str)]
        elif op == "empty":
            el.text = None
            for c in list(el):
                el.remove(c)
            nodes = [n for n in root.iter() if isinstance(n.tag, str)]
        elif op == "namespace":
            el.tag = ns.q("urn:fuzz", etree.QName(el).localname)
        elif op == "attribute" and el.attrib:
            name = draw(st.sampled_from(sorted(el.attrib.keys())))
            el.set(name, draw(st.sampled_from(["", " ", "x", "1..2", "urn:oid:", "\u00e9"])))
        elif op == "text":
            el.text = draw(st.sampled_from(["", "x", "1.2.3", "urn:oid:1", "\u00e9\u4e2d", "  "]))
        elif op == "dup" and parent is not None:
            parent.append(etree.fromstring(etree.tostring(el)))
    return etree.tostring(root)


def _mutated(seeds: list[bytes], tree: bool = True) -> st.SearchStrategy[bytes]:
    seed = st.sampled_from(seeds)
    if not tree:
        return seed.flatmap(_byte_mutation)
    return seed.flatmap(lambda s: _byte_mutation(s) | _tree_mutation(s))


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_mutated_messages_parse_or_raise_typed_errors(name: str, conformance_dir: Path) -> None:
    tag, parse = PARSERS[name]
    seeds = _seeds_for(tag)
    assert seeds, f"no seed message for {name}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_mutated(seeds, tree=tag != "MIME"))
    def check(data: bytes) -> None:
        RAN[name] = RAN.get(name, 0) + 1
        with contextlib.suppress(ImageBridgeError):
            parse(data)

    check()
    assert RAN[name] >= min(EXAMPLES, 10)


def test_report_fuzz_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: prints how many mutated messages each parser saw."""
    with capsys.disabled():
        total = sum(RAN.values())
        print(
            f"\nfuzz: {total} mutated messages over {len(RAN)} parsers: {dict(sorted(RAN.items()))}"
        )
