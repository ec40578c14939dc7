"""Initiating Gateway and Initiating Imaging Gateway, the pull workflow of guide 10.1.1.

demographics → Cross Gateway Patient Discovery [ITI-55] to every community →
Cross Gateway Query [ITI-38] FindDocuments for KOS manifests with each matched
patient id → Cross Gateway Retrieve [ITI-39] of the manifests → KOS parse →
Cross Gateway Retrieve Imaging Document Set [RAD-75] to the community named by
each KOS entry's ``home``, with the manifest's Retrieve Location UIDs as
repositories.  Each phase fans out to the communities in parallel under one
deadline (:func:`~imagebridge.actors.initiating.fanout.fan_out`); every
community ends each phase with a status, and a partial result is always
returned.  The caller picks the studies to retrieve between :meth:`PullWorkflow.find_studies`
and :meth:`PullWorkflow.retrieve`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

from imagebridge.actors.initiating.breaker import CircuitBreaker
from imagebridge.actors.initiating.client import PartnerClient, PartnerClients, RetrieveResult
from imagebridge.actors.initiating.fanout import (
    fan_out,
)
from imagebridge.actors.initiating.locator import (
    follow_health_data_locators,
    soap_locator,
)
from imagebridge.actors.initiating.pull import (
    KOS_FORMAT,
    Demographics,
    DiscoveryReport,
    PatientMatch,
    PullSettings,
    RetrieveReport,
    StudiesReport,
    StudyOffer,
    StudyReceipt,
    discovery_query,
)
from imagebridge.dicom.manifest import imaging_document_locators, parse_manifest
from imagebridge.errors import ImageBridgeError
from imagebridge.model.directory import Community, DirectorySnapshot
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import RegistryError
from imagebridge.model.retrieve import (
    DocumentRequest,
    RetrieveDocumentSetRequest,
    imaging_request_for,
)
from imagebridge.model.xcpd import (
    MatchedPatient,
    PatientDiscoveryQuery,
    PatientDiscoveryResponse,
    QueryResponseCode,
)
from imagebridge.model.xds import AvailabilityStatus, DocumentEntry
from imagebridge.model.xds_query import AdhocQueryRequest, FindDocumentsQuery
from imagebridge.transactions import Transaction
from imagebridge.wire.spool import PartSink

log = logging.getLogger(__name__)


def _no_patients(response: PatientDiscoveryResponse) -> bool:
    return not response.patients


def _no_offers(offers: list[StudyOffer]) -> bool:
    return not offers


class PullWorkflow:
    """Find a patient's imaging studies in every partner community and pull the chosen ones."""

    def __init__(
        self,
        clients: PartnerClients,
        directory: DirectorySnapshot,
        settings: PullSettings,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], datetime] | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._clients = clients
        self._directory = directory
        self._settings = settings
        self._breaker = breaker
        self._clock = clock or (lambda: datetime.now(UTC))
        self._new_id = new_id or (lambda: uuid.uuid4().hex)

    def communities(self, only: Iterable[HomeCommunityId] = ()) -> tuple[Community, ...]:
        """The active communities answering ITI-55 (restricted to *only* when given)."""
        wanted = set(only)
        return tuple(
            c
            for c in self._directory.active()
            if c.url(Transaction.ITI_55) is not None
            and (not wanted or c.home_community_id in wanted)
        )

    # --- phase 1: ITI-55 ------------------------------------------------------------------

    def discovery_query(
        self, demographics: Demographics, receiver: HomeCommunityId
    ) -> PatientDiscoveryQuery:
        """The PRPA_IN201305UV02 for *demographics*, addressed to *receiver*."""
        return discovery_query(
            demographics,
            self._settings.home,
            receiver,
            message_root="2.25." + str(uuid.UUID(hex=self._new_id()).int),
            creation_time=self._clock().strftime("%Y%m%d%H%M%S"),
            authority=self._settings.patient_id_authority,
        )

    async def discover(
        self, demographics: Demographics, communities: Sequence[Community]
    ) -> DiscoveryReport:
        """Cross Gateway Patient Discovery [ITI-55], Initiating Gateway, to every community."""

        async def call(community: Community) -> PatientDiscoveryResponse:
            client = self._clients.for_community(community)
            query = self.discovery_query(demographics, community.home_community_id)
            response = await client.discover(query)
            _check_discovery_answer(response)
            return response

        result = await fan_out(
            communities,
            call,
            timeout=self._settings.deadline,
            is_no_match=_no_patients,
            max_concurrency=self._settings.max_concurrency,
            breaker=self._breaker,
        )
        report = DiscoveryReport(result)
        for outcome in result.outcomes:
            if outcome.value is not None:
                report.matches.extend(
                    PatientMatch(outcome.community, p) for p in outcome.value.patients
                )
        if any(m.health_data_locator for m in report.matches):
            await self._follow_locators(report)
        return report

    async def _follow_locators(self, report: DiscoveryReport) -> None:
        """Health Data Locator flows (guide 8.6.1): ask each flagged responder with ITI-56
        where the patient has data; each location we can query becomes a match."""
        located = await follow_health_data_locators(
            report.matches,
            self._directory,
            soap_locator(lambda c: self._clients.soap_for(c.tls)),
        )
        report.locators = located
        for target in located.targets:
            community = replace(
                target.community, endpoints=(target.query_endpoint, *target.community.endpoints)
            )
            patient = MatchedPatient(target.patient_id, target.community.home_community_id)
            report.matches.append(PatientMatch(community, patient, located_by=target.locator))

    # --- phase 2: ITI-38 + ITI-39 + KOS -----------------------------------------------------

    def _query_target(self, match: PatientMatch) -> Community:
        """The community to query for *match*: its own homeCommunityId's entry if we know it."""
        if match.located_by is not None:
            return match.community
        return self._directory.get(match.home) or match.community

    async def find_studies(self, matches: Sequence[PatientMatch]) -> StudiesReport:
        """Cross Gateway Query [ITI-38] for KOS manifests and Cross Gateway Retrieve [ITI-39]
        of them, Initiating Gateway, per community of the matches."""
        by_community: dict[HomeCommunityId, tuple[Community, list[PatientId]]] = {}
        problems: list[str] = []
        for match in matches:
            target = self._query_target(match)
            if match.health_data_locator and target.url(Transaction.ITI_38) is None:
                # A record locator that holds no documents: its answer was the locations.
                problems.append(f"{target.name}: Health Data Locator only (no ITI-38 endpoint)")
                continue
            entry = by_community.setdefault(target.home_community_id, (target, []))
            if match.patient.patient_id not in entry[1]:
                entry[1].append(match.patient.patient_id)

        async def call(community: Community) -> list[StudyOffer]:
            offers: list[StudyOffer] = []
            for patient_id in by_community[community.home_community_id][1]:
                offers.extend(await self._studies_of(community, patient_id, problems))
            return offers

        result = await fan_out(
            [c for c, _ in by_community.values()],
            call,
            timeout=self._settings.deadline,
            is_no_match=_no_offers,
            max_concurrency=self._settings.max_concurrency,
            breaker=self._breaker,
        )
        report = StudiesReport(result, problems=problems)
        for outcome in result.outcomes:
            if outcome.value:
                report.offers.extend(outcome.value)
        return report

    def kos_query(self, patient_id: PatientId, home: HomeCommunityId) -> AdhocQueryRequest:
        """FindDocuments for the patient's approved entries (KOS only unless configured)."""
        return AdhocQueryRequest(
            query=FindDocumentsQuery(
                patient_id=patient_id,
                status=(AvailabilityStatus.APPROVED.value,),
                format_code=(KOS_FORMAT,) if self._settings.query_by_format_code else (),
            ),
            home_community_id=home,
        )

    async def _studies_of(
        self, community: Community, patient_id: PatientId, problems: list[str]
    ) -> list[StudyOffer]:
        client = self._clients.for_community(community)
        answer = await client.find(self.kos_query(patient_id, community.home_community_id))
        for error in answer.errors:
            problems.append(f"{community.name}: ITI-38 {error.error_code}: {error.code_context}")
        entries = [
            o for o in answer.registry_objects if isinstance(o, DocumentEntry) and _is_kos(o)
        ]
        if not entries:
            if answer.errors and not answer.registry_objects:
                raise _PartnerErrors(answer.errors)
            return []
        requests = tuple(
            DocumentRequest(
                e.repository_unique_id or "",
                e.unique_id,
                e.home or community.home_community_id,
            )
            for e in entries
            if e.repository_unique_id
        )
        if not requests:
            problems.append(f"{community.name}: KOS entries without repositoryUniqueId")
            return []
        offers: list[StudyOffer] = []
        with await client.retrieve(RetrieveDocumentSetRequest(requests)) as result:
            for error in result.errors:
                problems.append(
                    f"{community.name}: ITI-39 {error.error_code}: {error.code_context}"
                )
            by_uid = {e.unique_id: e for e in entries}
            for document in result.documents:
                entry = by_uid.get(document.response.document_unique_id)
                if entry is None:
                    continue
                try:
                    with document.open() as stream:
                        manifest = parse_manifest(stream)
                except ImageBridgeError as exc:
                    problems.append(
                        f"{community.name}: manifest {entry.unique_id} unusable: {exc.message}"
                    )
                    continue
                offers.append(
                    StudyOffer(
                        community, patient_id, entry, manifest, imaging_document_locators(manifest)
                    )
                )
        return offers

    # --- phase 3: RAD-75 ---------------------------------------------------------------------

    def imaging_community(self, offer: StudyOffer) -> Community | None:
        """The community to send RAD-75 for *offer*: the KOS entry's ``home`` in the directory."""
        found = self._directory.get(offer.imaging_home)
        if found is None and offer.imaging_home == offer.community.home_community_id:
            found = offer.community
        if found is None or found.url(Transaction.RAD_75) is None:
            return None
        return found

    async def retrieve(
        self,
        offers: Sequence[StudyOffer],
        sink: Callable[[Community, StudyOffer], PartSink] | None = None,
    ) -> RetrieveReport:
        """Cross Gateway Retrieve Imaging Document Set [RAD-75], Initiating Imaging Gateway:
        one fan-out over the imaging communities of *offers*, one study after the other
        within a community.

        Each reply's parts go, as they arrive, to ``sink(community, study)`` (one
        sink per exchange; None: spool to the temporary directory).  A study that
        fails does not stop the community's next one; a community all of whose
        studies fail ends with that failure as its status.
        """
        groups: dict[HomeCommunityId, tuple[Community, list[StudyOffer]]] = {}
        unroutable: list[tuple[StudyOffer, str]] = []
        for offer in offers:
            target = self.imaging_community(offer)
            if target is None:
                unroutable.append(
                    (offer, f"community {offer.imaging_home.oid} has no known RAD-75 endpoint")
                )
                continue
            groups.setdefault(target.home_community_id, (target, []))[1].append(offer)

        async def call(community: Community) -> list[StudyReceipt]:
            client = self._clients.for_community(community)
            receipts: list[StudyReceipt] = []
            try:
                for offer in groups[community.home_community_id][1]:
                    receipts.append(await self._retrieve_study(client, community, offer, sink))
            except BaseException:
                for receipt in receipts:
                    receipt.result.close()
                raise
            first = receipts[0].failure if receipts else None
            if first is not None and all(r.failure is not None for r in receipts):
                raise first
            return receipts

        outcome = await fan_out(
            [c for c, _ in groups.values()],
            call,
            timeout=self._settings.retrieve_deadline,
            max_concurrency=self._settings.max_concurrency,
            breaker=self._breaker,
        )
        return RetrieveReport(outcome, unroutable)

    async def _retrieve_study(
        self,
        client: PartnerClient,
        community: Community,
        offer: StudyOffer,
        sink: Callable[[Community, StudyOffer], PartSink] | None,
    ) -> StudyReceipt:
        request = imaging_request_for(
            offer.locators, offer.imaging_home, self._settings.transfer_syntaxes
        )
        try:
            result = await client.retrieve_images(
                request, None if sink is None else partial(sink, community, offer)
            )
        except ImageBridgeError as exc:
            log.warning("RAD-75 of one study from %s failed: %s", community.name, exc)
            return StudyReceipt(community, offer, RetrieveResult(), exc)
        return StudyReceipt(community, offer, result)


def _is_kos(entry: DocumentEntry) -> bool:
    if entry.format_code is not None:
        return entry.format_code.code == KOS_FORMAT.code
    return entry.mime_type.lower() == "application/dicom"


class _PartnerErrors(ImageBridgeError):
    """A community answered only with RegistryErrors (the first one is quoted)."""

    xds_error_code = "XDSRegistryError"

    def __init__(self, errors: Sequence[RegistryError]) -> None:
        first = errors[0]
        super().__init__(f"{first.error_code}: {first.code_context}")
        self.partner_errors = tuple(errors)


class DiscoveryRefused(ImageBridgeError):
    """An ITI-55 answer that reports an application error (AE) instead of a result."""

    xds_error_code = "XDSRegistryError"


def _check_discovery_answer(response: PatientDiscoveryResponse) -> None:
    code = response.query_ack.query_response_code
    if code in (QueryResponseCode.OK, QueryResponseCode.NF):
        return
    issue = next((i for i in response.detected_issues), None)
    detail = ""
    if issue is not None:
        detail = ", ".join(c.code for c in issue.issue_management + issue.action_required)
    raise DiscoveryRefused(f"ITI-55 answered {code.value}" + (f" ({detail})" if detail else ""))
