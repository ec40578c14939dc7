"""Static directory: the partner communities listed in the configuration file.

Each ``[[communities]]`` table names one partner::

    [[communities]]
    home_community_id = "1.2.3.4.5"          # bare OID or urn:oid:
    name = "Regional HIE"
    xcpd_url = "https://hie.example/xcpd"      # ITI-55
    xcpd_location_url = "https://hie.example/plq"  # ITI-56, optional (Health Data Locators)
    xca_query_url = "https://hie.example/xca/query"        # ITI-38
    xca_retrieve_url = "https://hie.example/xca/retrieve"  # ITI-39
    xcai_retrieve_url = "https://hie.example/xcai/retrieve"  # RAD-75
    active = true                              # optional
    timeout_connect = 5                        # seconds, optional
    timeout_read = 60
    timeout_overall = 120
    max_documents_per_retrieve = 50            # optional
    tls_ca_bundle = "partners/hie-ca.pem"      # optional, relative to the config file
    tls_client_certificate = "certs/ours.pem"  # optional, with tls_client_key
    tls_client_key = "certs/ours.key"

At least one URL is required.  Every error is a :class:`ConfigError` naming
the entry and the key.  Pure: takes the already-parsed TOML mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from imagebridge.errors import ConfigError, InvalidOid
from imagebridge.model.directory import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_OVERALL_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    Community,
    CommunityEndpoint,
    DirectorySnapshot,
    PartnerLimits,
    Timeouts,
    TlsSettings,
)
from imagebridge.model.ids import HomeCommunityId
from imagebridge.transactions import Transaction

URL_KEYS: Final[Mapping[str, Transaction]] = {
    "xcpd_url": Transaction.ITI_55,
    "xca_query_url": Transaction.ITI_38,
    "xca_retrieve_url": Transaction.ITI_39,
    "xcai_retrieve_url": Transaction.RAD_75,
    "xcpd_location_url": Transaction.ITI_56,  # optional: Patient Location Query at an HDL
}
_TIMEOUT_KEYS: Final = ("timeout_connect", "timeout_read", "timeout_overall")
_TLS_KEYS: Final = ("tls_ca_bundle", "tls_client_certificate", "tls_client_key")
KNOWN_KEYS: Final = frozenset(
    {"home_community_id", "name", "active", "max_documents_per_retrieve"}
    | set(URL_KEYS)
    | set(_TIMEOUT_KEYS)
    | set(_TLS_KEYS)
)


def communities_from_config(
    data: Mapping[str, Any], *, base_dir: Path | None = None
) -> DirectorySnapshot:
    """The static directory of a parsed configuration file (its ``communities`` array).

    No ``communities`` key: an empty directory.  Relative TLS paths are
    resolved against *base_dir* (the configuration file's folder) when given.
    """
    entries = data.get("communities", [])
    return DirectorySnapshot(parse_communities(entries, base_dir=base_dir))


def parse_communities(entries: Any, *, base_dir: Path | None = None) -> tuple[Community, ...]:
    """Parse the ``[[communities]]`` array of tables; :class:`ConfigError` on any bad entry."""
    if not isinstance(entries, Sequence) or isinstance(entries, str | bytes):
        raise ConfigError("communities must be an array of tables ([[communities]])")
    communities: list[Community] = []
    seen: dict[HomeCommunityId, int] = {}
    for index, entry in enumerate(entries):
        community = parse_community(entry, where=f"communities[{index}]", base_dir=base_dir)
        first = seen.setdefault(community.home_community_id, index)
        if first != index:
            raise ConfigError(
                f"communities[{index}]: homeCommunityId {community.home_community_id.oid} "
                f"is already used by communities[{first}]"
            )
        communities.append(community)
    return tuple(communities)


def parse_community(
    entry: Any, *, where: str = "communities[0]", base_dir: Path | None = None
) -> Community:
    """Parse one ``[[communities]]`` table; *where* prefixes every error message."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(entry) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    hcid = _home_community_id(where, entry)
    name = _string(where, entry, "name", required=True) or ""
    endpoints = tuple(
        CommunityEndpoint(transaction, _url(where, key, value))
        for key, transaction in URL_KEYS.items()
        if (value := entry.get(key)) is not None
    )
    if not endpoints:
        raise ConfigError(f"{where}: at least one of {', '.join(URL_KEYS)} is required")
    active = entry.get("active", True)
    if not isinstance(active, bool):
        raise ConfigError(f"{where}.active must be true or false")
    return Community(
        home_community_id=hcid,
        name=name,
        endpoints=endpoints,
        active=active,
        tls=_tls(where, entry, base_dir),
        limits=PartnerLimits(
            max_documents_per_retrieve=_max_documents(where, entry),
            timeouts=_timeouts(where, entry),
        ),
    )


def _home_community_id(where: str, entry: Mapping[str, Any]) -> HomeCommunityId:
    text = _string(where, entry, "home_community_id", required=True) or ""
    try:
        return HomeCommunityId.parse(text)
    except InvalidOid as exc:
        raise ConfigError(f"{where}.home_community_id {exc.message}") from exc


def _string(where: str, entry: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: the key {key!r} is required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    if not value.strip():
        raise ConfigError(f"{where}.{key} must not be empty")
    return value.strip()


def _url(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    problem = url_problem(value)
    if problem:
        raise ConfigError(f"{where}.{key} {problem}: {value[:120]!r}")
    return value.strip()


def url_problem(value: str) -> str | None:
    """Why *value* is not an absolute http(s) URL with a host, or None if it is one."""
    text = value.strip()
    if not text or any(c.isspace() for c in text):
        return "is not a URL (empty or contains spaces)"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    return None


def _number(where: str, entry: Mapping[str, Any], key: str, default: float) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key} must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}.{key} must be a positive number of seconds, not {value!r}")
    return float(value)


def _timeouts(where: str, entry: Mapping[str, Any]) -> Timeouts:
    timeouts = Timeouts(
        connect=_number(where, entry, "timeout_connect", DEFAULT_CONNECT_TIMEOUT),
        read=_number(where, entry, "timeout_read", DEFAULT_READ_TIMEOUT),
        overall=_number(where, entry, "timeout_overall", DEFAULT_OVERALL_TIMEOUT),
    )
    if timeouts.connect > timeouts.overall:
        raise ConfigError(
            f"{where}.timeout_connect ({timeouts.connect:g} s) exceeds "
            f"timeout_overall ({timeouts.overall:g} s)"
        )
    return timeouts


def _max_documents(where: str, entry: Mapping[str, Any]) -> int | None:
    value = entry.get("max_documents_per_retrieve")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.max_documents_per_retrieve must be a positive integer")
    return value


def _tls(where: str, entry: Mapping[str, Any], base_dir: Path | None) -> TlsSettings:
    paths: dict[str, Path | None] = {}
    for key in _TLS_KEYS:
        text = _string(where, entry, key, required=False)
        path = None if text is None else Path(text).expanduser()
        if path is not None and base_dir is not None and not path.is_absolute():
            path = base_dir / path
        paths[key] = path
    certificate, key_file = paths["tls_client_certificate"], paths["tls_client_key"]
    if (certificate is None) != (key_file is None):
        raise ConfigError(f"{where}: tls_client_certificate and tls_client_key go together")
    return TlsSettings(
        ca_bundle=paths["tls_ca_bundle"], client_certificate=certificate, client_key=key_file
    )
