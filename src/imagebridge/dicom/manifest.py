"""Imaging Document Consumer, KOS manifest parse and its RAD-75 document locators.

:func:`parse_manifest` (bytes or a stream) and :func:`read_manifest` (a file)
turn a Key Object Selection document into a :class:`~imagebridge.model.imaging.Manifest`;
:func:`imaging_document_locators` lists what a Cross Gateway Retrieve Imaging
Document Set [RAD-75] request needs per instance.

The instance list is taken from the Current Requested Procedure Evidence
Sequence (0040,A375) (plus any Pertinent Other Evidence Sequence (0040,A385)).
The retrieve location of an instance is, in this order: series-level Retrieve
Location UID (0040,E011); instance-level (0040,E011); series-level then
instance-level Repository Unique ID (0040,E030) (directly or in an XDS
Retrieval Sequence (0040,E024), tolerated though not XDS-I.b); the caller's
configured default.  Without any, :class:`~imagebridge.errors.KosMissingRetrieveLocation`.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from imagebridge.dicom.headers import (
    codes,
    designator_from_item,
    first_item,
    patient_from_dataset,
    sequence,
    text,
    uid,
)
from imagebridge.errors import (
    InvalidUid,
    KosMalformed,
    KosMissingRetrieveLocation,
    NotDicom,
    NotKeyObjectSelection,
)
from imagebridge.model.ids import validate_uid
from imagebridge.model.imaging import (
    KOS_SOP_CLASS_UID,
    ImagingDocumentLocator,
    Manifest,
    ManifestSeries,
    ReferencedInstance,
)

logger = logging.getLogger(__name__)


def read_manifest(
    path: str | os.PathLike[str], *, default_retrieve_location_uid: str | None = None
) -> Manifest:
    """Read a KOS Part-10 file; ``OSError`` propagates unchanged."""
    with open(path, "rb") as fp:
        return parse_manifest(fp, default_retrieve_location_uid=default_retrieve_location_uid)


def parse_manifest(
    data: bytes | bytearray | memoryview | BinaryIO,
    *,
    default_retrieve_location_uid: str | None = None,
) -> Manifest:
    """Parse a KOS Part-10 object (as returned by ITI-39) into a :class:`Manifest`.

    Raises :class:`NotDicom`, :class:`NotKeyObjectSelection`,
    :class:`KosMalformed` or :class:`KosMissingRetrieveLocation`.
    """
    fp: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    try:
        ds = dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise NotDicom(f"KOS is not a DICOM Part-10 object ({exc})") from exc
    except (EOFError, struct.error, ValueError, KeyError, NotImplementedError) as exc:
        raise NotDicom(f"KOS could not be decoded ({exc})") from exc
    sop_class = uid(ds, "SOPClassUID")
    if sop_class != KOS_SOP_CLASS_UID:
        raise NotKeyObjectSelection(
            f"SOP Class UID {sop_class[:64]!r} is not Key Object Selection ({KOS_SOP_CLASS_UID})"
        )
    sop_instance = uid(ds, "SOPInstanceUID")
    if not sop_instance:
        raise KosMalformed("KOS has no SOP Instance UID")
    default = None
    if default_retrieve_location_uid is not None:
        default = validate_uid(default_retrieve_location_uid, "default Retrieve Location UID")

    series: list[ManifestSeries] = []
    studies: list[str] = []
    evidence = sequence(ds, "CurrentRequestedProcedureEvidenceSequence")
    other = sequence(ds, "PertinentOtherEvidenceSequence")
    if not evidence:
        logger.debug("KOS %s has no Current Requested Procedure Evidence", sop_instance)
    for study_item in evidence + other:
        study_uid = uid(study_item, "StudyInstanceUID")
        if not study_uid:
            raise KosMalformed(f"KOS {sop_instance}: evidence item without Study Instance UID")
        if study_uid not in studies:
            studies.append(study_uid)
        for series_item in sequence(study_item, "ReferencedSeriesSequence"):
            series.extend(_series(study_uid, series_item, default))
    if not series:
        raise KosMalformed(f"KOS {sop_instance} references no instance in its evidence sequences")
    title = codes(ds, "ConceptNameCodeSequence")
    return Manifest(
        sop_instance_uid=sop_instance,
        document_title=title[0] if title else None,
        patient=patient_from_dataset(ds),
        study_instance_uids=tuple(studies),
        accession_number=text(ds, "AccessionNumber"),
        accession_issuer=designator_from_item(first_item(ds, "IssuerOfAccessionNumberSequence")),
        series=tuple(series),
    )


def _xds_retrieval(item: Dataset, keyword: str) -> str:
    """(0040,E030)/(0040,E031) on the item itself or in its XDS Retrieval Sequence."""
    direct = uid(item, keyword)
    if direct:
        return direct
    for retrieval in sequence(item, "XDSRetrievalSequence"):
        value = uid(retrieval, keyword)
        if value:
            return value
    return ""


def _series(study_uid: str, item: Dataset, default: str | None) -> list[ManifestSeries]:
    """One Referenced Series item, split by retrieve location when instances differ."""
    series_uid = uid(item, "SeriesInstanceUID")
    if not series_uid:
        raise KosMalformed(f"study {study_uid}: Referenced Series item without Series Instance UID")
    series_location = uid(item, "RetrieveLocationUID")
    series_repository = _xds_retrieval(item, "RepositoryUniqueID")
    series_home = _xds_retrieval(item, "HomeCommunityID")
    series_ae = text(item, "RetrieveAETitle")
    series_url = text(item, "RetrieveURL")
    groups: dict[tuple[str, str, str, str], list[ReferencedInstance]] = {}
    references = sequence(item, "ReferencedSOPSequence")
    if not references:
        raise KosMalformed(f"series {series_uid}: Referenced SOP Sequence is empty or missing")
    for reference in references:
        sop_class = uid(reference, "ReferencedSOPClassUID")
        sop_instance = uid(reference, "ReferencedSOPInstanceUID")
        if not sop_class or not sop_instance:
            raise KosMalformed(
                f"series {series_uid}: Referenced SOP item without class or instance"
            )
        location = (
            series_location
            or uid(reference, "RetrieveLocationUID")
            or series_repository
            or _xds_retrieval(reference, "RepositoryUniqueID")
            or default
        )
        if not location:
            raise KosMissingRetrieveLocation(
                f"series {series_uid}: no Retrieve Location UID (0040,E011) for instance "
                f"{sop_instance}, nor a fallback",
                series_uid,
            )
        try:
            location = validate_uid(location, "Retrieve Location UID")
        except InvalidUid as exc:
            raise KosMalformed(f"series {series_uid}: {exc.message}") from exc
        key = (
            location,
            series_ae or text(reference, "RetrieveAETitle"),
            series_url or text(reference, "RetrieveURL"),
            series_home or _xds_retrieval(reference, "HomeCommunityID"),
        )
        groups.setdefault(key, []).append(ReferencedInstance(sop_class, sop_instance))
    return [
        ManifestSeries(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            retrieve_location_uid=location,
            retrieve_ae_title=ae_title,
            retrieve_url=url,
            home_community_id=home,
            instances=tuple(instances),
        )
        for (location, ae_title, url, home), instances in groups.items()
    ]


def imaging_document_locators(manifest: Manifest) -> tuple[ImagingDocumentLocator, ...]:
    """Cross Gateway Retrieve Imaging Document Set [RAD-75], the instances a manifest asks for.

    One locator per (repositoryUniqueId, study, series, SOP instance), in
    manifest order, exact repeats removed.  The homeCommunityId is not in a
    KOS: it is the ``home`` of the KOS DocumentEntry.
    """
    seen: set[ImagingDocumentLocator] = set()
    locators: list[ImagingDocumentLocator] = []
    for series in manifest.series:
        for instance in series.instances:
            locator = ImagingDocumentLocator(
                series.retrieve_location_uid,
                series.study_instance_uid,
                series.series_instance_uid,
                instance.sop_instance_uid,
            )
            if locator not in seen:
                seen.add(locator)
                locators.append(locator)
    return tuple(locators)
