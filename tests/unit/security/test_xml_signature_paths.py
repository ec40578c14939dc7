"""The fast paths of XUA signature verification refuse what they must.

* References resolved through :class:`ElementIds` (the IDs
  :func:`check_envelope_ids` collects) find what the XPath search finds, for
  every scope, ID and accepted attribute name; the verifier takes that path;
* a changed SignedInfo (algorithm, transform, reference, digest), whether its
  signature value is left as it was or made anew over the changed bytes, is
  refused, and signxml (the oracle) refuses it too;
* holder-of-key proof wrapping (the signed Timestamp moved, a decoy in its
  place) is refused;
* what is kept per certificate (decoded object, fingerprint, key, validity)
  is that certificate's.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import threading
from collections.abc import Callable

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from imagebridge.errors import (
    FailedAuthentication,
    FailedCheck,
    SignatureWrapping,
    UnsupportedAlgorithm,
    WsSecurityError,
)
from imagebridge.security import xml_signature
from imagebridge.security.saml_issuer import SigningKey
from imagebridge.security.xml_signature import (
    TrustStore,
    certificates_of,
    check_envelope_ids,
    fingerprint,
    verify_enveloped,
)
from imagebridge.wire import ns
from imagebridge.wire.xml import Element, parse_xml
from tests.unit.security.test_saml_issue_verify import (
    AUDIENCE,
    PRINCIPAL,
    RSA,
    make_issuer,
    make_verifier,
)
from tests.unit.security.test_saml_issue_verify import NOW as ISSUED
from tests.unit.security.test_xml_signature import (
    NOW,
    _agree_enveloped,
    _envelope,
    _parts,
    _signature_of,
)

DS = ns.DS
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
HMAC_SHA1 = "http://www.w3.org/2000/09/xmldsig#hmac-sha1"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
MD5 = "http://www.w3.org/2001/04/xmldsig-more#md5"
INCLUSIVE = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
XSLT = "http://www.w3.org/TR/1999/REC-xslt-19991116"
XPATH_FILTER = "http://www.w3.org/TR/1999/REC-xpath-19991116"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=RSA)


@pytest.fixture(scope="module")
def key(ca: trustme.CA) -> SigningKey:
    leaf = ca.issue_cert("imagebridge.example.org", key_type=RSA)
    return SigningKey.from_pem(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())


@pytest.fixture(scope="module")
def trust(ca: trustme.CA) -> TrustStore:
    return TrustStore([x509.load_pem_x509_certificate(ca.cert_pem.bytes())])


# --- ID index against the XPath search ------------------------------------------------------

_TREE = b"""<r xmlns:w="urn:w" xmlns:o="urn:o" ID="a">
  <s Id="b"><t id="c"><u w:Id="d"/><v o:ID="e" xml:id="f"/></t></s>
  <x Id="g" ID="h"><y myID="z" xid="z"/></x>
</r>"""
_NAMES = [("ID",), ("Id",), ("id",), ("Id", "ID", "id"), ("ID", "Id")]
_VALUES = ["a", "b", "c", "d", "e", "f", "g", "h", "z", "missing"]


def _outcome(scope: Element, uri: str, names: tuple[str, ...], ids: object) -> object:
    try:
        return xml_signature._resolve(scope, uri, names, ids)  # type: ignore[arg-type]
    except WsSecurityError as exc:
        return type(exc)


def test_index_resolves_what_the_xpath_search_resolves() -> None:
    root = parse_xml(_TREE)
    ids = check_envelope_ids(root, root, 1000)
    assert ids is not None
    checked = 0
    for scope, value, names in itertools.product(root.iter(), _VALUES, _NAMES):
        uri = f"#{value}"
        expected = _outcome(scope, uri, names, None)
        assert _outcome(scope, uri, names, ids) is expected, (scope.tag, value, names)
        checked += expected is not FailedCheck
    assert checked > 20  # found ones, not only refusals
    for uri in ("", "a", "#xpointer(id('a'))", "#xpointer(/)"):
        assert _outcome(root, uri, ("ID",), ids) is FailedCheck


def test_index_of_another_message_is_not_used() -> None:
    first, second = parse_xml(_TREE), parse_xml(_TREE)
    ids = check_envelope_ids(first, first, 1000)
    found = xml_signature._resolve(second, "#d", ("Id",), ids)
    assert found.getroottree().getroot() is second


def test_a_walk_cut_short_gives_no_index() -> None:
    root = parse_xml(_TREE)
    assert check_envelope_ids(root, root, 3) is None


def test_verifier_resolves_through_the_index(
    key: SigningKey, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = make_issuer(key, reuse_for=0)

    def no_xpath(*args: object, **kwargs: object) -> object:
        raise AssertionError("the message was searched again")

    with monkeypatch.context() as patch:
        patch.setattr(xml_signature, "_RESOLVE", no_xpath)
        caller = make_verifier(ca).verify([issuer.security_header(PRINCIPAL, AUDIENCE)])
    assert caller.subject_id == PRINCIPAL.subject_id
    # a message too large for the ID walk is still verified, by the XPath search
    small = make_verifier(ca, max_header_elements=5)
    assert small.verify([issuer.security_header(PRINCIPAL, AUDIENCE)]).subject_id


# --- changed SignedInfo -----------------------------------------------------------------------


def _info(envelope: Element) -> Element:
    info = _signature_of(envelope).find(ns.q(DS, "SignedInfo"))
    assert info is not None
    return info


def _set(path: str, attribute: str, value: str) -> Callable[[Element], None]:
    def change(envelope: Element) -> None:
        found = _info(envelope).find(path, {"ds": DS})
        assert found is not None
        found.set(attribute, value)

    return change


_TRANSFORMS = "ds:Reference/ds:Transforms/ds:Transform"
Unsupported = UnsupportedAlgorithm


def _method(algorithm: str) -> Callable[[Element], None]:
    return _set("ds:SignatureMethod", "Algorithm", algorithm)


def _c14n_method(algorithm: str) -> Callable[[Element], None]:
    return _set("ds:CanonicalizationMethod", "Algorithm", algorithm)


def _digest(algorithm: str) -> Callable[[Element], None]:
    return _set("ds:Reference/ds:DigestMethod", "Algorithm", algorithm)


def _transform(position: int, algorithm: str) -> Callable[[Element], None]:
    return _set(f"{_TRANSFORMS}[{position}]", "Algorithm", algorithm)


def _drop(path: str) -> Callable[[Element], None]:
    def change(envelope: Element) -> None:
        found = _info(envelope).find(path, {"ds": DS})
        assert found is not None
        parent = found.getparent()
        assert parent is not None
        parent.remove(found)

    return change


def _second_reference(envelope: Element) -> None:
    info = _info(envelope)
    reference = info.find("ds:Reference", {"ds": DS})
    assert reference is not None
    twin = copy.deepcopy(reference)
    reference.addnext(twin)


def _issuer_referenced(envelope: Element) -> None:
    """The Reference names the assertion's Issuer (given an ID) instead of the assertion."""
    issuer = _parts(envelope)[2].find(ns.q(ns.SAML2, "Issuer"))
    assert issuer is not None
    issuer.set("ID", "issuer-1")
    _set("ds:Reference", "URI", "#issuer-1")(envelope)


CHANGES: list[tuple[str, Callable[[Element], None], type[WsSecurityError]]] = [
    ("signature method rsa-sha512", _method(RSA_SHA512), FailedCheck),
    ("signature method hmac", _method(HMAC_SHA1), Unsupported),
    ("signature method rsa-sha1", _method(RSA_SHA1), Unsupported),
    ("c14n inclusive", _c14n_method(INCLUSIVE), FailedCheck),
    ("c14n xslt", _c14n_method(XSLT), Unsupported),
    ("digest sha512", _digest(SHA512), FailedCheck),
    ("digest md5", _digest(MD5), Unsupported),
    ("transform inclusive", _transform(2, INCLUSIVE), FailedCheck),
    ("transform xslt", _transform(2, XSLT), Unsupported),
    ("transform xpath", _transform(1, XPATH_FILTER), Unsupported),
    ("no enveloped transform", _drop(f"{_TRANSFORMS}[1]"), FailedCheck),
    ("no transforms", _drop("ds:Reference/ds:Transforms"), FailedCheck),
    ("reference elsewhere", _issuer_referenced, SignatureWrapping),
    ("reference whole document", _set("ds:Reference", "URI", ""), SignatureWrapping),
    ("two references", _second_reference, SignatureWrapping),
]


def _resign(envelope: Element, key: SigningKey) -> None:
    """Make the SignatureValue anew over the changed SignedInfo (a signer that means it)."""
    info = _info(envelope)
    method = info.find("ds:CanonicalizationMethod", {"ds": DS})
    assert method is not None
    exclusive = method.get("Algorithm") == "http://www.w3.org/2001/10/xml-exc-c14n#"
    data = etree.tostring(info, method="c14n", exclusive=exclusive)
    value = _signature_of(envelope).find(ns.q(DS, "SignatureValue"))
    assert value is not None
    value.text = base64.b64encode(
        key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    ).decode()


@pytest.mark.parametrize(("name", "change", "expected"), CHANGES, ids=[c[0] for c in CHANGES])
def test_changed_signed_info_is_refused(
    key: SigningKey,
    trust: TrustStore,
    name: str,
    change: Callable[[Element], None],
    expected: type[WsSecurityError],
) -> None:
    envelope = _envelope(key)
    change(envelope)
    error = _agree_enveloped(envelope, trust)  # signxml refuses it too
    assert isinstance(error, expected), (name, error)


def _digest_value_changed(envelope: Element) -> None:
    value = _info(envelope).find("ds:Reference/ds:DigestValue", {"ds": DS})
    assert value is not None and value.text
    value.text = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()


RESIGNED: list[tuple[str, Callable[[Element], None], type[WsSecurityError]]] = [
    ("digest value", _digest_value_changed, FailedCheck),
    ("digest md5", _digest(MD5), Unsupported),
    ("digest sha512", _digest(SHA512), FailedCheck),
    ("transform inclusive", _transform(2, INCLUSIVE), FailedCheck),
    ("transform xslt", _transform(2, XSLT), Unsupported),
    ("no enveloped transform", _drop(f"{_TRANSFORMS}[1]"), FailedCheck),
    ("reference elsewhere", _issuer_referenced, SignatureWrapping),
    ("two references", _second_reference, SignatureWrapping),
]


@pytest.mark.parametrize(("name", "change", "expected"), RESIGNED, ids=[c[0] for c in RESIGNED])
def test_resigned_changed_signed_info_is_refused(
    key: SigningKey,
    trust: TrustStore,
    name: str,
    change: Callable[[Element], None],
    expected: type[WsSecurityError],
) -> None:
    """The signature value verifies: what SignedInfo now says is refused on its own."""
    envelope = _envelope(key)
    change(envelope)
    _resign(envelope, key)
    error = _agree_enveloped(envelope, trust)
    assert isinstance(error, expected), (name, error)


def test_resigned_unchanged_signed_info_verifies(key: SigningKey, trust: TrustStore) -> None:
    """The control of the cases above: signing anew over the same bytes changes nothing."""
    envelope = _envelope(key)
    _resign(envelope, key)
    assert _agree_enveloped(envelope, trust) is None


def test_sha1_only_when_accepted(key: SigningKey, trust: TrustStore) -> None:
    envelope = _envelope(key)
    _digest("http://www.w3.org/2000/09/xmldsig#sha1")(envelope)
    _resign(envelope, key)
    assertion = _parts(envelope)[2]
    with pytest.raises(UnsupportedAlgorithm):
        verify_enveloped(assertion, trust, NOW, accept_sha1=False)
    with pytest.raises(FailedCheck):  # accepted, but the digest is SHA-256's
        verify_enveloped(assertion, trust, NOW, accept_sha1=True)


# --- holder-of-key proof wrapping ---------------------------------------------------------


def _timestamp(security: Element) -> Element:
    found = security.find(ns.q(ns.WSU, "Timestamp"))
    assert found is not None
    return found


@pytest.mark.parametrize("same_id", [True, False])
def test_signed_timestamp_moved_behind_a_decoy_is_refused(
    key: SigningKey, ca: trustme.CA, same_id: bool
) -> None:
    issuer = make_issuer(key, reuse_for=0)
    security = issuer.security_header(PRINCIPAL, AUDIENCE)
    signed = _timestamp(security)
    decoy = copy.deepcopy(signed)
    if not same_id:
        decoy.set(ns.q(ns.WSU, "Id"), "TS-decoy")
    signed.addprevious(decoy)
    wrapper = etree.SubElement(security, "{urn:example:attacker}Wrapper")
    wrapper.append(signed)  # the proof still finds what it signed, by its ID
    expected = SignatureWrapping if same_id else FailedAuthentication
    with pytest.raises(expected):
        make_verifier(ca).verify([security])


def test_changed_timestamp_is_refused(key: SigningKey, ca: trustme.CA) -> None:
    issuer = make_issuer(key, reuse_for=0)
    security = issuer.security_header(PRINCIPAL, AUDIENCE)
    created = _timestamp(security).find(ns.q(ns.WSU, "Created"))
    assert created is not None and created.text
    created.text = created.text.replace(":00", ":01", 1)
    with pytest.raises(FailedCheck):
        make_verifier(ca).verify([security])


# --- what is kept per certificate ---------------------------------------------------------


def test_certificate_facts_are_the_certificates(key: SigningKey, ca: trustme.CA) -> None:
    cert = key.chain[0]
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(cert) == hashlib.sha256(der).digest()
    other = x509.load_pem_x509_certificate(
        ca.issue_cert("other.example.org", key_type=RSA).cert_chain_pems[0].bytes()
    )
    assert fingerprint(other) != fingerprint(cert)
    assert xml_signature._public_key(cert).public_numbers() == (
        cert.public_key().public_numbers()  # type: ignore[union-attr]
    )
    copy_of = x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert copy_of is not cert and fingerprint(copy_of) == fingerprint(cert)
    for n in range(xml_signature._CERTIFICATES + 5):  # bounded
        xml_signature._facts_of(
            x509.load_der_x509_certificate(other.public_bytes(serialization.Encoding.DER))
        )
        assert len(xml_signature._facts) <= xml_signature._CERTIFICATES, n
    assert fingerprint(cert) == fingerprint(copy_of)  # again, after eviction


def test_same_certificate_text_is_decoded_once(
    key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    der = key.chain[0].public_bytes(serialization.Encoding.DER)

    def key_info(text: str) -> Element:
        el = etree.Element(ns.q(DS, "KeyInfo"))
        data = etree.SubElement(el, ns.q(DS, "X509Data"))
        etree.SubElement(data, ns.q(DS, "X509Certificate")).text = text
        return el

    one_line = base64.b64encode(der).decode()
    (first,) = certificates_of(key_info(one_line))
    (wrapped,) = certificates_of(key_info(base64.encodebytes(der).decode()))
    assert wrapped is first  # other text, same bytes: the same object
    with monkeypatch.context() as patch:
        patch.setattr(base64, "b64decode", None)  # not decoded again
        assert certificates_of(key_info(one_line))[0] is first
    with pytest.raises(FailedAuthentication):  # a bad text is never kept
        certificates_of(key_info(one_line[:-8] + "!!!!!!!!"))
    with pytest.raises(FailedAuthentication):
        certificates_of(key_info(one_line[:-8] + "!!!!!!!!"))


# --- threads ----------------------------------------------------------------------------


def test_signatures_verify_in_threads(key: SigningKey, trust: TrustStore) -> None:
    """Each thread canonicalises and reparses with its own parser, on its own messages."""
    issuer = make_issuer(key, reuse_for=0)
    blocks = [issuer.security_header(PRINCIPAL, AUDIENCE) for _ in range(24)]
    errors: list[Exception] = []

    def run(part: list[Element]) -> None:
        for block in part:
            assertion = block.find(ns.q(ns.SAML2, "Assertion"))
            try:
                assert assertion is not None
                ids = check_envelope_ids(block, assertion, 10_000)
                verify_enveloped(assertion, trust, ISSUED, accept_sha1=False, ids=ids)
            except Exception as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(blocks[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
