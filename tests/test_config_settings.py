"""The setting declarations: the one place each config key is stated, kept in step with the docs."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.config import Cluster, parse_config
from tasks.config.kinds import Items
from tasks.config.reader import Reader
from tasks.config.settings import (
    Section,
    Setting,
    derived,
    read_section,
    section,
    setting,
    settings_of,
    walk,
)
from tasks.config.yamlsource import Located
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIG_TEXT = (ROOT / "config.yaml").read_text()
SETTINGS = list(walk(Cluster))


def _value(root: Any, path: str) -> Any:
    for key in path.split("."):
        root = getattr(root, key)
    return root


def _present(data: Any, path: str) -> bool:
    """Whether path (nodes[].mac: in any entry) is a key in data."""
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        return any(_present(item, rest) for item in data.get(head[:-2]) or [])
    if not isinstance(data, dict) or head not in data:
        return False
    return not rest or _present(data[head], rest)


def test_declarations_cover_the_model() -> None:
    """Every field of every model class is a setting or declared derived, each with one line of help."""
    assert len(SETTINGS) > 50
    for path, s in SETTINGS:
        assert s.help and "\n" not in s.help and len(s.help) <= 110, path
    assert [p for p, _ in SETTINGS if p.startswith("nodes[].")] == [
        "nodes[].name", "nodes[].role", "nodes[].ip", "nodes[].mac", "nodes[].vm",
    ]


def test_every_setting_is_in_config_yaml() -> None:
    """config.yaml shows every key, set or as a commented example (`# key: value`)."""
    uncommented = re.sub(r"(?m)^(\s*)# ([a-z_]+:(?: |$))", r"\1\2", CONFIG_TEXT)
    data = yaml.safe_load(uncommented)
    missing = [path for path, _ in SETTINGS if not _present(data, path)]
    assert not missing, f"declared but not shown in config.yaml: {missing}"


def test_every_setting_is_in_the_readme_reference() -> None:
    """The README's configuration table names every key: a top-level one in its own row, a
    section's keys in the section's row."""
    rows: dict[str, str] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\| `([a-z_]+)(\[\])?` \|", line)
        if match:
            rows[match[1]] = line
    missing = []
    for path, _ in SETTINGS:
        top, _, rest = path.replace("[]", "").partition(".")
        if top not in rows or (rest and f"`{rest.split('.')[0]}`" not in rows[top]):
            missing.append(path)
    assert not missing, f"declared but not in the README's configuration table: {missing}"


def test_declared_defaults_are_what_config_yaml_sets() -> None:
    """config.yaml with only its required keys gives the same cluster: every value it sets is
    the declared default. Exceptions: required settings (config.yaml must set them; their default
    only stands in while checking goes on), and the nodes' keys (entries are examples, not defaults)."""
    full = yaml.safe_load(CONFIG_TEXT)
    required = {p for p, s in SETTINGS if s.required}
    assert required == {"name", "nodes", "network", "network.vip", "network.gateway",
                        "nodes[].name", "nodes[].role", "nodes[].ip"}
    minimal = {"name": full["name"], "nodes": full["nodes"],
               "network": {k: full["network"][k] for k in ("vip", "gateway")}}
    source = ROOT / "config.yaml"
    as_set = parse_config(CONFIG_TEXT, source)
    by_default = parse_config(yaml.safe_dump(minimal), source)
    compared = [p for p, s in SETTINGS if not s.required and not p.startswith("nodes[]")
                and not isinstance(s.kind, Section)]
    assert len(compared) >= 39
    for path in compared:
        assert _value(as_set, path) == _value(by_default, path), path
    assert as_set == by_default


LEAF_TYPES = (str, int, bool, Path, ipaddress.IPv4Address, ipaddress.IPv4Network)


def test_loaded_values_have_their_declared_types() -> None:
    """Kinds and rules.py deliver what the annotations promise (a Path setting is resolved)."""
    cluster = parse_config(CONFIG_TEXT, ROOT / "config.yaml")
    for path, _ in SETTINGS:
        if path.startswith("nodes[]"):
            continue
        parent, _, key = path.rpartition(".")
        owner = _value(cluster, parent) if parent else cluster
        hint = typing.get_type_hints(type(owner))[key]
        expected = typing.get_origin(hint) or hint
        assert isinstance(_value(cluster, path), expected), (path, hint)
        if expected is Path:
            assert _value(cluster, path).is_absolute(), path


def edited(path: tuple[Any, ...], value: Any) -> str:
    data = yaml.safe_load(CONFIG_TEXT)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


EMPTY = [
    (("name",), None, "name", "is empty: give a value (the cluster's name"),
    (("name",), "", "name", "is empty"),
    (("network", "vip"), None, "network.vip", "is empty: give a value"),
    (("nodes", 0, "role"), None, "nodes[0].role", "is empty"),
    (("nodes", 0, "ip"), None, "nodes[0].ip", "is empty"),
    (("nodes", 0, "vm"), None, "nodes[0].vm", "is empty"),
    (("kubernetes", "token_ttl"), "", "kubernetes.token_ttl", "or remove the key for the default (720h)"),
    (("vm", "memory_mib"), None, "vm.memory_mib", "or remove the key for the default (4096)"),
    (("flatcar",), None, "flatcar", "is empty"),
    (("ssh_authorized_keys",), [""], "ssh_authorized_keys[0]", "is empty: give a value or remove the entry"),
    (("kubernetes", "crio_version"), None, "kubernetes.crio_version", "is empty"),
]


@pytest.mark.parametrize(("keys", "value", "path", "words"), EMPTY, ids=[e[2] + repr(e[1]) for e in EMPTY])
def test_present_but_empty_is_never_a_silent_default(keys: tuple[Any, ...], value: Any, path: str,
                                                      words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(edited(keys, value), ROOT / "config.yaml")
    assert [(p.path, words in p.message) for p in info.value.problems] == [(path, True)], str(info.value)
    assert info.value.problems[0].line is not None


def default_when_empty(r: Reader, path: str, s: Setting, fallback: Any) -> Any:
    """An `empty=` policy: here `key:` alone means the default."""
    return fallback


def not_ssh(port: int) -> str | None:
    return "22 is sshd's" if port == 22 else None


@section
class Toy:
    """A new setting is one declaration: these lines are all it takes."""

    port: int = setting(8080, minimum=1, maximum=65535, check=(not_ssh,), help="where it listens")
    label: str = setting("toy", empty=default_when_empty, help="what it is called")
    peers: tuple[ipaddress.IPv4Address, ...] = setting(("10.0.0.1",), single=True, help="who it talks to")
    note: str = derived(default="", help="computed by the loader")


def read_toy(data: Any) -> tuple[Toy, list[str]]:
    r = Reader(Located(data, {"toy": 3}))
    toy = read_section(r, Toy, "toy", data)
    return toy, [str(p) for p in r.problems]


def test_a_new_setting_is_one_declaration() -> None:
    toy, problems = read_toy({})
    assert (toy.port, toy.label, toy.peers, problems) == (8080, "toy", (ipaddress.IPv4Address("10.0.0.1"),), [])
    toy, problems = read_toy({"label": None, "peers": "10.0.0.9", "port": 9000})
    assert (toy.port, toy.label, toy.peers, problems) == (9000, "toy", (ipaddress.IPv4Address("10.0.0.9"),), [])
    _, problems = read_toy({"prot": 1, "port": 22, "peers": ["x"]})
    assert problems == [
        "toy.prot (line 3): unknown key 'prot'; did you mean 'port'?",
        "toy.port (line 3): 22 is sshd's",
        "toy.peers[0] (line 3): 'x' is not an IPv4 address (like 192.168.122.31)",
    ]
    _, problems = read_toy({"port": 0, "label": 5})
    assert problems == ["toy.port (line 3): 0 is out of range: must be between 1 and 65535",
                        "toy.label (line 3): must be a string, got 5"]
    assert isinstance(settings_of(Toy)[2].kind, Items)


def test_an_undeclared_field_is_refused() -> None:
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Sloppy:
        size: int

    with pytest.raises(TypeError, match="declare it with setting"):
        settings_of(Sloppy)


def test_importing_the_config_package_is_light() -> None:
    heavy = ("yaml", "jinja2", "cryptography", "requests")
    code = f"import sys, tasks.config; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert proc.stdout.strip() == "[]"
