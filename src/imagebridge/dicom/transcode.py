"""Imaging Document Source, transfer syntax negotiation and transcoding [RAD-69] [RAD-75].

:func:`choose_representation` is pure: from the transfer syntaxes in which an
instance is stored and the requested TransferSyntaxUIDList (order = preference)
it decides one :data:`Choice`:

* :class:`SendStored`: the first requested syntax that is stored, sent byte for byte;
* :class:`Transcode`: decode a stored representation to uncompressed Explicit VR
  Little Endian (preferred whenever requested) or Implicit VR Little Endian;
  the source is the most faithful decodable one (native, then lossless, then
  possibly lossy; stored order breaks ties);
* :class:`FetchAndDecide`: a representation of unknown syntax (``""``: an
  archive that does not say) may be the answer; fetch it, read its syntax (e.g.
  :func:`~imagebridge.dicom.headers.parse_instance_header`) and call
  :func:`decide_after_fetch`;
* :class:`Impossible`: nothing requested can be produced; the caller answers
  that instance with ``XDSRepositoryError`` and :attr:`Impossible.code_context`
  (spec digest 3.1, as NIST's Imaging Document Source simulator does).

:func:`transcode` writes a Part-10 object in Explicit or Implicit VR Little
Endian, decoding compressed pixel data with pydicom 3's pluggable decoders
(pylibjpeg with libjpeg, openjpeg and rle).  One instance is held in memory
at a time.  The SOP Instance UID and every attribute other than the pixel
data and the Image Pixel attributes the decoder must change (Photometric
Interpretation of YCbCr sources, Planar Configuration) are kept.

Decisions: Deflated Explicit VR Little Endian is read (lossless, no plugin)
but never produced; Explicit VR Big Endian (retired) is neither read for
transcoding nor produced, although a stored Big Endian copy is still sent
unchanged when it is requested.  Lossy Image Compression (0028,2110) is never
reset once "01" (PS3.3 C.7.6.1.1.5) and is set to "01" when a JPEG baseline or
extended source (always lossy) lacks it or says "00".
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import decompress
from pydicom.uid import UID

from imagebridge.dicom.kos import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from imagebridge.errors import (
    DecoderUnavailable,
    PixelDataCorrupt,
    TranscodeError,
    TranscodeNotDicom,
    TransferSyntaxUnsupported,
)

logger = logging.getLogger(__name__)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
TRANSFER_SYNTAX_ERROR_CODE = "XDSRepositoryError"

TRANSCODE_TARGETS = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
"""What :func:`transcode` produces, in preference order (Explicit carries the VRs)."""

_NATIVE = frozenset(TRANSCODE_TARGETS)
_LOSSLESS = frozenset(
    {
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless Only
        "1.2.840.10008.1.2.4.202",  # HTJ2K RPCL Lossless Only
    }
)
_ALWAYS_LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})  # JPEG DCT
_MAYBE_LOSSY = _ALWAYS_LOSSY | {
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.203",  # HTJ2K
}

SUPPORTED_SOURCES = _NATIVE | _LOSSLESS | _MAYBE_LOSSY
"""Stored syntaxes :func:`transcode` can decode when the decoders in pyproject are installed."""

_NOT_ENCAPSULATED = _NATIVE | {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_NIST_TEXT = "cannot encode the pixel data using any of the requested transfer syntaxes"


# --- the choice (pure) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendStored:
    """Send the stored representation in *transfer_syntax* unchanged."""

    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class Transcode:
    """Decode the stored representation *source* and send it as uncompressed *target*."""

    source: str
    target: str

    def __post_init__(self) -> None:
        if self.target not in TRANSCODE_TARGETS:
            raise ValueError(f"transcoding produces only {TRANSCODE_TARGETS}, not {self.target!r}")
        if not self.source:
            raise ValueError("a transcode needs a known source transfer syntax")


@dataclass(frozen=True, slots=True)
class FetchAndDecide:
    """An unreported representation may serve: fetch it, then :func:`decide_after_fetch`."""

    requested: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Impossible:
    """No requested syntax can be produced: an error for this instance (RAD69-005)."""

    code_context: str
    error_code: str = TRANSFER_SYNTAX_ERROR_CODE


Choice = SendStored | Transcode | FetchAndDecide | Impossible


def choose_representation(
    stored: Sequence[str],
    requested: Sequence[str],
    *,
    decodable: Collection[str] = SUPPORTED_SOURCES,
    sop_instance_uid: str = "",
) -> Choice:
    """Imaging Document Source, transfer syntax negotiation: what to send for one instance.

    *stored*: the syntaxes of the instance's stored representations (``""`` =
    not reported).  *requested*: the TransferSyntaxUIDList, most preferred
    first.  *decodable*: source syntaxes decodable here; the composition root
    passes :func:`installed_decoders` (the default assumes every plugin of
    pyproject is installed).  *sop_instance_uid* only prefixes the error text.
    """
    wanted = [ts for ts in dict.fromkeys(requested) if ts]
    known = [ts for ts in dict.fromkeys(stored) if ts]
    unknown = len(known) < len(stored)
    if not wanted:
        return _impossible(sop_instance_uid, "no transfer syntax was requested")
    if not stored:
        return _impossible(sop_instance_uid, "the archive holds no representation of it")
    for ts in wanted:
        if ts in known:
            return SendStored(ts)
    target = next((ts for ts in TRANSCODE_TARGETS if ts in wanted), None)
    sources = sorted((ts for ts in known if ts in decodable), key=_fidelity)
    if target is not None and sources and sources[0] not in _MAYBE_LOSSY:
        return Transcode(sources[0], target)
    if unknown:  # the unreported copy may be requested as is, or the lossless original
        return FetchAndDecide(tuple(requested))
    if target is not None and sources:
        return Transcode(sources[0], target)
    listed = ", ".join(requested) or "none"
    held = ", ".join(known)
    if target is None:
        reason = (
            f"requested {listed}, stored {held}; transcoding produces only Explicit VR "
            f"Little Endian {EXPLICIT_VR_LITTLE_ENDIAN} or Implicit VR Little Endian "
            f"{IMPLICIT_VR_LITTLE_ENDIAN}, and neither was requested"
        )
    else:
        reason = f"requested {listed}; no decoder here for any stored syntax ({held})"
        if EXPLICIT_VR_BIG_ENDIAN in known:
            reason += "; retired Explicit VR Big Endian is not converted"
    return _impossible(sop_instance_uid, reason)


def decide_after_fetch(
    actual: str,
    requested: Sequence[str],
    *,
    decodable: Collection[str] = SUPPORTED_SOURCES,
    sop_instance_uid: str = "",
) -> SendStored | Transcode | Impossible:
    """Imaging Document Source: the second half of :class:`FetchAndDecide`.

    *actual* is the Transfer Syntax UID (0002,0010) read from the fetched bytes.
    """
    if not actual:
        return _impossible(sop_instance_uid, "the fetched object states no transfer syntax")
    choice = choose_representation(
        (actual,), requested, decodable=decodable, sop_instance_uid=sop_instance_uid
    )
    if isinstance(choice, FetchAndDecide):  # not reachable: *actual* is known
        return _impossible(sop_instance_uid, "the fetched object's syntax is unknown")
    return choice


def installed_decoders(syntaxes: Collection[str] = SUPPORTED_SOURCES) -> frozenset[str]:
    """Imaging Document Source: the syntaxes among *syntaxes* whose decoder is installed now."""
    found = set()
    for ts in syntaxes:
        if ts == EXPLICIT_VR_BIG_ENDIAN:
            continue  # pydicom reads it, but transcode() refuses it
        if ts in _NOT_ENCAPSULATED:
            found.add(ts)
            continue
        try:
            available = get_decoder(UID(ts)).is_available
        except NotImplementedError:
            available = False
        if available:
            found.add(ts)
    return frozenset(found)


def _fidelity(ts: str) -> int:
    return 0 if ts in _NATIVE else 1 if ts in _LOSSLESS else 2


def _impossible(sop_instance_uid: str, reason: str) -> Impossible:
    subject = f"SOP Instance {sop_instance_uid}: " if sop_instance_uid else ""
    return Impossible(f"{subject}{_NIST_TEXT} ({reason})")


# --- the transcoder ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    """What :func:`transcode` wrote."""

    sop_instance_uid: str
    source_transfer_syntax: str
    target_transfer_syntax: str
    pixel_data_decoded: bool
    lossy: bool
    """Lossy Image Compression (0028,2110) of the output is "01"."""
    bytes_written: int


def transcode(
    source: BinaryIO | str | os.PathLike[str], target_ts: str, out: BinaryIO
) -> TranscodeResult:
    """Imaging Document Source, transcoding: write *source* to *out* as Part-10 in *target_ts*.

    *source* is a Part-10 file or a binary stream at its preamble; *target_ts*
    is Explicit or Implicit VR Little Endian.  *out* need not be seekable
    (the object is then spooled, to disk past 16 MiB).  Raises
    :class:`TranscodeNotDicom`, :class:`TransferSyntaxUnsupported`,
    :class:`DecoderUnavailable` or :class:`PixelDataCorrupt`
    (all ``XDSRepositoryError``); ``OSError`` of either file propagates.
    """
    if target_ts not in TRANSCODE_TARGETS:
        raise TransferSyntaxUnsupported(
            f"transcoding produces {' or '.join(TRANSCODE_TARGETS)}, not {target_ts!r}",
            transfer_syntax=target_ts,
        )
    ds = _read(source)
    source_ts = str(ds.file_meta.TransferSyntaxUID)
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    what = f"SOP Instance {sop_uid}"
    if source_ts == EXPLICIT_VR_BIG_ENDIAN:
        raise TransferSyntaxUnsupported(
            f"{what}: retired Explicit VR Big Endian is not converted", transfer_syntax=source_ts
        )
    _require_pixels(ds, what)
    decoded = False
    if source_ts not in _NOT_ENCAPSULATED and "PixelData" in ds:
        _decode(ds, source_ts, what)
        _decode_icons(ds, source_ts, what)
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in ds:  # they describe encapsulated frames only
                delattr(ds, keyword)
        decoded = True
        if source_ts in _ALWAYS_LOSSY and ds.get("LossyImageCompression") != "01":
            ds.LossyImageCompression = "01"  # PS3.3 C.7.6.1.1.5: DCT JPEG pixels were lossy
    ds.file_meta.TransferSyntaxUID = UID(target_ts)
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    written = _write(ds, out, what)
    logger.debug("%s: %s -> %s, %d bytes", what, source_ts, target_ts, written)
    return TranscodeResult(
        sop_instance_uid=sop_uid,
        source_transfer_syntax=source_ts,
        target_transfer_syntax=target_ts,
        pixel_data_decoded=decoded,
        lossy=ds.get("LossyImageCompression") == "01",
        bytes_written=written,
    )


def _read(source: BinaryIO | str | os.PathLike[str]) -> Dataset:
    name = source if isinstance(source, str | os.PathLike) else getattr(source, "name", "stream")
    try:
        ds = dcmread(source)
    except InvalidDicomError as exc:
        raise TranscodeNotDicom(f"{name}: not a DICOM Part-10 object ({exc})") from exc
    except (EOFError, struct.error, ValueError, KeyError, NotImplementedError) as exc:
        raise TranscodeNotDicom(f"{name}: DICOM object could not be decoded ({exc})") from exc
    if "SOPInstanceUID" not in ds:  # pydicom keeps nothing when a file ends inside a sequence
        raise TranscodeNotDicom(f"{name}: no SOP Instance UID (an empty or truncated object)")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise TranscodeNotDicom(
            f"{name}: DICOM object has no Transfer Syntax UID in its meta group"
        )
    return ds


def _require_pixels(ds: Dataset, what: str) -> None:
    """An image whose pixel data pydicom lost to a truncated file (it only warns) is refused."""
    if not all(keyword in ds for keyword in ("Rows", "Columns", "BitsAllocated")):
        return  # no Image Pixel module: SR, KOS, presentation state
    present = [keyword for keyword in _PIXEL_KEYWORDS if keyword in ds]
    if not present:
        raise PixelDataCorrupt(f"{what}: the object ends before its pixel data (truncated?)")
    element = ds[present[0]]
    if element.is_undefined_length:
        return  # encapsulated: the decoder checks the frames
    bits = int(ds.BitsAllocated)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (int(ds.Rows) * int(ds.Columns) * samples * frames * bits + 7) // 8
    if len(element.value or b"") < expected:
        raise PixelDataCorrupt(
            f"{what}: native pixel data has {len(element.value or b'')} bytes, "
            f"the Image Pixel module needs {expected}"
        )


def _check_decoder(ts: str, what: str) -> None:
    try:
        decoder = get_decoder(UID(ts))
    except NotImplementedError as exc:
        raise DecoderUnavailable(
            f"{what}: pydicom has no pixel data decoder for transfer syntax {ts}",
            transfer_syntax=ts,
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise DecoderUnavailable(
            f"{what}: no decoder installed for transfer syntax {ts} ({missing})",
            transfer_syntax=ts,
        )


def _decode(ds: Dataset, ts: str, what: str) -> None:
    _check_decoder(ts, what)
    try:
        decompress(ds, as_rgb=True, generate_instance_uid=False)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise PixelDataCorrupt(f"{what}: pixel data in {ts} could not be decoded ({exc})") from exc


def _decode_icons(ds: Dataset, ts: str, what: str) -> None:
    """Icon Image Sequence pixel data is encapsulated like the image's (PS3.5 A.4)."""
    for item in ds.get("IconImageSequence", []):
        if "PixelData" not in item or not item["PixelData"].is_undefined_length:
            continue
        item.file_meta = FileMetaDataset()
        item.file_meta.TransferSyntaxUID = UID(ts)
        try:
            _decode(item, ts, f"{what} icon")
        finally:
            del item.file_meta


def _write(ds: Dataset, out: BinaryIO, what: str) -> int:
    seekable = out.seekable()
    with tempfile.SpooledTemporaryFile(max_size=16 * 2**20) as spool:
        sink = out if seekable else spool  # pydicom seeks back to write item lengths
        start = sink.tell()
        try:
            dcmwrite(sink, ds, enforce_file_format=True)
        except (ValueError, TypeError, KeyError, struct.error, OverflowError) as exc:
            raise TranscodeError(f"{what}: could not be encoded as Part-10 ({exc})") from exc
        if seekable:
            return sink.tell() - start
        size = spool.tell()
        spool.seek(0)
        shutil.copyfileobj(spool, out, 2**20)
        return size
