"""Retrieve models: Retrieve Document Set [ITI-43], Cross Gateway Retrieve [ITI-39],
Retrieve Imaging Document Set [RAD-69] and Cross Gateway Retrieve Imaging Document Set [RAD-75].

RAD-69 and RAD-75 share one request model (the Study -> Series -> DocumentRequest
tree plus the TransferSyntaxUIDList) and all four transactions share one
response model.  A returned document is either an :class:`XopInclude` (the
content travels as an MTOM attachment the MTOM layer streams; the model only
holds the reference) or inline ``bytes``.

Constructors validate and hold values in their normalised wire form (bare
repository OIDs, no surrounding whitespace); the codecs in
:mod:`imagebridge.wire.xds.retrieve` and :mod:`imagebridge.wire.xds.imaging_retrieve`
normalise lenient input before building them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from imagebridge.errors import InvalidUid, InvalidValue
from imagebridge.model.ids import URN_OID, HomeCommunityId, validate_uid
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.outcome import RegistryError, RegistryResponse, Status, consolidate

# ebRIM LongName: the schema type of every identifier and of mimeType.
LONG_NAME_MAX = 256
# RFC 3986 pchar (minus unreserved, which quote() never encodes) plus "/": the
# characters a cid: URL may carry unencoded.  Everything else is percent-encoded.
_CID_SAFE = "!$&'()*+,;=:@/"
# What quote(..., safe=_CID_SAFE) leaves unchanged: unreserved characters and _CID_SAFE.
_CID_PLAIN = re.compile(r"[A-Za-z0-9_.~!$&'()*+,;=:@/-]+")


def _check_identifier(value: str, what: str) -> None:
    """Check an XDS identifier held as an opaque ebRIM LongName.

    Non-empty, at most 256 characters, no whitespace anywhere (it must be
    echoed and compared exactly).  Raises :class:`InvalidValue`.
    """
    if not value:
        raise InvalidValue(f"{what} is empty")
    if len(value) > LONG_NAME_MAX:
        raise InvalidValue(f"{what} is longer than {LONG_NAME_MAX} characters")
    if value.split() != [value]:  # C speed; str.split() splits on exactly str.isspace()
        raise InvalidValue(f"{what} contains whitespace: {value[:80]!r}")


def _check_dicom_uid(value: str, what: str) -> None:
    """Check that *value* is a DICOM UID in normalised form; raises :class:`InvalidUid`."""
    if validate_uid(value, what) != value:
        raise InvalidUid(f"{what} has surrounding whitespace or padding: {value[:80]!r}")


def _check_repository_id(value: str, what: str) -> None:
    _check_identifier(value, what)
    if value.lower().startswith(URN_OID):
        raise InvalidValue(f"{what} must be held as a bare OID, not {value[:80]!r}")


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    """One ``xds:DocumentRequest`` (ITI-43, ITI-39, and inside RAD-69/RAD-75 series).

    ``home_community_id`` is optional in the schema: ITI-43 omits it, ITI-39 and
    RAD-75 require it, but a missing one is answered in-band
    (``XDSMissingHomeCommunityId``), so the model carries its absence.
    ``document_unique_id`` is opaque here (an OID for a KOS, possibly
    ``urn:uuid:`` for other documents); the imaging tree checks it is a DICOM UID.
    """

    repository_unique_id: str
    document_unique_id: str
    home_community_id: HomeCommunityId | None = None

    def __post_init__(self) -> None:
        _check_repository_id(self.repository_unique_id, "RepositoryUniqueId")
        _check_identifier(self.document_unique_id, "DocumentUniqueId")


@dataclass(frozen=True, slots=True)
class RetrieveDocumentSetRequest:
    """Cross Gateway Retrieve [ITI-39] / Retrieve Document Set [ITI-43] request."""

    document_requests: tuple[DocumentRequest, ...]

    def __post_init__(self) -> None:
        if not self.document_requests:
            raise InvalidValue("RetrieveDocumentSetRequest needs at least one DocumentRequest")


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """Retrieve Imaging Document Set [RAD-69/RAD-75] ``SeriesRequest``: SOP instances of one series.

    Each DocumentRequest's ``document_unique_id`` is a SOP Instance UID.
    """

    series_instance_uid: str
    document_requests: tuple[DocumentRequest, ...]

    def __post_init__(self) -> None:
        _check_dicom_uid(self.series_instance_uid, "seriesInstanceUID")
        if not self.document_requests:
            raise InvalidValue(
                f"SeriesRequest {self.series_instance_uid} needs at least one DocumentRequest"
            )
        for request in self.document_requests:
            _check_dicom_uid(request.document_unique_id, "SOP Instance UID (DocumentUniqueId)")


@dataclass(frozen=True, slots=True)
class StudyRequest:
    """Retrieve Imaging Document Set [RAD-69/RAD-75] ``StudyRequest``: the series of one study."""

    study_instance_uid: str
    series_requests: tuple[SeriesRequest, ...]

    def __post_init__(self) -> None:
        _check_dicom_uid(self.study_instance_uid, "studyInstanceUID")
        if not self.series_requests:
            raise InvalidValue(
                f"StudyRequest {self.study_instance_uid} needs at least one SeriesRequest"
            )


@dataclass(frozen=True, slots=True)
class RetrieveImagingDocumentSetRequest:
    """Cross Gateway Retrieve Imaging Document Set [RAD-75] / Retrieve Imaging Document Set
    [RAD-69] request: studies, series, SOP instances and the acceptable transfer syntaxes.

    ``transfer_syntax_uids`` keeps the request order (the NIST IDS simulator
    treats it as preference order).
    """

    study_requests: tuple[StudyRequest, ...]
    transfer_syntax_uids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.study_requests:
            raise InvalidValue("RetrieveImagingDocumentSetRequest needs at least one StudyRequest")
        if not self.transfer_syntax_uids:
            raise InvalidValue("TransferSyntaxUIDList needs at least one TransferSyntaxUID")
        for uid in self.transfer_syntax_uids:
            _check_dicom_uid(uid, "TransferSyntaxUID")

    @property
    def document_requests(self) -> tuple[DocumentRequest, ...]:
        """Every DocumentRequest of every series, in request order."""
        return tuple(
            request
            for study in self.study_requests
            for series in study.series_requests
            for request in series.document_requests
        )


@dataclass(frozen=True, slots=True)
class XopInclude:
    """Document content carried as an MTOM/XOP attachment: the ``xop:Include/@href``.

    ``href`` is kept as received so the MTOM layer can match it tolerantly;
    :attr:`content_id` is its RFC 2392 decoding (``cid:`` removed, percent-escapes
    decoded, no angle brackets).  Build outgoing references with
    :meth:`for_content_id`.
    """

    href: str

    def __post_init__(self) -> None:
        if not self.href.lower().startswith("cid:") or len(self.href) == len("cid:"):
            raise InvalidValue(f"xop:Include href is not a cid: URL: {self.href[:80]!r}")
        if self.href != self.href.strip():
            raise InvalidValue("xop:Include href has surrounding whitespace")

    @classmethod
    def for_content_id(cls, content_id: str) -> XopInclude:
        """The reference to the MIME part whose Content-ID is *content_id* (``<>`` optional)."""
        bare = content_id.strip()
        if bare.startswith("<") and bare.endswith(">"):
            bare = bare[1:-1].strip()
        if not bare:
            raise InvalidValue("Content-ID is empty")
        if _CID_PLAIN.fullmatch(bare):  # nothing to escape (the usual UID-based ids)
            return cls("cid:" + bare)
        return cls("cid:" + quote(bare, safe=_CID_SAFE))

    @property
    def content_id(self) -> str:
        """The Content-ID this reference names, without angle brackets (RFC 2392)."""
        return unquote(self.href[len("cid:") :])


DocumentContent = XopInclude | bytes
"""A returned document: an attachment reference, or the bytes given inline (base64)."""


@dataclass(frozen=True, slots=True)
class DocumentResponse:
    """One ``xds:DocumentResponse`` of ITI-43/ITI-39/RAD-69/RAD-75: a returned document.

    ``repository_unique_id`` is ``None`` only when a partner left the
    (schema-required) element empty, as NIST's reference responses do; it cannot
    be rendered that way.  ``new_repository_unique_id``/``new_document_unique_id``
    are set for On-Demand documents (Epic sends them).  ``mime_type`` is kept as
    sent; trust the bytes, not the label.
    """

    repository_unique_id: str | None
    document_unique_id: str
    mime_type: str
    document: DocumentContent
    home_community_id: HomeCommunityId | None = None
    new_repository_unique_id: str | None = None
    new_document_unique_id: str | None = None

    def __post_init__(self) -> None:
        if self.repository_unique_id is not None:
            _check_repository_id(self.repository_unique_id, "RepositoryUniqueId")
        _check_identifier(self.document_unique_id, "DocumentUniqueId")
        if self.new_repository_unique_id is not None:
            _check_repository_id(self.new_repository_unique_id, "NewRepositoryUniqueId")
        if self.new_document_unique_id is not None:
            _check_identifier(self.new_document_unique_id, "NewDocumentUniqueId")
        if not self.mime_type.strip() or self.mime_type != self.mime_type.strip():
            raise InvalidValue(f"mimeType is empty or padded: {self.mime_type[:80]!r}")
        if len(self.mime_type) > LONG_NAME_MAX:
            raise InvalidValue(f"mimeType is longer than {LONG_NAME_MAX} characters")


@dataclass(frozen=True, slots=True)
class RetrieveDocumentSetResponse:
    """Retrieve Document Set response of ITI-43/ITI-39, also the response of RAD-69/RAD-75.

    Partial success is data: the RegistryResponse carries the status and the
    per-document errors; documents that came back are ``document_responses``.
    The status is kept as sent (partners send Success with errors).
    """

    registry_response: RegistryResponse
    document_responses: tuple[DocumentResponse, ...] = ()

    @classmethod
    def consolidated(
        cls, document_responses: Iterable[DocumentResponse], errors: Iterable[RegistryError] = ()
    ) -> RetrieveDocumentSetResponse:
        """A response whose status follows ITI TF-2 consolidation of these results and errors."""
        documents = tuple(document_responses)
        errs = tuple(errors)
        status = consolidate(bool(documents), errs)
        return cls(RegistryResponse(status=status, errors=errs), documents)

    @property
    def status(self) -> Status:
        return self.registry_response.status

    @property
    def errors(self) -> tuple[RegistryError, ...]:
        return self.registry_response.errors


def imaging_request_for(
    locators: Iterable[ImagingDocumentLocator],
    home_community_id: HomeCommunityId | None,
    transfer_syntax_uids: tuple[str, ...],
) -> RetrieveImagingDocumentSetRequest:
    """Cross Gateway Retrieve Imaging Document Set [RAD-75], Initiating Imaging Gateway:
    the request tree (study, series, instance) for *locators*, in their order."""
    studies: dict[str, dict[str, list[DocumentRequest]]] = {}
    for loc in locators:
        series = studies.setdefault(loc.study_instance_uid, {})
        series.setdefault(loc.series_instance_uid, []).append(
            DocumentRequest(loc.repository_unique_id, loc.sop_instance_uid, home_community_id)
        )
    return RetrieveImagingDocumentSetRequest(
        study_requests=tuple(
            StudyRequest(study, tuple(SeriesRequest(s, tuple(d)) for s, d in series.items()))
            for study, series in studies.items()
        ),
        transfer_syntax_uids=transfer_syntax_uids,
    )
