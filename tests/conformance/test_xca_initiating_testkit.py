"""Cross Gateway Query [ITI-38] and Cross Gateway Retrieve [ITI-39], Initiating Gateway: NIST
XDS Toolkit tests 15808, 15809, 15810 and 15814 replayed where they apply.

imagebridge's initiating side is a workflow, not an ITI-18/ITI-43 proxy for
local XDS consumers, so the toolkit's messages are used like this: each
section's ``query.xml`` (ITI-18) or ``retrieve.xml`` (ITI-43) is filled in as
the toolkit would and decoded with our codecs; from it the test builds what an
Initiating Gateway sends (one ITI-38 per community with ``AdhocQuery/@home`` =
that community; queries that already name a ``home``, and retrieve
DocumentRequests, go only to the community they name) and sends it with
:class:`~imagebridge.actors.initiating.client.PartnerClient` over plain HTTP
to real imagebridge Responding Gateways (``create_app`` under uvicorn on
loopback), all communities at once.  The answers are merged by
:mod:`imagebridge.actors.initiating.merge`, the merged result is encoded with
our codecs and validated against the official schemas, and the testplan
checks about what the IG returns are applied to it: ``ExpectedStatus``, the
``Assert`` XPaths over a rebuilt toolkit log (ExtrinsicObject counts), every
``Report`` (home, uniqueId, repositoryUniqueId, mimeType, count, and the
HomeCommunityId/RepositoryUniqueId/DocumentUniqueId/mimeType of retrieved
documents) and every ``NullTransaction`` comparison built on them.  Sections
that use another section's reports run it first.

Environment.  The toolkit's XCA IG tests read the communities from its
configuration; the only community ids the toolkit fixes for an initiating-side
test are those of its imaging environment (README, IIG table), used here:
community 1 = ``urn:oid:1.3.6.1.4.1.21367.13.70.101`` (repository
``1.3.6.1.4.1.21367.13.71.101``), community 2 = ``urn:oid:...13.70.102``
(``...13.71.102``).  Patients live in the toolkit's affinity domain
``1.3.6.1.4.1.21367.2005.13.20.1000``, which both RGs are configured with
(``patient_id_authority`` and the synthetic studies' issuer).  The data loader
15807 (ITI-41 to the toolkit's RG simulators) is replaced by folder archives
of synthetic studies, one KOS per study, as 15807 places its documents:

* ``onedoc1`` one study of patient IG15807-ONEDOC1 in community 1;
* ``twodoc`` two studies of IG15807-TWODOC in community 1;
* ``onedoc2`` / ``onedoc3`` one study of IG15807-BOTH in community 1 / in community 2;
* ``registryError`` one study of IG15807-REGERR in community 2, while
  community 1 answers that patient's query with ``XDSRegistryError``.

The ids 15807 would report (AssignedPatientId, AssignedUuids, ``$uid$``,
``$mimeType$``, ``$testdata_home$``, ``$testdata_repid$``) are read from each
RG's own FindDocuments answer.  For 15814, community 1 is a second imagebridge
responder with the same homeCommunityId whose only repository is a DICOMweb
archive on a closed loopback port: its FindDocuments takes the real
"archive unreachable" path of ``actors/responding/query.py`` and answers
Failure with ``XDSRegistryError`` (short of a PACS that fails for one
patient's query, a responder has no per-patient error path).  The IG consults the two RGs of
community 1 and 2 for 15808-15810, and the failing one plus community 2 for 15814.

Deviations from NIST's data (besides the stand-ins above):

* documents are KOS manifests, ``mimeType`` ``application/dicom``, not
  15807's ``text/plain`` files: ``ExpectedMimeType`` (text/plain) and
  ``ReferenceDocument`` do not apply; instead each retrieved document must
  carry ``application/dicom``, have the size and SHA-1 of its metadata and be
  the KOS whose SOP Instance UID is the requested DocumentUniqueId;
* the RG that does not know a patient answers Failure/``XDSUnknownPatientId``
  (imagebridge's policy); the IG drops that error (ITI TF-2 rule, spec notes
  section 6), so 15808's Success holds although community 2 is asked too;
* 15810's ``MimeType1``-``MimeType3`` steps compare the homes (NIST's plan
  reuses the ``$home1$``/``$home2$`` reports) and 15809's "Verify mimeType
  for Document 2" compares with 15808/SingleDocumentFindDocuments; both are
  applied as written, and the mimeTypes are checked directly as well.

Not applicable (the ITI-18/ITI-43 side of an IG, which imagebridge does not have):

* the Document Consumer's SOAP exchange with the IG (ITI-18/ITI-43 endpoint,
  WS-Addressing actions, the envelope and request schema checks the toolkit
  runs on that exchange): the requests are decoded, not received;
* ``Rule``/``Transaction`` labels (IGQ, XCQ), and the ``$patientid$`` report of
  the request, which no assertion uses;
* the XUA variants (``15808_*``, ``15809_*``), outside these four tests;
* 15814's manual check (XDSMissingHomeCommunityId context names the gateway
  and elements) is not part of the testplan; ``tests/unit/actors/initiating/
  test_merge.py`` covers it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from imagebridge.actors.initiating.client import PartnerClient, PartnerClients
from imagebridge.actors.initiating.merge import merge_query_responses, merge_retrieve_results
from imagebridge.app import create_app
from imagebridge.config import config_from_mapping
from imagebridge.dicom.manifest import parse_manifest
from imagebridge.dicom.synthetic import make_study
from imagebridge.model.directory import Community, CommunityEndpoint, PartnerLimits, Timeouts
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator
from imagebridge.model.outcome import RegistryResponse, Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
)
from imagebridge.model.xds import DocumentEntry
from imagebridge.model.xds_query import AdhocQueryRequest, FindDocumentsQuery
from imagebridge.transactions import Transaction
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    render_adhoc_query_response,
)
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    render_retrieve_document_set_response,
)
from imagebridge.wire.xml import Element, parse_xml
from tests.conformance.testkit_replay import (
    NullStep,
    Step,
    ToolkitLog,
    fill,
    null_assert_holds,
    read_null_steps,
    read_steps,
    report_value,
    response_status,
    sections,
    token_key,
)
from tests.conformance_data import assert_valid
from tests.http_server import running_server

pytestmark = [pytest.mark.anyio, pytest.mark.conformance]

T = TypeVar("T")
A = TypeVar("A")
Key = tuple[str, str, str, str]

AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
HOMES = {1: "1.3.6.1.4.1.21367.13.70.101", 2: "1.3.6.1.4.1.21367.13.70.102"}
REPOSITORIES = {1: "1.3.6.1.4.1.21367.13.71.101", 2: "1.3.6.1.4.1.21367.13.71.102"}
LOADER = "15807"


@dataclass(frozen=True, slots=True)
class Load:
    """One 15807 section's stand-in: a patient's studies in one community."""

    community: int
    patient: str
    studies: tuple[tuple[str, int], ...]  # (modality, seed) per study, one KOS each


LOADS = {
    "onedoc1": Load(1, "IG15807-ONEDOC1", (("CR", 158071),)),
    "twodoc": Load(1, "IG15807-TWODOC", (("CR", 158072), ("CT", 158073))),
    "onedoc2": Load(1, "IG15807-BOTH", (("MR", 158074),)),
    "onedoc3": Load(2, "IG15807-BOTH", (("CT", 158075),)),
    "registryError": Load(2, "IG15807-REGERR", (("CR", 158076),)),
}
SECTIONS = [
    ("15808", "SingleDocumentFindDocuments"),
    ("15808", "SingleDocumentGetDocuments"),
    ("15808", "TwoDocumentsFindDocuments"),
    ("15809", "OneDocRetrieve"),
    ("15809", "TwoDocRetrieve"),
    ("15810", "TwoRGFindDocuments"),
    ("15810", "RG1Retrieve"),
    ("15810", "RG2Retrieve"),
    ("15814", "XDSRegistryError"),
]
FAILING_COMMUNITY_1 = {"15814"}  # tests whose community 1 answers XDSRegistryError


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _patient(name: str) -> DicomPatient:
    return DicomPatient(
        f"TESTKIT^{name}", name, HierarchicDesignator("", AUTHORITY, "ISO"), "19700101", "O"
    )


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _app(tmp: Path, name: str, community: int, repository: Mapping[str, object]) -> object:
    raw = {
        "community": {
            "home_community_id": f"urn:oid:{HOMES[community]}",
            "name": f"Community {community}",
            "patient_id_authority": AUTHORITY,
        },
        "store": {"database_url": f"sqlite:///{tmp / f'{name}.db'}"},
        "repositories": [{"unique_id": REPOSITORIES[community], **repository}],
    }
    return create_app(config_from_mapping(raw, {}))


def _community(number: int, base: str, note: str = "") -> Community:
    return Community(
        HomeCommunityId(HOMES[number]),
        f"Community {number}{note}",
        endpoints=(
            CommunityEndpoint(Transaction.ITI_38, f"{base}/xca/query"),
            CommunityEndpoint(Transaction.ITI_39, f"{base}/xca/retrieve"),
        ),
        limits=PartnerLimits(timeouts=Timeouts(connect=5, read=30, overall=60)),
    )


async def _each(
    targets: Sequence[tuple[Community, T]],
    call: Callable[[Community, T], Awaitable[A]],
) -> list[tuple[Community, A | Exception]]:
    """Call every community at once; its answer or its exception, in *targets* order."""
    answers: list[A | Exception] = [Exception("not called")] * len(targets)

    async def one(index: int, community: Community, argument: T) -> None:
        try:
            answers[index] = await call(community, argument)
        except Exception as exc:
            answers[index] = exc

    async with anyio.create_task_group() as tasks:
        for index, (community, argument) in enumerate(targets):
            tasks.start_soon(one, index, community, argument)
    return [(c, a) for (c, _), a in zip(targets, answers, strict=True)]


@dataclass
class InitiatingGateway:
    """The IG under test: our client and merge in front of real RGs, plus what 15807 reported."""

    testkit: Path
    clients: PartnerClients
    communities: tuple[Community, Community]
    failing: tuple[Community, Community]  # community 1 replaced by the failing responder
    reports: dict[Key, str] = field(default_factory=dict)
    entries: dict[str, tuple[DocumentEntry, Community]] = field(default_factory=dict)
    done: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    payloads: dict[tuple[str, str], Element] = field(default_factory=dict)  # (test, step id)

    def client(self, community: Community) -> PartnerClient:
        return self.clients.for_community(community)

    async def load(self) -> None:
        """15807's stand-in: list each loaded patient's KOS in its RG, record the ids."""
        for section, load in LOADS.items():
            community = self.communities[load.community - 1]
            request = AdhocQueryRequest(
                query=FindDocumentsQuery(
                    patient_id=PatientId(load.patient, AUTHORITY), status=(v.STATUS_APPROVED,)
                ),
                home_community_id=community.home_community_id,
            )
            response = await self.client(community).find(request)
            assert response.status is Status.SUCCESS, response.errors
            found = response.document_entries
            assert len(found) == len(load.studies), (section, found)
            at = (LOADER, section)
            self.reports[(*at, "AssignedPatientId", "SubmissionSet01")] = (
                f"{load.patient}^^^&{AUTHORITY}&ISO"
            )
            for number, entry in enumerate(found, 1):
                self.reports[(*at, "AssignedUuids", f"Document{number:02d}")] = entry.entry_uuid
                self.entries[entry.unique_id] = (entry, community)
            first = found[0]
            self.reports[(*at, "Report", "$uid$")] = first.unique_id
            self.reports[(*at, "Report", "$mimeType$")] = first.mime_type
            self.reports[(*at, "Report", "$testdata_home$")] = community.home_community_id.urn
            self.reports[(*at, "Report", "$testdata_repid$")] = str(first.repository_unique_id)

    # --- what the IG does ---------------------------------------------------------------------

    async def query(self, element: Element, communities: Sequence[Community]) -> Element:
        """ITI-18 in: one ITI-38 per community (or to the community named by @home), merged."""
        request = parse_adhoc_query_request(element)
        home = request.home_community_id
        targets = [
            (c, dataclasses.replace(request, home_community_id=c.home_community_id))
            for c in communities
            if home is None or c.home_community_id == home
        ]
        assert targets, f"no community has home {home}"
        answers = await _each(targets, lambda c, r: self.client(c).find(r))
        merged = merge_query_responses(answers)
        payload = render_adhoc_query_response(merged)
        assert_valid("query", payload)
        return payload

    async def retrieve(self, element: Element, communities: Sequence[Community]) -> Element:
        """ITI-43 in: one ITI-39 per community named by the DocumentRequests, merged."""
        request = parse_retrieve_document_set_request(element)
        by_home = {c.home_community_id: c for c in communities}
        wanted: dict[HomeCommunityId, list[DocumentRequest]] = {}
        for document in request.document_requests:
            assert document.home_community_id in by_home, document
            wanted.setdefault(document.home_community_id, []).append(document)
        targets = [
            (by_home[home], RetrieveDocumentSetRequest(tuple(documents)))
            for home, documents in wanted.items()
        ]
        answers = await _each(targets, lambda c, r: self.client(c).retrieve(r))
        with merge_retrieve_results(answers) as merged:
            inline = [self._checked_document(d.response, d.open().read()) for d in merged.documents]
            assert len(inline) == len(request.document_requests), merged.errors
            response = RetrieveDocumentSetResponse(
                RegistryResponse(merged.status, merged.errors), tuple(inline)
            )
        payload = render_retrieve_document_set_response(response)
        assert_valid("xds", payload)
        return payload

    def _checked_document(self, document: DocumentResponse, data: bytes) -> DocumentResponse:
        """In place of ExpectedMimeType/ReferenceDocument: the KOS its metadata describes."""
        entry, community = self.entries[document.document_unique_id]
        assert document.home_community_id == community.home_community_id
        assert document.repository_unique_id == entry.repository_unique_id
        assert document.mime_type == entry.mime_type == "application/dicom"
        assert len(data) == entry.size
        assert hashlib.sha1(data).hexdigest() == entry.hash
        assert parse_manifest(data).sop_instance_uid == document.document_unique_id
        return dataclasses.replace(document, document=data)

    def _check_homes(self, payload: Element) -> None:
        """Every returned DocumentEntry: home of the community holding it, KOS mimeType."""
        for entry in parse_adhoc_query_response(payload).document_entries:
            _, community = self.entries[entry.unique_id]
            assert entry.home == community.home_community_id, entry.unique_id
            assert entry.mime_type == "application/dicom"

    # --- the replay ---------------------------------------------------------------------------

    async def run(self, test: str, section: str) -> list[str]:
        """Replay one section (after the sections whose reports it uses); returns its log lines."""
        if (test, section) in self.done:
            return self.done[(test, section)]
        test_dir = self.testkit / test
        steps, nulls = read_steps(test_dir, section), read_null_steps(test_dir, section)
        for ref in [r for s in steps for r in s.tokens] + [r for n in nulls for r in n.tokens]:
            needed = token_key(ref, test, section)[:2]
            if needed[0] != LOADER and needed != (test, section):
                await self.run(*needed)
        communities = self.failing if test in FAILING_COMMUNITY_1 else self.communities
        lines = [f"{test}/{section} via {', '.join(c.name for c in communities)}"]
        for step in steps:
            lines += await self._step(step, communities)
        for null in nulls:
            lines += self._null_step(null)
        self.done[(test, section)] = lines
        return lines

    async def _step(self, step: Step, communities: Sequence[Community]) -> list[str]:
        values = {
            r.symbol: self.reports[token_key(r, step.test, step.section)] for r in step.tokens
        }
        request = parse_xml(fill(step.metadata_file.read_bytes(), values))
        if step.transaction == "IGQTransaction":
            payload = await self.query(request, communities)
            self._check_homes(payload)
        else:
            assert step.transaction == "IGRTransaction", step.transaction
            payload = await self.retrieve(request, communities)
        self.payloads[(step.test, step.id)] = payload
        status = response_status(payload)
        assert status == step.expected_status, f"{step.id}: {status}"
        lines = [f"  {step.id}: ExpectedStatus {step.expected_status}: ok"]
        log = ToolkitLog()
        log.add(step, payload)
        for report in step.reports:
            source = payload if report.section == "Result" else request
            value = report_value(source, report.xpath)
            self.reports[(step.test, step.section, "Report", report.name)] = value
            lines.append(f"    Report {report.name} = {value}")
        for assertion in step.asserts:
            assert log.evaluate(assertion, values) is True, (step.id, assertion)
            lines.append(f"  Assert {assertion.id}: ok")
        if step.expected_mime_type is not None:
            lines.append(
                f"  ExpectedMimeType {step.expected_mime_type}, ReferenceDocument: "
                "n/a (KOS application/dicom; size, SHA-1 and SOP Instance UID checked)"
            )
        return lines

    def _null_step(self, null: NullStep) -> list[str]:
        values = {
            r.symbol: self.reports[token_key(r, null.test, null.section)] for r in null.tokens
        }
        for assertion in null.asserts:
            assert null_assert_holds(assertion, values), (null.id, assertion.xpath, values)
        return [f"  {null.id}: {len(null.asserts)} assert(s) ok"]


@pytest.fixture(scope="module")
async def gateway(
    conformance_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InitiatingGateway]:
    tmp = tmp_path_factory.mktemp("xca-ig")
    for section, load in LOADS.items():
        for number, (modality, seed) in enumerate(load.studies, 1):
            folder = tmp / f"archive{load.community}" / f"{section}-{number}"
            make_study(_patient(load.patient), folder, modality=modality, seed=seed)
    dead = {"source": "dicomweb", "url": f"http://127.0.0.1:{_closed_port()}/dicom-web"}
    async with (
        running_server(
            _app(tmp, "rg1", 1, {"source": "folder", "path": str(tmp / "archive1")})
        ) as rg1,
        running_server(
            _app(tmp, "rg2", 2, {"source": "folder", "path": str(tmp / "archive2")})
        ) as rg2,
        running_server(_app(tmp, "rg1-down", 1, dead)) as rg1_down,
        PartnerClients() as clients,
    ):
        two = _community(2, rg2)
        ig = InitiatingGateway(
            conformance_dir / "nist-testkit",
            clients,
            (_community(1, rg1), two),
            (_community(1, rg1_down, " (archive down)"), two),
        )
        await ig.load()
        yield ig


def test_section_lists_match_the_testkit(conformance_dir: Path) -> None:
    """Guard: every section of the four tests is replayed; every 15807 section has a stand-in."""
    testkit = conformance_dir / "nist-testkit"
    tests: Iterable[str] = dict.fromkeys(t for t, _ in SECTIONS)
    assert [(t, s) for t in tests for s in sections(testkit / t)] == SECTIONS
    assert sorted(sections(testkit / LOADER)) == sorted(LOADS)


@pytest.mark.parametrize(("test", "section"), SECTIONS, ids=[f"{t}/{s}" for t, s in SECTIONS])
async def test_section(test: str, section: str, gateway: InitiatingGateway) -> None:
    for line in await gateway.run(test, section):
        print(line)


async def test_15814_passes_community_1s_error_with_community_2s_entry(
    gateway: InitiatingGateway,
) -> None:
    """15814's readme: the IG returns community 1's XDSRegistryError and community 2's entry."""
    await gateway.run("15814", "XDSRegistryError")
    merged = parse_adhoc_query_response(gateway.payloads[("15814", "finddocs")])
    assert merged.status is Status.PARTIAL_SUCCESS
    (entry,) = merged.document_entries
    assert entry.home == gateway.failing[1].home_community_id
    (error,) = merged.errors
    assert error.error_code == v.XDS_REGISTRY_ERROR
    assert error.location == gateway.failing[0].home_community_id.urn
