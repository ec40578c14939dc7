"""Trust: TLS contexts for partners and our server; later SAML (XUA) and ATNA audit."""
