"""HL7 v3 data types on the wire (II, TS, IVL<TS>, PN, AD, TEL, CE, INT) and tolerant accessors.

Used by Cross Gateway Patient Discovery [ITI-55].  Readers are lenient: any
prefix, parts in any order, empty or null-flavoured values read as absent,
and one documented namespace tolerance (below).  Writers emit the default
``urn:hl7-org:v3`` namespace and only schema-valid content.

Namespace tolerance: inside an HL7 v3 payload a child element in *no*
namespace is read as if it were in ``urn:hl7-org:v3``.  Metriport's real
ITI-55 requests leave ``receiver`` and ``sender`` (and everything beneath them)
unqualified while every other element is HL7; nothing else can be meant, and
an unqualified name cannot collide with another vocabulary.  A child in any
*other* namespace is never accepted; where it stands in for a required element
it raises :class:`WrongNamespace`.
"""

from __future__ import annotations

from lxml import etree

from imagebridge.errors import InvalidValue, MissingElement, WrongNamespace
from imagebridge.model.ids import strip_urn_oid
from imagebridge.model.xcpd import (
    II,
    AdministrativeGender,
    CodedValue,
    PersonName,
    PostalAddress,
    Telecom,
    TimeInterval,
    validate_ts,
)
from imagebridge.wire import ns
from imagebridge.wire.xml import Element, elements, qname_of

_XSI_TYPE = ns.q(ns.XSI, "type")


# --- reading ----------------------------------------------------------------------------


def _is(el: Element, local: str) -> bool:
    return el.tag == ns.q(ns.HL7, local) or el.tag == local


def hl7_children(el: Element, local: str) -> list[Element]:
    """Children ``{urn:hl7-org:v3}local`` (or unqualified ``local``), in document order."""
    return [c for c in elements(el) if _is(c, local)]


def hl7_child(el: Element | None, local: str) -> Element | None:
    """The first HL7 child named *local*, or None."""
    if el is None:
        return None
    for c in elements(el):
        if _is(c, local):
            return c
    return None


def require_hl7_child(el: Element, local: str) -> Element:
    """The first HL7 child named *local*; :class:`WrongNamespace` or :class:`MissingElement`."""
    found = hl7_child(el, local)
    if found is not None:
        return found
    parent = qname_of(el)[1]
    for c in elements(el):
        cns, name = qname_of(c)
        if name == local:
            raise WrongNamespace(
                f"element {local} under {parent} is in namespace {cns!r}, expected {ns.HL7!r}"
            )
    raise MissingElement(f"required element {local} is missing under {parent}")


def attr(el: Element | None, name: str) -> str | None:
    """A stripped attribute value; absent or blank reads as None."""
    if el is None:
        return None
    value = el.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def text(el: Element | None) -> str | None:
    """Stripped text content (all descendants); blank reads as None."""
    if el is None:
        return None
    value = "".join(t for t in el.itertext() if isinstance(t, str)).strip()
    return value or None


def _texts(el: Element, local: str) -> tuple[str, ...]:
    return tuple(t for t in (text(c) for c in hl7_children(el, local)) if t is not None)


def parse_ii(el: Element | None) -> II | None:
    """An ``II``; None when absent, empty (``<id/>``) or null-flavoured.

    An empty ``extension=""`` reads as no extension; a ``urn:oid:`` prefix on the
    root is removed.  An extension without a root is refused.
    """
    if el is None:
        return None
    root = attr(el, "root")
    extension = attr(el, "extension")
    if root is None:
        if extension is not None:
            raise MissingElement(f"{qname_of(el)[1]} has extension {extension!r} but no root")
        return None
    return II(strip_urn_oid(root), extension)


def require_ii(el: Element, local: str = "id") -> II:
    """The first non-null ``II`` child named *local*; missing raises :class:`MissingElement`."""
    for c in hl7_children(el, local):
        ii = parse_ii(c)
        if ii is not None:
            return ii
    require_hl7_child(el, local)  # wrong namespace gets its own error
    raise MissingElement(f"{local} under {qname_of(el)[1]} has no root")


def iis(el: Element, local: str) -> tuple[II, ...]:
    """Every non-null ``II`` among the children named *local*."""
    return tuple(ii for ii in (parse_ii(c) for c in hl7_children(el, local)) if ii is not None)


def parse_ts(el: Element | None, what: str) -> str | None:
    """The ``value`` of a TS element, checked against the HL7 TS syntax."""
    value = attr(el, "value")
    return None if value is None else validate_ts(value, what)


def parse_ivl_ts(el: Element, what: str) -> TimeInterval | None:
    """IVL<TS>: ``value`` or ``low``/``high``; None when null."""
    value = parse_ts(el, what)
    low = parse_ts(hl7_child(el, "low"), what)
    high = parse_ts(hl7_child(el, "high"), what)
    if value is None and low is None and high is None:
        return None
    if value is not None:
        return TimeInterval(value=value)
    return TimeInterval(low=low, high=high)


def parse_int(el: Element | None, what: str) -> int | None:
    """The ``value`` of an INT element."""
    value = attr(el, "value")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidValue(f"{what} is not an integer: {value[:40]!r}") from exc


def parse_code(el: Element | None) -> CodedValue | None:
    """A CE/CD/CS; None when absent or without a code."""
    code = attr(el, "code")
    if el is None or code is None:
        return None
    system = attr(el, "codeSystem")
    return CodedValue(code, strip_urn_oid(system) if system else None, attr(el, "displayName"))


def parse_gender(el: Element | None) -> str | None:
    """An AdministrativeGender code; M/F/UN in any case are normalised, others kept as sent."""
    code = attr(el, "code")
    if code is None:
        return None
    return code.upper() if code.upper() in {g.value for g in AdministrativeGender} else code


def _direct_text(el: Element) -> str | None:
    parts = [el.text or ""] + [c.tail or "" for c in el]
    joined = " ".join(p.strip() for p in parts if p.strip())
    return joined or None


def parse_pn(el: Element) -> PersonName | None:
    """A PN with its parts exactly as sent (stripped); None when null or empty."""
    given, family = _texts(el, "given"), _texts(el, "family")
    prefix, suffix = _texts(el, "prefix"), _texts(el, "suffix")
    unstructured = _direct_text(el)
    if not (given or family or prefix or suffix or unstructured):
        return None
    return PersonName(given, family, prefix, suffix, attr(el, "use"), unstructured)


def parse_ad(el: Element) -> PostalAddress | None:
    """An AD with the parts XCPD uses; postal codes stay strings."""
    lines = _texts(el, "streetAddressLine")
    city = text(hl7_child(el, "city"))
    state = text(hl7_child(el, "state"))
    postal_code = text(hl7_child(el, "postalCode"))
    country = text(hl7_child(el, "country"))
    if not (lines or city or state or postal_code or country):
        return None
    return PostalAddress(lines, city, state, postal_code, country, attr(el, "use"))


def parse_tel(el: Element) -> Telecom | None:
    """A TEL; an empty ``<telecom/>`` reads as absent."""
    value = attr(el, "value")
    return None if value is None else Telecom(value, attr(el, "use"))


# --- writing ----------------------------------------------------------------------------


def new_root(local: str) -> Element:
    """A payload root in the default HL7 namespace, with xsi declared on the root itself."""
    nsmap = {None: ns.HL7, "xsi": ns.XSI}
    root = etree.Element(ns.q(ns.HL7, local), nsmap=nsmap)  # type: ignore[arg-type]
    root.set("ITSVersion", "XML_1.0")
    return root


def sub(parent: Element, local: str, **attributes: str | None) -> Element:
    """Append an HL7 child; attributes whose value is None are left out."""
    el = etree.SubElement(parent, ns.q(ns.HL7, local))
    for key, value in attributes.items():
        if value is not None:
            el.set(key, value)
    return el


def render_ii(parent: Element, local: str, ii: II | None) -> Element:
    """An II element; None renders ``nullFlavor="UNK"``."""
    if ii is None:
        return sub(parent, local, nullFlavor="UNK")
    return sub(parent, local, root=ii.root, extension=ii.extension)


def render_code(parent: Element, local: str, coded: CodedValue) -> Element:
    return sub(
        parent, local, code=coded.code, codeSystem=coded.code_system, displayName=coded.display_name
    )


def render_ivl_ts(parent: Element, local: str, interval: TimeInterval) -> Element:
    el = sub(parent, local, value=interval.value)
    if interval.low is not None:
        sub(el, "low", value=interval.low)
    if interval.high is not None:
        sub(el, "high", value=interval.high)
    return el


def render_int(parent: Element, local: str, value: int | None) -> Element:
    """A ``value`` element typed ``xsi:type="INT"`` (null-flavoured when None)."""
    el = sub(parent, local)
    el.set(_XSI_TYPE, "INT")
    if value is None:
        el.set("nullFlavor", "NI")
    else:
        el.set("value", str(value))
    return el


def render_st(parent: Element, local: str, value: str) -> Element:
    el = sub(parent, local)
    el.set(_XSI_TYPE, "ST")
    el.text = value
    return el


def render_text(parent: Element, local: str, value: str) -> Element:
    el = sub(parent, local)
    el.text = value
    return el


def render_pn(parent: Element, local: str, name: PersonName) -> Element:
    el = sub(parent, local, use=name.use)
    el.text = name.text
    for kind, parts in (
        ("prefix", name.prefix),
        ("given", name.given),
        ("family", name.family),
        ("suffix", name.suffix),
    ):
        for part in parts:
            render_text(el, kind, part)
    return el


def render_ad(parent: Element, local: str, address: PostalAddress) -> Element:
    el = sub(parent, local, use=address.use)
    for line in address.street_address_lines:
        render_text(el, "streetAddressLine", line)
    for kind, value in (
        ("city", address.city),
        ("state", address.state),
        ("postalCode", address.postal_code),
        ("country", address.country),
    ):
        if value is not None:
            render_text(el, kind, value)
    return el


def render_tel(parent: Element, local: str, telecom: Telecom) -> Element:
    return sub(parent, local, value=telecom.value, use=telecom.use)
