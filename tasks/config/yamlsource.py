"""YAML loading that remembers where every value came from (for error messages)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.config.yamlguard import MAX_BYTES, MAX_DEPTH, Guard, Refused, construct_scalar, line_of
from tasks.errors import Problem


@dataclass
class Located:
    """Plain data from a YAML document plus the line of every path in it."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line(self, path: str) -> int | None:
        """Line of path, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get("")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _convert(node: Any, path: str, lines: dict[str, int], problems: list[Problem], construct: Any) -> Any:
    """Plain data from a node tree the Guard accepted (bounded, acyclic, plain tags only)."""
    import yaml

    lines[path] = line_of(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            try:
                key = construct_scalar(key_node, construct)
            except ValueError as exc:
                problems.append(Problem(path or "<top>", line_of(key_node), f"a key {exc}"))
                continue
            if not isinstance(key, str):
                problems.append(
                    Problem(path or "<top>", key_node.start_mark.line + 1, f"key {key!r} is not a string")
                )
                continue
            child = join(path, key)
            if key in result:
                problems.append(
                    Problem(child, key_node.start_mark.line + 1, "is given twice; keep one")
                )
            lines[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, lines, problems, construct)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, join(path, i), lines, problems, construct) for i, item in enumerate(node.value)]
    try:
        return construct_scalar(node, construct)
    except ValueError as exc:
        problems.append(Problem(path or "<top>", line_of(node), str(exc)))
        return None


def parse_located(text: str) -> tuple[Located, list[Problem]]:
    """Parse one YAML document; malformed or hostile YAML becomes a Problem, never an exception
    (and never a hang or a memory blow-up: see yamlguard.py)."""
    import yaml

    from tasks.yamlutil import compose

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        return Located(None), [Problem("<file>", None, f"is {size} bytes; a config is at most {MAX_BYTES // 1024} KiB "
                                       "(the default one is about 6 KB): is this the right file?")]
    try:
        root = compose(text.removeprefix("\ufeff"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        return Located(None), [Problem("<yaml>", line, f"malformed YAML: {exc.problem}")]
    except yaml.YAMLError as exc:
        return Located(None), [Problem("<yaml>", None, f"malformed YAML: {exc}")]
    except RecursionError:  # the pure-Python composer on a very deep nesting (libyaml stops at 1000)
        return Located(None), [Problem("<yaml>", None, f"malformed YAML: nested more than {MAX_DEPTH} levels deep")]
    if root is None:
        return Located(None), []
    try:
        refused = Guard().check(root)
    except Refused as exc:
        refused = [exc.problem]
    if refused:
        return Located(None), refused
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    data = _convert(root, "", lines, problems, yaml.constructor.SafeConstructor())
    return Located(data, lines), problems


def cache_entry(cache_dir: Path, text: str) -> Path:
    return cache_dir / (hashlib.sha256(text.encode()).hexdigest() + ".json")


# Parses made in this process, by text: remembering a valid config later needs no second parse.
_PARSED: dict[str, Located] = {}


def parsed_here(text: str) -> Located | None:
    """The parse of text made (not read from the cache) earlier in this process, if any."""
    return _PARSED.get(text)


def load_located(text: str, cache_dir: Path | None = None) -> tuple[Located, list[Problem]]:
    """parse_located, or its result remembered in cache_dir by the text's digest.

    Every doit invocation loads the config; reading the remembered result as JSON spares
    importing and running the YAML parser (a good part of a no-op build). Validation still
    runs on the result every time. `remember` writes an entry, once the config proved valid.
    """
    if cache_dir is None or len(text) > MAX_BYTES:
        return parse_located(text)
    try:
        cached = json.loads(cache_entry(cache_dir, text).read_text(encoding="utf-8"))
        return Located(cached["data"], cached["lines"]), []
    except (OSError, ValueError, KeyError, TypeError):
        pass
    located, problems = parse_located(text)
    if not problems:
        _PARSED[text] = located
    return located, problems


def remember(cache_dir: Path, text: str, located: Located) -> None:
    """Keep the parse of a valid config for the next run (only plain JSON data, checked to round-trip)."""
    entry = cache_entry(cache_dir, text)
    if not entry.exists():
        _remember(entry, located)


def _remember(entry: Path, located: Located) -> None:
    from tasks.fsutil import PRIVATE_DIR, atomic_write, make_dirs

    try:
        payload = json.dumps({"data": located.data, "lines": located.lines})
        if json.loads(payload)["data"] != located.data:
            return  # e.g. a YAML value JSON would change: parse again next time
        make_dirs(entry.parent, PRIVATE_DIR)  # 0700 down from the first missing folder, any umask
        atomic_write(entry, payload)
        _trim(entry.parent)
    except (OSError, TypeError, ValueError):
        pass  # a cache that cannot be written only costs speed


CACHE_ENTRIES = 32


def _trim(folder: Path) -> None:
    """Keep the newest CACHE_ENTRIES entries: each edit of a config adds one."""
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for stale in entries[CACHE_ENTRIES:]:
        stale.unlink(missing_ok=True)
