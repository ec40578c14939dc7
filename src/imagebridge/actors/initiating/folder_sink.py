"""Initiating Imaging Gateway, folder destination for retrieved images.

RAD-75 replies are spooled straight into ``<root>/.incoming`` while they
stream in (small parts above 256 KiB never sit in memory), then each instance
is moved to ``<root>/<study uid>/<series uid>/<sop instance uid>.dcm`` with a
rename when the spool file is on the same file system, else a streamed copy.
A file is only ever seen complete: it is written under a temporary name and
renamed.  File names are DICOM UIDs, checked before use, never patient data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from imagebridge.actors.initiating.client import ReceivedDocument, RetrieveResult
from imagebridge.importing.folder import instance_path, write_atomically
from imagebridge.model.imaging import ImagingDocumentLocator
from imagebridge.wire.spool import PartSink, SpooledBody, SpoolingSink

SPOOL_THRESHOLD: Final = 256 * 1024
INCOMING: Final = ".incoming"


@dataclass(slots=True)
class StoredInstances:
    """What :meth:`FolderSink.store` wrote: paths, bytes, and documents it could not place."""

    paths: list[Path] = field(default_factory=list)
    bytes: int = 0
    unplaced: list[str] = field(default_factory=list)


class FolderSink:
    """Writes retrieved DICOM instances into a folder tree by study, series and SOP UID."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    def part_sink(self, *_: object) -> PartSink:
        """A sink for one RAD-75 reply: parts spool into the destination's file system.

        Any arguments (community, study) are accepted and ignored so the method
        fits :meth:`PullWorkflow.retrieve`'s sink parameter.
        """
        return SpoolingSink(threshold=SPOOL_THRESHOLD, directory=self.incoming)

    def store(
        self, result: RetrieveResult, locators: Iterable[ImagingDocumentLocator]
    ) -> StoredInstances:
        """Place every document of *result* whose SOP Instance UID one of *locators* names."""
        where = {loc.sop_instance_uid: loc for loc in locators}
        stored = StoredInstances()
        for document in result.documents:
            locator = where.get(document.response.document_unique_id)
            if locator is None:
                stored.unplaced.append(document.response.document_unique_id)
                continue
            path = self.path_for(locator)
            self._place(document, path)
            stored.paths.append(path)
            stored.bytes += document.body.size
        return stored

    def path_for(self, locator: ImagingDocumentLocator) -> Path:
        return instance_path(
            self.root,
            locator.study_instance_uid,
            locator.series_instance_uid,
            locator.sop_instance_uid,
        )

    def _place(self, document: ReceivedDocument, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = document.body
        spool = body.path if isinstance(body, SpooledBody) else None
        if spool is not None:
            try:
                os.replace(spool, path)
                return
            except OSError:
                pass  # another file system: copy below
        with body.open() as source:
            write_atomically(path, source)
