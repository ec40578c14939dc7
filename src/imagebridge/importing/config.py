"""Import target, configuration: where retrieved images go (folder, STOW-RS PACS, C-STORE PACS).

Small frozen dataclasses, validated on construction, meant to hang under the
one config tree (``config.py``); :func:`imagebridge.importing.open_target`
turns one into a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BATCH_BYTES = 256 * 1024 * 1024


def _check_batches(batch_size: int, batch_bytes: int) -> None:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if batch_bytes < 1:
        raise ValueError("batch_bytes must be at least 1")


@dataclass(frozen=True, slots=True)
class FolderTargetConfig:
    """Import target, a local folder: ``<root>/<study>/<series>/<sop>.dcm``."""

    root: Path
    name: str = "folder"

    def __post_init__(self) -> None:
        if not str(self.root).strip():
            raise ValueError("a folder import target needs a root folder")


@dataclass(frozen=True, slots=True)
class StowTargetConfig:
    """Import target, a PACS over DICOMweb: STOW-RS to store, QIDO-RS to look.

    *base_url* is the DICOMweb root (``.../dicom-web``).  A STOW-RS request
    carries at most *batch_size* instances and about *batch_bytes* bytes;
    QIDO-RS is paged by *page_size*.
    """

    base_url: str
    name: str = "stow"
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    batch_size: int = 50
    batch_bytes: int = DEFAULT_BATCH_BYTES
    page_size: int = 1000
    username: str = ""
    password: str = ""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("a STOW-RS import target needs an http(s) base_url")
        _check_batches(self.batch_size, self.batch_bytes)
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")


@dataclass(frozen=True, slots=True)
class CStoreTargetConfig:
    """Import target, a PACS over DIMSE: C-STORE to store, C-FIND (Study Root) to look.

    One association carries a batch of at most *batch_size* instances (and
    128 presentation contexts); data sets are sent from file in PDU-sized
    chunks.
    """

    host: str
    port: int
    called_ae: str
    calling_ae: str = "IMAGEBRIDGE"
    name: str = "cstore"
    connect_timeout: float = 5.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0
    batch_size: int = 200
    batch_bytes: int = DEFAULT_BATCH_BYTES
    max_pdu_size: int = 256 * 1024
    spool_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be 1-65535")
        for what, title in (("called", self.called_ae), ("calling", self.calling_ae)):
            if not 0 < len(title.strip()) <= 16 or "\\" in title or not title.isascii():
                raise ValueError(f"the {what} AE title {title!r} is not 1-16 ASCII characters")
        _check_batches(self.batch_size, self.batch_bytes)


TargetConfig = FolderTargetConfig | StowTargetConfig | CStoreTargetConfig
