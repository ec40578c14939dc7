"""Batching of retrieves to fit a partner's max_documents_per_retrieve (pure logic)."""

from __future__ import annotations

import pytest

from imagebridge.actors.initiating.batching import batched, split_imaging_request
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.model.retrieve import DocumentRequest, imaging_request_for

HOME = HomeCommunityId("1.2.3")
SYNTAXES = ("1.2.840.10008.1.2.1",)


def _locators() -> list[ImagingDocumentLocator]:
    # two studies; the first has two series (3 + 2 instances), the second one series (2)
    out = []
    for study, series, count in (("1.1", "1.1.1", 3), ("1.1", "1.1.2", 2), ("1.2", "1.2.1", 2)):
        out += [ImagingDocumentLocator("9.9", study, series, f"{series}.{i}") for i in range(count)]
    return out


@pytest.mark.parametrize("size", [None, 7, 100])
def test_small_requests_are_sent_whole(size: int | None) -> None:
    request = imaging_request_for(_locators(), HOME, SYNTAXES)
    assert split_imaging_request(request, size) == [request]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 6])
def test_split_keeps_order_grouping_and_syntaxes(size: int) -> None:
    request = imaging_request_for(_locators(), HOME, SYNTAXES)
    parts = split_imaging_request(request, size)
    assert len(parts) == -(-7 // size)
    assert all(len(p.document_requests) <= size for p in parts)
    assert [d for p in parts for d in p.document_requests] == list(request.document_requests)
    for part in parts:
        assert part.transfer_syntax_uids == SYNTAXES
        for study in part.study_requests:
            for series in study.series_requests:
                # every instance sits under its own study and series, as in the original
                assert all(
                    d.document_unique_id.startswith(series.series_instance_uid)
                    for d in series.document_requests
                )
                assert series.series_instance_uid.startswith(study.study_instance_uid)


def test_batched_document_requests() -> None:
    docs = [DocumentRequest("9.9", f"1.{i}", HOME) for i in range(5)]
    assert [len(b) for b in batched(docs, 2)] == [2, 2, 1]
    assert [len(b) for b in batched(docs, None)] == [5]
    with pytest.raises(ValueError, match="at least 1"):
        list(batched(docs, 0))
    with pytest.raises(ValueError, match="at least 1"):
        split_imaging_request(imaging_request_for(_locators(), HOME, SYNTAXES), 0)
