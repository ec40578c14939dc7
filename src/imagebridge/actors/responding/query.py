"""Cross Gateway Query [ITI-38], Responding Gateway: KOS manifests of a patient.

Answers FindDocuments, FindDocumentsByReferenceId and GetDocuments from the
:class:`~imagebridge.actors.responding.catalog.ManifestCatalog`; other stored
queries concern objects an on-demand imaging gateway never registers
(submission sets, folders, associations) and get an empty Success.  Errors
are in-band (RegistryErrorList): unknown community, missing homeCommunityId,
unknown patient, unusable stored-query parameters, and an unreachable
archive (``XDSRegistryError``, with whatever the other archives returned).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import OrderedDict

import anyio.to_thread
from lxml import etree

from imagebridge.actors.responding.catalog import ManifestCatalog
from imagebridge.actors.responding.filters import select
from imagebridge.errors import ImageBridgeError, StoredQueryError
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import RegistryError, Severity, Status, consolidate
from imagebridge.model.xds import DocumentEntry, ObjectRef
from imagebridge.model.xds_query import (
    AdhocQueryRequest,
    AdhocQueryResponse,
    FindDocumentsFilters,
    GetDocumentsQuery,
    ResponseObject,
    ReturnType,
)
from imagebridge.store import Store
from imagebridge.transport.events import Decoded
from imagebridge.transport.faults import registry_error
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.wire import ns
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    render_adhoc_query_response,
    render_document_entry,
)
from imagebridge.wire.xml import Element, child

log = logging.getLogger(__name__)

_RENDERED_CACHE_SIZE = 20_000


class CrossGatewayQueryResponder:
    """Cross Gateway Query [ITI-38], Responding Gateway."""

    def __init__(self, catalog: ManifestCatalog, store: Store, home: HomeCommunityId) -> None:
        self._catalog = catalog
        self._store = store
        self._home = home
        self._rendered_cache: OrderedDict[tuple[str, str, str], Element] = OrderedDict()

    async def handle(self, request: SoapRequest) -> SoapReply:
        """SOAP handler: decode, answer, encode."""
        try:
            query = parse_adhoc_query_request(request.payload)
        except StoredQueryError as exc:
            return self._reply(self._failure(exc))
        return self._reply(await self.answer(query), query)

    def _reply(
        self, response: AdhocQueryResponse, query: AdhocQueryRequest | None = None
    ) -> SoapReply:
        decoded = Decoded(query, response)  # the observers need not parse the reply again
        entries = response.document_entries
        if not entries or len(entries) != len(response.registry_objects):
            return SoapReply(render_adhoc_query_response(response), decoded=decoded)
        # LeafClass: every ExtrinsicObject is rendered once per manifest and copied after.
        shell = render_adhoc_query_response(dataclasses.replace(response, registry_objects=()))
        objects = child(shell, ns.RIM, "RegistryObjectList")
        if objects is None:  # the codec always writes it; keep the reply valid regardless
            objects = etree.SubElement(shell, ns.q(ns.RIM, "RegistryObjectList"))
        for entry in entries:
            objects.append(copy.deepcopy(self._rendered(entry)))
        return SoapReply(shell, decoded=decoded)

    def _rendered(self, entry: DocumentEntry) -> Element:
        key = (entry.entry_uuid, entry.hash or "", entry.patient_id.cx if entry.patient_id else "")
        element = self._rendered_cache.get(key)
        if element is None:
            element = render_document_entry(entry)
            self._rendered_cache[key] = element
            while len(self._rendered_cache) > _RENDERED_CACHE_SIZE:
                self._rendered_cache.popitem(last=False)
        else:
            self._rendered_cache.move_to_end(key)
        return element

    def _failure(self, error: ImageBridgeError, context: str | None = None) -> AdhocQueryResponse:
        found = registry_error(error, self._home.urn, context=context)
        return AdhocQueryResponse(status=Status.FAILURE, errors=(found,))

    def _error(self, code: str, context: str) -> AdhocQueryResponse:
        found = RegistryError(code, context, Severity.ERROR, self._home.urn)
        return AdhocQueryResponse(status=Status.FAILURE, errors=(found,))

    async def answer(self, request: AdhocQueryRequest) -> AdhocQueryResponse:
        """The AdhocQueryResponse for *request*."""
        try:
            request.require_home_community_id()
        except StoredQueryError as exc:
            return self._failure(exc)
        home = request.home_community_id
        if home is not None and home != self._home:
            return self._error(
                v.XDS_UNKNOWN_COMMUNITY, f"homeCommunityId {home.urn} is not served here"
            )
        query = request.query
        if isinstance(query, FindDocumentsFilters):
            objects, errors = await self._find(query.patient_id, query)
        elif isinstance(query, GetDocumentsQuery):
            objects, errors = await self._get(query)
        else:
            log.debug("stored query %s answered empty", query.query_type.name)
            objects, errors = [], []
        if errors and not objects and any(e.error_code == v.XDS_UNKNOWN_PATIENT_ID for e in errors):
            return AdhocQueryResponse(status=Status.FAILURE, errors=tuple(errors))
        results: tuple[ResponseObject, ...]
        if request.return_type is ReturnType.OBJECT_REF:
            results = tuple(ObjectRef(e.entry_uuid, self._home) for e in objects)
        else:
            results = tuple(objects)
        return AdhocQueryResponse(
            status=consolidate(bool(results), errors),
            registry_objects=results,
            errors=tuple(errors),
        )

    async def _find(
        self, patient_id: PatientId, query: FindDocumentsFilters
    ) -> tuple[list[DocumentEntry], list[RegistryError]]:
        # Live archives are asked first: a patient new to the index may be in a PACS.
        manifests = await self._catalog.for_patient(patient_id)
        if not manifests.entries and not manifests.errors:
            known = await anyio.to_thread.run_sync(self._store.patient, patient_id)
            if known is None:
                return [], [
                    RegistryError(
                        v.XDS_UNKNOWN_PATIENT_ID,
                        "The patient identifier is not known in this community.",
                        Severity.ERROR,
                        self._home.urn,
                    )
                ]
        return select(manifests.entries, query), list(manifests.errors)

    async def _get(
        self, query: GetDocumentsQuery
    ) -> tuple[list[DocumentEntry], list[RegistryError]]:
        unique_ids = list(query.unique_id)
        for uuid in query.entry_uuid:
            found = self._catalog.unique_id_for_entry_uuid(uuid)
            if found is not None:
                unique_ids.append(found)
        return await self._catalog.entries_by_unique_ids(unique_ids), []
