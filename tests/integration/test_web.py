"""The staff page over real loopback HTTP (httpx), against real partner gateways.

The world (:mod:`tests.integration.staff_world`): two imagebridge responders
(B behind a proxy the test controls), one unreachable partner, and the
initiating gateway's ``create_app`` with ``[import]`` into a folder and ``[web]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagebridge.model.import_job import JobState
from tests.integration.staff_world import ALICE, OPERATOR, PASSWORD, B, World, staff_world

ALICE_FORM = {"family": "Demo", "given": "Alice", "birth_date": "1970-01-01", "gender": "F"}


class Page:
    """A logged-in browser stand-in: cookies, the CSRF token of the last page."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.http = httpx.Client(base_url=world.url, follow_redirects=False, timeout=60)
        self.token = ""

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if found:
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, object], *, csrf: bool = True) -> httpx.Response:
        return self.http.post(path, data={**data, **({"csrf_token": self.token} if csrf else {})})

    def log_in(self) -> None:
        self.get("/login")
        answer = self.post("/login", {"username": OPERATOR, "password": PASSWORD})
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        self.get("/")

    def search(self, form: dict[str, str] = ALICE_FORM) -> tuple[httpx.Response, str]:
        answer = self.post("/search", dict(form))
        found = re.search(r'name="search_id" value="([^"]+)"', answer.text)
        return answer, found.group(1) if found else ""

    def study_index(self, results: str, study_uid: str) -> str:
        rows = re.findall(r'name="study" value="(\d+)".*?class="uid">([^<]+)<', results, re.S)
        return next(index for index, uid in rows if uid == study_uid)

    def follow_events(self, job_id: int) -> list[dict[str, object]]:
        seen = []
        with self.http.stream("GET", f"/jobs/{job_id}/events", timeout=60) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
        return seen


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with staff_world(tmp_path) as running:
        yield running


@pytest.fixture
def page(world: World) -> Iterator[Page]:
    staff = Page(world)
    staff.log_in()
    yield staff
    staff.http.close()


def _job_id(answer: httpx.Response) -> int:
    assert answer.status_code == 303, answer.text[:2000]
    found = re.fullmatch(r"/jobs/(\d+)", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


def test_login_is_required_and_forms_need_the_csrf_token(world: World) -> None:
    anonymous = Page(world)
    assert anonymous.get("/").headers["location"] == "/login"
    assert anonymous.get("/history").status_code == 303
    assert anonymous.post("/search", ALICE_FORM, csrf=False).status_code == 401
    login = anonymous.get("/login")
    assert 'for="username"' in login.text and 'for="password"' in login.text
    assert "default-src 'self'" in login.headers["content-security-policy"]

    wrong = anonymous.post("/login", {"username": OPERATOR, "password": "not it"})
    assert wrong.status_code == 401 and "Unknown user or wrong password" in wrong.text
    no_token = anonymous.post("/login", {"username": OPERATOR, "password": PASSWORD}, csrf=False)
    assert no_token.status_code == 403

    answer = anonymous.post("/login", {"username": OPERATOR, "password": PASSWORD})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    anonymous.get("/")
    forged = anonymous.post("/search", ALICE_FORM, csrf=False)
    assert forged.status_code == 403 and "This form has expired" in forged.text
    bad_token = anonymous.http.post("/search", data={**ALICE_FORM, "csrf_token": "x" * 43})
    assert bad_token.status_code == 403


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("family", "", "Family name is required."),
        ("given", "   ", "Given name is required."),
        ("family", "^^^", "Family name must be letters"),
        ("family", "x" * 65, "longer than 64"),
        ("birth_date", "", "Birth date is required"),
        ("birth_date", "18000101", "before 1900"),
        ("birth_date", "30000101", "in the future"),
        ("birth_date", "1970-13-01", "not a real calendar date"),
        ("birth_date", "1/1/70", "YYYY-MM-DD"),
        ("gender", "X", "Choose the sex"),
    ],
)
def test_empty_or_absurd_demographics_get_a_clear_message(
    page: Page, field: str, value: str, message: str
) -> None:
    answer, search_id = page.search({**ALICE_FORM, field: value})
    assert answer.status_code == 422
    assert message in answer.text
    assert f'id="{field}-error"' in answer.text and 'aria-invalid="true"' in answer.text
    assert not search_id  # nobody was asked
    assert "no exchange yet" in page.get("/communities").text


def test_search_shows_every_community_and_a_double_import_makes_one_job(
    page: Page, world: World
) -> None:
    results, search_id = page.search()
    assert results.status_code == 200 and search_id
    text = results.text
    for name in ("North Imaging", "South Radiology", "Closed Clinic"):
        assert name in text
    assert text.count('class="status-ok"') == 4  # A and B: discovery and query
    assert 'class="status-unreachable"' in text and "XDSUnavailableCommunity" in text
    assert re.search(r'class="latency">\d+ ms', text)
    for study in (*world.studies["1.3.6.1.4.1.21367.13.70.121"], *world.studies[B]):
        assert study.study_instance_uid in text
    assert "CT CHEST" in text and "Thorax" in text

    chosen = world.studies[B][0].study_instance_uid
    form = {"search_id": search_id, "study": page.study_index(text, chosen), "mrn": "LOC-7"}
    first = _job_id(page.post("/import", form))
    again = _job_id(page.post("/import", form))  # a double click, or the POST sent again
    assert again == first

    events = page.follow_events(first)
    assert events[-1]["state"] == "completed" and events[-1]["settled"] is True
    assert events[-1]["done"] == events[-1]["total"] == 4
    assert "viewer.example" in str(events[-1]["viewer_url"])
    assert len(world.files_of(chosen)) == 4
    job_page = page.get(f"/jobs/{first}").text
    assert "Where the study is now" in job_page and "LOC-7" in job_page
    assert f"StudyInstanceUIDs={chosen}" in job_page
    with_jobs = world.jobs()
    try:
        jobs = with_jobs.list_jobs(study_instance_uid=chosen)
    finally:
        with_jobs.close()
    assert [j.id for j in jobs] == [first] and jobs[0].state is JobState.COMPLETED
    assert page.get("/history").text.count(f'href="/jobs/{first}"') == 1


def test_import_needs_a_live_search_and_a_selection(page: Page) -> None:
    _results, search_id = page.search()
    none = page.post("/import", {"search_id": search_id, "mrn": "LOC-7"})
    assert none.status_code == 422 and "Select at least one study" in none.text
    bogus = page.post("/import", {"search_id": search_id, "study": "99"})
    assert bogus.status_code == 422 and "does not match this search" in bogus.text
    expired = page.post("/import", {"search_id": "gone", "study": "0"})
    assert expired.status_code == 410 and "That search has expired" in expired.text


def test_a_vanished_community_fails_clearly_and_a_retry_finishes(page: Page, world: World) -> None:
    results, search_id = page.search()
    chosen = world.studies[B][1].study_instance_uid
    world.proxy.down = True  # B disappears between the search and the import
    form = {"search_id": search_id, "study": page.study_index(results.text, chosen), "mrn": "L1"}
    job_id = _job_id(page.post("/import", form))
    final = page.follow_events(job_id)[-1]
    assert final["state"] == "completed_with_errors" and final["done"] == 0
    shown = page.get(f"/jobs/{job_id}").text
    assert "4 of 4 instances could not be imported" in shown
    assert "XDSUnavailableCommunity" in shown or "503" in shown
    assert world.files_of(chosen) == []

    world.proxy.down = False
    assert page.post(f"/jobs/{job_id}/retry", {}).status_code == 303
    assert page.follow_events(job_id)[-1]["state"] == "completed"
    assert len(world.files_of(chosen)) == 4
    assert _job_id(page.post("/import", form)) == job_id  # still the one job


def test_held_study_is_reviewed_side_by_side_then_accepted_or_rejected(
    page: Page, world: World
) -> None:
    results, search_id = page.search()
    first, second = (s.study_instance_uid for s in world.studies[B])
    held = []
    for study in (first, second):  # no MRN, and the folder knows no patient: held
        form = {"search_id": search_id, "study": page.study_index(results.text, study)}
        held.append(_job_id(page.post("/import", form)))
        assert page.follow_events(held[-1])[-1]["state"] == "held"
    review = page.get("/review").text
    assert "no local patient" in review
    assert review.count('<table class="sides">') == 2
    assert ALICE.name in review and ALICE.id in review  # the foreign side, from the KOS
    assert "(none yet: give the MRN)" in review

    missing = page.post(f"/review/{held[0]}/accept", {"mrn": ""})
    assert missing.status_code == 422 and "Give the local MRN" in missing.text
    assert page.post(f"/review/{held[0]}/accept", {"mrn": "LOC-9"}).status_code == 303
    assert page.follow_events(held[0])[-1]["state"] == "completed"
    assert len(world.files_of(first)) == 4
    assert page.post(f"/review/{held[1]}/reject", {}).status_code == 303
    assert page.follow_events(held[1])[-1]["state"] == "cancelled"
    assert world.files_of(second) == []
    assert "No study is waiting for review" in page.get("/review").text


def test_communities_page_shows_each_partners_health(page: Page) -> None:
    page.search()
    text = page.get("/communities").text
    assert text.count('<th scope="row">') == 3
    assert "ITI-55: XDSUnavailableCommunity" in text  # the closed clinic's last failure
    assert "UTC</time>" in text  # last success of the two live partners
    assert "system trust store" in text
