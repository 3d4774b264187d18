"""A big download written back to disk while it arrives, so making it durable at the end is quick.

A finished image is fsynced before it is renamed into place and recorded as verified (a record
on disk must never vouch for bytes that a power cut could still lose). With the whole GiB only
in the page cache, that fsync writes it all after the transfer: 1.2 s of a 5 s `doit image`
here. Instead, each time the file has grown by `step` bytes, a background thread asks the kernel
to write out what is there (fdatasync), so the disk works during the transfer and the final fsync
finds little left. The receiving thread never waits for it; a flush still running when the next
step is reached simply covers it.
"""

from __future__ import annotations

import contextlib
import os
import threading

STEP = 64 << 20


class Writeback:
    """Flushes the file open as fd in the background as it grows (`grew(size)`); `with` joins."""

    def __init__(self, fd: int, step: int | None = None) -> None:
        self.fd, self.step = fd, step or STEP
        self._next = self.step
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, *exc: object) -> None:
        # The caller closes fd right after: no flush may be left running on it.
        if self._thread is not None:
            self._thread.join()

    def grew(self, size: int) -> None:
        if size < self._next or (self._thread is not None and self._thread.is_alive()):
            return
        self._next = size + self.step
        self._thread = threading.Thread(target=self._flush, name="writeback", daemon=True)
        self._thread.start()

    def _flush(self) -> None:
        # A failed early flush is not an error: the final fsync reports what really failed.
        with contextlib.suppress(OSError):
            os.fdatasync(self.fd)
