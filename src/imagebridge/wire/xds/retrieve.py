"""Cross Gateway Retrieve [ITI-39] and Retrieve Document Set [ITI-43]: request and response codecs.

The response codec also serves Retrieve Imaging Document Set [RAD-69] and
Cross Gateway Retrieve Imaging Document Set [RAD-75], whose response is the
same ``xds:RetrieveDocumentSetResponse``.

Lenient on input, strict on output:

* any prefixes; children of a DocumentRequest/DocumentResponse in any order
  (each at most once); surrounding whitespace around every value;
* RepositoryUniqueId bare or ``urn:oid:``-prefixed (written bare); it and the
  DocumentUniqueId are opaque identifiers here (CONNECT's own test data uses
  RepositoryUniqueId ``1``), so an unknown or odd id reaches the actor and is
  answered in-band (``XDSUnknownRepositoryId``/``XDSDocumentUniqueIdError``);
* HomeCommunityId via :meth:`HomeCommunityId.parse` (bare, doubled ``urn:oid:``);
  an empty HomeCommunityId counts as absent (answered ``XDSMissingHomeCommunityId``);
* ``Document`` as inline base64 (whitespace and line breaks allowed) or as one
  ``xop:Include`` (whitespace around it allowed); the raw ``href`` is kept;
* a DocumentResponse whose RepositoryUniqueId element is empty (schema-valid,
  NIST's reference responses do it) gives ``repository_unique_id=None``.

Refused with a typed error: unknown or repeated elements (:class:`UnexpectedElement`),
a known element in the wrong namespace, including a ``RegistryErrorList`` outside
the ebRS namespace (:class:`WrongNamespace`), missing required elements or an
empty DocumentUniqueId/RepositoryUniqueId/mimeType (:class:`MissingElement`),
content that is not base64 (:class:`InvalidValue`), a bad homeCommunityId
(:class:`InvalidOid`), and more DocumentRequests/DocumentResponses than the
limit (:class:`TooManyElements`).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping

from lxml import etree

from imagebridge.errors import (
    InvalidValue,
    MissingElement,
    TooManyElements,
    UnexpectedElement,
    WrongNamespace,
)
from imagebridge.model.ids import HomeCommunityId, strip_urn_oid
from imagebridge.model.retrieve import (
    DocumentContent,
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
    XopInclude,
)
from imagebridge.wire import ns
from imagebridge.wire.xds.registry_response import parse_registry_response
from imagebridge.wire.xds.retrieve_writer import RetrieveResponseWriter, text_child
from imagebridge.wire.xml import Element, elements, expect, qname_of, text_of

DEFAULT_MAX_DOCUMENTS = 10_000
"""Default ceiling on DocumentRequests per request and DocumentResponses per response.

A large CT/MR study has a few thousand SOP instances and initiators batch per
series or per N instances (Carequality sets no limit), so 10,000 leaves
headroom while keeping a model to a few MB.  Raise it per call when a partner
legitimately needs more.
"""

_DOCUMENT_REQUEST_CHILDREN = ("HomeCommunityId", "RepositoryUniqueId", "DocumentUniqueId")


# --- shared structure checks (also used by imaging_retrieve) --------------------------


def group_children(el: Element, allowed: Mapping[str, tuple[str, ...]]) -> dict[str, list[Element]]:
    """Child elements of *el* grouped by local name, in document order.

    *allowed* maps each accepted local name to the namespaces accepted for it.
    Any other child raises :class:`UnexpectedElement`; an accepted name in
    another namespace raises :class:`WrongNamespace`.
    """
    parent = qname_of(el)[1]
    groups: dict[str, list[Element]] = {name: [] for name in allowed}
    for c in elements(el):
        namespace, local = qname_of(c)
        if local not in allowed:
            raise UnexpectedElement(f"unexpected element {local} in {parent}")
        if namespace not in allowed[local]:
            raise WrongNamespace(
                f"element {local} in {parent} is in namespace {namespace!r}, "
                f"expected {' or '.join(repr(n) for n in allowed[local])}"
            )
        groups[local].append(c)
    return groups


def at_most_one(groups: dict[str, list[Element]], name: str, parent: str) -> Element | None:
    """The single element *name* of *groups*, None if absent; repeated raises UnexpectedElement."""
    found = groups[name]
    if len(found) > 1:
        raise UnexpectedElement(f"element {name} appears {len(found)} times in {parent}")
    return found[0] if found else None


def exactly_one(groups: dict[str, list[Element]], name: str, parent: str) -> Element:
    """The single required element *name* of *groups*; absent raises MissingElement."""
    found = at_most_one(groups, name, parent)
    if found is None:
        raise MissingElement(f"required element {name} is missing in {parent}")
    return found


def leaf_text(el: Element) -> str:
    """Stripped text of an element that may hold only text (child elements are refused)."""
    for c in elements(el):
        raise UnexpectedElement(f"element {qname_of(el)[1]} holds element {qname_of(c)[1]}")
    return text_of(el)


def check_limit(count: int, limit: int, element: str) -> None:
    """Raise :class:`TooManyElements` when *count* repetitions of *element* exceed *limit*."""
    if count > limit:
        raise TooManyElements(
            f"{count} {element} elements exceed the limit of {limit}", element, limit
        )


def _optional_text(el: Element | None) -> str | None:
    """Stripped text of an optional leaf; an absent or empty element gives None."""
    return (leaf_text(el) or None) if el is not None else None


def _home(el: Element | None) -> HomeCommunityId | None:
    text = _optional_text(el)
    return HomeCommunityId.parse(text) if text is not None else None


def _optional_repository_id(el: Element | None) -> str | None:
    """A repository id, bare (``urn:oid:`` removed); absent or empty gives None."""
    return strip_urn_oid(_optional_text(el) or "") or None


def _repository_id(el: Element) -> str:
    text = _optional_repository_id(el)
    if text is None:
        raise MissingElement(f"element {qname_of(el)[1]} is empty")
    return text


def _opaque_id(text: str) -> str:
    if not text:
        raise MissingElement("element DocumentUniqueId is empty")
    return text


@functools.lru_cache(maxsize=16)
def _document_request_tags(namespaces: tuple[str, ...]) -> dict[str, int]:
    """Clark tag -> slot (index in _DOCUMENT_REQUEST_CHILDREN) for the accepted namespaces."""
    return {
        ns.q(namespace, local): slot
        for slot, local in enumerate(_DOCUMENT_REQUEST_CHILDREN)
        for namespace in namespaces
    }


@functools.lru_cache(maxsize=64)
def _home_of_text(text: str) -> HomeCommunityId:
    return HomeCommunityId.parse(text)  # a request names one or a few communities


def _plain_document_request(
    el: Element, namespaces: tuple[str, ...], document_id: Callable[[str], str]
) -> DocumentRequest | None:
    """The common case of :func:`parse_document_request` at C speed, or None when unsure.

    Only a DocumentRequest whose children are the known elements, each at most
    once, each holding nothing but text, is decoded here; anything else (a
    comment, an unknown or repeated element, a missing one) returns None and
    the general path decodes it, raising exactly its errors.
    """
    tags = _document_request_tags(namespaces)
    texts: list[str | None] = [None, None, None]
    for c in el:
        slot = tags.get(c.tag)  # a comment's tag is a function: no slot
        if slot is None or texts[slot] is not None or len(c):
            return None
        texts[slot] = (c.text or "").strip()
    home, repository, document = texts
    if repository is None or document is None:
        return None
    repository_id = strip_urn_oid(repository)
    if not repository_id:
        raise MissingElement(f"element {_DOCUMENT_REQUEST_CHILDREN[1]} is empty")
    return DocumentRequest(
        repository_unique_id=repository_id,
        document_unique_id=document_id(document),
        home_community_id=_home_of_text(home) if home else None,
    )


def parse_document_request(
    el: Element,
    namespaces: tuple[str, ...] = (ns.XDS,),
    document_id: Callable[[str], str] = _opaque_id,
) -> DocumentRequest:
    """Decode one ``xds:DocumentRequest`` whose children may be in any of *namespaces*.

    *document_id* checks the stripped DocumentUniqueId text and returns the
    value to keep (the imaging codec passes a DICOM UID check).
    """
    plain = _plain_document_request(el, namespaces, document_id)
    if plain is not None:
        return plain
    groups = group_children(el, {name: namespaces for name in _DOCUMENT_REQUEST_CHILDREN})
    return DocumentRequest(
        repository_unique_id=_repository_id(
            exactly_one(groups, "RepositoryUniqueId", "DocumentRequest")
        ),
        document_unique_id=document_id(
            leaf_text(exactly_one(groups, "DocumentUniqueId", "DocumentRequest"))
        ),
        home_community_id=_home(at_most_one(groups, "HomeCommunityId", "DocumentRequest")),
    )


def render_document_request(parent: Element, request: DocumentRequest) -> Element:
    """Append ``xds:DocumentRequest`` to *parent* (always in the XDS.b namespace)."""
    el = etree.SubElement(parent, ns.q(ns.XDS, "DocumentRequest"))
    if request.home_community_id is not None:
        text_child(el, "HomeCommunityId", request.home_community_id.urn)
    text_child(el, "RepositoryUniqueId", request.repository_unique_id)
    text_child(el, "DocumentUniqueId", request.document_unique_id)
    return el


# --- request ---------------------------------------------------------------------------


def parse_retrieve_document_set_request(
    el: Element, *, max_document_requests: int = DEFAULT_MAX_DOCUMENTS
) -> RetrieveDocumentSetRequest:
    """Cross Gateway Retrieve [ITI-39] / Retrieve Document Set [ITI-43] request, decoded."""
    expect(el, ns.XDS, "RetrieveDocumentSetRequest")
    groups = group_children(el, {"DocumentRequest": (ns.XDS,)})
    found = groups["DocumentRequest"]
    if not found:
        raise MissingElement("RetrieveDocumentSetRequest holds no DocumentRequest")
    check_limit(len(found), max_document_requests, "DocumentRequest")
    return RetrieveDocumentSetRequest(tuple(parse_document_request(d) for d in found))


def render_retrieve_document_set_request(request: RetrieveDocumentSetRequest) -> Element:
    """Cross Gateway Retrieve [ITI-39] / Retrieve Document Set [ITI-43] request, encoded."""
    root = etree.Element(ns.q(ns.XDS, "RetrieveDocumentSetRequest"), nsmap={"xds": ns.XDS})
    for item in request.document_requests:
        render_document_request(root, item)
    return root


# --- response --------------------------------------------------------------------------

_DOCUMENT_RESPONSE_CHILDREN = (
    "HomeCommunityId",
    "RepositoryUniqueId",
    "DocumentUniqueId",
    "NewRepositoryUniqueId",
    "NewDocumentUniqueId",
    "mimeType",
    "Document",
)


def parse_retrieve_document_set_response(
    el: Element, *, max_document_responses: int = DEFAULT_MAX_DOCUMENTS
) -> RetrieveDocumentSetResponse:
    """Retrieve Document Set response of ITI-39/ITI-43 (and of RAD-69/RAD-75), decoded."""
    expect(el, ns.XDS, "RetrieveDocumentSetResponse")
    groups = group_children(el, {"RegistryResponse": (ns.RS,), "DocumentResponse": (ns.XDS,)})
    registry = exactly_one(groups, "RegistryResponse", "RetrieveDocumentSetResponse")
    for c in elements(registry):
        namespace, local = qname_of(c)
        # parse_registry_response reads only rs: lists; a rim: list would vanish silently.
        if local == "RegistryErrorList" and namespace != ns.RS:
            raise WrongNamespace(
                f"RegistryErrorList is in namespace {namespace!r}, expected {ns.RS!r}"
            )
    found = groups["DocumentResponse"]
    check_limit(len(found), max_document_responses, "DocumentResponse")
    return RetrieveDocumentSetResponse(
        registry_response=parse_registry_response(registry),
        document_responses=tuple(_document_response(d) for d in found),
    )


def _document_response(el: Element) -> DocumentResponse:
    where = "DocumentResponse"
    groups = group_children(el, {name: (ns.XDS,) for name in _DOCUMENT_RESPONSE_CHILDREN})
    mime_type = leaf_text(exactly_one(groups, "mimeType", where))
    if not mime_type:
        raise MissingElement("element mimeType is empty")
    return DocumentResponse(
        home_community_id=_home(at_most_one(groups, "HomeCommunityId", where)),
        repository_unique_id=_optional_repository_id(
            exactly_one(groups, "RepositoryUniqueId", where)
        ),
        document_unique_id=_opaque_id(leaf_text(exactly_one(groups, "DocumentUniqueId", where))),
        new_repository_unique_id=_optional_repository_id(
            at_most_one(groups, "NewRepositoryUniqueId", where)
        ),
        new_document_unique_id=_optional_text(at_most_one(groups, "NewDocumentUniqueId", where)),
        mime_type=mime_type,
        document=parse_document_content(exactly_one(groups, "Document", where)),
    )


def parse_document_content(el: Element) -> DocumentContent:
    """Decode ``xds:Document``: one ``xop:Include`` (raw href kept) or inline base64."""
    groups = group_children(el, {"Include": (ns.XOP,)})
    include = at_most_one(groups, "Include", "Document")
    if include is not None:
        if (el.text or "").strip() or (include.tail or "").strip():
            raise InvalidValue("Document mixes inline base64 text with an xop:Include")
        href = (include.get("href") or "").strip()
        if not href:
            raise MissingElement("attribute href is missing on xop:Include")
        return XopInclude(href)
    compact = "".join(text_of(el).split())
    try:
        return base64.b64decode(compact, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise InvalidValue(
            f"Document content is not valid base64 ({exc}): {compact[:40]!r}"
        ) from exc


def render_retrieve_document_set_response(response: RetrieveDocumentSetResponse) -> Element:
    """Retrieve Document Set response of ITI-39/ITI-43 (and of RAD-69/RAD-75), encoded.

    A document held as :class:`XopInclude` becomes ``<xds:Document><xop:Include
    href="cid:..."/></xds:Document>`` for the MTOM layer; inline bytes become
    canonical base64 (no line breaks).
    """
    writer = RetrieveResponseWriter()
    for item in response.document_responses:
        writer.add(item)
    return writer.finish(response.registry_response)
