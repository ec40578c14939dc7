"""The staff page's partner requests carry the logged-in operator in the SAML assertion.

The composition root's ``_operator_security`` is what ``serve`` gives the
staff page: with an operator in :data:`imagebridge.web.auth.current_operator`
the assertion names that person (Subject NameID and subject-id attribute),
otherwise the configured system user of ``[xua.issuer]``.  Keys are made by
the test (trustme), the assertion is the real signed one, read back with our
wsse/SAML codecs.
"""

from __future__ import annotations

from pathlib import Path

import trustme

from imagebridge.app import _operator_security
from imagebridge.config import config_from_mapping
from imagebridge.model.directory import Community, CommunityEndpoint
from imagebridge.model.ids import HomeCommunityId
from imagebridge.transactions import Transaction
from imagebridge.web.auth import current_operator
from imagebridge.wire.wsse import parse_security
from imagebridge.wire.xml import parse_xml, serialize

SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
PARTNER = Community(
    HomeCommunityId("1.2.3.4"),
    "partner",
    endpoints=(CommunityEndpoint(Transaction.ITI_38, "https://partner.example/xca/query"),),
)


def _config(tmp_path: Path) -> object:
    rsa = trustme.KeyType.RSA
    leaf = trustme.CA(key_type=rsa).issue_cert("gateway.example", key_type=rsa)
    key, cert = tmp_path / "xua.key", tmp_path / "xua.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    raw = {
        "community": {"home_community_id": "1.2.9"},
        "xua": {
            "issuer": {
                "private_key": str(key),
                "certificate": str(cert),
                "organization": "Example Imaging",
                "organization_id": "urn:oid:1.2.9",
                "subject_id": "imagebridge system user",
            }
        },
    }
    return config_from_mapping(raw, {})


def _who(config: object) -> tuple[str, list[str]]:
    security = _operator_security(config)  # type: ignore[arg-type]
    assert security is not None
    (block,) = security(Transaction.ITI_38, PARTNER)
    header = parse_security(parse_xml(serialize(block)))
    assert header.assertion is not None and header.assertion.subject is not None
    name_id = header.assertion.subject.name_id
    assert name_id is not None
    subject_ids = [
        str(value)
        for statement in header.assertion.attribute_statements
        for attribute in statement.attributes
        if attribute.name == SUBJECT_ID
        for value in attribute.values
    ]
    return name_id.value, subject_ids


def test_the_assertion_names_the_logged_in_operator_else_the_system_user(tmp_path: Path) -> None:
    config = _config(tmp_path)
    name_id, subject_ids = _who(config)
    assert name_id == "imagebridge system user"
    assert any("imagebridge system user" in s for s in subject_ids)
    token = current_operator.set("jdoe")
    try:
        name_id, subject_ids = _who(config)
    finally:
        current_operator.reset(token)
    assert name_id == "jdoe"
    assert any("jdoe" in s for s in subject_ids)


def test_without_an_issuer_no_assertion_is_made(tmp_path: Path) -> None:
    config = config_from_mapping({"community": {"home_community_id": "1.2.9"}}, {})
    assert _operator_security(config) is None
