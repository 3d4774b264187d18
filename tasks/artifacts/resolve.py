"""`doit lock`, online: each Wanted resolved to a version, URL, sha256 and size, then one write.

Per kind (see wanted.py): a sysext's versions and sha256 come from the bakery's SHA256SUMS for
that extension (a minor -> its newest patch; an exact release must be listed); a `sha256sum`
file's from `<file>.sha256sum`; a `file`'s from hashing the download. Every file is then asked
for (HEAD) so a listed-but-missing file is caught here, with its HTTP status, not at first boot.

The lock is written once, atomically, after every artifact resolved: a failure leaves the old
lock (or none) exactly as it was. An entry that still matches the config is kept as it is,
without asking anyone (so `doit lock` is offline once the lock matches); `update` resolves
every entry again. Re-resolving a version the lock already pinned must give the same sha256
(a mirror of the same files does): otherwise the published file changed, and that is refused.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tasks.artifacts.lockfile import Entry, dumps, lock_path, mismatch, read_lock
from tasks.artifacts.pins import Pins
from tasks.artifacts.remote import Probe, fetch_text, probe
from tasks.artifacts.sums import checksum_for, parse_sums
from tasks.artifacts.wanted import ARCH, Wanted, shown, wanted
from tasks.config import Cluster
from tasks.config.model import minor_of
from tasks.errors import ArtifactError, DownloadError
from tasks.flatcar.download import DEFAULT_POLICY, DownloadPolicy

# A file the lock hashes itself (kind `file`) is a manifest or a script, not an image.
FILE_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Locked:
    """The outcome of `doit lock`: every entry, which were resolved now, and whether the file changed."""

    entries: dict[str, Entry]
    resolved: tuple[str, ...]
    written: bool


def lock_cluster(c: Cluster, *, update: bool = False, policy: DownloadPolicy = DEFAULT_POLICY,
                 say: Callable[[str], None] | None = None) -> Locked:
    """Resolve c's artifacts into its lock file (see the module docstring)."""
    from tasks.fsutil import PUBLIC_FILE, write_if_changed

    say = say or _stderr
    path = lock_path(c.source)
    old = read_lock(path) or {}
    entries: dict[str, Entry] = {}
    resolved = []
    for w in wanted(c):
        previous = old.get(w.name)
        if not update and previous is not None and mismatch(w, previous) is None:
            entries[w.name] = previous
            continue
        entries[w.name] = resolve(w, previous, policy)
        resolved.append(w.name)
        say(_line(w, entries[w.name]))
    written = write_if_changed(path, dumps(entries), PUBLIC_FILE)
    say(f"{path}: {'written' if written else 'unchanged'} ({len(entries)} artifacts)")
    return Locked(entries, tuple(resolved), written)


def resolve(w: Wanted, previous: Entry | None, policy: DownloadPolicy = DEFAULT_POLICY) -> Entry:
    """One artifact, online; ArtifactError naming what is missing or wrong."""
    entry = _RESOLVERS[w.kind](w, policy)
    if previous is not None and previous.version == entry.version and previous.sha256 != entry.sha256:
        raise ArtifactError(
            f"{w.name} {entry.version}: {entry.sha256_from or entry.url} gives sha256 {entry.sha256}, but the lock "
            f"pinned {previous.sha256}: the published file changed after it was locked (or the mirror serves "
            "another file)",
            f"find out why before trusting it; to accept the new file, delete the {w.name!r} entry from the "
            "lock and run `doit lock` again",
        )
    return entry


# --- kinds ----------------------------------------------------------------------------------------

def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


def published(sums: Mapping[str, str], name: str) -> dict[str, str]:
    """version -> sha256 of every release of extension `name` for the nodes' architecture."""
    pattern = re.compile(re.escape(name) + r"-(v\d+\.\d+\.\d+)-" + re.escape(ARCH) + r"\.raw")
    found = {m.group(1): digest for file, digest in sums.items() if (m := pattern.fullmatch(file))}
    return dict(sorted(found.items(), key=lambda item: _version_key(item[0])))


def _versions(w: Wanted, policy: DownloadPolicy) -> dict[str, str]:
    """A sysext's published releases (version -> sha256), read from the bakery's SHA256SUMS."""
    what = f"{w.name} versions"
    return published(parse_sums(fetch_text(w.sha256_from, what, policy), f"{what}: {w.sha256_from}"), w.name)


def _sysext(w: Wanted, policy: DownloadPolicy) -> Entry:
    versions = _versions(w, policy)
    if w.exact is not None:
        if w.exact not in versions:
            raise _not_published(w, w.exact, versions, probe(w.url_for(w.exact), policy))
        version = w.exact
    else:
        in_minor = [v for v in versions if minor_of(v) == w.requested]
        if not in_minor:
            minors = sorted({minor_of(v) for v in versions}, key=_version_key)
            raise ArtifactError(
                f"{w.name} {shown(w.requested)} is not published: {w.sha256_from} lists no "
                f"{shown(w.requested)} release (its minors: {', '.join(shown(m) for m in minors) or 'none'})",
                f"set {w.setting} to one of those minors, then run `doit lock`",
            )
        version = in_minor[-1]
    url = w.url_for(version)
    answer = probe(url, policy)
    if answer.status != 200:
        raise ArtifactError(f"{w.name} {version} is listed in {w.sha256_from}, but {url} answers "
                            f"HTTP {answer.status}",
                            "the bakery (or mirror) lists a file it does not serve; try again later or pin "
                            f"another release of {shown(minor_of(version))}")
    return Entry(w.kind, w.requested, version, url, versions[version], answer.size, w.sha256_from)


def _not_published(w: Wanted, version: str, versions: Mapping[str, str], answer: Probe) -> ArtifactError:
    minor = minor_of(version)
    same = [v for v in versions if minor_of(v) == minor]
    status = f"{answer.url} answers HTTP {answer.status}" + (
        f" but {w.sha256_from} does not list it, so its sha256 is unknown" if answer.status == 200 else "")
    has = (f"{shown(minor)} has {', '.join(same)}" if same else
           f"{w.sha256_from} lists no {shown(minor)} release at all")
    return ArtifactError(
        f"{w.name} {version} is not published: {status}; {has}",
        f"set {w.setting} to {shown(minor)!r} (its newest patch) or one of the releases listed, "
        "then run `doit lock`" if same else f"choose a published minor for {w.setting}, then run `doit lock`",
    )


def _sha256sum(w: Wanted, policy: DownloadPolicy) -> Entry:
    version = w.requested
    url, sums_url = w.url_for(version), w.sums_url(version)
    answer = probe(url, policy)
    if answer.status != 200:
        raise ArtifactError(f"{w.name} {version} is not published: {url} answers HTTP {answer.status}",
                            f"check {w.setting} ({version}) and the URL template; the project's releases "
                            "page lists the published tags")
    digest = checksum_for(fetch_text(sums_url, f"{w.name} {version} checksum", policy), sums_url,
                          w.file_name(version))
    return Entry(w.kind, w.requested, version, url, digest, answer.size, sums_url)


def _file(w: Wanted, policy: DownloadPolicy) -> Entry:
    from tasks.flatcar.download import NotFoundError, download_file
    from tasks.fsutil import private_tempdir, sha256_file

    version = w.requested
    url = w.url_for(version)
    with private_tempdir(prefix="flatcar-ha-lock-") as tmp:
        try:
            result = download_file(url, tmp / "file", policy, FILE_MAX_BYTES)
        except NotFoundError as exc:
            raise ArtifactError(f"{w.name} {version} is not published: {exc.message}",
                                f"check {w.setting} ({version}) and the URL") from None
        except DownloadError as exc:
            raise ArtifactError(f"{w.name} {version}: {exc.message}", exc.hint) from None
        return Entry(w.kind, w.requested, version, url, sha256_file(tmp / "file"), result.size, "")


_RESOLVERS: dict[str, Callable[[Wanted, DownloadPolicy], Entry]] = {
    "sysext": _sysext, "sha256sum": _sha256sum, "file": _file,
}


# --- before a VM boots ----------------------------------------------------------------------------

def check_published(c: Cluster, pins: Pins, policy: DownloadPolicy = DEFAULT_POLICY) -> None:
    """Every locked file still answers 200 at its locked size: else no VM is made to fail at boot."""
    by_name = {w.name: w for w in wanted(c)}
    for pin in pins.items:
        answer = probe(pin.url, policy)
        changed = answer.status == 200 and None not in (answer.size, pin.size) and answer.size != pin.size
        if answer.status == 200 and not changed:
            continue
        w = by_name[pin.name]
        what = f"HTTP {answer.status}" if not changed else f"{answer.size} bytes, not the {pin.size} locked"
        message = f"{pin.name} {pin.version}: {pin.url} answers {what}"
        if w.kind == "sysext":
            versions = _versions(w, policy)
            same = [v for v in versions if minor_of(v) == minor_of(pin.version)]
            message += f"; {shown(minor_of(pin.version))} has {', '.join(same) or 'no release'} in {w.sha256_from}"
        raise ArtifactError(message, "no VM was created: nodes would fail at first boot; "
                                     "run `doit lock update=1` to pin what is published now")


def _line(w: Wanted, e: Entry) -> str:
    size = "size unknown" if e.size is None else \
        f"{e.size / (1 << 20):.1f} MiB" if e.size >= 1 << 20 else f"{e.size / 1024:.1f} KiB"
    return f"  {w.name:<11} {shown(w.requested):>8} -> {e.version:<9} sha256 {e.sha256[:16]}...  {size:>10}  {e.url}"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
