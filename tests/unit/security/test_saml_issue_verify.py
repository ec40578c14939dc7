"""XUA [ITI-40]: assertions issued by us, verified by us; NIST XUA variants, attacks, policy.

The NIST toolkit's XUA variants of tests 12309/12312/15808/15809 get their
assertion from the Gazelle STS; here each variant is built by hand with the
issuer's model and a real signature (signxml), and checked for the outcome
the conformance README lists: a SOAP Fault (with its wsse subcode) for the
bad-assertion cases, an in-band Failure for ``withauthzconsent`` on a
Responding Gateway.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from lxml import etree
from signxml.algorithms import SignatureConstructionMethod
from signxml.signer import SignatureReference

from imagebridge.actors.responding.access import XuaGuard
from imagebridge.errors import (
    AuthnStatementInvalid,
    ConfigError,
    FailedAuthentication,
    FailedCheck,
    InvalidSecurity,
    MessageExpired,
    ReplayedMessage,
    SecurityHeaderTooLarge,
    SignatureWrapping,
    UnsupportedAlgorithm,
    WsSecurityError,
    XuaAttributeInvalid,
    XuaAttributeMissing,
)
from imagebridge.model.directory import Community, CommunityEndpoint
from imagebridge.model.ids import HomeCommunityId
from imagebridge.model.instant import Instant
from imagebridge.model.saml import (
    ACP,
    BEARER,
    BPPC_DOCID,
    HOME_COMMUNITY_ID,
    NHIN_HOME_COMMUNITY_ID,
    PURPOSE_OF_USE,
    ROLE,
    SUBJECT_ID,
    Assertion,
    Attribute,
    AttributeStatement,
    AttributeValue,
    AuthnStatement,
    AuthzAction,
    AuthzDecisionStatement,
    Decision,
    NameId,
    Subject,
    SubjectConfirmation,
)
from imagebridge.security.policy import AccessPolicy, ConsentAction, RefusalKind
from imagebridge.security.saml_issuer import (
    RSA_SHA1,
    AssertionIssuer,
    IssuerSettings,
    PartnerSamlProfile,
    Principal,
    SigningKey,
    purpose_code,
    role_code,
)
from imagebridge.security.saml_verifier import AssertionVerifier, VerifierSettings
from imagebridge.security.xml_signature import TrustStore
from imagebridge.security.xua_config import build_access_policy, system_principal, xua_config
from imagebridge.transactions import Transaction, spec_of
from imagebridge.transport.faults import fault_from_error
from imagebridge.transport.messages import SoapRequest
from imagebridge.wire import ns
from imagebridge.wire.saml import render_assertion
from imagebridge.wire.wsa import AddressingHeaders
from imagebridge.wire.xml import Element
from tests.conformance_data import assert_xua_valid

NOW = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
HOME = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.1")
PARTNER = HomeCommunityId.parse("urn:oid:1.3.6.1.4.1.21367.13.70.201")
AUDIENCE = "https://rg.example.org/xca/query"
PRINCIPAL = Principal(
    subject_id="Dr Alice Example",
    organization="Example Imaging",
    organization_id="urn:oid:1.3.6.1.4.1.21367.13.70.1",
    role=role_code("112247003", "Medical doctor"),
    purpose_of_use=purpose_code("TREATMENT", "Treatment"),
    npi="1234567893",
)
RSA = trustme.KeyType.RSA


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=RSA)


def signing_key(ca: trustme.CA) -> SigningKey:
    leaf = ca.issue_cert("imagebridge.example.org", key_type=RSA)
    return SigningKey.from_pem(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())


@pytest.fixture(scope="module")
def key(ca: trustme.CA) -> SigningKey:
    return signing_key(ca)


def make_issuer(key: SigningKey, **settings: object) -> AssertionIssuer:
    return AssertionIssuer(
        key,
        IssuerSettings(home_community_id=HOME, **settings),
        clock=lambda: NOW,  # type: ignore[arg-type]
    )


@pytest.fixture
def issuer(key: SigningKey) -> AssertionIssuer:
    return make_issuer(key)


def make_verifier(ca: trustme.CA, at: datetime = NOW, **settings: object) -> AssertionVerifier:
    trust = TrustStore([x509.load_pem_x509_certificate(ca.cert_pem.bytes())])
    chosen = {"audiences": frozenset({AUDIENCE})} | settings
    return AssertionVerifier(trust, VerifierSettings(**chosen), clock=lambda: at)  # type: ignore[arg-type]


@pytest.fixture
def verifier(ca: trustme.CA) -> AssertionVerifier:
    return make_verifier(ca)


def header(
    issuer: AssertionIssuer,
    *,
    change: Callable[[Assertion], Assertion] | None = None,
    tailor: Callable[[Element], None] | None = None,
    issued: datetime = NOW,
    sent: datetime = NOW,
    signed: bool = True,
    profile: PartnerSamlProfile | None = None,
) -> Element:
    """A wsse:Security block: the assertion (changed as a model, or as XML before signing)."""
    chosen = profile or issuer.profile_for(None)
    model = issuer.assertion_model(PRINCIPAL, AUDIENCE, now=issued, profile=chosen)
    if change is not None:
        model = change(model)
    if tailor is None:
        element = issuer.sign_assertion(model, chosen) if signed else render_assertion(model)
    else:
        element = render_assertion(model)
        tailor(element)
        if signed:
            element = _sign_element(issuer, element, model.id, chosen)
    return issuer.security_for(element, model.id, sent, chosen)


def _sign_element(
    issuer: AssertionIssuer, element: Element, assertion_id: str, profile: PartnerSamlProfile
) -> Element:
    issuer_el = element.find(ns.q(ns.SAML2, "Issuer"))
    assert issuer_el is not None
    placeholder = etree.Element(ns.q(ns.DS, "Signature"), nsmap={"ds": ns.DS})
    placeholder.set("Id", "placeholder")
    issuer_el.addnext(placeholder)
    signer = issuer._signer(profile, SignatureConstructionMethod.enveloped)
    signed: Element = signer.sign(
        element,
        key=issuer._key.private_key,
        cert=list(issuer._key.chain[:1]),
        reference_uri=[SignatureReference(URI=f"#{assertion_id}")],
    )
    return signed


def with_attributes(*extra: Attribute) -> Callable[[Assertion], Assertion]:
    def change(a: Assertion) -> Assertion:
        statements = (*a.attribute_statements, AttributeStatement(extra))
        return dataclasses.replace(a, attribute_statements=statements)

    return change


def without(name: str) -> Callable[[Assertion], Assertion]:
    def change(a: Assertion) -> Assertion:
        kept = tuple(x for s in a.attribute_statements for x in s.attributes if x.name != name)
        return dataclasses.replace(a, attribute_statements=(AttributeStatement(kept),))

    return change


def subcode(error: WsSecurityError) -> str:
    fault = fault_from_error(error)
    assert fault.subcodes and fault.subcodes[-1].namespace == ns.WSSE
    assert "could not be accepted" in fault.reason  # generic reason, nothing revealed
    return fault.subcodes[-1].local


def refused(verifier: AssertionVerifier, block: Element, expected: type[WsSecurityError]) -> str:
    with pytest.raises(expected) as caught:
        verifier.verify([block])
    return subcode(caught.value)


# --- round trip --------------------------------------------------------------------------


def test_issued_header_verifies_and_reads_back(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    caller = verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE, partner=PARTNER)])
    assert caller.subject_id == "Dr Alice Example"
    assert caller.organization == "Example Imaging"
    assert caller.organization_id == PRINCIPAL.organization_id
    assert caller.home_community_id == HOME
    assert caller.role is not None and caller.role.code == "112247003"
    assert caller.purpose_of_use is not None and caller.purpose_of_use.code == "TREATMENT"
    assert caller.npi == "1234567893"
    assert caller.audit_user_id.startswith("<Dr Alice Example@")
    assert not caller.consent.present


def test_issued_header_is_schema_valid(issuer: AssertionIssuer, schema_dir: Path) -> None:
    block = issuer.security_header(PRINCIPAL, AUDIENCE)
    assert_xua_valid(block)
    signature = block.find(ns.q(ns.DS, "Signature"))
    assert signature is not None  # the holder-of-key proof, after the assertion
    method = signature.find(f"{ns.q(ns.DS, 'SignedInfo')}/{ns.q(ns.DS, 'SignatureMethod')}")
    assert method is not None and method.get("Algorithm", "").endswith("rsa-sha256")


def test_headers_factory_for_partner_clients(issuer: AssertionIssuer) -> None:
    community = Community(PARTNER, "RG", (CommunityEndpoint(Transaction.ITI_38, AUDIENCE),))
    (block,) = issuer.headers(PRINCIPAL)(Transaction.ITI_38, community)
    audience = block.find(f".//{ns.q(ns.SAML2, 'Audience')}")
    assert audience is not None and audience.text == AUDIENCE


# --- NIST XUA variants (12309/12312/15808/15809 *_<variant>) -----------------------------


def test_unsigned_is_a_fault(issuer: AssertionIssuer, verifier: AssertionVerifier) -> None:
    block = header(issuer, signed=False)
    assert refused(verifier, block, FailedAuthentication) == "FailedAuthentication"


def test_expired_is_a_fault(issuer: AssertionIssuer, verifier: AssertionVerifier) -> None:
    block = header(issuer, issued=NOW - timedelta(hours=2))
    assert refused(verifier, block, FailedAuthentication) == "FailedAuthentication"


def test_not_yet_valid_is_a_fault(issuer: AssertionIssuer, verifier: AssertionVerifier) -> None:
    block = header(issuer, issued=NOW + timedelta(hours=1))
    assert refused(verifier, block, FailedAuthentication) == "FailedAuthentication"


def test_unknown_audience_is_a_fault(issuer: AssertionIssuer, ca: trustme.CA) -> None:
    verifier = make_verifier(ca, audiences=frozenset({"https://other.example.org/"}))
    block = header(issuer)
    assert refused(verifier, block, FailedAuthentication) == "FailedAuthentication"


def test_second_purpose_of_use_is_a_fault(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    second = Attribute(
        PURPOSE_OF_USE, (AttributeValue.hl7_code("PurposeOfUse", purpose_code("PAYMENT")),)
    )
    block = header(issuer, change=with_attributes(second))
    assert refused(verifier, block, XuaAttributeInvalid) == "InvalidSecurityToken"


def test_second_role_is_a_fault(issuer: AssertionIssuer, verifier: AssertionVerifier) -> None:
    second = Attribute(ROLE, (AttributeValue.hl7_code("Role", role_code("106331006")),))
    block = header(issuer, change=with_attributes(second))
    assert refused(verifier, block, XuaAttributeInvalid) == "InvalidSecurityToken"


def test_second_authn_context_is_a_fault(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    def second_context(el: Element) -> None:
        context = el.find(f"{ns.q(ns.SAML2, 'AuthnStatement')}/{ns.q(ns.SAML2, 'AuthnContext')}")
        assert context is not None
        context.addnext(copy.deepcopy(context))

    block = header(issuer, tailor=second_context)
    assert refused(verifier, block, AuthnStatementInvalid) == "InvalidSecurityToken"


def test_second_authn_statement_is_a_fault(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    def twice(a: Assertion) -> Assertion:
        return dataclasses.replace(a, authn_statements=a.authn_statements * 2)

    assert refused(verifier, header(issuer, change=twice), AuthnStatementInvalid) == (
        "InvalidSecurityToken"
    )


@pytest.mark.parametrize("how", ["future-instant", "no-context-ref", "no-statement"])
def test_invalid_authn_statement_is_a_fault(
    issuer: AssertionIssuer, verifier: AssertionVerifier, how: str
) -> None:
    def future(a: Assertion) -> Assertion:
        late = AuthnStatement(Instant.at(NOW + timedelta(hours=1)), context_class_ref="x")
        return dataclasses.replace(a, authn_statements=(late,))

    def no_ref(el: Element) -> None:
        ref = el.find(f".//{ns.q(ns.SAML2, 'AuthnContextClassRef')}")
        assert ref is not None
        ref.getparent().remove(ref)  # type: ignore[union-attr]

    def none(a: Assertion) -> Assertion:
        return dataclasses.replace(a, authn_statements=())

    block = {
        "future-instant": lambda: header(issuer, change=future),
        "no-context-ref": lambda: header(issuer, tailor=no_ref),
        "no-statement": lambda: header(issuer, change=none),
    }[how]()
    with pytest.raises(WsSecurityError) as caught:
        verifier.verify([block])
    assert subcode(caught.value) == "InvalidSecurityToken"


def consent_assertion() -> Callable[[Assertion], Assertion]:
    evidence = Assertion(
        id="_evidence1",
        issue_instant=Instant.at(NOW),
        issuer=NameId("CN=consent authority"),
        attribute_statements=(
            AttributeStatement(
                (
                    Attribute("AccessConsentPolicy", (AttributeValue.string("urn:oid:1.2.3.9"),)),
                    Attribute(
                        "InstanceAccessConsentPolicy",
                        (AttributeValue.string("urn:oid:1.2.3.9.77"),),
                    ),
                )
            ),
        ),
    )
    statement = AuthzDecisionStatement(
        resource=AUDIENCE,
        decision=Decision.PERMIT,
        actions=(AuthzAction("Execute", "urn:oasis:names:tc:SAML:1.0:action:rwedc"),),
        evidence=(evidence,),
    )
    attributes = with_attributes(
        Attribute(ACP, (AttributeValue.string("urn:oid:1.2.3.9", None),)),
        Attribute(BPPC_DOCID, (AttributeValue.string("urn:oid:1.2.3.9.77", None),)),
    )

    def change(a: Assertion) -> Assertion:
        return dataclasses.replace(attributes(a), authz_decision_statements=(statement,))

    return change


def test_with_authz_consent_is_parsed_and_answered_by_policy(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    caller = verifier.verify([header(issuer, change=consent_assertion())])
    consent = caller.consent
    assert consent.acp == ("urn:oid:1.2.3.9",)
    assert consent.bppc_doc_ids == ("urn:oid:1.2.3.9.77",)
    assert consent.nhin_access_policies == ("urn:oid:1.2.3.9",)
    assert consent.nhin_instance_policies == ("urn:oid:1.2.3.9.77",)
    assert consent.decisions == ("Permit",)
    # NIST 12309/12312_withauthzconsent: a Responding Gateway answers Failure (in-band).
    refusal = AccessPolicy().decide(Transaction.ITI_38, caller)
    assert refusal is not None and refusal.kind is RefusalKind.ACCESS_DENIED
    accepting = AccessPolicy(accepted_consent_policies=frozenset({"urn:oid:1.2.3.9"}))
    assert accepting.decide(Transaction.ITI_38, caller) is None
    # The Responding Imaging Gateway enforces nothing (guide 8.4.1).
    assert AccessPolicy().decide(Transaction.RAD_75, caller) is None


# --- bad input ---------------------------------------------------------------------------


def _assertion_of(block: Element) -> Element:
    found = block.find(ns.q(ns.SAML2, "Assertion"))
    assert found is not None
    return found


def _evil_copy(original: Element, new_id: str | None) -> Element:
    evil = copy.deepcopy(original)
    if new_id is not None:
        evil.set("ID", new_id)
    value = evil.find(f".//{ns.q(ns.SAML2, 'Attribute')}[@Name='{SUBJECT_ID}']/*")
    assert value is not None
    value.text = "Mallory"
    return evil


def _wrapper(block: Element) -> Element:
    return etree.SubElement(block, "{urn:example:attacker}Wrapper")


def test_wrapping_moved_signed_assertion_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer)
    original = _assertion_of(block)
    evil = _evil_copy(original, "_evil")  # keeps the signature that names the original
    original.addprevious(evil)
    _wrapper(block).append(original)  # the signed original still resolves by its ID
    assert refused(verifier, block, SignatureWrapping) == "FailedCheck"


def test_wrapping_duplicate_id_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer)
    original = _assertion_of(block)
    evil = _evil_copy(original, None)  # same ID as the signed original
    original.addprevious(evil)
    _wrapper(block).append(original)
    assert refused(verifier, block, SignatureWrapping) == "FailedCheck"


def test_wrapping_reference_to_another_element_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer)
    original = _assertion_of(block)
    evil = _evil_copy(original, "_evil")
    block.replace(original, evil)  # the signature references '#_<original>', not '#_evil'
    assert refused(verifier, block, SignatureWrapping) == "FailedCheck"


def test_tampered_assertion_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer)
    original = _assertion_of(block)
    block.replace(original, _evil_copy(original, None))
    assert refused(verifier, block, FailedCheck) == "FailedCheck"


def test_certificate_from_another_ca_is_refused(verifier: AssertionVerifier) -> None:
    stranger = make_issuer(signing_key(trustme.CA(key_type=RSA)))
    block = stranger.security_header(PRINCIPAL, AUDIENCE)
    assert refused(verifier, block, FailedAuthentication) == "FailedAuthentication"


def test_oversized_header_is_refused(issuer: AssertionIssuer, verifier: AssertionVerifier) -> None:
    padding = Attribute("urn:example:padding", (AttributeValue.string("x" * 70_000),))
    block = header(issuer, change=with_attributes(padding))
    assert refused(verifier, block, SecurityHeaderTooLarge) == "InvalidSecurity"


def test_replay_inside_window_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer)
    verifier.verify([block])
    assert refused(verifier, block, ReplayedMessage) == "InvalidSecurity"


def test_replay_outside_window_is_refused(issuer: AssertionIssuer, ca: trustme.CA) -> None:
    block = header(issuer)
    make_verifier(ca).verify([block])
    later = make_verifier(ca, at=NOW + timedelta(minutes=11))
    assert refused(later, block, MessageExpired) == "MessageExpired"


def test_holder_of_key_proof_by_another_key_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier, ca: trustme.CA
) -> None:
    other = make_issuer(signing_key(ca))
    signed = issuer.sign_assertion(
        issuer.assertion_model(PRINCIPAL, AUDIENCE, now=NOW), issuer.profile_for(None)
    )
    assertion_id = signed.get("ID") or ""
    block = other.security_for(signed, assertion_id, NOW, other.profile_for(None))
    assert refused(verifier, block, FailedCheck) == "FailedCheck"


def test_missing_holder_of_key_proof_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer)
    proof = block.find(ns.q(ns.DS, "Signature"))
    assert proof is not None
    block.remove(proof)
    assert refused(verifier, block, FailedAuthentication) == "FailedAuthentication"


def test_missing_security_header_is_refused(verifier: AssertionVerifier) -> None:
    with pytest.raises(InvalidSecurity) as caught:
        verifier.verify([])
    assert subcode(caught.value) == "InvalidSecurity"


def test_missing_required_attribute_is_refused(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    block = header(issuer, change=without(NHIN_HOME_COMMUNITY_ID))
    assert refused(verifier, block, XuaAttributeMissing) == "InvalidSecurity"


# --- windows, names, algorithms ------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(timedelta(minutes=4), True), (timedelta(minutes=-4), True), (timedelta(minutes=6), False)],
)
def test_clock_skew(
    issuer: AssertionIssuer, ca: trustme.CA, offset: timedelta, accepted: bool
) -> None:
    # The sender's clock is off by *offset*: assertion and Timestamp both carry its time.
    block = header(issuer, issued=NOW + offset, sent=NOW + offset)
    verifier = make_verifier(ca, clock_skew=300.0)
    if accepted:
        verifier.verify([block])
    else:
        with pytest.raises((MessageExpired, FailedAuthentication)):
            verifier.verify([block])


def test_ihe_home_community_id_and_purpose_for_use_are_accepted(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    def old_names(a: Assertion) -> Assertion:
        attributes: list[Attribute] = []
        for found in (x for s in a.attribute_statements for x in s.attributes):
            attribute = found
            if attribute.name == NHIN_HOME_COMMUNITY_ID:
                attribute = dataclasses.replace(attribute, name=HOME_COMMUNITY_ID)
            if attribute.name == PURPOSE_OF_USE:
                coded = attribute.values[0].coded
                assert coded is not None
                attribute = dataclasses.replace(
                    attribute, values=(AttributeValue.hl7_code("PurposeForUse", coded),)
                )
            attributes.append(attribute)
        return dataclasses.replace(a, attribute_statements=(AttributeStatement(tuple(attributes)),))

    caller = verifier.verify([header(issuer, change=old_names)])
    assert caller.home_community_id == HOME
    assert caller.purpose_of_use is not None and caller.purpose_of_use.code == "TREATMENT"


def test_rsa_sha1_partner_profile(key: SigningKey, ca: trustme.CA) -> None:
    issuer = make_issuer(key, partners={PARTNER: PartnerSamlProfile(signature_algorithm=RSA_SHA1)})
    block = issuer.security_header(PRINCIPAL, AUDIENCE, partner=PARTNER)
    methods = {m.get("Algorithm") for m in block.iter(ns.q(ns.DS, "SignatureMethod"))}
    digests = {m.get("Algorithm") for m in block.iter(ns.q(ns.DS, "DigestMethod"))}
    assert methods == {"http://www.w3.org/2000/09/xmldsig#rsa-sha1"}
    assert digests == {"http://www.w3.org/2000/09/xmldsig#sha1"}
    make_verifier(ca).verify([block])  # accepted on input by default
    strict = make_verifier(ca, accept_sha1=False)
    assert refused(strict, block, UnsupportedAlgorithm) == "UnsupportedAlgorithm"
    # Other partners still get RSA-SHA256.
    other = issuer.security_header(PRINCIPAL, AUDIENCE, partner=HOME)
    assert {m.get("Algorithm") for m in other.iter(ns.q(ns.DS, "SignatureMethod"))} == {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    }


def test_bearer_only_when_allowed(issuer: AssertionIssuer, ca: trustme.CA) -> None:
    def bearer(a: Assertion) -> Assertion:
        assert a.subject is not None
        return dataclasses.replace(
            a, subject=Subject(a.subject.name_id, (SubjectConfirmation(BEARER),))
        )

    block = header(issuer, change=bearer)
    assert refused(make_verifier(ca), block, FailedAuthentication) == "FailedAuthentication"
    make_verifier(ca, allow_bearer=True).verify([block])


# --- access policy -------------------------------------------------------------------------


def test_purpose_policy_per_endpoint(issuer: AssertionIssuer, verifier: AssertionVerifier) -> None:
    payment = dataclasses.replace(PRINCIPAL, purpose_of_use=purpose_code("PAYMENT"))
    caller = verifier.verify([issuer.security_header(payment, AUDIENCE)])
    policy = AccessPolicy(purposes={Transaction.ITI_38: frozenset({"TREATMENT"})})
    refusal = policy.decide(Transaction.ITI_38, caller)
    assert refusal is not None and refusal.kind is RefusalKind.ACCESS_DENIED
    assert refusal.code_context.startswith("Access denied: purpose of use PAYMENT")
    assert policy.decide(Transaction.ITI_39, caller) is None  # default: every CQ purpose
    assert policy.decide(Transaction.RAD_75, caller) is None  # RIG: not enforced


def test_non_carequality_purpose_is_denied(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    research = dataclasses.replace(PRINCIPAL, purpose_of_use=purpose_code("RESEARCH"))
    caller = verifier.verify([issuer.security_header(research, AUDIENCE)])
    refusal = AccessPolicy().decide(Transaction.ITI_55, caller)
    assert refusal is not None and "not a Carequality permitted purpose" in refusal.reason


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        (ConsentAction.RELEASE, None),
        (ConsentAction.REFUSE, RefusalKind.ACCESS_DENIED),
        (ConsentAction.MORE_DOCUMENTATION, RefusalKind.MORE_DOCUMENTATION),
    ],
)
def test_consent_policy_without_consent(
    issuer: AssertionIssuer,
    verifier: AssertionVerifier,
    action: ConsentAction,
    kind: RefusalKind | None,
) -> None:
    caller = verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE)])
    refusal = AccessPolicy(without_consent=action).decide(Transaction.ITI_38, caller)
    assert (refusal.kind if refusal else None) is kind


# --- reuse, guard, configuration ----------------------------------------------------------


def test_reused_assertion_gets_a_new_proof_each_message(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    first = issuer.security_header(PRINCIPAL, AUDIENCE, partner=PARTNER)
    second = issuer.security_header(PRINCIPAL, AUDIENCE, partner=PARTNER)
    assert _assertion_of(first).get("ID") == _assertion_of(second).get("ID")
    assert verifier.verify([first]).assertion_id == verifier.verify([second]).assertion_id
    assert refused(verifier, second, ReplayedMessage) == "InvalidSecurity"
    # A changed copy of an assertion seen before is not taken from the cache.
    third = issuer.security_header(PRINCIPAL, AUDIENCE, partner=PARTNER)
    original = _assertion_of(third)
    third.replace(original, _evil_copy(original, None))
    assert refused(verifier, third, FailedCheck) == "FailedCheck"


@pytest.mark.anyio
async def test_guard_rad75_audits_without_refusing(
    issuer: AssertionIssuer, verifier: AssertionVerifier
) -> None:
    guard = XuaGuard(verifier)
    payload = etree.Element("x")

    def request(transaction: Transaction, blocks: tuple[Element, ...]) -> SoapRequest:
        addressing = AddressingHeaders(
            action=spec_of(transaction).request_action, message_id="urn:uuid:1"
        )
        return SoapRequest(spec_of(transaction), addressing, payload, blocks)

    assert await guard(request(Transaction.RAD_75, ())) is None
    assert await guard(request(Transaction.RAD_75, (header(issuer, signed=False),))) is None
    caller = await guard(request(Transaction.RAD_75, (header(issuer),)))
    assert caller is not None and caller.subject_id == PRINCIPAL.subject_id
    with pytest.raises(InvalidSecurity):
        await guard(request(Transaction.ITI_38, ()))
    with pytest.raises(FailedAuthentication):
        await guard(request(Transaction.ITI_39, (header(issuer, signed=False),)))


def test_xua_config_parser(tmp_path: Path) -> None:
    parsed = xua_config(
        {
            "issuer": {
                "private_key": "k.pem",
                "certificate": "c.pem",
                "organization": "Example Imaging",
                "organization_id": "urn:oid:1.2.3",
                "subject_id": "Example System User",
                "partners": {"1.2.840.114350": {"signature_algorithm": "rsa-sha1"}},
            },
            "verifier": {
                "trusted_ca": ["ca.pem"],
                "audiences": ["https://gw.example.org/xca/query"],
                "clock_skew": 120,
                "without_consent": "more-documentation",
                "purposes": {"ITI-38": ["treatment", "PAYMENT"]},
            },
        },
        base_dir=tmp_path,
    )
    assert parsed.issuer is not None and parsed.verifier is not None
    assert parsed.issuer.private_key == tmp_path / "k.pem"
    profile = parsed.issuer.partners[HomeCommunityId.parse("1.2.840.114350")]
    assert profile.signature_algorithm == RSA_SHA1
    assert system_principal(parsed.issuer).purpose_of_use.code == "TREATMENT"
    policy = build_access_policy(parsed.verifier)
    assert policy.honoured(Transaction.ITI_38) == {"TREATMENT", "PAYMENT"}
    assert policy.without_consent is ConsentAction.MORE_DOCUMENTATION
    assert parsed.verifier.clock_skew == 120
    with pytest.raises(ConfigError):
        xua_config({"verifier": {"purposes": {"ITI-38": ["RESEARCH"]}}})
    with pytest.raises(ConfigError):
        xua_config({"verifier": {"clok_skew": 1}})
    with pytest.raises(ConfigError):
        xua_config({"issuer": {"private_key": "k.pem"}})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
