"""Cross-Enterprise User Assertion [ITI-40], X-Service Provider: who a verified request comes from.

The result of verifying a request's ``wsse:Security`` header
(:mod:`imagebridge.security.saml_verifier`): the requesting user and
organization read from a signed, trusted, current SAML assertion, the
purpose of use, and the consent evidence it carried (carequality-qbd.md 3,
both carriers).  Handlers and the access policy read it from
``SoapRequest.caller``; it holds no raw XML.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.saml import CodedValue


@dataclass(frozen=True, slots=True)
class ConsentEvidence:
    """Access-policy assertions about consent (carequality-qbd.md 3, guide 4.4).

    IHE XUA attributes: ``acp`` (``urn:ihe:iti:xua:2012:acp``, policy ids) and
    ``bppc_doc_ids`` (``urn:ihe:iti:bppc:2007:docid``, the signed consent
    document).  NHIN AF style: an ``AuthzDecisionStatement`` whose Evidence
    assertion carries ``AccessConsentPolicy`` (``nhin_access_policies``) and
    ``InstanceAccessConsentPolicy`` (``nhin_instance_policies``);
    ``decisions`` are the statements' Decision values (``Permit``...).
    """

    acp: tuple[str, ...] = ()
    bppc_doc_ids: tuple[str, ...] = ()
    nhin_access_policies: tuple[str, ...] = ()
    nhin_instance_policies: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        """True when either carrier indicates a consent or policy."""
        return bool(
            self.acp
            or self.bppc_doc_ids
            or self.nhin_access_policies
            or self.nhin_instance_policies
        )

    @property
    def policies(self) -> tuple[str, ...]:
        """Every policy id named, from both carriers, in order, without repeats."""
        return tuple(dict.fromkeys((*self.acp, *self.nhin_access_policies)))

    @property
    def signed_consent(self) -> bool:
        """True when a signed consent document (an IACP instance) is indicated."""
        return bool(self.bppc_doc_ids or self.nhin_instance_policies)


@dataclass(frozen=True, slots=True)
class VerifiedCaller:
    """Cross-Enterprise User Assertion [ITI-40], X-Service Provider: the verified requester.

    ``audit_user_id`` is ``alias<user@issuer>`` (ITI-40 3.40.4.2).  Fields
    other than the required XUA attributes are None when absent.
    """

    assertion_id: str
    issuer: str
    audit_user_id: str
    subject_id: str | None = None
    organization: str | None = None
    organization_id: str | None = None
    home_community_id: HomeCommunityId | None = None
    role: CodedValue | None = None
    purpose_of_use: CodedValue | None = None
    npi: str | None = None
    resource_id: PatientId | None = None
    consent: ConsentEvidence = ConsentEvidence()
