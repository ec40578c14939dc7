"""Retrieve Imaging Document Set [RAD-69] and Cross Gateway Retrieve Imaging Document Set
[RAD-75]: the request codec (the response is
:func:`imagebridge.wire.xds.retrieve.parse_retrieve_document_set_response`).

The namespace trap: the wrapper, StudyRequest, SeriesRequest and the
TransferSyntaxUIDList are in ``urn:ihe:rad:xdsi-b:2009``, but DocumentRequest and
its children are in ``urn:ihe:iti:xds-b:2007`` (SeriesRequest extends the XDS.b
RetrieveDocumentSetRequestType).  On input a DocumentRequest (and its children)
is also accepted in the xdsi-b namespace, as IPF's bundled schema copy would
produce; on output it is always written in xds-b.

Study, Series and SOP Instance UIDs and transfer syntax UIDs are DICOM UIDs:
empty or malformed ones raise :class:`RetrieveInvalidUid`, an :class:`InvalidUid`
answered in-band with ``XDSRepositoryError`` (NIST's ids_4812 empty-UID cases
expect a Failure, not a fault).  The RepositoryUniqueId and HomeCommunityId
follow the ITI-39 rules of :mod:`imagebridge.wire.xds.retrieve`.  A missing
StudyRequest, SeriesRequest, DocumentRequest or TransferSyntaxUIDList, or an
empty TransferSyntaxUIDList, raises :class:`MissingElement`; more DocumentRequests
than the limit, or more than :data:`MAX_TRANSFER_SYNTAX_UIDS` transfer syntaxes,
raise :class:`TooManyElements`.
"""

from __future__ import annotations

from lxml import etree

from imagebridge.errors import InvalidUid, MissingElement, RetrieveInvalidUid
from imagebridge.model.ids import validate_uid
from imagebridge.model.retrieve import (
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
)
from imagebridge.wire import ns
from imagebridge.wire.xds.retrieve import (
    DEFAULT_MAX_DOCUMENTS,
    check_limit,
    exactly_one,
    group_children,
    leaf_text,
    parse_document_request,
    render_document_request,
)
from imagebridge.wire.xml import Element, expect, qname_of

DOCUMENT_REQUEST_NAMESPACES = (ns.XDS, ns.XDSI)
"""Accepted namespaces for DocumentRequest inside a SeriesRequest (xds-b is the correct one)."""

MAX_TRANSFER_SYNTAX_UIDS = 256
"""Ceiling on TransferSyntaxUID elements; DICOM defines a few dozen transfer syntaxes."""


def _uid(value: str, what: str) -> str:
    """A DICOM UID of the request; a bad one is answered in-band (:class:`RetrieveInvalidUid`)."""
    try:
        return validate_uid(value, what)
    except InvalidUid as exc:
        raise RetrieveInvalidUid(exc.message) from exc


def _sop_instance_uid(text: str) -> str:
    return _uid(text, "SOP Instance UID (DocumentUniqueId)")


def _uid_attribute(el: Element, name: str) -> str:
    value = el.get(name)
    if value is None:
        raise MissingElement(f"attribute {name} is missing on {qname_of(el)[1]}")
    return _uid(value, name)


def _series_request(el: Element) -> SeriesRequest:
    groups = group_children(el, {"DocumentRequest": DOCUMENT_REQUEST_NAMESPACES})
    series_uid = _uid_attribute(el, "seriesInstanceUID")
    if not groups["DocumentRequest"]:
        raise MissingElement(f"SeriesRequest {series_uid} holds no DocumentRequest")
    return SeriesRequest(
        series_instance_uid=series_uid,
        document_requests=tuple(
            parse_document_request(d, DOCUMENT_REQUEST_NAMESPACES, _sop_instance_uid)
            for d in groups["DocumentRequest"]
        ),
    )


def _study_request(el: Element) -> StudyRequest:
    groups = group_children(el, {"SeriesRequest": (ns.XDSI,)})
    study_uid = _uid_attribute(el, "studyInstanceUID")
    if not groups["SeriesRequest"]:
        raise MissingElement(f"StudyRequest {study_uid} holds no SeriesRequest")
    return StudyRequest(
        study_instance_uid=study_uid,
        series_requests=tuple(_series_request(s) for s in groups["SeriesRequest"]),
    )


def _transfer_syntax_uids(el: Element) -> tuple[str, ...]:
    groups = group_children(el, {"TransferSyntaxUID": (ns.XDSI,)})
    found = groups["TransferSyntaxUID"]
    if not found:
        raise MissingElement("TransferSyntaxUIDList holds no TransferSyntaxUID")
    check_limit(len(found), MAX_TRANSFER_SYNTAX_UIDS, "TransferSyntaxUID")
    return tuple(_uid(leaf_text(t), "TransferSyntaxUID") for t in found)


def parse_retrieve_imaging_document_set_request(
    el: Element, *, max_document_requests: int = DEFAULT_MAX_DOCUMENTS
) -> RetrieveImagingDocumentSetRequest:
    """Cross Gateway Retrieve Imaging Document Set [RAD-75] / Retrieve Imaging Document Set
    [RAD-69] request, decoded.

    *max_document_requests* bounds the DocumentRequests of the whole tree; it
    is checked before any model is built.
    """
    where = "RetrieveImagingDocumentSetRequest"
    expect(el, ns.XDSI, where)
    total = sum(
        1 for _ in el.iter(ns.q(ns.XDS, "DocumentRequest"), ns.q(ns.XDSI, "DocumentRequest"))
    )
    check_limit(total, max_document_requests, "DocumentRequest")
    groups = group_children(el, {"StudyRequest": (ns.XDSI,), "TransferSyntaxUIDList": (ns.XDSI,)})
    if not groups["StudyRequest"]:
        raise MissingElement(f"{where} holds no StudyRequest")
    syntaxes = _transfer_syntax_uids(exactly_one(groups, "TransferSyntaxUIDList", where))
    return RetrieveImagingDocumentSetRequest(
        study_requests=tuple(_study_request(s) for s in groups["StudyRequest"]),
        transfer_syntax_uids=syntaxes,
    )


def render_retrieve_imaging_document_set_request(
    request: RetrieveImagingDocumentSetRequest,
) -> Element:
    """Cross Gateway Retrieve Imaging Document Set [RAD-75] / Retrieve Imaging Document Set
    [RAD-69] request, encoded (DocumentRequest in the XDS.b namespace)."""
    root = etree.Element(
        ns.q(ns.XDSI, "RetrieveImagingDocumentSetRequest"),
        nsmap={"iherad": ns.XDSI, "xds": ns.XDS},
    )
    for study in request.study_requests:
        study_el = etree.SubElement(root, ns.q(ns.XDSI, "StudyRequest"))
        study_el.set("studyInstanceUID", study.study_instance_uid)
        for series in study.series_requests:
            series_el = etree.SubElement(study_el, ns.q(ns.XDSI, "SeriesRequest"))
            series_el.set("seriesInstanceUID", series.series_instance_uid)
            for item in series.document_requests:
                render_document_request(series_el, item)
    syntaxes = etree.SubElement(root, ns.q(ns.XDSI, "TransferSyntaxUIDList"))
    for uid in request.transfer_syntax_uids:
        etree.SubElement(syntaxes, ns.q(ns.XDSI, "TransferSyntaxUID")).text = uid
    return root
