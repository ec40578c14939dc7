"""Static directory: ``[[communities]]`` tables parsed into communities, every error named."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from imagebridge.directory.static import communities_from_config, parse_communities
from imagebridge.errors import ConfigError
from imagebridge.model.directory import DEFAULT_READ_TIMEOUT
from imagebridge.model.ids import HomeCommunityId
from imagebridge.transactions import Transaction

GOOD = """
[[communities]]
home_community_id = "urn:oid:1.2.3.4.5"
name = "Regional HIE"
xcpd_url = "https://hie.example/xcpd"
xca_query_url = "https://hie.example/xca/query"
xca_retrieve_url = "https://hie.example/xca/retrieve"
xcai_retrieve_url = "https://hie.example:8443/xcai/retrieve"
timeout_connect = 5
timeout_overall = 90.5
max_documents_per_retrieve = 50
tls_ca_bundle = "partners/hie-ca.pem"
tls_client_certificate = "/etc/ib/ours.pem"
tls_client_key = "/etc/ib/ours.key"

[[communities]]
home_community_id = "987654321"
name = "Imaging only"
xcai_retrieve_url = "http://127.0.0.1:9000/xcai/retrieve"
active = false
"""


def _one(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "home_community_id": "1.2.3",
        "name": "Partner",
        "xca_query_url": "https://p.example/q",
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def _error(entry: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_communities([entry])
    return info.value.message


def test_good_config_from_toml() -> None:
    snapshot = communities_from_config(tomllib.loads(GOOD), base_dir=Path("/etc/ib"))
    assert len(snapshot) == 2 and snapshot.complete and not snapshot.warnings
    hie, imaging = snapshot.communities
    assert hie.home_community_id == HomeCommunityId("1.2.3.4.5")
    assert hie.name == "Regional HIE"
    assert hie.url(Transaction.ITI_55) == "https://hie.example/xcpd"
    assert hie.url(Transaction.ITI_38) == "https://hie.example/xca/query"
    assert hie.url(Transaction.ITI_39) == "https://hie.example/xca/retrieve"
    assert hie.url(Transaction.RAD_75) == "https://hie.example:8443/xcai/retrieve"
    assert hie.limits.max_documents_per_retrieve == 50
    assert hie.limits.timeouts.connect == 5.0
    assert hie.limits.timeouts.read == DEFAULT_READ_TIMEOUT
    assert hie.limits.timeouts.overall == 90.5
    assert hie.tls.ca_bundle == Path("/etc/ib/partners/hie-ca.pem")
    assert hie.tls.client_certificate == Path("/etc/ib/ours.pem")
    assert hie.tls.client_key == Path("/etc/ib/ours.key")
    assert imaging.home_community_id.oid == "987654321"
    assert not imaging.active
    assert imaging.url(Transaction.RAD_75) is None  # inactive: never sent to
    assert imaging.endpoints[0].url == "http://127.0.0.1:9000/xcai/retrieve"
    assert imaging.limits.max_documents_per_retrieve is None
    assert imaging.tls.ca_bundle is None
    assert snapshot.active() == (hie,)
    assert hie.transactions == frozenset(
        {Transaction.ITI_55, Transaction.ITI_38, Transaction.ITI_39, Transaction.RAD_75}
    )


def test_no_communities_is_an_empty_directory() -> None:
    assert len(communities_from_config({"community": {}})) == 0


def test_communities_not_an_array() -> None:
    with pytest.raises(ConfigError, match=r"communities must be an array of tables"):
        communities_from_config({"communities": {"name": "x"}})


def test_entry_not_a_table() -> None:
    assert _error("x") == "communities[0] must be a table"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"home_community_id": None}, "communities[0]: the key 'home_community_id' is required"),
        ({"home_community_id": 123}, "communities[0].home_community_id must be a string"),
        ({"home_community_id": "  "}, "communities[0].home_community_id must not be empty"),
        ({"home_community_id": "urn:oid:1.2.x"}, "communities[0].home_community_id "),
        ({"name": None}, "communities[0]: the key 'name' is required"),
        ({"name": ""}, "communities[0].name must not be empty"),
        ({"xca_query_url": None}, "communities[0]: at least one of xcpd_url, xca_query_url"),
        ({"xca_query_url": 5}, "communities[0].xca_query_url must be a string"),
        ({"xca_query_url": "ftp://p.example/q"}, "must be an absolute http:// or https:// URL"),
        ({"xca_query_url": "/xca/query"}, "must be an absolute http:// or https:// URL"),
        ({"xcpd_url": "https:///nohost"}, "communities[0].xcpd_url has no host"),
        ({"xcpd_url": "https://h.example:99999/x"}, "communities[0].xcpd_url is not a valid URL"),
        ({"xcpd_url": "https://h .example/x"}, "is not a URL (empty or contains spaces)"),
        ({"active": "yes"}, "communities[0].active must be true or false"),
        ({"timeout_read": "60"}, "communities[0].timeout_read must be a number of seconds"),
        ({"timeout_read": True}, "communities[0].timeout_read must be a number of seconds"),
        ({"timeout_connect": 0}, "communities[0].timeout_connect must be a positive number"),
        ({"timeout_overall": float("inf")}, "timeout_overall must be a positive number"),
        ({"timeout_connect": 30, "timeout_overall": 10}, "timeout_connect (30 s) exceeds"),
        ({"max_documents_per_retrieve": 0}, "max_documents_per_retrieve must be a positive"),
        ({"max_documents_per_retrieve": 2.5}, "max_documents_per_retrieve must be a positive"),
        ({"tls_client_certificate": "c.pem"}, "tls_client_certificate and tls_client_key go"),
        ({"tls_client_key": "c.key"}, "tls_client_certificate and tls_client_key go together"),
        ({"tls_ca_bundle": 1}, "communities[0].tls_ca_bundle must be a string"),
        ({"xcai_url": "https://x.example/"}, "communities[0]: unknown key(s) xcai_url"),
        ({"xcpd_location_url": "plq"}, "communities[0].xcpd_location_url must be an absolute"),
        ({"xcpd_location_url": 7}, "communities[0].xcpd_location_url must be a string"),
    ],
)
def test_each_error_names_entry_and_key(overrides: dict[str, Any], expected: str) -> None:
    base = _one()
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    assert expected in _error(base)


def test_bad_oid_message_names_the_value() -> None:
    message = _error(_one(home_community_id="1.2.x"))
    assert message.startswith("communities[0].home_community_id")
    assert "'1.2.x'" in message


def test_duplicate_home_community_id() -> None:
    with pytest.raises(ConfigError) as info:
        parse_communities([_one(), _one(home_community_id="urn:oid:1.2.3", name="Other")])
    assert info.value.message == (
        "communities[1]: homeCommunityId 1.2.3 is already used by communities[0]"
    )


def test_relative_tls_paths_without_base_dir_stay_relative() -> None:
    (community,) = parse_communities([_one(tls_ca_bundle="ca.pem")])
    assert community.tls.ca_bundle == Path("ca.pem")


def test_patient_location_query_url_is_optional_and_maps_to_iti56() -> None:
    (plain,) = parse_communities([_one()])
    assert plain.url(Transaction.ITI_56) is None
    (hdl,) = parse_communities([_one(xcpd_location_url=" https://rls.example/plq ")])
    assert hdl.url(Transaction.ITI_56) == "https://rls.example/plq"
    assert hdl.transactions == frozenset({Transaction.ITI_38, Transaction.ITI_56})


def test_patient_location_query_url_alone_is_enough() -> None:
    entry = _one(xca_query_url=None, xcpd_location_url="https://rls.example/plq")
    (hdl,) = parse_communities([entry])
    assert hdl.transactions == frozenset({Transaction.ITI_56})


def test_missing_url_message_lists_the_location_key() -> None:
    assert "xcpd_location_url" in _error(_one(xca_query_url=None))
