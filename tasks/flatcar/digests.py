"""Flatcar's signed DIGESTS files, and hashing a download in the same pass as it streams.

A Flatcar release folder publishes, next to each image, a DIGESTS file (Gentoo style: a
`# MD5 HASH` / `# SHA1 HASH` / `# SHA512 HASH` header, then `<hex>  <file name>`, per file)
clear-signed by the release key as `<image>.DIGESTS.asc`. gpg checks that small file against the
pinned key; the image itself is then hashed with hashlib while it downloads, instead of gpg
hashing 1 GiB at its own (slower) pace after the download.

The hashes run in threads (hashlib releases the GIL), fed through short queues: the download
never waits for them unless they fall 8 chunks behind, and memory stays bounded.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.errors import VerificationError

# Tried in this order; the first that exists is used (Flatcar's build publishes both names).
DIGESTS_SUFFIX = ".DIGESTS.asc"
VM_DIGESTS = "flatcar_production_qemu.DIGESTS.asc"
DIGESTS_MAX_BYTES = 64 << 10

_HEADER = re.compile(r"#\s*([A-Za-z0-9]+)\s+HASH", re.IGNORECASE)
_LINE = re.compile(r"([0-9a-fA-F]+)\s+\*?(\S+)")


def digests_names(image: str) -> tuple[str, ...]:
    """The signed DIGESTS files that may cover image, in the order they are tried."""
    return (f"{image}{DIGESTS_SUFFIX}", VM_DIGESTS)


def sha512_for(text: str, name: str) -> str | None:
    """The SHA512 the (already verified) DIGESTS text gives for file name; None if it lists none.

    Two different SHA512 lines for the same name (e.g. two releases' files glued together) are a
    refusal, not a choice.
    """
    found: set[str] = set()
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        header = _HEADER.fullmatch(line)
        if header:
            section = header.group(1).upper()
            continue
        match = _LINE.fullmatch(line)
        if section == "SHA512" and match and match.group(2) == name and len(match.group(1)) == 128:
            found.add(match.group(1).lower())
    if len(found) > 1:
        raise VerificationError(f"the signed DIGESTS list {len(found)} different SHA512 hashes for {name}",
                                "the release folder is inconsistent; check flatcar.base_url")
    return found.pop() if found else None


class _Stop:
    pass


_STOP = _Stop()
_RESTART = object()


class StreamHasher:
    """Hashes (sha512, sha256, ...) of a stream fed in order, each in its own thread.

    `feed(offset, chunk)` takes the downloader's chunks: offset 0 starts over (a restarted
    download), any other gap breaks the stream, and `digests(path)` then hashes the finished
    file from disk instead. `prime(path)` hashes what a resumed .part file already holds.
    """

    def __init__(self, algorithms: Iterable[str], depth: int = 8) -> None:
        self.algorithms = tuple(algorithms)
        self.fed = 0
        self.broken = False
        self._queues: list[queue.Queue[Any]] = [queue.Queue(depth) for _ in self.algorithms]
        self._results: dict[str, str] = {}
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._work, args=(name, q), name=f"hash-{name}", daemon=True)
            for name, q in zip(self.algorithms, self._queues, strict=True)
        ]

    def __enter__(self) -> StreamHasher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _work(self, name: str, source: queue.Queue[Any]) -> None:
        digest = hashlib.new(name)
        try:
            while True:
                item = source.get()
                if item is _STOP:
                    break
                if item is _RESTART:
                    digest = hashlib.new(name)
                else:
                    digest.update(item)
            self._results[name] = digest.hexdigest()
        except BaseException as exc:  # pragma: no cover - hashlib does not fail on bytes
            self._errors.append(exc)
            # Keep draining so the feeder never blocks on a dead consumer.
            while source.get() is not _STOP:
                pass

    def _put(self, item: Any) -> None:
        for q in self._queues:
            q.put(item)

    def feed(self, offset: int, chunk: bytes) -> None:
        if offset == 0 and (self.fed or self.broken):
            # The download started over: so does every hash.
            self._put(_RESTART)
            self.fed, self.broken = 0, False
        if self.broken:
            return
        if offset != self.fed:
            self.broken = True
            return
        self._put(chunk)
        self.fed += len(chunk)

    def prime(self, path: Path, block: int = 1 << 20) -> None:
        """Hash the bytes path already holds (a partial download about to be resumed)."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            while chunk := handle.read(block):
                self.feed(self.fed, chunk)

    def _stop(self) -> None:
        if any(t.is_alive() for t in self._threads):
            self._put(_STOP)
            for thread in self._threads:
                thread.join()

    def digests(self, path: Path, size: int) -> dict[str, str]:
        """Hex digest per algorithm of the file's size bytes: streamed if whole, else read back."""
        self._stop()
        if self._errors:  # pragma: no cover
            raise self._errors[0]
        if not self.broken and self.fed == size and len(self._results) == len(self.algorithms):
            return dict(self._results)
        return hash_file(path, self.algorithms)


def hash_file(path: Path, algorithms: Iterable[str], block: int = 1 << 20) -> dict[str, str]:
    """Hex digest per algorithm of a whole file, in one read (each hash in its own thread)."""
    with StreamHasher(algorithms) as hasher:
        hasher.prime(path, block)
        return hasher.digests(path, hasher.fed)
