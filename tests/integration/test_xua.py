"""XUA [ITI-40] end to end over real HTTP: our PartnerClient with the assertion issuer as
``security``, against an imagebridge Responding Gateway whose dispatcher verifies the
assertion before the handler and whose handlers apply the access policy.

* a valid assertion: ITI-38 answered with the manifests;
* unsigned assertion / no security header: SOAP Fault with the wsse subcode;
* a purpose of use the endpoint does not honour, and an assertion carrying a
  consent policy not accepted here (NIST ``withauthzconsent``): in-band
  Failure with ``XDSRegistryError`` (ITI-38) or ``AE`` (ITI-55).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from imagebridge.actors.initiating.client import PartnerClients
from imagebridge.actors.responding.access import XuaGuard, enforce_access
from imagebridge.app import open_gateway
from imagebridge.config import Config, config_from_mapping
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.errors import SoapFaultReceived
from imagebridge.model.directory import Community, CommunityEndpoint
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import Status
from imagebridge.model.saml import ACP, Attribute, AttributeStatement, AttributeValue
from imagebridge.model.xcpd import (
    II,
    AcknowledgementType,
    Device,
    ParameterList,
    PatientDiscoveryQuery,
    PersonName,
    QueryByParameter,
    TimeInterval,
)
from imagebridge.model.xds_query import AdhocQueryRequest, FindDocumentsQuery
from imagebridge.security.policy import AccessPolicy
from imagebridge.security.saml_issuer import (
    AssertionIssuer,
    IssuerSettings,
    Principal,
    SigningKey,
    purpose_code,
    role_code,
)
from imagebridge.security.saml_verifier import AssertionVerifier, VerifierSettings
from imagebridge.security.xml_signature import TrustStore
from imagebridge.transactions import Transaction
from imagebridge.transport.server import soap_app
from imagebridge.wire import ns
from imagebridge.wire.saml import render_assertion
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xml import Element
from tests.http_server import running_server

pytestmark = pytest.mark.anyio

HOME = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.201")
US = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.202")
REPO = "1.3.6.1.4.1.21367.13.71.201.1"
ALICE = DEMO_PATIENTS[0]
ALICE_ID = PatientId(ALICE.id, "2.25.1")
RSA = trustme.KeyType.RSA
DOCTOR = Principal(
    subject_id="Dr Alice Example",
    organization="Example Imaging",
    organization_id=US.urn,
    role=role_code("112247003", "Medical doctor"),
    purpose_of_use=purpose_code("TREATMENT"),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp: Path) -> Config:
    archive = tmp / "archive"
    make_study(ALICE, archive / "alice-ct", modality="CT", instances=2, seed=1)
    raw = {
        "community": {"home_community_id": HOME.urn, "patient_id_authority": "2.25.1"},
        "store": {"database_url": f"sqlite:///{tmp / 'ib.db'}"},
        "repositories": [{"unique_id": REPO, "source": "folder", "path": str(archive)}],
    }
    return config_from_mapping(raw, {})


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=RSA)


@pytest.fixture
def issuer(ca: trustme.CA) -> AssertionIssuer:
    leaf = ca.issue_cert("ig.example.org", key_type=RSA)
    key = SigningKey.from_pem(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())
    return AssertionIssuer(key, IssuerSettings(home_community_id=US))


@pytest.fixture
async def responder(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[Community]:
    """Our Responding Gateway with XUA on; yields the community that points at it."""
    trust = TrustStore([x509.load_pem_x509_certificate(ca.cert_pem.bytes())])
    verifier = AssertionVerifier(trust, VerifierSettings())
    policy = AccessPolicy(purposes={Transaction.ITI_38: frozenset({"TREATMENT"})})
    async with open_gateway(_config(tmp_path)) as gateway:
        endpoints = enforce_access(gateway.endpoints, policy, HOME)
        app = soap_app(endpoints, verifier=XuaGuard(verifier))
        async with running_server(app) as base:
            yield Community(
                HOME,
                "imagebridge RG",
                (
                    CommunityEndpoint(Transaction.ITI_38, f"{base}/xca/query"),
                    CommunityEndpoint(Transaction.ITI_55, f"{base}/xcpd"),
                ),
            )


def _find() -> AdhocQueryRequest:
    return AdhocQueryRequest(
        query=FindDocumentsQuery(patient_id=ALICE_ID, status=(v.STATUS_APPROVED,)),
        home_community_id=HOME,
    )


async def test_valid_assertion_is_answered(responder: Community, issuer: AssertionIssuer) -> None:
    async with PartnerClients(security=issuer.headers(DOCTOR)) as clients:
        response = await clients.for_community(responder).find(_find())
    assert response.status is Status.SUCCESS
    assert len(response.document_entries) == 1


async def test_unsigned_assertion_is_a_fault(responder: Community, issuer: AssertionIssuer) -> None:
    def unsigned(transaction: Transaction, community: Community) -> Sequence[Element]:
        now = datetime.now(UTC)
        profile = issuer.profile_for(None)
        model = issuer.assertion_model(DOCTOR, community.url(transaction), now=now)
        return (issuer.security_for(render_assertion(model), model.id, now, profile),)

    async with PartnerClients(security=unsigned) as clients:
        with pytest.raises(SoapFaultReceived) as caught:
            await clients.for_community(responder).find(_find())
    assert caught.value.code == "Sender"
    assert caught.value.subcodes[-1] == ns.q(ns.WSSE, "FailedAuthentication")


async def test_missing_security_header_is_a_fault(responder: Community) -> None:
    async with PartnerClients() as clients:
        with pytest.raises(SoapFaultReceived) as caught:
            await clients.for_community(responder).find(_find())
    assert caught.value.subcodes[-1] == ns.q(ns.WSSE, "InvalidSecurity")


async def test_refused_purpose_is_an_in_band_error(
    responder: Community, issuer: AssertionIssuer
) -> None:
    payment = dataclasses.replace(DOCTOR, purpose_of_use=purpose_code("PAYMENT"))
    async with PartnerClients(security=issuer.headers(payment)) as clients:
        response = await clients.for_community(responder).find(_find())
    assert response.status is Status.FAILURE
    assert response.registry_objects == ()
    (error,) = response.errors
    assert error.error_code == v.XDS_REGISTRY_ERROR
    assert error.code_context.startswith("Access denied")
    assert error.location == HOME.urn


async def test_unaccepted_consent_policy_is_an_in_band_error(
    responder: Community, issuer: AssertionIssuer
) -> None:
    """NIST 12309_withauthzconsent: the Responding Gateway answers Failure."""

    def with_consent(transaction: Transaction, community: Community) -> Sequence[Element]:
        now = datetime.now(UTC)
        profile = issuer.profile_for(None)
        model = issuer.assertion_model(DOCTOR, community.url(transaction), now=now)
        acp = Attribute(ACP, (AttributeValue.string("urn:oid:1.2.3.9", None),))
        model = dataclasses.replace(
            model, attribute_statements=(*model.attribute_statements, AttributeStatement((acp,)))
        )
        signed = issuer.sign_assertion(model, profile)
        return (issuer.security_for(signed, model.id, now, profile),)

    async with PartnerClients(security=with_consent) as clients:
        response = await clients.for_community(responder).find(_find())
    assert response.status is Status.FAILURE
    assert [e.error_code for e in response.errors] == [v.XDS_REGISTRY_ERROR]


async def test_patient_discovery_refusal_is_ae(
    responder: Community, issuer: AssertionIssuer
) -> None:
    research = dataclasses.replace(DOCTOR, purpose_of_use=purpose_code("RESEARCH"))
    query = PatientDiscoveryQuery(
        message_id=II("2.25.9", "m1"),
        creation_time="20260101120000",
        sender=Device(II(US.oid), US),
        receiver=Device(II(HOME.oid), HOME),
        query_by_parameter=QueryByParameter(
            query_id=II("2.25.9", "q1"),
            parameters=ParameterList(
                living_subject_administrative_gender="F",
                living_subject_birth_time=TimeInterval("19700101"),
                living_subject_names=(PersonName(given=("Alice",), family=("Demo",)),),
            ),
        ),
    )
    async with PartnerClients(security=issuer.headers(research)) as clients:
        response = await clients.for_community(responder).discover(query)
    assert response.acknowledgement.type_code is AcknowledgementType.AE
    assert response.patients == ()
    codes = [c.code for d in response.detected_issues for c in d.issue_management]
    assert codes == ["AnswerNotAvailable"]
