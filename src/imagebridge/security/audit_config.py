"""Audit Trail and Node Authentication [ITI-20], Secure Node: the ``[audit]`` configuration table.

```toml
[audit]
enabled = true
host = "arr.example.org"          # the Audit Record Repository
port = 6514                       # 6514 syslog over TLS (RFC 5425), 514 UDP (RFC 5426)
transport = "tls"                 # tls | udp
ca_bundle = "arr-ca.pem"          # trust for the repository (default: system store)
client_certificate = "us.pem"     # our certificate for mutual TLS (optional)
client_key = "us.key"
audit_source_id = ""              # default: our homeCommunityId (bare OID)
enterprise_site_id = ""           # default: the community name
host_name = ""                    # our NetworkAccessPointID and syslog HOSTNAME
base_url = ""                     # our public base URL (responding gateway UserID)
app_name = "imagebridge"          # syslog APP-NAME
include_bom = true                # UTF-8 BOM before the XML (RFC 5424 MSG-UTF8)
send_timeout = 5.0                # seconds per connect/send to the repository
retry_initial = 2.0               # seconds before the first retry, doubled per attempt
retry_max = 300.0
batch_size = 100                  # messages per outbox write and per send pass
queue_size = 10000                # audit messages waiting in memory for the outbox
flush_interval = 0.5              # seconds between outbox writes
retention_days = 30               # sent messages are purged after this
```

Pure: takes the parsed TOML table (values may be strings, from
``IMAGEBRIDGE_AUDIT_*`` environment overrides); relative paths are relative
to the configuration file.  Every error is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from imagebridge.errors import ConfigError

TRANSPORTS: Final = ("tls", "udp")


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """``[audit]``: where ATNA audit messages go and how the outbox behaves."""

    enabled: bool = False
    host: str = ""
    port: int = 6514
    transport: str = "tls"
    ca_bundle: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    audit_source_id: str = ""
    enterprise_site_id: str = ""
    host_name: str = ""
    base_url: str = ""
    app_name: str = "imagebridge"
    include_bom: bool = True
    send_timeout: float = 5.0
    retry_initial: float = 2.0
    retry_max: float = 300.0
    batch_size: int = 100
    queue_size: int = 10_000
    flush_interval: float = 0.5
    retention_days: int = 30


_PATHS: Final = frozenset({"ca_bundle", "client_certificate", "client_key"})
_BOOLS: Final = frozenset({"enabled", "include_bom"})
_INTS: Final = frozenset({"port", "batch_size", "queue_size", "retention_days"})
_FLOATS: Final = frozenset({"send_timeout", "retry_initial", "retry_max", "flush_interval"})


def _convert(key: str, value: Any, base_dir: Path | None) -> Any:
    try:
        if key in _BOOLS:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise TypeError(key)
            return value
        if key in _INTS:
            if isinstance(value, bool):
                raise TypeError(key)
            return int(value)
        if key in _FLOATS:
            if isinstance(value, bool):
                raise TypeError(key)
            return float(value)
        if key in _PATHS:
            path = Path(str(value))
            return path if path.is_absolute() or base_dir is None else base_dir / path
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"audit.{key} has an invalid value {value!r}") from exc
    if not isinstance(value, str):
        raise ConfigError(f"audit.{key} must be a string")
    return value.strip()


def audit_config(table: Any, *, base_dir: Path | None = None) -> AuditConfig:
    """Parse the ``[audit]`` table (absent or empty: auditing off)."""
    if not isinstance(table, Mapping):
        raise ConfigError("[audit] must be a table")
    fields = {f.name for f in dataclasses.fields(AuditConfig)}
    unknown = set(table) - fields
    if unknown:
        raise ConfigError(f"unknown key(s) in [audit]: {', '.join(sorted(unknown))}")
    config = AuditConfig(**{k: _convert(k, v, base_dir) for k, v in table.items()})
    if config.transport not in TRANSPORTS:
        raise ConfigError("audit.transport must be 'tls' or 'udp'")
    if config.enabled and not config.host:
        raise ConfigError("audit.host is required when audit.enabled is true")
    if not 0 < config.port < 65536:
        raise ConfigError(f"audit.port {config.port} is not a port")
    if (config.client_certificate is None) != (config.client_key is None):
        raise ConfigError("audit.client_certificate and audit.client_key go together")
    if config.transport == "udp" and (config.client_certificate or config.ca_bundle):
        raise ConfigError("audit.ca_bundle and client certificates need transport = 'tls'")
    for key in ("send_timeout", "retry_initial", "retry_max", "flush_interval"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"audit.{key} must be positive")
    for key in ("batch_size", "queue_size", "retention_days"):
        if getattr(config, key) < 1:
            raise ConfigError(f"audit.{key} must be at least 1")
    return config
