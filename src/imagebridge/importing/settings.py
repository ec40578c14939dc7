"""Import into the local PACS, the ``[import]`` configuration table.

```toml
[import]
target = "stow"                    # folder | stow | cstore
url = "http://pacs.local:8042/dicom-web"   # stow
# path = "/srv/imported"          # folder (relative to the config file)
# host = "pacs.local"; port = 104; called_ae = "PACS"; calling_ae = "IMAGEBRIDGE"  # cstore
accession = "clear"                # keep | clear | map
accession_map = { "A123" = "L-77" } # with accession = "map": foreign -> local
uid_collision = "hold"             # hold | remap
modifying_system = "imagebridge"
batch_size = 50                    # instances per RAD-75 exchange and per store
spool_dir = "/var/spool/imagebridge"  # where received parts wait (default: system temp)
lease_seconds = 300                # a worker's hold on a job, renewed after every batch
sweep_interval = 30                # how often `serve` looks for jobs nobody runs
pending_grace = 60                 # a pending job waits this long for its creator first
```

Pure: takes the parsed TOML table; every error is a :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from imagebridge.errors import ConfigError, ImageBridgeError
from imagebridge.importing.config import (
    CStoreTargetConfig,
    FolderTargetConfig,
    StowTargetConfig,
    TargetConfig,
)
from imagebridge.model.reconcile import (
    AccessionMapping,
    AccessionPolicy,
    LocalAccession,
    ReconcileSettings,
    UidCollisionPolicy,
)

_COMMON: Final = frozenset(
    {
        "target",
        "accession",
        "accession_map",
        "uid_collision",
        "modifying_system",
        "batch_size",
        "spool_dir",
        "name",
        "lease_seconds",
        "sweep_interval",
        "pending_grace",
    }
)
_PER_KIND: Final = {
    "folder": frozenset({"path"}),
    "stow": frozenset({"url"}),
    "cstore": frozenset({"host", "port", "called_ae", "calling_ae"}),
}


@dataclass(frozen=True, slots=True)
class JobWorkerSettings:
    """How ``serve`` workers share import jobs (see :mod:`imagebridge.web.imports`)."""

    lease_seconds: float = 300.0
    """A worker's hold on a running job; it renews it after every batch.  A worker that
    died is replaced once this has passed (at once when it was a process of this host)."""
    sweep_interval: float = 30.0
    """Seconds between two looks for jobs nobody runs (expired leases, waiting jobs)."""
    pending_grace: float = 60.0
    """A pending job is left to the process that made it for this long."""


@dataclass(frozen=True, slots=True)
class ImportConfig:
    """Where pulled images are imported and how they are reconciled."""

    target: TargetConfig
    reconcile: ReconcileSettings
    batch_size: int = 50
    spool_dir: Path | None = None
    accession_map: Mapping[str, str] = field(default_factory=dict)
    workers: JobWorkerSettings = field(default_factory=JobWorkerSettings)


def import_config(table: Any, *, base_dir: Path | None = None) -> ImportConfig:
    """Parse the ``[import]`` table."""
    if not isinstance(table, Mapping):
        raise ConfigError("[import] must be a table")
    kind = table.get("target")
    if kind not in _PER_KIND:
        raise ConfigError("import.target must be one of folder, stow, cstore")
    unknown = set(table) - _COMMON - _PER_KIND[kind]
    if unknown:
        raise ConfigError(f"[import] unknown key(s) for {kind}: {', '.join(sorted(unknown))}")
    name = str(table.get("name", kind))
    try:
        target = _target(kind, table, name, base_dir)
        reconcile, mapping = _reconcile(table)
    except (ValueError, TypeError, ImageBridgeError) as exc:
        raise ConfigError(f"[import] {exc}") from exc
    batch = table.get("batch_size", 50)
    if not isinstance(batch, int) or not 1 <= batch <= 10_000:
        raise ConfigError("import.batch_size must be an integer from 1 to 10000")
    if isinstance(target, StowTargetConfig):
        target = replace(target, batch_size=batch)  # one STOW-RS request per import batch
    spool = table.get("spool_dir")
    return ImportConfig(
        target,
        reconcile,
        batch,
        _path(spool, base_dir) if spool else None,
        mapping,
        JobWorkerSettings(
            lease_seconds=_seconds(table, "lease_seconds", 300.0, 1.0, 86_400.0),
            sweep_interval=_seconds(table, "sweep_interval", 30.0, 0.1, 3_600.0),
            pending_grace=_seconds(table, "pending_grace", 60.0, 0.0, 86_400.0),
        ),
    )


def _seconds(table: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"import.{key} must be a number of seconds from {low:g} to {high:g}")
    return float(value)


def _path(value: Any, base_dir: Path | None) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _required(table: Mapping[str, Any], key: str, kind: str) -> Any:
    if key not in table:
        raise ConfigError(f"import.{key} is required with target = {kind!r}")
    return table[key]


def _target(kind: str, table: Mapping[str, Any], name: str, base_dir: Path | None) -> TargetConfig:
    if kind == "folder":
        return FolderTargetConfig(_path(_required(table, "path", kind), base_dir), name=name)
    if kind == "stow":
        return StowTargetConfig(str(_required(table, "url", kind)).rstrip("/"), name=name)
    return CStoreTargetConfig(
        host=str(_required(table, "host", kind)),
        port=int(_required(table, "port", kind)),
        called_ae=str(_required(table, "called_ae", kind)),
        calling_ae=str(table.get("calling_ae", "IMAGEBRIDGE")),
        name=name,
    )


def _reconcile(table: Mapping[str, Any]) -> tuple[ReconcileSettings, dict[str, str]]:
    accession = AccessionPolicy(str(table.get("accession", "clear")).lower())
    raw_map = table.get("accession_map", {})
    if not isinstance(raw_map, Mapping):
        raise ConfigError("import.accession_map must be a table of foreign = local numbers")
    mapping = {str(k): str(v) for k, v in raw_map.items()}
    if accession is AccessionPolicy.MAP and not mapping:
        raise ConfigError("import.accession = 'map' needs import.accession_map")
    settings = ReconcileSettings(
        modifying_system=str(table.get("modifying_system", "imagebridge")),
        accession=accession,
        accession_map=tuple(AccessionMapping(k, LocalAccession(v)) for k, v in mapping.items()),
        uid_collision=UidCollisionPolicy(str(table.get("uid_collision", "hold")).lower()),
    )
    return settings, mapping
