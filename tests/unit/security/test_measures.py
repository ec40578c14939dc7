"""Performance measures: what each transaction adds (studies and documents apart), the
adding UPSERT on SQLite (and its PostgreSQL form), flushing, and the Prometheus text."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql

from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.outcome import RegistryError, Status
from imagebridge.model.xds import Code, DocumentEntry
from imagebridge.model.xds_query import AdhocQueryResponse
from imagebridge.security.event_facts import DecodedObservers, EventFacts, Outcome, facts_of
from imagebridge.security.measures import (
    Measures,
    counted,
    metrics_route,
    partner_of,
    render_prometheus,
)
from imagebridge.store import Store
from imagebridge.store.counters import (
    CounterKey,
    CounterRow,
    CounterValues,
    TransactionCounters,
    upsert_statement,
)
from imagebridge.transactions import Transaction
from imagebridge.transport.events import Decoded, Role, TransactionEvent
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    render_adhoc_query_response,
)
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
)
from tests.unit.security.test_audit_events import (
    PARTNER,
    _imaging,
    _iti38_request,
    _iti39,
    event,
)

pytestmark = pytest.mark.anyio

MARCH = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store.open(database_url)
    yield s
    s.close()


def bare(transaction: Transaction, role: Role, **changes: object) -> TransactionEvent:
    base = TransactionEvent(
        transaction=transaction,
        role=role,
        started=MARCH,
        elapsed=0.1,
        peer="198.51.100.4",
        request=None,
        reply=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_imaging_retrieve_counts_instances_and_studies_separately() -> None:
    request, reply = _imaging()
    e = event(Transaction.RAD_75, Role.INITIATOR, request, reply, elapsed=1.5)
    key, values = counted(e, facts_of(e))
    assert key == CounterKey("2026-03", PARTNER.oid, "RAD-75", "initiator")
    assert values == CounterValues(1, 0, 1500.0, 1, 2)  # two instances, both of study A


def test_iti39_counts_kos_documents_as_studies() -> None:
    request, reply = _iti39()
    e = event(Transaction.ITI_39, Role.RESPONDER, request, reply)
    key, values = counted(e, facts_of(e))
    # a responder's partner is the caller's XUA homeCommunityId
    assert key.partner == "1.2.3"
    assert (values.documents, values.studies, values.errors) == (1, 1, 0)


def test_failures_count_as_errors_and_partner_falls_back_to_the_address() -> None:
    e = bare(Transaction.ITI_55, Role.RESPONDER, error="Receiver")
    key, values = counted(e, facts_of(e))
    assert key.partner == "198.51.100.4"
    assert (values.requests, values.errors) == (1, 1)
    assert partner_of(bare(Transaction.ITI_38, Role.INITIATOR, partner=PARTNER), facts_of(e)) == (
        PARTNER.oid
    )


def test_month_is_utc() -> None:
    local = datetime(2026, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))  # 23:00 UTC, March
    e = bare(Transaction.ITI_38, Role.INITIATOR, started=local, partner=PARTNER)
    assert counted(e, facts_of(e))[0].month == "2026-03"


async def test_flush_adds_up_in_the_store(store: Store) -> None:
    counters = TransactionCounters(store.engine)
    measures = Measures(counters)
    decoded = DecodedObservers([measures])
    for elapsed in (0.1, 0.3):
        decoded.observe(bare(Transaction.ITI_55, Role.INITIATOR, partner=PARTNER, elapsed=elapsed))
    measures.observe(bare(Transaction.ITI_55, Role.INITIATOR, partner=PARTNER, error="Timeout"))
    await measures.flush()
    measures.observe(bare(Transaction.ITI_55, Role.INITIATOR, partner=PARTNER, elapsed=0.2))
    # unflushed counts are part of the totals already, and nothing is counted twice
    [total] = await measures.totals()
    assert (total.values.requests, total.values.errors) == (4, 1)
    await measures.flush()
    await measures.flush()  # nothing pending: no change
    [row] = counters.month("2026-03")
    assert row.key == CounterKey("2026-03", PARTNER.oid, "ITI-55", "initiator")
    assert (row.values.requests, row.values.errors) == (4, 1)
    assert row.values.latency_ms_total == pytest.approx(700.0)
    assert row.values.mean_latency_ms == pytest.approx(175.0)
    assert counters.month("2026-04") == []


def test_upsert_is_an_adding_on_conflict_for_postgresql_too() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(upsert_statement("postgresql").compile(dialect=dialect))
    assert "ON CONFLICT (month, partner, transaction, role) DO UPDATE SET" in sql
    assert "requests = (transaction_counters.requests + excluded.requests)" in sql
    assert "documents = (transaction_counters.documents + excluded.documents)" in sql


def test_prometheus_text() -> None:
    rows = [
        CounterRow(
            CounterKey("", 'odd"\\partner', "RAD-75", "initiator"),
            CounterValues(3, 1, 1500.0, 2, 40),
        )
    ]
    text = render_prometheus(rows)
    labels = '{partner="odd\\"\\\\partner",transaction="RAD-75",role="initiator"}'
    assert f"imagebridge_transactions_total{labels} 3\n" in text
    assert f"imagebridge_transaction_errors_total{labels} 1\n" in text
    assert f"imagebridge_studies_returned_total{labels} 2\n" in text
    assert f"imagebridge_documents_returned_total{labels} 40\n" in text
    assert f"imagebridge_transaction_duration_seconds_sum{labels} 1.5\n" in text
    assert f"imagebridge_transaction_duration_seconds_count{labels} 3\n" in text
    assert "# TYPE imagebridge_transactions_total counter\n" in text
    assert "# TYPE imagebridge_transaction_duration_seconds summary\n" in text


def test_metrics_route_is_a_get_route(store: Store) -> None:
    route = metrics_route(Measures(TransactionCounters(store.engine)))
    assert route.path == "/metrics"
    assert route.methods is not None and "GET" in route.methods


def test_undecoded_event_facts_default() -> None:
    assert EventFacts(outcome=Outcome.SUCCESS).documents_returned == 0
    assert HomeCommunityId("1.2").oid == "1.2"


def test_facts_from_the_responders_models_equal_the_decoded_payloads() -> None:
    """A responder hands its models over (no second parse); the facts must not change."""
    kos = DocumentEntry(
        entry_uuid="urn:uuid:0b9e5b1e-0a6f-4f39-8a55-2e0b8b2a0002",
        unique_id="1.2.3.4.9",
        mime_type=v.MIME_DICOM,
        format_code=Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME),
    )
    reply = AdhocQueryResponse(
        status=Status.PARTIAL_SUCCESS,
        registry_objects=(kos,),
        errors=(RegistryError("XDSRegistryBusy", "one source did not answer"),),
    )
    request = _iti38_request()
    cases = [
        (Transaction.ITI_38, request, render_adhoc_query_response(reply)),
        (Transaction.ITI_39, *_iti39()),
    ]
    parsers = {
        Transaction.ITI_38: (parse_adhoc_query_request, parse_adhoc_query_response),
        Transaction.ITI_39: (
            parse_retrieve_document_set_request,
            parse_retrieve_document_set_response,
        ),
    }
    for transaction, request_element, reply_element in cases:
        plain = event(transaction, Role.RESPONDER, request_element, reply_element)
        parse_request, parse_reply = parsers[transaction]
        known = Decoded(parse_request(request_element), parse_reply(reply_element))
        with_models = dataclasses.replace(plain, decoded=known)
        assert facts_of(with_models) == facts_of(plain), transaction
        # a model of the wrong kind is ignored, never trusted
        wrong = dataclasses.replace(plain, decoded=Decoded(object(), object()))
        assert facts_of(wrong) == facts_of(plain), transaction
