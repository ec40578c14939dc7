"""Cross-Enterprise User Assertion [ITI-40]: the WS-Security header model.

The ``wsse:Security`` header block that carries the SAML assertion
(soap-transport.md 6.1): its ``wsu:Timestamp``, the assertion, and the raw
``ds:Signature`` and other children, kept for the signature verifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imagebridge.model.instant import Instant
from imagebridge.model.saml import Assertion, Element


@dataclass(frozen=True, slots=True)
class Timestamp:
    """WS-Security ``wsu:Timestamp`` (Created/Expires, optional ``wsu:Id``)."""

    created: Instant | None = None
    expires: Instant | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityHeader:
    """Cross-Enterprise User Assertion [ITI-40]: the ``wsse:Security`` header block.

    ``signatures`` are the raw ``ds:Signature`` children (the holder-of-key
    proof over the Timestamp), ``other`` any further children (for example
    ``wsse11:SignatureConfirmation``); ``source`` is the parsed element.
    """

    timestamp: Timestamp | None = None
    assertion: Assertion | None = None
    signatures: tuple[Element, ...] = field(default=(), compare=False, repr=False)
    other: tuple[Element, ...] = field(default=(), compare=False, repr=False)
    source: Element | None = field(default=None, compare=False, repr=False)
