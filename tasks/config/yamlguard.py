"""What a config's YAML may hold: plain values, of bounded size, without cycles.

A YAML document can be written to hurt its reader. PyYAML composes aliases as shared nodes, so
the composed tree stays as small as the text; the cost comes when it is turned into plain data,
where every alias is copied: ten levels of ten aliases (a "billion laughs") expand to 10**10
values from a few hundred bytes, and an alias inside its own anchor (`a: &a [*a]`) never ends.
So the composed tree is measured before anything is copied: each distinct node is visited once
(its expanded size and height remembered), which refuses a bomb in microseconds whatever the
number it would expand to, a cycle when it closes, and a nesting deeper than any config needs.

Only the plain types are read: null, booleans, numbers, strings, lists and mappings. A tag the
config has no use for (`!secret`, `!!binary`, `!!python/...`, `!!set`) is refused by name
rather than half-read. Timestamps (`2024-01-01`, a YAML 1.1 type YAML 1.2 dropped) and `=` are
read as the text they are, so an impossible date is a value a setting can refuse, not a crash.

Merge keys (`<<: *defaults`) are refused, not supported: they are YAML 1.1 only (1.2 dropped
them, so other readers disagree on them), their override rules contradict the "given twice"
check every other key gets, and the reuse they offer already exists where it is needed: each
node's `vm:` keys override the top-level `vm:` key by key, and a whole value can still be an
alias (`vm: *big`).
"""

from __future__ import annotations

from typing import Any

from tasks.errors import Problem

# A config is a few KB (the default one 6 KB; 200 nodes with comments about 25 KB).
MAX_BYTES = 256 * 1024
# Values after aliases are expanded; the default config holds about 120, 200 nodes about 2000.
MAX_VALUES = 50_000
# Levels of nesting, after aliases; the deepest setting (nodes[0].vm.memory_mib) is at 3.
MAX_DEPTH = 20

_CORE = "tag:yaml.org,2002:"
MAP, SEQ, MERGE = _CORE + "map", _CORE + "seq", _CORE + "merge"
# Scalar tags read as text: the YAML 1.1 types YAML 1.2 dropped and the config has no use for.
AS_TEXT = frozenset({_CORE + "str", _CORE + "timestamp", _CORE + "value"})
SCALARS = AS_TEXT | {_CORE + t for t in ("null", "bool", "int", "float")}


class Refused(Exception):
    """The document cannot be read safely; carries the one Problem that says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def shown_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def line_of(node: Any) -> int:
    return int(node.start_mark.line) + 1


class Guard:
    """Walks a composed tree once per distinct node; records plain-type problems, raises Refused
    for what must stop the reading at once (an alias bomb, a cycle, a nesting too deep)."""

    def __init__(self) -> None:
        self.size: dict[int, int] = {}
        self.height: dict[int, int] = {}
        self.open: set[int] = set()
        self.problems: list[Problem] = []

    def check(self, root: Any) -> list[Problem]:
        self._visit(root, "", 0)
        return self.problems

    def _visit(self, node: Any, path: str, depth: int) -> None:
        import yaml

        key = id(node)
        if key in self.open:
            raise Refused(Problem(path or "<top>", line_of(node),
                                  "an alias refers to a value that contains it (a recursive alias): "
                                  "write the value out instead"))
        if key in self.size:  # an alias to a node measured already
            self._check_depth(node, path, depth + self.height[key])
            return
        self._check_depth(node, path, depth)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in SCALARS:
                self._tag(node, path)
            self.size[key], self.height[key] = 1, 0
            return
        self.open.add(key)
        children = self._children(node, path)
        for child, where in children:
            self._visit(child, where, depth + 1)
        self.open.discard(key)
        self.size[key] = 1 + sum(self.size[id(c)] for c, _ in children)
        self.height[key] = 1 + max((self.height[id(c)] for c, _ in children), default=0)
        if self.size[key] > MAX_VALUES:
            raise Refused(Problem(path or "<top>", line_of(node),
                                  f"expands to more than {MAX_VALUES} values through aliases (an alias bomb?); "
                                  "a config needs far fewer: write the values out"))

    def _children(self, node: Any, path: str) -> list[tuple[Any, str]]:
        import yaml

        from tasks.config.yamlsource import join

        if isinstance(node, yaml.SequenceNode):
            if node.tag != SEQ:
                self._tag(node, path)
            return [(item, join(path, i)) for i, item in enumerate(node.value)]
        if node.tag != MAP:
            self._tag(node, path)
        children: list[tuple[Any, str]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise Refused(Problem(path or "<top>", line_of(key_node),
                                      "a key must be a plain name, not a list or mapping"))
            where = join(path, str(key_node.value))
            if key_node.tag == MERGE:
                self.problems.append(Problem(where, line_of(key_node),
                                             "merge keys (<<) are not supported: write the keys out, or make the "
                                             "whole value an alias (vm: *big); each node's vm keys already "
                                             "override the top-level vm"))
                continue
            children += [(key_node, where), (value_node, where)]
        return children

    def _tag(self, node: Any, path: str) -> None:
        self.problems.append(Problem(path or "<top>", line_of(node),
                                     f"the tag {shown_tag(node.tag)} is not supported: this file holds plain "
                                     "values (text, numbers, true/false, lists, mappings); write the value itself"))

    @staticmethod
    def _check_depth(node: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Refused(Problem(path or "<top>", line_of(node),
                                  f"is nested more than {MAX_DEPTH} levels deep (a config needs 4)"))


def construct_scalar(node: Any, constructor: Any) -> Any:
    """A scalar node's plain value; ValueError (with a message) when its tag cannot read its text."""
    import yaml

    if node.tag in AS_TEXT:
        return node.value
    try:
        return constructor.construct_object(node)
    except (ValueError, KeyError, OverflowError, yaml.YAMLError):
        # e.g. `!!int abc`, `!!bool maybe`, or an integer beyond Python's 4300-digit limit.
        text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        raise ValueError(f"{text!r} cannot be read as {shown_tag(node.tag)}: write a plain value") from None
