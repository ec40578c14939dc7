"""Read NIST XDS Toolkit test plans and check replies the way the toolkit does.

Used by ``test_responder_testkit.py`` and ``test_xca_initiating_testkit.py``.
A toolkit test folder holds ``index.idx`` (its sections in order; a folder
without one is a single section) and, per section, a ``testplan.xml`` with one
or more ``TestStep``:

* the transaction element (``XCQTransaction``, ``XCRTransaction``,
  ``XcpdTransaction``, and the Initiating Gateway's ``IGQTransaction``,
  ``IGRTransaction``) naming the request file (``MetadataFile``);
* ``ExpectedStatus`` and optional ``ExpectedErrorCode``;
* ``UseId`` / ``UseReport``: where each ``$token$`` of the request comes from
  (ids assigned and values reported by an earlier test, here the data
  loader 12318);
* ``Assertions/Assert``: XPath 1.0 over the toolkit's log of the section;
* ``Report``: a value read by XPath from the request (``InputMetadata``) or
  the reply (``Result``) and published for later steps and tests;
* ``NullTransaction`` steps (:class:`NullStep`): no message, only ``Assert``
  comparisons of ``UseReport`` values (``'submittedValue' = 'returnedValue'``).

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
TRANSACTIONS = (
    "XCQTransaction",
    "XCRTransaction",
    "XcpdTransaction",
    "IGQTransaction",
    "IGRTransaction",
)
NULL_TRANSACTION = "NullTransaction"
THIS = "THIS"  # UseReport section="THIS": the section being run


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
class Report:
    """One ``<Report name section>``: *xpath* over the request or the reply."""

    name: str
    section: str  # "InputMetadata" (the request) or "Result" (the reply)
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
    reports: tuple[Report, ...] = ()


@dataclass(frozen=True, slots=True)
class NullStep:
    """A ``TestStep`` holding a ``NullTransaction``: comparisons of earlier reports."""

    test: str
    section: str
    id: str
    tokens: tuple[TokenRef, ...]
    asserts: tuple[ToolkitAssert, ...]


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


def _plan(test_dir: Path, section: str) -> tuple[Path, etree._Element]:
    folder = test_dir / section if section else test_dir
    plan = etree.parse(str(folder / "testplan.xml"), etree.XMLParser(no_network=True))
    return folder, plan.getroot()


def _asserts(transaction: etree._Element) -> tuple[ToolkitAssert, ...]:
    return tuple(
        ToolkitAssert(a.get("id", ""), a.get("desc", ""), " ".join((a.text or "").split()))
        for a in transaction.iterfind("Assertions/Assert")
    )


def read_steps(test_dir: Path, section: str) -> list[Step]:
    """Every ``TestStep`` of *section* that sends a message (see :func:`sections`).

    ``NullTransaction`` steps are read by :func:`read_null_steps`.
    """
    folder, root = _plan(test_dir, section)
    steps = []
    for step in root.iter("TestStep"):
        transaction = next((el for el in step if el.tag in TRANSACTIONS), None)
        if transaction is None:
            if step.find(NULL_TRANSACTION) is not None:
                continue
            raise ValueError(f"{folder}: step {step.get('id')} has no known transaction")
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
                asserts=_asserts(transaction),
                expected_object_refs=None if refs is None else int(refs.get("count", "0")),
                expected_mime_type=_text(transaction, "ExpectedMimeType"),
                reference_documents=tuple(
                    (r.text or "").strip() for r in transaction.iterfind("ReferenceDocument")
                ),
                reports=tuple(
                    Report(
                        r.get("name", ""), r.get("section", ""), " ".join((r.text or "").split())
                    )
                    for r in transaction.iterfind("Report")
                ),
            )
        )
    return steps


def read_null_steps(test_dir: Path, section: str) -> list[NullStep]:
    """Every ``NullTransaction`` step of *section*, in order."""
    _, root = _plan(test_dir, section)
    found = []
    for step in root.iter("TestStep"):
        null = step.find(NULL_TRANSACTION)
        if null is None:
            continue
        found.append(
            NullStep(
                test=test_dir.name,
                section=section,
                id=step.get("id", ""),
                tokens=tuple(_token_ref(el) for el in null.iterfind("UseReport")),
                asserts=_asserts(null),
            )
        )
    return found


def token_key(ref: TokenRef, test: str, section: str) -> tuple[str, str, str, str]:
    """*ref*'s key with ``section="THIS"`` (and a missing test) resolved to *test*/*section*."""
    ref_test, ref_section, group, name = ref.key
    if ref_section == THIS:
        return (test, section, group, name)
    return (ref_test or test, ref_section, group, name)


def report_value(root: Element, xpath: str) -> str:
    """A ``<Report>``'s value as the toolkit publishes it: the string value of the first
    node found (empty if none), or the number, string or boolean the expression gives."""
    found = root.xpath(xpath)
    if isinstance(found, list):
        if not found:
            return ""
        first = found[0]
        if isinstance(first, etree._Element):
            return "".join(str(t) for t in first.itertext()).strip()
        return str(first).strip()
    if isinstance(found, bool):
        return "true" if found else "false"
    if isinstance(found, float):
        return str(int(found)) if found.is_integer() else str(found)
    return str(found).strip()


_QUOTED = re.compile(r"'([^']*)'")


def null_assert_holds(assertion: ToolkitAssert, values: Mapping[str, str]) -> bool:
    """Evaluate a ``NullTransaction`` assertion such as ``'requested' = 'returned'``.

    Each quoted ``useAs`` name is replaced by its value (as the toolkit does),
    and the XPath 1.0 expression that results is evaluated.
    """

    def substitute(match: re.Match[str]) -> str:
        value = values.get(match.group(1), match.group(1))
        if "'" in value:
            raise ValueError(f"report value with an apostrophe: {value!r}")
        return f"'{value}'"

    result = etree.XPath(_QUOTED.sub(substitute, assertion.xpath))(etree.Element("x"))
    return result is True


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
