"""Imaging Document Source index figures: folder indexing, batch upserts, patient study lookups.

Usage: ``python bench/store_index.py [--files 2000] [--patients 500] [--repeat 1000]``

* **folder sync**: writes ``--files`` small synthetic CT files (64x64, 100 per
  study) into a temporary folder, then times a first :meth:`FolderSource.sync`
  (headers read with ``stop_before_pixels`` and written to a fresh SQLite
  index) and a second one that finds nothing changed;
* **upsert**: the same number of headers written with
  :meth:`Store.upsert_instances` in batches of 200, no file reads;
* **studies_for_patient**: one patient with 20 studies among ``--patients``
  others with 2 studies each; the median and p99 of ``--repeat`` calls,
  plus ``study_instances`` of one 100-instance study.

Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import anyio

from imagebridge.dicom.synthetic import DEMO_ISSUER, make_study, study_headers
from imagebridge.model.ids import PatientId
from imagebridge.model.imaging import DicomPatient
from imagebridge.sources.folder import FolderSource
from imagebridge.store import Store

REPO = "1.3.6.1.4.1.21367.13.71.201.1"
PER_STUDY = 100


def _patient(index: int) -> DicomPatient:
    birth_date = (date(1930, 1, 1) + timedelta(days=index * 17)).strftime("%Y%m%d")
    family = f"BENCH{index % 50}"
    return DicomPatient(f"{family}^P{index}", f"BENCH-{index:05d}", DEMO_ISSUER, birth_date, "F")


def folder_sync(root: Path, files: int) -> None:
    archive = root / "archive"
    started = time.perf_counter()
    for study in range(max(files // PER_STUDY, 1)):
        make_study(
            _patient(study % 7),
            archive / f"s{study}",
            modality="CT",
            instances=PER_STUDY,
            seed=study,
        )
    print(f"wrote {files} files in {time.perf_counter() - started:.1f} s")
    store = Store.open(f"sqlite:///{root / 'folder.db'}")
    source = FolderSource(REPO, archive, store)

    async def run() -> None:
        started = time.perf_counter()
        report = await source.sync()
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = await source.sync()
        second = time.perf_counter() - started
        print(
            f"folder sync, first: {report.indexed} files in {first:.2f} s = "
            f"{report.indexed / first:,.0f} files/s"
        )
        print(
            f"folder sync, unchanged: {again.unchanged} files, {again.read} read, "
            f"{second * 1000:.0f} ms"
        )

    anyio.run(run)
    store.close()


def upserts(root: Path, files: int) -> None:
    headers = []
    for study in range(max(files // PER_STUDY, 1)):
        headers += study_headers(
            _patient(study % 7), modality="CT", instances=PER_STUDY, seed=study
        )
    store = Store.open(f"sqlite:///{root / 'upsert.db'}")
    started = time.perf_counter()
    for start in range(0, len(headers), 200):
        store.upsert_instances(REPO, headers[start : start + 200])
    elapsed = time.perf_counter() - started
    print(
        f"upsert_instances: {len(headers)} headers in {elapsed:.2f} s = "
        f"{len(headers) / elapsed:,.0f}/s"
    )
    store.close()


def lookups(root: Path, patients: int, repeat: int) -> None:
    store = Store.open(f"sqlite:///{root / 'lookup.db'}")
    target = _patient(99_999)
    for seed in range(20):
        store.upsert_instances(REPO, study_headers(target, modality="CR", seed=10_000 + seed))
    for index in range(patients):
        for seed in range(2):
            store.upsert_instances(
                REPO, study_headers(_patient(index), modality="CR", seed=index * 2 + seed)
            )
    big = study_headers(target, modality="CT", instances=PER_STUDY, seed=20_000)
    store.upsert_instances(REPO, big)
    patient_id = PatientId(target.id, DEMO_ISSUER.universal_id)
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = store.studies_for_patient(patient_id)
        timings.append(time.perf_counter() - started)
    timings.sort()
    print(
        f"studies_for_patient ({len(found)} studies, {patients * 2 + 21} in the index): "
        f"median {statistics.median(timings) * 1000:.2f} ms, "
        f"p99 {timings[int(len(timings) * 0.99) - 1] * 1000:.2f} ms"
    )
    started = time.perf_counter()
    for _ in range(100):
        store.study_instances(big[0].study.study_instance_uid)
    print(f"study_instances ({PER_STUDY} instances): {(time.perf_counter() - started) * 10:.2f} ms")
    started = time.perf_counter()
    for _ in range(repeat):
        matches = store.patient_candidates(birth_date=target.birth_date, family_key="bench49")
    per_call = (time.perf_counter() - started) / repeat
    print(f"patient_candidates ({len(matches)} match): {per_call * 1000:.2f} ms")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        folder_sync(root, args.files)
        upserts(root, args.files)
        lookups(root, args.patients, args.repeat)


if __name__ == "__main__":
    main()
