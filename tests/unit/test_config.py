"""Configuration loading: the documented keys, environment overrides, precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebridge.config import load_config
from imagebridge.errors import ConfigError

GOOD = """
[community]
home_community_id = "urn:oid:1.3.6.1.4.1.21367.13.70.201"
patient_id_authority = "1.3.6.1.4.1.21367.13.20.1000"
[server]
host = "127.0.0.1"
port = 8080
[[repositories]]
unique_id = "1.3.6.1.4.1.21367.13.71.201.1"
source = "folder"
path = "archive"
[[repositories]]
unique_id = "1.3.6.1.4.1.21367.13.71.201.2"
source = "dicomweb"
url = "http://127.0.0.1:8042/dicom-web"
[[repositories]]
unique_id = "1.3.6.1.4.1.21367.13.71.201.3"
source = "dimse"
host = "127.0.0.1"
port = 4242
called_ae = "ORTHANC"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imagebridge.toml"
    path.write_text(text)
    return path


def test_documented_keys_load(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD), environ={})
    assert config.community.home_community_id.urn == "urn:oid:1.3.6.1.4.1.21367.13.70.201"
    assert config.server.port == 8080
    folder = config.repository("1.3.6.1.4.1.21367.13.71.201.1")
    assert folder is not None and folder.path == (tmp_path / "archive").resolve()
    assert [r.source for r in config.repositories] == ["folder", "dicomweb", "dimse"]
    assert config.store.database_url.startswith("sqlite:///")


def test_environment_overrides_scalars(tmp_path: Path) -> None:
    env = {"IMAGEBRIDGE_SERVER_PORT": "9090", "IMAGEBRIDGE_STORE_DATABASE_URL": "sqlite:///x.db"}
    config = load_config(_write(tmp_path, GOOD), environ=env)
    assert config.server.port == 9090
    assert config.store.database_url == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 1\n", "[community]"),
        ('[community]\nhome_community_id = "urn:oid:1.2.x"\n', "OID"),
        ('[community]\nhome_community_id = "1.2"\n[servr]\n', "unknown configuration table"),
        ('[community]\nhome_community_id = "1.2"\n[server]\nprot = 1\n', "prot"),
        ('[community]\nhome_community_id = "1.2"\n[server]\nport = "abc"\n', "server.port"),
        ('[community]\nhome_community_id = "1.2"\n[server]\nport = 70000\n', "TCP port"),
        (
            '[community]\nhome_community_id = "1.2"\n[[repositories]]\nunique_id = "1.2.3"\n'
            'source = "ftp"\n',
            "source must be",
        ),
        (
            '[community]\nhome_community_id = "1.2"\n[[repositories]]\nunique_id = "1.2.3"\n'
            'source = "folder"\n',
            "'path'",
        ),
        (
            '[community]\nhome_community_id = "1.2"\n[[repositories]]\nunique_id = "1.2.3"\n'
            'source = "folder"\npath = "a"\n[[repositories]]\nunique_id = "1.2.3"\n'
            'source = "folder"\npath = "b"\n',
            "twice",
        ),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_invalid_configurations_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(_write(tmp_path, text), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", environ={})


def test_partner_communities_are_read_from_the_configuration(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[[communities]]
home_community_id = "urn:oid:1.3.6.1.4.1.21367.13.70.101"
name = "Partner A"
xcpd_url = "https://a.example.org/xcpd"
xca_query_url = "https://a.example.org/xca/query"
"""
    )
    config = load_config(_write(tmp_path, text), environ={})
    (partner,) = config.communities.communities
    assert partner.name == "Partner A"
    assert partner.home_community_id.oid == "1.3.6.1.4.1.21367.13.70.101"
    bad = GOOD + '\n[[communities]]\nname = "no id"\nxcpd_url = "https://b.example.org/"\n'
    with pytest.raises(ConfigError, match="communities"):
        load_config(_write(tmp_path, bad), environ={})


TLS_SERVER = '[server]\nhost = "0.0.0.0"\ntls_certificate = "gw.pem"\ntls_private_key = "gw.key"\n'


def test_tls_keys_resolve_against_the_configuration_folder(tmp_path: Path) -> None:
    text = (
        '[community]\nhome_community_id = "1.2"\n'
        + TLS_SERVER
        + 'tls_client_ca = "trust/clients.pem"\n'
        + '[tls]\nca_bundle = "trust/sequoia.pem"\n'
        + 'client_certificate = "/etc/ib/ours.pem"\nclient_key = "/etc/ib/ours.key"\n'
    )
    config = load_config(_write(tmp_path, text), environ={})
    assert config.server.tls_certificate == tmp_path / "gw.pem"
    assert config.server.tls_client_ca == tmp_path / "trust" / "clients.pem"
    assert config.tls.ca_bundle == tmp_path / "trust" / "sequoia.pem"
    assert config.tls.client_certificate == Path("/etc/ib/ours.pem")
    defaults = config.tls.defaults
    assert (defaults.ca_bundle, defaults.client_key) == (
        tmp_path / "trust" / "sequoia.pem",
        Path("/etc/ib/ours.key"),
    )


def test_tls_table_is_optional_and_overridable_from_the_environment(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD), environ={})
    assert config.tls.defaults.ca_bundle is None
    env = {"IMAGEBRIDGE_TLS_CA_BUNDLE": "/etc/ib/sequoia.pem"}
    assert load_config(_write(tmp_path, GOOD), environ=env).tls.ca_bundle == Path(
        "/etc/ib/sequoia.pem"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TLS_SERVER, "server.tls_client_ca is required with server.tls_certificate"),
        ('[server]\ntls_certificate = "gw.pem"\ntls_client_ca = "ca.pem"\n', "go together"),
        ('[server]\ntls_client_ca = "ca.pem"\n', "needs server.tls_certificate"),
        ('[tls]\nclient_certificate = "ours.pem"\n', "tls.client_certificate and tls.client_key"),
        # there is no switch that turns verification off: such a key is a typo, refused
        ("[tls]\nverify = false\n", "unknown key.*verify"),
        ("[tls]\ninsecure = true\n", "unknown key.*insecure"),
    ],
)
def test_tls_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    full = '[community]\nhome_community_id = "1.2"\n' + text
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, full), environ={})
