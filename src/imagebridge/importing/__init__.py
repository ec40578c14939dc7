"""Import target, destinations for retrieved images: a local folder, a PACS over STOW-RS or C-STORE.

:func:`open_target` makes the target a configuration describes; the
protocol and its data types are in :mod:`imagebridge.importing.base`.
"""

from __future__ import annotations

from imagebridge.importing.base import (
    HeldInstance,
    IdentifiedFile,
    ImportInstance,
    ImportStatus,
    ImportTarget,
    InstanceOutcome,
    PatientCandidate,
    PatientDemographics,
    SplicedInstance,
    StoreReport,
)
from imagebridge.importing.config import (
    CStoreTargetConfig,
    FolderTargetConfig,
    StowTargetConfig,
    TargetConfig,
)
from imagebridge.importing.cstore import CStoreTarget
from imagebridge.importing.folder import FolderTarget
from imagebridge.importing.stow import StowTarget

__all__ = [
    "CStoreTarget",
    "CStoreTargetConfig",
    "FolderTarget",
    "FolderTargetConfig",
    "HeldInstance",
    "IdentifiedFile",
    "ImportInstance",
    "ImportStatus",
    "ImportTarget",
    "InstanceOutcome",
    "PatientCandidate",
    "PatientDemographics",
    "SplicedInstance",
    "StoreReport",
    "StowTarget",
    "StowTargetConfig",
    "TargetConfig",
    "open_target",
]


def open_target(config: TargetConfig) -> ImportTarget:
    """The import target *config* describes (the caller closes it with ``aclose``)."""
    if isinstance(config, FolderTargetConfig):
        return FolderTarget(config)
    if isinstance(config, StowTargetConfig):
        return StowTarget(config)
    return CStoreTarget(config)
