"""tasks.flatcar.download against a real HTTP server on 127.0.0.1 (and file:// paths)."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from pathlib import Path

import pytest

from support.site import FAST, IMAGE_DATA, Site
from tasks.errors import DownloadError
from tasks.flatcar.download import NotFoundError, _progress, download_file, fetch_bytes

PATH = "/files/blob.img"


def test_plain_download(tmp_path: Path, site: Site) -> None:
    site.behaviour.files[PATH] = IMAGE_DATA
    part = tmp_path / "blob.part"
    result = download_file(site.url + PATH, part, FAST)
    assert part.read_bytes() == IMAGE_DATA
    assert (result.size, result.resumed) == (len(IMAGE_DATA), False)
    assert site.behaviour.requests == [(PATH, None)]
    assert not (tmp_path / "blob.part.meta").exists()


def test_resume_is_reported_and_byte_identical(tmp_path: Path, site: Site) -> None:
    site.behaviour.files[PATH] = IMAGE_DATA
    site.behaviour.drop_after[PATH] = [123_457]
    part = tmp_path / "blob.part"
    result = download_file(site.url + PATH, part, FAST)
    assert part.read_bytes() == IMAGE_DATA
    assert result.resumed
    first, second = site.behaviour.requests
    assert first == (PATH, None) and second[1] is not None and second[1].startswith("bytes=")


def test_partial_file_of_another_url_is_not_resumed(tmp_path: Path, site: Site) -> None:
    site.behaviour.files[PATH] = IMAGE_DATA
    part = tmp_path / "blob.part"
    part.write_bytes(b"x" * 1000)
    (tmp_path / "blob.part.meta").write_text(json.dumps({"url": site.url + "/other", "validator": ""}))
    assert not download_file(site.url + PATH, part, FAST).resumed
    assert part.read_bytes() == IMAGE_DATA
    assert site.behaviour.requests == [(PATH, None)]


def test_client_error_is_not_retried(tmp_path: Path, site: Site) -> None:
    site.behaviour.files[PATH] = IMAGE_DATA
    site.behaviour.fail_first[PATH] = [403]
    with pytest.raises(DownloadError, match=r"blob\.img: HTTP 403 Forbidden"):
        download_file(site.url + PATH, tmp_path / "blob.part", FAST)
    assert len(site.behaviour.requests) == 1


def test_not_found_is_not_retried(tmp_path: Path, site: Site) -> None:
    with pytest.raises(NotFoundError, match=rf"{site.url}/missing: not found \(HTTP 404\)"):
        download_file(site.url + "/missing", tmp_path / "x.part", FAST)
    assert len(site.behaviour.requests) == 1


def test_refused_connection_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    with pytest.raises(DownloadError, match=r"failed after 3 attempt\(s\): connection failed: .*refused"):
        download_file(f"http://127.0.0.1:{port}/x", tmp_path / "x.part", FAST)


def test_fetch_bytes_limits_size(tmp_path: Path, site: Site) -> None:
    site.behaviour.files["/small.txt"] = b"FLATCAR_VERSION=1.2.3\n"
    site.behaviour.files["/big.txt"] = b"x" * 5000
    assert fetch_bytes(site.url + "/small.txt", FAST, max_bytes=100) == b"FLATCAR_VERSION=1.2.3\n"
    with pytest.raises(DownloadError, match="larger than the 100 bytes expected"):
        fetch_bytes(site.url + "/big.txt", FAST, max_bytes=100)


def test_local_files(tmp_path: Path) -> None:
    source = tmp_path / "key file.asc"
    source.write_bytes(b"key")
    assert fetch_bytes(str(source)) == b"key"
    assert fetch_bytes("file://" + str(source).replace(" ", "%20")) == b"key"
    part = tmp_path / "copy.part"
    assert download_file(f"file://{source}", part).size == 3
    with pytest.raises(NotFoundError, match="no such file"):
        fetch_bytes(str(tmp_path / "absent.asc"))
    with pytest.raises(NotFoundError, match="no such file"):
        download_file(f"file://{tmp_path}/absent.img", part)


def test_progress_bar_only_when_asked() -> None:
    out = io.StringIO()
    with _progress("http://h/a/image.img", 0, 4 << 20, dataclasses.replace(FAST, progress=True), out) as bar:
        bar.last -= 1  # let the first update draw
        bar(1 << 20)
    text = out.getvalue()
    assert text.startswith("\r  image.img  25.0% 1/4 MiB") and text.endswith("\n")
    quiet = io.StringIO()
    with _progress("http://h/a/image.img", 0, 4 << 20, FAST, quiet) as bar:
        bar.last -= 1
        bar(1 << 20)
    assert quiet.getvalue() == ""
    # progress=None follows the stream: a StringIO is not a terminal.
    auto = io.StringIO()
    with _progress("http://h/a/image.img", 0, None, dataclasses.replace(FAST, progress=None), auto) as bar:
        bar.last -= 1
        bar(1 << 20)
    assert auto.getvalue() == ""


def test_a_big_download_is_written_back_while_it_arrives(tmp_path: Path, site: Site,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The file reaches the disk in steps during the transfer (tasks/flatcar/writeback.py), not all
    at the final fsync; no flush outlives the download."""
    import os
    import threading

    from tasks.flatcar import writeback

    flushed: list[int] = []  # the file's size on disk when each flush began
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        flushed.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(writeback, "STEP", 256 << 10)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    site.behaviour.files[PATH] = IMAGE_DATA  # a bit over 3 MiB
    part = tmp_path / "blob.part"
    download_file(site.url + PATH, part, dataclasses.replace(FAST, chunk_size=64 << 10))
    assert part.read_bytes() == IMAGE_DATA
    # Flushing began while the file was still growing (how many flushes depends on the disk: one
    # still running when the next step is reached covers that step).
    assert flushed and min(flushed) < len(IMAGE_DATA), flushed
    assert not any(t.name == "writeback" and t.is_alive() for t in threading.enumerate())
