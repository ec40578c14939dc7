"""Cross Gateway Query [ITI-38], Responding Gateway: stored-query filters on DocumentEntries.

Pure matching of FindDocuments / FindDocumentsByReferenceId parameters
against the KOS DocumentEntries built for a patient (ITI TF-2 3.18.4.1.2.3.7):

* code parameters are OR lists; ``$XDSDocumentEntryEventCodeList`` and
  ``$XDSDocumentEntryConfidentialityCode`` repeated as several slots are ANDed;
* time ranges follow "From <= value < To", each bound compared at the
  precision of the shorter of the two values (an entry without the time
  matches no range);
* ``$XDSDocumentEntryType`` picks stable and/or on-demand entries;
* ``$XDSDocumentEntryReferenceIdList`` matches any listed CXi value, the
  comparison ignoring the optional assigning authority when the query omits it;
* ``$XDSDocumentEntryAuthorPerson`` uses SQL LIKE wildcards (``%``, ``_``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from imagebridge.model.xds import Code, DocumentEntry, Dtm
from imagebridge.model.xds_query import (
    FindDocumentsByReferenceIdQuery,
    FindDocumentsFilters,
    TimeRange,
)


def _code_key(code: Code) -> tuple[str, str]:
    return (code.code, code.scheme)


def _any_code(wanted: Sequence[Code], have: Iterable[Code | None]) -> bool:
    keys = {_code_key(c) for c in wanted}
    return any(c is not None and _code_key(c) in keys for c in have)


def _at_precision(a: Dtm, b: Dtm) -> tuple[str, str]:
    n = min(len(a.value), len(b.value))
    return a.value[:n], b.value[:n]


def in_range(value: Dtm | None, bounds: TimeRange) -> bool:
    """``From <= value < To`` at the common precision; no bounds always matches."""
    if bounds.from_ is None and bounds.to is None:
        return True
    if value is None:
        return False
    if bounds.from_ is not None:
        v, f = _at_precision(value, bounds.from_)
        if v < f:
            return False
    if bounds.to is not None:
        v, t = _at_precision(value, bounds.to)
        if v >= t:
            return False
    return True


def _like(pattern: str) -> re.Pattern[str]:
    parts = (".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _reference_matches(wanted: str, have: Iterable[str]) -> bool:
    for value in have:
        if value == wanted:
            return True
        # "id^^^&authority&ISO^type": a query may leave the authority out.
        w, v = wanted.split("^"), value.split("^")
        if len(w) >= 5 and len(v) >= 5 and w[0] == v[0] and w[4] == v[4] and not w[3]:
            return True
    return False


def matches(entry: DocumentEntry, query: FindDocumentsFilters) -> bool:
    """True when *entry* satisfies every parameter of *query* (the patient is checked apart)."""
    if query.status and (entry.status is None or entry.status.value not in query.status):
        return False
    for wanted, have in (
        (query.class_code, (entry.class_code,)),
        (query.type_code, (entry.type_code,)),
        (query.format_code, (entry.format_code,)),
        (query.practice_setting_code, (entry.practice_setting_code,)),
        (query.healthcare_facility_type_code, (entry.healthcare_facility_type_code,)),
    ):
        if wanted and not _any_code(wanted, have):
            return False
    for group in query.event_code_list:
        if not _any_code(group, entry.event_code_list):
            return False
    for group in query.confidentiality_code:
        if not _any_code(group, entry.confidentiality_code):
            return False
    if not (
        in_range(entry.creation_time, query.creation_time)
        and in_range(entry.service_start_time, query.service_start_time)
        and in_range(entry.service_stop_time, query.service_stop_time)
    ):
        return False
    if query.document_entry_type and entry.object_type.value not in query.document_entry_type:
        return False
    if query.author_person:
        names = [a.person for a in entry.authors if a.person]
        if not any(_like(p).match(n) for p in query.author_person for n in names):
            return False
    if isinstance(query, FindDocumentsByReferenceIdQuery):
        return any(_reference_matches(w, entry.reference_id_list) for w in query.reference_id_list)
    return True


def select(entries: Iterable[DocumentEntry], query: FindDocumentsFilters) -> list[DocumentEntry]:
    """The entries that match *query*, in their given order."""
    return [e for e in entries if matches(e, query)]
