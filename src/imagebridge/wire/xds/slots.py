"""Cross Gateway Query [ITI-38] value syntax and the ebRIM Slot / InternationalString codec.

Stored-query parameter values (ITI TF-2 3.18.4.1.2.3.5): strings in single
quotes with ``''`` for a literal quote, numbers and times bare, lists in
parentheses, coded values ``code^^scheme``.  Parsing is lenient (double
quotes, a lone value where a list is expected, spaces); formatting is strict.
Syntax errors raise :class:`StoredQueryParamSyntax`.
"""

from __future__ import annotations

from lxml import etree

from imagebridge.errors import InvalidValue, StoredQueryParamSyntax, WrongNamespace
from imagebridge.model.xds import Code, InternationalString, LocalizedString, Slot
from imagebridge.wire import ns
from imagebridge.wire.xml import Element, children, elements, qname_of, require_attr, text_of

# ebRIM LongName (rim:Value, Slot/@name) and FreeFormText (LocalizedString/@value).
LONG_NAME_MAX = 256
FREE_FORM_TEXT_MAX = 1024

# --- value syntax ---------------------------------------------------------------------------


def _scan_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted string starting at ``text[pos]``; return (value, index after it)."""
    quote = text[pos]
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise StoredQueryParamSyntax(f"unterminated quoted string in {text[:120]!r}")


def _scan_item(text: str, pos: int) -> tuple[str, int]:
    """Read one list item (quoted or bare) starting at *pos* (whitespace skipped)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos < len(text) and text[pos] in "'\"":
        value, pos = _scan_quoted(text, pos)
    else:
        start = pos
        while pos < len(text) and text[pos] not in ",)":
            if text[pos] in "'\"(":
                raise StoredQueryParamSyntax(f"unexpected {text[pos]!r} in {text[:120]!r}")
            pos += 1
        value = text[start:pos].strip()
        if not value:
            raise StoredQueryParamSyntax(f"empty value in {text[:120]!r}")
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return value, pos


def parse_value_list(text: str) -> tuple[str, ...]:
    """One ``rim:Value`` of a multi-valued parameter: ``('a','b')``, ``('a')`` or ``'a'``."""
    raw = text.strip()
    if not raw:
        raise StoredQueryParamSyntax("empty parameter value")
    if not raw.startswith("("):
        return (parse_single_value(raw),)
    if not raw.endswith(")"):
        raise StoredQueryParamSyntax(f"list is not closed by ')': {raw[:120]!r}")
    items: list[str] = []
    pos = 1
    while True:
        value, pos = _scan_item(raw, pos)
        items.append(value)
        if pos >= len(raw):
            raise StoredQueryParamSyntax(f"list is not closed by ')': {raw[:120]!r}")
        if raw[pos] == ")":
            if pos != len(raw) - 1:
                raise StoredQueryParamSyntax(f"text after the closing ')': {raw[:120]!r}")
            return tuple(items)
        if raw[pos] != ",":
            raise StoredQueryParamSyntax(f"expected ',' or ')' in {raw[:120]!r}")
        pos += 1


def parse_single_value(text: str) -> str:
    """One value: ``'quoted'`` (``''`` escapes a quote) or bare (``20240101``)."""
    raw = text.strip()
    if not raw:
        raise StoredQueryParamSyntax("empty parameter value")
    if raw[0] in "'\"":
        value, end = _scan_quoted(raw, 0)
        if end != len(raw):
            raise StoredQueryParamSyntax(f"text after the closing quote: {raw[:120]!r}")
        return value
    if raw.startswith("("):
        items = parse_value_list(raw)
        if len(items) != 1:
            raise StoredQueryParamSyntax(f"expected one value, got {len(items)}: {raw[:120]!r}")
        return items[0]
    if any(c in raw for c in "'\",()"):
        raise StoredQueryParamSyntax(f"unquoted value with quote, comma or parenthesis: {raw!r}")
    return raw


def quote(value: str) -> str:
    """``'value'`` with single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def format_list(values: tuple[str, ...], quoted: bool = True) -> tuple[str, ...]:
    """Render a multi-valued parameter as ``rim:Value`` texts of at most 256 characters.

    Items are packed greedily into parenthesised lists; a long list becomes
    several Values (the receiver concatenates them).
    """
    if not values:
        raise InvalidValue("a multi-valued parameter needs at least one value")
    items = [quote(v) if quoted else v for v in values]
    out: list[str] = []
    current: list[str] = []
    for item in items:
        if len(item) + 2 > LONG_NAME_MAX:
            raise InvalidValue(f"parameter value too long for one rim:Value: {item[:60]!r}...")
        if current and len(",".join([*current, item])) + 2 > LONG_NAME_MAX:
            out.append("(" + ",".join(current) + ")")
            current = []
        current.append(item)
    out.append("(" + ",".join(current) + ")")
    return tuple(out)


def parse_code(text: str) -> Code:
    """``code^^scheme`` (HL7 CE components 1 and 3); component 2 is ignored if present."""
    parts = text.split("^")
    if len(parts) != 3 or not parts[0].strip() or not parts[2].strip():
        raise StoredQueryParamSyntax(f"coded value is not code^^scheme: {text[:120]!r}")
    return Code(parts[0].strip(), parts[2].strip())


def format_code(code: Code) -> str:
    return f"{code.code}^^{code.scheme}"


# --- rim:Slot and InternationalString -------------------------------------------------------


def rim_children(el: Element, local: str) -> list[Element]:
    """Children ``rim:<local>``; the same local name in another namespace is refused."""
    for c in elements(el):
        child_ns, name = qname_of(c)
        if name == local and child_ns != ns.RIM:
            raise WrongNamespace(
                f"element {local} under {qname_of(el)[1]} is in namespace {child_ns!r}, "
                f"expected {ns.RIM!r}"
            )
    return children(el, ns.RIM, local)


def parse_slot(el: Element) -> Slot:
    """A ``rim:Slot``: name, the stripped text of each Value, and slotType."""
    values: list[str] = []
    for value_list in rim_children(el, "ValueList"):
        values.extend(text_of(v) for v in rim_children(value_list, "Value"))
    return Slot(require_attr(el, "name"), tuple(values), el.get("slotType"))


def parse_slots(el: Element) -> tuple[Slot, ...]:
    return tuple(parse_slot(s) for s in rim_children(el, "Slot"))


def _check_length(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise InvalidValue(f"{what} is longer than {limit} characters: {value[:60]!r}...")
    return value


def render_slot(parent: Element, slot: Slot) -> Element:
    """Append ``rim:Slot`` to *parent*; each Value must fit the schema's 256 characters."""
    el = etree.SubElement(parent, ns.q(ns.RIM, "Slot"))
    el.set("name", _check_length(slot.name, LONG_NAME_MAX, "Slot name"))
    if slot.slot_type is not None:
        el.set("slotType", slot.slot_type)
    value_list = etree.SubElement(el, ns.q(ns.RIM, "ValueList"))
    for value in slot.values:
        v = etree.SubElement(value_list, ns.q(ns.RIM, "Value"))
        v.text = _check_length(value, LONG_NAME_MAX, f"value of Slot {slot.name}")
    return el


def parse_international_string(el: Element | None) -> InternationalString | None:
    """``Name`` / ``Description``; absent or without LocalizedString gives None."""
    if el is None:
        return None
    strings = tuple(
        LocalizedString(
            value=ls.get("value", ""),
            lang=ls.get(ns.q(ns.XML, "lang")),
            charset=ls.get("charset"),
        )
        for ls in rim_children(el, "LocalizedString")
    )
    return InternationalString(strings) if strings else None


def render_international_string(parent: Element, local: str, value: InternationalString) -> None:
    el = etree.SubElement(parent, ns.q(ns.RIM, local))
    for ls in value.localized:
        item = etree.SubElement(el, ns.q(ns.RIM, "LocalizedString"))
        if ls.lang is not None:
            item.set(ns.q(ns.XML, "lang"), ls.lang)
        if ls.charset is not None:
            item.set("charset", ls.charset)
        item.set("value", _check_length(ls.value, FREE_FORM_TEXT_MAX, f"{local} text"))
