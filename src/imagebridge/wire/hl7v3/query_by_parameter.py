"""Cross Gateway Patient Discovery [ITI-55], ``queryByParameter`` (PRPA_MT201306UV02).

Shared by the request and by the copy every response echoes.  Reading is
lenient: repeated ``patientAddress``/``patientTelecom`` elements and several
values per element are flattened (they are OR'ed either way), ``semanticsText``
is ignored (partners misspell or omit it), and empty parameter elements count
as absent.  Parameters ITI-55 tells initiators to omit (livingSubjectDeceasedTime,
otherIDsScopingOrganization, patientStatusCode, principalCareProvisionId) are
refused rather than ignored, because a responder must use every parameter it
is sent.  Writing follows the schema order, one value per name/id element and
one element holding every address or telecom value (IPF's Schematron allows one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from imagebridge.errors import UnexpectedElement
from imagebridge.model.xcpd import (
    ADMINISTRATIVE_GENDER_SYSTEM,
    AdministrativeGender,
    ParameterList,
    QueryByParameter,
)
from imagebridge.wire.hl7v3.datatypes import (
    attr,
    hl7_child,
    hl7_children,
    iis,
    parse_ad,
    parse_gender,
    parse_int,
    parse_ivl_ts,
    parse_pn,
    parse_tel,
    render_ad,
    render_ii,
    render_int,
    render_ivl_ts,
    render_pn,
    render_st,
    render_tel,
    render_text,
    require_hl7_child,
    require_ii,
    sub,
    text,
)
from imagebridge.wire.xml import Element

T = TypeVar("T")

_UNSUPPORTED = (
    "livingSubjectDeceasedTime",
    "otherIDsScopingOrganization",
    "patientStatusCode",
    "principalCareProvisionId",
)

SEMANTICS_TEXT = {
    "livingSubjectAdministrativeGender": "LivingSubject.administrativeGender",
    "livingSubjectBirthPlaceAddress": "LivingSubject.BirthPlace.Addr",
    "livingSubjectBirthPlaceName": "LivingSubject.BirthPlace.Place.Name",
    "livingSubjectBirthTime": "LivingSubject.birthTime",
    "livingSubjectId": "LivingSubject.id",
    "livingSubjectName": "LivingSubject.name",
    "mothersMaidenName": "Person.MothersMaidenName",
    "patientAddress": "Patient.addr",
    "patientTelecom": "Patient.telecom",
    "principalCareProviderId": "AssignedProvider.id",
    "matchAlgorithm": "MatchAlgorithm",
    "minimumDegreeMatch": "MinimumDegreeMatch",
}


def _values(pl: Element, local: str) -> list[Element]:
    return [v for p in hl7_children(pl, local) for v in hl7_children(p, "value")]


def _all(pl: Element, local: str, read: Callable[[Element], T | None]) -> tuple[T, ...]:
    return tuple(x for x in (read(v) for v in _values(pl, local)) if x is not None)


def _at_most_one(pl: Element, local: str, read: Callable[[Element], T | None]) -> T | None:
    found = _all(pl, local, read)
    if len(found) > 1:
        raise UnexpectedElement(f"parameterList has {len(found)} {local} values; ITI-55 allows one")
    return found[0] if found else None


def parse_query_by_parameter(el: Element) -> QueryByParameter:
    """Decode ``queryByParameter`` (request, or the copy in a response)."""
    mcl = hl7_child(el, "matchCriterionList")
    algorithm = hl7_child(hl7_child(mcl, "matchAlgorithm"), "value")
    degree = hl7_child(hl7_child(mcl, "minimumDegreeMatch"), "value")
    return QueryByParameter(
        query_id=require_ii(el, "queryId"),
        parameters=parse_parameter_list(require_hl7_child(el, "parameterList")),
        response_modality_code=attr(hl7_child(el, "responseModalityCode"), "code"),
        response_priority_code=attr(hl7_child(el, "responsePriorityCode"), "code"),
        match_algorithm=text(algorithm),
        minimum_degree_match=parse_int(degree, "minimumDegreeMatch"),
    )


def parse_parameter_list(pl: Element) -> ParameterList:
    """Decode ``parameterList``; see the module docstring for what is lenient."""
    for local in _UNSUPPORTED:
        if hl7_child(pl, local) is not None:
            raise UnexpectedElement(f"parameterList/{local} is not supported by ITI-55")
    return ParameterList(
        living_subject_administrative_gender=_at_most_one(
            pl, "livingSubjectAdministrativeGender", parse_gender
        ),
        living_subject_birth_place_addresses=_all(pl, "livingSubjectBirthPlaceAddress", parse_ad),
        living_subject_birth_place_names=_all(pl, "livingSubjectBirthPlaceName", text),
        living_subject_birth_time=_at_most_one(
            pl, "livingSubjectBirthTime", lambda v: parse_ivl_ts(v, "livingSubjectBirthTime")
        ),
        living_subject_ids=tuple(
            ii for p in hl7_children(pl, "livingSubjectId") for ii in iis(p, "value")
        ),
        living_subject_names=_all(pl, "livingSubjectName", parse_pn),
        mothers_maiden_name=_at_most_one(pl, "mothersMaidenName", parse_pn),
        patient_addresses=_all(pl, "patientAddress", parse_ad),
        patient_telecoms=_all(pl, "patientTelecom", parse_tel),
        principal_care_provider_ids=tuple(
            ii for p in hl7_children(pl, "principalCareProviderId") for ii in iis(p, "value")
        ),
    )


def render_query_by_parameter(parent: Element, qbp: QueryByParameter) -> Element:
    """Encode ``queryByParameter`` in schema order."""
    el = sub(parent, "queryByParameter")
    render_ii(el, "queryId", qbp.query_id)
    sub(el, "statusCode", code="new")
    if qbp.response_modality_code is not None:
        sub(el, "responseModalityCode", code=qbp.response_modality_code)
    if qbp.response_priority_code is not None:
        sub(el, "responsePriorityCode", code=qbp.response_priority_code)
    if qbp.match_algorithm is not None or qbp.minimum_degree_match is not None:
        mcl = sub(el, "matchCriterionList")
        if qbp.match_algorithm is not None:
            param = sub(mcl, "matchAlgorithm")
            render_st(param, "value", qbp.match_algorithm)
            _semantics(param, "matchAlgorithm")
        if qbp.minimum_degree_match is not None:
            param = sub(mcl, "minimumDegreeMatch")
            render_int(param, "value", qbp.minimum_degree_match)
            _semantics(param, "minimumDegreeMatch")
    _render_parameter_list(el, qbp.parameters)
    return el


def _semantics(param: Element, local: str) -> None:
    render_text(param, "semanticsText", SEMANTICS_TEXT[local])


def _render_parameter_list(parent: Element, p: ParameterList) -> None:
    pl = sub(parent, "parameterList")
    if p.living_subject_administrative_gender is not None:
        param = sub(pl, "livingSubjectAdministrativeGender")
        gender = p.living_subject_administrative_gender
        known = gender in {g.value for g in AdministrativeGender}
        sub(param, "value", code=gender, codeSystem=ADMINISTRATIVE_GENDER_SYSTEM if known else None)
        _semantics(param, "livingSubjectAdministrativeGender")
    if p.living_subject_birth_place_addresses:
        param = sub(pl, "livingSubjectBirthPlaceAddress")
        for address in p.living_subject_birth_place_addresses:
            render_ad(param, "value", address)
        _semantics(param, "livingSubjectBirthPlaceAddress")
    if p.living_subject_birth_place_names:
        param = sub(pl, "livingSubjectBirthPlaceName")
        for place in p.living_subject_birth_place_names:
            render_text(param, "value", place)
        _semantics(param, "livingSubjectBirthPlaceName")
    if p.living_subject_birth_time is not None:
        param = sub(pl, "livingSubjectBirthTime")
        render_ivl_ts(param, "value", p.living_subject_birth_time)
        _semantics(param, "livingSubjectBirthTime")
    for ii in p.living_subject_ids:
        param = sub(pl, "livingSubjectId")
        render_ii(param, "value", ii)
        _semantics(param, "livingSubjectId")
    for name in p.living_subject_names:
        param = sub(pl, "livingSubjectName")
        render_pn(param, "value", name)
        _semantics(param, "livingSubjectName")
    if p.mothers_maiden_name is not None:
        param = sub(pl, "mothersMaidenName")
        render_pn(param, "value", p.mothers_maiden_name)
        _semantics(param, "mothersMaidenName")
    if p.patient_addresses:
        param = sub(pl, "patientAddress")
        for address in p.patient_addresses:
            render_ad(param, "value", address)
        _semantics(param, "patientAddress")
    if p.patient_telecoms:
        param = sub(pl, "patientTelecom")
        for telecom in p.patient_telecoms:
            render_tel(param, "value", telecom)
        _semantics(param, "patientTelecom")
    for ii in p.principal_care_provider_ids:
        param = sub(pl, "principalCareProviderId")
        render_ii(param, "value", ii)
        _semantics(param, "principalCareProviderId")
