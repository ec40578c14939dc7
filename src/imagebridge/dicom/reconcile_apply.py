"""Import reconciliation: a plan of :mod:`imagebridge.dicom.reconcile` written into a data set.

:func:`apply_plan` changes only the planned top-level attributes (and, for a
remapped study, UID references inside sequences), records the old values in
one new Original Attributes Sequence (0400,0561) item and never touches pixel
data: the data set may be read with ``defer_size`` or without its pixels.
"""

from __future__ import annotations

import copy

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from imagebridge.dicom.headers import designator_from_item, first_item, patient_issuer, text, uid
from imagebridge.dicom.reconcile import qualifiers
from imagebridge.errors import ReconcilePlanMismatch, ReconcilePlanRefused
from imagebridge.model.imaging import HierarchicDesignator
from imagebridge.model.reconcile import AttributeChange, AttributeValue, PlanVerdict, ReconcilePlan

ORIGINAL_ATTRIBUTES = 0x04000561
UTF8 = "ISO_IR 192"


def apply_plan(ds: Dataset, plan: ReconcilePlan) -> None:
    """Write *plan* into *ds* in place.

    Refuses (:class:`ReconcilePlanRefused`) a plan that is not IMPORT, and
    (:class:`ReconcilePlanMismatch`) a data set with another SOP Instance UID
    or whose planned attributes no longer hold the planned old values.  When a
    new value is not ASCII and the data set is not UTF-8, every text value is
    decoded and Specific Character Set becomes ``ISO_IR 192``.  A new SOP
    Instance UID is also written to the file meta's Media Storage SOP Instance UID.
    """
    check_plan(ds, plan)
    for change in plan.changes:
        if current_value(ds, change.keyword) != change.old:
            raise ReconcilePlanMismatch(f"{change.keyword} changed since the plan was made")
    if not plan.changes:
        return
    item = plan.original_attributes
    if item is None:
        raise ReconcilePlanMismatch("a plan with changes lacks its Original Attributes item")

    modified = Dataset()
    if plan.needs_unicode and charsets(ds) != [UTF8]:
        ds.decode()
        if "SpecificCharacterSet" in ds:
            modified.add(copy.deepcopy(ds["SpecificCharacterSet"]))
        ds.SpecificCharacterSet = UTF8
    for change in plan.changes:
        modified.add(_old_element(ds, change))
    if plan.uid_map:
        skip = {c.tag for c in plan.changes} | {ORIGINAL_ATTRIBUTES}
        _rewrite_references(ds, dict(plan.uid_map), skip, modified)
    for change in plan.changes:
        _write(ds, change.keyword, change.new)
    sop = next((c for c in plan.changes if c.keyword == "SOPInstanceUID"), None)
    meta = getattr(ds, "file_meta", None)
    if sop is not None and meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = sop.new

    entry = Dataset()
    entry.AttributeModificationDateTime = item.modification_datetime
    entry.ModifiedAttributesSequence = [modified]
    entry.ModifyingSystem = item.modifying_system
    entry.SourceOfPreviousValues = item.source_of_previous_values
    entry.ReasonForTheAttributeModification = item.reason
    if "OriginalAttributesSequence" in ds:
        ds.OriginalAttributesSequence.append(entry)
    else:
        ds.OriginalAttributesSequence = [entry]


def check_plan(ds: Dataset, plan: ReconcilePlan) -> None:
    """Refuse a plan that is not IMPORT, or that was made for another SOP Instance UID."""
    if plan.verdict is not PlanVerdict.IMPORT:
        raise ReconcilePlanRefused(f"plan for {plan.sop_instance_uid} is {plan.verdict.value}")
    if uid(ds, "SOPInstanceUID") != plan.sop_instance_uid:
        raise ReconcilePlanMismatch(
            f"data set {uid(ds, 'SOPInstanceUID')} is not the planned {plan.sop_instance_uid}"
        )


def current_value(ds: Dataset, keyword: str) -> AttributeValue:
    """An attribute in the form a plan holds it (as the header reader sees it)."""
    if keyword == "IssuerOfPatientIDQualifiersSequence":
        return qualifiers(patient_issuer(ds))
    if keyword == "IssuerOfAccessionNumberSequence":
        return designator_from_item(first_item(ds, keyword))
    return text(ds, keyword)


def charsets(ds: Dataset) -> list[str]:
    """The Specific Character Set values of *ds* ([] when it has none)."""
    value = ds.get("SpecificCharacterSet")
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


def _old_element(ds: Dataset, change: AttributeChange) -> DataElement:
    """The element as it is now; an absent one is recorded with zero length."""
    if change.tag in ds:
        return copy.deepcopy(ds[change.tag])
    vr = dictionary_VR(change.tag)
    return DataElement(change.tag, vr, Sequence() if vr == "SQ" else None)


def _write(ds: Dataset, keyword: str, value: AttributeValue) -> None:
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
    elif isinstance(value, HierarchicDesignator):
        setattr(ds, keyword, [_issuer_item(keyword, value)])
    else:
        setattr(ds, keyword, value)


def _issuer_item(keyword: str, issuer: HierarchicDesignator) -> Dataset:
    item = Dataset()
    if issuer.local_namespace and keyword == "IssuerOfAccessionNumberSequence":
        item.LocalNamespaceEntityID = issuer.local_namespace
    if issuer.universal_id:
        item.UniversalEntityID = issuer.universal_id
        item.UniversalEntityIDType = issuer.universal_id_type
    return item


def _rewrite_references(
    ds: Dataset, uid_map: dict[str, str], skip: set[int], modified: Dataset
) -> None:
    """Replace remapped UIDs in the other top-level elements and all sequences below them.

    The old value of every top-level element so changed joins *modified*.
    """
    for element in list(ds):
        if element.tag in skip or element.VR not in ("UI", "SQ"):
            continue
        before = copy.deepcopy(element)
        if _rewrite(element, uid_map):
            modified.add(before)


def _rewrite(element: DataElement, uid_map: dict[str, str]) -> bool:
    changed = False
    if element.VR == "SQ":
        for item in element.value:
            for inner in item:
                changed = _rewrite(inner, uid_map) or changed
        return changed
    if element.VR != "UI" or element.value is None:
        return False
    if isinstance(element.value, MultiValue):
        values = [str(v) for v in element.value]
        new = [uid_map.get(v, v) for v in values]
        if new != values:
            element.value = new
            return True
        return False
    old = str(element.value).strip(" \x00")
    if old in uid_map:
        element.value = uid_map[old]
        return True
    return False
