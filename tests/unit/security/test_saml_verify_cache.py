"""XUA verification cache: an assertion is cached the second time it is verified, and a
cached verdict serves only the very bytes that were verified."""

from __future__ import annotations

import pytest
import trustme
from lxml import etree

from imagebridge.errors import FailedCheck
from imagebridge.model.saml import SUBJECT_ID
from imagebridge.security import saml_verifier
from imagebridge.security.saml_issuer import SigningKey
from imagebridge.security.saml_verifier import AssertionVerifier
from imagebridge.wire import ns
from imagebridge.wire.xml import Element
from tests.unit.security.test_saml_issue_verify import (
    AUDIENCE,
    PRINCIPAL,
    make_issuer,
    make_verifier,
    signing_key,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def key(ca: trustme.CA) -> SigningKey:
    return signing_key(ca)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Element]:
    verified: list[Element] = []
    real = saml_verifier.verify_enveloped

    def counting(assertion: Element, *args: object, **kwargs: object) -> object:
        verified.append(assertion)
        return real(assertion, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(saml_verifier, "verify_enveloped", counting)
    return verified


def test_reused_assertion_is_cached_from_its_second_use(
    key: SigningKey, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = _counting(monkeypatch)
    issuer = make_issuer(key)  # reuses its assertion
    verifier: AssertionVerifier = make_verifier(ca)
    callers = [verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE)]) for _ in range(4)]
    assert len({c.assertion_id for c in callers}) == 1
    assert len(verified) == 2  # noted the first time, cached the second
    assert len(verifier._verified) == 1 and not verifier._seen_once


def test_new_assertions_do_not_fill_the_cache(
    key: SigningKey, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = _counting(monkeypatch)
    issuer = make_issuer(key, reuse_for=0)
    verifier = make_verifier(ca)
    callers = [verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE)]) for _ in range(3)]
    assert len({c.assertion_id for c in callers}) == 3
    assert len(verified) == 3
    assert not verifier._verified and len(verifier._seen_once) == 3


def test_cached_assertion_changed_is_verified_again_and_refused(
    key: SigningKey, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same ID and SignatureValue, other bytes: not the cached verdict, a full check."""
    verified = _counting(monkeypatch)
    issuer = make_issuer(key)
    verifier = make_verifier(ca)
    for _ in range(2):  # noted, then cached
        verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE)])
    assert len(verified) == 2 and len(verifier._verified) == 1
    block = issuer.security_header(PRINCIPAL, AUDIENCE)
    assertion = block.find(ns.q(ns.SAML2, "Assertion"))
    assert assertion is not None
    value = assertion.find(f".//{{{ns.SAML2}}}Attribute[@Name='{SUBJECT_ID}']/*")
    assert value is not None
    value.text = "Mallory"
    with pytest.raises(FailedCheck):
        verifier.verify([block])
    assert len(verified) == 3
    # the genuine assertion is still served from the cache
    caller = verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE)])
    assert caller.subject_id == PRINCIPAL.subject_id
    assert len(verified) == 3


def test_cached_assertion_with_other_namespaces_in_scope_is_verified_again(
    key: SigningKey, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = _counting(monkeypatch)
    issuer = make_issuer(key)
    verifier = make_verifier(ca)
    for _ in range(2):
        verifier.verify([issuer.security_header(PRINCIPAL, AUDIENCE)])
    block = issuer.security_header(PRINCIPAL, AUDIENCE)
    wrapped = etree.Element("{urn:example:outer}Header", nsmap={"o": "urn:example:outer"})
    wrapped.append(block)
    assert verifier.verify([block]).subject_id == PRINCIPAL.subject_id
    assert len(verified) == 3  # the serialised bytes differ: checked in full
