"""HL7 v3 codecs: Cross Gateway Patient Discovery [ITI-55] (PRPA_IN201305UV02/PRPA_IN201306UV02)."""

from __future__ import annotations

from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    parse_patient_discovery_query_header,
    parse_patient_discovery_response,
    render_patient_discovery_query,
    render_patient_discovery_response,
)

__all__ = [
    "parse_patient_discovery_query",
    "parse_patient_discovery_query_header",
    "parse_patient_discovery_response",
    "render_patient_discovery_query",
    "render_patient_discovery_response",
]
