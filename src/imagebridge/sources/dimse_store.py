"""Storage SCP side of DIMSE retrieves: received C-STORE data sets spooled to files.

pynetdicom normally assembles a received C-STORE data set in memory.  With its
``STORE_RECV_CHUNKED_DATASET`` switch it writes the P-DATA fragments straight
to a temporary Part-10 file instead (File Meta Information built from the
presentation context) and hands the handler ``event.dataset_path``.
:func:`enable_spooled_receive` turns that switch on; it is process-wide, and
harmless to other handlers (``event.dataset`` still works, it reads the file).
:func:`take_received_file` moves the file out of pynetdicom's hands before it
deletes it, so a whole instance never sits in memory.

:class:`MoveReceiver` is the C-MOVE destination: a Storage SCP on a configured
port that accepts associations only from the PACS's AE title, and hands each
received instance to the retrieve waiting for it (by SOP Instance UID).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import _config, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

STATUS_SUCCESS: Final = 0x0000
STATUS_UNEXPECTED: Final = 0xC000  # "Cannot understand": an instance nobody asked for


def enable_spooled_receive() -> None:
    """Make pynetdicom write received C-STORE data sets to temporary files (process-wide)."""
    _config.STORE_RECV_CHUNKED_DATASET = True


def new_spool_path(spool_dir: str | None) -> Path:
    """A fresh, empty spool file (the caller deletes it)."""
    fd, name = tempfile.mkstemp(prefix="imagebridge-dimse-", suffix=".dcm", dir=spool_dir)
    os.close(fd)
    return Path(name)


def affected_sop_instance_uid(event: Event) -> str:
    """The Affected SOP Instance UID of a C-STORE request event ('' when absent)."""
    value = getattr(event.request, "AffectedSOPInstanceUID", None)
    return str(value or "").strip()


def take_received_file(event: Event, spool_dir: str | None) -> Path:
    """Move the Part-10 file pynetdicom spooled for a C-STORE event into a spool file of ours."""
    source = Path(event.dataset_path)
    target = new_spool_path(spool_dir)
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            target.unlink(missing_ok=True)
            raise
        shutil.copyfile(source, target)  # another file system: copy, pynetdicom deletes its own
    return target


@dataclass(slots=True)
class PendingInstance:
    """A retrieve waiting at the C-MOVE destination for one instance (its file once arrived)."""

    sop_instance_uid: str
    path: Path | None = None


class MoveReceiver:
    """Storage SCP receiving C-MOVE sub-operations for this process's retrieves."""

    def __init__(
        self,
        ae_title: str,
        host: str,
        port: int,
        *,
        peer_ae_title: str,
        spool_dir: str | None = None,
        network_timeout: float = 60.0,
    ) -> None:
        self._ae_title = ae_title
        self._address = (host, port)
        self._peer_ae_title = peer_ae_title
        self._spool_dir = spool_dir
        self._network_timeout = network_timeout
        self._lock = threading.Lock()
        self._waiting: dict[str, list[PendingInstance]] = {}
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Listen (once; later calls do nothing).  Raises ``OSError`` when the port is taken."""
        with self._lock:
            if self._server is not None:
                return
            enable_spooled_receive()
            ae = ApplicationEntity(ae_title=self._ae_title)
            ae.network_timeout = self._network_timeout
            ae.require_called_aet = True
            ae.require_calling_aet = [self._peer_ae_title]
            for context in AllStoragePresentationContexts:
                if context.abstract_syntax is not None:
                    ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
            self._server = ae.start_server(
                self._address, block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
            )
            logger.info("C-MOVE destination %s listening on %s:%d", self._ae_title, *self._address)

    def expect(self, sop_instance_uid: str) -> PendingInstance:
        """Register a retrieve waiting for one instance; pass the slot to :meth:`collect`."""
        slot = PendingInstance(sop_instance_uid)
        with self._lock:
            self._waiting.setdefault(sop_instance_uid, []).append(slot)
        return slot

    def collect(self, slot: PendingInstance) -> Path | None:
        """Unregister *slot*; the spooled file if its instance arrived (the caller deletes it)."""
        with self._lock:
            slots = self._waiting.get(slot.sop_instance_uid, [])
            if slot in slots:
                slots.remove(slot)
            if not slots:
                self._waiting.pop(slot.sop_instance_uid, None)
        return slot.path

    def stop(self) -> None:
        """Stop listening and drop files nobody collected."""
        with self._lock:
            server, self._server = self._server, None
            leftovers = [s.path for slots in self._waiting.values() for s in slots if s.path]
            self._waiting.clear()
        if server is not None:
            server.shutdown()
        for path in leftovers:
            path.unlink(missing_ok=True)

    def _on_store(self, event: Event) -> int:
        uid = affected_sop_instance_uid(event)
        with self._lock:
            slot = next((s for s in self._waiting.get(uid, []) if s.path is None), None)
            if slot is None:
                logger.warning("C-MOVE destination refused an instance no retrieve asked for")
                return STATUS_UNEXPECTED
            slot.path = take_received_file(event, self._spool_dir)
        return STATUS_SUCCESS
