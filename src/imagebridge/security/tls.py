"""TLS contexts for talking to partner communities (client side).

Peers are always verified: a community without its own CA bundle is checked
against the system trust store, hostname included.  A client certificate is
presented when the community's settings name one (mutual TLS).
"""

from __future__ import annotations

import ssl

from imagebridge.errors import ConfigError
from imagebridge.model.directory import TlsSettings


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying TLS client context for *tls* (TLS 1.2 or newer)."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_bundle) if tls.ca_bundle is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.client_certificate is not None:
            context.load_cert_chain(
                str(tls.client_certificate),
                str(tls.client_key) if tls.client_key is not None else None,
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS material for a partner could not be loaded: {exc}") from exc
    return context
