"""Where the pipeline may write: build_dir/<name>/ and flatcar.cache_dir, checked before any write.

The pipeline makes build_dir/<name>/ private (chmod 0700), writes and replaces files in it and
`prune` deletes the files of removed nodes there; it creates folders under cache_dir and keeps
the verified image and the templates' bytecode there. So these must be folders of their own:
`build_dir: /` with `name: tmp` would chmod /tmp; `build_dir: /tmp` puts the CA keys where any
user can create build/<name> first and where a reboot empties it; a cache under /tmp lets any
user plant the templates' bytecode. A value that is a file (or lies below one) would fail half
way, after the PKI was written. Symbolic links are followed, as the writes would follow them.

System folders are the top-level ones of the Filesystem Hierarchy Standard and every folder
directly in /usr or /var; home folders are /root and those directly in /home (and $HOME). A
folder deeper down that some other program owns (/var/lib/libvirt) cannot be told from a fresh
one by name: that is for the runtime's ownership marker, not for config validation.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.config.reader import Reader

SYSTEM_TOP = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/var",
})
SHARED = ("/usr", "/var", "/home")  # every folder directly in these belongs to the system or a user


def system_folder(path: Path) -> str | None:
    """Why path (resolved) is not a folder the pipeline may make its own, or None."""
    text = str(path)
    if text in SYSTEM_TOP:
        return "a system folder"
    if str(path.parent) in SHARED:
        return f"a {'home' if path.parent == Path('/home') else 'system'} folder"
    if path == Path.home().resolve():
        return "your home folder"
    if str(path).startswith("/dev/") or str(path).startswith("/proc/") or str(path).startswith("/sys/"):
        return "inside a kernel filesystem"
    return None


def not_a_folder(path: Path) -> Path | None:
    """The first existing part of path (itself, else its nearest existing ancestor) that is not a folder."""
    for part in (path, *path.parents):
        if os.path.lexists(part):
            return None if part.is_dir() else part
    return None


def resolved(path: Path) -> Path:
    """path with every symbolic link and .. resolved, whether or not it exists yet."""
    return Path(os.path.realpath(path))


def contains(folder: Path, inner: Path) -> bool:
    return inner == folder or folder in inner.parents


def check_places(r: Reader, build_root: Path, cache_dir: Path, source: Path) -> None:
    """Record a problem at build_dir or flatcar.cache_dir when the pipeline must not write there."""
    from tasks.paths import PROJECT_ROOT

    if r.clean("build_dir") and r.clean("name"):
        problem = _folder_problem(build_root.parent, "build_dir") or _build_root_problem(
            resolved(build_root), {"the repository": PROJECT_ROOT, "the config file": source,
                                   "your home folder": Path.home()})
        if problem:
            r.problem("build_dir", problem)
    if r.clean("flatcar.cache_dir"):
        problem = _folder_problem(cache_dir, "cache_dir")
        if problem is None and resolved(cache_dir) == resolved(build_root):
            problem = f"{cache_dir} is also build_dir/<name>: give the shared cache a folder of its own"
        if problem:
            r.problem("flatcar.cache_dir", problem)


_OWN_FOLDER = "choose a folder of its own, such as {example} (relative paths are taken from the repository)"


def _folder_problem(folder: Path, key: str) -> str | None:
    example = "build" if key == "build_dir" else "cache"
    blocker = not_a_folder(folder)
    if blocker is not None:
        where = "is" if blocker == folder else f"lies below {blocker}, which is"
        return f"{folder} {where} a file, not a folder: {_OWN_FOLDER.format(example=example)}"
    real = resolved(folder)
    why = system_folder(real)
    if why:
        shown = str(folder) if real == folder else f"{folder} (that is {real})"
        return f"{shown} is {why}: the pipeline writes there; {_OWN_FOLDER.format(example=example)}"
    return None


def _build_root_problem(root: Path, precious: dict[str, Path]) -> str | None:
    blocker = not_a_folder(root)
    if blocker is not None:
        return f"build_dir/<name> is {root}, and {blocker} is a file, not a folder: choose another build_dir or name"
    why = system_folder(root)
    if why:
        return (f"build_dir/<name> is {root}, {why}: the pipeline makes that folder private (0700) and deletes "
                "files in it; choose another build_dir or name")
    for what, path in precious.items():
        if contains(root, resolved(path)):
            return (f"build_dir/<name> is {root}, which holds {what}: the pipeline makes that folder private "
                    "(0700) and deletes files in it; choose another build_dir or name")
    return None
