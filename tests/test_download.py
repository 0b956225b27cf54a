"End-to-end tests of `download_decathlon` against a local HTTP server on 127.0.0.1"
import hashlib, io, tarfile, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bts_course.cli import main
from bts_course.phantom import make_phantom
from bts_course.data import read_case, save_nifti
from bts_course.download import DownloadError, download_decathlon, safe_extract

TASK = "Task01_BrainTumour"


def make_archive(folder: Path) -> bytes:
    "A tiny tar with the Decathlon's layout: dataset.json, imagesTr/, labelsTr/, a macOS `._` file"
    root = folder / "src" / TASK
    for i in (1, 2):
        case = make_phantom(i, (24, 24, 16))
        save_nifti(case.image, root / "imagesTr" / f"BRATS_{i:03d}.nii.gz")
        save_nifti(case.label, root / "labelsTr" / f"BRATS_{i:03d}.nii.gz")
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "dataset.json").write_text('{"name": "BRATS"}', encoding="utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar: tar.add(root, arcname=TASK)
    return buffer.getvalue()


class Server:
    "A local server for one file that honours Range requests and can fail on demand"
    def __init__(self, payload: bytes):
        self.payload, self.status, self.cut_after, self.ranges = payload, 200, None, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args): pass
            def do_GET(self):
                owner.ranges.append(self.headers.get("Range"))
                if owner.status != 200:
                    self.send_error(owner.status); return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                body = owner.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                if start: self.send_header("Content-Range", f"bytes {start}-{len(owner.payload) - 1}/{len(owner.payload)}")
                self.end_headers()
                if owner.cut_after is not None:  # promise the whole body, send part of it, hang up
                    self.wfile.write(body[: owner.cut_after]); owner.cut_after = None
                    self.close_connection = True; return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/{TASK}.tar"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def served(tmp_path):
    payload = make_archive(tmp_path)
    server = Server(payload)
    yield server, hashlib.md5(payload).hexdigest()
    server.httpd.shutdown()


def test_success_extracts_layout_and_skips_mac_junk(served, tmp_path):
    server, md5 = served
    folder = download_decathlon(tmp_path / "data", url=server.url, md5=md5, progress=False)
    assert folder == tmp_path / "data" / TASK
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["BRATS_001.nii.gz", "BRATS_002.nii.gz"]
    case = read_case(folder / "imagesTr" / "BRATS_001.nii.gz")
    np.testing.assert_array_equal(case.label, make_phantom(1, (24, 24, 16)).label)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [TASK]  # no archive, no staging folder
    # a second call finds the complete data set and downloads nothing
    n_requests = len(server.ranges)
    assert download_decathlon(tmp_path / "data", url=server.url, md5=md5, progress=False) == folder
    assert len(server.ranges) == n_requests


def test_resume_after_connection_loss(served, tmp_path):
    server, md5 = served
    server.cut_after = len(server.payload) // 3
    with pytest.raises(DownloadError, match="resume"):
        download_decathlon(tmp_path / "data", url=server.url, md5=md5, progress=False)
    part = tmp_path / "data" / f"{TASK}.tar.part"
    assert part.stat().st_size == len(server.payload) // 3
    assert not (tmp_path / "data" / TASK).exists()
    folder = download_decathlon(tmp_path / "data", url=server.url, md5=md5, progress=False, keep_archive=True)
    assert server.ranges[-1] == f"bytes={len(server.payload) // 3}-"
    assert part.read_bytes() == server.payload  # appended, not restarted or duplicated
    assert (folder / "dataset.json").is_file()


def test_checksum_mismatch_leaves_no_dataset(served, tmp_path):
    server, md5 = served
    with pytest.raises(DownloadError, match="does not match"):
        download_decathlon(tmp_path / "data", url=server.url, md5="f" * 32, progress=False)
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == [f"{TASK}.tar.bad-md5"]


def test_server_error_is_reported(served, tmp_path):
    server, md5 = served
    server.status = 500
    with pytest.raises(DownloadError, match="HTTP 500"):
        download_decathlon(tmp_path / "data", url=server.url, md5=md5, progress=False)
    assert not (tmp_path / "data" / TASK).exists()


def evil_archive(path: Path, kind: str) -> Path:
    "A tar whose one member tries to escape the extraction folder in the way `kind` names"
    with tarfile.open(path, "w") as tar:
        if kind == "absolute": info = tarfile.TarInfo(str(path.parent / "escaped.txt"))
        elif kind == "dotdot": info = tarfile.TarInfo(f"{TASK}/../../escaped.txt")
        elif kind == "symlink":
            info = tarfile.TarInfo(f"{TASK}/link"); info.type, info.linkname = tarfile.SYMTYPE, "../../.."
        elif kind == "hardlink":
            info = tarfile.TarInfo(f"{TASK}/hard"); info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        data = b"gotcha"
        if info.isfile(): info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink"])
def test_hostile_archives_are_refused(tmp_path, kind):
    archive = evil_archive(tmp_path / "evil.tar", kind)
    dest = tmp_path / "a" / "b"
    dest.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(DownloadError, match="refusing member"):
        safe_extract(archive, dest)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_hostile_archive_through_download_leaves_nothing(tmp_path):
    payload = evil_archive(tmp_path / "evil.tar", "dotdot").read_bytes()
    server = Server(payload)
    try:
        with pytest.raises(DownloadError, match="refusing"):
            download_decathlon(tmp_path / "data", url=server.url, md5=hashlib.md5(payload).hexdigest(), progress=False)
    finally:
        server.httpd.shutdown()
    assert not (tmp_path / "escaped.txt").exists()
    assert not [p for p in (tmp_path / "data").iterdir() if p.is_dir()]  # no staging, no data set


def test_cli_download(served, tmp_path, capsys):
    server, md5 = served
    assert main(["download", str(tmp_path / "d"), "--url", server.url, "--md5", md5]) == 0
    assert capsys.readouterr().out.strip().endswith(TASK)
    assert main(["download", str(tmp_path / "d"), "--url", server.url]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
