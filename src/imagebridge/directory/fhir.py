"""FHIR directory importer: communities from a FHIR R4 directory in the Carequality shape.

The Carequality Directory (spec digest, section 8) lists every participant as
an ``Organization`` whose identifier carries the homeCommunityId
(``urn:oid:<OID>``, type code ``HCID``) and whose *contained* ``Endpoint``
resources each name, in the Sequoia ``Transaction`` extension, the responding
transaction they serve (``XCPD ITI-55``, ``XCA ITI-38``, ...).

:func:`fetch_directory` pages through ``GET [base]/Organization`` following
the Bundle's ``next`` links, reads every page as a stream under a byte limit,
and turns each Organization into a :class:`Community`.  A malformed entry is
skipped with a :class:`DirectoryWarning`; only an unreachable directory or an
unreadable page fails the import.  :func:`refresh` merges a new snapshot over
the previous one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpx

from imagebridge.directory.static import url_problem
from imagebridge.errors import InvalidOid, InvalidValue, JsonMalformed, PartnerUnavailable
from imagebridge.model.directory import (
    Community,
    CommunityEndpoint,
    DirectorySnapshot,
    DirectoryWarning,
    RefreshResult,
)
from imagebridge.model.ids import URN_OID, HomeCommunityId
from imagebridge.transactions import Transaction

SEQUOIA: Final = "https://sequoiaproject.org/fhir/sphd"
TRANSACTION_EXTENSION: Final = f"{SEQUOIA}/StructureDefinition/Transaction"
HCID_TYPE_CODE: Final = "HCID"

DEFAULT_TRANSACTION_CODES: Final[Mapping[str, Transaction]] = {
    "ITI-55": Transaction.ITI_55,
    "ITI-38": Transaction.ITI_38,
    "ITI-39": Transaction.ITI_39,
    "RAD-75": Transaction.RAD_75,
    "RAD-69": Transaction.RAD_69,
}
"""Substring of the Transaction code -> transaction (the digest: match on substrings)."""

DEFAULT_PAGE_SIZE: Final = 500
DEFAULT_MAX_PAGES: Final = 200
DEFAULT_MAX_PAGE_BYTES: Final = 64 * 1024 * 1024


class DirectoryUnavailable(PartnerUnavailable):
    """The FHIR directory could not be reached or answered with an error status."""


class DirectoryMalformed(JsonMalformed):
    """A directory page is not JSON, not a FHIR Bundle, or larger than the limit."""


class DirectoryEntryInvalid(InvalidValue):
    """One Organization cannot be used; it is skipped with a warning, never raised out."""


async def fetch_directory(
    client: httpx.AsyncClient,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    only_active: bool = True,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
    transaction_codes: Mapping[str, Transaction] = DEFAULT_TRANSACTION_CODES,
) -> DirectorySnapshot:
    """Import every Organization of the directory at *base_url* (``.../fhir``).

    *headers* carries the credentials (the live client sends
    ``Authorization: api-key <key>``); they are only ever sent to *base_url*'s
    origin, so a ``next`` link elsewhere stops the import.  Raises
    :class:`DirectoryUnavailable` or :class:`DirectoryMalformed` for a page
    that cannot be read; the snapshot is ``complete=False`` when paging
    stopped early.
    """
    params: dict[str, str] = {"_format": "json", "_count": str(page_size), "_sort": "_id"}
    if only_active:
        params["active"] = "true"
    request_headers = {"Accept": "application/fhir+json", **(headers or {})}
    origin = _origin(base_url)
    url: str | None = base_url.rstrip("/") + "/Organization"
    warnings: list[DirectoryWarning] = []
    organizations: list[tuple[str, dict[str, Any]]] = []
    included: dict[str, dict[str, Any]] = {}
    seen_urls: set[str] = set()
    complete = True
    page = 0
    while url is not None:
        if page >= max_pages:
            warnings.append(DirectoryWarning("directory", f"stopped after {max_pages} pages"))
            complete = False
            break
        seen_urls.add(url)
        page += 1
        body = await _read_page(
            client, url, params if page == 1 else None, request_headers, max_page_bytes
        )
        bundle = _parse_bundle(body, f"page {page}")
        _collect(bundle, f"page {page}", organizations, included, warnings)
        url = _next_link(bundle, url)
        if url is not None and (_origin(url) != origin or url in seen_urls):
            warnings.append(
                DirectoryWarning(f"page {page}", f"next link {url[:120]!r} not followed")
            )
            complete = False
            url = None
    communities: list[Community] = []
    index: dict[HomeCommunityId, str] = {}
    for where, resource in organizations:
        try:
            community = parse_organization(resource, included, transaction_codes, warnings)
        except DirectoryEntryInvalid as exc:
            warnings.append(DirectoryWarning(where, f"skipped: {exc.message}"))
            continue
        hcid = community.home_community_id
        if hcid in index:
            warnings.append(
                DirectoryWarning(where, f"skipped: {hcid.oid} already in {index[hcid]}")
            )
            continue
        index[hcid] = where
        communities.append(community)
    return DirectorySnapshot(tuple(communities), tuple(warnings), complete)


async def _read_page(
    client: httpx.AsyncClient,
    url: str,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str],
    max_bytes: int,
) -> bytes:
    """One page's body, read chunk by chunk and refused past *max_bytes*."""
    try:
        async with client.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code != 200:
                raise DirectoryUnavailable(
                    f"the directory answered HTTP {response.status_code} for {url[:200]}"
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise DirectoryMalformed(
                    f"directory page exceeds {max_bytes} bytes (Content-Length {declared})"
                )
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise DirectoryMalformed(f"directory page exceeds {max_bytes} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise DirectoryUnavailable(f"the directory at {url[:200]} is unreachable: {exc}") from exc
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_bundle(body: bytes, where: str) -> dict[str, Any]:
    """The Bundle of one page: strict JSON (no NaN), bounded nesting, resourceType Bundle."""
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise DirectoryMalformed(f"directory {where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise DirectoryMalformed(f"directory {where} is not a FHIR Bundle")
    return document


def _collect(
    bundle: Mapping[str, Any],
    where: str,
    organizations: list[tuple[str, dict[str, Any]]],
    included: dict[str, dict[str, Any]],
    warnings: list[DirectoryWarning],
) -> None:
    """Sort the page's entries: Organizations, and Endpoints brought by ``_include``."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        warnings.append(DirectoryWarning(where, "Bundle.entry is not a list; page ignored"))
        return
    for number, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            warnings.append(DirectoryWarning(f"{where} entry {number}", "no resource"))
            continue
        kind, rid = resource.get("resourceType"), resource.get("id")
        label = f"{kind}/{rid}" if isinstance(rid, str) else f"{where} entry {number}"
        if kind == "Organization":
            organizations.append((label, resource))
        elif kind == "Endpoint" and isinstance(rid, str):
            included[f"Endpoint/{rid}"] = resource
        elif kind == "OperationOutcome":
            warnings.append(DirectoryWarning(where, "the directory reported an OperationOutcome"))


def _next_link(bundle: Mapping[str, Any], current: str) -> str | None:
    links = bundle.get("link", [])
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next":
            target = link.get("url")
            if isinstance(target, str) and target.strip():
                return urljoin(current, target.strip())
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


# --- one Organization -------------------------------------------------------------


def parse_organization(
    resource: Mapping[str, Any],
    included: Mapping[str, Mapping[str, Any]],
    transaction_codes: Mapping[str, Transaction],
    warnings: list[DirectoryWarning],
) -> Community:
    """A Carequality Organization as a :class:`Community`.

    Raises :class:`DirectoryEntryInvalid` when it has no usable homeCommunityId
    or is not well formed; endpoints that cannot be used are left out, each
    with a warning appended to *warnings*.
    """
    hcid = _organization_hcid(resource)
    where = f"Organization/{hcid.oid}"
    active = resource.get("active", True)
    if not isinstance(active, bool):
        raise DirectoryEntryInvalid("Organization.active is not a boolean")
    name = resource.get("name")
    if not isinstance(name, str) or not name.strip():
        warnings.append(DirectoryWarning(where, "no name; the homeCommunityId is used"))
        name = hcid.oid
    endpoints: list[CommunityEndpoint] = []
    for label, endpoint_resource in _endpoint_resources(resource, included, where, warnings):
        try:
            endpoints.append(_endpoint(endpoint_resource, transaction_codes))
        except DirectoryEntryInvalid as exc:
            warnings.append(DirectoryWarning(f"{where} {label}", f"skipped: {exc.message}"))
    return Community(
        home_community_id=hcid,
        name=name.strip(),
        endpoints=tuple(endpoints),
        active=active,
        part_of=_part_of(resource, where, warnings),
    )


def _organization_hcid(resource: Mapping[str, Any]) -> HomeCommunityId:
    """The HCID identifier (type code HCID, else any ``urn:oid:`` value), else the id."""
    typed: str | None = None
    untyped: str | None = None
    identifiers = resource.get("identifier", [])
    for identifier in identifiers if isinstance(identifiers, list) else []:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        value: str = identifier["value"].strip()
        if _has_code(identifier.get("type"), HCID_TYPE_CODE):
            typed = typed or value
        elif value.lower().startswith(URN_OID) or identifier.get("system") == URN_OID:
            untyped = untyped or value
    candidate = typed or untyped or resource.get("id")
    if not isinstance(candidate, str) or not candidate.strip():
        raise DirectoryEntryInvalid("no homeCommunityId identifier and no id")
    try:
        return HomeCommunityId.parse(candidate)
    except InvalidOid as exc:
        raise DirectoryEntryInvalid(exc.message) from exc


def _has_code(concept: Any, code: str) -> bool:
    if not isinstance(concept, dict):
        return False
    codings = concept.get("coding", [])
    return any(
        isinstance(c, dict) and c.get("code") == code
        for c in (codings if isinstance(codings, list) else [])
    )


def _endpoint_resources(
    resource: Mapping[str, Any],
    included: Mapping[str, Mapping[str, Any]],
    where: str,
    warnings: list[DirectoryWarning],
) -> list[tuple[str, Mapping[str, Any]]]:
    """The Endpoints referenced by the Organization: contained (``#id``) or included."""
    contained: dict[str, Mapping[str, Any]] = {}
    items = resource.get("contained", [])
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("resourceType") == "Endpoint":
            contained[f"#{item.get('id', '')}"] = item
    references = resource.get("endpoint")
    if not isinstance(references, list):
        return sorted(contained.items())  # no references: every contained Endpoint
    found: list[tuple[str, Mapping[str, Any]]] = []
    for reference in references:
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str):
            warnings.append(DirectoryWarning(where, "an endpoint reference has no 'reference'"))
            continue
        target = contained.get(ref) if ref.startswith("#") else None
        if target is None and not ref.startswith("#"):
            target = included.get("/".join(ref.rstrip("/").split("/")[-2:]))
        if target is None:
            warnings.append(DirectoryWarning(where, f"endpoint {ref!r} not found; skipped"))
            continue
        found.append((ref, target))
    return found


def _endpoint(resource: Mapping[str, Any], codes: Mapping[str, Transaction]) -> CommunityEndpoint:
    code = _transaction_code(resource)
    if code is None:
        raise DirectoryEntryInvalid("no Transaction extension")
    transaction = next((t for key, t in codes.items() if key in code), None)
    if transaction is None:
        raise DirectoryEntryInvalid(f"transaction code {code[:80]!r} is not one we send")
    address = resource.get("address")
    if not isinstance(address, str):
        raise DirectoryEntryInvalid("no address")
    problem = url_problem(address)
    if problem:
        raise DirectoryEntryInvalid(f"address {problem}: {address[:120]!r}")
    return CommunityEndpoint(
        transaction, address.strip(), active=resource.get("status") == "active"
    )


def _transaction_code(resource: Mapping[str, Any]) -> str | None:
    """The code (or text) of the Sequoia Transaction extension."""
    extensions = resource.get("extension", [])
    for extension in extensions if isinstance(extensions, list) else []:
        if not isinstance(extension, dict) or extension.get("url") != TRANSACTION_EXTENSION:
            continue
        concept = extension.get("valueCodeableConcept")
        codings: Any = concept.get("coding", []) if isinstance(concept, dict) else []
        if isinstance(extension.get("valueCoding"), dict):
            codings = [extension["valueCoding"]]
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
        for text in (
            concept.get("text") if isinstance(concept, dict) else None,
            extension.get("valueString"),
        ):
            if isinstance(text, str) and text.strip():
                return text
    return None


def _part_of(
    resource: Mapping[str, Any], where: str, warnings: list[DirectoryWarning]
) -> HomeCommunityId | None:
    part_of = resource.get("partOf")
    reference = part_of.get("reference") if isinstance(part_of, dict) else None
    if not isinstance(reference, str):
        return None
    try:
        return HomeCommunityId.parse(reference.rstrip("/").rsplit("/", 1)[-1])
    except InvalidOid:
        warnings.append(DirectoryWarning(where, f"partOf {reference[:80]!r} is not an OID"))
        return None


# --- refresh ----------------------------------------------------------------------


def refresh(previous: DirectorySnapshot | None, new: DirectorySnapshot) -> RefreshResult:
    """Merge *new* over *previous*: what was added, removed and changed.

    When *new* is incomplete (paging stopped early) the communities it did not
    see are kept from *previous* and nothing counts as removed.
    """
    old = previous.by_id() if previous is not None else {}
    current = new.by_id()
    added = tuple(h for h in current if h not in old)
    changed = tuple(h for h, c in current.items() if h in old and old[h] != c)
    unchanged = sum(1 for h, c in current.items() if old.get(h) == c)
    communities = tuple(current.values())
    warnings = new.warnings
    removed: tuple[HomeCommunityId, ...] = ()
    missing = tuple(h for h in old if h not in current)
    if new.complete:
        removed = missing
    elif missing:
        communities += tuple(old[h] for h in missing)
        warnings += (
            DirectoryWarning("refresh", f"import incomplete: kept {len(missing)} communities"),
        )
    snapshot = DirectorySnapshot(communities, warnings, new.complete)
    return RefreshResult(snapshot, added, removed, changed, unchanged)
