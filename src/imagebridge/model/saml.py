"""Cross-Enterprise User Assertion [ITI-40], X-Service User and Provider: the SAML 2.0 model.

Frozen dataclasses for the assertion that travels in ``wsse:Security``
(soap-transport.md 6, carequality-qbd.md 10.2) and typed accessors for the XUA
attributes.  Everything the codec reads is kept: simple attribute values as
trimmed text with their ``xsi:type``, HL7 coded values (``Role``,
``PurposeOfUse`` and CONNECT's ``PurposeForUse``) as :class:`CodedValue`, any
other XML value as the raw element.  Raw lxml elements (``source``,
``key_info``, signatures, extension content) never take part in equality.

The accessors are strict where the codec is lenient: an absent or empty
attribute raises :class:`~imagebridge.errors.XuaAttributeMissing`, a malformed
or ambiguous one :class:`~imagebridge.errors.XuaAttributeInvalid`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from lxml import etree

from imagebridge.errors import (
    InvalidSecurityToken,
    InvalidValue,
    QName,
    XuaAttributeInvalid,
    XuaAttributeMissing,
)
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.instant import Instant

Element = etree._Element

HL7_NS: Final = "urn:hl7-org:v3"
XS_NS: Final = "http://www.w3.org/2001/XMLSchema"
XS_STRING: Final = QName(XS_NS, "string")
XS_ANY_URI: Final = QName(XS_NS, "anyURI")

# Attribute names (soap-transport.md 6.3, carequality-qbd.md 10.2), exact strings.
SUBJECT_ID: Final = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ORGANIZATION: Final = "urn:oasis:names:tc:xspa:1.0:subject:organization"
ORGANIZATION_ID: Final = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
HOME_COMMUNITY_ID: Final = "urn:ihe:iti:xca:2010:homeCommunityId"
NHIN_HOME_COMMUNITY_ID: Final = "urn:nhin:names:saml:homeCommunityId"
ROLE: Final = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE: Final = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
NPI: Final = "urn:oasis:names:tc:xspa:1.0:subject:npi"
NPI_XSPA2: Final = "urn:oasis:names:tc:xspa:2.0:subject:npi"
RESOURCE_ID: Final = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
PROVIDER_IDENTIFIER: Final = "urn:ihe:iti:xua:2017:subject:provider-identifier"
BPPC_DOCID: Final = "urn:ihe:iti:bppc:2007:docid"
ACP: Final = "urn:ihe:iti:xua:2012:acp"

NAME_FORMAT_URI: Final = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
NAME_FORMAT_BASIC: Final = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
NAMEID_X509_SUBJECT: Final = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
NAMEID_EMAIL: Final = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
AC_X509: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
BEARER: Final = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
HOLDER_OF_KEY: Final = "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"
SENDER_VOUCHES: Final = "urn:oasis:names:tc:SAML:2.0:cm:sender-vouches"

ROLE_ELEMENTS: Final = frozenset({"Role"})
PURPOSE_ELEMENTS: Final = frozenset({"PurposeOfUse", "PurposeForUse"})


@dataclass(frozen=True, slots=True)
class CodedValue:
    """An HL7 v3 ``CE`` as XUA carries it: role or purpose of use."""

    code: str
    code_system: str | None = None
    code_system_name: str | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        if not self.code.strip():
            raise InvalidValue("coded value has an empty code")


@dataclass(frozen=True, slots=True)
class NameId:
    """SAML ``NameIDType``: the Subject's ``NameID`` or the assertion ``Issuer``."""

    value: str
    format: str | None = None
    name_qualifier: str | None = None
    sp_name_qualifier: str | None = None
    sp_provided_id: str | None = None

    def __post_init__(self) -> None:
        if not self.value.strip():
            raise InvalidValue("NameID/Issuer value is empty")


@dataclass(frozen=True, slots=True)
class SubjectConfirmation:
    """``SubjectConfirmation``: method, optional NameID and SubjectConfirmationData.

    For holder-of-key, ``key_info`` is the raw ``ds:KeyInfo`` element and
    ``certificate`` the base64 of its first ``ds:X509Certificate`` (whitespace
    removed).  On output ``key_info`` wins; a bare ``certificate`` becomes
    ``ds:KeyInfo/ds:X509Data/ds:X509Certificate``.
    """

    method: str
    name_id: NameId | None = None
    not_before: Instant | None = None
    not_on_or_after: Instant | None = None
    recipient: str | None = None
    in_response_to: str | None = None
    address: str | None = None
    certificate: str | None = None
    key_info: Element | None = field(default=None, compare=False, repr=False)
    other_data: tuple[Element, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.method.strip():
            raise InvalidValue("SubjectConfirmation Method is empty")

    @property
    def is_bearer(self) -> bool:
        return self.method == BEARER

    @property
    def is_holder_of_key(self) -> bool:
        return self.method == HOLDER_OF_KEY


@dataclass(frozen=True, slots=True)
class Subject:
    """``Subject``: the original requesting principal (ITI-40 3.40.4.1.2)."""

    name_id: NameId | None
    confirmations: tuple[SubjectConfirmation, ...] = ()


@dataclass(frozen=True, slots=True)
class Conditions:
    """``Conditions``: validity window and audiences (one tuple per AudienceRestriction).

    SAML erratum E46: every AudienceRestriction must be met, and one is met
    when any of its audiences matches.
    """

    not_before: Instant | None = None
    not_on_or_after: Instant | None = None
    audience_restrictions: tuple[tuple[str, ...], ...] = ()
    one_time_use: bool = False
    other: tuple[Element, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if any(not r or not all(a.strip() for a in r) for r in self.audience_restrictions):
            raise InvalidValue("an AudienceRestriction needs at least one non-empty Audience")

    @property
    def audiences(self) -> tuple[str, ...]:
        return tuple(a for r in self.audience_restrictions for a in r)


@dataclass(frozen=True, slots=True)
class AuthnStatement:
    """``AuthnStatement``: when and how the user authenticated."""

    authn_instant: Instant
    context_class_ref: str | None = None
    context_decl_ref: str | None = None
    session_index: str | None = None
    session_not_on_or_after: Instant | None = None
    locality_address: str | None = None
    locality_dns_name: str | None = None
    authenticating_authorities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.context_class_ref or self.context_decl_ref):
            raise InvalidValue("AuthnContext has neither AuthnContextClassRef nor DeclRef")


class ValueKind(Enum):
    """What an ``AttributeValue`` holds."""

    TEXT = "text"
    CODED = "coded"
    XML = "xml"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class AttributeValue:
    """One ``AttributeValue``.

    TEXT: ``text`` trimmed, ``value_type`` the resolved ``xsi:type`` if any.
    CODED: an HL7 element with a ``code`` (``element`` is its name).
    XML: any other element content, kept in ``raw`` (the AttributeValue itself);
    ``element`` names the child when there is exactly one.
    EMPTY: no content (or ``xsi:nil``).
    """

    kind: ValueKind
    text: str = ""
    value_type: QName | None = None
    coded: CodedValue | None = None
    element: QName | None = None
    raw: Element | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        ok = {
            ValueKind.TEXT: bool(self.text),
            ValueKind.CODED: self.coded is not None and self.element is not None,
            ValueKind.XML: self.raw is not None,
            ValueKind.EMPTY: not self.text and self.coded is None,
        }[self.kind]
        if not ok:
            raise InvalidValue(f"AttributeValue of kind {self.kind.value} is inconsistent")

    @classmethod
    def string(cls, text: str, value_type: QName | None = XS_STRING) -> AttributeValue:
        """A simple value (``xs:string`` unless told otherwise)."""
        return cls(ValueKind.TEXT, text=text.strip(), value_type=value_type)

    @classmethod
    def hl7_code(cls, element: str, coded: CodedValue) -> AttributeValue:
        """A coded value written as ``<hl7:{element} xsi:type="hl7:CE" .../>``."""
        return cls(ValueKind.CODED, coded=coded, element=QName(HL7_NS, element))


@dataclass(frozen=True, slots=True)
class Attribute:
    """``Attribute``: a name and its values (repeated values are kept in order)."""

    name: str
    values: tuple[AttributeValue, ...] = ()
    name_format: str | None = None
    friendly_name: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidValue("Attribute Name is empty")


@dataclass(frozen=True, slots=True)
class AttributeStatement:
    """``AttributeStatement``; an assertion may carry several."""

    attributes: tuple[Attribute, ...]

    def __post_init__(self) -> None:
        if not self.attributes:
            raise InvalidValue("an AttributeStatement needs at least one Attribute")


class Decision(Enum):
    """``DecisionType`` of an AuthzDecisionStatement."""

    PERMIT = "Permit"
    DENY = "Deny"
    INDETERMINATE = "Indeterminate"


@dataclass(frozen=True, slots=True)
class AuthzAction:
    """``Action`` of an AuthzDecisionStatement (e.g. ``Execute`` in ``...:rwedc``)."""

    value: str
    namespace: str


@dataclass(frozen=True, slots=True)
class AuthzDecisionStatement:
    """``AuthzDecisionStatement`` (NHIN access-consent policy, CONNECT lineage).

    ``evidence`` holds the Evidence assertions (with the AccessConsentPolicy
    attributes), ``evidence_refs`` the Evidence's AssertionIDRef values.
    """

    resource: str
    decision: Decision
    actions: tuple[AuthzAction, ...]
    evidence: tuple[Assertion, ...] = ()
    evidence_refs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.actions:
            raise InvalidValue("an AuthzDecisionStatement needs at least one Action")


@dataclass(frozen=True, slots=True)
class Assertion:
    """Cross-Enterprise User Assertion [ITI-40], X-Service User: a SAML 2.0 ``Assertion``.

    ``signed`` says whether the parsed element carried a ``ds:Signature``; the
    codec never renders one.  ``source`` is the element it was parsed from,
    kept for the signature verifier (and for forwarding the assertion intact).
    """

    id: str
    issue_instant: Instant
    issuer: NameId
    subject: Subject | None = None
    conditions: Conditions | None = None
    authn_statements: tuple[AuthnStatement, ...] = ()
    attribute_statements: tuple[AttributeStatement, ...] = ()
    authz_decision_statements: tuple[AuthzDecisionStatement, ...] = ()
    version: str = "2.0"
    signed: bool = field(default=False, compare=False)
    advice: Element | None = field(default=None, compare=False, repr=False)
    other_statements: tuple[Element, ...] = field(default=(), compare=False, repr=False)
    source: Element | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.id.strip():
            raise InvalidValue("Assertion ID is empty")
        if self.version != "2.0":
            raise InvalidValue(f"Assertion Version is {self.version[:10]!r}, not 2.0")

    # --- generic attribute access -----------------------------------------------------

    def attributes(self, *names: str) -> tuple[Attribute, ...]:
        """Every Attribute with one of *names*, across all AttributeStatements."""
        return tuple(a for s in self.attribute_statements for a in s.attributes if a.name in names)

    def values(self, *names: str) -> tuple[AttributeValue, ...]:
        """Every AttributeValue of the attributes named *names*, in document order."""
        return tuple(v for a in self.attributes(*names) for v in a.values)

    def text_values(self, *names: str) -> tuple[str, ...]:
        """The simple values of *names*; empty values carry nothing and are skipped.

        Raises :class:`XuaAttributeInvalid` when a value is coded or XML.
        """
        out: list[str] = []
        for v in self.values(*names):
            if v.kind is ValueKind.TEXT:
                out.append(v.text)
            elif v.kind is not ValueKind.EMPTY:
                raise XuaAttributeInvalid(
                    f"XUA attribute {_label(names)} holds an XML element, expected text",
                    names[0],
                )
        return tuple(out)

    # --- XUA attributes (soap-transport.md 6.3) ---------------------------------------

    def subject_id(self) -> str:
        """User's name (plain text; internal runs of whitespace collapse to one space)."""
        return " ".join(self._single_text((SUBJECT_ID,)).split())

    def organization(self) -> str:
        """User's organization name (plain text, whitespace collapsed like subject-id)."""
        return " ".join(self._single_text((ORGANIZATION,)).split())

    def organization_id(self) -> str:
        """Organization id as sent (``urn:oid:<OID>``, a bare OID or a URL)."""
        return self._single_text((ORGANIZATION_ID,))

    def home_community_id(self) -> HomeCommunityId:
        """Initiating community, from the IHE name or the NHIN name (same value if both).

        Strict: a value that is not ``[urn:oid:]<OID>`` (for example Metriport's
        trailing ``}``) raises :class:`XuaAttributeInvalid`; the raw value stays
        readable through :meth:`text_values`.
        """
        text = self._single_text((HOME_COMMUNITY_ID, NHIN_HOME_COMMUNITY_ID))
        try:
            return HomeCommunityId.parse(text)
        except InvalidValue as exc:
            raise XuaAttributeInvalid(
                f"XUA attribute homeCommunityId is not urn:oid:<OID>: {text[:80]!r}",
                HOME_COMMUNITY_ID,
            ) from exc

    def role(self) -> CodedValue:
        """Subject-Role option: exactly one ``hl7:Role`` code."""
        return self._single_code((ROLE,), ROLE_ELEMENTS)

    def purpose_of_use(self) -> CodedValue:
        """Exactly one ``hl7:PurposeOfUse`` (or CONNECT's ``PurposeForUse``) code."""
        return self._single_code((PURPOSE_OF_USE,), PURPOSE_ELEMENTS)

    def npi(self) -> str | None:
        """User's NPI (xspa 1.0 or 2.0 name), or None when absent."""
        return self._single_text((NPI, NPI_XSPA2), required=False) or None

    def resource_id(self) -> PatientId | None:
        """Patient id (CX ``id^^^&OID&ISO``), or None when absent."""
        text = self._single_text((RESOURCE_ID,), required=False)
        if not text:
            return None
        try:
            return PatientId.from_cx(text)
        except InvalidValue as exc:  # the value is PHI: not echoed
            raise XuaAttributeInvalid(
                "XUA attribute resource-id is not a CX patient id", RESOURCE_ID
            ) from exc

    def audit_user_id(self) -> str:
        """The ATNA UserID for this user, ``alias<user@issuer>`` (ITI-40 3.40.4.2)."""
        name_id = self.subject.name_id if self.subject is not None else None
        if name_id is None:
            raise InvalidSecurityToken("the assertion has no Subject NameID")
        alias = (name_id.sp_provided_id or "").strip()
        return f"{alias}<{name_id.value.strip()}@{self.issuer.value.strip()}>"

    def _single_text(self, names: tuple[str, ...], required: bool = True) -> str:
        distinct = list(dict.fromkeys(self.text_values(*names)))
        if not distinct:
            if required:
                raise XuaAttributeMissing(
                    f"XUA attribute {_label(names)} is missing or empty", names[0]
                )
            return ""
        if len(distinct) > 1:
            raise XuaAttributeInvalid(
                f"XUA attribute {_label(names)} has {len(distinct)} values, expected one",
                names[0],
            )
        return distinct[0]

    def _single_code(self, names: tuple[str, ...], elements: frozenset[str]) -> CodedValue:
        found = [v for v in self.values(*names) if v.kind is not ValueKind.EMPTY]
        label = _label(names)
        if not found:
            raise XuaAttributeMissing(f"XUA attribute {label} is missing or empty", names[0])
        if len(found) > 1:
            raise XuaAttributeInvalid(
                f"XUA attribute {label} has {len(found)} values, expected one", names[0]
            )
        value = found[0]
        element = value.element
        if (
            value.coded is None
            or element is None
            or element.namespace != HL7_NS
            or element.local not in elements
        ):
            what = element.clark if element is not None else f"{value.kind.value} content"
            expected = "/".join(f"hl7:{e}" for e in sorted(elements))
            raise XuaAttributeInvalid(
                f"XUA attribute {label} holds {what}, expected an {expected} code", names[0]
            )
        return value.coded


def _label(names: tuple[str, ...]) -> str:
    return names[0].rsplit(":", 1)[-1]
