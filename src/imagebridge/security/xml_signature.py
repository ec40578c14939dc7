"""Cross-Enterprise User Assertion [ITI-40], X-Service Provider: XML signature checks.

The pieces of XUA verification that touch XML signatures and certificates:

* :func:`check_envelope_ids` refuses signature wrapping by structure: no ID
  (``ID``/``Id``/``wsu:Id``/``xml:id``) used twice anywhere in the message,
  and no SAML assertion outside the one the header carries (other than its
  own Evidence);
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
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
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
from imagebridge.wire.xml import Element, children

log = logging.getLogger(__name__)

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


def check_envelope_ids(root: Element, assertion: Element, max_elements: int) -> None:
    """Refuse duplicate IDs in *root* and SAML assertions other than *assertion* (and its Evidence).

    Raises :class:`SignatureWrapping`; :class:`~imagebridge.errors.SecurityHeaderTooLarge`
    is the caller's business, *max_elements* only bounds this walk.
    """
    seen: set[str] = set()
    assertion_tag = ns.q(ns.SAML2, "Assertion")
    for count, el in enumerate(root.iter(), 1):
        if count > max_elements:
            break
        for raw_name, raw_value in el.attrib.items():
            name, value = str(raw_name), str(raw_value)
            local = name.rpartition("}")[2]
            if local in ID_NAMES:
                if value in seen:
                    raise SignatureWrapping("an ID is used twice in the message")
                seen.add(value)
        if el.tag == assertion_tag and el is not assertion:
            ancestors = list(el.iterancestors())
            inside = assertion in ancestors and any(
                a.tag == ns.q(ns.SAML2, "Evidence") for a in ancestors
            )
            if not inside:
                raise SignatureWrapping("a SAML assertion lies outside the one in wsse:Security")


def _algorithms(accept_sha1: bool) -> tuple[frozenset[SignatureMethod], frozenset[DigestAlgorithm]]:
    signatures = set(STRONG_SIGNATURES)
    digests = set(STRONG_DIGESTS)
    if accept_sha1:
        signatures.add(SignatureMethod.RSA_SHA1)
        digests.add(DigestAlgorithm.SHA1)
    return frozenset(signatures), frozenset(digests)


def _check_algorithms(signature: Element, accept_sha1: bool) -> list[str]:
    """The Reference URIs of *signature*, after checking every algorithm it names."""
    signatures, digests = _algorithms(accept_sha1)
    info = signature.find(_ds("SignedInfo"))
    if info is None:
        raise FailedCheck("ds:Signature has no SignedInfo")
    method = info.find(_ds("SignatureMethod"))
    c14n = info.find(_ds("CanonicalizationMethod"))
    if method is None or method.get("Algorithm") not in {m.value for m in signatures}:
        raise UnsupportedAlgorithm("signature algorithm not accepted")
    if c14n is None or c14n.get("Algorithm") not in TRANSFORMS:
        raise UnsupportedAlgorithm("canonicalization algorithm not accepted")
    uris: list[str] = []
    for reference in info.iter(_ds("Reference")):
        digest = reference.find(_ds("DigestMethod"))
        if digest is None or digest.get("Algorithm") not in {d.value for d in digests}:
            raise UnsupportedAlgorithm("digest algorithm not accepted")
        for transform in reference.iter(_ds("Transform")):
            if transform.get("Algorithm") not in TRANSFORMS:
                raise UnsupportedAlgorithm("signature transform not accepted")
        uris.append(reference.get("URI") or "")
    return uris


_CERTIFICATES = 256
"""Decoded ``ds:X509Certificate`` values kept (by their DER bytes), and their public keys."""
_certificates: OrderedDict[bytes, x509.Certificate] = OrderedDict()
_public_keys: OrderedDict[x509.Certificate, rsa.RSAPublicKey] = OrderedDict()


def _public_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    """The RSA key of *cert*, loaded once per certificate (OpenSSL prepares a key per load)."""
    key = _public_keys.get(cert)
    if key is None:
        loaded = cert.public_key()
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise FailedCheck("signature cannot be checked: the certificate holds no RSA key")
        key = _public_keys[cert] = loaded
        while len(_public_keys) > _CERTIFICATES:
            _public_keys.popitem(last=False)
    return key


def certificates_of(key_info: Element | None) -> tuple[x509.Certificate, ...]:
    """The ``ds:X509Certificate`` values under *key_info*, decoded.

    Decoded certificates are remembered by their DER bytes (bounded): a
    partner sends the same issuer and holder-of-key certificates every time.
    """
    if key_info is None:
        return ()
    found: list[x509.Certificate] = []
    for el in key_info.iter(_ds("X509Certificate")):
        try:
            der = base64.b64decode("".join((el.text or "").split()), validate=True)
            cert = _certificates.get(der)
            if cert is None:
                cert = x509.load_der_x509_certificate(der)
                _certificates[der] = cert
                while len(_certificates) > _CERTIFICATES:
                    _certificates.popitem(last=False)
            else:
                _certificates.move_to_end(der)
            found.append(cert)
        except ValueError as exc:
            raise FailedAuthentication("an X509Certificate is not a certificate") from exc
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
_EC = "http://www.w3.org/2001/10/xml-exc-c14n#"
_DSIG11 = "http://www.w3.org/2009/xmldsig11#"
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
        inclusive = method.find(f"{{{_EC}}}InclusiveNamespaces[@PrefixList]")
        if inclusive is not None:
            prefixes = (inclusive.get("PrefixList") or "").split(" ")
    return etree.tostring(
        node,
        method="c14n",
        exclusive=exclusive,
        with_comments=comments,
        inclusive_ns_prefixes=prefixes,
    )


def _reparse(data: bytes) -> Element:
    """A tree from bytes this module serialised itself (canonical XML: no DTD, no entities)."""
    parser = etree.XMLParser(
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
    key_info = signature.find(_ds("KeyInfo"))
    if key_info is None:
        return
    value = key_info.find(_ds("KeyValue"))
    der = key_info.find(f"{{{_DSIG11}}}DEREncodedKeyValue")
    if value is None and der is None:
        return
    numbers = key.public_numbers()
    if value is not None:
        rsa_value = value.find(_ds("RSAKeyValue"))
        if rsa_value is None:
            raise FailedCheck("signature cannot be checked: KeyValue is not an RSA key")
        n = int.from_bytes(_b64(rsa_value.find(_ds("Modulus")), "Modulus"), "big")
        e = int.from_bytes(_b64(rsa_value.find(_ds("Exponent")), "Exponent"), "big")
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


def _resolve(scope: Element, uri: str | None, id_names: Sequence[str]) -> Element:
    if not uri or not uri.startswith("#") or uri.startswith("#xpointer("):
        raise FailedCheck("signature cannot be checked: references must name an element by ID")
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
) -> list[Element]:
    """Verify *signature* with *cert*; the elements of *scope* its References cover, in order.

    *signature* has passed :func:`_check_algorithms`.  Raises
    :class:`FailedCheck`, :class:`FailedAuthentication`, :class:`UnsupportedAlgorithm`
    or :class:`SignatureWrapping`.
    """
    if not any(schema.validate(signature) for schema in _schemas()):
        raise FailedCheck("signature cannot be checked: not a valid ds:Signature")
    signatures, digests = _algorithms(accept_sha1)
    info = signature.find(_ds("SignedInfo"))
    assert info is not None  # the schema requires it
    method = info.find(_ds("SignatureMethod"))
    algorithm = method.get("Algorithm") if method is not None else None
    if algorithm not in {m.value for m in signatures}:
        raise UnsupportedAlgorithm("signature algorithm not accepted")
    signed_info = _c14n(info, info.find(_ds("CanonicalizationMethod")))
    value = _b64(signature.find(_ds("SignatureValue")), "SignatureValue")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise FailedAuthentication("signing certificate refused: outside its validity period")
    key = _public_key(cert)
    try:
        key.verify(value, signed_info, padding.PKCS1v15(), _HASHES[algorithm or ""]())
    except InvalidSignature as exc:
        raise FailedCheck("signature does not verify: bad signature value") from exc
    _check_key_values(signature, key)
    covered: list[Element] = []
    verified = _reparse(signed_info)  # read what was signed, not what the tree says
    for index, reference in enumerate(verified.findall(_ds("Reference"))):
        digest_method = reference.find(_ds("DigestMethod"))
        digest_value = reference.find(_ds("DigestValue"))
        payload = _resolve(scope, reference.get("URI"), id_names)
        transforms_node = reference.find(_ds("Transforms"))
        transforms = [] if transforms_node is None else transforms_node.findall(_ds("Transform"))
        for transform in transforms:
            if transform.get("Algorithm") not in TRANSFORMS:
                raise UnsupportedAlgorithm("signature transform not accepted")
        data = _digest_input(payload, transforms, signature)
        digest = digest_method.get("Algorithm") if digest_method is not None else None
        if digest not in {d.value for d in digests}:
            raise UnsupportedAlgorithm("digest algorithm not accepted")
        hasher = hashes.Hash(_HASHES[digest or ""]())
        hasher.update(data)
        if not hmac.compare_digest(_b64(digest_value, "DigestValue"), hasher.finalize()):
            raise FailedCheck(f"signature does not verify: digest mismatch for reference {index}")
        covered.append(payload)
    return covered


def verify_enveloped(
    assertion: Element, trust: TrustStore, now: datetime, *, accept_sha1: bool
) -> x509.Certificate:
    """Check the enveloped signature of *assertion*; the trusted signing certificate.

    Raises :class:`FailedAuthentication` (unsigned, untrusted), :class:`FailedCheck`
    (bad value or digest), :class:`UnsupportedAlgorithm` or :class:`SignatureWrapping`.
    """
    signatures = children(assertion, ns.DS, "Signature")
    if not signatures:
        raise FailedAuthentication("the assertion is not signed")
    if len(signatures) > 1:
        raise SignatureWrapping("the assertion carries more than one signature")
    signature = signatures[0]
    own_id = assertion.get("ID") or ""
    uris = _check_algorithms(signature, accept_sha1)
    if uris != [f"#{own_id}"]:
        raise SignatureWrapping("the assertion signature does not reference the assertion")
    chain = certificates_of(signature.find(_ds("KeyInfo")))
    if not chain:
        raise FailedAuthentication("the assertion signature names no issuer certificate")
    signer = trust.check(chain, now)
    covered = _check_signature(
        assertion, signature, signer, now, accept_sha1=accept_sha1, id_names=("ID",)
    )
    if len(covered) != 1 or covered[0] is not assertion:
        raise SignatureWrapping("the signed node is not the assertion that was read")
    return signer


def verify_proof(
    root: Element, security: Element, cert: x509.Certificate, now: datetime, *, accept_sha1: bool
) -> list[Element]:
    """Check the one ``ds:Signature`` child of *security* with *cert*; the elements it covers.

    References resolve in *root* (the envelope), so a proof that also signs the
    Body verifies; the elements returned are those of *root* itself.  Raises
    :class:`FailedCheck` / :class:`FailedAuthentication`.
    """
    proofs = children(security, ns.DS, "Signature")
    if len(proofs) != 1:
        raise FailedAuthentication(
            "no holder-of-key proof" if not proofs else "more than one message signature"
        )
    uris = _check_algorithms(proofs[0], accept_sha1)
    if not uris or not all(u.startswith("#") and len(u) > 1 for u in uris):
        raise FailedCheck("the message signature must reference elements by ID")
    return _check_signature(
        root, proofs[0], cert, now, accept_sha1=accept_sha1, id_names=("Id", "ID", "id")
    )


def fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


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
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise FailedAuthentication("the issuer certificate is outside its validity period")
        key = fingerprint(leaf)
        until = self._cache.get(key)
        if until is not None and now < until:
            self._cache.move_to_end(key)
            return leaf
        if key not in self._pinned:
            self._chain(leaf, chain[1:], now)
        self._cache[key] = min(
            now + timedelta(seconds=self._cache_seconds), leaf.not_valid_after_utc
        )
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
