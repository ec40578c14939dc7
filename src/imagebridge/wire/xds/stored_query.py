"""Cross Gateway Query [ITI-38] stored-query parameters: ``rim:AdhocQuery`` Slots <-> model.

FindDocuments, FindDocumentsByReferenceId and GetDocuments get typed
parameters; other stored queries keep their Slots verbatim.  Parameters a
typed query does not know (``$MetadataLevel``, obsolete ``…Scheme`` slots)
are kept in ``extra_parameters``.  A single-valued parameter given twice
raises :class:`StoredQueryParamNumber`; bad syntax
:class:`StoredQueryParamSyntax`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from imagebridge.errors import (
    ImageBridgeError,
    StoredQueryMissingParam,
    StoredQueryParamNumber,
    StoredQueryParamSyntax,
)
from imagebridge.model.ids import PatientId
from imagebridge.model.xds import Code, Dtm
from imagebridge.model.xds_query import (
    FindDocumentsByReferenceIdQuery,
    FindDocumentsFilters,
    FindDocumentsQuery,
    GenericStoredQuery,
    GetDocumentsQuery,
    QueryParameter,
    StoredQuery,
    StoredQueryType,
    TimeRange,
)
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.rim import normalise_id
from imagebridge.wire.xds.slots import (
    format_code,
    format_list,
    parse_code,
    parse_single_value,
    parse_value_list,
    quote,
)

T = TypeVar("T")

_CODE_LISTS = {
    v.QP_DE_CLASS_CODE: "class_code",
    v.QP_DE_TYPE_CODE: "type_code",
    v.QP_DE_PRACTICE_SETTING_CODE: "practice_setting_code",
    v.QP_DE_HEALTHCARE_FACILITY_TYPE_CODE: "healthcare_facility_type_code",
    v.QP_DE_FORMAT_CODE: "format_code",
}
_AND_OR = {
    v.QP_DE_EVENT_CODE_LIST: "event_code_list",
    v.QP_DE_CONFIDENTIALITY_CODE: "confidentiality_code",
}
_STRING_LISTS = {
    v.QP_DE_STATUS: "status",
    v.QP_DE_TYPE: "document_entry_type",
    v.QP_DE_AUTHOR_PERSON: "author_person",
}
# (field, bound) of each time parameter; rendered in this order.
_TIMES = {
    v.QP_DE_CREATION_TIME_FROM: ("creation_time", "from_"),
    v.QP_DE_CREATION_TIME_TO: ("creation_time", "to"),
    v.QP_DE_SERVICE_START_TIME_FROM: ("service_start_time", "from_"),
    v.QP_DE_SERVICE_START_TIME_TO: ("service_start_time", "to"),
    v.QP_DE_SERVICE_STOP_TIME_FROM: ("service_stop_time", "from_"),
    v.QP_DE_SERVICE_STOP_TIME_TO: ("service_stop_time", "to"),
}


def _syntax(name: str, convert: Callable[[str], T], text: str) -> T:
    """Apply *convert*; any decoding error becomes StoredQueryParamSyntax naming the parameter."""
    try:
        return convert(text)
    except ImageBridgeError as exc:
        raise StoredQueryParamSyntax(f"{name}: {exc.message}") from exc


def _check_multiplicity(params: Sequence[QueryParameter]) -> None:
    """Refuse a single-valued parameter given in two Slots or with two values."""
    seen: set[str] = set()
    for p in params:
        if not p.values or not any(p.values):
            raise StoredQueryParamSyntax(f"parameter {p.name} has no value")
        if p.name not in v.SINGLE_VALUED_PARAMETERS:
            continue
        if p.name in seen:
            raise StoredQueryParamNumber(f"single-valued parameter {p.name} is given twice")
        seen.add(p.name)
        text = p.values[0]
        if len(p.values) > 1 or (
            text.startswith("(") and len(_syntax(p.name, parse_value_list, text)) > 1
        ):
            raise StoredQueryParamNumber(f"single-valued parameter {p.name} has several values")
        _syntax(p.name, parse_single_value, text)


def _list(p: QueryParameter) -> tuple[str, ...]:
    """All items of a multi-valued parameter (several Values are concatenated)."""
    return tuple(item for text in p.values for item in _syntax(p.name, parse_value_list, text))


def _codes(p: QueryParameter) -> tuple[Code, ...]:
    return tuple(_syntax(p.name, parse_code, item) for item in _list(p))


def _single(p: QueryParameter) -> str:
    return _syntax(p.name, parse_single_value, p.values[0])


def _dtm(p: QueryParameter) -> Dtm:
    return _syntax(p.name, Dtm.parse, _single(p))


def _patient(p: QueryParameter) -> PatientId:
    return _syntax(p.name, PatientId.from_cx, _single(p))


def _find_documents(qt: StoredQueryType, params: Sequence[QueryParameter]) -> StoredQuery:
    fields: dict[str, object] = {}
    lists: dict[str, tuple[object, ...]] = {}
    times: dict[str, dict[str, Dtm]] = {}
    extra: list[QueryParameter] = []
    for p in params:
        if p.name == v.QP_DE_PATIENT_ID:
            fields["patient_id"] = _patient(p)
        elif p.name in _CODE_LISTS:
            key = _CODE_LISTS[p.name]
            lists[key] = lists.get(key, ()) + _codes(p)
        elif p.name in _AND_OR:
            key = _AND_OR[p.name]
            lists[key] = (*lists.get(key, ()), _codes(p))
        elif p.name in _STRING_LISTS:
            key = _STRING_LISTS[p.name]
            lists[key] = lists.get(key, ()) + _list(p)
        elif p.name in _TIMES:
            key, bound = _TIMES[p.name]
            times.setdefault(key, {})[bound] = _dtm(p)
        elif (
            p.name == v.QP_DE_REFERENCE_ID_LIST
            and qt is StoredQueryType.FIND_DOCUMENTS_BY_REFERENCE_ID
        ):
            lists["reference_id_list"] = lists.get("reference_id_list", ()) + _list(p)
        else:
            extra.append(p)
    if "patient_id" not in fields:
        raise StoredQueryMissingParam(f"{v.QP_DE_PATIENT_ID} is required")
    fields.update(lists)
    fields.update({key: TimeRange(**bounds) for key, bounds in times.items()})
    fields.setdefault("status", ())
    fields["extra_parameters"] = tuple(extra)
    if qt is StoredQueryType.FIND_DOCUMENTS_BY_REFERENCE_ID:
        fields.setdefault("reference_id_list", ())
        return FindDocumentsByReferenceIdQuery(**fields)  # type: ignore[arg-type]
    return FindDocumentsQuery(**fields)  # type: ignore[arg-type]


def _get_documents(params: Sequence[QueryParameter]) -> GetDocumentsQuery:
    entry_uuid: tuple[str, ...] = ()
    unique_id: tuple[str, ...] = ()
    extra: list[QueryParameter] = []
    for p in params:
        if p.name == v.QP_DE_ENTRY_UUID:
            entry_uuid += tuple(normalise_id(u) for u in _list(p))
        elif p.name == v.QP_DE_UNIQUE_ID:
            unique_id += _list(p)
        else:
            extra.append(p)
    return GetDocumentsQuery(
        entry_uuid=entry_uuid, unique_id=unique_id, extra_parameters=tuple(extra)
    )


def parse_stored_query(query_id: str, params: Sequence[QueryParameter]) -> StoredQuery:
    """Build the stored query *query_id* (lenient id form) from its Slots."""
    qt = StoredQueryType.parse(query_id)
    _check_multiplicity(params)
    if qt in (StoredQueryType.FIND_DOCUMENTS, StoredQueryType.FIND_DOCUMENTS_BY_REFERENCE_ID):
        return _find_documents(qt, params)
    if qt is StoredQueryType.GET_DOCUMENTS:
        return _get_documents(params)
    return GenericStoredQuery(qt, tuple(params))


# --- render ----------------------------------------------------------------------------------


def _render_find_documents(q: FindDocumentsFilters) -> list[QueryParameter]:
    out = [QueryParameter(v.QP_DE_PATIENT_ID, (quote(q.patient_id.cx),))]

    def codes(name: str, values: tuple[Code, ...]) -> None:
        if values:
            out.append(QueryParameter(name, format_list(tuple(format_code(c) for c in values))))

    for name in (v.QP_DE_CLASS_CODE, v.QP_DE_TYPE_CODE, v.QP_DE_PRACTICE_SETTING_CODE):
        codes(name, getattr(q, _CODE_LISTS[name]))
    for name, (key, bound) in _TIMES.items():
        value: Dtm | None = getattr(getattr(q, key), bound)
        if value is not None:
            out.append(QueryParameter(name, (value.value,)))
    codes(v.QP_DE_HEALTHCARE_FACILITY_TYPE_CODE, q.healthcare_facility_type_code)
    for group in q.event_code_list:
        codes(v.QP_DE_EVENT_CODE_LIST, group)
    for group in q.confidentiality_code:
        codes(v.QP_DE_CONFIDENTIALITY_CODE, group)
    if q.author_person:
        out.append(QueryParameter(v.QP_DE_AUTHOR_PERSON, format_list(q.author_person)))
    codes(v.QP_DE_FORMAT_CODE, q.format_code)
    out.append(QueryParameter(v.QP_DE_STATUS, format_list(q.status)))
    if q.document_entry_type:
        out.append(QueryParameter(v.QP_DE_TYPE, format_list(q.document_entry_type)))
    if isinstance(q, FindDocumentsByReferenceIdQuery):
        out.append(QueryParameter(v.QP_DE_REFERENCE_ID_LIST, format_list(q.reference_id_list)))
    return out + list(q.extra_parameters)


def render_stored_query(query: StoredQuery) -> tuple[str, tuple[QueryParameter, ...]]:
    """The AdhocQuery id and its Slots, in a stable order, values in strict syntax."""
    if isinstance(query, FindDocumentsFilters):
        params = _render_find_documents(query)
    elif isinstance(query, GetDocumentsQuery):
        params = []
        if query.entry_uuid:
            params.append(QueryParameter(v.QP_DE_ENTRY_UUID, format_list(query.entry_uuid)))
        if query.unique_id:
            params.append(QueryParameter(v.QP_DE_UNIQUE_ID, format_list(query.unique_id)))
        params += query.extra_parameters
    else:
        params = list(query.parameters)
    return query.query_type.value, tuple(params)
