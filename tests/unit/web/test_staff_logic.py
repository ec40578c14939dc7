"""Staff page logic without a server: demographics checks, password hashes, the [web]
table, the review snapshot round trip through a real (SQLite) job store, view values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from imagebridge.actors.initiating.import_plan import accepted_from, local_patient_from, reviewed
from imagebridge.errors import ConfigError, JobStateError
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.import_job import JobRequest
from imagebridge.model.reconcile import ACCEPTABLE, IssueKind, LocalPatient, PatientSource
from imagebridge.store.jobs import JobStore
from imagebridge.web.search import parse_demographics
from imagebridge.web.settings import hash_password, verify_password, web_config
from imagebridge.web.views import orthanc_study_id, side_by_side

TODAY = date(2025, 6, 1)
GOOD = {"family": "  Demo ", "given": "Alice", "birth_date": "1970-01-31", "gender": "f"}


def test_good_demographics_are_normalised() -> None:
    found, errors = parse_demographics(GOOD, TODAY)
    assert errors == {} and found is not None
    assert (found.family, found.birth_date, found.gender) == ("Demo", "19700131", "F")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"family": ""}, "family"),
        ({"given": "\x00"}, "given"),
        ({"birth_date": "18991231"}, "birth_date"),
        ({"birth_date": "20250602"}, "birth_date"),
        ({"birth_date": "19700230"}, "birth_date"),
        ({"gender": "U"}, "gender"),
    ],
)
def test_bad_demographics_name_the_field(changes: dict[str, str], field: str) -> None:
    found, errors = parse_demographics({**GOOD, **changes}, TODAY)
    assert found is None and list(errors) == [field]


def test_password_hashes_verify_and_are_salted() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one != two and one.startswith("scrypt$")
    assert verify_password("correct horse", one) and not verify_password("wrong", one)
    assert not verify_password("correct horse", "plain-text")


def test_web_table_refuses_plain_passwords_and_unknown_placeholders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scrypt hash"):
        web_config({"users": {"alice": "hunter2"}}, {})
    with pytest.raises(ConfigError, match="placeholder"):
        web_config({"viewer_url": "http://v/{study}"}, {})
    with pytest.raises(ConfigError, match="unknown key"):
        web_config({"password": "x"}, {})
    users = tmp_path / "operators.txt"
    users.write_text(f'# operators\nbob = "{hash_password("pw")}"\n')
    secret = "s" * 20
    parsed = web_config(
        {"users_file": "operators.txt"},
        {"IMAGEBRIDGE_WEB_SESSION_SECRET": secret},
        base_dir=tmp_path,
    )
    assert list(parsed.users) == ["bob"] and parsed.session_secret == secret


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield store
    store.close()


def test_a_review_decision_is_kept_in_the_job_snapshot(jobs: JobStore) -> None:
    request = JobRequest(
        source_community=HomeCommunityId("1.2.9"),
        source_community_name="partner",
        imaging_community=HomeCommunityId("1.2.9"),
        foreign_patient=PatientId("F-1", "2.25.1"),
        study_instance_uid="1.2.3",
        kos_document_id="1.2.3.4",
        kos_repository_id="1.2.3.5",
        target_name="pacs",
        target_kind="stow",
        reconciliation={
            "foreign_patient": {"name": "DOE^JANE", "id": "F-1", "birth_date": "19700101"},
            "searched": {"family": "Doe", "given": "Janet", "birth_date": "19700101", "sex": "F"},
        },
    )
    job, _ = jobs.create_job(request)
    assert accepted_from(job) == frozenset()
    patient = LocalPatient(
        mrn="L-1", source=PatientSource.OPERATOR, name="DOE^JANET", birth_date="19700101"
    )
    snapshot = reviewed(job, patient, frozenset({IssueKind.GIVEN_NAME, IssueKind.UID_COLLISION}))
    with pytest.raises(JobStateError):  # only a held job can be reviewed
        jobs.set_reconciliation(job.id, snapshot, "L-1", None)
    jobs.hold(job.id, "given name differs")
    jobs.set_reconciliation(job.id, snapshot, "L-1", None)
    stored = jobs.get_job(job.id)
    assert accepted_from(stored) == {IssueKind.GIVEN_NAME}  # a UID collision is never accepted
    assert IssueKind.GIVEN_NAME in ACCEPTABLE
    assert local_patient_from(stored) == patient
    rows = {
        label: (there, here, differ) for label, there, here, differ in side_by_side(stored).rows
    }
    assert rows["Name"] == ("DOE^JANE", "DOE^JANET", True)
    assert rows["Birth date"][2] is False


def test_orthanc_study_id_is_grouped_sha1() -> None:
    found = orthanc_study_id("P", "1.2.3")
    assert [len(g) for g in found.split("-")] == [8, 8, 8, 8, 8]
