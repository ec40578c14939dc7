"""Cross-Enterprise User Assertion [ITI-40], X-Service Provider: XML signature checks.

The pieces of XUA verification that touch XML signatures and certificates:

* :func:`check_envelope_ids` refuses signature wrapping by structure: no ID
  (``ID``/``Id``/``wsu:Id``/``xml:id``) used twice anywhere in the message,
  and no SAML assertion outside the one the header carries (other than its
  own Evidence); the :class:`ElementIds` it collects on the way resolve the
  References of both signatures without another walk of the message;
* :func:`verify_enveloped` checks the assertion's enveloped signature: a
  direct child, one Reference whose URI is the assertion's own ID, accepted
  algorithms, and the node verified is that very assertion (the same object);
* :func:`verify_proof` checks a detached signature in ``wsse:Security`` (the
  holder-of-key proof) with a given certificate and returns what it covers;
* :class:`TrustStore` decides whether an issuer certificate is trusted
  (pinned certificates, or a chain to a configured CA), with a small cache.

Both signatures are checked by :func:`_check_signature`, which makes the checks
signxml's ``XMLVerifier.verify(x509_cert=...)`` makes (its XML Signature schema,
the algorithms, SignedInfo read back from the verified bytes, digests over the
canonical form) on the parsed request itself, not on serialised-and-reparsed
copies of it; ``tests/unit/security/test_xml_signature.py`` holds it to
signxml's verdicts.  Failures are WS-Security errors of :mod:`imagebridge.errors`.

What does not change between requests is worked out once and kept (bounded):
the certificate decoded from a given ``ds:X509Certificate`` text, and per
certificate object its SHA-256 fingerprint, validity period and RSA key.
Nothing about a signature or a digest is kept: both are computed for every
message.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import verification
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.processor import get_schema
from signxml.verifier import XMLVerifier

from imagebridge.errors import (
    ConfigError,
    FailedAuthentication,
    FailedCheck,
    SignatureWrapping,
    UnsupportedAlgorithm,
)
from imagebridge.wire import ns
from imagebridge.wire.xml import Element

log = logging.getLogger(__name__)
_K = TypeVar("_K", str, bytes)

ID_NAMES: Final = frozenset({"ID", "Id", "id"})
"""Attribute local names signxml resolves references by (``Id``, ``ID``, ``id``, ``xml:id``)."""

TRANSFORMS: Final = frozenset(
    {
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        "http://www.w3.org/2006/12/xml-c14n11",
    }
)
STRONG_SIGNATURES: Final = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA512})
STRONG_DIGESTS: Final = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA512})


def _ds(local: str) -> str:
    return ns.q(ns.DS, local)


_SIGNATURE: Final = _ds("Signature")
_SIGNED_INFO: Final = _ds("SignedInfo")
_SIGNATURE_METHOD: Final = _ds("SignatureMethod")
_C14N_METHOD: Final = _ds("CanonicalizationMethod")
_REFERENCE: Final = _ds("Reference")
_DIGEST_METHOD: Final = _ds("DigestMethod")
_DIGEST_VALUE: Final = _ds("DigestValue")
_TRANSFORMS: Final = _ds("Transforms")
_TRANSFORM: Final = _ds("Transform")
_SIGNATURE_VALUE: Final = _ds("SignatureValue")
_KEY_INFO: Final = _ds("KeyInfo")
_X509_CERTIFICATE: Final = _ds("X509Certificate")
_ASSERTION: Final = ns.q(ns.SAML2, "Assertion")
_EVIDENCE: Final = ns.q(ns.SAML2, "Evidence")
_ID_ENDINGS: Final = tuple(sorted(ID_NAMES))


def _first(el: Element, tag: str) -> Element | None:
    """The first child *tag* of *el* (what ``el.find(tag)`` finds, without ElementPath)."""
    return next(el.iterchildren(tag), None)


def _accepted(accept_sha1: bool) -> tuple[frozenset[str], frozenset[str]]:
    signatures = set(STRONG_SIGNATURES)
    digests = set(STRONG_DIGESTS)
    if accept_sha1:
        signatures.add(SignatureMethod.RSA_SHA1)
        digests.add(DigestAlgorithm.SHA1)
    return frozenset(m.value for m in signatures), frozenset(d.value for d in digests)


_ACCEPTED: Final = {flag: _accepted(flag) for flag in (False, True)}
"""Accepted SignatureMethod and DigestMethod URIs, without and with SHA-1."""


class ElementIds:
    """The elements of one message by the value of their ID attributes, each value once.

    Made by :func:`check_envelope_ids` after a walk of the whole message: a
    Reference resolves here to what the XPath search of :func:`_resolve` finds
    (the one element of the scope with an ID attribute of an accepted name and
    that value), without walking the message again.
    """

    __slots__ = ("_by_value", "root")

    def __init__(self, root: Element, by_value: dict[str, tuple[Element, str]]) -> None:
        self.root = root
        self._by_value = by_value

    def resolve(self, scope: Element, value: str, id_names: Sequence[str]) -> Element | None:
        """The element of *scope* (itself or below) with ID *value* under one of *id_names*."""
        found = self._by_value.get(value)
        if found is None:
            return None
        node, local = found
        if local not in id_names:
            return None
        if node is not scope and not any(a is scope for a in node.iterancestors()):
            return None
        return node


def check_envelope_ids(root: Element, assertion: Element, max_elements: int) -> ElementIds | None:
    """Refuse duplicate IDs in *root* and SAML assertions other than *assertion* (and its Evidence).

    Raises :class:`SignatureWrapping`; :class:`~imagebridge.errors.SecurityHeaderTooLarge`
    is the caller's business, *max_elements* only bounds this walk.  Returns the IDs
    found when the walk covered the whole message, None when *max_elements* cut it short.
    """
    seen: dict[str, tuple[Element, str]] = {}
    for count, el in enumerate(root.iter(), 1):
        if count > max_elements:
            return None
        for raw_name in el.keys():  # noqa: SIM118 (iterating an element yields its children)
            name = str(raw_name)
            if not name.endswith(_ID_ENDINGS):
                continue
            local = name.rpartition("}")[2]
            if local in ID_NAMES:
                value = str(el.get(name))
                if value in seen:
                    raise SignatureWrapping("an ID is used twice in the message")
                seen[value] = (el, local)
        if el.tag == _ASSERTION and el is not assertion:
            ancestors = list(el.iterancestors())
            inside = any(a is assertion for a in ancestors) and any(
                a.tag == _EVIDENCE for a in ancestors
            )
            if not inside:
                raise SignatureWrapping("a SAML assertion lies outside the one in wsse:Security")
    return ElementIds(root, seen)


def _check_algorithms(signature: Element, accept_sha1: bool) -> list[str]:
    """The Reference URIs of *signature*, after checking every algorithm it names."""
    signatures, digests = _ACCEPTED[accept_sha1]
    info = _first(signature, _SIGNED_INFO)
    if info is None:
        raise FailedCheck("ds:Signature has no SignedInfo")
    method = _first(info, _SIGNATURE_METHOD)
    c14n = _first(info, _C14N_METHOD)
    if method is None or method.get("Algorithm") not in signatures:
        raise UnsupportedAlgorithm("signature algorithm not accepted")
    if c14n is None or c14n.get("Algorithm") not in TRANSFORMS:
        raise UnsupportedAlgorithm("canonicalization algorithm not accepted")
    uris: list[str] = []
    for reference in info.iter(_REFERENCE):
        digest = _first(reference, _DIGEST_METHOD)
        if digest is None or digest.get("Algorithm") not in digests:
            raise UnsupportedAlgorithm("digest algorithm not accepted")
        for transform in reference.iter(_TRANSFORM):
            if transform.get("Algorithm") not in TRANSFORMS:
                raise UnsupportedAlgorithm("signature transform not accepted")
        uris.append(reference.get("URI") or "")
    return uris


_CERTIFICATES = 256
"""Decoded ``ds:X509Certificate`` values kept (by their text and by their DER bytes), and
the facts of as many certificate objects."""
_certificates: OrderedDict[bytes, x509.Certificate] = OrderedDict()
_certificate_texts: OrderedDict[str, x509.Certificate] = OrderedDict()


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a certificate says that every signature check asks (each read once)."""

    certificate: x509.Certificate
    """The object these facts are of (also keeps its ``id`` from being reused)."""
    fingerprint: bytes
    not_before: datetime
    not_after: datetime
    key: rsa.RSAPublicKey | None


_facts: OrderedDict[int, _Facts] = OrderedDict()


def _facts_of(cert: x509.Certificate) -> _Facts:
    """The facts of *cert*, kept by object identity: hashing a certificate hashes its DER
    bytes, and a key loaded from it is prepared by OpenSSL anew each time."""
    facts = _facts.get(id(cert))
    if facts is not None and facts.certificate is cert:
        return facts
    try:
        key: object = cert.public_key()
    except (ValueError, CryptographyUnsupported):  # a key type this build cannot load
        key = None
    facts = _Facts(
        certificate=cert,
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key=key if isinstance(key, rsa.RSAPublicKey) else None,
    )
    _facts[id(cert)] = facts
    while len(_facts) > _CERTIFICATES:
        _facts.popitem(last=False)
    return facts


def _public_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    """The RSA key of *cert*, loaded once per certificate object."""
    key = _facts_of(cert).key
    if key is None:
        raise FailedCheck("signature cannot be checked: the certificate holds no RSA key")
    return key


def _keep(cache: OrderedDict[_K, x509.Certificate], key: _K, cert: x509.Certificate) -> None:
    cache[key] = cert
    while len(cache) > _CERTIFICATES:
        cache.popitem(last=False)


def certificates_of(key_info: Element | None) -> tuple[x509.Certificate, ...]:
    """The ``ds:X509Certificate`` values under *key_info*, decoded.

    Decoded certificates are remembered by their text and by their DER bytes
    (bounded): a partner sends the same issuer and holder-of-key certificates
    every time, so the same text gives the same object without a base64 decode.
    """
    if key_info is None:
        return ()
    found: list[x509.Certificate] = []
    for el in key_info.iter(_X509_CERTIFICATE):
        text = el.text or ""
        cert = _certificate_texts.get(text)
        if cert is not None:
            _certificate_texts.move_to_end(text)
            found.append(cert)
            continue
        try:
            der = base64.b64decode("".join(text.split()), validate=True)
            cert = _certificates.get(der)
            if cert is None:
                cert = x509.load_der_x509_certificate(der)
                _keep(_certificates, der, cert)
            else:
                _certificates.move_to_end(der)
        except ValueError as exc:
            raise FailedAuthentication("an X509Certificate is not a certificate") from exc
        _keep(_certificate_texts, text, cert)
        found.append(cert)
    return tuple(found)


# --- the signature check ------------------------------------------------------------------
#
# What signxml's XMLVerifier.verify(x509_cert=...) checks, done on the parsed request itself
# instead of on three to five serialised-and-reparsed copies: the Signature is valid against
# the XML Signature schema; SignedInfo, canonicalised as it says, verifies with the given
# certificate (valid at *now*) and an accepted algorithm; any KeyValue/DEREncodedKeyValue
# names the certificate's key; each Reference read from the *verified* SignedInfo bytes
# resolves to exactly one element of the scope and its canonical form (after the enveloped
# transform, when named) has the digest given, with an accepted digest algorithm.

_C14N: Final = {
    # algorithm -> (exclusive, with comments); C14N 1.1 is rendered as 1.0, like signxml does.
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315": (False, False),
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments": (False, True),
    "http://www.w3.org/2006/12/xml-c14n11": (False, False),
    "http://www.w3.org/2006/12/xml-c14n11#WithComments": (False, True),
    "http://www.w3.org/2001/10/xml-exc-c14n#": (True, False),
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": (True, True),
}
_ENVELOPED: Final = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    DigestAlgorithm.SHA1.value: hashes.SHA1,
    DigestAlgorithm.SHA256.value: hashes.SHA256,
    DigestAlgorithm.SHA512.value: hashes.SHA512,
    SignatureMethod.RSA_SHA1.value: hashes.SHA1,
    SignatureMethod.RSA_SHA256.value: hashes.SHA256,
    SignatureMethod.RSA_SHA512.value: hashes.SHA512,
}
_PKCS1: Final = padding.PKCS1v15()
_EC = "http://www.w3.org/2001/10/xml-exc-c14n#"
_DSIG11 = "http://www.w3.org/2009/xmldsig11#"
_PREFIX_LIST: Final = f"{{{_EC}}}InclusiveNamespaces[@PrefixList]"
_KEY_VALUE: Final = _ds("KeyValue")
_DER_KEY_VALUE: Final = f"{{{_DSIG11}}}DEREncodedKeyValue"
_RESOLVE = etree.XPath("descendant-or-self::*[@*[local-name() = $name] = $uri]")


@functools.cache
def _schemas() -> tuple[etree.XMLSchema, ...]:
    """signxml's XML Signature schemas (what ``XMLVerifier(validate_schema=True)`` checks)."""
    return tuple(get_schema(name) for name in XMLVerifier.schema_files)


def _c14n(node: Element, method: Element | None, default: str | None = None) -> bytes:
    """*node* canonicalised by the algorithm of *method* (a CanonicalizationMethod or Transform)."""
    algorithm = method.get("Algorithm") if method is not None else default
    mode = _C14N.get(algorithm or "")
    if mode is None:
        raise UnsupportedAlgorithm("canonicalization algorithm not accepted")
    exclusive, comments = mode
    prefixes: list[str] | None = None
    if method is not None:
        inclusive = method.find(_PREFIX_LIST)
        if inclusive is not None:
            prefixes = (inclusive.get("PrefixList") or "").split(" ")
    return etree.tostring(
        node,
        method="c14n",
        exclusive=exclusive,
        with_comments=comments,
        inclusive_ns_prefixes=prefixes,
    )


_parsers = threading.local()


def _reparse(data: bytes) -> Element:
    """A tree from bytes this module serialised itself (canonical XML: no DTD, no entities).

    One parser per thread (lxml parsers are not safe to share across threads).
    """
    parser: etree.XMLParser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
        )
    return etree.fromstring(data, parser)


def _b64(el: Element | None, what: str) -> bytes:
    if el is None or el.text is None:
        raise FailedCheck(f"signature cannot be checked: no {what}")
    try:
        return base64.b64decode(el.text)
    except ValueError as exc:
        raise FailedCheck(f"signature cannot be checked: {what} is not base64") from exc


def _check_key_values(signature: Element, key: rsa.RSAPublicKey) -> None:
    """A KeyValue or DEREncodedKeyValue next to the certificate must name the same key."""
    key_info = _first(signature, _KEY_INFO)
    if key_info is None:
        return
    value = _first(key_info, _KEY_VALUE)
    der = _first(key_info, _DER_KEY_VALUE)
    if value is None and der is None:
        return
    numbers = key.public_numbers()
    if value is not None:
        rsa_value = _first(value, _ds("RSAKeyValue"))
        if rsa_value is None:
            raise FailedCheck("signature cannot be checked: KeyValue is not an RSA key")
        n = int.from_bytes(_b64(_first(rsa_value, _ds("Modulus")), "Modulus"), "big")
        e = int.from_bytes(_b64(_first(rsa_value, _ds("Exponent")), "Exponent"), "big")
        if (n, e) != (numbers.n, numbers.e):
            raise FailedCheck("signature cannot be checked: KeyValue and certificate differ")
    if der is not None:
        try:
            other = serialization.load_der_public_key(_b64(der, "DEREncodedKeyValue"))
        except ValueError as exc:
            raise FailedCheck("signature cannot be checked: bad DEREncodedKeyValue") from exc
        if not isinstance(other, rsa.RSAPublicKey) or other.public_numbers() != numbers:
            raise FailedCheck(
                "signature cannot be checked: DEREncodedKeyValue and certificate differ"
            )


def _resolve(
    scope: Element, uri: str | None, id_names: Sequence[str], ids: ElementIds | None
) -> Element:
    """The one element of *scope* whose ID (an attribute named one of *id_names*) is *uri*.

    From *ids* when they are those of *scope*'s message, else by an XPath search.
    """
    if not uri or not uri.startswith("#") or uri.startswith("#xpointer("):
        raise FailedCheck("signature cannot be checked: references must name an element by ID")
    if ids is not None and ids.root is scope.getroottree().getroot():
        indexed = ids.resolve(scope, uri[1:], id_names)
        if indexed is None:
            raise FailedCheck(f"signature cannot be checked: reference {uri} does not resolve")
        return indexed
    for name in id_names:
        found = _RESOLVE(scope, name=name, uri=uri[1:])
        assert isinstance(found, list)
        if len(found) > 1:
            raise SignatureWrapping("a signature reference resolves to more than one element")
        if found:
            node = found[0]
            assert isinstance(node, etree._Element)
            return node
    raise FailedCheck(f"signature cannot be checked: reference {uri} does not resolve")


def _c14n_without(
    payload: Element, signature: Element, method: Element | None, default: str | None = None
) -> bytes:
    """:func:`_c14n` of *payload* without *signature*, which it holds (the enveloped transform).

    As signxml does on its copy, the signature's tail text joins what precedes it; here
    the request's own tree is changed for the time of the canonicalisation and restored
    (element, tail and neighbouring text), which spares a serialise-and-reparse copy.
    """
    parent = signature.getparent()
    assert parent is not None
    previous = signature.getprevious()
    index = parent.index(signature)
    text, tail = parent.text, signature.tail
    previous_tail = None if previous is None else previous.tail
    if tail is not None:
        if previous is None:
            parent.text = (text or "") + tail
        else:
            previous.tail = (previous_tail or "") + tail
    parent.remove(signature)
    try:
        return _c14n(payload, method, default)
    finally:
        parent.insert(index, signature)
        signature.tail = tail
        if previous is None:
            parent.text = text
        else:
            previous.tail = previous_tail


def _digest_input(payload: Element, transforms: list[Element], signature: Element) -> bytes:
    """The canonical bytes of *payload* after the Reference's *transforms* (signxml's order:
    the enveloped transform first, then each canonicalisation in turn)."""
    enveloped = any(t.get("Algorithm") == _ENVELOPED for t in transforms)
    if enveloped:
        if payload is signature or signature in payload.iterancestors():
            raise FailedCheck("signature cannot be checked: the signature covers itself")
        enveloped = payload in signature.iterancestors()
    result: bytes | None = None
    for transform in transforms:
        if transform.get("Algorithm") == _ENVELOPED:
            continue
        if result is not None:
            result = _c14n(_reparse(result), transform)
        elif enveloped:
            result = _c14n_without(payload, signature, transform)
        else:
            result = _c14n(payload, transform)
    if result is None:
        default = "http://www.w3.org/2006/12/xml-c14n11"
        if enveloped:
            result = _c14n_without(payload, signature, None, default)
        else:
            result = _c14n(payload, None, default)
    return result


def _check_signature(
    scope: Element,
    signature: Element,
    cert: x509.Certificate,
    now: datetime,
    *,
    accept_sha1: bool,
    id_names: Sequence[str],
    ids: ElementIds | None,
) -> list[Element]:
    """Verify *signature* with *cert*; the elements of *scope* its References cover, in order.

    *signature* has passed :func:`_check_algorithms`; *ids*, when given, are those
    :func:`check_envelope_ids` found in *scope*'s message.  Raises
    :class:`FailedCheck`, :class:`FailedAuthentication`, :class:`UnsupportedAlgorithm`
    or :class:`SignatureWrapping`.
    """
    if not any(schema.validate(signature) for schema in _schemas()):
        raise FailedCheck("signature cannot be checked: not a valid ds:Signature")
    signatures, digests = _ACCEPTED[accept_sha1]
    info = _first(signature, _SIGNED_INFO)
    assert info is not None  # the schema requires it
    method = _first(info, _SIGNATURE_METHOD)
    algorithm = method.get("Algorithm") if method is not None else None
    if algorithm is None or algorithm not in signatures:
        raise UnsupportedAlgorithm("signature algorithm not accepted")
    signed_info = _c14n(info, _first(info, _C14N_METHOD))
    value = _b64(_first(signature, _SIGNATURE_VALUE), "SignatureValue")
    facts = _facts_of(cert)
    if not facts.not_before <= now <= facts.not_after:
        raise FailedAuthentication("signing certificate refused: outside its validity period")
    key = _public_key(cert)
    try:
        key.verify(value, signed_info, _PKCS1, _HASHES[algorithm]())
    except InvalidSignature as exc:
        raise FailedCheck("signature does not verify: bad signature value") from exc
    _check_key_values(signature, key)
    covered: list[Element] = []
    verified = _reparse(signed_info)  # read what was signed, not what the tree says
    for index, reference in enumerate(verified.iterchildren(_REFERENCE)):
        digest_method = _first(reference, _DIGEST_METHOD)
        digest_value = _first(reference, _DIGEST_VALUE)
        payload = _resolve(scope, reference.get("URI"), id_names, ids)
        transforms_node = _first(reference, _TRANSFORMS)
        transforms = (
            [] if transforms_node is None else list(transforms_node.iterchildren(_TRANSFORM))
        )
        for transform in transforms:
            if transform.get("Algorithm") not in TRANSFORMS:
                raise UnsupportedAlgorithm("signature transform not accepted")
        data = _digest_input(payload, transforms, signature)
        digest = digest_method.get("Algorithm") if digest_method is not None else None
        if digest is None or digest not in digests:
            raise UnsupportedAlgorithm("digest algorithm not accepted")
        hasher = hashes.Hash(_HASHES[digest]())
        hasher.update(data)
        if not hmac.compare_digest(_b64(digest_value, "DigestValue"), hasher.finalize()):
            raise FailedCheck(f"signature does not verify: digest mismatch for reference {index}")
        covered.append(payload)
    return covered


def verify_enveloped(
    assertion: Element,
    trust: TrustStore,
    now: datetime,
    *,
    accept_sha1: bool,
    ids: ElementIds | None = None,
) -> x509.Certificate:
    """Check the enveloped signature of *assertion*; the trusted signing certificate.

    *ids*: what :func:`check_envelope_ids` returned for the message.  Raises
    :class:`FailedAuthentication` (unsigned, untrusted), :class:`FailedCheck` (bad value
    or digest), :class:`UnsupportedAlgorithm` or :class:`SignatureWrapping`.
    """
    signatures = list(assertion.iterchildren(_SIGNATURE))
    if not signatures:
        raise FailedAuthentication("the assertion is not signed")
    if len(signatures) > 1:
        raise SignatureWrapping("the assertion carries more than one signature")
    signature = signatures[0]
    own_id = assertion.get("ID") or ""
    uris = _check_algorithms(signature, accept_sha1)
    if uris != [f"#{own_id}"]:
        raise SignatureWrapping("the assertion signature does not reference the assertion")
    chain = certificates_of(_first(signature, _KEY_INFO))
    if not chain:
        raise FailedAuthentication("the assertion signature names no issuer certificate")
    signer = trust.check(chain, now)
    covered = _check_signature(
        assertion, signature, signer, now, accept_sha1=accept_sha1, id_names=("ID",), ids=ids
    )
    if len(covered) != 1 or covered[0] is not assertion:
        raise SignatureWrapping("the signed node is not the assertion that was read")
    return signer


def verify_proof(
    root: Element,
    security: Element,
    cert: x509.Certificate,
    now: datetime,
    *,
    accept_sha1: bool,
    ids: ElementIds | None = None,
) -> list[Element]:
    """Check the one ``ds:Signature`` child of *security* with *cert*; the elements it covers.

    References resolve in *root* (the envelope), so a proof that also signs the
    Body verifies; the elements returned are those of *root* itself.  *ids*: what
    :func:`check_envelope_ids` returned for the message.  Raises
    :class:`FailedCheck` / :class:`FailedAuthentication`.
    """
    proofs = list(security.iterchildren(_SIGNATURE))
    if len(proofs) != 1:
        raise FailedAuthentication(
            "no holder-of-key proof" if not proofs else "more than one message signature"
        )
    uris = _check_algorithms(proofs[0], accept_sha1)
    if not uris or not all(u.startswith("#") and len(u) > 1 for u in uris):
        raise FailedCheck("the message signature must reference elements by ID")
    return _check_signature(
        root, proofs[0], cert, now, accept_sha1=accept_sha1, id_names=("Id", "ID", "id"), ids=ids
    )


def fingerprint(cert: x509.Certificate) -> bytes:
    """The SHA-256 of *cert*'s DER bytes."""
    return _facts_of(cert).fingerprint


class TrustStore:
    """Trusted SAML assertion issuers: pinned certificates, or certificates chaining to a CA.

    A certificate found trusted is remembered (bounded, for ``cache_seconds``
    and never past its own expiry) so the chain is not rebuilt per request.
    """

    def __init__(
        self,
        cas: Iterable[x509.Certificate] = (),
        pinned: Iterable[x509.Certificate] = (),
        *,
        cache_seconds: float = 300.0,
        cache_size: int = 256,
    ) -> None:
        self._cas = tuple(cas)
        self._store = verification.Store(list(self._cas)) if self._cas else None
        self._pinned = {fingerprint(c) for c in pinned}
        self._cache: OrderedDict[bytes, datetime] = OrderedDict()
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        if self._store is None and not self._pinned:
            raise ConfigError("XUA verification needs trusted CAs or pinned issuer certificates")

    @classmethod
    def load(
        cls, ca_files: Sequence[Path] = (), certificate_files: Sequence[Path] = ()
    ) -> TrustStore:
        def read(paths: Sequence[Path]) -> list[x509.Certificate]:
            found: list[x509.Certificate] = []
            for path in paths:
                try:
                    found.extend(x509.load_pem_x509_certificates(path.read_bytes()))
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"XUA trust material {path} is not usable: {exc}") from exc
            return found

        return cls(read(ca_files), read(certificate_files))

    def check(self, chain: Sequence[x509.Certificate], now: datetime) -> x509.Certificate:
        """``chain[0]`` if trusted at *now*, else :class:`FailedAuthentication`."""
        leaf = chain[0]
        facts = _facts_of(leaf)
        if not facts.not_before <= now <= facts.not_after:
            raise FailedAuthentication("the issuer certificate is outside its validity period")
        key = facts.fingerprint
        until = self._cache.get(key)
        if until is not None and now < until:
            self._cache.move_to_end(key)
            return leaf
        if key not in self._pinned:
            self._chain(leaf, chain[1:], now)
        self._cache[key] = min(now + timedelta(seconds=self._cache_seconds), facts.not_after)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return leaf

    def _chain(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], now: datetime
    ) -> None:
        if self._store is None:
            raise FailedAuthentication("the assertion issuer is not a trusted certificate")
        builder = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
        )
        try:
            builder.build_client_verifier().verify(leaf, list(intermediates))
        except verification.VerificationError as exc:
            log.info("XUA issuer certificate refused: %s", exc)
            raise FailedAuthentication(
                "the assertion issuer does not chain to a trusted CA"
            ) from exc
