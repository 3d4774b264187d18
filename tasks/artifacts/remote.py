"""Asking the servers: is a file there (its HTTP status and size), and the small lists beside it.

Redirects are followed as the nodes follow them (extensions.flatcar.org answers every request
with a redirect to GitHub, which redirects again). Transient failures (timeouts, refused
connections, 5xx) are retried with the download policy's backoff; what stays wrong becomes an
ArtifactError naming the URL and what it answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.errors import ArtifactError, DownloadError
from tasks.flatcar.download import DEFAULT_POLICY, RETRYABLE_STATUS, USER_AGENT, DownloadPolicy, NotFoundError

if TYPE_CHECKING:
    import requests

# Checksum lists: the bakery's per-extension SHA256SUMS is tens of KiB.
LIST_MAX_BYTES = 8 << 20
# Servers that refuse HEAD (or presigned URLs made for GET only): ask for the first byte instead.
_NO_HEAD = frozenset({403, 405, 501})


@dataclass(frozen=True)
class Probe:
    """What a URL answered, after redirects: HTTP status and the file's size when announced."""

    url: str
    status: int
    size: int | None


def fetch_text(url: str, what: str, policy: DownloadPolicy = DEFAULT_POLICY) -> str:
    """A small text file (a checksum list); ArtifactError saying what was wanted when it fails."""
    from tasks.flatcar.download import fetch_bytes

    try:
        data = fetch_bytes(url, policy, max_bytes=LIST_MAX_BYTES)
    except NotFoundError as exc:
        raise ArtifactError(f"{what}: {exc.message}") from None
    except DownloadError as exc:
        raise ArtifactError(f"{what}: {exc.message}", exc.hint) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{what}: {url} is not text (is it the right URL?)") from None


def probe(url: str, policy: DownloadPolicy = DEFAULT_POLICY) -> Probe:
    """HEAD url (redirects followed); a 5xx or silence is retried, then reported as it is."""
    import requests

    timeout = (policy.connect_timeout, policy.read_timeout)
    last = ""
    with requests.Session() as session:
        session.headers.update({"Accept-Encoding": "identity", "User-Agent": USER_AGENT})
        for attempt in range(1, policy.attempts + 1):
            try:
                answer = _ask(session, url, timeout)
            except requests.TooManyRedirects:
                raise ArtifactError(f"{url}: redirected more than {session.max_redirects} times (a redirect loop)",
                                    "check the URL and the mirror's redirects") from None
            except requests.Timeout:
                last = f"no answer within {policy.connect_timeout:g} s / {policy.read_timeout:g} s"
            except requests.ConnectionError as exc:
                last = f"connection failed: {str(exc)[:200]}"
            except requests.RequestException as exc:
                raise ArtifactError(f"{url}: {exc}") from None
            else:
                if answer.status not in RETRYABLE_STATUS or attempt == policy.attempts:
                    return answer
                last = f"HTTP {answer.status}"
            if attempt < policy.attempts:
                time.sleep(min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)))
    raise ArtifactError(f"{url}: {last} (after {policy.attempts} attempts)",
                        "check the network or the mirror, then run the task again")


def _ask(session: requests.Session, url: str, timeout: tuple[float, float]) -> Probe:
    with session.head(url, allow_redirects=True, timeout=timeout) as response:
        status, length = response.status_code, response.headers.get("Content-Length", "")
    if status not in _NO_HEAD:
        return Probe(url, status, int(length) if status == 200 and length.isdigit() else None)
    with session.get(url, headers={"Range": "bytes=0-0"}, stream=True, allow_redirects=True,
                     timeout=timeout) as response:
        status = response.status_code
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        length = response.headers.get("Content-Length", "")
    if status == 206:
        return Probe(url, 200, int(total) if total.isdigit() else None)
    return Probe(url, status, int(length) if status == 200 and length.isdigit() else None)
