"""``imagebridge demo``: the demo's world on disk, three communities and their synthetic data.

* community A (responding): DEMO^ALICE (a CR) and DEMO^BOB (a 200-slice CT and a CR);
* community B (responding): DEMO^BOB again, under B's own id (an MR of three
  series), and DEMO^CAROL (a CR);
* community C (initiating): its local folder archive holds one prior of
  DEMO^BOB under the local MRN ``LOC-0002``; it is also C's ``[import]``
  folder target, so the pulled studies land next to the prior, and C's own
  ``[[repositories]]`` entry, so C's gateway serves them afterwards.  Its
  ``[web]`` table has one staff page operator, ``demo`` (password ``demo``).

Everything is synthetic and PHI-free (DEMO^ names, UIDs under ``2.25``).
Each community has its own Patient ID domain, so the same person has three ids.

The working directory is re-runnable: the generated archives of A and B are
reused when a stamp file says they were made with the same size option; the
databases, the local archive and the configuration files are recreated on
every run.  A folder that is not empty and has no stamp is refused, so a
mistyped ``--workdir`` never deletes anything.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from imagebridge.dicom.synthetic import DEMO_PATIENTS, iter_study, make_study
from imagebridge.errors import ImageBridgeError
from imagebridge.importing.folder import instance_path
from imagebridge.model.imaging import DicomPatient, HierarchicDesignator
from imagebridge.web.settings import hash_password

STAMP: Final = ".imagebridge-demo.json"
_STAMP_VERSION: Final = 1

A_HCID: Final = "1.3.6.1.4.1.21367.13.70.201"
B_HCID: Final = "1.3.6.1.4.1.21367.13.70.202"
C_HCID: Final = "1.3.6.1.4.1.21367.13.70.200"
_AUTHORITY: Final = {
    "a": "1.3.6.1.4.1.21367.13.20.201",
    "b": "1.3.6.1.4.1.21367.13.20.202",
    "c": "1.3.6.1.4.1.21367.13.20.200",
}
NAMES: Final = {
    "a": "Community A (Riverside Imaging)",
    "b": "Community B (Hillcrest Radiology)",
    "c": "Community C (Demo Referral Hospital)",
}
STAFF_USER: Final = "demo"
"""The staff page operator of community C (password: the same word; loopback only)."""
LOCAL_MRN: Final = "LOC-0002"
LOCAL_ISSUER: Final = HierarchicDesignator("HOSPITAL-C", _AUTHORITY["c"], "ISO")

CR_MATRIX: Final = (1024, 864)
"""Rows and columns of the demo's radiographs (the CT is 512x512, the MR 256x256)."""

_ALICE, _BOB, _CAROL = DEMO_PATIENTS
SHARED_PATIENT: Final = _BOB
"""The referred patient: known to A and B under their own ids, and to C as LOC-0002."""


class DemoFolderRefused(ImageBridgeError):
    """The working directory is not empty and was not made by the demo."""


def _patient(who: DicomPatient, key: str, mrn: str) -> DicomPatient:
    issuer = HierarchicDesignator(f"COMMUNITY-{key.upper()}", _AUTHORITY[key], "ISO")
    return replace(who, id=mrn, issuer=issuer)


@dataclass(frozen=True, slots=True)
class StudySpec:
    """One synthetic study of the demo: where, whose, what and how big."""

    community: str
    """``a``, ``b``, or ``c`` (the local prior)."""
    patient: DicomPatient
    modality: str
    seed: int
    series: int | None = None
    instances: int | None = None
    rows: int | None = None
    columns: int | None = None


@dataclass(frozen=True, slots=True)
class MadeStudy:
    """A study as generated (or found from an earlier run)."""

    spec: StudySpec
    instances: int
    bytes: int


def study_specs(small: bool) -> tuple[StudySpec, ...]:
    """The demo's studies; *small* shrinks the CT and MR (for tests), not their shape."""
    bob_a = _patient(_BOB, "a", "A-100232")
    bob_b = _patient(_BOB, "b", "B-5512")
    ct = (20, 64) if small else (200, 512)
    mr = (4, 64) if small else (20, 256)
    cr = (96, 80) if small else CR_MATRIX
    return (
        StudySpec("a", bob_a, "CT", 201, instances=ct[0], rows=ct[1], columns=ct[1]),
        StudySpec("a", bob_a, "CR", 202, rows=cr[0], columns=cr[1]),
        StudySpec("a", _patient(_ALICE, "a", "A-100231"), "CR", 203, rows=cr[0], columns=cr[1]),
        StudySpec("b", bob_b, "MR", 301, series=3, instances=mr[0], rows=mr[1], columns=mr[1]),
        StudySpec("b", _patient(_CAROL, "b", "B-5513"), "CR", 302, rows=cr[0], columns=cr[1]),
    )


def local_prior(small: bool) -> StudySpec:
    """DEMO^BOB's prior in C's local archive, under the local MRN."""
    local = replace(_BOB, id=LOCAL_MRN, issuer=LOCAL_ISSUER)
    cr = (96, 80) if small else CR_MATRIX
    return StudySpec("c", local, "CR", 101, rows=cr[0], columns=cr[1])


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where everything of the demo lives under the working directory."""

    root: Path

    def archive(self, community: str) -> Path:
        return self.root / "archives" / f"community-{community}"

    def state(self, community: str) -> Path:
        """The community's own folder: its database (and C's spool)."""
        return self.root / f"community-{community}"

    def config(self, community: str) -> Path:
        return self.root / f"community-{community}.toml"

    @property
    def local_archive(self) -> Path:
        return self.root / "local-archive"


def prepare(root: Path, *, small: bool) -> tuple[DemoPaths, list[MadeStudy], bool]:
    """Make the working directory ready: (paths, every study, True when archives were reused).

    Raises :class:`DemoFolderRefused` for a non-empty folder the demo did not make.
    """
    paths = DemoPaths(root.resolve())
    stamp_file = paths.root / STAMP
    stamp = _read_stamp(stamp_file)
    if stamp is None and paths.root.exists() and any(paths.root.iterdir()):
        raise DemoFolderRefused(
            f"{paths.root} is not empty and was not made by the demo; choose another --workdir"
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    if stamp is None:  # claim the folder first: an interrupted first run may be run again
        _write_stamp(stamp_file, None, [])
    for key in ("a", "b", "c"):
        shutil.rmtree(paths.state(key), ignore_errors=True)
        paths.state(key).mkdir()
    (paths.state("c") / "spool").mkdir()
    shutil.rmtree(paths.local_archive, ignore_errors=True)
    scale = "small" if small else "full"
    specs = study_specs(small)
    made = _recorded(stamp, specs) if stamp is not None and stamp.get("scale") == scale else []
    reuse = len(made) == len(specs)
    if not reuse:
        _write_stamp(stamp_file, None, [])  # until every study is written
        shutil.rmtree(paths.root / "archives", ignore_errors=True)
        made = [_make(paths, spec) for spec in specs]
        _write_stamp(stamp_file, scale, made)
    made.append(_write_prior(paths.local_archive, local_prior(small)))
    return paths, made, reuse


def _recorded(stamp: dict[str, object], specs: tuple[StudySpec, ...]) -> list[MadeStudy]:
    """The studies the stamp lists with their sizes (those it lacks are left out)."""
    studies = stamp.get("studies")
    if not isinstance(studies, dict):
        return []
    made: list[MadeStudy] = []
    for spec in specs:
        sizes = studies.get(str(spec.seed))
        if isinstance(sizes, list) and len(sizes) == 2 and all(isinstance(n, int) for n in sizes):
            made.append(MadeStudy(spec, sizes[0], sizes[1]))
    return made


def _write_stamp(path: Path, scale: str | None, made: list[MadeStudy]) -> None:
    studies = {str(m.spec.seed): [m.instances, m.bytes] for m in made}
    path.write_text(
        json.dumps({"version": _STAMP_VERSION, "scale": scale, "studies": studies}),
        encoding="utf-8",
    )


def _read_stamp(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != _STAMP_VERSION:
        return None
    return data


def _make(paths: DemoPaths, spec: StudySpec) -> MadeStudy:
    folder = paths.archive(spec.community) / f"{spec.modality.lower()}-{spec.seed}"
    study = make_study(
        spec.patient,
        folder,
        modality=spec.modality,
        series=spec.series,
        instances=spec.instances,
        rows=spec.rows,
        columns=spec.columns,
        seed=spec.seed,
    )
    return MadeStudy(spec, len(study.files), study.total_bytes)


def _write_prior(root: Path, spec: StudySpec) -> MadeStudy:
    """The local prior, filed as the folder import target files: ``<study>/<series>/<sop>.dcm``."""
    count = total = 0
    for ds in iter_study(
        spec.patient,
        modality=spec.modality,
        rows=spec.rows,
        columns=spec.columns,
        seed=spec.seed,
    ):
        path = instance_path(root, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        count += 1
        total += path.stat().st_size
    return MadeStudy(spec, count, total)


def write_configs(paths: DemoPaths, ports: dict[str, int]) -> None:
    """The three TOML configurations; *ports* maps ``a``, ``b``, ``c`` to loopback ports."""
    for key, hcid in (("a", A_HCID), ("b", B_HCID)):
        lines = _common(paths, key, hcid, ports[key])
        lines += _repository(f"{hcid}.1", paths.archive(key))
        paths.config(key).write_text("\n".join(lines), encoding="utf-8")
    lines = _common(paths, "c", C_HCID, ports["c"])
    lines += _repository(f"{C_HCID}.1", paths.local_archive)
    lines += [
        "[import]",
        'target = "folder"',
        'name = "local archive"',
        f"path = {_toml(str(paths.local_archive))}",
        'modifying_system = "imagebridge demo"',
        'accession = "clear"',
        'uid_collision = "hold"',
        "batch_size = 50",
        f"spool_dir = {_toml(str(paths.state('c') / 'spool'))}",
        "",
        "[web.users]  # the staff page's demo operator; the password is the name",
        f"{STAFF_USER} = {_toml(hash_password(STAFF_USER))}",
        "",
    ]
    for key, hcid in (("a", A_HCID), ("b", B_HCID)):
        base = f"http://127.0.0.1:{ports[key]}"
        lines += [
            "[[communities]]",
            f'home_community_id = "{hcid}"',
            f"name = {_toml(NAMES[key])}",
            f'xcpd_url = "{base}/xcpd"',
            f'xca_query_url = "{base}/xca/query"',
            f'xca_retrieve_url = "{base}/xca/retrieve"',
            f'xcai_retrieve_url = "{base}/xcai/retrieve"',
            "timeout_connect = 5",
            "timeout_read = 60",
            "timeout_overall = 120",
            "",
        ]
    paths.config("c").write_text("\n".join(lines), encoding="utf-8")


def _common(paths: DemoPaths, key: str, hcid: str, port: int) -> list[str]:
    database = paths.state(key) / "imagebridge.db"
    return [
        "# Written by `imagebridge demo`; recreated on every run.",
        "[community]",
        f'home_community_id = "urn:oid:{hcid}"',
        f"name = {_toml(NAMES[key])}",
        f'patient_id_authority = "{_AUTHORITY[key]}"',
        "",
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
        "[store]",
        f"database_url = {_toml('sqlite:///' + str(database))}",
        "",
    ]


def _repository(unique_id: str, path: Path) -> list[str]:
    return [
        "[[repositories]]",
        f'unique_id = "{unique_id}"',
        'source = "folder"',
        f"path = {_toml(str(path))}",
        "scan_interval = 30",
        "",
    ]


def _toml(text: str) -> str:
    """A TOML basic string."""
    return json.dumps(text)
