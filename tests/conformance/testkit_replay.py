"""Read NIST XDS Toolkit test plans and check replies the way the toolkit does.

Used by ``test_responder_testkit.py``.  A toolkit test folder holds
``index.idx`` (its sections in order; a folder without one is a single
section) and, per section, a ``testplan.xml`` with one or more ``TestStep``:

* the transaction element (``XCQTransaction``, ``XCRTransaction``,
  ``XcpdTransaction``) naming the request file (``MetadataFile``);
* ``ExpectedStatus`` and optional ``ExpectedErrorCode``;
* ``UseId`` / ``UseReport``: where each ``$token$`` of the request comes from
  (ids assigned and values reported by an earlier test, here the data
  loader 12318);
* ``Assertions/Assert``: XPath 1.0 over the toolkit's log of the section.

:class:`ToolkitLog` rebuilds the part of that log the assertions navigate:
``TestResults/TestStep[@id]/<Transaction step=…>/Result/<reply payload>``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from imagebridge.wire import ns
from imagebridge.wire.xml import Element

TOKEN = re.compile(r"\$[A-Za-z_0-9]+\$")
TRANSACTIONS = ("XCQTransaction", "XCRTransaction", "XcpdTransaction")


@dataclass(frozen=True, slots=True)
class TokenRef:
    """One ``UseId`` / ``UseReport``: *symbol* takes the value *key* of an earlier test.

    *key* is ``(test, section, group, name)``; *group* is the ``UseId``
    section (``AssignedPatientId``, ``AssignedUuids``, ``AssignedUids``) or
    ``"Report"`` for a ``UseReport``.
    """

    symbol: str
    key: tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class ToolkitAssert:
    id: str
    desc: str
    xpath: str


@dataclass(frozen=True, slots=True)
class Step:
    """One ``TestStep`` of a section's ``testplan.xml``."""

    test: str
    section: str
    id: str
    transaction: str
    expected_status: str
    expected_error_codes: tuple[str, ...]
    metadata_file: Path
    tokens: tuple[TokenRef, ...]
    asserts: tuple[ToolkitAssert, ...]
    expected_object_refs: int | None
    expected_mime_type: str | None
    reference_documents: tuple[str, ...]


def sections(test_dir: Path) -> list[str]:
    """The sections of a test in execution order (``""``: the folder is the only section)."""
    index = test_dir / "index.idx"
    if not index.is_file():
        return [""]
    return [line.strip() for line in index.read_text().splitlines() if line.strip()]


def _text(el: etree._Element, path: str) -> str | None:
    found = el.find(path)
    return None if found is None or found.text is None else found.text.strip()


def _token_ref(el: etree._Element) -> TokenRef:
    if el.tag == "UseId":
        test, section = Path(el.get("testdir", "")).parts[-2:]
        return TokenRef(
            el.get("symbol", ""), (test, section, el.get("section", ""), el.get("id", ""))
        )
    return TokenRef(
        el.get("useAs", ""),
        (el.get("test", ""), el.get("section", ""), "Report", el.get("reportName", "")),
    )


def read_steps(test_dir: Path, section: str) -> list[Step]:
    """Every ``TestStep`` of *section* (see :func:`sections`)."""
    folder = test_dir / section if section else test_dir
    plan = etree.parse(str(folder / "testplan.xml"), etree.XMLParser(no_network=True))
    steps = []
    for step in plan.getroot().iter("TestStep"):
        transaction = next(el for el in step if el.tag in TRANSACTIONS)
        metadata = _text(transaction, "MetadataFile")
        if metadata is None:
            raise ValueError(f"{folder}: step {step.get('id')} has no MetadataFile")
        refs = transaction.find("ExpectedContents/ObjectRefs")
        steps.append(
            Step(
                test=test_dir.name,
                section=section,
                id=step.get("id", ""),
                transaction=str(transaction.tag),
                expected_status=_text(step, "ExpectedStatus") or "Success",
                expected_error_codes=tuple(
                    (e.text or "").strip() for e in step.findall("ExpectedErrorCode")
                ),
                metadata_file=folder / metadata,
                tokens=tuple(
                    _token_ref(el) for el in transaction if el.tag in ("UseId", "UseReport")
                ),
                asserts=tuple(
                    ToolkitAssert(
                        a.get("id", ""), a.get("desc", ""), " ".join((a.text or "").split())
                    )
                    for a in transaction.iterfind("Assertions/Assert")
                ),
                expected_object_refs=None if refs is None else int(refs.get("count", "0")),
                expected_mime_type=_text(transaction, "ExpectedMimeType"),
                reference_documents=tuple(
                    (r.text or "").strip() for r in transaction.iterfind("ReferenceDocument")
                ),
            )
        )
    return steps


def token_values(step: Step, loaded: Mapping[tuple[str, str, str, str], str]) -> dict[str, str]:
    """The step's ``$token$`` values, looked up in what the data loader reported."""
    return {ref.symbol: loaded[ref.key] for ref in step.tokens}


def fill(data: bytes, values: Mapping[str, str]) -> bytes:
    """Substitute ``$token$``s in a request file (values XML-escaped); refuse leftovers."""
    text = data.decode("utf-8")
    for symbol, value in values.items():
        text = text.replace(symbol, escape(value, {'"': "&quot;"}))
    left = TOKEN.findall(text)
    if left:
        raise ValueError(f"tokens without a value: {sorted(set(left))}")
    return text.encode("utf-8")


def fill_xpath(xpath: str, values: Mapping[str, str]) -> str:
    for symbol, value in values.items():
        xpath = xpath.replace(symbol, value)
    return xpath


def response_status(payload: Element) -> str:
    """The toolkit's status word (``Success``, ``PartialSuccess``, ``Failure``) of an ebRS reply."""
    status = payload.get("status")
    if status is None:
        registry_response = payload.find(ns.q(ns.RS, "RegistryResponse"))
        status = None if registry_response is None else registry_response.get("status")
    if status is None:
        raise AssertionError(f"no status on {etree.QName(payload).localname}")
    return status.rsplit(":", 1)[-1]


def registry_error_codes(payload: Element) -> list[str]:
    return [str(e.get("errorCode")) for e in payload.iter(ns.q(ns.RS, "RegistryError"))]


class ToolkitLog:
    """The toolkit's per-section log, as far as its ``<Assert>`` XPaths read it."""

    def __init__(self) -> None:
        self.root = etree.Element("TestResults")

    def add(self, step: Step, payload: Element) -> None:
        test_step = etree.SubElement(self.root, "TestStep", id=step.id)
        transaction = etree.SubElement(test_step, step.transaction, step=step.id)
        etree.SubElement(transaction, "Result").append(copy.deepcopy(payload))

    def evaluate(self, assertion: ToolkitAssert, values: Mapping[str, str]) -> object:
        return self.root.xpath(fill_xpath(assertion.xpath, values))
