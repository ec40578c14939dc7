"""Read the NIST Responding Imaging Gateway tests (``rig_*``) and apply their imaging assertions.

Used by ``test_rig_testkit.py``.  A ``rig_*`` test folder holds ``index.idx``
(its sections in order) and one ``testplan.xml`` per section:

* ``Rad75RetrieveRequest``: an ``ImagingDocSetRigRetrieveTransaction`` naming
  the RAD-75 request (``MetadataFile``) and its ``ExpectedStatus``;
* ``ValidateRad69Request[-E|-F]``: ``sameReqImgs`` against the RAD-69 the
  toolkit's IDS simulator (``SimTransaction id="ids_e"``/``"ids_f"``) received,
  with the reference body in ``<Standard><RequestBody-E|-F>``;
* ``ValidateRad75Response``: ``sameRetImgs`` (and ``registryErrorListNotEmpty``)
  against the reference ``<Standard><ResponseBody>``;
* ``ValidateReturnedImages``: ``sameDcmImgs``, the returned DICOM objects
  against ``nist-images/std/<StdDir>/`` on the tags of ``<TagList>``.

The comparisons follow the toolkit's own code
(``gov.nist.toolkit.testengine.transactions.ImgDetailTransaction`` and
``edu.wustl.mir.erl.ihe.xdsi.validation.DetailDcmSetContent``, iheos-toolkit2):
elements are found by local name anywhere below the message, text is trimmed,
and a value missing or empty in the reference is not required while a value
the reference has must be present and equal in the message under test.  Each
comparison returns the toolkit's error lines (empty: the assertion passes).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pydicom
from lxml import etree

from imagebridge.wire.xml import Element

REQUEST_TRANSACTION = "ImagingDocSetRigRetrieveTransaction"
DETAIL_TRANSACTION = "XmlDetailTransaction"
PROCESSES = ("sameReqImgs", "sameRetImgs", "registryErrorListNotEmpty", "sameDcmImgs")

# The toolkit's IDS simulators of the RIG environment (rig_5419's readme, README table).
IDS_REPOSITORIES = {
    "ids_e": "1.3.6.1.4.1.21367.13.71.201.1",
    "ids_f": "1.3.6.1.4.1.21367.13.71.201.2",
    "ids_g": "1.3.6.1.4.1.21367.13.71.201.3",
}

# 2018 test -> legacy test it renumbers (same request and checks).  The 2018 tests name
# std image folders "2018/rig_2018-*" that are absent upstream; the twin's folder stands in.
TWINS = {
    "rig_2018-5421a": "rig_5420",
    "rig_2018-5421b": "rig_5421",
    "rig_2018-5421c": "rig_5428",
    "rig_2018-5422a": "rig_5422",
    "rig_2018-5422b": "rig_5423",
    "rig_2018-5423a": "rig_5429",
    "rig_2018-5424a": "rig_5424",
    "rig_2018-5424b": "rig_5425",
    "rig_2018-5424c": "rig_5426",
    "rig_2018-5425a": "rig_5427",
    "rig_2018-5425b": "rig_5430",
}


def _local(el: Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def descendants(el: Element, local: str) -> Iterator[Element]:
    """Elements named *local* in any namespace below *el* (``decendentsWithLocalName``)."""
    return (d for d in el.iterdescendants() if _local(d) == local)


def children(el: Element, local: str) -> list[Element]:
    return [c for c in el if _local(c) == local]


def only_child_text(el: Element, local: str) -> str | None:
    """The toolkit's ``loadTxt``: trimmed text of the only child *local*, else None."""
    found = children(el, local)
    if len(found) != 1:
        return None
    return (found[0].text or "").strip()


# --- test plans ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rad69Check:
    """``sameReqImgs``: the RAD-69 that IDS *sim_id* received must match *reference*."""

    section: str
    sim_id: str
    reference: Element

    @property
    def repository_unique_id(self) -> str:
        return IDS_REPOSITORIES[self.sim_id]


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """``sameDcmImgs``: returned objects against the files of *std_dirs* on *tags*."""

    section: str
    tags: tuple[str, ...]
    std_dirs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RigTest:
    """What one ``rig_*`` test sends and checks."""

    name: str
    request_file: Path
    expected_status: str
    rad69: tuple[Rad69Check, ...]
    response_reference: Element | None
    response_processes: tuple[str, ...]
    images: tuple[ImageCheck, ...]


def sections(test_dir: Path) -> list[str]:
    index = test_dir / "index.idx"
    if not index.is_file():
        return []
    return [line.strip() for line in index.read_text().splitlines() if line.strip()]


def _standard(step: Element, name: str) -> Element:
    """The toolkit's ``getStdElement``: the single element inside ``<Standard><name>``."""
    (standard,) = children(step, "Standard")
    (holder,) = children(standard, name)
    (body,) = [c for c in holder if isinstance(c.tag, str)]
    return body


def read_rig_test(
    test_dir: Path,
    *,
    request_transaction: str = REQUEST_TRANSACTION,
    sim_transaction: str = "ret.ids",
    ignored_steps: tuple[str, ...] = (),
) -> RigTest:
    """Parse every section of a ``rig_*`` test; unknown transactions or processes raise.

    The keywords read the Initiating Imaging Gateway tests (``iig_*``) too: their
    request step is ``ImagingDocSetIigRetrieveTransaction`` and ``sameReqImgs``
    reads the RAD-75 a RIG simulator received (``xcr.ids``); the
    :class:`Rad69Check` entries then hold those RAD-75 checks.  Steps whose
    transaction is in *ignored_steps* are left to the caller.  A ``MetadataFile``
    missing from its section is looked up in the test root (``rsnaedge-1001``).
    """
    request_file: Path | None = None
    expected_status = ""
    rad69: list[Rad69Check] = []
    response_reference: Element | None = None
    response_processes: list[str] = []
    images: list[ImageCheck] = []
    parser = etree.XMLParser(no_network=True, remove_comments=True)
    for section in sections(test_dir):
        plan = etree.parse(str(test_dir / section / "testplan.xml"), parser).getroot()
        for step in plan.iter("TestStep"):
            request = step.find(request_transaction)
            if request is not None:
                if request_file is not None:
                    raise ValueError(f"{test_dir.name}: more than one request step")
                name = (request.findtext("MetadataFile") or "").strip()
                request_file = test_dir / section / name
                if not request_file.is_file() and (test_dir / name).is_file():
                    request_file = test_dir / name
                expected_status = (step.findtext("ExpectedStatus") or "Success").strip()
                continue
            if any(step.find(ignored) is not None for ignored in ignored_steps):
                continue
            detail = step.find(DETAIL_TRANSACTION)
            if detail is None:
                raise ValueError(f"{test_dir.name}/{section}: unknown step {step.get('id')}")
            for assertion in detail.iterfind("Assertions/Assert"):
                process = assertion.get("process", "")
                if process == "sameReqImgs":
                    sim = assertion.find("SimTransaction")
                    if sim is None or sim.get("transaction") != sim_transaction:
                        raise ValueError(
                            f"{test_dir.name}/{section}: sameReqImgs without {sim_transaction}"
                        )
                    std = assertion.get("std") or "RequestBody"
                    rad69.append(Rad69Check(section, sim.get("id", ""), _standard(step, std)))
                elif process == "sameRetImgs":
                    response_reference = _standard(step, "ResponseBody")
                    response_processes.append(process)
                elif process == "registryErrorListNotEmpty":
                    response_processes.append(process)
                elif process == "sameDcmImgs":
                    tag_list = assertion.find("TagList")
                    tags = tuple(_local(t) for t in tag_list if isinstance(t.tag, str))
                    dirs = tuple(
                        (d.text or "").strip() for d in assertion.iterfind("DirList/StdDir")
                    )
                    images.append(ImageCheck(section, tags, dirs))
                else:
                    raise ValueError(f"{test_dir.name}/{section}: unknown process {process!r}")
    if request_file is None:
        raise ValueError(f"{test_dir.name}: no {request_transaction} step")
    return RigTest(
        name=test_dir.name,
        request_file=request_file,
        expected_status=expected_status,
        rad69=tuple(rad69),
        response_reference=response_reference,
        response_processes=tuple(response_processes),
        images=tuple(images),
    )


def std_image_dir(
    std_root: Path,
    test: RigTest,
    std_dir: str,
    testkit_dir: Path,
    *,
    twins: Mapping[str, str] = TWINS,
    read: Callable[[Path], RigTest] = read_rig_test,
) -> Path:
    """``nist-images/std/<StdDir>``; for a 2018 test whose folder is absent, its twin's."""
    folder = std_root / std_dir
    if folder.is_dir() or test.name not in twins:
        return folder
    twin = read(testkit_dir / twins[test.name])
    (twin_dir,) = {d for check in twin.images for d in check.std_dirs}
    return std_root / twin_dir


# --- sameReqImgs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReqImg:
    study_uid: str | None
    series_uid: str | None
    home_community_id: str | None
    repository_unique_id: str | None


def requested_images(message: Element) -> dict[str, ReqImg]:
    """The toolkit's ``loadReqImgs``: DocumentUniqueId -> study, series, home, repository."""
    found: dict[str, ReqImg] = {}
    for study in descendants(message, "StudyRequest"):
        for series in descendants(study, "SeriesRequest"):
            for doc in descendants(series, "DocumentRequest"):
                uid = only_child_text(doc, "DocumentUniqueId")
                if not uid:
                    continue
                found[uid] = ReqImg(
                    study.get("studyInstanceUID"),
                    series.get("seriesInstanceUID"),
                    only_child_text(doc, "HomeCommunityId"),
                    only_child_text(doc, "RepositoryUniqueId"),
                )
    return found


def transfer_syntaxes(message: Element) -> list[str]:
    """The TransferSyntaxUIDs of a RAD-69/RAD-75 request, trimmed, in order."""
    return [
        (t.text or "").strip()
        for lst in children(message, "TransferSyntaxUIDList")
        for t in children(lst, "TransferSyntaxUID")
        if (t.text or "").strip()
    ]


def _comp(std: str | None, test: str | None) -> bool:
    """The toolkit's ``comp``: an empty reference value is not required."""
    if not std:
        return True
    if not test:
        return False
    return std == test


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One toolkit error line; *field* names what differs (``HomeCommunityId``, ...)."""

    field: str
    message: str


def same_req_imgs(std: Element, test: Element) -> list[Mismatch]:
    """``sameReqImgs``: documents, their study/series/home/repository, and the syntax sets."""
    out: list[Mismatch] = []
    std_imgs = requested_images(std)
    test_imgs = requested_images(test)
    for uid, got in test_imgs.items():
        want = std_imgs.pop(uid, None)
        if want is None:
            out.append(Mismatch("DocumentUniqueId", f"test doc UID {uid}, not found in standard"))
            continue
        for field, a, b in (
            ("studyInstanceUID", want.study_uid, got.study_uid),
            ("seriesInstanceUID", want.series_uid, got.series_uid),
            ("HomeCommunityId", want.home_community_id, got.home_community_id),
            ("RepositoryUniqueId", want.repository_unique_id, got.repository_unique_id),
        ):
            if not _comp(a, b):
                out.append(Mismatch(field, f"doc {uid}: {field} mismatch (std/test): ({a}/{b})"))
    out.extend(
        Mismatch("DocumentUniqueId", f"std doc UID {uid} not found in test msg") for uid in std_imgs
    )
    std_ts, test_ts = set(transfer_syntaxes(std)), set(transfer_syntaxes(test))
    if std_ts != test_ts:
        out.append(
            Mismatch(
                "TransferSyntaxUID",
                f"transfer syntaxes (std/test): ({sorted(std_ts)}/{sorted(test_ts)})",
            )
        )
    return out


# --- sameRetImgs / registryErrorListNotEmpty ---------------------------------------------------


def response_status_urn(response: Element) -> str:
    """The toolkit's ``getResponseStatus``: the RegistryResponse ``status`` attribute, verbatim."""
    found = children(response, "RegistryResponse")
    if len(found) != 1:
        return "No RegistryReponse Element"
    return found[0].get("status") or "No status attribute"


RET_IMG_FIELDS = ("HomeCommunityId", "RepositoryUniqueId", "mimeType")


def same_ret_imgs(std: Element, test: Element) -> list[str]:
    """``sameRetImgs``: status, and home/repository/mimeType of every returned document."""
    out: list[str] = []
    std_status, test_status = response_status_urn(std), response_status_urn(test)
    if not _comp(std_status, test_status):
        out.append(f"RegistryResponse status mismatch (std/test): ({std_status}/{test_status})")

    def load(msg: Element) -> dict[str, dict[str, str | None]]:
        return {
            only_child_text(d, "DocumentUniqueId") or "": {
                name: only_child_text(d, name) for name in RET_IMG_FIELDS
            }
            for d in descendants(msg, "DocumentResponse")
        }

    std_docs, test_docs = load(std), load(test)
    for uid, got in test_docs.items():
        want = std_docs.pop(uid, None)
        if want is None:
            out.append(f"test doc UID {uid}, not found in standard")
            continue
        for name in RET_IMG_FIELDS:
            if not _comp(want[name], got[name]):
                out.append(f"doc {uid}: {name} mismatch (std/test): ({want[name]}/{got[name]})")
    out.extend(f"std doc UID {uid} not found in test msg" for uid in std_docs)
    return out


def registry_errors(response: Element) -> list[Element]:
    return list(descendants(response, "RegistryError"))


# --- sameDcmImgs -------------------------------------------------------------------------------


def read_header(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def _value(ds: pydicom.Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def same_dcm_imgs(
    returned: Mapping[str, bytes], std_files: Iterable[Path], tags: Iterable[str]
) -> list[str]:
    """``sameDcmImgs``: the returned set against the std set, paired by SOP Instance UID."""
    tags = tuple(tags)
    test = {}
    for uid, data in returned.items():
        ds = read_header(data)
        if _value(ds, "SOPInstanceUID") != uid:
            return [f"document {uid} holds SOP Instance {_value(ds, 'SOPInstanceUID')}"]
        test[uid] = ds
    std = {}
    for path in std_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        std[_value(ds, "SOPInstanceUID")] = ds
    out = [f"std object {uid} not returned" for uid in sorted(std.keys() - test.keys())]
    out += [f"returned object {uid} not in std" for uid in sorted(test.keys() - std.keys())]
    for uid in sorted(std.keys() & test.keys()):
        for tag in tags:
            a, b = _value(std[uid], tag), _value(test[uid], tag)
            if a != b:
                out.append(f"{uid}: {tag} (std/test): ({a!r}/{b!r})")
    return out
