"""ebRS ``RegistryResponse`` and ``RegistryErrorList``, shared by every XDS response."""

from __future__ import annotations

from lxml import etree

from imagebridge.errors import InvalidValue
from imagebridge.model.outcome import RegistryError, RegistryResponse, Severity, Status
from imagebridge.wire import ns
from imagebridge.wire.xml import Element, children, expect, require_attr, text_of


def parse_registry_error_list(el: Element) -> tuple[RegistryError, ...]:
    """Decode an ``rs:RegistryErrorList`` element."""
    expect(el, ns.RS, "RegistryErrorList")
    out: list[RegistryError] = []
    for err in children(el, ns.RS, "RegistryError"):
        location = err.get("location")
        out.append(
            RegistryError(
                error_code=require_attr(err, "errorCode"),
                # codeContext is required by the schema; partners omit it, so be lenient.
                code_context=(err.get("codeContext") or text_of(err)).strip(),
                severity=Severity.parse(err.get("severity")),
                location=location.strip() if location and location.strip() else None,
            )
        )
    return tuple(out)


def render_registry_error_list(errors: tuple[RegistryError, ...]) -> Element:
    """Encode errors as ``rs:RegistryErrorList`` with highestSeverity written out."""
    if not errors:
        raise InvalidValue("a RegistryErrorList needs at least one RegistryError")
    highest = (
        Severity.ERROR if any(e.severity is Severity.ERROR for e in errors) else Severity.WARNING
    )
    lst = etree.Element(ns.q(ns.RS, "RegistryErrorList"), nsmap={"rs": ns.RS})
    lst.set("highestSeverity", highest.value)
    for e in errors:
        item = etree.SubElement(lst, ns.q(ns.RS, "RegistryError"))
        item.set("errorCode", e.error_code)
        item.set("codeContext", e.code_context)
        if e.location is not None:
            item.set("location", e.location)
        item.set("severity", e.severity.value)
    return lst


def parse_registry_response(el: Element) -> RegistryResponse:
    """Decode an ``rs:RegistryResponse`` element."""
    expect(el, ns.RS, "RegistryResponse")
    errors: tuple[RegistryError, ...] = ()
    for lst in children(el, ns.RS, "RegistryErrorList"):
        errors += parse_registry_error_list(lst)
    return RegistryResponse(
        status=Status.parse(require_attr(el, "status")),
        errors=errors,
        request_id=el.get("requestId"),
    )


def render_registry_response(resp: RegistryResponse) -> Element:
    """Encode an ``rs:RegistryResponse`` element."""
    el = etree.Element(ns.q(ns.RS, "RegistryResponse"), nsmap={"rs": ns.RS})
    el.set("status", resp.status.value)
    if resp.request_id is not None:
        el.set("requestId", resp.request_id)
    if resp.errors:
        el.append(render_registry_error_list(resp.errors))
    return el
