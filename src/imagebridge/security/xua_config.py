"""``[xua]`` configuration: the assertion we issue and what we accept (ITI-40, guide 3.1/4.4).

::

    [xua.issuer]                      # initiating side
    private_key = "keys/xua.key"      # PEM, RSA
    certificate = "keys/xua.pem"      # PEM chain, leaf first
    organization = "Example Imaging"
    organization_id = "urn:oid:1.2.3.4"
    subject_id = "Example Imaging System User"   # automated jobs
    role_code = "106331006"
    role_display = "Administrative AND/OR managerial worker"
    purpose_of_use = "TREATMENT"
    lifetime = 300
    [xua.issuer.partners."1.2.840.114350"]      # per partner (HCID)
    signature_algorithm = "rsa-sha1"

    [xua.verifier]                    # responding side
    trusted_ca = ["trust/carequality.pem"]
    trusted_certificates = []
    audiences = ["https://gw.example.org/xca/query"]
    clock_skew = 300
    allow_bearer = false
    without_consent = "release"       # release | refuse | more-documentation
    unrecognised_consent = "refuse"
    accepted_consent_policies = []
    [xua.verifier.purposes]           # per transaction; absent: every Carequality purpose
    "ITI-38" = ["TREATMENT", "PAYMENT", "OPERATIONS", "REQUEST"]

Relative paths are relative to the configuration file.  :func:`xua_config`
parses the table; :func:`build_issuer`, :func:`build_verifier` and
:func:`build_access_policy` make the runtime objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebridge.errors import ConfigError, ImageBridgeError
from imagebridge.model.ids import HomeCommunityId
from imagebridge.security.policy import (
    CAREQUALITY_PURPOSES,
    PURPOSE_DISPLAY,
    AccessPolicy,
    ConsentAction,
)
from imagebridge.security.saml_issuer import (
    ALGORITHMS,
    RSA_SHA256,
    AssertionIssuer,
    IssuerSettings,
    PartnerSamlProfile,
    Principal,
    SecurityHeaders,
    SigningKey,
    purpose_code,
    role_code,
)
from imagebridge.security.saml_verifier import (
    REQUIRED_ATTRIBUTES,
    AssertionVerifier,
    VerifierSettings,
)
from imagebridge.security.xml_signature import TrustStore
from imagebridge.transactions import Transaction


@dataclass(frozen=True, slots=True)
class XuaIssuerConfig:
    """``[xua.issuer]``: our signing key and the system user of automated jobs."""

    private_key: Path
    certificate: Path
    organization: str
    organization_id: str
    subject_id: str
    role_code: str = "106331006"
    role_display: str = "Administrative AND/OR managerial worker"
    purpose_of_use: str = "TREATMENT"
    issuer_name: str | None = None
    npi: str | None = None
    lifetime: float = 300.0
    signature_algorithm: str = RSA_SHA256
    partners: Mapping[HomeCommunityId, PartnerSamlProfile] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class XuaVerifierConfig:
    """``[xua.verifier]``: trusted issuers, windows, required attributes, access policy."""

    trusted_ca: tuple[Path, ...] = ()
    trusted_certificates: tuple[Path, ...] = ()
    audiences: tuple[str, ...] = ()
    clock_skew: float = 300.0
    required_attributes: tuple[str, ...] = tuple(sorted(REQUIRED_ATTRIBUTES))
    accept_sha1: bool = True
    allow_bearer: bool = False
    max_header_bytes: int = 64 * 1024
    replay_cache_size: int = 100_000
    purposes: Mapping[Transaction, frozenset[str]] = field(default_factory=dict)
    without_consent: ConsentAction = ConsentAction.RELEASE
    unrecognised_consent: ConsentAction = ConsentAction.REFUSE
    accepted_consent_policies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class XuaConfig:
    """``[xua]``: either side may be absent (no assertion sent / none verified)."""

    issuer: XuaIssuerConfig | None = None
    verifier: XuaVerifierConfig | None = None


def xua_config(raw: Mapping[str, Any], base_dir: Path | None = None) -> XuaConfig:
    """Parse the ``[xua]`` table (already read from TOML); :class:`ConfigError` if unusable."""
    unknown = set(raw) - {"issuer", "verifier"}
    if unknown:
        raise ConfigError(f"unknown key(s) in [xua]: {', '.join(sorted(unknown))}")
    issuer = raw.get("issuer")
    verifier = raw.get("verifier")
    return XuaConfig(
        issuer=_issuer(_table("xua.issuer", issuer), base_dir) if issuer is not None else None,
        verifier=_verifier(_table("xua.verifier", verifier), base_dir)
        if verifier is not None
        else None,
    )


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table")
    return dict(value)


def _path(value: Any, base_dir: Path | None, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path")
    path = Path(value)
    return path if path.is_absolute() or base_dir is None else (base_dir / path).resolve()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")


def _issuer(t: dict[str, Any], base_dir: Path | None) -> XuaIssuerConfig:
    where = "xua.issuer"
    _check_keys(where, t, set(XuaIssuerConfig.__dataclass_fields__))
    for key in ("private_key", "certificate", "organization", "organization_id", "subject_id"):
        if key not in t:
            raise ConfigError(f"[{where}] needs {key}")
    partners: dict[HomeCommunityId, PartnerSamlProfile] = {}
    for hcid, profile in _table(f"{where}.partners", t.pop("partners", {})).items():
        p = _table(f"{where}.partners.{hcid}", profile)
        _check_keys(f"{where}.partners.{hcid}", p, set(PartnerSamlProfile.__dataclass_fields__))
        try:
            if "home_community_id" in p:
                p["home_community_id"] = HomeCommunityId.parse(str(p["home_community_id"]))
            partners[HomeCommunityId.parse(hcid)] = PartnerSamlProfile(**p)
        except (ImageBridgeError, TypeError) as exc:
            raise ConfigError(f"[{where}.partners.{hcid}] {exc}") from exc
    if t.get("signature_algorithm", RSA_SHA256) not in ALGORITHMS:
        raise ConfigError(f"{where}.signature_algorithm must be one of {', '.join(ALGORITHMS)}")
    purpose = str(t.get("purpose_of_use", "TREATMENT")).upper()
    if purpose not in CAREQUALITY_PURPOSES:
        raise ConfigError(f"{where}.purpose_of_use {purpose!r} is not a Carequality purpose")
    try:
        return XuaIssuerConfig(
            private_key=_path(t.pop("private_key"), base_dir, f"{where}.private_key"),
            certificate=_path(t.pop("certificate"), base_dir, f"{where}.certificate"),
            lifetime=float(t.pop("lifetime", 300.0)),
            partners=partners,
            **{k: str(v) for k, v in t.items()},
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def _verifier(t: dict[str, Any], base_dir: Path | None) -> XuaVerifierConfig:
    where = "xua.verifier"
    _check_keys(where, t, set(XuaVerifierConfig.__dataclass_fields__))
    purposes: dict[Transaction, frozenset[str]] = {}
    for name, codes in _table(f"{where}.purposes", t.pop("purposes", {})).items():
        try:
            transaction = Transaction(name)
        except ValueError as exc:
            raise ConfigError(f"{where}.purposes: unknown transaction {name!r}") from exc
        chosen = frozenset(c.upper() for c in _strings(codes, f"{where}.purposes.{name}"))
        if chosen - CAREQUALITY_PURPOSES:
            bad = ", ".join(sorted(chosen - CAREQUALITY_PURPOSES))
            raise ConfigError(f"{where}.purposes.{name}: not Carequality purposes: {bad}")
        purposes[transaction] = chosen
    try:
        return XuaVerifierConfig(
            trusted_ca=tuple(
                _path(p, base_dir, f"{where}.trusted_ca")
                for p in _strings(t.pop("trusted_ca", []), f"{where}.trusted_ca")
            ),
            trusted_certificates=tuple(
                _path(p, base_dir, f"{where}.trusted_certificates")
                for p in _strings(t.pop("trusted_certificates", []), where)
            ),
            audiences=_strings(t.pop("audiences", []), f"{where}.audiences"),
            required_attributes=_strings(
                t.pop("required_attributes", sorted(REQUIRED_ATTRIBUTES)), where
            ),
            accepted_consent_policies=_strings(t.pop("accepted_consent_policies", []), where),
            without_consent=ConsentAction(t.pop("without_consent", "release")),
            unrecognised_consent=ConsentAction(t.pop("unrecognised_consent", "refuse")),
            purposes=purposes,
            **t,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def build_issuer(config: XuaIssuerConfig, home: HomeCommunityId) -> AssertionIssuer:
    """The issuer for our community *home* (reads the key files)."""
    return AssertionIssuer(
        SigningKey.load(config.private_key, config.certificate),
        IssuerSettings(
            home_community_id=home,
            issuer_name=config.issuer_name,
            lifetime=config.lifetime,
            partners=dict(config.partners),
            default_profile=PartnerSamlProfile(signature_algorithm=config.signature_algorithm),
        ),
    )


def system_principal(config: XuaIssuerConfig) -> Principal:
    """The system user of automated jobs (CLI fetch, import jobs)."""
    purpose = config.purpose_of_use.upper()
    return Principal(
        subject_id=config.subject_id,
        organization=config.organization,
        organization_id=config.organization_id,
        role=role_code(config.role_code, config.role_display),
        purpose_of_use=purpose_code(purpose, PURPOSE_DISPLAY.get(purpose)),
        npi=config.npi,
    )


def build_verifier(config: XuaVerifierConfig) -> AssertionVerifier:
    """The verifier (reads the trust files)."""
    try:
        settings = VerifierSettings(
            audiences=frozenset(config.audiences),
            clock_skew=config.clock_skew,
            required_attributes=frozenset(config.required_attributes),
            accept_sha1=config.accept_sha1,
            allow_bearer=config.allow_bearer,
            max_header_bytes=config.max_header_bytes,
            replay_cache_size=config.replay_cache_size,
        )
    except ValueError as exc:
        raise ConfigError(f"[xua.verifier] {exc}") from exc
    return AssertionVerifier(
        TrustStore.load(config.trusted_ca, config.trusted_certificates), settings
    )


def build_access_policy(config: XuaVerifierConfig) -> AccessPolicy:
    """The purpose-of-use and consent policy of the responders."""
    return AccessPolicy(
        purposes=dict(config.purposes),
        without_consent=config.without_consent,
        unrecognised_consent=config.unrecognised_consent,
        accepted_consent_policies=frozenset(config.accepted_consent_policies),
    )


def partner_security(
    config: XuaConfig, home: HomeCommunityId, principal: Callable[[], Principal] | None = None
) -> SecurityHeaders | None:
    """The ``security`` of :class:`PartnerClients`: assertions as *principal* (default: the
    configured system user), or None when no ``[xua.issuer]`` is configured."""
    if config.issuer is None:
        return None
    issuer = build_issuer(config.issuer, home)
    return issuer.headers(principal or system_principal(config.issuer))
