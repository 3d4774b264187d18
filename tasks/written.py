"""What the pipeline wrote under build/<name>/: each file's digest, mode and stat signature.

doit only checks that a target exists, and mtimes can be set back: these records tell the file a
stage wrote from an edited, emptied or replaced one by its content, so such a file is rebuilt (or,
for the PKI, refused) instead of being used.

- A private file's digest is an HMAC-SHA256 under the cluster's own key (build/<name>/digest.key,
  0600): the record of an 8-character secret cannot be brute-forced from the record file. A
  public file's is a plain SHA-256, checkable without the key (a replaced CA certificate is seen
  even if the key file is lost).
- A check costs one stat while the signature (inode, size, mtime, ctime) is the recorded one; a
  replaced file has another ctime even with its mtime restored, and only then is the file read
  and digested. Every recorded file is small (PKI, Butane, Ignition, fragments), so no-op runs
  stay cheap. (An in-place edit of the same size within the file system's timestamp granularity,
  a few milliseconds, right after the pipeline wrote the file, would go unseen.)
- Records are saved under the state lock by merging this process's changes into the file on
  disk, so concurrent or parallel (`doit -P`) runs never drop each other's records. A record is
  saved when its action ends, except those of outputs written with durable=False (each node's
  Butane and Ignition): a doit run saves them once, with their fsync, right before doit's state
  (tasks/stages/base.py: records_saved_at_end).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from tasks.fsutil import PRIVATE_FILE, atomic_write, signature, write_if_changed
from tasks.paths import Build

# What status() finds for a file.
OK = "ok"  # the recorded content and mode
MODE = "mode"  # the recorded content, another mode
CHANGED = "changed"  # other content (or no longer a regular file)
MISSING = "missing"
UNKNOWN = "unknown"  # never recorded, or recorded under a key that is gone

_FORMAT = 1


def load_key(path: Path, *, create: bool) -> bytes | None:
    """The cluster's digest key; with create, made (0600) when missing or unreadable."""
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) == 32:
            return key
    except (OSError, ValueError):
        pass
    if not create:
        return None
    import secrets

    atomic_write(path, secrets.token_hex(32) + "\n", PRIVATE_FILE)
    return load_key(path, create=False)


def key_id(key: bytes) -> str:
    """A short name of the key (not a secret: a digest of 32 random bytes)."""
    import hashlib

    return hashlib.sha256(b"flatcar-ha key id\0" + key).hexdigest()[:12]


def keyed_digest(key: bytes, path: Path) -> str:
    import hmac

    mac = hmac.new(key, digestmod="sha256")
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            mac.update(block)
    return mac.hexdigest()


class Written:
    """The records of one build folder, loaded when first asked and saved by flush()."""

    def __init__(self, paths: Build) -> None:
        self.paths = paths
        self._root = os.fspath(paths.root) + os.sep
        self._files: dict[str, dict[str, Any]] | None = None
        self._touched: set[str] = set()
        # Touched records of outputs written with durable=False: their saving may wait for the
        # end of the run like their fsync (any other record is saved when its action ends).
        self._deferrable: set[str] = set()
        self._key: bytes | None = None
        self._key_id = ""
        self._guard = threading.RLock()

    # --- reading --------------------------------------------------------------------------------

    def _rel(self, path: Path | str) -> str | None:
        """path relative to build/<name>/ (paths come from tasks/paths.py: absolute, normalised)."""
        text, root = os.fspath(path), self._root
        return text[len(root):] if text.startswith(root) else None

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.paths.written.read_text(encoding="utf-8"))
            files = data["files"] if data.get("format") == _FORMAT else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            print(f"WARNING: {self.paths.written} is unreadable; every output is checked again",
                  file=sys.stderr)
            return {}
        return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        with self._guard:
            if self._files is None:
                self._files = self._read()
            return self._files

    def reload(self) -> None:
        """Forget what was read: another run may have written since (call after taking the run lock)."""
        with self._guard:
            self._files, self._touched, self._deferrable = None, set(), set()

    def key(self, *, create: bool = False) -> bytes | None:
        """The cluster's digest key; create: made when missing (the folder is claimed first)."""
        with self._guard:
            if self._key is None:
                self._set_key(load_key(self.paths.digest_key, create=False))
            if self._key is not None or not create:
                return self._key
        from tasks.buildroot import state_lock

        # Lock order everywhere: the state lock before this object's guard.
        with state_lock(self.paths):  # claims the folder; no sweep meanwhile
            made = load_key(self.paths.digest_key, create=True)
        with self._guard:
            self._set_key(made)
            return self._key

    def _set_key(self, key: bytes | None) -> None:
        self._key, self._key_id = key, key_id(key) if key is not None else ""

    @property
    def key_id(self) -> str:
        """The short name of the key (key() first); "" when there is none."""
        self.key()
        return self._key_id

    def recorded(self, path: Path) -> bool:
        rel = self._rel(path)
        return rel is not None and rel in self.files

    def status(self, path: Path | str) -> str:
        """How path compares with what was recorded (one stat unless its signature changed)."""
        rel = self._rel(path)
        entry = self.files.get(rel) if rel is not None else None
        if entry is None:
            return UNKNOWN
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return MISSING
        if not stat.S_ISREG(st.st_mode):
            return CHANGED
        mode = OK if stat.S_IMODE(st.st_mode) == entry.get("mode") else MODE
        if entry.get("sig") == list(signature(st)):
            return mode
        current = self._digest(path, str(entry.get("digest")))
        if current is None:
            return UNKNOWN
        if current != entry.get("digest"):  # digests of files, not a secret compared with a guess
            return CHANGED
        with self._guard:
            entry["sig"] = list(signature(st))  # same content: saved with the next flush
            self._touched.add(str(rel))
        return mode

    def _digest(self, path: Path | str, like: str) -> str | None:
        """path's digest in the form of `like`: "sha256:<hex>" for a public file (no key needed, so
        a replaced certificate is seen even without the key), "hmac:<key id>:<hex>" for a private
        one; None when like names a key that is gone."""
        if like.startswith("sha256:"):
            from tasks.fsutil import sha256_file

            return "sha256:" + sha256_file(Path(path))
        key = self.key()
        if key is None or not like.startswith(f"hmac:{self._key_id}:"):
            return None
        return f"hmac:{self._key_id}:{keyed_digest(key, Path(path))}"

    def owned(self, path: Path) -> bool:
        """True when path is a file the pipeline wrote and nobody changed since (safe to delete)."""
        return self.status(path) in (OK, MODE)

    # --- writing --------------------------------------------------------------------------------

    def write(self, path: Path, data: bytes | str, mode: int, *, durable: bool = True) -> bool:
        """write_if_changed + record; a file changed since it was written is named on stderr.

        durable=False: synced with the run's other such outputs before doit's state is saved
        (fsutil.sync_pending); a record of a file lost meanwhile only makes its task run again."""
        if self.status(path) == CHANGED:
            print(f"WARNING: {path} was changed since flatcar-ha wrote it: rewritten", file=sys.stderr)
        changed = write_if_changed(path, data, mode, durable=durable)
        self.record(path, mode)
        rel = self._rel(path)
        if not durable and rel is not None:
            with self._guard:
                self._deferrable.add(rel)
        return changed

    def record(self, path: Path, mode: int | None = None) -> None:
        """Record path as the pipeline's output as it is now (its mode set first, when given)."""
        rel = self._rel(path)
        if rel is None:
            return
        st = os.stat(path)
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
            st = os.stat(path)
        public = bool(st.st_mode & stat.S_IROTH)
        entry = {"mode": stat.S_IMODE(st.st_mode), "sig": list(signature(st))}
        with self._guard:
            old = self.files.get(rel)
            if old is not None and all(old.get(k) == v for k, v in entry.items()) \
                    and str(old.get("digest")).startswith("sha256:" if public else f"hmac:{self.key_id}:"):
                return
        if public:
            digest = self._digest(path, "sha256:")
        else:
            self.key(create=True)
            digest = self._digest(path, f"hmac:{self._key_id}:")
        with self._guard:
            self.files[rel] = {**entry, "digest": digest}
            self._touched.add(rel)

    def forget(self, path: Path) -> None:
        rel = self._rel(path)
        with self._guard:
            if rel is not None and self.files.pop(rel, None) is not None:
                self._touched.add(rel)

    def must_save_now(self) -> bool:
        """Whether a record touched since the last save is of a file written durably (the PKI,
        admin.conf, fragments): those are saved when their action ends, never left to the end
        of the run (a kill in between would show the file as changed by someone else)."""
        with self._guard:
            return bool(self._touched - self._deferrable)

    def flush(self) -> None:
        """Save this process's changes, merged into the records on disk (under the state lock)."""
        from tasks.buildroot import state_lock

        if not self._touched:
            return
        with state_lock(self.paths), self._guard:
            merged = self._read()
            for rel in self._touched:
                if rel in self.files:
                    merged[rel] = self.files[rel]
                else:
                    merged.pop(rel, None)
            text = json.dumps({"format": _FORMAT, "files": merged}, indent=1, sort_keys=True)
            atomic_write(self.paths.written, text + "\n", PRIVATE_FILE)
            self._touched, self._deferrable = set(), set()
