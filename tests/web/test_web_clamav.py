"""ClamAV from Debian's packages rejects the EICAR test file at upload.

No signature download is possible here, so the test builds a one-line signature database
at test time: an ``.hdb`` line ``<md5>:<size>:<name>`` of the EICAR string (and an ``.ndb``
hex signature of its head), which ``clamscan -d <file>`` loads instead of the official ones.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests_support import require_service

from simpletasks.buckets import open_bucket
from simpletasks.queues import open_queue
from simpletasks.web.scan import ScanError, VirusScanner

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!H+H*"


@pytest.fixture
def clamscan(tmp_path: Path) -> list[str]:
    binary = shutil.which("clamscan")
    if binary is None:
        require_service("clamscan not installed (apt-get install clamav)")
    db = tmp_path / "sigs"
    db.mkdir()
    (db / "eicar.hdb").write_text(
        f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Test-File\n"
    )
    (db / "eicar.ndb").write_text(f"Eicar-Head:0:0:{EICAR[:40].hex()}\n")
    return [str(binary), "-d", str(db)]


def test_clamscan_finds_eicar(clamscan: list[str], tmp_path: Path):
    clean, bad, padded = tmp_path / "clean.txt", tmp_path / "eicar.com", tmp_path / "padded.bin"
    clean.write_bytes(b"hello")
    bad.write_bytes(EICAR)
    padded.write_bytes(EICAR + b"\n" * 10)  # other md5: caught by the .ndb head signature
    scanner = VirusScanner(clamscan)
    assert scanner.scan([clean]) == {}
    found = scanner.scan([clean, bad, padded])
    assert set(found) == {str(bad), str(padded)}
    assert found[str(bad)].startswith("Eicar-")
    assert found[str(padded)].startswith("Eicar-Head")


def test_clamscan_error_is_scan_error(clamscan: list[str], tmp_path: Path):
    broken = tmp_path / "broken.hdb"
    broken.write_text("not a signature\n")
    with pytest.raises(ScanError):
        VirusScanner([clamscan[0], "-d", str(broken)]).scan([broken])


def test_eicar_upload_is_rejected(env: Any, clamscan: list[str]):
    client = env.app(scan_command=tuple(clamscan)).test_client()
    page = client.get("/pipelines/demo")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()

    def post(files: list[tuple[bytes, str]]) -> Any:
        data = {"email": "a@example.org", "csrf_token": token}
        data["files"] = [(io.BytesIO(c), n) for c, n in files]  # type: ignore[assignment]
        return client.post("/pipelines/demo", data=data, content_type="multipart/form-data")

    rejected = post([(b"fine", "a.txt"), (EICAR, "eicar.txt")])
    assert rejected.status_code == 422
    assert b"virus found in eicar.txt (Eicar-" in rejected.data
    assert open_queue(env.queue_url).counts().visible == 0
    assert not list(open_bucket(env.bucket_url).list("jobs/"))
    accepted = post([(b"fine", "a.txt")])
    assert accepted.status_code == 201
