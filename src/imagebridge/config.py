"""The configuration tree: one typed, frozen value loaded once from TOML and the environment.

Environment variables override scalar keys of the top-level tables:
``IMAGEBRIDGE_<TABLE>_<KEY>`` (for example ``IMAGEBRIDGE_SERVER_PORT=9090``).
Every key is documented in the README; unknown keys are refused so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebridge.directory.static import communities_from_config
from imagebridge.errors import ConfigError, ImageBridgeError
from imagebridge.importing.settings import ImportConfig, import_config
from imagebridge.model.directory import DirectorySnapshot, TlsSettings
from imagebridge.model.ids import HomeCommunityId, validate_oid
from imagebridge.security.audit_config import AuditConfig, audit_config
from imagebridge.security.xua_config import XuaConfig, xua_config
from imagebridge.web.settings import WebConfig, web_config

ENV_PREFIX = "IMAGEBRIDGE_"
SOURCE_KINDS = ("folder", "dicomweb", "dimse", "ids")
"""``ids``: a remote Imaging Document Source reached with RAD-69 (XDS-I.b community)."""


@dataclass(frozen=True, slots=True)
class CommunityConfig:
    """``[community]``: who we are."""

    home_community_id: HomeCommunityId
    name: str = "imagebridge community"
    patient_id_authority: str = ""
    """OID of the community's patient identifier domain (used when images carry no OID issuer)."""
    accession_authority: str = ""
    """OID of the accession number issuer, for referenceIdList (optional)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where ``imagebridge serve`` listens."""

    host: str = "127.0.0.1"
    """Without TLS only a loopback address is accepted (``serve --insecure-http`` overrides)."""
    port: int = 8080
    tls_certificate: Path | None = None
    """PEM certificate chain of this gateway; with ``tls_private_key`` it turns HTTPS on."""
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None
    """PEM bundle of the CAs whose client certificates are accepted; required with TLS."""

    @property
    def tls(self) -> bool:
        return self.tls_certificate is not None and self.tls_private_key is not None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[tls]``: the deployment's TLS material for calling partners (mutual TLS).

    A ``[[communities]]`` entry's own ``tls_*`` keys replace these for that
    partner only where it sets them.  There is no way to turn verification off.
    """

    ca_bundle: Path | None = None
    """PEM bundle of the CAs partner servers must chain to (the Carequality/Sequoia bundle);
    none: the system trust store."""
    client_certificate: Path | None = None
    """PEM chain we present to every partner; with ``client_key``."""
    client_key: Path | None = None

    @property
    def defaults(self) -> TlsSettings:
        """The per-partner settings every community starts from."""
        return TlsSettings(self.ca_bundle, self.client_certificate, self.client_key)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: the database holding the index, manifests and jobs."""

    database_url: str = "sqlite:///imagebridge.db"


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    """``[xcpd]``: patient matching policy (see docs/matching.md)."""

    required: tuple[str, ...] = ("family", "given", "birth_date", "gender")
    allow_multiple: bool = False


@dataclass(frozen=True, slots=True)
class RepositoryConfig:
    """``[[repositories]]``: one Imaging Document Source and the archive behind it."""

    unique_id: str
    source: str
    retrieve_ae_title: str = "IMAGEBRIDGE"
    path: Path | None = None
    url: str | None = None
    host: str | None = None
    port: int | None = None
    called_ae: str | None = None
    calling_ae: str = "IMAGEBRIDGE"
    retrieve: str = "get"
    move_destination: str = ""
    """AE title the PACS sends C-MOVE results to (our Storage SCP), for ``retrieve = "move"``."""
    move_port: int | None = None
    """Port of our Storage SCP for C-MOVE (required with ``retrieve = "move"``)."""
    scan_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    community: CommunityConfig
    server: ServerConfig = ServerConfig()
    tls: TlsConfig = TlsConfig()
    store: StoreConfig = StoreConfig()
    xcpd: MatchingConfig = MatchingConfig()
    repositories: tuple[RepositoryConfig, ...] = field(default_factory=tuple)
    communities: DirectorySnapshot = field(default_factory=DirectorySnapshot)
    """``[[communities]]``: partner gateways this one sends to (static directory)."""
    importing: ImportConfig | None = None
    """``[import]``: where pulled images are imported (None: folder only, no PACS)."""
    web: WebConfig | None = None
    """``[web]``: the staff page (None: not served)."""
    audit: AuditConfig = field(default_factory=AuditConfig)
    """``[audit]``: the ATNA audit repository (off unless ``enabled``)."""
    xua: XuaConfig = field(default_factory=XuaConfig)
    """``[xua]``: the SAML assertions we issue and the ones we accept."""
    source_file: Path | None = None

    def repository(self, unique_id: str) -> RepositoryConfig | None:
        for repo in self.repositories:
            if repo.unique_id == unique_id:
                return repo
        return None


_TABLES: dict[str, type[Any]] = {
    "community": CommunityConfig,
    "server": ServerConfig,
    "tls": TlsConfig,
    "store": StoreConfig,
    "xcpd": MatchingConfig,
    "audit": AuditConfig,
}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read *path* (TOML) and the ``IMAGEBRIDGE_*`` environment into a :class:`Config`."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {file} is not valid TOML: {exc}") from exc
    return config_from_mapping(raw, environ if environ is not None else os.environ, file)


def config_from_mapping(
    raw: Mapping[str, Any], environ: Mapping[str, str], source: Path | None = None
) -> Config:
    """Build and validate a :class:`Config` from parsed TOML plus environment overrides."""
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    _apply_environment(data, environ)
    unknown = set(data) - set(_TABLES) - {"repositories", "communities", "import", "web", "xua"}
    if unknown:
        raise ConfigError(f"unknown configuration table(s): {', '.join(sorted(unknown))}")
    if "community" not in data:
        raise ConfigError("[community] with home_community_id is required")
    community = _table("community", data["community"])
    try:
        home = HomeCommunityId.parse(str(community.pop("home_community_id", "")))
        validate_oid(home.oid, "community.home_community_id")
        for key in ("patient_id_authority", "accession_authority"):
            if community.get(key):
                validate_oid(str(community[key]), f"community.{key}")
    except ImageBridgeError as exc:
        raise ConfigError(f"[community] {exc.message}") from exc
    repos = data.get("repositories", [])
    if not isinstance(repos, list):
        raise ConfigError("repositories must be an array of tables ([[repositories]])")
    config = Config(
        community=_build(CommunityConfig, "community", {"home_community_id": home, **community}),
        server=_relative_paths(
            _build(ServerConfig, "server", _table("server", data.get("server", {}))), source
        ),
        tls=_relative_paths(_build(TlsConfig, "tls", _table("tls", data.get("tls", {}))), source),
        store=_build(StoreConfig, "store", _table("store", data.get("store", {}))),
        xcpd=_build(MatchingConfig, "xcpd", _table("xcpd", data.get("xcpd", {}))),
        repositories=tuple(_repository(i, r, source) for i, r in enumerate(repos)),
        communities=communities_from_config(
            data, base_dir=source.parent if source is not None else None
        ),
        importing=(
            import_config(data["import"], base_dir=source.parent if source is not None else None)
            if "import" in data
            else None
        ),
        web=(
            web_config(data["web"], environ, base_dir=source.parent if source else None)
            if "web" in data
            else None
        ),
        audit=audit_config(
            data.get("audit", {}), base_dir=source.parent if source is not None else None
        ),
        xua=(
            xua_config(_table("xua", data["xua"]), source.parent if source else None)
            if "xua" in data
            else XuaConfig()
        ),
        source_file=source,
    )
    seen: set[str] = set()
    for repo in config.repositories:
        if repo.unique_id in seen:
            raise ConfigError(f"repository {repo.unique_id} is configured twice")
        seen.add(repo.unique_id)
    if not 0 < config.server.port < 65536:
        raise ConfigError(f"server.port {config.server.port} is not a TCP port")
    if (config.server.tls_certificate is None) != (config.server.tls_private_key is None):
        raise ConfigError("server.tls_certificate and server.tls_private_key go together")
    if config.server.tls_client_ca is not None and not config.server.tls:
        raise ConfigError("server.tls_client_ca needs server.tls_certificate and tls_private_key")
    if config.server.tls and config.server.tls_client_ca is None:
        raise ConfigError(
            "server.tls_client_ca is required with server.tls_certificate: partners must "
            "present a client certificate (mutual TLS); name the PEM bundle of the CAs that "
            "issue them"
        )
    if (config.tls.client_certificate is None) != (config.tls.client_key is None):
        raise ConfigError("tls.client_certificate and tls.client_key go together")
    return config


def _relative_paths(table: Any, source: Path | None) -> Any:
    """*table* with its relative ``Path`` values resolved against the configuration's folder."""
    changes: dict[str, Path] = {}
    for name in table.__dataclass_fields__:
        value = getattr(table, name)
        if isinstance(value, Path):
            path = value.expanduser()
            if not path.is_absolute() and source is not None:
                path = source.parent / path
            if path != value:
                changes[name] = path
    return dataclasses.replace(table, **changes) if changes else table


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for table in _TABLES:
            if rest.startswith(table + "_"):
                data.setdefault(table, {})[rest[len(table) + 1 :]] = value
                break


def _table(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return dict(value)


def _build(cls: type[Any], where: str, values: dict[str, Any]) -> Any:
    fields = cls.__dataclass_fields__
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        converted[key] = _convert(where, key, fields[key].type, value)
    try:
        return cls(**converted)
    except TypeError as exc:
        raise ConfigError(f"[{where}] is incomplete: {exc}") from exc


def _convert(where: str, key: str, annotation: str, value: Any) -> Any:
    """Coerce environment strings and TOML values to the annotated type."""
    try:
        if annotation in {"int", "int | None"}:
            return int(value)
        if annotation == "float":
            return float(value)
        if annotation == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if annotation.startswith("tuple[str"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if annotation == "Path | None":
            return Path(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.{key} has an invalid value {value!r}") from exc
    if annotation in ("str", "str | None") and not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _repository(index: int, value: Any, source: Path | None) -> RepositoryConfig:
    where = f"repositories[{index}]"
    table = _table(where, value)
    repo: RepositoryConfig = _build(RepositoryConfig, where, table)
    try:
        validate_oid(repo.unique_id, f"{where}.unique_id")
    except ImageBridgeError as exc:
        raise ConfigError(exc.message) from exc
    if repo.source not in SOURCE_KINDS:
        raise ConfigError(f"{where}.source must be one of {', '.join(SOURCE_KINDS)}")
    needed = {
        "folder": ("path",),
        "dicomweb": ("url",),
        "dimse": ("host", "port", "called_ae"),
        "ids": ("url",),
    }
    for key in needed[repo.source]:
        if getattr(repo, key) in (None, ""):
            raise ConfigError(f"{where}: source {repo.source!r} needs the key {key!r}")
    if repo.retrieve not in ("get", "move"):
        raise ConfigError(f"{where}.retrieve must be 'get' or 'move'")
    if repo.retrieve == "move" and (repo.move_port is None or not repo.move_destination):
        raise ConfigError(f"{where}: retrieve = 'move' needs move_port and move_destination")
    if repo.path is not None and not repo.path.is_absolute() and source is not None:
        # Relative folder paths are relative to the configuration file.
        repo = dataclasses.replace(repo, path=(source.parent / repo.path).resolve())
    return repo
