"""Cross Gateway Query [ITI-38] codec against NIST testkit messages and real ITI-38 samples.

* Every AdhocQueryRequest in the testkit (94 files) parses after the
  toolkit's ``$token$`` substitution, renders to a message that validates
  against query.xsd, and re-parses to an equal model.  Two are refused:
  ``12307`` writes ``home="$home"`` (token without its closing ``$``, so the
  toolkit never fills it), which is :class:`UnknownCommunity`.  The six UI
  templates under ``_support/utilities`` are filled the way the toolkit's UI
  does (each token with a value of its kind, unused slots stripped) before
  they are parsed.
* Every ebRIM 3.0 ExtrinsicObject in the testkit (submission metadata, KOS
  metadata) parses as a DocumentEntry, renders valid against rim.xsd and
  re-parses equal; so does every ebRIM 3.0 RegistryObjectList around them,
  except the two ``ids_480[12]/validate-metadata`` ones whose SubmissionSet
  Classification has no ``id`` (schema-invalid, as the conformance README
  says).  The ebRIM **2.1** files are refused with :class:`WrongNamespace`;
  the three ``ids_2018-4801*/metadata.xml`` are not well-formed.
  The testkit holds no AdhocQueryResponse document (only XPath assertions
  that mention it), so responses come from the real samples.
* The four Metriport ITI-38 samples (whole SOAP envelopes) all parse; the
  conformance README marks none of them INVALID.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from imagebridge.errors import MissingElement, UnknownCommunity, WrongNamespace, XmlMalformed
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import Status
from imagebridge.model.xds import DocumentEntry, DocumentEntryType, Dtm
from imagebridge.model.xds_query import FindDocumentsQuery, GenericStoredQuery, GetDocumentsQuery
from imagebridge.wire import ns
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    parse_document_entry,
    parse_registry_object_list,
    render_adhoc_query_request,
    render_adhoc_query_response,
    render_document_entry,
    render_registry_object_list,
)
from imagebridge.wire.xml import Element, elements, parse_xml
from tests.conformance_data import SAMPLES_DIR, TESTKIT_DIR, assert_valid, substitute_placeholders

pytestmark = pytest.mark.conformance

REQUEST = ns.q(ns.QUERY, "AdhocQueryRequest")
EXTRINSIC_OBJECT = re.compile(rb"<([A-Za-z0-9_]+:)?ExtrinsicObject\b")
RIM21 = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1"


def _files(marker: re.Pattern[bytes]) -> list[str]:
    if not TESTKIT_DIR.is_dir():
        return []
    return sorted(
        str(p.relative_to(TESTKIT_DIR))
        for p in TESTKIT_DIR.rglob("*.xml")
        if marker.search(p.read_bytes())
    )


REQUEST_FILES = _files(re.compile(rb"<([A-Za-z0-9_]+:)?AdhocQueryRequest\b"))
METADATA_FILES = _files(EXTRINSIC_OBJECT)

# --- AdhocQueryRequest ---------------------------------------------------------------------

REFUSED_REQUESTS = {
    "12307/query.xml": "'\\$home'",
    "12307/getdocs/query.xml": "'\\$home'",
}

# The toolkit UI's query templates: token stem -> values of the right kind (cycled by index).
TEMPLATE_VALUES: dict[str, tuple[str, ...]] = {
    "rt": ("LeafClass",),
    "returnType": ("ObjectRef",),
    "ot": (v.DOCUMENT_ENTRY_STABLE, v.DOCUMENT_ENTRY_ON_DEMAND),
    "dst": (v.STATUS_APPROVED, v.STATUS_DEPRECATED),
    "sst": (v.STATUS_APPROVED,),
    "fst": (v.STATUS_APPROVED,),
    "fc": (f"{v.KOS_FORMAT_CODE}^^{v.KOS_FORMAT_CODE_SCHEME}", "urn:ihe:rad:PDF^^1.3.6.1.4.1"),
    "clc": ("18726-0^^2.16.840.1.113883.6.1",),
    "tc": ("24627-2^^2.16.840.1.113883.6.1",),
    "hftc": ("22232009^^2.16.840.1.113883.6.96",),
    "psc": ("394914008^^2.16.840.1.113883.6.96",),
    "cc": ("N^^2.16.840.1.113883.5.25", "R^^2.16.840.1.113883.5.25"),
    "ecl": ("CT^^1.2.840.10008.2.16.4", "MR^^1.2.840.10008.2.16.4"),
    "ctf": ("20200101",),
    "ctt": ("202501011200",),
    "sstf": ("2019",),
    "sstt": ("20250101235959",),
    "sttf": ("201901",),
    "sttt": ("2026",),
    "ap": ("%Smith%", "O''Brien"),  # already escaped for its quoted slot
    "id": ("urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e1{n}",),
    "uid": ("1.3.6.1.4.1.21367.13.99.{n}",),
}
TEMPLATE_TOKEN = re.compile(r"\$([A-Za-z]+?)(\d*)\$")
# Each template with the token stems whose slots are left unfilled (the toolkit strips them).
TEMPLATES: dict[str, tuple[frozenset[str], ...]] = {
    "_support/utilities/FindDocuments2/IG/query.xml": (frozenset(),),
    "_support/utilities/FindDocuments2/XCA/query.xml": (frozenset(),),
    "_support/utilities/GetAll/IG/query.xml": (frozenset(),),
    "_support/utilities/GetAll/XCA/query.xml": (frozenset(),),
    "_support/utilities/GetDocuments/IG/query.xml": (frozenset({"uid"}), frozenset({"id"})),
    "_support/utilities/GetDocuments/XCA/query.xml": (frozenset({"uid"}), frozenset({"id"})),
}


def _fill_template(data: bytes, unfilled: frozenset[str]) -> bytes:
    """Fill the UI tokens as the toolkit does; drop Values (and Slots) left unfilled."""

    def value(m: re.Match[str]) -> str:
        stem, index = m.group(1), m.group(2)
        if stem in unfilled or stem not in TEMPLATE_VALUES:
            return m.group(0)
        n = int(index or 0)
        options = TEMPLATE_VALUES[stem]
        return options[n % len(options)].format(n=n)

    text = TEMPLATE_TOKEN.sub(value, data.decode())
    root = etree.fromstring(text.encode())
    for val in list(root.iter(ns.q(ns.RIM, "Value"))):
        if any(stem in unfilled for stem, _ in TEMPLATE_TOKEN.findall(val.text or "")):
            parent = val.getparent()
            assert parent is not None
            parent.remove(val)
    for slot in list(root.iter(ns.q(ns.RIM, "Slot"))):
        if not list(slot.iter(ns.q(ns.RIM, "Value"))):
            parent = slot.getparent()
            assert parent is not None
            parent.remove(slot)
    return substitute_placeholders(etree.tostring(root))


def _request_cases() -> list[tuple[str, frozenset[str] | None]]:
    cases: list[tuple[str, frozenset[str] | None]] = []
    for relative in REQUEST_FILES:
        variants = TEMPLATES.get(relative)
        if variants is None:
            cases.append((relative, None))
        else:
            cases.extend((relative, unfilled) for unfilled in variants)
    return cases


def test_request_inventory(conformance_dir: Path) -> None:
    """Fails (in CI) when the material is missing or changes under us."""
    assert len(REQUEST_FILES) == 94
    assert set(REFUSED_REQUESTS) | set(TEMPLATES) <= set(REQUEST_FILES)
    assert len(_request_cases()) == 94 + 2  # the GetDocuments templates run twice


def _roundtrip_request(el: Element) -> None:
    request = parse_adhoc_query_request(el)
    out = render_adhoc_query_request(request)
    assert_valid("query", out)
    assert parse_adhoc_query_request(out) == request


@pytest.mark.parametrize(("relative", "unfilled"), _request_cases())
def test_testkit_requests_parse_render_and_validate(
    relative: str, unfilled: frozenset[str] | None, schema_dir: Path
) -> None:
    data = (TESTKIT_DIR / relative).read_bytes()
    if unfilled is not None:
        el = parse_xml(_fill_template(data, unfilled))
    else:
        el = parse_xml(substitute_placeholders(data))
    assert el.tag == REQUEST  # testkit requests are bare payloads
    if relative in REFUSED_REQUESTS:
        with pytest.raises(UnknownCommunity, match=REFUSED_REQUESTS[relative]) as info:
            parse_adhoc_query_request(el)
        assert info.value.xds_error_code == "XDSUnknownCommunity"
        return
    _roundtrip_request(el)


def test_templates_exercise_every_find_documents_parameter(conformance_dir: Path) -> None:
    data = (TESTKIT_DIR / "_support/utilities/FindDocuments2/XCA/query.xml").read_bytes()
    request = parse_adhoc_query_request(parse_xml(_fill_template(data, frozenset())))
    q = request.query
    assert isinstance(q, FindDocumentsQuery)
    assert len(q.class_code) == len(q.format_code) == 10
    assert len(q.event_code_list) == 1 and len(q.event_code_list[0]) == 10  # one slot: OR
    assert q.creation_time.from_ == Dtm("20200101")
    assert q.service_stop_time.to == Dtm("2026")
    assert q.author_person[1] == "O'Brien"
    assert set(q.document_entry_type) == {v.DOCUMENT_ENTRY_STABLE, v.DOCUMENT_ENTRY_ON_DEMAND}
    assert request.home_community_id == HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.201")
    getdocs = (TESTKIT_DIR / "_support/utilities/GetDocuments/XCA/query.xml").read_bytes()
    by_uid = parse_adhoc_query_request(parse_xml(_fill_template(getdocs, frozenset({"id"}))))
    assert isinstance(by_uid.query, GetDocumentsQuery)
    assert len(by_uid.query.unique_id) == 10 and not by_uid.query.entry_uuid


def test_missing_home_cases_are_detected(conformance_dir: Path) -> None:
    """15815/MissingCommunity and rg-bad-home expect XDSMissingHomeCommunityId."""
    for relative in ("15815/MissingCommunity/query.xml", "rg-bad-home/query.xml"):
        request = parse_adhoc_query_request(parse_xml((TESTKIT_DIR / relative).read_bytes()))
        with pytest.raises(Exception, match="homeCommunityId") as info:
            request.require_home_community_id()
        assert getattr(info.value, "xds_error_code", None) == "XDSMissingHomeCommunityId"


# --- ExtrinsicObject / RegistryObjectList --------------------------------------------------

MALFORMED = {
    "ids_2018-4801a/metadata.xml",
    "ids_2018-4801b/metadata.xml",
    "ids_2018-4801c/metadata.xml",
}
LIST_WITHOUT_IDS = {
    "ids_4801/validate-metadata/metadata.xml",
    "ids_4802/validate-metadata/metadata.xml",
}


def _extrinsic_objects(root: Element) -> list[Element]:
    return [e for e in root.iter() if etree.QName(e).localname == "ExtrinsicObject"]


def test_metadata_inventory(conformance_dir: Path) -> None:
    assert len(METADATA_FILES) == 55
    entries = ebrim21 = 0
    for relative in sorted(set(METADATA_FILES) - MALFORMED):
        for eo in _extrinsic_objects(parse_xml((TESTKIT_DIR / relative).read_bytes())):
            entries += etree.QName(eo).namespace == ns.RIM
            ebrim21 += etree.QName(eo).namespace == RIM21
    assert (entries, ebrim21) == (28, 31)


@pytest.mark.parametrize("relative", METADATA_FILES)
def test_testkit_document_entries(relative: str, schema_dir: Path) -> None:
    data = substitute_placeholders((TESTKIT_DIR / relative).read_bytes())
    if relative in MALFORMED:  # a comment inside a start tag, upstream
        with pytest.raises(XmlMalformed):
            parse_xml(data)
        return
    root = parse_xml(data)
    found = _extrinsic_objects(root)
    assert found
    for eo in found:
        if etree.QName(eo).namespace == RIM21:
            with pytest.raises(WrongNamespace, match=re.escape(RIM21)):
                parse_document_entry(eo)
            continue
        entry = parse_document_entry(eo)
        out = render_document_entry(entry)
        assert_valid("rim", out)
        assert parse_document_entry(out) == entry
    for registry_objects in root.iter(ns.q(ns.RIM, "RegistryObjectList")):
        if relative in LIST_WITHOUT_IDS:
            with pytest.raises(MissingElement, match="attribute id is missing on Classification"):
                parse_registry_object_list(registry_objects)
            continue
        objects = parse_registry_object_list(registry_objects)
        out = render_registry_object_list(objects)
        assert_valid("rim", out)
        assert parse_registry_object_list(out) == objects


def test_kos_metadata_is_understood(conformance_dir: Path) -> None:
    root = parse_xml((TESTKIT_DIR / "idc_init/XDS-I-idc-a/metadata-IDCDEPT001-a.xml").read_bytes())
    (entry,) = [
        o for o in parse_registry_object_list(next(iter(root))) if isinstance(o, DocumentEntry)
    ]
    assert entry.format_code is not None
    assert (entry.format_code.code, entry.format_code.scheme) == (
        v.KOS_FORMAT_CODE,
        v.KOS_FORMAT_CODE_SCHEME,
    )
    assert entry.mime_type == v.MIME_DICOM
    assert [c.code for c in entry.event_code_list] == ["CT", "R-FAB55"]
    assert len(entry.authors) == 2 and entry.authors[0].institutions == (
        "Cleveland Clinic",
        "Parma Community",
    )
    assert entry.patient_id == PatientId("IDCAD001-a", "1.3.6.1.4.1.21367.2005.13.20.1000")
    assert len(entry.source_patient_info) == 5


# --- real ITI-38 samples (whole SOAP envelopes) --------------------------------------------

SAMPLES = {
    "metriport/iti-38/epic-iti-38-request.xml",
    "metriport/iti-38/dq_empty.xml",
    "metriport/iti-38/dq_error.xml",
    "metriport/iti-38/dq_multiple_docs.xml",
}


def _body_child(relative: str) -> Element:
    root = parse_xml((SAMPLES_DIR / relative).read_bytes())
    body = root.find(ns.q(ns.SOAP12, "Body"))
    assert body is not None
    return next(elements(body))


def test_sample_inventory(conformance_dir: Path) -> None:
    found = {str(p.relative_to(SAMPLES_DIR)) for p in SAMPLES_DIR.glob("*/iti-38/*.xml")}
    assert found == SAMPLES


@pytest.mark.parametrize("relative", sorted(SAMPLES))
def test_iti38_samples_parse_render_and_validate(relative: str, schema_dir: Path) -> None:
    el = _body_child(relative)
    if etree.QName(el).localname == "AdhocQueryRequest":
        _roundtrip_request(el)
        return
    response = parse_adhoc_query_response(el)
    out = render_adhoc_query_response(response)
    assert_valid("query", out)
    assert parse_adhoc_query_response(out) == response


def test_sample_quirks_are_normalised(conformance_dir: Path) -> None:
    epic = parse_adhoc_query_request(_body_child("metriport/iti-38/epic-iti-38-request.xml"))
    assert epic.home_community_id == HomeCommunityId(
        "1.2.840.114350.1.13.11511.3.7.3.688884.100.1000"
    )
    assert isinstance(epic.query, FindDocumentsQuery)
    assert epic.query.patient_id.id == "EV10045900"
    assert epic.query.document_entry_type == (v.DOCUMENT_ENTRY_STABLE, v.DOCUMENT_ENTRY_ON_DEMAND)
    assert epic.query.creation_time.to == Dtm("20231201000000")

    error = parse_adhoc_query_response(_body_child("metriport/iti-38/dq_error.xml"))
    assert error.status is Status.PARTIAL_SUCCESS
    assert [(e.error_code, e.location) for e in error.errors] == [("XDSRegistryError", None)]
    assert error.registry_objects == ()

    docs = parse_adhoc_query_response(_body_child("metriport/iti-38/dq_multiple_docs.xml"))
    first, second = docs.document_entries
    assert first.entry_uuid == "urn:uuid:018e81dd-ddaf-7d7c-b02c-d8a145ebb0c8"  # prefix added
    assert first.creation_time == Dtm("20240327214304")  # from ISO 8601 ...
    assert second.creation_time == Dtm("20240329163146")  # ... next to HL7 DTM
    assert first.object_type is DocumentEntryType.ON_DEMAND
    assert first.home == HomeCommunityId("2.16.840.1.113883.3.9621")
    assert first.authors[0].institutions == ("Metriport^^^^^^^^^2.16.840.1.113883.3.9621",)
    assert first.unique_id == "123456789" and first.size == 141255

    assert docs.ids_without_home() == ()

    empty = parse_adhoc_query_response(_body_child("metriport/iti-38/dq_empty.xml"))
    assert (empty.status, empty.registry_objects) == (Status.SUCCESS, ())


def test_generic_queries_in_the_testkit(conformance_dir: Path) -> None:
    """GetAll (15830) and GetSubmissionSetAndContents (12320) keep their parameters."""
    get_all = parse_adhoc_query_request(
        parse_xml(substitute_placeholders((TESTKIT_DIR / "15830/GetAll1/query.xml").read_bytes()))
    )
    assert isinstance(get_all.query, GenericStoredQuery)
    assert [p.name for p in get_all.query.parameters][:2] == [v.QP_PATIENT_ID, v.QP_DE_STATUS]
    ss = parse_adhoc_query_request(
        parse_xml(
            substitute_placeholders((TESTKIT_DIR / "12320/verify_version_1/query.xml").read_bytes())
        )
    )
    assert isinstance(ss.query, GenericStoredQuery)
    with pytest.raises(Exception, match="homeCommunityId"):
        ss.require_home_community_id()
