"""Cross Gateway Patient Discovery [ITI-55] name keys of the index: the matcher's normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebridge.store import Store, normalise_name
from imagebridge.store.names import split_person_name


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Müller", "muller"),
        ("MÜLLER", "muller"),
        ("  José \t  María  ", "jose maria"),
        ("Straße", "strasse"),
        ("Ångström-Øberg", "angstrom oberg"),
        ("Müller-Lüdenscheidt", "muller ludenscheidt"),
        ("Dvořák", "dvorak"),
        ("İlker", "ilker"),
        ("ＳＭＩＴＨ", "smith"),
        ("O'Brien", "obrien"),
        ("", ""),
    ],
)
def test_normalise_name(text: str, key: str) -> None:
    assert normalise_name(text) == key
    assert Store.normalise_name(text) == key


@given(st.text())
def test_normalise_name_is_idempotent(text: str) -> None:
    key = normalise_name(text)
    assert normalise_name(key) == key
    assert key == key.strip()
    assert "  " not in key


@pytest.mark.parametrize(
    ("person_name", "family", "given"),
    [
        ("DOE^JANE", "DOE", ("JANE",)),
        ("DOE^JANE^Q^DR^JR", "DOE", ("JANE", "Q")),
        ("van der Berg^Anna Maria", "van der Berg", ("Anna", "Maria")),
        ("YAMADA^TARO=山田^太郎", "YAMADA", ("TARO",)),
        ("", "", ()),
        ("^^", "", ()),
    ],
)
def test_split_person_name(person_name: str, family: str, given: tuple[str, ...]) -> None:
    assert split_person_name(person_name) == (family, given)
