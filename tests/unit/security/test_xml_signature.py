"""XML signature checks of XUA verification, against signxml's own verifier as the oracle.

:mod:`imagebridge.security.xml_signature` verifies on the parsed request itself
instead of on signxml's serialised copies; every case here (valid, tampered,
other canonicalisations, comments, namespaces in scope, proofs over the Body)
must get the same verdict from both, whether References resolve through the
:class:`~imagebridge.security.xml_signature.ElementIds` of
:func:`~imagebridge.security.xml_signature.check_envelope_ids` (as the verifier
does) or by an XPath search of the tree, and the decoded-certificate cache must
return the certificate of the bytes given.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, SignatureConstructionMethod
from signxml.signer import SignatureReference, XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from imagebridge.errors import (
    FailedAuthentication,
    FailedCheck,
    SignatureWrapping,
    UnsupportedAlgorithm,
    WsSecurityError,
)
from imagebridge.security import xml_signature
from imagebridge.security.saml_issuer import AssertionIssuer, IssuerSettings, SigningKey
from imagebridge.security.xml_signature import (
    ElementIds,
    TrustStore,
    certificates_of,
    check_envelope_ids,
    verify_enveloped,
    verify_proof,
)
from imagebridge.wire import ns
from imagebridge.wire.saml import render_assertion
from imagebridge.wire.xml import Element, parse_xml
from tests.unit.security.test_saml_issue_verify import AUDIENCE, HOME, PRINCIPAL, RSA

NOW = datetime.now(UTC).replace(microsecond=0)
SOAP = "http://www.w3.org/2003/05/soap-envelope"
EXTRA = "urn:example:in-scope"
EXC = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
INC = CanonicalizationMethod.CANONICAL_XML_1_0


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


def _unsigned(key: SigningKey) -> Element:
    issuer = AssertionIssuer(key, IssuerSettings(home_community_id=HOME), clock=lambda: NOW)
    el = render_assertion(issuer.assertion_model(PRINCIPAL, AUDIENCE, now=NOW))
    issuer_el = el.find(ns.q(ns.SAML2, "Issuer"))
    assert issuer_el is not None
    placeholder = etree.Element(ns.q(ns.DS, "Signature"), nsmap={"ds": ns.DS})
    placeholder.set("Id", "placeholder")
    issuer_el.addnext(placeholder)
    return el


class _PrefixListSigner(XMLSigner):
    """signxml leaves the Reference's PrefixList out of an enveloped signature (yet digests
    with it); this signer writes it into the c14n Transform."""

    def _build_transforms_for_reference(  # type: ignore[no-untyped-def]
        self, *, transforms_node, reference, exclude_c14n_transform_element=True
    ) -> None:
        super()._build_transforms_for_reference(
            transforms_node=transforms_node,
            reference=reference,
            exclude_c14n_transform_element=exclude_c14n_transform_element,
        )
        if reference.inclusive_ns_prefixes:
            c14n = transforms_node[-1]
            assert c14n.get("Algorithm") == reference.c14n_method.value
            prefixes = " ".join(reference.inclusive_ns_prefixes)
            etree.SubElement(c14n, f"{{{EXC.value}}}InclusiveNamespaces", PrefixList=prefixes)


def _sign(
    key: SigningKey,
    el: Element,
    c14n: CanonicalizationMethod,
    prefixes: list[str] | None,
    info_prefixes: list[str] | None = None,
) -> Element:
    """*el* signed (enveloped) as it stands: in its tree, namespaces in scope included.

    *prefixes*: the InclusiveNamespaces PrefixList of the Reference's c14n transform;
    *info_prefixes*: that of SignedInfo's CanonicalizationMethod.
    """
    reference = SignatureReference(URI=f"#{el.get('ID')}", inclusive_ns_prefixes=prefixes)
    signed: Element = _PrefixListSigner(
        method=SignatureConstructionMethod.enveloped, c14n_algorithm=c14n
    ).sign(
        el,
        key=key.private_key,
        cert=list(key.chain[:1]),
        reference_uri=[reference],
        inclusive_ns_prefixes=info_prefixes,
    )
    return signed


def _envelope(
    key: SigningKey,
    c14n: CanonicalizationMethod = EXC,
    prefixes: list[str] | None = None,
    *,
    in_place: bool = True,
    sign_body: bool = False,
    info_prefixes: list[str] | None = None,
) -> Element:
    """An envelope (with a namespace in scope that nothing uses) carrying a signed assertion.

    *in_place*: the assertion is signed where it lies in the envelope; otherwise alone.
    """
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP, "x": EXTRA, "wsu": ns.WSU})
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    body.set(ns.q(ns.WSU, "Id"), "Body-1")
    etree.SubElement(body, f"{{{EXTRA}}}Payload").text = "query"
    issuer = AssertionIssuer(key, IssuerSettings(home_community_id=HOME), clock=lambda: NOW)
    unsigned = _unsigned(key)
    assertion = unsigned if in_place else _sign(key, unsigned, c14n, prefixes, info_prefixes)
    security = issuer.security_for(
        assertion, assertion.get("ID") or "", NOW, issuer.profile_for(None)
    )
    header.append(security)
    if in_place:
        security.replace(assertion, _sign(key, assertion, c14n, prefixes, info_prefixes))
    if sign_body:  # a proof over the Timestamp and the Body
        proof = security.find(ns.q(ns.DS, "Signature"))
        timestamp = security.find(ns.q(ns.WSU, "Timestamp"))
        assert proof is not None and timestamp is not None
        security.remove(proof)
        signed: Element = XMLSigner(
            method=SignatureConstructionMethod.detached, c14n_algorithm=EXC
        ).sign(
            envelope,
            key=key.private_key,
            reference_uri=[f"#{timestamp.get(ns.q(ns.WSU, 'Id'))}", "#Body-1"],
        )
        security.append(signed)
    return parse_xml(etree.tostring(envelope))  # as received


def _parts(envelope: Element) -> tuple[Element, Element, Element]:
    security = envelope.find(f"{{{SOAP}}}Header/{{{ns.WSSE}}}Security")
    assert security is not None
    assertion = security.find(ns.q(ns.SAML2, "Assertion"))
    assert assertion is not None
    return envelope, security, assertion


def _signxml(scope: Element, cert: x509.Certificate, location: str, id_attribute: str | None,
             references: int | bool) -> list[bytes] | Exception:  # fmt: skip
    """What the signxml verifier (the former implementation) says."""
    config = SignatureConfiguration(
        location=location, expect_references=references, verification_time=NOW
    )
    try:
        result = XMLVerifier().verify(
            scope, x509_cert=cert, expect_config=config, id_attribute=id_attribute
        )
    except Exception as exc:
        return exc
    return [r.signed_data for r in (result if isinstance(result, list) else [result])]


def _ids(envelope: Element) -> ElementIds | None:
    """What the verifier resolves References with (None if the envelope has wrapping)."""
    _, _, assertion = _parts(envelope)
    try:
        ids = check_envelope_ids(envelope, assertion, 10_000)
    except SignatureWrapping:
        return None
    assert ids is not None
    return ids


def _agree_enveloped(envelope: Element, trust: TrustStore) -> WsSecurityError | None:
    """signxml's verdict is ours, References resolved by XPath and by the ID index alike."""
    _, _, assertion = _parts(envelope)
    signature = assertion.find(ns.q(ns.DS, "Signature"))
    assert signature is not None
    (cert,) = certificates_of(signature.find(ns.q(ns.DS, "KeyInfo")))
    expected = _signxml(assertion, cert, "./", "ID", 1)
    before = etree.tostring(envelope)
    verdicts: list[WsSecurityError | None] = []
    for ids in (None, _ids(envelope)):
        try:
            assert verify_enveloped(assertion, trust, NOW, accept_sha1=False, ids=ids) == cert
            verdicts.append(None)
        except WsSecurityError as exc:
            verdicts.append(exc)
        assert etree.tostring(envelope) == before  # the request is not changed
    error = verdicts[0]
    assert (error is None) == isinstance(expected, list), (error, expected)
    assert type(verdicts[1]) is type(error), verdicts
    return error


def _agree_proof(envelope: Element, cert: x509.Certificate) -> list[Element] | WsSecurityError:
    """signxml's verdict is ours, References resolved by XPath and by the ID index alike."""
    root, security, _ = _parts(envelope)
    location = f"./{{{SOAP}}}Header/{{{ns.WSSE}}}Security/"
    expected = _signxml(root, cert, location, None, True)
    verdicts: list[list[Element] | WsSecurityError] = []
    for ids in (None, _ids(envelope)):
        try:
            verdicts.append(verify_proof(root, security, cert, NOW, accept_sha1=False, ids=ids))
        except WsSecurityError as exc:
            verdicts.append(exc)
    covered, indexed = verdicts
    if isinstance(covered, WsSecurityError):
        assert isinstance(expected, Exception), expected
        assert type(indexed) is type(covered), verdicts
        return covered
    assert isinstance(expected, list), expected
    assert len(covered) == len(expected)
    assert isinstance(indexed, list)
    assert len(indexed) == len(covered)
    assert all(a is b for a, b in zip(indexed, covered, strict=True))  # the same elements
    return covered


def _assertion_text(envelope: Element, text: str) -> None:
    issuer = _parts(envelope)[2].find(ns.q(ns.SAML2, "Issuer"))
    assert issuer is not None
    issuer.text = text


def _signature_of(envelope: Element) -> Element:
    signature = _parts(envelope)[2].find(ns.q(ns.DS, "Signature"))
    assert signature is not None
    return signature


def _flip_digest(envelope: Element) -> None:
    value = _signature_of(envelope).find(f".//{{{ns.DS}}}DigestValue")
    assert value is not None and value.text
    value.text = base64.b64encode(b"\0" * 32).decode()


def _flip_signature_value(envelope: Element) -> None:
    value = _signature_of(envelope).find(ns.q(ns.DS, "SignatureValue"))
    assert value is not None and value.text
    raw = bytearray(base64.b64decode(value.text))
    raw[-1] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()


def _comment_in_assertion(envelope: Element) -> None:
    issuer = _parts(envelope)[2].find(ns.q(ns.SAML2, "Issuer"))
    assert issuer is not None
    issuer.append(etree.Comment("a comment is not signed"))


def _signature_tail(envelope: Element) -> None:
    _signature_of(envelope).tail = "\n   "


def _extra_signedinfo_child(envelope: Element) -> None:
    info = _signature_of(envelope).find(ns.q(ns.DS, "SignedInfo"))
    assert info is not None
    etree.SubElement(info, f"{{{EXTRA}}}Unexpected")


@pytest.mark.parametrize(
    ("c14n", "prefixes", "in_place", "change", "valid"),
    [
        (EXC, None, True, None, True),
        (EXC, None, False, None, True),
        (EXC, ["x", "s"], True, None, True),  # unused prefixes in scope, named in PrefixList
        (EXC, ["x", "s"], False, None, False),  # ... not in scope where it was signed
        (INC, None, True, None, True),
        (INC, None, False, None, False),  # signed alone: other namespaces in scope
        (EXC, None, True, _comment_in_assertion, True),
        (INC, None, True, _comment_in_assertion, True),
        (EXC, None, True, _signature_tail, False),  # the tail moves into the signed text
        (EXC, None, True, lambda e: _assertion_text(e, "urn:oid:9.9.9"), False),
        (EXC, None, True, _flip_digest, False),
        (EXC, None, True, _flip_signature_value, False),
    ],
)
def test_enveloped_verdict_is_signxml_verdict(
    key: SigningKey,
    trust: TrustStore,
    c14n: CanonicalizationMethod,
    prefixes: list[str] | None,
    in_place: bool,
    change: Callable[[Element], None] | None,
    valid: bool,
) -> None:
    envelope = _envelope(key, c14n, prefixes, in_place=in_place)
    if change is not None:
        change(envelope)
    error = _agree_enveloped(envelope, trust)
    assert (error is None) == valid
    if error is not None:
        assert isinstance(error, FailedCheck)


def test_signature_namespace_declared_above_it(key: SigningKey, trust: TrustStore) -> None:
    """The enveloped transform takes the signature out of the request's own tree for a
    moment: with its prefix declared on an ancestor, the tree must come back unchanged."""
    envelope = _envelope(key)
    etree.cleanup_namespaces(envelope, top_nsmap={"ds": ns.DS})
    envelope = parse_xml(etree.tostring(envelope))
    assert etree.tostring(envelope).count(b"xmlns:ds=") == 1  # on the Envelope only
    assert _agree_enveloped(envelope, trust) is None
    _signature_of(envelope).tail = " \n\t"
    _signature_of(envelope).getparent().text = "  "  # type: ignore[union-attr]
    assert isinstance(_agree_enveloped(envelope, trust), FailedCheck)


def test_schema_invalid_signature_is_a_failed_check(key: SigningKey, trust: TrustStore) -> None:
    envelope = _envelope(key)
    _extra_signedinfo_child(envelope)
    _, _, assertion = _parts(envelope)
    with pytest.raises(FailedCheck):  # signxml raised lxml's DocumentInvalid here
        verify_enveloped(assertion, trust, NOW, accept_sha1=False)
    # signxml's schema (strict wildcard) refuses InclusiveNamespaces in SignedInfo's
    # CanonicalizationMethod; so do we, with a fault rather than lxml's exception.
    envelope = _envelope(key, EXC, info_prefixes=["x"])
    assert isinstance(_agree_enveloped(envelope, trust), FailedCheck)


def test_key_value_must_name_the_certificate(key: SigningKey, ca: trustme.CA) -> None:
    trust = TrustStore([x509.load_pem_x509_certificate(ca.cert_pem.bytes())])
    other = ca.issue_cert("other.example.org", key_type=RSA)
    other_key = x509.load_pem_x509_certificate(other.cert_chain_pems[0].bytes()).public_key()
    for public, valid in ((key.chain[0].public_key(), True), (other_key, False)):
        envelope = _envelope(key)
        key_info = _signature_of(envelope).find(ns.q(ns.DS, "KeyInfo"))
        assert key_info is not None
        der = etree.SubElement(key_info, "{http://www.w3.org/2009/xmldsig11#}DEREncodedKeyValue")
        der.text = base64.b64encode(
            public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()
        envelope = parse_xml(etree.tostring(envelope))
        assert (_agree_enveloped(envelope, trust) is None) == valid


def test_wrong_c14n_uri_is_an_unsupported_algorithm(key: SigningKey, trust: TrustStore) -> None:
    envelope = _envelope(key)
    method = _signature_of(envelope).find(f".//{{{ns.DS}}}CanonicalizationMethod")
    assert method is not None
    method.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#enveloped-signature")
    with pytest.raises(UnsupportedAlgorithm):
        verify_enveloped(_parts(envelope)[2], trust, NOW, accept_sha1=False)


def test_proof_verdicts_are_signxml_verdicts(key: SigningKey) -> None:
    cert = key.chain[0]
    envelope = _envelope(key)
    covered = _agree_proof(envelope, cert)
    assert isinstance(covered, list)
    assert [e.tag for e in covered] == [ns.q(ns.WSU, "Timestamp")]
    assert covered[0].getparent() is _parts(envelope)[1]  # the very element of the request

    body_signed = _envelope(key, sign_body=True)
    covered = _agree_proof(body_signed, cert)
    assert isinstance(covered, list)
    assert [e.tag for e in covered] == [ns.q(ns.WSU, "Timestamp"), f"{{{SOAP}}}Body"]

    payload = body_signed.find(f"{{{SOAP}}}Body/{{{EXTRA}}}Payload")
    assert payload is not None
    payload.text = "another query"
    assert isinstance(_agree_proof(body_signed, cert), FailedCheck)

    duplicate = _envelope(key, sign_body=True)
    body = duplicate.find(f"{{{SOAP}}}Body")
    assert body is not None
    etree.SubElement(body, f"{{{EXTRA}}}Decoy").set(ns.q(ns.WSU, "Id"), "Body-1")
    assert isinstance(_agree_proof(duplicate, cert), SignatureWrapping | FailedCheck)


def test_proof_certificate_outside_validity_is_refused(key: SigningKey) -> None:
    envelope = _envelope(key)
    root, security, _ = _parts(envelope)
    later = key.chain[0].not_valid_after_utc + timedelta(days=1)
    with pytest.raises(FailedAuthentication):
        verify_proof(root, security, key.chain[0], later, accept_sha1=False)


def test_decoded_certificates_are_cached_by_their_bytes(key: SigningKey, ca: trustme.CA) -> None:
    other = x509.load_pem_x509_certificate(
        ca.issue_cert("other.example.org", key_type=RSA).cert_chain_pems[0].bytes()
    )

    def key_info(*certs: x509.Certificate) -> Element:
        el = etree.Element(ns.q(ns.DS, "KeyInfo"))
        data = etree.SubElement(el, ns.q(ns.DS, "X509Data"))
        for cert in certs:
            der = cert.public_bytes(serialization.Encoding.DER)
            etree.SubElement(data, ns.q(ns.DS, "X509Certificate")).text = base64.encodebytes(
                der
            ).decode()
        return el

    first = certificates_of(key_info(key.chain[0], other))
    again = certificates_of(key_info(key.chain[0]))
    assert first == (key.chain[0], other)
    assert again[0] is first[0]  # decoded once
    assert certificates_of(key_info(other))[0] is first[1]
    bad = key_info()
    etree.SubElement(bad[0], ns.q(ns.DS, "X509Certificate")).text = "bm90IGEgY2VydA=="
    with pytest.raises(FailedAuthentication):
        certificates_of(bad)
    assert len(xml_signature._certificates) <= xml_signature._CERTIFICATES
