"""Cross-Enterprise User Assertion [ITI-40], X-Service Provider: verify the XUA header of a request.

:meth:`AssertionVerifier.verify` applies soap-transport.md 6.4 and
carequality-qbd.md 10.4 to the SOAP header blocks of one request and returns
the :class:`~imagebridge.model.caller.VerifiedCaller`, or raises the
WS-Security error whose subcode the SOAP fault carries (6.5, digest 17 R5/R6):

=========================================  ==========================================
check                                      error (fault subcode)
=========================================  ==========================================
no / two wsse:Security, no assertion        InvalidSecurity
header larger than the ceiling              SecurityHeaderTooLarge (InvalidSecurity)
duplicate ID, moved or extra assertion,     SignatureWrapping (FailedCheck)
signature not over the assertion read
unsigned, untrusted issuer, not yet valid,  FailedAuthentication
expired, other audience, no HoK proof
bad signature value or digest               FailedCheck
algorithm not accepted                      UnsupportedAlgorithm
Timestamp expired or in the future          MessageExpired
message already seen (replay)               ReplayedMessage (InvalidSecurity)
AuthnStatement missing, doubled, bad        AuthnStatementInvalid (InvalidSecurityToken)
required attribute absent                   XuaAttributeMissing (InvalidSecurity)
attribute doubled (2nd role / purpose) or   XuaAttributeInvalid (InvalidSecurityToken)
malformed
=========================================  ==========================================

Purpose-of-use and consent decisions are not made here: they are business
answers (:mod:`imagebridge.security.policy`).  Consent evidence of both
carriers is parsed and logged (identifiers at DEBUG only).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from lxml import etree

from imagebridge.errors import (
    AuthnStatementInvalid,
    FailedAuthentication,
    InvalidSecurity,
    MessageExpired,
    ReplayedMessage,
    SecurityHeaderTooLarge,
    SecurityTokenUnavailable,
    UnsupportedSecurityToken,
    XuaAttributeMissing,
)
from imagebridge.model.caller import ConsentEvidence, VerifiedCaller
from imagebridge.model.saml import ACP, BPPC_DOCID, Assertion, SubjectConfirmation
from imagebridge.model.wsse import SecurityHeader
from imagebridge.security.xml_signature import (
    ElementIds,
    TrustStore,
    certificates_of,
    check_envelope_ids,
    verify_enveloped,
    verify_proof,
)
from imagebridge.wire import ns
from imagebridge.wire.saml import SAML1, parse_assertion
from imagebridge.wire.wsse import parse_timestamp
from imagebridge.wire.xml import Element, elements, qname_of, text_of

log = logging.getLogger(__name__)

REQUIRED_ATTRIBUTES: Final = frozenset(
    {"subject-id", "organization", "organization-id", "home-community-id", "role", "purpose-of-use"}
)
"""Attribute keys of :class:`VerifierSettings` ``required_attributes`` (carequality-qbd.md 10.2)."""
NHIN_ACCESS_POLICY: Final = "AccessConsentPolicy"
NHIN_INSTANCE_POLICY: Final = "InstanceAccessConsentPolicy"
_SECURITY = ns.q(ns.WSSE, "Security")
_TIMESTAMP = ns.q(ns.WSU, "Timestamp")
_SIGNATURE = ns.q(ns.DS, "Signature")
_WSU_ID = ns.q(ns.WSU, "Id")
_ASSERTION = ns.q(ns.SAML2, "Assertion")
_ENCRYPTED_ASSERTION = ns.q(ns.SAML2, "EncryptedAssertion")
_SIGNATURE_VALUE = ns.q(ns.DS, "SignatureValue")
_KEY_IDENTIFIER = ns.q(ns.WSSE, "KeyIdentifier")
_WSSE_REFERENCE = ns.q(ns.WSSE, "Reference")
_AUTHN_STATEMENT = ns.q(ns.SAML2, "AuthnStatement")
_AUTHN_CONTEXT = ns.q(ns.SAML2, "AuthnContext")
_AUTHN_CONTEXT_REFS = (
    ns.q(ns.SAML2, "AuthnContextClassRef"),
    ns.q(ns.SAML2, "AuthnContextDeclRef"),
)
_VERIFIED_CACHE = 4096
_SEEN_ONCE = 4 * _VERIFIED_CACHE
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VerifierSettings:
    """What the Responding Gateway accepts (seconds for times, bytes for sizes)."""

    audiences: frozenset[str] = frozenset()
    """Accepted Audience values; empty: any audience."""
    clock_skew: float = 300.0
    max_message_age: float = 300.0
    """Lifetime of a Timestamp without Expires."""
    max_assertion_age: float = 3600.0
    """Lifetime of an assertion without Conditions/@NotOnOrAfter."""
    required_attributes: frozenset[str] = REQUIRED_ATTRIBUTES
    accept_sha1: bool = True
    allow_bearer: bool = False
    """Accept an assertion confirmed by ``bearer`` only (no holder-of-key proof)."""
    require_timestamp: bool = True
    max_header_bytes: int = 64 * 1024
    max_header_elements: int = 2000
    replay_cache_size: int = 100_000

    def __post_init__(self) -> None:
        unknown = self.required_attributes - REQUIRED_ATTRIBUTES
        if unknown:
            raise ValueError(f"unknown XUA attribute key(s): {', '.join(sorted(unknown))}")


class ReplayCache:
    """Messages already accepted, kept until their window closes; bounded in size.

    When full, the entry closest to expiry goes first (insertion order is
    close to expiry order, since windows have similar lengths).
    """

    def __init__(self, max_entries: int) -> None:
        self._seen: OrderedDict[str, datetime] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str, until: datetime, now: datetime) -> None:
        """Remember *key* until *until*; :class:`ReplayedMessage` if it is still remembered."""
        known = self._seen.get(key)
        if known is not None and known > now:
            raise ReplayedMessage("the message was already received")
        while self._seen:
            oldest_key, oldest_until = next(iter(self._seen.items()))
            if oldest_until > now and len(self._seen) < self._max:
                break
            del self._seen[oldest_key]
        self._seen[key] = until


class AssertionVerifier:
    """Cross-Enterprise User Assertion [ITI-40], X-Service Provider: verifies wsse:Security."""

    def __init__(
        self,
        trust: TrustStore,
        settings: VerifierSettings = VerifierSettings(),
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._trust = trust
        self._settings = settings
        self._clock = clock
        self._replays = ReplayCache(settings.replay_cache_size)
        self._verified: OrderedDict[bytes, tuple[bytes, Assertion, VerifiedCaller, datetime]] = (
            OrderedDict()
        )
        self._seen_once: OrderedDict[bytes, None] = OrderedDict()

    def verify(self, header_blocks: Sequence[Element]) -> VerifiedCaller:
        """The verified caller of a request with these SOAP header blocks."""
        s = self._settings
        now = self._clock()
        skew = timedelta(seconds=s.clock_skew)
        blocks = [b for b in header_blocks if b.tag == _SECURITY]
        if len(blocks) != 1:
            raise InvalidSecurity(
                "no wsse:Security header" if not blocks else "more than one wsse:Security header"
            )
        security = blocks[0]
        if len(etree.tostring(security)) > s.max_header_bytes:
            raise SecurityHeaderTooLarge("the wsse:Security header is too large")
        top = list(security.iterchildren(_ASSERTION))
        if len(top) != 1:
            raise InvalidSecurity("wsse:Security must carry exactly one SAML assertion")
        root = security.getroottree().getroot()
        ids = check_envelope_ids(root, top[0], s.max_header_elements * 4)
        parts = _header(security)
        window_end = self._check_timestamp(parts, now, skew)
        assertion, caller = self._assertion(top[0], now, skew, ids)
        self._check_conditions(assertion, now, skew)
        replay_key = self._check_confirmation(root, security, parts, assertion, now, ids=ids)
        self._replays.add(replay_key, window_end + skew, now)
        return caller

    def _assertion(
        self, element: Element, now: datetime, skew: timedelta, ids: ElementIds | None
    ) -> tuple[Assertion, VerifiedCaller]:
        """The assertion and its caller: from the cache when these exact bytes were verified.

        What is cached depends on the assertion's content only (signature,
        issuer trust, AuthnStatement, attributes); time checks run per request.
        An assertion enters the cache the second time it is verified: the first
        time only its sighting is noted (a bytes object), so a partner sending a
        new assertion with every request does not fill the cache, and the
        collector, with models (and the request trees they point into) never
        used again.  Entries are found by the sighting (a digest of the
        assertion's ID and SignatureValue, cheap to take) and used only when the
        digest of the assertion's serialised bytes is that of the bytes
        verified; so the serialisation is made only for assertions seen before.
        """
        sighting = _sighting(element)
        cached = self._verified.get(sighting)
        digest = None
        if cached is not None and now < cached[3]:
            digest = _bytes_digest(element)
            if cached[0] == digest:
                self._verified.move_to_end(sighting)
                return cached[1], cached[2]
        assertion = parse_assertion(element)
        signer = verify_enveloped(
            element, self._trust, now, accept_sha1=self._settings.accept_sha1, ids=ids
        )
        self._check_conditions(assertion, now, skew)
        self._check_authn(assertion, now, skew)
        caller = self._caller(assertion)
        until = min(
            self._assertion_end(assertion),
            signer.not_valid_after_utc,
            now + timedelta(seconds=self._settings.clock_skew),
        )
        if sighting in self._seen_once or cached is not None:
            self._seen_once.pop(sighting, None)
            digest = digest or _bytes_digest(element)
            self._verified[sighting] = (digest, assertion, caller, until)
            self._verified.move_to_end(sighting)
            while len(self._verified) > _VERIFIED_CACHE:
                self._verified.popitem(last=False)
        else:
            self._seen_once[sighting] = None
            while len(self._seen_once) > _SEEN_ONCE:
                self._seen_once.popitem(last=False)
        return assertion, caller

    def _assertion_end(self, assertion: Assertion) -> datetime:
        c = assertion.conditions
        if c is not None and c.not_on_or_after is not None:
            return c.not_on_or_after.value
        return assertion.issue_instant.value + timedelta(seconds=self._settings.max_assertion_age)

    # --- checks -----------------------------------------------------------------------

    def _check_timestamp(self, header: SecurityHeader, now: datetime, skew: timedelta) -> datetime:
        """The end of the message's window; :class:`MessageExpired` outside it."""
        ts = header.timestamp
        if ts is None or ts.created is None:
            if self._settings.require_timestamp:
                raise InvalidSecurity("wsse:Security has no wsu:Timestamp with Created")
            return now + timedelta(seconds=self._settings.max_message_age)
        if ts.created.value > now + skew:
            raise MessageExpired("the message Timestamp lies in the future")
        end = (
            ts.expires.value
            if ts.expires is not None
            else ts.created.value + timedelta(seconds=self._settings.max_message_age)
        )
        if end <= now - skew:
            raise MessageExpired("the message has expired")
        return end

    def _check_conditions(self, assertion: Assertion, now: datetime, skew: timedelta) -> None:
        if assertion.issue_instant.value > now + skew:
            raise FailedAuthentication("the assertion is issued in the future")
        c = assertion.conditions
        if c is not None and c.not_before is not None and c.not_before.value > now + skew:
            raise FailedAuthentication("the assertion is not yet valid")
        if self._assertion_end(assertion) <= now - skew:
            raise FailedAuthentication("the assertion has expired")
        audiences = self._settings.audiences
        if audiences and c is not None:
            for restriction in c.audience_restrictions:
                if not any(a.strip() in audiences for a in restriction):
                    raise FailedAuthentication("the assertion is meant for another audience")

    def _check_confirmation(
        self,
        root: Element,
        security: Element,
        header: SecurityHeader,
        assertion: Assertion,
        now: datetime,
        *,
        ids: ElementIds | None,
    ) -> str:
        """Holder-of-key proof; the key under which the message is remembered against replay.

        *header*: the Timestamp and signatures of wsse:Security (its assertion is *assertion*).
        """
        confirmations = assertion.subject.confirmations if assertion.subject else ()
        hok = [c for c in confirmations if c.is_holder_of_key]
        if not hok:
            if self._settings.allow_bearer and any(c.is_bearer for c in confirmations):
                created = (
                    header.timestamp.created.text
                    if header.timestamp and header.timestamp.created
                    else ""
                )
                return f"bearer:{assertion.id}:{created}"
            raise FailedAuthentication("the assertion has no holder-of-key confirmation")
        confirmation = hok[0]
        self._check_confirmation_window(confirmation, now)
        certs = certificates_of(confirmation.key_info)
        if not certs:
            raise UnsupportedSecurityToken(
                "holder-of-key confirmation without an X.509 certificate"
            )
        proofs = header.signatures
        if len(proofs) == 1:
            self._check_token_reference(proofs[0], assertion.id)
        covered = verify_proof(
            root, security, certs[0], now, accept_sha1=self._settings.accept_sha1, ids=ids
        )
        ts = header.timestamp
        if (
            ts is None
            or ts.id is None
            or not any(e.tag == _TIMESTAMP and e.get(_WSU_ID) == ts.id for e in covered)
        ):
            raise FailedAuthentication("the holder-of-key proof does not cover the Timestamp")
        value = next(proofs[0].iterchildren(_SIGNATURE_VALUE), None)
        return "hok:" + "".join(text_of(value).split())

    def _check_confirmation_window(self, confirmation: SubjectConfirmation, now: datetime) -> None:
        skew = timedelta(seconds=self._settings.clock_skew)
        if confirmation.not_before is not None and confirmation.not_before.value > now + skew:
            raise FailedAuthentication("the subject confirmation is not yet valid")
        if (
            confirmation.not_on_or_after is not None
            and confirmation.not_on_or_after.value <= now - skew
        ):
            raise FailedAuthentication("the subject confirmation has expired")

    @staticmethod
    def _check_token_reference(proof: Element, assertion_id: str) -> None:
        named = [
            text_of(el) if el.tag == _KEY_IDENTIFIER else (el.get("URI") or "").lstrip("#")
            for el in proof.iter(_KEY_IDENTIFIER, _WSSE_REFERENCE)
        ]
        if named and assertion_id not in named:
            raise SecurityTokenUnavailable("the message signature names another security token")

    @staticmethod
    def _check_authn(assertion: Assertion, now: datetime, skew: timedelta) -> None:
        """NIST variants: exactly one AuthnStatement, one AuthnContext, one class or decl ref."""
        source = assertion.source
        if source is None:
            raise InvalidSecurity("the assertion was not read from a message")
        statements = list(source.iterchildren(_AUTHN_STATEMENT))
        if len(statements) != 1:
            raise AuthnStatementInvalid(f"the assertion has {len(statements)} AuthnStatements")
        contexts = list(statements[0].iterchildren(_AUTHN_CONTEXT))
        if len(contexts) != 1:
            raise AuthnStatementInvalid("the AuthnStatement needs exactly one AuthnContext")
        refs = list(contexts[0].iterchildren(_AUTHN_CONTEXT_REFS))
        if len(refs) != 1 or not text_of(refs[0]):
            raise AuthnStatementInvalid("the AuthnContext needs exactly one class or declaration")
        if assertion.authn_statements[0].authn_instant.value > now + skew:
            raise AuthnStatementInvalid("the AuthnInstant lies in the future")

    # --- the caller -------------------------------------------------------------------

    def _caller(self, a: Assertion) -> VerifiedCaller:
        required = self._settings.required_attributes

        def get(key: str, read: Callable[[], T]) -> T | None:
            try:
                return read()
            except XuaAttributeMissing:
                if key in required:
                    raise
                return None

        caller = VerifiedCaller(
            assertion_id=a.id,
            issuer=a.issuer.value,
            audit_user_id=a.audit_user_id(),
            subject_id=get("subject-id", a.subject_id),
            organization=get("organization", a.organization),
            organization_id=get("organization-id", a.organization_id),
            home_community_id=get("home-community-id", a.home_community_id),
            role=get("role", a.role),
            purpose_of_use=get("purpose-of-use", a.purpose_of_use),
            npi=a.npi(),
            resource_id=a.resource_id(),
            consent=consent_evidence(a),
        )
        _log_consent(caller)
        return caller


def _sighting(assertion: Element) -> bytes:
    """What names an assertion in the verification cache: its ID and SignatureValue text.

    Only a label: a cached verdict is used for an assertion whose serialised bytes
    are the very bytes verified (:func:`_bytes_digest`).
    """
    signature = next(assertion.iterchildren(_SIGNATURE), None)
    value = None if signature is None else next(signature.iterchildren(_SIGNATURE_VALUE), None)
    text = "" if value is None else value.text or ""
    return hashlib.sha256(f"{assertion.get('ID') or ''}\0{text}".encode()).digest()


def _bytes_digest(assertion: Element) -> bytes:
    """The SHA-256 of *assertion* serialised (namespaces in scope included)."""
    return hashlib.sha256(etree.tostring(assertion)).digest()


def _header(security: Element) -> SecurityHeader:
    """The wsse:Security children other than the assertion, checked like
    :func:`~imagebridge.wire.wsse.parse_security` checks them."""
    timestamps: list[Element] = []
    signatures: list[Element] = []
    for c in elements(security):
        if c.tag == _TIMESTAMP:
            timestamps.append(c)
        elif c.tag == _SIGNATURE:
            signatures.append(c)
        elif c.tag == _ENCRYPTED_ASSERTION or qname_of(c)[0] == SAML1:
            raise UnsupportedSecurityToken("only one plain SAML 2.0 assertion is supported")
    if len(timestamps) > 1:
        raise InvalidSecurity("wsse:Security holds more than one wsu:Timestamp")
    return SecurityHeader(
        timestamp=parse_timestamp(timestamps[0]) if timestamps else None,
        signatures=tuple(signatures),
        source=security,
    )


def consent_evidence(a: Assertion) -> ConsentEvidence:
    """Both consent carriers of *a*: XUA attributes and NHIN AuthzDecisionStatement Evidence."""
    access: list[str] = []
    instance: list[str] = []
    decisions: list[str] = []
    for statement in a.authz_decision_statements:
        decisions.append(statement.decision.value)
        for evidence in statement.evidence:
            for attribute in (x for s in evidence.attribute_statements for x in s.attributes):
                local = attribute.name.rsplit(":", 1)[-1]
                texts = [v.text for v in attribute.values if v.text]
                if local == NHIN_ACCESS_POLICY:
                    access.extend(texts)
                elif local == NHIN_INSTANCE_POLICY:
                    instance.extend(texts)
    return ConsentEvidence(
        acp=a.text_values(ACP),
        bppc_doc_ids=a.text_values(BPPC_DOCID),
        nhin_access_policies=tuple(access),
        nhin_instance_policies=tuple(instance),
        decisions=tuple(decisions),
    )


def _log_consent(caller: VerifiedCaller) -> None:
    c = caller.consent
    if not c.present and not c.decisions:
        log.info("XUA assertion %s: no consent evidence", caller.assertion_id)
        return
    log.info(
        "XUA assertion %s: consent evidence, %d XUA policies, %d consent documents, "
        "%d NHIN policies, %d NHIN instance policies, decisions %s",
        caller.assertion_id,
        len(c.acp),
        len(c.bppc_doc_ids),
        len(c.nhin_access_policies),
        len(c.nhin_instance_policies),
        ",".join(c.decisions) or "-",
    )
    log.debug(
        "XUA consent identifiers: acp=%s docid=%s nhin=%s instance=%s",
        c.acp,
        c.bppc_doc_ids,
        c.nhin_access_policies,
        c.nhin_instance_policies,
    )
