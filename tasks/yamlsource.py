"""YAML loading that remembers where every value came from (for error messages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

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


def _convert(node: yaml.Node, path: str, lines: dict[str, int], problems: list[Problem]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.constructor.SafeConstructor().construct_object(key_node)
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
            result[key] = _convert(value_node, child, lines, problems)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, join(path, i), lines, problems) for i, item in enumerate(node.value)]
    return yaml.constructor.SafeConstructor().construct_object(node)


def load_located(text: str, source: str) -> tuple[Located, list[Problem]]:
    """Parse one YAML document; malformed YAML becomes a Problem, never an exception."""
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        return Located(None), [Problem("<yaml>", line, f"malformed YAML: {exc.problem}")]
    except yaml.YAMLError as exc:
        return Located(None), [Problem("<yaml>", None, f"malformed YAML: {exc}")]
    if root is None:
        return Located(None), []
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    data = _convert(root, "", lines, problems)
    return Located(data, lines), problems
