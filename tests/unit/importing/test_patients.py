"""Import target, patient lookup by demographics: archive keys and the local match rule."""

from __future__ import annotations

import pytest

from imagebridge.importing.base import PatientDemographics
from imagebridge.importing.patients import ArchiveKeys, archive_keys, matches

MULLER = PatientDemographics("Müller", "José", "19620315", "M")


@pytest.mark.parametrize(
    ("name", "birth_date", "sex", "expected"),
    [
        ("MÜLLER^JOSÉ", "19620315", "M", True),
        ("Muller^Jose Maria", "19620315", "M", True),  # given name starts with the query's
        ("MULLER^JOSE=ミュラー^ホセ", "19620315", "", True),  # other component groups ignored
        ("MÜLLER^JOSÉ", "", "", True),  # the archive does not know: not a mismatch
        ("MÜLLER-LÜDENSCHEID^JOSÉ", "19620315", "M", False),
        ("MÜLLER^ANNA", "19620315", "M", False),
        ("MÜLLER^JOSÉ", "19620316", "M", False),
        ("MÜLLER^JOSÉ", "19620315", "F", False),
        ("JOSÉ^MÜLLER", "19620315", "M", False),
    ],
)
def test_matches(name: str, birth_date: str, sex: str, expected: bool) -> None:
    assert matches(MULLER, name, birth_date, sex) is expected


def test_with_a_birth_date_the_archive_is_asked_for_that_date_only() -> None:
    assert archive_keys(MULLER) == [ArchiveKeys("", "19620315", "M")]


def test_without_a_birth_date_the_archive_is_asked_for_the_ascii_prefix() -> None:
    assert archive_keys(PatientDemographics("Müller")) == [ArchiveKeys("M*", "", "")]
    assert archive_keys(PatientDemographics("smith", sex="f")) == [
        ArchiveKeys("smith*", "", "F"),
        ArchiveKeys("SMITH*", "", "F"),
    ]
    assert archive_keys(PatientDemographics("Çelik")) == []  # needs a birth date


@pytest.mark.parametrize(
    "query",
    [
        PatientDemographics(""),
        PatientDemographics("SM*TH"),
        PatientDemographics("SMITH", "J?HN"),
        PatientDemographics("SMITH^JOHN"),
        PatientDemographics("SMITH", birth_date="1962-03-15"),
        PatientDemographics("SMITH", birth_date="19620315\\19620316"),
    ],
)
def test_wildcards_separators_and_bad_dates_are_refused(query: PatientDemographics) -> None:
    assert archive_keys(query) == []
