"""Normalised demographics for Cross Gateway Patient Discovery [ITI-55] matching and lookup.

One definition shared by the Responding Gateway's matcher
(:mod:`imagebridge.actors.responding.matching`) and the patient index in the
store, so that a name the store files under a key is found under the same key
when an initiator sends it with other case, accents or punctuation.

Names (:func:`normalise_name`):

1. decomposed (Unicode NFKD), case-folded (``ß`` becomes ``ss``) and
   stripped of combining marks, so ``é`` is ``e`` and the ligature ``ﬁ`` is
   ``fi``;
3. letters that do not decompose are transliterated (``ø`` ``o``, ``ł`` ``l``,
   ``đ`` ``d``, ``æ`` ``ae``, ``œ`` ``oe``, ``þ`` ``th``, ``ı`` ``i``);
4. apostrophes and full stops are removed (``O'Brien`` is ``obrien``,
   ``St.`` is ``st``); every other character that is neither a letter nor a
   digit (hyphen, comma, slash, DICOM ``^``) separates words;
5. whitespace is collapsed to one space and trimmed.

Phone numbers keep only their digits (:func:`normalise_phone`); postal codes
keep only letters and digits (:func:`normalise_postal_code`).

The comparisons that do not depend on the shape of an XCPD query live here
too, so that the import reconciliation planner
(:mod:`imagebridge.dicom.reconcile`) judges names and birth dates by the same
rules as the matcher: :func:`compare_given_names` and :func:`birth_date_digits`.
"""

from __future__ import annotations

import unicodedata
from enum import Enum, StrEnum
from typing import Final

_TRANSLITERATION: Final = str.maketrans(
    {
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
        "ı": "i",
        "ħ": "h",
        "ŧ": "t",
        "ŀ": "l",
    }
)
# Removed without separating words: O'Brien, O’Brien, St. John.
_JOINING: Final = frozenset("'’‘`´.")


def normalise_name(text: str) -> str:
    """A name part in comparable form: ``"  José-María O'Neill "`` -> ``"jose maria oneill"``."""
    # Compatibility forms may decompose to capitals (U+1D6A8 is a capital alpha): fold after.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    plain = plain.translate(_TRANSLITERATION)
    words: list[str] = []
    current: list[str] = []
    for c in plain:
        if c.isalnum():
            current.append(c)
        elif c in _JOINING:
            continue
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return " ".join(words)


def name_tokens(*parts: str) -> tuple[str, ...]:
    """The normalised words of one or more name parts, in order (``("Jane Marie",)`` -> 2 words)."""
    return tuple(word for part in parts for word in normalise_name(part).split())


def normalise_phone(text: str) -> str:
    """The digits of a phone number or ``tel:`` URI, without any ``;ext=`` parameters.

    ``"tel:+1-555-0100"`` -> ``"15550100"``; digits of any script become ASCII.
    """
    number = text.split(";", 1)[0]
    return "".join(str(unicodedata.decimal(c)) for c in number if c.isdecimal())


def normalise_postal_code(text: str) -> str:
    """Letters and digits of a postal code, case-folded: ``"SW1A 1AA"`` -> ``"sw1a1aa"``."""
    return "".join(c for c in normalise_name(text) if c.isalnum())


class Verdict(Enum):
    """What one demographic attribute of a candidate says about the one it is compared with."""

    AGREE = "agree"
    PARTIAL = "partial"  # compatible, less than equal (a missing middle name, an initial)
    UNKNOWN = "unknown"  # the candidate has no usable value, or it cannot decide
    CONFLICT = "conflict"  # rules the candidate out


class GivenNameRule(StrEnum):
    """How the sent given names must line up with the candidate's (in order, after normalising).

    ``exact``: the same names.  ``prefix``: the shorter list starts the longer
    one (``Jane`` ~ ``Jane Marie``; ``Marie`` is not ``Jane Marie``).
    ``first``: the first given names are equal.
    """

    EXACT = "exact"
    PREFIX = "prefix"
    FIRST = "first"


def _token(a: str, b: str, initials: bool) -> Verdict:
    if a == b:
        return Verdict.AGREE
    if initials and (len(a) == 1 or len(b) == 1) and a[0] == b[0]:
        return Verdict.PARTIAL
    return Verdict.CONFLICT


def compare_given_names(
    sent: tuple[str, ...], held: tuple[str, ...], rule: GivenNameRule, *, allow_initials: bool
) -> Verdict:
    """Given-name words (from :func:`name_tokens`) compared under *rule*.

    UNKNOWN when either side has none; AGREE when equal; PARTIAL when *rule*
    tolerates the difference (a missing or differing later name, an initial
    when *allow_initials*); CONFLICT otherwise.
    """
    if not held or not sent:
        return Verdict.UNKNOWN
    if rule is GivenNameRule.FIRST:
        pairs = [(sent[0], held[0])]
    elif rule is GivenNameRule.EXACT and len(sent) != len(held):
        return Verdict.CONFLICT
    else:
        pairs = list(zip(sent, held, strict=False))
    tokens = [_token(a, b, allow_initials) for a, b in pairs]
    if Verdict.CONFLICT in tokens:
        return Verdict.CONFLICT
    if sent == held:
        return Verdict.AGREE
    return Verdict.PARTIAL


def birth_date_digits(value: str) -> str:
    """A DICOM DA as ``YYYYMMDD`` ('' when absent or malformed; ACR-NEMA dots tolerated)."""
    digits = value.strip().replace(".", "").replace("-", "")
    return digits if len(digits) == 8 and digits.isdigit() else ""
