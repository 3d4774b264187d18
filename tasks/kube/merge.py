"""Merge one cluster's entries into a kubeconfig's text, leaving every other byte of it alone.

kubectl rewrites a whole kubeconfig when it changes one entry; users keep comments and their
own layout in theirs, so the merge edits the text: it replaces our named entries in place or
appends them after the last entry of their list. The edited text is parsed again and must
mean exactly the intended merge; when it does not (flow style, odd layouts), the whole
document is written out again with the same meaning instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tasks.errors import PipelineError
from tasks.yamlutil import compose, safe_load


class KubeconfigError(PipelineError):
    """A kubeconfig cannot be read or merged safely."""


# (top-level list, key holding the entry's body)
SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


@dataclass(frozen=True)
class Entries:
    """One cluster's three kubeconfig entries, each {"name": ..., <kind>: {...}}."""

    cluster: dict[str, Any]
    user: dict[str, Any]
    context: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.context["name"])

    def by_section(self) -> dict[str, dict[str, Any]]:
        return {"clusters": self.cluster, "users": self.user, "contexts": self.context}


def dump(data: Any) -> str:
    # Huge width: PyYAML would otherwise fold long strings; base64 data stays on one line.
    return str(yaml.safe_dump(data, default_flow_style=False, sort_keys=False, width=1 << 30))


def new_document(entries: Entries) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [entries.cluster],
        "users": [entries.user],
        "contexts": [entries.context],
        "current-context": entries.name,
    }


def parse(text: str, source: str) -> dict[str, Any] | None:
    """The kubeconfig as data (None when empty); KubeconfigError if it is not one."""
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeconfigError(
            f"{source} is not valid YAML: {exc}", "fix or move the file; nothing was changed"
        ) from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise KubeconfigError(f"{source} is not a kubeconfig: its top level is a {type(data).__name__}")
    for section, kind in SECTIONS:
        items = data.get(section)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) and "name" in i for i in items):
            raise KubeconfigError(
                f"{source}: '{section}' must be a list of entries with a name and a '{kind}'",
                "fix the file by hand (kubectl would not read it either); nothing was changed",
            )
    return data


def merged_document(data: dict[str, Any] | None, entries: Entries, make_current: bool) -> dict[str, Any]:
    """data with our entries replaced (same name) or appended; other entries untouched."""
    if data is None:
        return new_document(entries)
    result = dict(data)
    for section, entry in entries.by_section().items():
        items = list(result.get(section) or [])
        names = [i.get("name") for i in items]
        if entry["name"] in names:
            items[names.index(entry["name"])] = entry
        else:
            items.append(entry)
        result[section] = items
    if make_current or not result.get("current-context"):
        result["current-context"] = entries.name
    return result


def merge_text(text: str, entries: Entries, make_current: bool, source: str = "kubeconfig") -> str:
    """The new text of a kubeconfig holding entries; untouched entries keep their exact text."""
    data = parse(text, source)
    expected = merged_document(data, entries, make_current)
    if data is None:
        # Only comments (or nothing): keep them above the new document.
        prefix = text if not text or text.endswith("\n") else text + "\n"
        return prefix + dump(expected)
    spliced = _splice(text, expected, entries, make_current or not data.get("current-context"))
    if spliced is not None:
        try:
            if safe_load(spliced) == expected:
                return spliced
        except yaml.YAMLError:
            pass
    return dump(expected)


class _Text:
    """Positions in the original text, and the edits to apply to it."""

    def __init__(self, text: str) -> None:
        self.text = text if text.endswith("\n") else text + "\n"
        self.edits: list[tuple[int, int, str]] = []

    def line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def line_end(self, index: int) -> int:
        """Just past the newline that ends the line holding index (trailing comment included)."""
        if index > 0 and self.text[index - 1] == "\n":
            return index
        found = self.text.find("\n", index)
        return len(self.text) if found < 0 else found + 1

    def content_end(self, node: yaml.Node) -> int:
        """Where a node's own text ends (a block collection's end mark lies at the next token)."""
        if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
            return max(max(self.content_end(k), self.content_end(v)) for k, v in node.value)
        if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
            return self.content_end(node.value[-1])
        return int(node.end_mark.index)

    def block_item_start(self, item: yaml.Node) -> int | None:
        """The start of the line holding a block sequence item's dash, if the dash opens it."""
        dash = self.text.rfind("-", 0, item.start_mark.index)
        start = self.line_start(dash)
        if dash < 0 or self.text[start:dash].strip():
            return None
        return start

    def apply(self) -> str:
        out, pos = [], 0
        for start, end, new in sorted(self.edits, key=lambda e: (e[0], e[1])):
            out.append(self.text[pos:start])
            out.append(new)
            pos = end
        out.append(self.text[pos:])
        return "".join(out)


def _indent(text: str, columns: int) -> str:
    pad = " " * columns
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def _scalar_key(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _splice(text: str, expected: dict[str, Any], entries: Entries, set_current: bool) -> str | None:
    root = compose(text)
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        return None
    t = _Text(text)
    end = len(t.text)
    for section, entry in entries.by_section().items():
        found = [(k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == section]
        if not found:
            t.edits.append((end, end, dump({section: [entry]})))
            continue
        key, seq = found[0]
        if not isinstance(seq, yaml.SequenceNode) or seq.flow_style or not seq.value:
            # null, [] or a flow list: rewrite just this key's lines.
            start = t.line_start(key.start_mark.index)
            t.edits.append((start, t.line_end(t.content_end(seq)), dump({section: expected[section]})))
            continue
        starts = [t.block_item_start(item) for item in seq.value]
        if None in starts:
            return None
        dash_column = t.text.index("-", starts[0] or 0) - (starts[0] or 0)
        rendered = _indent(dump([entry]), dash_column)
        names = [_scalar_key(item, "name") for item in seq.value]
        same = [i for i, n in enumerate(names) if isinstance(n, yaml.ScalarNode) and n.value == entry["name"]]
        if same:
            item = seq.value[same[0]]
            t.edits.append((starts[same[0]] or 0, t.line_end(t.content_end(item)), rendered))
        else:
            after = t.line_end(t.content_end(seq.value[-1]))
            t.edits.append((after, after, rendered))
    if set_current:
        current = [
            (k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "current-context"
        ]
        line = dump({"current-context": entries.name})
        if current:
            key, value = current[0]
            t.edits.append((t.line_start(key.start_mark.index), t.line_end(t.content_end(value)), line))
        else:
            t.edits.append((end, end, line))
    return t.apply()
