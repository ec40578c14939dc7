"""``imagebridge selfcheck``: the codec self-check, printed for a person to read.

It walks the whole referral flow on the wire, without a network: an XCPD
query and its match, an ITI-38 FindDocuments for KOS manifests and its
DocumentEntry, an ITI-39 retrieve whose MTOM reply carries a real KOS built
from a synthetic CR study, the KOS parsed into a RAD-75 request, and the
RAD-75 MTOM reply with the two images.  Every message is rendered, packaged,
decoded again with the hardened parsers and compared with what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from imagebridge.dicom.headers import read_instance_header
from imagebridge.dicom.kos import build_kos, manifest_series_uid, manifest_uid
from imagebridge.dicom.manifest import imaging_document_locators, parse_manifest
from imagebridge.dicom.synthetic import DEMO_PATIENTS, make_study
from imagebridge.model.ids import HomeCommunityId, PatientId
from imagebridge.model.outcome import RegistryResponse, Status
from imagebridge.model.retrieve import (
    DocumentRequest,
    DocumentResponse,
    RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse,
    XopInclude,
    imaging_request_for,
)
from imagebridge.model.xcpd import (
    II,
    Acknowledgement,
    AcknowledgementType,
    Device,
    MatchedPatient,
    ParameterList,
    PatientDiscoveryQuery,
    PatientDiscoveryResponse,
    PersonName,
    QueryAck,
    QueryByParameter,
    QueryResponseCode,
    TimeInterval,
)
from imagebridge.model.xds import Code, DocumentEntry
from imagebridge.model.xds_query import AdhocQueryRequest, AdhocQueryResponse, FindDocumentsQuery
from imagebridge.transactions import Transaction, spec_of
from imagebridge.wire.hl7v3.patient_discovery import (
    parse_patient_discovery_query,
    parse_patient_discovery_response,
    render_patient_discovery_query,
    render_patient_discovery_response,
)
from imagebridge.wire.mtom import Attachment, encode_mtom, mtom_content_type, read_mtom
from imagebridge.wire.soap import parse_envelope, render_envelope
from imagebridge.wire.wsa import request_headers, response_headers
from imagebridge.wire.xds import vocabulary as v
from imagebridge.wire.xds.imaging_retrieve import (
    parse_retrieve_imaging_document_set_request,
    render_retrieve_imaging_document_set_request,
)
from imagebridge.wire.xds.query import (
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    render_adhoc_query_request,
    render_adhoc_query_response,
)
from imagebridge.wire.xds.retrieve import (
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
    render_retrieve_document_set_request,
    render_retrieve_document_set_response,
)
from imagebridge.wire.xml import Element, parse_xml, serialize

THEM = HomeCommunityId("1.3.6.1.4.1.21367.13.70.201")
US = HomeCommunityId("1.3.6.1.4.1.21367.13.70.202")
REPOSITORY = "1.3.6.1.4.1.21367.13.71.201.1"
AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
WHEN = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
MID = "urn:uuid:00000000-0000-4000-8000-000000000001"


@dataclass(frozen=True, slots=True)
class Step:
    """One message of the self-check and what became of it."""

    transaction: str
    message: str
    wire_bytes: int
    equal: bool
    note: str


def _soap_round_trip(
    transaction: Transaction, payload: Element, *, response: bool
) -> tuple[bytes, Element]:
    spec = spec_of(transaction)
    request = request_headers(spec, MID, "https://partner.example.org/gateway")
    headers = response_headers(spec, request) if response else request
    data = serialize(render_envelope(headers, payload))
    message = parse_envelope(parse_xml(data))
    if message.payload is None:
        raise RuntimeError("self-check: envelope lost its payload")
    return data, message.payload


def _check(
    transaction: Transaction,
    name: str,
    model: Any,
    render: Callable[[Any], Element],
    parse: Callable[[Element], Any],
    *,
    response: bool,
    note: str = "",
) -> Step:
    data, payload = _soap_round_trip(transaction, render(model), response=response)
    return Step(spec_of(transaction).code, name, len(data), parse(payload) == model, note)


def _mtom_round_trip(
    transaction: Transaction,
    model: RetrieveDocumentSetResponse,
    blobs: dict[str, bytes],
    name: str,
) -> Step:
    """Render as MTOM with real attachments, decode, resolve every xop:Include."""
    spec = spec_of(transaction)
    headers = response_headers(spec, request_headers(spec, MID, "https://x"))
    root = serialize(render_envelope(headers, render_retrieve_document_set_response(model)))
    boundary, root_id = "MIMEBoundary_selfcheck", "root@imagebridge.selfcheck"
    attachments = [Attachment(cid, "application/dicom", [blob]) for cid, blob in blobs.items()]
    body = b"".join(encode_mtom(root, attachments, boundary=boundary, root_content_id=root_id))

    async def read() -> tuple[bool, int]:
        package = await read_mtom(mtom_content_type(boundary, root_id), [body])
        with package:
            payload = parse_envelope(parse_xml(package.root)).payload
            if payload is None:
                return False, 0
            decoded = parse_retrieve_document_set_response(payload)
            same = decoded == model
            for doc in decoded.document_responses:
                if not isinstance(doc.document, XopInclude):
                    return False, 0
                with package.part_for_href(doc.document.href).open() as part:
                    same = same and part.read() == blobs[doc.document.content_id]
            return same, len(package.parts)

    same, parts = asyncio.run(read())
    return Step(spec.code, name, len(body), same, f"MTOM, {parts} attachment(s) matched")


def run_selfcheck(console: Console | None = None) -> int:
    """Run every step, print a table, return the process exit code."""
    out = console or Console()
    started = time.perf_counter()
    steps: list[Step] = []
    patient = DEMO_PATIENTS[0]
    query = PatientDiscoveryQuery(
        message_id=II("2.25.1", "selfcheck-1"),
        creation_time="20260115093000",
        sender=Device(II(US.oid + ".1"), US),
        receiver=Device(II(THEM.oid + ".1"), THEM),
        query_by_parameter=QueryByParameter(
            query_id=II("2.25.1", "selfcheck-q"),
            parameters=ParameterList(
                living_subject_administrative_gender=patient.sex,
                living_subject_birth_time=TimeInterval(patient.birth_date),
                living_subject_names=(PersonName(given=("ALICE",), family=("DEMO",)),),
            ),
        ),
    )
    steps.append(
        _check(
            Transaction.ITI_55,
            "PRPA_IN201305UV02 query",
            query,
            render_patient_discovery_query,
            parse_patient_discovery_query,
            response=False,
        )
    )
    remote_id = PatientId(patient.id, AUTHORITY)
    match = PatientDiscoveryResponse(
        message_id=II("2.25.2", "selfcheck-2"),
        creation_time="20260115093001",
        sender=query.receiver,
        receiver=query.sender,
        acknowledgement=Acknowledgement(AcknowledgementType.AA, query.message_id),
        query_ack=QueryAck(
            QueryResponseCode.OK, query.query_by_parameter.query_id, "deliveredResponse"
        ),
        patients=(
            MatchedPatient(
                patient_id=remote_id,
                home_community_id=THEM,
                names=(PersonName(given=("ALICE",), family=("DEMO",)),),
                administrative_gender=patient.sex,
                birth_time=patient.birth_date,
            ),
        ),
        query_by_parameter=query.query_by_parameter,
    )
    steps.append(
        _check(
            Transaction.ITI_55,
            "PRPA_IN201306UV02 match (OK)",
            match,
            render_patient_discovery_response,
            parse_patient_discovery_response,
            response=True,
            note="patient found, id + homeCommunityId returned",
        )
    )
    find = AdhocQueryRequest(
        query=FindDocumentsQuery(
            patient_id=remote_id,
            status=(v.STATUS_APPROVED,),
            format_code=(Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME),),
        ),
        home_community_id=THEM,
    )
    steps.append(
        _check(
            Transaction.ITI_38,
            "FindDocuments (KOS formatCode)",
            find,
            render_adhoc_query_request,
            parse_adhoc_query_request,
            response=False,
        )
    )
    with tempfile.TemporaryDirectory(prefix="imagebridge-selfcheck-") as tmp:
        study = make_study(patient, Path(tmp), modality="CR", seed=7)
        headers = [read_instance_header(f) for f in study.files]
        kos = build_kos(
            headers,
            sop_instance_uid=manifest_uid(study.study_instance_uid, headers),
            series_instance_uid=manifest_series_uid(study.study_instance_uid, headers),
            retrieve_location_uid=REPOSITORY,
            retrieve_ae_title="IMAGEBRIDGE",
            content_datetime=WHEN,
            manufacturer="imagebridge",
        )
        manifest = parse_manifest(kos)
        entry = DocumentEntry(
            entry_uuid="urn:uuid:6b1d3c5e-2a3f-4e0b-9c7d-1f2e3d4c5b6a",
            unique_id=manifest.sop_instance_uid,
            mime_type=v.MIME_DICOM,
            patient_id=remote_id,
            home=THEM,
            format_code=Code(v.KOS_FORMAT_CODE, v.KOS_FORMAT_CODE_SCHEME),
        )
        listing = AdhocQueryResponse(status=Status.SUCCESS, registry_objects=(entry,))
        steps.append(
            _check(
                Transaction.ITI_38,
                "AdhocQueryResponse, 1 KOS entry",
                listing,
                render_adhoc_query_response,
                parse_adhoc_query_response,
                response=True,
            )
        )
        fetch = RetrieveDocumentSetRequest(
            (DocumentRequest(REPOSITORY, manifest.sop_instance_uid, THEM),)
        )
        steps.append(
            _check(
                Transaction.ITI_39,
                "RetrieveDocumentSetRequest (KOS)",
                fetch,
                render_retrieve_document_set_request,
                parse_retrieve_document_set_request,
                response=False,
            )
        )
        kos_reply = RetrieveDocumentSetResponse(
            RegistryResponse(Status.SUCCESS),
            (
                DocumentResponse(
                    REPOSITORY,
                    manifest.sop_instance_uid,
                    v.MIME_DICOM,
                    XopInclude.for_content_id("kos@selfcheck"),
                    home_community_id=THEM,
                ),
            ),
        )
        steps.append(
            _mtom_round_trip(Transaction.ITI_39, kos_reply, {"kos@selfcheck": kos}, "KOS reply")
        )
        locators = imaging_document_locators(parse_manifest(kos))
        rad75 = imaging_request_for(locators, THEM, ("1.2.840.10008.1.2.1",))
        steps.append(
            _check(
                Transaction.RAD_75,
                f"RetrieveImagingDocumentSetRequest, {len(locators)} instances from the KOS",
                rad75,
                render_retrieve_imaging_document_set_request,
                parse_retrieve_imaging_document_set_request,
                response=False,
            )
        )
        blobs = {f"img{i}@selfcheck": f.read_bytes() for i, f in enumerate(study.files)}
        images = RetrieveDocumentSetResponse(
            RegistryResponse(Status.SUCCESS),
            tuple(
                DocumentResponse(
                    REPOSITORY,
                    h.sop_instance_uid,
                    v.MIME_DICOM,
                    XopInclude.for_content_id(cid),
                    home_community_id=THEM,
                )
                for h, cid in zip(headers, blobs, strict=True)
            ),
        )
        steps.append(_mtom_round_trip(Transaction.RAD_75, images, blobs, "images reply"))
        digest = hashlib.sha256(kos).hexdigest()[:12]
    _print(out, steps, time.perf_counter() - started, len(kos), digest)
    return 0 if all(s.equal for s in steps) else 1


def _print(out: Console, steps: list[Step], seconds: float, kos_size: int, digest: str) -> None:
    table = Table(title="imagebridge codec self-check: one referral, on the wire and back")
    for column in ("transaction", "message", "bytes on the wire", "decoded = sent", "note"):
        table.add_column(column)
    for s in steps:
        table.add_row(
            s.transaction,
            s.message,
            f"{s.wire_bytes:,}",
            "[green]yes[/green]" if s.equal else "[red]NO[/red]",
            s.note,
        )
    out.print(table)
    out.print(
        f"KOS manifest: {kos_size:,} bytes, sha256 {digest}…; "
        f"{len(steps)} messages in {seconds:.2f} s"
    )
    ok = all(s.equal for s in steps)
    out.print(
        "[green]all messages survived the round trip[/green]" if ok else "[red]mismatch[/red]"
    )


__all__ = ["run_selfcheck"]
