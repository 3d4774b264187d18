"""Read Butane YAML into a typed tree that remembers where every value came from.

PyYAML's composer gives nodes with positions; the schema tells what each key must hold. The
reading rules follow Go's yaml.v3 decoding into Butane's structs: a scalar in a string field
keeps its literal text (`3.50` stays "3.50"), ints accept 0644 / 0o644 / 0x1a4 (Go ParseInt
with base 0, so a leading zero means octal), bools accept the YAML 1.1 words (yes/no/on/off),
null leaves the field unset, and a key the struct does not have is an "unused key" warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from tasks.butane.diag import PathTuple, Report
from tasks.butane.schema import BOOL, INT, STR, ListOf, Obj, Type
from tasks.yamlutil import SafeLoader as _Loader

_NULL_TAG = "tag:yaml.org,2002:null"
_TRUE = frozenset("y Y yes Yes YES on On ON true True TRUE".split())
_FALSE = frozenset("n N no No NO off Off OFF false False FALSE".split())
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


@dataclass
class Val:
    """A decoded value: str/int/bool, dict[str, Val] for objects, list[Val] for lists."""

    value: Any
    path: PathTuple
    line: int
    column: int

    def get(self, key: str) -> Val | None:
        found = self.value.get(key) if isinstance(self.value, dict) else None
        return found if isinstance(found, Val) else None

    def scalar(self, key: str) -> Any:
        found = self.get(key)
        return None if found is None else found.value


class YamlSyntaxError(Exception):
    """The text is not YAML; line/column are 1-based like Go's messages."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def compose(text: str | bytes) -> yaml.Node | None:
    """Parse YAML text to a node tree, turning PyYAML errors into YamlSyntaxError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlSyntaxError(f"invalid UTF-8 at byte {exc.start}", None, None) from exc
    text = text.removeprefix("\ufeff")
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        # Like Go's yaml.v3, locate the error where the broken construct starts (the
        # context) when there is one: "unterminated quote" points at the quote.
        mark = exc.context_mark or exc.problem_mark
        message = " ".join(p for p in (exc.problem, exc.context) if p) or "invalid YAML"
        if (
            exc.context_mark is not None
            and exc.problem_mark is not None
            and exc.problem_mark.line != exc.context_mark.line
        ):
            problem = exc.problem_mark
            message += f" (problem at line {problem.line + 1} col {problem.column + 1})"
        if mark is None:
            raise YamlSyntaxError(message, None, None) from exc
        raise YamlSyntaxError(message, mark.line + 1, mark.column + 1) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None, None) from exc


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _tag(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "!!map"
    if isinstance(node, yaml.SequenceNode):
        return "!!seq"
    tag = str(node.tag)
    return "!!" + tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f"{_tag(node)} `{node.value}`"
    return _tag(node)


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def parse_go_int(text: str) -> int | None:
    """Go's strconv.ParseInt(s, 0, 64) after yaml.v3 drops underscores; None if invalid."""
    body = text.replace("_", "")
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    lower = body.lower()
    base = 10
    if lower.startswith("0x"):
        base, body = 16, body[2:]
    elif lower.startswith("0o"):
        base, body = 8, body[2:]
    elif lower.startswith("0b"):
        base, body = 2, body[2:]
    elif len(body) > 1 and body.startswith("0"):
        base, body = 8, body[1:]
    if not body or not body.isascii() or not body.isalnum():
        return None
    try:
        value = sign * int(body, base)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


class Reader:
    """Turns composed nodes into Val trees following a schema, collecting diagnostics."""

    def __init__(self, version: tuple[int, int], report: Report) -> None:
        self.version = version
        self.report = report
        self._seen: set[int] = set()

    def read(self, node: yaml.Node, typ: Type, path: PathTuple) -> Val | None:
        """Decode node as typ; None when it is null or could not be decoded."""
        if is_null(node):
            return None
        line, col = _pos(node)
        if not isinstance(node, yaml.ScalarNode):
            # An alias makes the composer hand out the same node object twice; Butane cannot
            # map such a shared subtree back to one source position and warns.
            if id(node) in self._seen:
                self.report.add(
                    "warning", path, "context tree does not match content tree", line, col
                )
            self._seen.add(id(node))
        if isinstance(typ, Obj):
            return self._object(node, typ, path)
        if isinstance(typ, ListOf):
            if not isinstance(node, yaml.SequenceNode):
                return self._mismatch(node, path, f"[]{_go_name(typ.item)}")
            items = []
            for index, child in enumerate(node.value):
                item = self.read(child, typ.item, path + (index,))
                if item is None:
                    cl, cc = _pos(child)
                    item = Val(_zero(typ.item), path + (index,), cl, cc)
                items.append(item)
            return Val(items, path, line, col)
        if not isinstance(node, yaml.ScalarNode):
            return self._mismatch(node, path, _go_name(typ))
        text = str(node.value)
        if typ == STR:
            return Val(text, path, line, col)
        # quoted and block scalars are strings to yaml.v3, never ints or bools
        if node.style:
            return self._mismatch(node, path, _go_name(typ))
        if typ == INT:
            number = parse_go_int(text)
            if number is None:
                return self._mismatch(node, path, "int")
            return Val(number, path, line, col)
        if typ == BOOL:
            if text in _TRUE:
                return Val(True, path, line, col)
            if text in _FALSE:
                return Val(False, path, line, col)
            return self._mismatch(node, path, "bool")
        raise AssertionError(f"unknown schema type {typ!r}")

    def _object(self, node: yaml.Node, typ: Obj, path: PathTuple) -> Val | None:
        if not isinstance(node, yaml.MappingNode):
            return self._mismatch(node, path, typ.name)
        line, col = _pos(node)
        fields: dict[str, Val] = {}
        seen_keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            kl, kc = _pos(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.report.add(
                    "error", path, f"mapping key must be a scalar, not {_tag(key_node)}", kl, kc
                )
                continue
            key = str(key_node.value)
            if key in seen_keys:
                self.report.add(
                    "error",
                    path + (key,),
                    f'mapping key "{key}" already defined at line {seen_keys[key]}',
                    kl,
                    kc,
                )
                continue
            seen_keys[key] = kl
            spec = typ.field(key, self.version)
            if spec is None:
                self.report.add("warning", path + (key,), f"unused key {key}", kl, kc)
                continue
            child = self.read(value_node, spec.type, path + (key,))
            if child is not None:
                fields[key] = child
        return Val(fields, path, line, col)

    def _mismatch(self, node: yaml.Node, path: PathTuple, target: str) -> Val | None:
        """Report a value of the wrong kind; returns None (nothing decoded) for the caller."""
        line, col = _pos(node)
        message = f"cannot unmarshal {_describe(node)} into {target}"
        self.report.add("error", path, message, line, col)
        return None


def _go_name(typ: Type) -> str:
    if isinstance(typ, Obj):
        return typ.name
    if isinstance(typ, ListOf):
        return "[]" + _go_name(typ.item)
    return typ


def _zero(typ: Type) -> Any:
    """Go's zero value for a null list item (a struct with all fields unset, "", 0, false)."""
    if isinstance(typ, Obj):
        return {}
    if isinstance(typ, ListOf):
        return []
    return {STR: "", INT: 0, BOOL: False}[typ]
