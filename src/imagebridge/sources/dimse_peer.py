"""A DIMSE peer (PACS) and how we call it: associations, response statuses, C-FIND (pynetdicom).

Shared by the DIMSE image source (:mod:`imagebridge.sources.dimse`) and the
C-STORE import target (:mod:`imagebridge.importing.cstore`).  Everything here
blocks: callers run it in a worker thread.  A PACS that cannot be reached,
rejects the association or stops answering raises :class:`SourceUnavailable`;
a C-FIND failure status raises :class:`SourceProtocolError`.  Messages name
the PACS (AE title, host, port), never a patient.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from imagebridge.errors import SourceProtocolError, SourceUnavailable

STATUS_SUCCESS: Final = 0x0000
PENDING: Final = frozenset({0xFF00, 0xFF01})
UNCOMPRESSED: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True, slots=True)
class DimseTimeouts:
    """Seconds to wait: TCP connect and association negotiation, each DIMSE reply, any PDU."""

    connect: float = 5.0
    dimse: float = 60.0
    network: float = 60.0


@dataclass(frozen=True, slots=True)
class DimsePeer:
    """A PACS's DIMSE address and our calling AE: host, port, AE titles, timeouts, PDU size."""

    host: str
    port: int
    called_ae: str
    calling_ae: str = "IMAGEBRIDGE"
    timeouts: DimseTimeouts = field(default_factory=DimseTimeouts)
    max_pdu_size: int = 256 * 1024

    def __post_init__(self) -> None:
        for what, title in (("called", self.called_ae), ("calling", self.calling_ae)):
            check_ae_title(title, what)

    @property
    def where(self) -> str:
        """``AE@host:port``, for messages."""
        return f"{self.called_ae}@{self.host}:{self.port}"

    @contextmanager
    def association(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        what: str,
        ext_neg: list[object] | None = None,
        handlers: list[EventHandlerType] | None = None,
    ) -> Iterator[Association]:
        """An established association, released (or aborted on error) afterwards."""
        ae = ApplicationEntity(ae_title=self.calling_ae)
        ae.connection_timeout = self.timeouts.connect
        ae.acse_timeout = self.timeouts.connect
        ae.dimse_timeout = self.timeouts.dimse
        ae.network_timeout = self.timeouts.network
        ae.maximum_pdu_size = self.max_pdu_size
        for abstract_syntax, syntaxes in contexts:
            ae.add_requested_context(abstract_syntax, list(syntaxes))
        assoc = ae.associate(
            self.host,
            self.port,
            ae_title=self.called_ae,
            max_pdu=self.max_pdu_size,
            ext_neg=ext_neg,  # type: ignore[arg-type]  # pynetdicom's private union alias
            evt_handlers=handlers,
        )
        if not assoc.is_established:
            if assoc.is_rejected:
                raise SourceUnavailable(
                    f"the PACS {self.where} rejected the association for {what} "
                    f"(check the called and calling AE titles, {self.calling_ae} calling)"
                )
            raise SourceUnavailable(
                f"the PACS {self.where} cannot be reached or did not accept an association "
                f"for {what} within {self.timeouts.connect:g} s"
            )
        try:
            yield assoc
        except BaseException:
            assoc.abort()
            raise
        if assoc.is_established:
            assoc.release()

    def status(self, status: Dataset, what: str) -> int:
        """The Status of a DIMSE response; an empty one means the PACS stopped answering."""
        code = status.get("Status")
        if code is None:
            raise SourceUnavailable(
                f"the PACS {self.where} stopped answering during {what} "
                f"(no reply within {self.timeouts.dimse:g} s, or the association dropped)"
            )
        return int(code)

    def find(
        self,
        identifier: Dataset,
        what: str,
        model: str = StudyRootQueryRetrieveInformationModelFind,
    ) -> list[Dataset]:
        """C-FIND on one association: every pending match; a failure status raises."""
        matches: list[Dataset] = []
        with self.association([(model, UNCOMPRESSED)], what=what) as assoc:
            for status, match in assoc.send_c_find(identifier, model):
                code = self.status(status, what)
                if code in PENDING:
                    if match is not None:
                        matches.append(match)
                elif code != STATUS_SUCCESS:
                    raise SourceProtocolError(
                        f"the PACS {self.where} failed {what} with status 0x{code:04X}"
                    )
        return matches


def check_ae_title(title: str, what: str) -> None:
    """Raise ValueError unless *title* is 1-16 ASCII characters without a backslash."""
    if not 0 < len(title.strip()) <= 16 or "\\" in title or not title.isascii():
        raise ValueError(f"the {what} AE title {title!r} is not 1-16 ASCII characters")
