"""Cross Gateway Query [ITI-38] / Retrieve [ITI-39], Initiating Gateway: merging logic."""

from __future__ import annotations

import logging

import pytest

from imagebridge.actors.initiating.client import ReceivedDocument, RetrieveResult
from imagebridge.actors.initiating.merge import (
    CommunityFailure,
    MergedRetrieve,
    community_error,
    merge_query_responses,
    merge_retrieve_results,
)
from imagebridge.errors import (
    PartnerTimeout,
    PartnerUnavailable,
    SoapFaultReceived,
    UnknownCommunity,
)
from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, Severity, Status
from imagebridge.model.retrieve import DocumentResponse
from imagebridge.model.xds import DocumentEntry, ObjectRef
from imagebridge.model.xds_query import AdhocQueryResponse
from imagebridge.wire.spool import SpooledBody
from imagebridge.wire.xds import vocabulary as v

ONE = Community(HomeCommunityId("1.3.6.1.4.1.21367.13.70.101"), "Community 1")
TWO = Community(HomeCommunityId("1.3.6.1.4.1.21367.13.70.102"), "Community 2")
THREE = Community(HomeCommunityId("1.3.6.1.4.1.21367.13.70.103"), "")


def entry(n: int, home: Community | None) -> DocumentEntry:
    return DocumentEntry(
        entry_uuid=f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
        unique_id=f"1.2.3.{n}",
        mime_type="application/dicom",
        home=None if home is None else home.home_community_id,
    )


def success(*objects: DocumentEntry | ObjectRef) -> AdhocQueryResponse:
    return AdhocQueryResponse(status=Status.SUCCESS, registry_objects=objects)


def failure(*errors: RegistryError) -> AdhocQueryResponse:
    return AdhocQueryResponse(status=Status.FAILURE, errors=errors)


def error(
    code: str, location: str | None = None, severity: Severity = Severity.ERROR
) -> RegistryError:
    return RegistryError(code, f"{code} happened", severity, location)


# --- ITI-38 ------------------------------------------------------------------------------------


def test_objects_are_concatenated_in_community_order_keeping_their_home() -> None:
    merged = merge_query_responses(
        [
            (ONE, success(entry(1, ONE), entry(2, ONE))),
            (TWO, success(entry(3, TWO))),
        ]
    )
    assert merged.status is Status.SUCCESS
    assert [e.unique_id for e in merged.document_entries] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert [e.home for e in merged.document_entries] == [
        ONE.home_community_id,
        ONE.home_community_id,
        TWO.home_community_id,
    ]
    assert merged.errors == ()


def test_object_refs_are_merged_too() -> None:
    refs = (ObjectRef("urn:uuid:a", ONE.home_community_id),)
    merged = merge_query_responses([(ONE, success(*refs)), (TWO, success())])
    assert merged.object_refs == refs
    assert merged.status is Status.SUCCESS


def test_no_community_gives_an_empty_success() -> None:
    merged = merge_query_responses([])
    assert (merged.status, merged.registry_objects, merged.errors) == (Status.SUCCESS, (), ())


def test_a_partner_error_with_results_elsewhere_is_partial_success() -> None:
    partner = error(v.XDS_REGISTRY_ERROR, location=ONE.home_community_id.urn)
    merged = merge_query_responses([(ONE, failure(partner)), (TWO, success(entry(1, TWO)))])
    assert merged.status is Status.PARTIAL_SUCCESS
    assert merged.errors == (partner,)
    assert len(merged.document_entries) == 1


def test_partner_errors_keep_their_location_and_get_the_community_when_they_have_none() -> None:
    located = error(v.XDS_REGISTRY_ERROR, location="urn:oid:9.9.9")
    blank = error(v.XDS_TOO_MANY_RESULTS, location="  ")
    bare = error(v.XDS_REGISTRY_ERROR)
    merged = merge_query_responses([(ONE, failure(located, blank, bare))])
    assert [e.location for e in merged.errors] == [
        "urn:oid:9.9.9",
        ONE.home_community_id.urn,
        ONE.home_community_id.urn,
    ]
    assert [e.error_code for e in merged.errors] == [
        v.XDS_REGISTRY_ERROR,
        v.XDS_TOO_MANY_RESULTS,
        v.XDS_REGISTRY_ERROR,
    ]


def test_only_errors_is_failure() -> None:
    merged = merge_query_responses(
        [(ONE, failure(error(v.XDS_REGISTRY_ERROR))), (TWO, PartnerTimeout("slow"))]
    )
    assert merged.status is Status.FAILURE
    assert [e.error_code for e in merged.errors] == [
        v.XDS_REGISTRY_ERROR,
        v.XDS_UNAVAILABLE_COMMUNITY,
    ]


def test_warnings_do_not_degrade_success() -> None:
    warning = error(v.XDS_TOO_MANY_RESULTS, ONE.home_community_id.urn, Severity.WARNING)
    answer = AdhocQueryResponse(
        status=Status.SUCCESS, registry_objects=(entry(1, ONE),), errors=(warning,)
    )
    merged = merge_query_responses([(ONE, answer)])
    assert merged.status is Status.SUCCESS
    assert merged.errors == (warning,)


def test_unknown_patient_is_dropped_unless_kept() -> None:
    unknown = error(v.XDS_UNKNOWN_PATIENT_ID, TWO.home_community_id.urn)
    answers = [(ONE, success(entry(1, ONE))), (TWO, failure(unknown))]
    merged = merge_query_responses(answers)
    assert merged.status is Status.SUCCESS
    assert merged.errors == ()
    kept = merge_query_responses(answers, keep_unknown_patient=True)
    assert kept.status is Status.PARTIAL_SUCCESS
    assert kept.errors == (unknown,)


def test_unknown_patient_everywhere_is_an_empty_success() -> None:
    unknown = error(v.XDS_UNKNOWN_PATIENT_ID)
    merged = merge_query_responses([(ONE, failure(unknown)), (TWO, failure(unknown))])
    assert (merged.status, merged.registry_objects, merged.errors) == (Status.SUCCESS, (), ())


@pytest.mark.parametrize(
    ("failed", "code"),
    [
        (PartnerUnavailable("connection refused"), v.XDS_UNAVAILABLE_COMMUNITY),
        (PartnerTimeout("no answer in 5 s"), v.XDS_UNAVAILABLE_COMMUNITY),
        (SoapFaultReceived("boom", "Receiver", ()), v.XDS_UNAVAILABLE_COMMUNITY),
        (UnknownCommunity("no ITI-38 endpoint"), v.XDS_UNKNOWN_COMMUNITY),
        (CommunityFailure(None, "circuit open"), v.XDS_UNAVAILABLE_COMMUNITY),
        (CommunityFailure(v.XDS_REGISTRY_ERROR, "bad reply"), v.XDS_REGISTRY_ERROR),
    ],
)
def test_a_community_that_failed_as_a_whole_contributes_one_located_error(
    failed: Exception | CommunityFailure, code: str
) -> None:
    merged = merge_query_responses([(ONE, success(entry(1, ONE))), (TWO, failed)])
    assert merged.status is Status.PARTIAL_SUCCESS
    (found,) = merged.errors
    assert found.error_code == code
    assert found.location == TWO.home_community_id.urn
    assert found.severity is Severity.ERROR
    assert "Community 2" in found.code_context and TWO.home_community_id.urn in found.code_context


def test_an_unexpected_exception_is_reported_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "imagebridge.actors.initiating.merge"):
        merged = merge_query_responses([(THREE, RuntimeError("bug"))])
    assert merged.status is Status.FAILURE
    (found,) = merged.errors
    assert found.error_code == v.XDS_UNAVAILABLE_COMMUNITY
    assert found.location == THREE.home_community_id.urn
    assert "RuntimeError" in found.code_context
    assert "RuntimeError" in caplog.text


def test_a_failure_without_errors_is_reported() -> None:
    merged = merge_query_responses([(ONE, AdhocQueryResponse(status=Status.FAILURE))])
    assert merged.status is Status.FAILURE
    (found,) = merged.errors
    assert (found.error_code, found.location) == (v.XDS_REGISTRY_ERROR, ONE.home_community_id.urn)


def test_objects_without_home_are_kept_and_reported_with_gateway_and_ids() -> None:
    bare = entry(7, None)
    ref = ObjectRef("urn:uuid:no-home")
    merged = merge_query_responses([(ONE, success(bare, ref, entry(8, ONE)))])
    assert merged.registry_objects == (bare, ref, entry(8, ONE))
    assert merged.status is Status.PARTIAL_SUCCESS
    (found,) = merged.errors
    assert found.error_code == v.XDS_MISSING_HOME_COMMUNITY_ID
    assert found.location == ONE.home_community_id.urn
    assert bare.entry_uuid in found.code_context and "urn:uuid:no-home" in found.code_context
    assert "Community 1" in found.code_context


def test_a_long_list_of_ids_without_home_is_cut_short() -> None:
    merged = merge_query_responses([(ONE, success(*(entry(n, None) for n in range(25))))])
    (found,) = merged.errors
    assert found.code_context.endswith("and 5 more")


def test_community_error_is_usable_alone() -> None:
    found = community_error(THREE, CommunityFailure("XDSRegistryBusy", ""))
    assert found == RegistryError(
        "XDSRegistryBusy",
        f"Community {THREE.home_community_id.urn} did not answer usefully",
        Severity.ERROR,
        THREE.home_community_id.urn,
    )


# --- ITI-39 ------------------------------------------------------------------------------------


def received(uid: str, home: Community | None, data: bytes = b"KOS") -> ReceivedDocument:
    response = DocumentResponse(
        repository_unique_id="1.3.6.1.4.1.21367.13.71.101",
        document_unique_id=uid,
        mime_type="application/dicom",
        document=data,
        home_community_id=None if home is None else home.home_community_id,
    )
    return ReceivedDocument(response, SpooledBody(len(data), data=data))


def test_retrieve_results_are_concatenated_and_owned() -> None:
    first = RetrieveResult(documents=[received("1.1", ONE), received("1.2", ONE)])
    second = RetrieveResult(documents=[received("2.1", TWO)])
    with merge_retrieve_results([(ONE, first), (TWO, second)]) as merged:
        assert merged.status is Status.SUCCESS
        assert [d.response.document_unique_id for d in merged.documents] == ["1.1", "1.2", "2.1"]
        assert [d.response.home_community_id for d in merged.documents] == [
            ONE.home_community_id,
            ONE.home_community_id,
            TWO.home_community_id,
        ]
        with merged.documents[2].open() as stream:
            assert stream.read() == b"KOS"
        response = merged.response()
        assert response.status is Status.SUCCESS
        assert len(response.document_responses) == 3
    with pytest.raises(ValueError):
        first.documents[0].open()
    with pytest.raises(ValueError):
        second.documents[0].open()


def test_a_missing_home_echo_is_filled_with_the_community_asked() -> None:
    result = RetrieveResult(documents=[received("1.1", None)])
    merged = merge_retrieve_results([(TWO, result)])
    assert merged.documents[0].response.home_community_id == TWO.home_community_id
    assert merged.documents[0].body is result.documents[0].body
    merged.close()


def test_retrieve_partner_errors_and_community_failures() -> None:
    partner = RegistryError(v.XDS_DOCUMENT_UNIQUE_ID_ERROR, "1.9: unknown")
    result = RetrieveResult(documents=[received("1.1", ONE)], errors=[partner])
    merged = merge_retrieve_results([(ONE, result), (TWO, PartnerUnavailable("refused"))])
    assert merged.status is Status.PARTIAL_SUCCESS
    assert [(e.error_code, e.location) for e in merged.errors] == [
        (v.XDS_DOCUMENT_UNIQUE_ID_ERROR, ONE.home_community_id.urn),
        (v.XDS_UNAVAILABLE_COMMUNITY, TWO.home_community_id.urn),
    ]
    assert merged.response().status is Status.PARTIAL_SUCCESS
    merged.close()


def test_retrieve_with_no_document_anywhere_is_failure() -> None:
    merged = merge_retrieve_results(
        [(ONE, PartnerTimeout("slow")), (TWO, CommunityFailure(None, "circuit open"))]
    )
    assert merged.status is Status.FAILURE
    assert merged.documents == () and merged.results == ()
    assert [e.location for e in merged.errors] == [
        ONE.home_community_id.urn,
        TWO.home_community_id.urn,
    ]


def test_empty_merge_is_success() -> None:
    assert merge_retrieve_results([]).status is Status.SUCCESS
    assert isinstance(merge_retrieve_results([]), MergedRetrieve)
