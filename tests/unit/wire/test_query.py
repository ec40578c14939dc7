"""Cross Gateway Query [ITI-38]: value syntax, AdhocQueryRequest/Response codec, typed errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from imagebridge.errors import (
    ImageBridgeError,
    InvalidValue,
    MissingElement,
    MissingHomeCommunityId,
    StoredQueryMissingParam,
    StoredQueryParamNumber,
    StoredQueryParamSyntax,
    UnexpectedElement,
    UnknownCommunity,
    UnknownStoredQuery,
    WrongNamespace,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import RegistryError, Severity, Status
from imagebridge.model.xds import Code, Dtm, ObjectRef, RegistryObject
from imagebridge.model.xds_query import (
    AdhocQueryRequest,
    AdhocQueryResponse,
    FindDocumentsByReferenceIdQuery,
    FindDocumentsQuery,
    GenericStoredQuery,
    GetDocumentsQuery,
    QueryParameter,
    ReturnType,
    StoredQueryType,
    TimeRange,
)
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    render_adhoc_query_request,
    render_adhoc_query_response,
)
from imagebridge.wire.xds.slots import (
    LONG_NAME_MAX,
    format_list,
    parse_code,
    parse_single_value,
    parse_value_list,
    quote,
)
from imagebridge.wire.xml import parse_xml, serialize
from tests.conformance_data import assert_valid

QUERY_NS = 'xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"'
RIM_NS = 'xmlns:r="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"'
PID = "'P1^^^&amp;1.2.3.4&amp;ISO'"
APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"


def slot(name: str, *values: str) -> str:
    vals = "".join(f"<r:Value>{x}</r:Value>" for x in values)
    return f'<r:Slot name="{name}"><r:ValueList>{vals}</r:ValueList></r:Slot>'


def request(
    *slots: str, query_id: str = v.FIND_DOCUMENTS, attrs: str = "", rt: str = "LeafClass"
) -> bytes:
    return (
        f"<q:AdhocQueryRequest {QUERY_NS} {RIM_NS}>"
        f'<q:ResponseOption returnType="{rt}" returnComposedObjects="true"/>'
        f'<r:AdhocQuery id="{query_id}" {attrs}>{"".join(slots)}</r:AdhocQuery>'
        "</q:AdhocQueryRequest>"
    ).encode()


def find_docs(*extra: str, attrs: str = "") -> bytes:
    return request(
        slot(v.QP_DE_PATIENT_ID, PID), slot(v.QP_DE_STATUS, APPROVED), *extra, attrs=attrs
    )


def parse_req(data: bytes) -> AdhocQueryRequest:
    return parse_adhoc_query_request(parse_xml(data))


def roundtrip(req: AdhocQueryRequest) -> AdhocQueryRequest:
    el = render_adhoc_query_request(req)
    assert_valid("query", el)
    again = parse_adhoc_query_request(parse_xml(serialize(el)))
    assert again == req
    return again


# --- value syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("('a')", ("a",)),
        ("('a','b')", ("a", "b")),
        ("( 'a' , 'b' )", ("a", "b")),
        ("('Children''s')", ("Children's",)),
        ("('a,b','c)')", ("a,b", "c)")),
        ('("double")', ("double",)),
        ("'lone'", ("lone",)),
        ("(1, 2)", ("1", "2")),
        ("('')", ("",)),
    ],
)
def test_value_list_syntax(text: str, values: tuple[str, ...]) -> None:
    assert parse_value_list(text) == values


@pytest.mark.parametrize(
    "text",
    ["('a'", "('a' 'b')", "()", "('a')x", "('a',)", "'abc", "(a'b)", "", "('a'))"],
)
def test_value_list_syntax_errors(text: str) -> None:
    with pytest.raises(StoredQueryParamSyntax) as info:
        parse_value_list(text)
    assert info.value.xds_error_code == v.XDS_REGISTRY_ERROR


@pytest.mark.parametrize(
    ("text", "value"),
    [("'x'", "x"), ("20040101", "20040101"), ("'it''s'", "it's"), ("('x')", "x"), (" 'x' ", "x")],
)
def test_single_value_syntax(text: str, value: str) -> None:
    assert parse_single_value(text) == value


@pytest.mark.parametrize("text", ["('a','b')", "'x' y", "a'b", "a,b", ""])
def test_single_value_syntax_errors(text: str) -> None:
    with pytest.raises(StoredQueryParamSyntax):
        parse_single_value(text)


def test_quote_doubles_single_quotes() -> None:
    assert quote("O'Brien") == "'O''Brien'"
    assert parse_single_value(quote("O'Brien")) == "O'Brien"


def test_long_lists_are_split_into_values_of_at_most_256_characters() -> None:
    uuids = tuple(f"urn:uuid:00000000-0000-4000-8000-{n:012d}" for n in range(20))
    values = format_list(uuids)
    assert len(values) > 1
    assert all(len(x) <= LONG_NAME_MAX for x in values)
    assert tuple(item for x in values for item in parse_value_list(x)) == uuids


# XML 1.0 characters without the C0/C1 controls (which cannot travel in a rim:Value).
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=60)


@given(st.lists(_TEXT, min_size=1, max_size=12))
def test_any_strings_survive_format_and_parse(values: list[str]) -> None:
    rendered = format_list(tuple(values))
    assert all(len(x) <= LONG_NAME_MAX for x in rendered)
    assert tuple(item for x in rendered for item in parse_value_list(x)) == tuple(values)


@given(_TEXT)
def test_any_string_survives_quote_and_parse(value: str) -> None:
    assert parse_single_value(quote(value)) == value


def test_a_value_too_long_for_one_rim_value_is_refused() -> None:
    with pytest.raises(InvalidValue):
        format_list(("x" * 300,))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("CT^^1.2.840.10008.2.16.4", Code("CT", "1.2.840.10008.2.16.4")),
        ("CT^Computed Tomography^DCM", Code("CT", "DCM")),
        (" N ^^ 2.16.840.1.113883.5.25 ", Code("N", "2.16.840.1.113883.5.25")),
    ],
)
def test_coded_value_syntax(text: str, code: Code) -> None:
    assert parse_code(text) == code


@pytest.mark.parametrize("text", ["CT", "CT^DCM", "CT^^", "^^DCM", "CT^^DCM^x"])
def test_coded_value_syntax_errors(text: str) -> None:
    with pytest.raises(StoredQueryParamSyntax):
        parse_code(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2024", "2024"),
        ("202405", "202405"),
        ("20240501", "20240501"),
        ("2024050110", "2024050110"),
        ("202405011030", "202405011030"),
        ("20240501103059", "20240501103059"),
        ("20240501103059.123", "20240501103059"),
        ("20240501103059+0200", "20240501083059"),
        ("202405010030-0100", "202405010130"),
        ("20240501+0200", "20240501"),
        ("2024-03-27T21:43:04.878Z", "20240327214304"),
        ("2024-03-27T23:43:04+02:00", "20240327214304"),
        ("2024-01-01T00:30:00+01:00", "20231231233000"),
        ("2024-03-27", "20240327"),
        ("2024-03-27T21:43", "202403272143"),
    ],
)
def test_time_values_and_precision(text: str, value: str) -> None:
    assert Dtm.parse(text) == Dtm(value)


@pytest.mark.parametrize(
    "text", ["20241301", "20230230", "2024050125", "20245", "yesterday", "2024-13-01T00:00Z", ""]
)
def test_bad_time_values(text: str) -> None:
    with pytest.raises(InvalidValue):
        Dtm.parse(text)


# --- request: lenient parsing ----------------------------------------------------------------


def test_find_documents_request_parses_every_parameter_kind() -> None:
    req = parse_req(
        find_docs(
            slot(v.QP_DE_CLASS_CODE, "('IMAGES^^1.3.6.1.4.1.19376.1.2.6.1')"),
            slot(v.QP_DE_EVENT_CODE_LIST, "('CT^^DCM','MR^^DCM')"),
            slot(v.QP_DE_EVENT_CODE_LIST, "('T-D3000^^SRT')"),
            slot(v.QP_DE_CONFIDENTIALITY_CODE, "('N^^2.16.840.1.113883.5.25')"),
            slot(v.QP_DE_SERVICE_START_TIME_FROM, "20200101"),
            slot(v.QP_DE_SERVICE_START_TIME_TO, "202501011200"),
            slot(v.QP_DE_AUTHOR_PERSON, "('%Smith%')", "('Jones')"),
            slot(v.QP_DE_TYPE, f"('{v.DOCUMENT_ENTRY_STABLE}','{v.DOCUMENT_ENTRY_ON_DEMAND}')"),
            slot(v.QP_DE_FORMAT_CODE, f"('{v.KOS_FORMAT_CODE}^^{v.KOS_FORMAT_CODE_SCHEME}')"),
        )
    )
    q = req.query
    assert isinstance(q, FindDocumentsQuery)
    assert q.patient_id == PatientId("P1", "1.2.3.4")
    assert q.status == (v.STATUS_APPROVED,)
    assert q.class_code == (Code("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1"),)
    assert q.event_code_list == (
        (Code("CT", "DCM"), Code("MR", "DCM")),
        (Code("T-D3000", "SRT"),),
    )
    assert q.confidentiality_code == ((Code("N", "2.16.840.1.113883.5.25"),),)
    assert q.service_start_time == TimeRange(Dtm("20200101"), Dtm("202501011200"))
    assert not q.creation_time
    assert q.author_person == ("%Smith%", "Jones")
    assert q.document_entry_type == (v.DOCUMENT_ENTRY_STABLE, v.DOCUMENT_ENTRY_ON_DEMAND)
    assert q.format_code == (Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME),)
    assert req.return_type is ReturnType.LEAF_CLASS
    assert req.return_composed_objects
    roundtrip(req)


def test_status_split_over_several_values_is_concatenated() -> None:
    req = parse_req(
        request(
            slot(v.QP_DE_PATIENT_ID, PID),
            slot(v.QP_DE_STATUS, f"('{v.STATUS_APPROVED}')", f"('{v.STATUS_DEPRECATED}')"),
        )
    )
    assert isinstance(req.query, FindDocumentsQuery)
    assert req.query.status == (v.STATUS_APPROVED, v.STATUS_DEPRECATED)


def test_epic_style_request_is_accepted() -> None:
    """home without urn:oid:, stray lid/objectType/status, slotType, quoted patient id."""
    data = request(
        f'<r:Slot name="{v.QP_DE_PATIENT_ID}" slotType="rim:StringValueType">'
        f"<r:ValueList><r:Value>{PID}</r:Value></r:ValueList></r:Slot>",
        slot(v.QP_DE_STATUS, APPROVED),
        attrs='home="1.2.840.114350.1.13" lid="urn:x" objectType="nonsense" status="nonsense"',
    ).replace(b"<q:AdhocQueryRequest ", b'<q:AdhocQueryRequest maxResults="-1" federated="false" ')
    req = parse_req(data)
    assert req.home_community_id == HomeCommunityId("1.2.840.114350.1.13")
    roundtrip(req)


def test_prefixes_do_not_matter_and_query_id_is_lenient() -> None:
    data = (
        b'<AdhocQueryRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0">'
        b'<ResponseOption returnType="ObjectRef"/>'
        b'<x:AdhocQuery xmlns:x="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" '
        b'id="14D4DEBF-8F97-4251-9A74-A90016B0AF0D">'
        b'<x:Slot name="$XDSDocumentEntryPatientId"><x:ValueList>'
        b"<x:Value>P1^^^&amp;1.2.3.4&amp;ISO</x:Value></x:ValueList></x:Slot>"
        b'<x:Slot name="$XDSDocumentEntryStatus"><x:ValueList>'
        b"<x:Value>'urn:oasis:names:tc:ebxml-regrep:StatusType:Approved'</x:Value>"
        b"</x:ValueList></x:Slot></x:AdhocQuery></AdhocQueryRequest>"
    )
    req = parse_req(data)
    assert isinstance(req.query, FindDocumentsQuery)
    assert req.return_type is ReturnType.OBJECT_REF
    assert not req.return_composed_objects
    roundtrip(req)


def test_unknown_parameters_are_kept_not_dropped() -> None:
    req = parse_req(find_docs(slot("$XDSDocumentEntryClassCodeScheme", "('LOINC')")))
    assert isinstance(req.query, FindDocumentsQuery)
    assert req.query.extra_parameters == (
        QueryParameter("$XDSDocumentEntryClassCodeScheme", ("('LOINC')",)),
    )
    roundtrip(req)


def test_find_documents_by_reference_id() -> None:
    ref = "A12345^^^&amp;1.2.3&amp;ISO^urn:ihe:iti:xds:2013:accession"
    req = parse_req(
        request(
            slot(v.QP_DE_PATIENT_ID, PID),
            slot(v.QP_DE_STATUS, APPROVED),
            slot(v.QP_DE_REFERENCE_ID_LIST, f"('{ref}')"),
            query_id=v.FIND_DOCUMENTS_BY_REFERENCE_ID,
        )
    )
    assert isinstance(req.query, FindDocumentsByReferenceIdQuery)
    assert req.query.reference_id_list == ("A12345^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession",)
    roundtrip(req)


def test_get_documents_by_entry_uuid_normalises_bare_uuids() -> None:
    req = parse_req(
        request(
            slot(
                v.QP_DE_ENTRY_UUID,
                "('urn:uuid:0e5a3c1a-2c61-4b2e-9a55-0a3f1b2c3d4e',"
                "'5b0c6d7e-8f90-4a1b-8c2d-3e4f5a6b7c8d')",
            ),
            slot(v.QP_METADATA_LEVEL, "1"),
            query_id=v.GET_DOCUMENTS,
            attrs='home="urn:oid:1.2.3"',
        )
    )
    q = req.query
    assert isinstance(q, GetDocumentsQuery)
    assert q.entry_uuid[1] == "urn:uuid:5b0c6d7e-8f90-4a1b-8c2d-3e4f5a6b7c8d"
    assert q.extra_parameters == (QueryParameter(v.QP_METADATA_LEVEL, ("1",)),)
    req.require_home_community_id()
    roundtrip(req)


def test_other_stored_queries_keep_their_parameters_verbatim() -> None:
    req = parse_req(
        request(
            slot(v.QP_PATIENT_ID, PID),
            slot(v.QP_DE_STATUS, APPROVED),
            slot(v.QP_SS_STATUS, APPROVED),
            slot(v.QP_FOLDER_STATUS, APPROVED),
            query_id=v.GET_ALL,
        )
    )
    q = req.query
    assert isinstance(q, GenericStoredQuery)
    assert q.query_type is StoredQueryType.GET_ALL
    assert q.values(v.QP_PATIENT_ID) == ("'P1^^^&1.2.3.4&ISO'",)
    req.require_home_community_id()  # has a patient id: no home needed
    roundtrip(req)


# --- request: typed errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error", "xds_code"),
    [
        (
            request(query_id="urn:uuid:00000000-0000-0000-0000-000000000000"),
            UnknownStoredQuery,
            v.XDS_UNKNOWN_STORED_QUERY,
        ),
        (
            request(slot(v.QP_DE_STATUS, APPROVED)),
            StoredQueryMissingParam,
            v.XDS_STORED_QUERY_MISSING_PARAM,
        ),
        (
            request(slot(v.QP_DE_PATIENT_ID, PID)),
            StoredQueryMissingParam,
            v.XDS_STORED_QUERY_MISSING_PARAM,
        ),
        (
            find_docs(slot(v.QP_DE_PATIENT_ID, PID)),
            StoredQueryParamNumber,
            v.XDS_STORED_QUERY_PARAM_NUMBER,
        ),
        (
            request(slot(v.QP_DE_PATIENT_ID, PID, PID), slot(v.QP_DE_STATUS, APPROVED)),
            StoredQueryParamNumber,
            v.XDS_STORED_QUERY_PARAM_NUMBER,
        ),
        (
            request(
                slot(v.QP_DE_PATIENT_ID, "('P1^^^&amp;1.2&amp;ISO','P2^^^&amp;1.2&amp;ISO')"),
                slot(v.QP_DE_STATUS, APPROVED),
            ),
            StoredQueryParamNumber,
            v.XDS_STORED_QUERY_PARAM_NUMBER,
        ),
        (
            find_docs(
                slot(v.QP_DE_CREATION_TIME_FROM, "2020"), slot(v.QP_DE_CREATION_TIME_FROM, "2021")
            ),
            StoredQueryParamNumber,
            v.XDS_STORED_QUERY_PARAM_NUMBER,
        ),
        (
            find_docs(slot(v.QP_DE_CLASS_CODE, "('IMAGES')")),
            StoredQueryParamSyntax,
            v.XDS_REGISTRY_ERROR,
        ),
        (
            find_docs(slot(v.QP_DE_CREATION_TIME_FROM, "2024-13")),
            StoredQueryParamSyntax,
            v.XDS_REGISTRY_ERROR,
        ),
        (
            find_docs(slot(v.QP_DE_STATUS, "('unterminated)")),
            StoredQueryParamSyntax,
            v.XDS_REGISTRY_ERROR,
        ),
        (
            request(slot(v.QP_DE_PATIENT_ID, "'P1'"), slot(v.QP_DE_STATUS, APPROVED)),
            StoredQueryParamSyntax,
            v.XDS_REGISTRY_ERROR,
        ),
        (find_docs(slot(v.QP_DE_CLASS_CODE)), StoredQueryParamSyntax, v.XDS_REGISTRY_ERROR),
        (
            request(
                slot(v.QP_DE_ENTRY_UUID, "('urn:uuid:a')"),
                slot(v.QP_DE_UNIQUE_ID, "('1.2')"),
                query_id=v.GET_DOCUMENTS,
            ),
            StoredQueryParamNumber,
            v.XDS_STORED_QUERY_PARAM_NUMBER,
        ),
        (
            request(query_id=v.GET_DOCUMENTS),
            StoredQueryMissingParam,
            v.XDS_STORED_QUERY_MISSING_PARAM,
        ),
        (find_docs(attrs='home="$home"'), UnknownCommunity, "XDSUnknownCommunity"),
    ],
)
def test_bad_requests_raise_errors_that_know_their_xds_code(
    data: bytes, error: type[ImageBridgeError], xds_code: str
) -> None:
    with pytest.raises(error) as info:
        parse_req(data)
    assert type(info.value) is error
    assert info.value.xds_error_code == xds_code


def test_missing_home_on_a_query_without_patient_id() -> None:
    req = parse_req(request(slot(v.QP_DE_UNIQUE_ID, "('1.2.3')"), query_id=v.GET_DOCUMENTS))
    with pytest.raises(MissingHomeCommunityId) as info:
        req.require_home_community_id()
    assert info.value.xds_error_code == v.XDS_MISSING_HOME_COMMUNITY_ID


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'<q:AdhocQueryRequest xmlns:q="urn:wrong"/>', WrongNamespace),
        (
            b'<q:AdhocQueryResponse xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"/>',
            UnexpectedElement,
        ),
        (request().replace(b"<q:ResponseOption", b"<r:ResponseOption"), WrongNamespace),
        (
            request().replace(
                b'<q:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>', b""
            ),
            MissingElement,
        ),
        (
            f"<q:AdhocQueryRequest {QUERY_NS}><q:ResponseOption/></q:AdhocQueryRequest>".encode(),
            MissingElement,
        ),
        (
            request()
            .replace(b"<r:AdhocQuery", b"<q:AdhocQuery")
            .replace(b"</r:AdhocQuery>", b"</q:AdhocQuery>"),
            WrongNamespace,
        ),
        (
            request().replace(
                b"</q:AdhocQueryRequest>",
                f'<r:AdhocQuery id="{v.GET_ALL}"/></q:AdhocQueryRequest>'.encode(),
            ),
            UnexpectedElement,
        ),
        (request().replace(b'id="urn:uuid:14d4', b'ix="urn:uuid:14d4'), MissingElement),
        (request(rt="Everything"), InvalidValue),
    ],
)
def test_structural_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_req(data)


# --- request: rendering ----------------------------------------------------------------------

GOLDEN_KOS_FIND_DOCUMENTS = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" '
    b'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">'
    b'<query:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>'
    b'<rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d" '
    b'home="urn:oid:1.2.3.4.5">'
    b'<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>'
    b"<rim:Value>'P123^^^&amp;1.2.3.4&amp;ISO'</rim:Value></rim:ValueList></rim:Slot>"
    b'<rim:Slot name="$XDSDocumentEntryFormatCode"><rim:ValueList>'
    b"<rim:Value>('1.2.840.10008.5.1.4.1.1.88.59^^1.2.840.10008.2.6.1')</rim:Value>"
    b"</rim:ValueList></rim:Slot>"
    b'<rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>'
    b"<rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value>"
    b"</rim:ValueList></rim:Slot>"
    b"</rim:AdhocQuery></query:AdhocQueryRequest>"
)


def test_golden_find_documents_for_kos_manifests() -> None:
    req = AdhocQueryRequest(
        query=FindDocumentsQuery(
            patient_id=PatientId("P123", "1.2.3.4"),
            status=(v.STATUS_APPROVED,),
            format_code=(Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME),),
        ),
        home_community_id=HomeCommunityId("1.2.3.4.5"),
    )
    el = render_adhoc_query_request(req)
    assert serialize(el) == GOLDEN_KOS_FIND_DOCUMENTS
    assert_valid("query", el)
    roundtrip(req)


def test_rendering_is_strict_and_round_trips() -> None:
    req = AdhocQueryRequest(
        query=FindDocumentsQuery(
            patient_id=PatientId("O'Neil", "1.2.3"),
            status=(v.STATUS_APPROVED, v.STATUS_DEPRECATED),
            event_code_list=((Code("CT", "1.2.840.10008.2.16.4"),), (Code("MR", "DCM"),)),
            creation_time=TimeRange(to=Dtm("20240101")),
            author_person=("D'Angelo%",),
        ),
        return_type=ReturnType.OBJECT_REF,
    )
    el = render_adhoc_query_request(req)
    text = serialize(el).decode()
    assert "'O''Neil^^^&amp;1.2.3&amp;ISO'" in text
    assert text.count('name="$XDSDocumentEntryEventCodeList"') == 2
    roundtrip(req)


def test_model_constructors_validate() -> None:
    with pytest.raises(StoredQueryMissingParam):
        FindDocumentsQuery(patient_id=PatientId("P", "1.2"), status=())
    with pytest.raises(StoredQueryMissingParam):
        FindDocumentsByReferenceIdQuery(
            patient_id=PatientId("P", "1.2"), status=(v.STATUS_APPROVED,), reference_id_list=()
        )
    with pytest.raises(InvalidValue):
        GenericStoredQuery(StoredQueryType.FIND_DOCUMENTS)


# --- response --------------------------------------------------------------------------------


def response(status: str, body: str) -> bytes:
    return (
        f"<q:AdhocQueryResponse {QUERY_NS} {RIM_NS} "
        f'xmlns:s="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="{status}" '
        f'totalResultCount="0">{body}</q:AdhocQueryResponse>'
    ).encode()


def parse_resp(data: bytes) -> AdhocQueryResponse:
    resp = parse_adhoc_query_response(parse_xml(data))
    el = render_adhoc_query_response(resp)
    assert_valid("query", el)
    assert parse_adhoc_query_response(parse_xml(serialize(el))) == resp
    return resp


def test_object_ref_response() -> None:
    resp = parse_resp(
        response(
            Status.SUCCESS.value,
            '<r:RegistryObjectList><r:ObjectRef id="2a1b3c4d-0000-4000-8000-000000000001" '
            'home="1.2.3"/><r:ObjectRef id="urn:uuid:2a1b3c4d-0000-4000-8000-000000000002" '
            'home="urn:oid:1.2.3"/></r:RegistryObjectList>',
        )
    )
    assert resp.object_refs == (
        ObjectRef("urn:uuid:2a1b3c4d-0000-4000-8000-000000000001", HomeCommunityId("1.2.3")),
        ObjectRef("urn:uuid:2a1b3c4d-0000-4000-8000-000000000002", HomeCommunityId("1.2.3")),
    )


def test_partial_success_with_errors_without_location() -> None:
    resp = parse_resp(
        response(
            "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
            '<s:RegistryErrorList><s:RegistryError errorCode="XDSRegistryError" '
            'codeContext="boom"/></s:RegistryErrorList><r:RegistryObjectList/>',
        )
    )
    assert resp.status is Status.PARTIAL_SUCCESS
    assert resp.errors == (RegistryError("XDSRegistryError", "boom", Severity.ERROR, None),)
    assert resp.registry_objects == ()


def test_missing_registry_object_list_is_an_empty_result() -> None:
    resp = parse_resp(response(Status.FAILURE.value, ""))
    assert resp.registry_objects == ()


def test_other_registry_objects_pass_through() -> None:
    body = (
        "<r:RegistryObjectList>"
        '<r:RegistryPackage id="urn:uuid:5f0c0000-0000-4000-8000-000000000001" home="urn:oid:1.2">'
        '<r:Slot name="submissionTime"><r:ValueList><r:Value>2024</r:Value></r:ValueList>'
        '</r:Slot><r:Name><r:LocalizedString value="SS"/></r:Name>'
        '<r:ExternalIdentifier id="urn:uuid:5f0c0000-0000-4000-8000-000000000002" '
        'registryObject="urn:uuid:5f0c0000-0000-4000-8000-000000000001" '
        f'identificationScheme="{v.SS_UNIQUE_ID}" value="1.2.3.4"/>'
        "</r:RegistryPackage>"
        '<r:Association id="urn:uuid:5f0c0000-0000-4000-8000-000000000003" '
        f'associationType="{v.ASSOCIATION_HAS_MEMBER}" '
        'sourceObject="urn:uuid:5f0c0000-0000-4000-8000-000000000001" targetObject="urn:x"/>'
        '<r:ExtrinsicObject id="urn:uuid:5f0c0000-0000-4000-8000-000000000004" '
        'objectType="urn:uuid:00000000-0000-0000-0000-00000000beef"/>'
        "</r:RegistryObjectList>"
    )
    resp = parse_resp(response(Status.SUCCESS.value, body))
    kinds = [o.kind for o in resp.registry_objects if isinstance(o, RegistryObject)]
    assert kinds == ["RegistryPackage", "Association", "ExtrinsicObject"]
    # the RegistryPackage has home; the Association needs none; the ExtrinsicObject lacks it
    assert resp.ids_without_home() == ("urn:uuid:5f0c0000-0000-4000-8000-000000000004",)
    assoc = resp.registry_objects[1]
    assert isinstance(assoc, RegistryObject)
    assert assoc.attribute("associationType") == v.ASSOCIATION_HAS_MEMBER


def test_foreign_elements_in_a_response_are_refused() -> None:
    with pytest.raises(UnexpectedElement):
        parse_adhoc_query_response(
            parse_xml(response(Status.SUCCESS.value, '<x:Foo xmlns:x="urn:x"/>'))
        )
    with pytest.raises(UnexpectedElement):
        parse_adhoc_query_response(
            parse_xml(
                response(
                    Status.SUCCESS.value,
                    '<r:RegistryObjectList><x:Foo xmlns:x="urn:x" id="a"/></r:RegistryObjectList>',
                )
            )
        )
    with pytest.raises(InvalidValue):
        parse_adhoc_query_response(parse_xml(response("urn:nonsense:Maybe", "")))


def test_rendered_response_has_the_schema_child_order() -> None:
    resp = AdhocQueryResponse(
        status=Status.FAILURE,
        errors=(RegistryError("XDSUnknownPatientId", "who?", Severity.ERROR, "urn:oid:1.2.3"),),
    )
    el = render_adhoc_query_response(resp)
    assert [etree.QName(c).localname for c in el] == ["RegistryErrorList", "RegistryObjectList"]
    assert_valid("query", el)
