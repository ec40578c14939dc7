"""Imaging Document Source back end that forwards to a remote Imaging Document Source.

:class:`RemoteImagingSource` serves a repository of an XDS-I.b community
behind this gateway: it asks with Retrieve Imaging Document Set [RAD-69] and
relays the answer, instance by instance (each part streams from the received
MTOM package, released with the reply), with the remote RegistryErrors
re-located here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from imagebridge.actors.responding.retrieved import (
    CHUNK,
    Cleanup,
    InstanceBody,
    RetrievedInstance,
    RetrieveOutcome,
)
from imagebridge.actors.responding.retrieved import error as _error
from imagebridge.errors import ImageBridgeError, SoapFaultReceived
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import RegistryError
from imagebridge.model.retrieve import XopInclude, imaging_request_for
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.client import SoapClient
from imagebridge.wire.mtom import MtomPackage
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import render_retrieve_imaging_document_set_request
from imagebridge.wire.xds.retrieve import parse_retrieve_document_set_response

log = logging.getLogger("imagebridge.actors.responding.imaging_sources")


class RemoteImagingSource:
    """Forwards to a remote Imaging Document Source with RAD-69 and relays its answer."""

    def __init__(
        self,
        repository_unique_id: str,
        url: str,
        client: SoapClient,
        home: HomeCommunityId,
        cleanup: Cleanup,
    ) -> None:
        self._repository_unique_id = repository_unique_id
        self._url = url
        self._client = client
        self._home = home
        self._location = home.urn
        self._cleanup = cleanup

    async def retrieve(
        self, locators: Sequence[ImagingDocumentLocator], transfer_syntaxes: Sequence[str]
    ) -> AsyncIterator[RetrieveOutcome]:
        # The HomeCommunityId of the RAD-75 travels on (NIST's RIG tests compare it).
        request = imaging_request_for(locators, self._home, tuple(transfer_syntaxes))
        try:
            reply = await self._client.call(
                spec_of(Transaction.RAD_69),
                self._url,
                render_retrieve_imaging_document_set_request(request),
            )
        except (ImageBridgeError, SoapFaultReceived) as exc:
            log.warning("RAD-69 to %s failed: %s", self._repository_unique_id, exc.message)
            for locator in locators:
                yield _error(
                    v.XDS_REPOSITORY_ERROR,
                    f"SOP Instance {locator.sop_instance_uid}: Imaging Document Source "
                    f"{self._repository_unique_id} did not answer ({exc.message})",
                    self._location,
                )
            return
        package: MtomPackage = reply.package
        self._cleanup.add(package.close)
        try:
            response = parse_retrieve_document_set_response(reply.payload)
        except ImageBridgeError as exc:
            for locator in locators:
                yield _error(
                    v.XDS_REPOSITORY_ERROR,
                    f"SOP Instance {locator.sop_instance_uid}: "
                    f"unusable RAD-69 reply ({exc.message})",
                    self._location,
                )
            return
        wanted = {loc.sop_instance_uid: loc for loc in locators}
        for document in response.document_responses:
            found = wanted.pop(document.document_unique_id, None)
            if found is None:
                continue  # not asked for: ignore rather than pass on
            if isinstance(document.document, XopInclude):
                part = package.part_for_href(document.document.href)
                body = InstanceBody(chunks=part.chunks(CHUNK))
            else:
                body = InstanceBody(document.document)
            yield RetrievedInstance(found, "", body)
        for error in response.errors:
            yield RegistryError(
                error.error_code, error.code_context, error.severity, self._location
            )
        if wanted and not response.errors:
            for missing in wanted.values():
                yield _error(
                    v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                    f"SOP Instance {missing.sop_instance_uid} was not returned by "
                    f"Imaging Document Source {self._repository_unique_id}",
                    self._location,
                )
