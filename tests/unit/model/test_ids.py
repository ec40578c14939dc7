"""Identifiers: OIDs, DICOM UIDs, homeCommunityIds and CX/II patient ids."""

from __future__ import annotations

import pytest

from imagebridge.errors import InvalidOid, InvalidUid, InvalidValue
from imagebridge.model.ids import (
    HomeCommunityId,
    PatientId,
    is_oid,
    strip_urn_oid,
    validate_oid,
    validate_uid,
)


@pytest.mark.parametrize("value", ["1.2", "1.2.840.10008.5.1.4.1.1.88.59", "0.0", "2.999"])
def test_valid_oids(value: str) -> None:
    assert is_oid(value)
    assert validate_oid(" " + value + " ") == value


@pytest.mark.parametrize("value", ["", "1", "1..2", "1.02", "a.b", "1.2.", ".1.2", "1.2 .3"])
def test_invalid_oids(value: str) -> None:
    with pytest.raises(InvalidOid):
        validate_oid(value)


def test_uid_rules() -> None:
    assert validate_uid("1.2.3\x00") == "1.2.3"
    with pytest.raises(InvalidUid, match="empty"):
        validate_uid("  ")
    with pytest.raises(InvalidUid):
        validate_uid("1." + "1" * 64)
    with pytest.raises(InvalidUid):
        validate_uid("1.2.03")


def test_home_community_id_is_lenient_in_and_strict_out() -> None:
    for text in ("1.2.3", "urn:oid:1.2.3", " urn:oid:urn:oid:1.2.3 ", "URN:OID:1.2.3"):
        assert HomeCommunityId.parse(text).urn == "urn:oid:1.2.3"
    assert str(HomeCommunityId("1.2.3")) == "urn:oid:1.2.3"
    assert strip_urn_oid("urn:oid:urn:oid:9.9") == "9.9"
    # Placeholder ids from partners' test data are single arcs: tolerated on input.
    assert HomeCommunityId.parse("urn:oid:987654321").oid == "987654321"
    with pytest.raises(InvalidOid):
        HomeCommunityId.parse("urn:oid:")
    with pytest.raises(InvalidOid):
        HomeCommunityId.parse("urn:oid:1.2.3}")


def test_patient_id_cx_round_trip() -> None:
    pid = PatientId.from_cx("'EV10045900^^^&1.2.840.114350.1.13&ISO'")
    assert pid == PatientId("EV10045900", "1.2.840.114350.1.13")
    assert pid.cx == "EV10045900^^^&1.2.840.114350.1.13&ISO"
    assert PatientId.from_cx(pid.cx) == pid
    assert PatientId.from_cx("X^^^&urn:oid:1.2&ISO").assigning_authority == "1.2"
    assert PatientId.from_cx("X^^^&1.2") == PatientId("X", "1.2")


def test_patient_id_ii_form() -> None:
    assert PatientId.from_ii("1.2.3", " 42 ") == PatientId("42", "1.2.3")


@pytest.mark.parametrize(
    "value", ["", "X", "^^^&1.2&ISO", "X^^^1.2", "X^^^&&ISO", "X^^^&1.2&DNS", "X^^^&abc&ISO"]
)
def test_patient_id_bad_cx(value: str) -> None:
    with pytest.raises((InvalidValue, InvalidOid)):
        PatientId.from_cx(value)


def test_patient_id_rejects_delimiters_in_value() -> None:
    with pytest.raises(InvalidValue):
        PatientId("a^b", "1.2")
