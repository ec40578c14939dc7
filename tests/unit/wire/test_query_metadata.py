"""Cross Gateway Query [ITI-38]: DocumentEntry (rim:ExtrinsicObject) codec."""

from __future__ import annotations

import pytest
from lxml import etree

from imagebridge.errors import (
    InvalidOid,
    InvalidValue,
    MissingElement,
    UnexpectedElement,
    WrongNamespace,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import Status
from imagebridge.model.xds import (
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    DocumentEntryType,
    Dtm,
    InternationalString,
    RegistryObject,
    Slot,
)
from imagebridge.model.xds_query import AdhocQueryResponse
from imagebridge.wire import ns
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.query import (
    parse_adhoc_query_response,
    parse_document_entry,
    render_adhoc_query_response,
    render_document_entry,
)
from imagebridge.wire.xml import parse_xml, serialize
from tests.conformance_data import assert_valid

ENTRY = "urn:uuid:8d1f3a52-6b7e-4c1d-9e2f-3a4b5c6d7e8f"

KOS_ENTRY = DocumentEntry(
    entry_uuid=ENTRY,
    unique_id="2.25.90214658647374166344513344800740950001",
    mime_type=v.MIME_DICOM,
    patient_id=PatientId("P123", "1.2.3.4"),
    status=AvailabilityStatus.APPROVED,
    home=HomeCommunityId("1.3.6.1.4.1.21367.13.70.201"),
    title=InternationalString.of("CT CHEST W/O CONTRAST"),
    class_code=Code("18726-0", "2.16.840.1.113883.6.1", "Radiology studies (set)"),
    type_code=Code("24627-2", "2.16.840.1.113883.6.1", "CT Chest"),
    format_code=Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME, v.KOS_FORMAT_CODE_DISPLAY),
    healthcare_facility_type_code=Code("22232009", "2.16.840.1.113883.6.96", "Hospital"),
    practice_setting_code=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
    confidentiality_code=(Code("N", "2.16.840.1.113883.5.25", "normal"),),
    event_code_list=(
        Code("CT", "1.2.840.10008.2.16.4", "Computed Tomography"),
        Code("816094009", "2.16.840.1.113883.6.96", "Chest"),
    ),
    authors=(
        Author(
            person="^Smitty^Gerald^^^",
            institutions=("Cleveland Clinic^^^^^^^^^1.2.3",),
            roles=("Radiologist",),
        ),
    ),
    creation_time=Dtm("20240501100000"),
    service_start_time=Dtm("202404301530"),
    hash="da39a3ee5e6b4b0d3255bfef95601890afd80709",
    size=1234,
    language_code="en-US",
    repository_unique_id="1.3.6.1.4.1.21367.13.71.201.1",
    source_patient_id="MRN7^^^&1.2.3.9&ISO",
    source_patient_info=("PID-3|MRN7^^^&1.2.3.9&ISO", "PID-5|Doe^Jane", "PID-7|19700101"),
    reference_id_list=(
        "A12345^^^&1.2.3.4.5.6&ISO^urn:ihe:iti:xds:2013:accession",
        "1.2.840.99.1.1^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
    ),
    extra_slots=(Slot("urn:example:vendorFlag", ("yes", "no")),),
)


def roundtrip(entry: DocumentEntry) -> DocumentEntry:
    el = render_document_entry(entry)
    assert_valid("rim", el)
    again = parse_document_entry(parse_xml(serialize(el)))
    assert again == entry
    return again


def test_kos_entry_round_trips_with_every_field() -> None:
    roundtrip(KOS_ENTRY)


def test_rendering_is_deterministic_and_in_schema_order() -> None:
    a = serialize(render_document_entry(KOS_ENTRY))
    b = serialize(render_document_entry(KOS_ENTRY))
    assert a == b
    el = render_document_entry(KOS_ENTRY)
    order = [etree.QName(c).localname for c in el]
    first = {name: order.index(name) for name in reversed(order)}
    assert first["Slot"] < first["Name"] < first["Classification"] < first["ExternalIdentifier"]
    ids = [c.get("id") for c in el.iter(ns.q(ns.RIM, "Classification"))]
    assert all(i and i.startswith("urn:uuid:") for i in ids)
    assert len(set(ids)) == len(ids)


def test_on_demand_limited_metadata_and_extra_objects_round_trip() -> None:
    roundtrip(
        DocumentEntry(
            entry_uuid="Document01",
            unique_id="1.2.3",
            mime_type="application/dicom",
            object_type=DocumentEntryType.ON_DEMAND,
            limited_metadata=True,
            lid="urn:uuid:0b0b0b0b-0000-4000-8000-000000000000",
            version_name="2",
            comments=InternationalString.of("comment"),
            extra_classifications=(
                RegistryObject(
                    kind="Classification",
                    id="urn:uuid:0b0b0b0b-0000-4000-8000-000000000001",
                    attributes=(("classifiedObject", "Document01"), ("classificationNode", "x:y")),
                ),
            ),
            extra_external_identifiers=(
                RegistryObject(
                    kind="ExternalIdentifier",
                    id="urn:uuid:0b0b0b0b-0000-4000-8000-000000000002",
                    attributes=(
                        ("registryObject", "Document01"),
                        ("identificationScheme", "urn:uuid:0b0b0b0b-0000-4000-8000-00000000000f"),
                        ("value", "other"),
                    ),
                ),
            ),
        )
    )


def eo(inner: str, attrs: str = "") -> bytes:
    return (
        '<ExtrinsicObject xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" '
        f'id="0a8e8b0d-91fb-432b-b9a1-f476a940642c" {attrs}>{inner}</ExtrinsicObject>'
    ).encode()


def slot(name: str, *values: str) -> str:
    vals = "".join(f"<Value>{x}</Value>" for x in values)
    return f'<Slot name="{name}"><ValueList>{vals}</ValueList></Slot>'


def ext_id(scheme: str, value: str) -> str:
    return (
        f'<ExternalIdentifier id="x{abs(hash(scheme + value))}" registryObject="y" '
        f'identificationScheme="{scheme}" value="{value}"/>'
    )


UID = ext_id(v.DE_UNIQUE_ID, "1.2.3")


def test_partner_quirks_are_accepted() -> None:
    """Bare UUID ids, ISO 8601 creationTime, home without urn:oid:, stray attributes."""
    data = eo(
        slot("creationTime", "2024-03-27T21:43:04.878Z")
        + slot("repositoryUniqueId", "urn:oid:1.2.3")
        + slot("unknownVendorSlot", "a")
        + f'<Classification id="c1" classificationScheme="{v.DE_AUTHOR}"'
        ' classifiedObject="urn:uuid:00000000-0000-d6ba-5161-4e497785491d" nodeRepresentation=""'
        ' objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification">'
        + slot("authorPerson", "Jonah Inc^^^^^^^&amp;x&amp;ISO")
        + "</Classification>"
        + ext_id(v.DE_PATIENT_ID, "ODFm==^^^&amp;2.16.840.1&amp;ISO")
        + UID,
        attrs='home="2.16.840.1" isOpaque="false" mimeType="application/pdf"',
    )
    entry = parse_document_entry(parse_xml(data))
    assert entry.entry_uuid == "urn:uuid:0a8e8b0d-91fb-432b-b9a1-f476a940642c"
    assert entry.creation_time == Dtm("20240327214304")
    assert entry.repository_unique_id == "1.2.3"
    assert entry.home == HomeCommunityId("2.16.840.1")
    assert entry.extra_slots == (Slot("unknownVendorSlot", ("a",)),)
    assert entry.authors[0].person == "Jonah Inc^^^^^^^&x&ISO"
    assert entry.patient_id == PatientId("ODFm==", "2.16.840.1")
    assert entry.object_type is DocumentEntryType.STABLE  # absent objectType
    roundtrip(entry)


def test_classifications_beside_the_entry_are_folded_in() -> None:
    resp = (
        '<q:AdhocQueryResponse xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" '
        'xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" '
        f'status="{Status.SUCCESS.value}"><RegistryObjectList>'
        + eo(UID).decode()
        + f'<Classification id="c9" classificationScheme="{v.DE_FORMAT_CODE}" '
        'classifiedObject="urn:uuid:0a8e8b0d-91fb-432b-b9a1-f476a940642c" '
        f'nodeRepresentation="{v.KOS_FORMAT_CODE}">'
        + slot("codingScheme", v.KOS_FORMAT_CODE_SCHEME)
        + "</Classification></RegistryObjectList></q:AdhocQueryResponse>"
    ).encode()
    parsed = parse_adhoc_query_response(parse_xml(resp))
    (entry,) = parsed.registry_objects
    assert isinstance(entry, DocumentEntry)
    assert entry.format_code == Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME)
    el = render_adhoc_query_response(
        AdhocQueryResponse(status=Status.SUCCESS, registry_objects=(entry,))
    )
    assert_valid("query", el)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (eo(""), MissingElement),
        (eo(slot("size", "-1") + UID), InvalidValue),
        (eo(slot("size", "12", "13") + UID), InvalidValue),
        (eo(slot("creationTime", "tomorrow") + UID), InvalidValue),
        (eo(slot("creationTime", "2024") + slot("creationTime", "2025") + UID), InvalidValue),
        (eo(slot("repositoryUniqueId", "repo-1") + UID), InvalidOid),
        (eo(UID, attrs='home="not-an-oid"'), InvalidOid),
        (eo(UID, attrs='objectType="urn:uuid:00000000-0000-0000-0000-000000000000"'), InvalidValue),
        (eo(UID, attrs='status="urn:oasis:names:tc:ebxml-regrep:StatusType:Bogus"'), InvalidValue),
        (eo(UID + UID), InvalidValue),
        (eo(UID + ext_id(v.DE_PATIENT_ID, "no-authority")), InvalidValue),
        (eo(UID + ext_id(v.DE_PATIENT_ID, "P^^^&amp;ABC&amp;ISO")), InvalidOid),
        (eo(slot("size", "\u00b2") + UID), InvalidValue),
        (eo(slot("creationTime", "\u0662\u0660\u0662\u0664") + UID), InvalidValue),
        (eo(slot("creationTime", "00010101000000+0100") + UID), InvalidValue),
        (
            eo(
                UID + f'<Classification id="a" classificationScheme="{v.DE_CLASS_CODE}" '
                'classifiedObject="y" nodeRepresentation="X"/>'
            ),
            InvalidValue,
        ),
        (eo(UID + '<Foo xmlns="urn:x"/>'), UnexpectedElement),
        (eo(UID).replace(b"xsd:rim:3.0", b"rim:xsd:2.1"), WrongNamespace),
    ],
)
def test_bad_entries_raise_typed_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_document_entry(parse_xml(data))


def test_values_longer_than_the_schema_allows_are_refused_on_output() -> None:
    entry = DocumentEntry(
        entry_uuid=ENTRY,
        unique_id="1.2",
        mime_type="text/plain",
        extra_slots=(Slot("long", ("x" * 257,)),),
    )
    with pytest.raises(InvalidValue):
        render_document_entry(entry)


def test_text_xml_cannot_carry_is_refused_on_output() -> None:
    entry = DocumentEntry(
        entry_uuid=ENTRY, unique_id="1.2", mime_type="text/plain", language_code="en\x00"
    )
    with pytest.raises(InvalidValue, match="XML"):
        render_document_entry(entry)


def test_model_validation() -> None:
    with pytest.raises(InvalidValue):
        DocumentEntry(entry_uuid=ENTRY, unique_id="", mime_type="text/plain")
    with pytest.raises(InvalidValue):
        DocumentEntry(entry_uuid=ENTRY, unique_id="1.2", mime_type="text/plain", size=-1)
    with pytest.raises(InvalidValue):
        Code("", "1.2")
    with pytest.raises(InvalidValue):
        Dtm("2024-01-01")
