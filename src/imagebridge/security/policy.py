"""Access policy of a Responding Gateway: purpose of use per endpoint and consent (guide 3.1, 4.4).

Pure: a verified caller and a transaction in, a decision out.  A refusal is a
business answer (carequality-qbd.md 17, R7/R8), never a SOAP fault: the
responder turns it into a ``Failure`` RegistryResponse (XCA) or an HL7 ``AE``
with ``AnswerNotAvailable`` (XCPD).  The Responding Imaging Gateway enforces
no access control (guide 8.4.1: possession of the KOS is the authorization),
so RAD-75 is not in :attr:`AccessPolicy.enforced` by default.

Consent (guide 4.4): a request without an indication of a signed consent is
answered by :attr:`AccessPolicy.without_consent` (release, refuse, or ask for
additional documentation); one that names consent policies none of which is
accepted here is answered by :attr:`AccessPolicy.unrecognised_consent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from imagebridge.model.caller import VerifiedCaller
from imagebridge.transactions import Transaction

NHIN_PURPOSE_SYSTEM: Final = "2.16.840.1.113883.3.18.7.1"
"""Code system of the NHIN PurposeOfUse codes (carequality-qbd.md 9)."""

CAREQUALITY_PURPOSES: Final = frozenset(
    {"TREATMENT", "PAYMENT", "OPERATIONS", "PUBLICHEALTH", "REQUEST", "COVERAGE"}
)
"""The Carequality permitted purposes as NHIN PurposeOfUse codes (carequality-qbd.md 9)."""

PURPOSE_DISPLAY: Final = {
    "TREATMENT": "Treatment",
    "PAYMENT": "Payment",
    "OPERATIONS": "Health Care Operations",
    "PUBLICHEALTH": "Public Health Activities",
    "REQUEST": "Patient Request",
    "COVERAGE": "Coverage Determination",
}


class ConsentAction(Enum):
    """What to do with a request, as far as consent goes."""

    RELEASE = "release"
    REFUSE = "refuse"
    MORE_DOCUMENTATION = "more-documentation"


class RefusalKind(Enum):
    """Access denied (R7) or additional permission needed (R8)."""

    ACCESS_DENIED = "access denied"
    MORE_DOCUMENTATION = "additional documentation needed"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not answered; ``reason`` is safe for the wire (no PHI)."""

    kind: RefusalKind
    reason: str

    @property
    def code_context(self) -> str:
        """The RegistryError codeContext: kind first, then the reason."""
        return f"{self.kind.value.capitalize()}: {self.reason}"


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Purpose of use honoured per transaction (endpoint) and the consent policy.

    ``purposes`` overrides ``default_purposes`` for the transactions it names;
    codes compare case-insensitively.  ``enforced`` lists the transactions
    the policy applies to.
    """

    default_purposes: frozenset[str] = CAREQUALITY_PURPOSES
    purposes: Mapping[Transaction, frozenset[str]] = field(default_factory=dict)
    without_consent: ConsentAction = ConsentAction.RELEASE
    unrecognised_consent: ConsentAction = ConsentAction.REFUSE
    accepted_consent_policies: frozenset[str] = frozenset()
    enforced: frozenset[Transaction] = frozenset(
        {Transaction.ITI_55, Transaction.ITI_38, Transaction.ITI_39}
    )

    def honoured(self, transaction: Transaction) -> frozenset[str]:
        """The purpose-of-use codes honoured for *transaction* (upper case)."""
        chosen = self.purposes.get(transaction, self.default_purposes)
        return frozenset(p.strip().upper() for p in chosen)

    def decide(self, transaction: Transaction, caller: VerifiedCaller | None) -> Refusal | None:
        """None to answer the request, or the :class:`Refusal` to send instead.

        A request without a verified caller (verification off, or an optional
        assertion absent) has nothing to decide on and is answered.
        """
        if caller is None or transaction not in self.enforced:
            return None
        refusal = self._purpose(transaction, caller)
        if refusal is not None:
            return refusal
        return self._consent(caller)

    def _purpose(self, transaction: Transaction, caller: VerifiedCaller) -> Refusal | None:
        purpose = caller.purpose_of_use
        if purpose is None:
            return Refusal(RefusalKind.ACCESS_DENIED, "no purpose of use was asserted")
        code = purpose.code.strip().upper()
        system = (purpose.code_system or "").strip()
        if system and system.removeprefix("urn:oid:") != NHIN_PURPOSE_SYSTEM:
            return Refusal(
                RefusalKind.ACCESS_DENIED,
                f"purpose of use code system {system[:64]} is not {NHIN_PURPOSE_SYSTEM}",
            )
        if code not in CAREQUALITY_PURPOSES:
            return Refusal(
                RefusalKind.ACCESS_DENIED,
                f"purpose of use {code[:32]} is not a Carequality permitted purpose",
            )
        if code not in self.honoured(transaction):
            return Refusal(
                RefusalKind.ACCESS_DENIED,
                f"purpose of use {code} is not honoured for {transaction.value} here",
            )
        return None

    def _consent(self, caller: VerifiedCaller) -> Refusal | None:
        consent = caller.consent
        if not consent.present:
            return _refusal(self.without_consent, "no signed patient consent was indicated")
        accepted = {p.strip() for p in self.accepted_consent_policies}
        if any(p.strip() in accepted for p in consent.policies):
            return None
        if not consent.policies and consent.signed_consent and not accepted:
            return None  # a consent document and no policy list to check it against
        return _refusal(
            self.unrecognised_consent, "the indicated consent policy is not accepted here"
        )


def _refusal(action: ConsentAction, reason: str) -> Refusal | None:
    if action is ConsentAction.RELEASE:
        return None
    if action is ConsentAction.REFUSE:
        return Refusal(RefusalKind.ACCESS_DENIED, reason)
    return Refusal(RefusalKind.MORE_DOCUMENTATION, reason)
