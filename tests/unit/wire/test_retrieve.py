"""Retrieve codecs: ITI-39/ITI-43 request and response, RAD-69/RAD-75 request, and their models."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from imagebridge.errors import (
    ImageBridgeError,
    InvalidOid,
    InvalidUid,
    InvalidValue,
    MissingElement,
    RetrieveInvalidUid,
    TooManyElements,
    UnexpectedElement,
    WrongNamespace,
)
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, RegistryResponse, Severity, Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
    XopInclude,
)
from imagebridge.wire import ns
from imagebridge.wire.xds.imaging_retrieve import (
    parse_retrieve_imaging_document_set_request,
    render_retrieve_imaging_document_set_request,
)
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
    render_retrieve_document_set_request,
    render_retrieve_document_set_response,
)
from imagebridge.wire.xml import Element, parse_xml, serialize
from tests.conformance_data import assert_valid

HOME = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
SOP = "1.3.6.1.4.1.21367.201599.3.201607011605056.1"
X = f"xmlns:x='{ns.XDS}'"
RS = f"xmlns:rs='{ns.RS}'"
XOP = f"xmlns:xop='{ns.XOP}'"
SUCCESS = f"<rs:RegistryResponse status='{Status.SUCCESS.value}'/>"


def xml(text: str) -> Element:
    return parse_xml(text.encode())


def response(*documents: str, registry: str = SUCCESS) -> Element:
    return xml(
        f"<x:RetrieveDocumentSetResponse {X} {RS} {XOP}>{registry}{''.join(documents)}"
        "</x:RetrieveDocumentSetResponse>"
    )


def doc_response(document: str = "<x:Document>QUJD</x:Document>", extra: str = "") -> str:
    return (
        f"<x:DocumentResponse><x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
        f"<x:DocumentUniqueId>{SOP}</x:DocumentUniqueId>{extra}"
        f"<x:mimeType>application/dicom</x:mimeType>{document}</x:DocumentResponse>"
    )


def resolve_xop(el: Element) -> Element:
    """Replace every xop:Include by base64, as an MTOM receiver would (for schema checks)."""
    copy = etree.fromstring(etree.tostring(el))
    for include in list(copy.iter(ns.q(ns.XOP, "Include"))):
        parent = include.getparent()
        assert parent is not None
        parent.remove(include)
        parent.text = base64.b64encode(b"attachment").decode()
    return copy


# --- models -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "document"),
    [("", SOP), (REPO, ""), ("urn:oid:" + REPO, SOP), (REPO, "1.2 3"), (REPO, "1" * 257)],
)
def test_document_request_holds_only_normalised_identifiers(repository: str, document: str) -> None:
    with pytest.raises(InvalidValue):
        DocumentRequest(repository, document)


def test_imaging_tree_requires_dicom_uids_and_non_empty_levels() -> None:
    with pytest.raises(InvalidUid):
        SeriesRequest("1.2.3", (DocumentRequest(REPO, "urn:uuid:6f1c0f6e"),))
    with pytest.raises(InvalidUid):
        SeriesRequest(" 1.2.3", (DocumentRequest(REPO, SOP),))
    with pytest.raises(InvalidValue):
        SeriesRequest("1.2.3", ())
    with pytest.raises(InvalidValue):
        StudyRequest("1.2.3", ())
    series = SeriesRequest("1.2.3", (DocumentRequest(REPO, SOP),))
    with pytest.raises(InvalidValue):
        RetrieveImagingDocumentSetRequest((StudyRequest("1.2", (series,)),), ())
    with pytest.raises(InvalidUid):
        RetrieveImagingDocumentSetRequest((StudyRequest("1.2", (series,)),), ("1.2.840.01",))


def test_xop_include_encodes_content_ids_per_rfc_2392() -> None:
    assert XopInclude.for_content_id("<doc1@ihexds.nist.gov>").href == "cid:doc1@ihexds.nist.gov"
    wcf = XopInclude.for_content_id("http://tempuri.org/1/638509440267508087")
    assert wcf.href == "cid:http://tempuri.org/1/638509440267508087"
    odd = XopInclude.for_content_id("a b%c?d#e<f>")
    assert odd.href == "cid:a%20b%25c%3Fd%23e%3Cf%3E"
    assert odd.content_id == "a b%c?d#e<f>"
    cxf = XopInclude("cid:f9a6@urn%3Aihe%3Aiti%3Axds-b%3A2007")
    assert cxf.content_id == "f9a6@urn:ihe:iti:xds-b:2007"
    assert XopInclude("CID:x").content_id == "x"
    for bad in ("doc1@x", "cid:", " cid:x"):
        with pytest.raises(InvalidValue):
            XopInclude(bad)
    with pytest.raises(InvalidValue):
        XopInclude.for_content_id("<>")


@given(st.text(min_size=1).filter(lambda s: s == s.strip() and not s.startswith("<")))
def test_content_id_round_trips_through_href(content_id: str) -> None:
    assert XopInclude.for_content_id(content_id).content_id == content_id


def test_consolidated_response_status() -> None:
    doc = DocumentResponse(REPO, SOP, "application/dicom", b"x")
    err = RegistryError("XDSDocumentUniqueIdError", SOP)
    warn = RegistryError("XDSRepositoryError", "slow", Severity.WARNING)
    assert RetrieveDocumentSetResponse.consolidated([doc], [warn]).status is Status.SUCCESS
    assert RetrieveDocumentSetResponse.consolidated([doc], [err]).status is Status.PARTIAL_SUCCESS
    failure = RetrieveDocumentSetResponse.consolidated([], [err])
    assert failure.status is Status.FAILURE
    assert failure.errors == (err,)


# --- ITI-39 request -----------------------------------------------------------------------

LENIENT_REQUEST = f"""
<RetrieveDocumentSetRequest xmlns="{ns.XDS}">
  <DocumentRequest>
    <DocumentUniqueId>
        urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11 </DocumentUniqueId>
    <RepositoryUniqueId> urn:oid:{REPO}</RepositoryUniqueId>
    <HomeCommunityId>urn:oid:urn:oid:{HOME.oid}</HomeCommunityId>
  </DocumentRequest>
  <ns5:DocumentRequest xmlns:ns5="{ns.XDS}">
    <ns5:HomeCommunityId>  </ns5:HomeCommunityId>
    <ns5:RepositoryUniqueId>1</ns5:RepositoryUniqueId>
    <ns5:DocumentUniqueId>1.2.3</ns5:DocumentUniqueId>
  </ns5:DocumentRequest>
</RetrieveDocumentSetRequest>"""


def test_request_parsing_is_lenient() -> None:
    parsed = parse_retrieve_document_set_request(xml(LENIENT_REQUEST))
    assert parsed == RetrieveDocumentSetRequest(
        (
            DocumentRequest(REPO, "urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11", HOME),
            DocumentRequest("1", "1.2.3", None),  # CONNECT's test data uses repository "1"
        )
    )


def test_request_rendering_is_strict_and_schema_valid(schema_dir: Path) -> None:
    request = parse_retrieve_document_set_request(xml(LENIENT_REQUEST))
    out = render_retrieve_document_set_request(request)
    assert serialize(out).decode() == (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<xds:RetrieveDocumentSetRequest xmlns:xds="{ns.XDS}"><xds:DocumentRequest>'
        f"<xds:HomeCommunityId>{HOME.urn}</xds:HomeCommunityId>"
        f"<xds:RepositoryUniqueId>{REPO}</xds:RepositoryUniqueId>"
        "<xds:DocumentUniqueId>urn:uuid:6f1c0f6e-2d3b-4a8e-9d0b-1f5a2a4c9e11</xds:DocumentUniqueId>"
        "</xds:DocumentRequest><xds:DocumentRequest>"
        "<xds:RepositoryUniqueId>1</xds:RepositoryUniqueId>"
        "<xds:DocumentUniqueId>1.2.3</xds:DocumentUniqueId>"
        "</xds:DocumentRequest></xds:RetrieveDocumentSetRequest>"
    )
    assert_valid("xds", out)
    assert parse_retrieve_document_set_request(out) == request


def _request(body: str) -> Element:
    return xml(f"<x:RetrieveDocumentSetRequest {X}>{body}</x:RetrieveDocumentSetRequest>")


GOOD_DR = (
    f"<x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
    "<x:DocumentUniqueId>1.2</x:DocumentUniqueId>"
)


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ("", MissingElement, "no DocumentRequest"),
        (
            "<x:DocumentRequest><x:DocumentUniqueId>1.2</x:DocumentUniqueId></x:DocumentRequest>",
            MissingElement,
            "RepositoryUniqueId",
        ),
        (
            "<x:DocumentRequest><x:RepositoryUniqueId> urn:oid: </x:RepositoryUniqueId>"
            "<x:DocumentUniqueId>1.2</x:DocumentUniqueId></x:DocumentRequest>",
            MissingElement,
            "empty",
        ),
        (
            f"<x:DocumentRequest><x:RepositoryUniqueId>{REPO}</x:RepositoryUniqueId>"
            "<x:DocumentUniqueId/></x:DocumentRequest>",
            MissingElement,
            "DocumentUniqueId is empty",
        ),
        (
            f"<x:DocumentRequest>{GOOD_DR}<x:DocumentUniqueId>1.3</x:DocumentUniqueId></x:DocumentRequest>",
            UnexpectedElement,
            "2 times",
        ),
        (f"<x:DocumentRequest>{GOOD_DR}<x:Extra/></x:DocumentRequest>", UnexpectedElement, "Extra"),
        (
            f"<x:DocumentRequest><x:HomeCommunityId><b/></x:HomeCommunityId>{GOOD_DR}</x:DocumentRequest>",
            UnexpectedElement,
            "holds element",
        ),
        (
            f"<d:DocumentRequest xmlns:d='{ns.XDSI}'>{GOOD_DR}</d:DocumentRequest>",
            WrongNamespace,
            "xdsi",
        ),
        (
            f"<x:DocumentRequest><x:HomeCommunityId>urn:oid:1.2.x</x:HomeCommunityId>{GOOD_DR}"
            "</x:DocumentRequest>",
            InvalidOid,
            "homeCommunityId",
        ),
        (
            f"<x:DocumentRequest>{GOOD_DR.replace('1.2<', '1. 2<')}</x:DocumentRequest>",
            InvalidValue,
            "whitespace",
        ),
    ],
)
def test_request_refusals_are_typed(body: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_retrieve_document_set_request(_request(body))


def test_request_root_is_checked() -> None:
    with pytest.raises(WrongNamespace):
        parse_retrieve_document_set_request(xml(f"<RetrieveDocumentSetRequest xmlns='{ns.XDSI}'/>"))
    with pytest.raises(UnexpectedElement):
        parse_retrieve_document_set_request(xml(f"<x:RetrieveDocumentSetResponse {X}/>"))


def test_request_limit_is_enforced_before_building_the_model() -> None:
    three = _request(f"<x:DocumentRequest>{GOOD_DR}</x:DocumentRequest>" * 3)
    assert (
        len(parse_retrieve_document_set_request(three, max_document_requests=3).document_requests)
        == 3
    )
    with pytest.raises(TooManyElements) as info:
        parse_retrieve_document_set_request(three, max_document_requests=2)
    assert (info.value.element, info.value.limit) == ("DocumentRequest", 2)


# --- response -----------------------------------------------------------------------------


def test_response_accepts_inline_base64_with_line_breaks_and_xop_with_whitespace() -> None:
    data = bytes(range(256)) * 3
    wrapped = base64.encodebytes(data).decode()  # MIME style, a line break every 76 chars
    el = response(
        doc_response(f"<x:Document>\n  {wrapped}  </x:Document>"),
        doc_response(
            "<x:Document>\n   <xop:Include href=' cid:1.urn:uuid:83e0fc9b%40x '/>\n </x:Document>",
            extra="<x:NewRepositoryUniqueId>urn:oid:1.2.9</x:NewRepositoryUniqueId>"
            "<x:NewDocumentUniqueId>1.2.840.114350.1.13.35.2.7.8.688883.689581991</x:NewDocumentUniqueId>",
        ),
    )
    parsed = parse_retrieve_document_set_response(el)
    first, second = parsed.document_responses
    assert first.document == data
    assert second.document == XopInclude("cid:1.urn:uuid:83e0fc9b%40x")
    assert isinstance(second.document, XopInclude)
    assert second.document.content_id == "1.urn:uuid:83e0fc9b@x"
    assert second.new_repository_unique_id == "1.2.9"
    assert second.new_document_unique_id == "1.2.840.114350.1.13.35.2.7.8.688883.689581991"
    assert parsed.status is Status.SUCCESS


def test_response_keeps_status_and_errors_as_sent() -> None:
    registry = (
        f"<rs:RegistryResponse status='{Status.PARTIAL_SUCCESS.value}'><rs:RegistryErrorList>"
        "<rs:RegistryError errorCode='XDSIUnknownIdsUid' codeContext='private code' location='l'/>"
        "</rs:RegistryErrorList></rs:RegistryResponse>"
    )
    parsed = parse_retrieve_document_set_response(response(doc_response(), registry=registry))
    assert parsed.status is Status.PARTIAL_SUCCESS
    assert parsed.errors == (RegistryError("XDSIUnknownIdsUid", "private code", location="l"),)


def test_empty_repository_echo_is_tolerated_but_never_rendered() -> None:
    el = response(doc_response().replace(f">{REPO}<", "><"))
    parsed = parse_retrieve_document_set_response(el)
    assert parsed.document_responses[0].repository_unique_id is None
    with pytest.raises(InvalidValue, match="no RepositoryUniqueId"):
        render_retrieve_document_set_response(parsed)


@pytest.mark.parametrize(
    ("documents", "registry", "error", "match"),
    [
        ("", "", MissingElement, "RegistryResponse"),
        ("", f"<x:RegistryResponse status='{Status.SUCCESS.value}'/>", WrongNamespace, "rs:3.0"),
        ("", SUCCESS * 2, UnexpectedElement, "2 times"),
        (
            "",
            f"<rs:RegistryResponse {RS} status='{Status.FAILURE.value}'><r:RegistryErrorList "
            f"xmlns:r='{ns.RIM}'/></rs:RegistryResponse>",
            WrongNamespace,
            "RegistryErrorList",
        ),
        (
            doc_response().replace("<x:mimeType>application/dicom</x:mimeType>", ""),
            SUCCESS,
            MissingElement,
            "mimeType",
        ),
        (doc_response().replace("application/dicom", " "), SUCCESS, MissingElement, "mimeType"),
        (doc_response("<x:Document>...</x:Document>"), SUCCESS, InvalidValue, "base64"),
        (
            doc_response("<x:Document>Metriport Rocks!</x:Document>"),
            SUCCESS,
            InvalidValue,
            "base64",
        ),
        (doc_response("<x:Document>QUJD\u00e9</x:Document>"), SUCCESS, InvalidValue, "base64"),
        (doc_response("<x:Document>QUJ</x:Document>"), SUCCESS, InvalidValue, "base64"),
        (
            doc_response("<x:Document>QUJD<xop:Include href='cid:a'/></x:Document>"),
            SUCCESS,
            InvalidValue,
            "mixes",
        ),
        (
            doc_response(
                "<x:Document><xop:Include href='cid:a'/><xop:Include href='cid:b'/></x:Document>"
            ),
            SUCCESS,
            UnexpectedElement,
            "Include",
        ),
        (doc_response("<x:Document><xop:Include/></x:Document>"), SUCCESS, MissingElement, "href"),
        (
            doc_response("<x:Document><xop:Include href='doc1@x'/></x:Document>"),
            SUCCESS,
            InvalidValue,
            "cid:",
        ),
        (
            doc_response(f"<x:Document><o:Include xmlns:o='{ns.XDS}' href='cid:a'/></x:Document>"),
            SUCCESS,
            WrongNamespace,
            "Include",
        ),
        (doc_response("<x:Document><x:Data/></x:Document>"), SUCCESS, UnexpectedElement, "Data"),
        (
            doc_response(extra="<x:CreationTime>2024-04-04</x:CreationTime>"),
            SUCCESS,
            UnexpectedElement,
            "CreationTime",
        ),
        (
            doc_response().replace("<x:Document>QUJD</x:Document>", ""),
            SUCCESS,
            MissingElement,
            "Document",
        ),
        (
            doc_response().replace(f"<x:DocumentUniqueId>{SOP}", "<x:DocumentUniqueId>"),
            SUCCESS,
            MissingElement,
            "DocumentUniqueId",
        ),
        (f"<o:DocumentResponse xmlns:o='{ns.XDSI}'/>", SUCCESS, WrongNamespace, "DocumentResponse"),
    ],
)
def test_response_refusals_are_typed(
    documents: str, registry: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        parse_retrieve_document_set_response(response(documents, registry=registry))


def test_response_limit() -> None:
    el = response(doc_response() * 3)
    assert len(parse_retrieve_document_set_response(el).document_responses) == 3
    with pytest.raises(TooManyElements):
        parse_retrieve_document_set_response(el, max_document_responses=2)


def test_response_rendering_writes_xop_include_or_canonical_base64(schema_dir: Path) -> None:
    big = bytes(range(256)) * 2
    resp = RetrieveDocumentSetResponse.consolidated(
        [
            DocumentResponse(
                REPO,
                SOP,
                "application/dicom",
                XopInclude.for_content_id("<sop-1@rig>"),
                home_community_id=HOME,
            ),
            DocumentResponse(
                REPO,
                "1.2.3",
                "application/dicom",
                big,
                new_repository_unique_id="1.2.9",
                new_document_unique_id="1.2.4",
            ),
        ],
        [RegistryError("XDSDocumentUniqueIdError", "1.2.5", location=HOME.urn)],
    )
    out = render_retrieve_document_set_response(resp)
    text = serialize(out).decode()
    assert (
        f'<xds:Document><xop:Include xmlns:xop="{ns.XOP}" href="cid:sop-1@rig"/></xds:Document>'
        in text
    )
    assert f"<xds:Document>{base64.b64encode(big).decode()}</xds:Document>" in text
    assert "\n" not in text.split("\n", 1)[1]  # no pretty-printing, no base64 line breaks
    order = [etree.QName(c).localname for c in out[2]]
    assert order == [
        "RepositoryUniqueId",
        "DocumentUniqueId",
        "NewRepositoryUniqueId",
        "NewDocumentUniqueId",
        "mimeType",
        "Document",
    ]
    assert parse_retrieve_document_set_response(out) == resp
    assert_valid("xds", resolve_xop(out))
    for include in out.iter(ns.q(ns.XOP, "Include")):
        assert_valid("xop", include)


# --- RAD-69 / RAD-75 request ----------------------------------------------------------------

TS = "1.2.840.10008.1.2.1"


def imaging(
    studies: str, syntaxes: str | None = f"<i:TransferSyntaxUID>{TS}</i:TransferSyntaxUID>"
) -> Element:
    tsl = (
        f"<i:TransferSyntaxUIDList>{syntaxes}</i:TransferSyntaxUIDList>"
        if syntaxes is not None
        else ""
    )
    return xml(
        f"<i:RetrieveImagingDocumentSetRequest xmlns:i='{ns.XDSI}' {X}>{studies}{tsl}"
        "</i:RetrieveImagingDocumentSetRequest>"
    )


def study(series: str, uid: str = "1.2.3") -> str:
    return f"<i:StudyRequest studyInstanceUID='{uid}'>{series}</i:StudyRequest>"


def series(documents: str, uid: str = "1.2.3.4") -> str:
    return f"<i:SeriesRequest seriesInstanceUID='{uid}'>{documents}</i:SeriesRequest>"


def dr(
    sop: str = SOP,
    prefix: str = "x",
    home: str = f"<x:HomeCommunityId>{HOME.urn}</x:HomeCommunityId>",
) -> str:
    return (
        f"<{prefix}:DocumentRequest>{home.replace('x:', prefix + ':')}"
        f"<{prefix}:RepositoryUniqueId>{REPO}</{prefix}:RepositoryUniqueId>"
        f"<{prefix}:DocumentUniqueId>{sop}</{prefix}:DocumentUniqueId></{prefix}:DocumentRequest>"
    )


EXPECTED_IMAGING = RetrieveImagingDocumentSetRequest(
    (StudyRequest("1.2.3", (SeriesRequest("1.2.3.4", (DocumentRequest(REPO, SOP, HOME),)),)),),
    (TS,),
)


def test_imaging_request_accepts_document_request_in_either_namespace_and_writes_xds_b(
    schema_dir: Path,
) -> None:
    correct = parse_retrieve_imaging_document_set_request(imaging(study(series(dr()))))
    trapped = parse_retrieve_imaging_document_set_request(imaging(study(series(dr(prefix="i")))))
    assert correct == trapped == EXPECTED_IMAGING
    out = render_retrieve_imaging_document_set_request(trapped)
    assert [
        etree.QName(e).namespace
        for e in out.iter()
        if etree.QName(e).localname.endswith(("DocumentRequest", "UniqueId", "HomeCommunityId"))
    ] == [ns.XDS] * 4
    assert_valid("xdsi", out)
    assert parse_retrieve_imaging_document_set_request(out) == EXPECTED_IMAGING


def test_imaging_request_without_home_community_id_is_rad_69_intra_community() -> None:
    parsed = parse_retrieve_imaging_document_set_request(imaging(study(series(dr(home="")))))
    assert parsed.document_requests == (DocumentRequest(REPO, SOP, None),)


def test_imaging_request_flattens_document_requests_in_order() -> None:
    el = imaging(
        study(series(dr("1.9.1") + dr("1.9.2")) + series(dr("1.9.3"), "1.2.3.5"))
        + study(series(dr("1.9.4")), "1.2.4"),
        syntaxes=f"<i:TransferSyntaxUID>1.2.840.10008.1.2.4.50</i:TransferSyntaxUID>"
        f"<i:TransferSyntaxUID> {TS}\n</i:TransferSyntaxUID>",
    )
    parsed = parse_retrieve_imaging_document_set_request(el)
    assert [d.document_unique_id for d in parsed.document_requests] == [
        "1.9.1",
        "1.9.2",
        "1.9.3",
        "1.9.4",
    ]
    assert parsed.transfer_syntax_uids == ("1.2.840.10008.1.2.4.50", TS)


@pytest.mark.parametrize(
    ("el", "error", "match"),
    [
        (lambda: imaging(study(series(dr()), uid="")), InvalidUid, "studyInstanceUID is empty"),
        (lambda: imaging(study(series(dr()), uid="1.2.03")), InvalidUid, "studyInstanceUID"),
        (lambda: imaging(study(series(dr(), uid=""))), InvalidUid, "seriesInstanceUID is empty"),
        (lambda: imaging(study(series(dr("")))), InvalidUid, "SOP Instance UID"),
        (lambda: imaging(study(series(dr("urn:uuid:6f1c0f6e")))), InvalidUid, "SOP Instance UID"),
        (
            lambda: imaging(study(series(dr())), "<i:TransferSyntaxUID/>"),
            InvalidUid,
            "TransferSyntaxUID is empty",
        ),
        (lambda: imaging(study(series(dr())), ""), MissingElement, "no TransferSyntaxUID"),
        (lambda: imaging(study(series(dr())), None), MissingElement, "TransferSyntaxUIDList"),
        (lambda: imaging(""), MissingElement, "no StudyRequest"),
        (lambda: imaging(study("")), MissingElement, "no SeriesRequest"),
        (lambda: imaging(study(series(""))), MissingElement, "no DocumentRequest"),
        (
            lambda: imaging(
                "<i:StudyRequest><i:SeriesRequest seriesInstanceUID='1.2'/></i:StudyRequest>"
            ),
            MissingElement,
            "studyInstanceUID",
        ),
        (
            lambda: imaging(study(series(dr())).replace("i:StudyRequest", "x:StudyRequest")),
            WrongNamespace,
            "StudyRequest",
        ),
        (
            lambda: imaging(
                study(series(dr())) + f"<i:TransferSyntaxUIDList><i:TransferSyntaxUID>{TS}"
                "</i:TransferSyntaxUID></i:TransferSyntaxUIDList>"
            ),
            UnexpectedElement,
            "2 times",
        ),
        (lambda: imaging(study(series(dr() + "<i:Note/>"))), UnexpectedElement, "Note"),
        (
            lambda: imaging(study(series(dr())).replace(" seriesInstanceUID='1.2.3.4'", "")),
            MissingElement,
            "seriesInstanceUID",
        ),
    ],
)
def test_imaging_request_refusals_are_typed(
    el: Callable[[], Element], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        parse_retrieve_imaging_document_set_request(el())
    if error is InvalidUid:  # schema-valid, so answered in-band rather than as a fault
        assert isinstance(info.value, RetrieveInvalidUid)
        assert info.value.xds_error_code == "XDSRepositoryError"


def test_imaging_limits_count_the_whole_tree() -> None:
    el = imaging(study(series(dr("1.9.1") + dr("1.9.2")) + series(dr("1.9.3"), "1.2.3.5")))
    assert (
        len(
            parse_retrieve_imaging_document_set_request(
                el, max_document_requests=3
            ).document_requests
        )
        == 3
    )
    with pytest.raises(TooManyElements, match="DocumentRequest"):
        parse_retrieve_imaging_document_set_request(el, max_document_requests=2)
    many = imaging(study(series(dr())), f"<i:TransferSyntaxUID>{TS}</i:TransferSyntaxUID>" * 257)
    with pytest.raises(TooManyElements, match="TransferSyntaxUID"):
        parse_retrieve_imaging_document_set_request(many)


# --- properties: round trips, and nothing but typed errors ------------------------------------

_arc = st.integers(0, 10**6).map(str)
uids = st.lists(_arc, min_size=2, max_size=8).map(".".join).filter(lambda u: len(u) <= 64)
opaque = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,40}", fullmatch=True).filter(
    lambda s: not s.lower().startswith("urn:oid:")
)
homes = st.none() | uids.map(HomeCommunityId)


@settings(deadline=None)  # wall-clock is not a test criterion; big trees are slow on CI
@given(
    st.lists(
        st.tuples(
            uids,
            st.lists(
                st.tuples(
                    uids,
                    st.lists(
                        st.builds(DocumentRequest, opaque, uids, homes), min_size=1, max_size=3
                    ),
                ),
                min_size=1,
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    st.lists(uids, min_size=1, max_size=4),
)
def test_imaging_request_round_trips(
    tree: list[tuple[str, list[tuple[str, list[DocumentRequest]]]]], syntaxes: list[str]
) -> None:
    request = RetrieveImagingDocumentSetRequest(
        tuple(
            StudyRequest(s, tuple(SeriesRequest(r, tuple(d)) for r, d in series_list))
            for s, series_list in tree
        ),
        tuple(syntaxes),
    )
    out = parse_xml(serialize(render_retrieve_imaging_document_set_request(request)))
    assert parse_retrieve_imaging_document_set_request(out) == request


@settings(deadline=None)
@given(
    st.lists(
        st.builds(
            DocumentResponse,
            opaque,
            opaque,
            st.sampled_from(["application/dicom", "text/xml"]),
            st.binary(max_size=200) | st.builds(XopInclude.for_content_id, opaque),
            homes,
            st.none() | opaque,
            st.none() | opaque,
        ),
        max_size=4,
    )
)
def test_response_round_trips(documents: list[DocumentResponse]) -> None:
    resp = RetrieveDocumentSetResponse(RegistryResponse(Status.SUCCESS), tuple(documents))
    out = parse_xml(serialize(render_retrieve_document_set_response(resp)))
    assert parse_retrieve_document_set_response(out) == resp


xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Cn")) | st.sampled_from(" \n\t"), max_size=30
)


@settings(deadline=None)
@given(xml_text, xml_text, xml_text, xml_text, xml_text)
def test_arbitrary_values_raise_only_typed_errors(
    home: str, repo: str, doc: str, uid: str, content: str
) -> None:
    request = imaging(study(series(dr())))
    values = {
        "HomeCommunityId": home,
        "RepositoryUniqueId": repo,
        "DocumentUniqueId": doc,
        "TransferSyntaxUID": content,
    }
    for el in request.iter():
        name = etree.QName(el).localname
        if name in values:
            el.text = values[name]
        elif name == "StudyRequest":
            el.set("studyInstanceUID", uid)
    plain = _request(dr())
    for el in plain.iter():
        if etree.QName(el).localname in values:
            el.text = values[etree.QName(el).localname]
    resp = response(doc_response())
    for el in resp.iter(ns.q(ns.XDS, "Document"), ns.q(ns.XDS, "mimeType")):
        el.text = content if etree.QName(el).localname == "Document" else home
    cases = (
        (parse_retrieve_imaging_document_set_request, request),
        (parse_retrieve_document_set_request, plain),
        (parse_retrieve_document_set_response, resp),
    )
    for parse, el in cases:
        with contextlib.suppress(ImageBridgeError):
            parse(parse_xml(serialize(el)))
