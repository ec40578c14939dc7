"""Cross Gateway Retrieve [ITI-39], Responding Gateway: the KOS manifests, as MTOM.

Each DocumentRequest is checked on its own: the homeCommunityId must be ours
(``XDSMissingHomeCommunityId`` / ``XDSUnknownCommunity``), the repository one
of ours (``XDSUnknownRepositoryId``) and the document a manifest we built
(``XDSDocumentUniqueIdError``).  Found manifests go out as XOP attachments;
the status follows the usual consolidation (Success / PartialSuccess / Failure).
"""

from __future__ import annotations

from imagebridge.actors.responding.catalog import ManifestCatalog
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, Severity
from imagebridge.model.retrieve import (
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetResponse,
    XopInclude,
)
from imagebridge.transport.events import Decoded
from imagebridge.transport.messages import SoapReply, SoapRequest
from imagebridge.wire.mtom import Attachment
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    render_retrieve_document_set_response,
)


class CrossGatewayRetrieveResponder:
    """Cross Gateway Retrieve [ITI-39], Responding Gateway."""

    def __init__(self, catalog: ManifestCatalog, home: HomeCommunityId) -> None:
        self._catalog = catalog
        self._home = home

    def _error(self, code: str, context: str) -> RegistryError:
        return RegistryError(code, context, Severity.ERROR, self._home.urn)

    async def handle(self, request: SoapRequest) -> SoapReply:
        """SOAP handler: decode, look every document up, answer with attachments."""
        retrieve = parse_retrieve_document_set_request(request.payload)
        documents: list[DocumentResponse] = []
        attachments: list[Attachment] = []
        errors: list[RegistryError] = []
        for index, wanted in enumerate(retrieve.document_requests):
            problem = self._check(wanted)
            if problem is not None:
                errors.append(problem)
                continue
            manifest = await self._catalog.manifest_by_unique_id(wanted.document_unique_id)
            if manifest is None or manifest.repository_unique_id != wanted.repository_unique_id:
                errors.append(
                    self._error(
                        v.XDS_DOCUMENT_UNIQUE_ID_ERROR,
                        f"Document {wanted.document_unique_id} is not available "
                        f"in repository {wanted.repository_unique_id}",
                    )
                )
                continue
            cid = f"doc{index}.{manifest.sop_instance_uid}@imagebridge"
            documents.append(
                DocumentResponse(
                    repository_unique_id=manifest.repository_unique_id,
                    document_unique_id=manifest.sop_instance_uid,
                    mime_type=v.MIME_DICOM,
                    document=XopInclude.for_content_id(cid),
                    home_community_id=self._home,
                )
            )
            attachments.append(Attachment(cid, v.MIME_DICOM, [manifest.document]))
        response = RetrieveDocumentSetResponse.consolidated(documents, errors)
        return SoapReply(
            render_retrieve_document_set_response(response),
            attachments,
            decoded=Decoded(retrieve, response),
        )

    def _check(self, wanted: DocumentRequest) -> RegistryError | None:
        if wanted.home_community_id is None:
            return self._error(
                v.XDS_MISSING_HOME_COMMUNITY_ID,
                f"DocumentRequest for {wanted.document_unique_id} has no HomeCommunityId",
            )
        if wanted.home_community_id != self._home:
            return self._error(
                v.XDS_UNKNOWN_COMMUNITY,
                f"HomeCommunityId {wanted.home_community_id.urn} is not served here",
            )
        if wanted.repository_unique_id not in self._catalog.repositories:
            return self._error(
                v.XDS_UNKNOWN_REPOSITORY_ID,
                f"RepositoryUniqueId {wanted.repository_unique_id} is not known here",
            )
        return None
