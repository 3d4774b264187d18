"""Streamed, resumable downloads with timeouts, retries and a progress bar on a terminal.

Bytes go to a `.part` file the caller names; the caller verifies it and only then renames it
into place, so nothing unverified ever sits where later steps look for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from tasks.errors import DownloadError
from tasks.flatcar.writeback import Writeback

if TYPE_CHECKING:
    import requests

# Transient answers: worth another try after a pause.
Sink = Callable[[int, bytes], None]
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "flatcar-ha (python-requests)"


class NotFoundError(DownloadError):
    """The server (or folder) has no such file: retrying cannot help."""


@dataclass(frozen=True)
class DownloadPolicy:
    """How patient a download is; tests shrink these to stay fast."""

    connect_timeout: float = 15.0
    # Longest silence allowed while waiting for bytes, not a limit on the whole transfer.
    read_timeout: float = 60.0
    attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 30.0
    chunk_size: int = 1 << 20
    # None: a bar only when stderr is a terminal and not under CI.
    progress: bool | None = None


DEFAULT_POLICY = DownloadPolicy()


@dataclass(frozen=True)
class DownloadResult:
    size: int
    # True when bytes already in the .part file were kept (an earlier run or a dropped connection).
    resumed: bool


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Restart(Exception):
    """The partial file cannot be continued: start again from byte 0 (not counted as a failure)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_local(url: str) -> bool:
    return url.startswith(("file://", "/"))


def local_path(url: str) -> Path:
    """file:///a/b or /a/b -> Path('/a/b')."""
    return Path(unquote(urlsplit(url).path)) if url.startswith("file://") else Path(url)


def download_file(
    url: str, part: Path, policy: DownloadPolicy = DEFAULT_POLICY, max_bytes: int | None = None,
    sink: Sink | None = None,
) -> DownloadResult:
    """Fetch url into part, resuming what part already holds; raise DownloadError for good failures.

    sink(offset, chunk) sees every chunk written from the network, at its offset in the file, so a
    caller can hash or verify while downloading (it must cope with gaps and restarts).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    if is_local(url):
        return _copy_local(url, part, max_bytes)
    import requests

    meta = part.with_name(part.name + ".meta")
    resumed = _forget_foreign_part(part, meta, url)
    attempt = 1
    with requests.Session() as session:
        # Identity encoding: byte offsets in Range must be offsets in the file itself.
        session.headers.update({"Accept-Encoding": "identity", "User-Agent": USER_AGENT})
        while True:
            before = _size(part)
            try:
                size = _attempt(session, url, part, meta, policy, max_bytes, sink)
            except _Restart as exc:
                log(f"  {exc}; starting over")
                part.unlink(missing_ok=True)
                resumed = False
                continue
            except _Transient as exc:
                # A try that moved the file forward is not a failure: a flaky link still finishes.
                if _size(part) > before:
                    attempt = 1
                    resumed = True
                if attempt >= policy.attempts:
                    raise DownloadError(
                        f"downloading {url} failed after {attempt} attempt(s): {exc}",
                        "check the network or the mirror, then run the task again: the partial file "
                        f"{part} is kept and the download resumes",
                    ) from None
                delay = min(policy.max_backoff, exc.retry_after or policy.backoff * 2 ** (attempt - 1))
                log(f"  {url}: {exc}; retry {attempt} of {policy.attempts - 1} in {delay:.1f} s")
                time.sleep(delay)
                attempt += 1
                resumed = resumed or _size(part) > 0
                continue
            meta.unlink(missing_ok=True)
            return DownloadResult(size, resumed)


def fetch_bytes(url: str, policy: DownloadPolicy = DEFAULT_POLICY, max_bytes: int = 1 << 20) -> bytes:
    """A small document (version.txt, a signature, a key) as bytes: http(s)://, file:// or a path."""
    if is_local(url):
        path = local_path(url)
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise NotFoundError(f"{url}: no such file ({path})") from None
        except OSError as exc:
            raise DownloadError(f"{url}: cannot be read: {exc}") from None
        if len(data) > max_bytes:
            raise _too_big(url, max_bytes)
        return data
    from tasks.fsutil import private_tempdir

    with private_tempdir(prefix="flatcar-ha-fetch-") as tmp:
        target = tmp / "body"
        download_file(url, target, policy, max_bytes)
        return target.read_bytes()


def _attempt(
    session: requests.Session, url: str, part: Path, meta: Path, policy: DownloadPolicy,
    max_bytes: int | None, sink: Sink | None,
) -> int:
    import requests

    offset = _size(part)
    headers: dict[str, str] = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = _read_meta(meta).get("validator")
        if validator:
            # If the file changed on the server since the first bytes, get all of the new one.
            headers["If-Range"] = validator
    try:
        response = session.get(
            url, headers=headers, stream=True, timeout=(policy.connect_timeout, policy.read_timeout)
        )
    except requests.exceptions.SSLError as exc:
        raise DownloadError(f"{url}: TLS failure: {exc}", "check the mirror's certificate") from None
    except requests.exceptions.InvalidURL as exc:
        raise DownloadError(f"{url}: not a valid URL: {exc}") from None
    except requests.TooManyRedirects:
        raise DownloadError(f"{url}: redirected more than {session.max_redirects} times (a redirect loop)",
                            "check the URL and the mirror's redirects") from None
    except requests.Timeout:
        raise _Transient(f"no answer within the timeout ({policy.connect_timeout:g} s to connect, "
                         f"{policy.read_timeout:g} s to respond)") from None
    except requests.ConnectionError as exc:
        raise _Transient(f"connection failed: {_short(exc)}") from None
    with response:
        total = _check_status(response, url, offset, policy)
        if response.status_code == 416:
            return offset
        if total is not None and max_bytes is not None and total > max_bytes:
            raise _too_big(url, max_bytes)
        if response.status_code == 200:
            if offset:
                log(f"  {url}: the server ignored the range request; downloading from the start")
            offset = 0
        _write_meta(meta, url, response)
        with (_open_private(part) as handle, Writeback(handle.fileno()) as flusher,
              _progress(url, offset, total, policy) as bar):
            handle.seek(offset)
            handle.truncate()
            try:
                for chunk in response.iter_content(chunk_size=policy.chunk_size):
                    handle.write(chunk)
                    if sink is not None:
                        sink(offset, chunk)
                    offset += len(chunk)
                    bar(offset)
                    flusher.grew(offset)
                    if max_bytes is not None and offset > max_bytes:
                        raise _too_big(url, max_bytes)
            except requests.Timeout:
                raise _Transient(f"no data for {policy.read_timeout:g} s (read timeout) "
                                 f"after {offset} bytes") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                # requests reports a read timeout inside the body as a ConnectionError.
                if _is_read_timeout(exc):
                    raise _Transient(f"no data for {policy.read_timeout:g} s (read timeout) "
                                     f"after {offset} bytes") from None
                raise _Transient(f"connection lost after {offset} bytes: {_short(exc)}") from None
    if total is not None and offset != total:
        if offset > total:
            raise _Restart(f"{url}: got {offset} bytes but the server announced {total}")
        raise _Transient(f"connection closed after {offset} of {total} bytes")
    return offset


def _check_status(response: requests.Response, url: str, offset: int, policy: DownloadPolicy) -> int | None:
    """Classify the answer; return the full size of the file when the server says it."""
    status = response.status_code
    if status == 206:
        start, total = _content_range(response.headers.get("Content-Range", ""))
        if start != offset:
            raise _Restart(f"the server resumed at byte {start}, not {offset}")
        return total
    if status == 200:
        length = response.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None
    if status == 416 and offset:
        _, total = _content_range(response.headers.get("Content-Range", ""))
        if total == offset:
            # The earlier run got every byte but stopped before renaming: nothing left to fetch.
            return total
        raise _Restart(f"the server cannot resume at byte {offset}")
    if status in (404, 410):
        raise NotFoundError(f"{url}: not found (HTTP {status})")
    if status in RETRYABLE_STATUS:
        raise _Transient(f"HTTP {status} {response.reason}", _retry_after(response, policy))
    raise DownloadError(f"{url}: HTTP {status} {response.reason}")


def _content_range(value: str) -> tuple[int | None, int | None]:
    # "bytes 100-199/1000", "bytes 100-199/*" or, with 416, "bytes */1000".
    match = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value.strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _retry_after(response: requests.Response, policy: DownloadPolicy) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), policy.max_backoff) if value.isdigit() else None


def _write_meta(meta: Path, url: str, response: requests.Response) -> None:
    etag = response.headers.get("ETag", "")
    # A weak ETag may not be used in If-Range; Last-Modified may.
    validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified", "")
    with _open_private(meta) as handle:
        handle.truncate()
        handle.write(json.dumps({"url": url, "validator": validator}).encode())


def _read_meta(meta: Path) -> dict[str, str]:
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _forget_foreign_part(part: Path, meta: Path, url: str) -> bool:
    """Drop a partial file that came from another URL; return whether one is kept to resume."""
    if not part.exists():
        meta.unlink(missing_ok=True)
        return False
    if _read_meta(meta).get("url") != url:
        part.unlink()
        meta.unlink(missing_ok=True)
        return False
    return part.stat().st_size > 0


def _copy_local(url: str, part: Path, max_bytes: int | None) -> DownloadResult:
    source = local_path(url)
    try:
        with source.open("rb") as src:
            size = os.fstat(src.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise _too_big(url, max_bytes)
            with _open_private(part) as dst:
                dst.truncate()
                shutil.copyfileobj(src, dst, 1 << 20)
    except FileNotFoundError:
        raise NotFoundError(f"{url}: no such file ({source})") from None
    except IsADirectoryError:
        raise DownloadError(f"{url}: is a directory, not a file") from None
    return DownloadResult(_size(part), resumed=False)


def _open_private(path: Path) -> IO[bytes]:
    """path for reading and writing, created 0600 (whatever the umask): nobody else may change
    bytes that are being hashed or verified on their way in."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "r+b")


def _too_big(url: str, max_bytes: int) -> DownloadError:
    return DownloadError(f"{url}: larger than the {max_bytes} bytes expected; is it the right file?")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _is_read_timeout(exc: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def _short(exc: BaseException) -> str:
    # requests nests urllib3 errors several deep; the OS error is the readable part.
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\][^'\"]*", text)
    return match.group(0).strip() if match else text[:200]


@contextlib.contextmanager
def _progress(
    url: str, start: int, total: int | None, policy: DownloadPolicy, stream: IO[str] | None = None
) -> Iterator[_Bar]:
    out = stream or sys.stderr
    show = policy.progress
    if show is None:
        show = out.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")
    bar = _Bar(out, Path(urlsplit(url).path).name, start, total, enabled=show)
    try:
        yield bar
    finally:
        bar.close()


class _Bar:
    """A one-line `\\r` progress display, redrawn at most five times a second."""

    def __init__(self, out: IO[str], label: str, start: int, total: int | None, enabled: bool) -> None:
        self.out, self.label, self.start, self.total, self.enabled = out, label, start, total, enabled
        self.done = start
        self.began = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.2:
            self.last = now
            self.out.write("\r" + self._line(now))
            self.out.flush()

    def _line(self, now: float) -> str:
        mib = 1 << 20
        rate = (self.done - self.start) / max(now - self.began, 1e-6) / mib
        if self.total:
            return (f"  {self.label} {100 * self.done / self.total:5.1f}% "
                    f"{self.done / mib:,.0f}/{self.total / mib:,.0f} MiB {rate:6.1f} MiB/s")
        return f"  {self.label} {self.done / mib:,.0f} MiB {rate:6.1f} MiB/s"

    def close(self) -> None:
        if self.enabled:
            self.out.write("\r" + self._line(time.monotonic()) + "\n")
            self.out.flush()
