"""A real Orthanc PACS for integration tests (Debian packages ``orthanc`` and ``orthanc-dicomweb``).

:func:`running_orthanc` starts ``Orthanc`` as a subprocess (not the system
service) with a configuration generated in a temporary folder: storage and
index there, HTTP and DICOM on free ports, the DICOMweb plugin loaded at
``/dicom-web``, authentication off.  Orthanc 1.10 has no bind-address
setting, so it listens on every interface; the configuration makes it refuse
any HTTP client that is not on loopback (``RemoteAccessAllowed: false``) and
any DICOM peer that is not our AE on 127.0.0.1 (``DicomAlwaysAllow*: false``
with ``DicomCheckModalityHost``).

The AE ``SCU_AET`` at 127.0.0.1 is the only known modality; its port is the
C-MOVE destination port (:attr:`OrthancServer.move_port`), where a test's
Storage SCP listens.  :meth:`OrthancServer.kill` stops Orthanc mid-test, for
PACS-down tests.

When Orthanc or the plugin is missing, :func:`require_orthanc` skips the
test, or fails it when ``CI=true`` (a broken CI image must not pass green).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from imagebridge.dicom.synthetic import SyntheticStudy

ORTHANC_AET = "IBORTHANC"
SCU_AET = "IMAGEBRIDGE"
_BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
_START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class OrthancInstall:
    """Where the Orthanc binary and its DICOMweb plugin are."""

    binary: str
    dicomweb_plugin: str


def find_orthanc() -> OrthancInstall | None:
    """The installed Orthanc and its DICOMweb plugin; env ``ORTHANC_BINARY``/``..._PLUGIN`` win."""
    binary = os.environ.get("ORTHANC_BINARY") or shutil.which("Orthanc")
    if binary is None:
        binary = next((p for p in _BINARY_CANDIDATES if os.access(p, os.X_OK)), None)
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if plugin is None:
        found = [p for p in _PLUGIN_CANDIDATES if Path(p).exists()]
        found += [str(p) for p in sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))]
        plugin = found[0] if found else None
    if binary is None or plugin is None or not os.access(binary, os.X_OK):
        return None
    if not Path(plugin).exists():
        return None
    return OrthancInstall(binary, plugin)


def require_orthanc() -> OrthancInstall:
    """Orthanc with DICOMweb, or skip (fail when CI=true) with the Debian packages to install."""
    install = find_orthanc()
    if install is None:
        message = (
            "Orthanc with the DICOMweb plugin is not installed "
            "(apt-get install orthanc orthanc-dicomweb)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (required in CI)", pytrace=False)
        pytest.skip(message)
    return install


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancServer:
    """One Orthanc process and what tests need to talk to it."""

    install: OrthancInstall
    folder: Path
    http_port: int
    dicom_port: int
    move_port: int
    aet: str = ORTHANC_AET
    scu_aet: str = SCU_AET
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def configuration(self) -> dict[str, object]:
        storage = str(self.folder / "storage")
        return {
            "Name": "imagebridge-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "HttpCompressionEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "SaveJobs": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomModalities": {
                "imagebridge": {"AET": self.scu_aet, "Host": "127.0.0.1", "Port": self.move_port}
            },
            "StorageAccessOnFind": "Always",
            "Plugins": [self.install.dicomweb_plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def start(self) -> None:
        """Start Orthanc and wait until ``/system`` answers."""
        (self.folder / "storage").mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.configuration(), indent=2))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.install.binary, "--no-jobs", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start-up:\n{self._log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/system", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"Orthanc did not answer within {_START_TIMEOUT} s:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop Orthanc gracefully (SIGTERM), killing it if it does not exit in 15 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """Kill Orthanc at once (SIGKILL): the PACS goes down mid-test."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- REST helpers for test set-up and checks -----------------------------------

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """POST each Part-10 file to ``/instances``; return the Orthanc instance ids."""
        ids: list[str] = []
        with httpx.Client(base_url=self.base_url, timeout=120.0) as client:
            for path in paths:
                with open(path, "rb") as fp:
                    response = client.post(
                        "/instances", content=fp, headers={"Content-Type": "application/dicom"}
                    )
                response.raise_for_status()
                ids.append(response.json()["ID"])
        return ids

    def upload_study(self, study: SyntheticStudy) -> list[str]:
        """Upload a study written by :func:`~imagebridge.dicom.synthetic.make_study`."""
        return self.upload(study.files)

    def instance_id(self, sop_instance_uid: str) -> str | None:
        """The Orthanc id of an instance, by SOP Instance UID."""
        response = httpx.post(
            f"{self.base_url}/tools/find",
            json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
            timeout=30.0,
        )
        response.raise_for_status()
        found: list[str] = response.json()
        return found[0] if found else None

    def stored_file(self, sop_instance_uid: str) -> bytes:
        """The Part-10 bytes Orthanc stores for an instance (GET /instances/{id}/file)."""
        orthanc_id = self.instance_id(sop_instance_uid)
        if orthanc_id is None:
            raise LookupError(f"Orthanc has no instance {sop_instance_uid}")
        response = httpx.get(f"{self.base_url}/instances/{orthanc_id}/file", timeout=120.0)
        response.raise_for_status()
        return response.content

    def instance_count(self) -> int:
        """How many instances Orthanc holds (``/statistics``)."""
        response = httpx.get(f"{self.base_url}/statistics", timeout=30.0)
        response.raise_for_status()
        return int(response.json()["CountInstances"])

    def delete_instance(self, sop_instance_uid: str) -> None:
        """Delete one instance (DELETE /instances/{id})."""
        orthanc_id = self.instance_id(sop_instance_uid)
        if orthanc_id is not None:
            httpx.delete(f"{self.base_url}/instances/{orthanc_id}", timeout=30.0)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_orthanc(folder: Path, install: OrthancInstall | None = None) -> OrthancServer:
    """Start a fresh Orthanc on free loopback ports with its storage under *folder*."""
    server = OrthancServer(
        install or require_orthanc(),
        folder,
        http_port=free_port(),
        dicom_port=free_port(),
        move_port=free_port(),
    )
    server.start()
    return server


def stop_orthanc(server: OrthancServer, *, kill: bool = False) -> None:
    """Stop *server* (``kill=True``: at once, as a crashed PACS)."""
    if kill:
        server.kill()
    else:
        server.stop()


@contextmanager
def running_orthanc(folder: Path) -> Iterator[OrthancServer]:
    """An Orthanc for the duration of the block; stopped (or killed) at the end."""
    server = start_orthanc(folder)
    try:
        yield server
    finally:
        server.stop()
