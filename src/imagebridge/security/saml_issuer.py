"""Cross-Enterprise User Assertion [ITI-40], X-Service User: issue and sign the XUA assertion.

:class:`AssertionIssuer` builds, for one request to one partner, the
``wsse:Security`` header of soap-transport.md 6.1 / carequality-qbd.md 10.2:
a ``wsu:Timestamp``, a SAML 2.0 assertion signed by us (enveloped signature
right after ``saml2:Issuer``, exclusive C14N, our certificate in KeyInfo)
whose holder-of-key ``SubjectConfirmationData`` carries our certificate, and
a second ``ds:Signature`` over the Timestamp made with that same key, whose
KeyInfo names the assertion (``SecurityTokenReference``/``#SAMLID``): the
holder-of-key proof.  RSA-SHA256 by default; RSA-SHA1 for a partner whose
:class:`PartnerSamlProfile` asks for it.

The attributes come from a :class:`Principal`: the staff member of a web
session, or the system user of automated jobs (from configuration).
:meth:`AssertionIssuer.headers` makes the ``SecurityHeaders`` callable that
:class:`~imagebridge.actors.initiating.client.PartnerClients` takes; with a
:class:`SessionPrincipal` the principal follows the current task.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)
from signxml.signer import SignatureReference, XMLSigner

from imagebridge.errors import ConfigError
from imagebridge.model.directory import Community
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.instant import Instant
from imagebridge.model.saml import (
    AC_X509,
    HOLDER_OF_KEY,
    NAME_FORMAT_URI,
    NAMEID_X509_SUBJECT,
    NHIN_HOME_COMMUNITY_ID,
    NPI,
    ORGANIZATION,
    ORGANIZATION_ID,
    PURPOSE_OF_USE,
    RESOURCE_ID,
    ROLE,
    SUBJECT_ID,
    Assertion,
    Attribute,
    AttributeStatement,
    AttributeValue,
    AuthnStatement,
    CodedValue,
    Conditions,
    NameId,
    Subject,
    SubjectConfirmation,
)
from imagebridge.model.wsse import SecurityHeader, Timestamp
from imagebridge.transactions import Transaction
from imagebridge.wire import ns
from imagebridge.wire.saml import render_assertion
from imagebridge.wire.wsse import render_security
from imagebridge.wire.xml import Element

SNOMED_CT: Final = "2.16.840.1.113883.6.96"
NHIN_PURPOSE: Final = "2.16.840.1.113883.3.18.7.1"
SAML_TOKEN_V2: Final = "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV2.0"  # noqa: S105
SAML_ID: Final = "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLID"
RSA_SHA256: Final = "rsa-sha256"
RSA_SHA1: Final = "rsa-sha1"
ALGORITHMS: Final = {
    RSA_SHA256: (SignatureMethod.RSA_SHA256, DigestAlgorithm.SHA256),
    RSA_SHA1: (SignatureMethod.RSA_SHA1, DigestAlgorithm.SHA1),
}
_EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
_REUSE_CACHE = 256


def role_code(code: str, display: str | None = None) -> CodedValue:
    """A SNOMED CT role (Subject-Role option), e.g. ``112247003`` Medical doctor."""
    return CodedValue(code, SNOMED_CT, "SNOMED_CT", display)


def purpose_code(code: str, display: str | None = None) -> CodedValue:
    """An NHIN purpose of use (carequality-qbd.md 9), e.g. ``TREATMENT``."""
    return CodedValue(code.upper(), NHIN_PURPOSE, "nhin-purpose", display or code.capitalize())


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks and why: the attributes of the assertion (carequality-qbd.md 10.2).

    ``subject_id`` is the user's plain-text name (a system user's name for
    automated jobs); ``user_id`` goes to Subject/NameID (``subject_id`` when
    None); ``resource_id`` (the patient) is sent except on ITI-55.
    """

    subject_id: str
    organization: str
    organization_id: str
    role: CodedValue
    purpose_of_use: CodedValue
    user_id: str | None = None
    npi: str | None = None
    resource_id: PatientId | None = None

    def __post_init__(self) -> None:
        for name in ("subject_id", "organization", "organization_id"):
            if not getattr(self, name).strip():
                raise ConfigError(f"XUA principal: {name} is empty")


class SessionPrincipal:
    """The principal of the current task: a staff member's, else the configured system user.

    Owned by the composition root; the web layer wraps a request in
    :meth:`acting_as`.  Context-local, so concurrent requests never mix.
    """

    def __init__(self, system_user: Principal) -> None:
        self._current: ContextVar[Principal] = ContextVar("xua_principal", default=system_user)

    def __call__(self) -> Principal:
        return self._current.get()

    @contextlib.contextmanager
    def acting_as(self, principal: Principal) -> Iterator[Principal]:
        token = self._current.set(principal)
        try:
            yield principal
        finally:
            self._current.reset(token)


@dataclass(frozen=True, slots=True)
class PartnerSamlProfile:
    """What one partner needs different: algorithm, asserted HCID, subject-id NameFormat."""

    signature_algorithm: str = RSA_SHA256
    home_community_id: HomeCommunityId | None = None
    """The HCID to assert instead of ours (some Implementers want the Implementer's)."""
    subject_id_name_format: str = NAME_FORMAT_URI
    audience: str | None = None
    """Audience to assert instead of the endpoint URL."""

    def __post_init__(self) -> None:
        if self.signature_algorithm not in ALGORITHMS:
            raise ConfigError(
                f"XUA signature algorithm {self.signature_algorithm!r} is not one of "
                f"{', '.join(ALGORITHMS)}"
            )


@dataclass(frozen=True, slots=True)
class SigningKey:
    """Our assertion-signing key and certificate chain (leaf first)."""

    private_key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.chain:
            raise ConfigError("XUA signing certificate chain is empty")
        if _spki(self.chain[0].public_key()) != _spki(self.private_key.public_key()):
            raise ConfigError("XUA signing key does not match the first certificate")

    @classmethod
    def from_pem(
        cls, key_pem: bytes, chain_pem: bytes, password: bytes | None = None
    ) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
            chain = tuple(x509.load_pem_x509_certificates(chain_pem))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"XUA signing key or certificate is not usable PEM: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("XUA signing key must be an RSA key (RSA-SHA256 / RSA-SHA1)")
        return cls(key, chain)

    @classmethod
    def load(cls, key_path: Path, chain_path: Path, password: bytes | None = None) -> SigningKey:
        try:
            return cls.from_pem(key_path.read_bytes(), chain_path.read_bytes(), password)
        except OSError as exc:
            raise ConfigError(f"cannot read XUA signing material: {exc.strerror}") from exc

    @property
    def subject_dn(self) -> str:
        return self.chain[0].subject.rfc4514_string()

    @property
    def certificate_b64(self) -> str:
        der = self.chain[0].public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode("ascii")


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    """Who we are and how long what we issue lives."""

    home_community_id: HomeCommunityId
    issuer_name: str | None = None
    """Issuer NameID (X509SubjectName); the certificate's subject DN when None."""
    lifetime: float = 300.0
    partners: Mapping[HomeCommunityId, PartnerSamlProfile] = field(default_factory=dict)
    default_profile: PartnerSamlProfile = PartnerSamlProfile()
    reuse_for: float = 120.0
    """Seconds a signed assertion is sent again to the same partner for the same principal
    (each message still gets its own Timestamp and holder-of-key proof); 0: never."""


class AssertionIssuer:
    """Cross-Enterprise User Assertion [ITI-40], X-Service User: signed XUA headers."""

    def __init__(
        self,
        key: SigningKey,
        settings: IssuerSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._key = key
        self._settings = settings
        self._clock = clock
        self._new_id = new_id
        self._signed: OrderedDict[tuple[object, ...], tuple[Element, str, datetime]] = OrderedDict()

    def profile_for(self, partner: HomeCommunityId | None) -> PartnerSamlProfile:
        found = self._settings.partners.get(partner) if partner is not None else None
        return found or self._settings.default_profile

    def assertion_model(
        self,
        principal: Principal,
        audience: str | None,
        *,
        now: datetime,
        profile: PartnerSamlProfile | None = None,
        transaction: Transaction | None = None,
    ) -> Assertion:
        """The unsigned assertion for *principal* (exposed for tests and variants)."""
        p = profile or self._settings.default_profile
        issued = Instant.at(now)
        until = Instant.at(now + timedelta(seconds=self._settings.lifetime))
        home = p.home_community_id or self._settings.home_community_id
        target = p.audience or audience
        text = AttributeValue.string
        attributes = [
            Attribute(SUBJECT_ID, (text(principal.subject_id),), p.subject_id_name_format),
            Attribute(ORGANIZATION, (text(principal.organization),), NAME_FORMAT_URI),
            Attribute(ORGANIZATION_ID, (text(principal.organization_id),), NAME_FORMAT_URI),
            Attribute(NHIN_HOME_COMMUNITY_ID, (text(home.urn),), NAME_FORMAT_URI),
            Attribute(ROLE, (AttributeValue.hl7_code("Role", principal.role),), NAME_FORMAT_URI),
            Attribute(
                PURPOSE_OF_USE,
                (AttributeValue.hl7_code("PurposeOfUse", principal.purpose_of_use),),
                NAME_FORMAT_URI,
            ),
        ]
        if principal.npi:
            attributes.append(Attribute(NPI, (text(principal.npi),), NAME_FORMAT_URI))
        if principal.resource_id is not None and transaction is not Transaction.ITI_55:
            attributes.append(
                Attribute(RESOURCE_ID, (text(principal.resource_id.cx),), NAME_FORMAT_URI)
            )
        issuer = self._settings.issuer_name or self._key.subject_dn
        return Assertion(
            id=f"_{self._new_id()}",
            issue_instant=issued,
            issuer=NameId(issuer, NAMEID_X509_SUBJECT),
            subject=Subject(
                NameId(principal.user_id or principal.subject_id, NAMEID_X509_SUBJECT),
                (SubjectConfirmation(HOLDER_OF_KEY, certificate=self._key.certificate_b64),),
            ),
            conditions=Conditions(
                not_before=issued,
                not_on_or_after=until,
                audience_restrictions=((target,),) if target else (),
            ),
            authn_statements=(AuthnStatement(issued, context_class_ref=AC_X509),),
            attribute_statements=(AttributeStatement(tuple(attributes)),),
        )

    def sign_assertion(self, assertion: Assertion, profile: PartnerSamlProfile) -> Element:
        """Render *assertion* and sign it (enveloped, right after ``saml2:Issuer``)."""
        el = render_assertion(assertion)
        issuer = el.find(ns.q(ns.SAML2, "Issuer"))
        placeholder = etree.Element(ns.q(ns.DS, "Signature"), nsmap={"ds": ns.DS})
        placeholder.set("Id", "placeholder")
        if issuer is None:  # render_assertion always writes it
            raise ConfigError("rendered assertion has no Issuer")
        issuer.addnext(placeholder)
        signed: Element = self._signer(profile, SignatureConstructionMethod.enveloped).sign(
            el,
            key=self._key.private_key,
            cert=list(self._key.chain[:1]),
            reference_uri=[SignatureReference(URI=f"#{assertion.id}")],
        )
        return signed

    def security_header(
        self,
        principal: Principal,
        audience: str | None,
        *,
        partner: HomeCommunityId | None = None,
        transaction: Transaction | None = None,
    ) -> Element:
        """The ``wsse:Security`` block: Timestamp, signed assertion, holder-of-key proof."""
        now = self._clock()
        profile = self.profile_for(partner)
        key = (principal, profile, audience, transaction is Transaction.ITI_55)
        cached = self._signed.get(key)
        if cached is None or now >= cached[2]:
            model = self.assertion_model(
                principal, audience, now=now, profile=profile, transaction=transaction
            )
            until = now + timedelta(
                seconds=min(self._settings.reuse_for, self._settings.lifetime / 2)
            )
            cached = (self.sign_assertion(model, profile), model.id, until)
            if self._settings.reuse_for > 0:
                self._signed[key] = cached
                while len(self._signed) > _REUSE_CACHE:
                    self._signed.popitem(last=False)
        signed, assertion_id, _ = cached
        return self.security_for(copy.deepcopy(signed), assertion_id, now, profile)

    def security_for(
        self,
        signed_assertion: Element,
        assertion_id: str,
        now: datetime,
        profile: PartnerSamlProfile,
    ) -> Element:
        """Wrap an already signed assertion with a fresh Timestamp and our holder-of-key proof."""
        ts_id = f"TS-{self._new_id()}"
        timestamp = Timestamp(
            created=Instant.at(now),
            expires=Instant.at(now + timedelta(seconds=self._settings.lifetime)),
            id=ts_id,
        )
        security = render_security(SecurityHeader(timestamp=timestamp))
        security.append(signed_assertion)
        key_info = etree.Element(ns.q(ns.DS, "KeyInfo"), nsmap={"ds": ns.DS})
        ref = etree.SubElement(
            key_info,
            ns.q(ns.WSSE, "SecurityTokenReference"),
            nsmap={"wsse": ns.WSSE, "wsse11": ns.WSSE11},
        )
        ref.set(ns.q(ns.WSSE11, "TokenType"), SAML_TOKEN_V2)
        identifier = etree.SubElement(ref, ns.q(ns.WSSE, "KeyIdentifier"))
        identifier.set("ValueType", SAML_ID)
        identifier.text = assertion_id
        proof: Element = self._signer(profile, SignatureConstructionMethod.detached).sign(
            security,
            key=self._key.private_key,
            reference_uri=[f"#{ts_id}"],
            key_info=key_info,
        )
        security.append(proof)
        return security

    def headers(self, principal: Principal | Callable[[], Principal]) -> SecurityHeaders:
        """The ``SecurityHeaders`` callable for :class:`PartnerClients` (``security=``)."""
        current = principal if callable(principal) else (lambda: principal)

        def make(transaction: Transaction, community: Community) -> Sequence[Element]:
            return (
                self.security_header(
                    current(),
                    community.url(transaction),
                    partner=community.home_community_id,
                    transaction=transaction,
                ),
            )

        return make

    def _signer(
        self, profile: PartnerSamlProfile, method: SignatureConstructionMethod
    ) -> XMLSigner:
        signature, digest = ALGORITHMS[profile.signature_algorithm]
        cls = _Sha1Signer if profile.signature_algorithm == RSA_SHA1 else XMLSigner
        signer = cls(
            method=method,
            signature_algorithm=signature,
            digest_algorithm=digest,
            c14n_algorithm=_EXC_C14N,
        )
        return signer


SecurityHeaders = Callable[[Transaction, Community], Sequence[Element]]


def _spki(key: object) -> bytes:
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("XUA signing certificate must hold an RSA key")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class _Sha1Signer(XMLSigner):
    """RSA-SHA1 / SHA-1, only for a partner whose profile requires it (carequality-qbd.md 10.2)."""

    def check_deprecated_methods(self) -> None:
        return None
