"""Initiating Gateway, splitting retrieves to fit a partner's ``max_documents_per_retrieve``.

ITI-39 DocumentRequests go in consecutive batches; a RAD-75 request is split
by instance count while keeping each instance under its own study and series
and the request order, with the same transfer syntax list in every part.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from imagebridge.model.retrieve import (
    DocumentRequest,
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
)


def batched(items: Sequence[DocumentRequest], size: int | None) -> Iterator[list[DocumentRequest]]:
    """*items* in consecutive batches of at most *size* (one batch when *size* is None)."""
    if size is None or size >= len(items):
        yield list(items)
        return
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def split_imaging_request(
    request: RetrieveImagingDocumentSetRequest, size: int | None
) -> list[RetrieveImagingDocumentSetRequest]:
    """RAD-75 requests of at most *size* instances each, keeping study/series order and grouping."""
    flat = [
        (study.study_instance_uid, series.series_instance_uid, document)
        for study in request.study_requests
        for series in study.series_requests
        for document in series.document_requests
    ]
    if size is None or size >= len(flat):
        return [request]
    if size < 1:
        raise ValueError("batch size must be at least 1")
    out: list[RetrieveImagingDocumentSetRequest] = []
    for start in range(0, len(flat), size):
        tree: dict[str, dict[str, list[DocumentRequest]]] = {}
        for study_uid, series_uid, document in flat[start : start + size]:
            tree.setdefault(study_uid, {}).setdefault(series_uid, []).append(document)
        out.append(
            RetrieveImagingDocumentSetRequest(
                study_requests=tuple(
                    StudyRequest(s, tuple(SeriesRequest(r, tuple(d)) for r, d in series.items()))
                    for s, series in tree.items()
                ),
                transfer_syntax_uids=request.transfer_syntax_uids,
            )
        )
    return out
