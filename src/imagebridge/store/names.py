"""Cross Gateway Patient Discovery [ITI-55], Responding Gateway: names in the patient index.

The index stores a normalised key next to each name.  The key is
:func:`imagebridge.model.normalise.normalise_name`, the one function the XCPD
matcher applies to the names of a query (case folded, diacritics and
punctuation dropped, whitespace collapsed), re-exported here.
"""

from __future__ import annotations

from imagebridge.model.normalise import normalise_name

__all__ = ["normalise_name", "split_person_name"]


def split_person_name(person_name: str) -> tuple[str, tuple[str, ...]]:
    """Family name and given names of a DICOM PN (alphabetic group).

    ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``: the given names are the given and
    middle components, each split on whitespace, empty parts left out.
    """
    alphabetic = person_name.split("=", 1)[0]
    components = alphabetic.split("^")
    family = components[0].strip()
    given: list[str] = []
    for component in components[1:3]:
        given.extend(component.split())
    return family, tuple(given)
