"""The staff page in a real browser: headless chromium driven by Playwright.

Against the world of :mod:`tests.integration.staff_world` (two real
imagebridge responders, one unreachable partner, the initiating gateway with
``[import]`` into a folder), an operator logs in, searches the demo patient,
sees each community's status, selects a study and imports it, and watches it
arrive.  A double click on Import makes one request and one job; a reload in
the middle of an import resumes the progress and nothing is retrieved twice.
Screenshots are taken in every run; they replace the README's pictures in
``docs/screenshots`` only when ``IMAGEBRIDGE_UPDATE_SCREENSHOTS=1`` (so a test
run never modifies tracked files), else they go to a temporary folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.staff_world import OPERATOR, PASSWORD, B, World, staff_world

SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("IMAGEBRIDGE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "imagebridge-screenshots"
)
INSTANCES = 6
TIMEOUT_MS = 30_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # One instance per RAD-75 exchange, each slowed down by B's proxy, so an
    # import lasts a few seconds: long enough to reload in the middle.
    with staff_world(tmp_path, instances=INSTANCES, batch_size=1) as running:
        running.proxy.rad75_delay = 0.5
        yield running


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def _expect() -> Any:
    from playwright.sync_api import expect  # noqa: PLC0415 (missing: the fixture says why)

    return expect


def _log_in_and_search(page: Any, world: World) -> None:
    expect = _expect()
    page.goto(world.url + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("User name").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")  # keyboard only
    page.get_by_label("Family name").fill("Demo")
    page.get_by_label("Given name").fill("Alice")
    page.get_by_label("Birth date").fill("1970-01-01")
    page.get_by_label("Sex").select_option("F")
    page.get_by_role("button", name="Search all communities").click()
    expect(page.get_by_role("heading", name=re.compile("^Results for"))).to_be_visible()


def _select(page: Any, study_uid: str, mrn: str) -> None:
    page.locator("tr", has_text=study_uid).get_by_role("checkbox").check()
    if mrn:
        page.get_by_label("Local MRN").fill(mrn)


def _jobs_of(world: World, study_uid: str) -> list[Any]:
    jobs = world.jobs()
    try:
        return [
            (j, jobs.events(j.id, limit=100)) for j in jobs.list_jobs(study_instance_uid=study_uid)
        ]
    finally:
        jobs.close()


def test_search_then_a_double_click_on_import_makes_one_job_that_completes(
    page: Any, world: World
) -> None:
    expect = _expect()
    _log_in_and_search(page, world)
    statuses = page.locator("table.status tbody tr")
    expect(statuses).to_have_count(3)
    expect(statuses.filter(has_text="Closed Clinic")).to_contain_text("unreachable")
    expect(statuses.filter(has_text="North Imaging")).to_contain_text(re.compile(r"ok\s+\d+ ms"))
    expect(page.locator("table.studies tbody tr")).to_have_count(3)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "search-results.png"), full_page=True)

    study = world.studies[B][0].study_instance_uid
    _select(page, study, "LOC-0042")
    page.get_by_role("button", name="Import selected studies").dblclick()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    label = page.locator("[data-field=label]")
    expect(label).to_have_text("importing")
    expect(page.locator("[data-field=counts]")).to_contain_text(
        re.compile(rf"[1-5] of {INSTANCES} stored")
    )
    page.screenshot(path=str(SHOTS / "import-progress.png"))
    expect(label).to_have_text("completed")
    expect(page.get_by_role("heading", name="Where the study is now")).to_be_visible()
    expect(page.get_by_role("link", name="Open in the PACS viewer")).to_have_attribute(
        "href", re.compile(re.escape(study))
    )
    page.screenshot(path=str(SHOTS / "import-completed.png"))

    assert len(world.files_of(study)) == INSTANCES
    [(job, events)] = _jobs_of(world, study)
    requested = [e for e in events if e.message.startswith("import requested by")]
    assert len(requested) == 1  # the second click never left the browser
    assert job.done == INSTANCES and world.proxy.rad75_calls == INSTANCES


def test_a_reload_during_the_import_resumes_the_progress_without_duplicates(
    page: Any, world: World
) -> None:
    expect = _expect()
    _log_in_and_search(page, world)
    study = world.studies[B][1].study_instance_uid
    _select(page, study, "LOC-0042")
    page.get_by_role("button", name="Import selected studies").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    counts = page.locator("[data-field=counts]")
    expect(counts).to_contain_text(re.compile(rf"[1-3] of {INSTANCES} stored"))
    url = page.url

    page.reload()
    expect(page).to_have_url(url)
    expect(page.locator("[data-field=label]")).to_have_text(re.compile("importing|completed"))
    assert page.locator("article.job").get_attribute("data-settled") == "false"
    expect(page.locator("[data-field=label]")).to_have_text("completed")
    expect(counts).to_have_text(f"{INSTANCES} of {INSTANCES} stored")

    assert len(world.files_of(study)) == INSTANCES
    [(job, _events)] = _jobs_of(world, study)
    assert job.done == INSTANCES and job.errors == 0
    assert world.proxy.rad75_calls == INSTANCES  # nothing retrieved twice


def test_a_held_study_is_reviewed_side_by_side_and_accepted(page: Any, world: World) -> None:
    expect = _expect()
    world.proxy.rad75_delay = 0.0
    _log_in_and_search(page, world)
    study = world.studies[B][0].study_instance_uid
    _select(page, study, "")  # no MRN: the folder target knows no patient, so it is held
    page.get_by_role("button", name="Import selected studies").click()
    expect(page.locator("article.job")).to_have_attribute("data-settled", "true")
    expect(page.locator("[data-field=label]")).to_have_text("held for review")
    page.get_by_role("link", name="Review this study").click()
    card = page.locator("article.review")
    expect(card).to_contain_text("no local patient")
    expect(card.locator("table.sides")).to_contain_text("DEMO^ALICE")
    page.screenshot(path=str(SHOTS / "review.png"), full_page=True)

    card.get_by_label("Local MRN").fill("LOC-0042")
    card.get_by_label("Local MRN").press("Enter")
    expect(page.locator("[data-field=label]")).to_have_text("completed")
    assert len(world.files_of(study)) == INSTANCES
    page.get_by_role("link", name="Communities").click()
    expect(page.locator("table.communities tbody tr")).to_have_count(3)
    page.screenshot(path=str(SHOTS / "communities.png"), full_page=True)
