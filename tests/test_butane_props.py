"""Property tests: data URLs round-trip byte for byte; merged config trees lose nothing."""

from __future__ import annotations

import base64
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.ignition import decode_data_url
from tasks.butane import translate_text
from tasks.butane.dataurl import make_data_url, percent_encode


def _decode(url: str, compression: str | None) -> bytes:
    data = decode_data_url(url)
    return gzip.decompress(data) if compression == "gzip" else data


@given(st.binary(max_size=4096))
def test_data_url_round_trip(data: bytes) -> None:
    url, compression = make_data_url(data, None)
    assert compression in ("", "gzip")
    assert _decode(url, compression) == data
    # the choice is the shortest candidate, gzip only when it wins by more than 4
    plain = min(len("," + percent_encode(data)), len(";base64," + base64.b64encode(data).decode()))
    assert len(url) - len("data:") <= plain


def yaml_quote(text: str) -> str:
    """A YAML double-quoted scalar escaping everything but printable ASCII."""
    out = []
    for char in text:
        code = ord(char)
        if 0x20 <= code < 0x7F and char not in '"\\':
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


@given(st.text(max_size=2000))
def test_inline_text_round_trip(text: str) -> None:
    butane = (
        "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /x\n"
        f"      contents:\n        inline: {yaml_quote(text)}\n"
    )
    config, _ = translate_text(butane, None)
    contents = config["storage"]["files"][0]["contents"]
    assert _decode(contents["source"], contents["compression"]) == text.encode("utf-8")


@given(st.binary(max_size=512))
def test_user_compression_is_never_applied_twice(data: bytes) -> None:
    url, compression = make_data_url(data, "gzip")
    assert compression is None
    assert decode_data_url(url) == data


# A random tree of configs: each node is a Butane config that writes one file and merges
# its children through `local:` (the children translated first, like Butane chains).
_TREES = st.recursive(
    st.builds(lambda b: {"data": b, "children": []}, st.binary(max_size=300)),
    lambda kids: st.builds(
        lambda b, c: {"data": b, "children": c}, st.binary(max_size=300), st.lists(kids, max_size=3)
    ),
    max_leaves=8,
)


def _write_tree(node: dict[str, Any], files: Path, name: str) -> Path:
    """Translate node (after its children) to files/name.ign; returns that path."""
    data_file = files / f"{name}.bin"
    data_file.write_bytes(node["data"])
    merges = []
    for i, child in enumerate(node["children"]):
        merges.append(_write_tree(child, files, f"{name}-{i}").name)
    lines = ["variant: flatcar", "version: 1.1.0"]
    if merges:
        lines += ["ignition:", "  config:", "    merge:"] + [f"      - local: {m}" for m in merges]
    lines += [
        "storage:",
        "  files:",
        f"    - path: /data/{name}",
        "      contents:",
        f"        local: {data_file.name}",
    ]
    config, _ = translate_text("\n".join(lines) + "\n", files)
    out = files / f"{name}.ign"
    out.write_text(json.dumps(config))
    return out


def _collect(config: dict[str, Any], found: dict[str, bytes]) -> None:
    for file in config.get("storage", {}).get("files", []):
        found[file["path"]] = _decode(
            file["contents"]["source"], file["contents"].get("compression")
        )
    for res in config["ignition"].get("config", {}).get("merge", []):
        _collect(json.loads(_decode(res["source"], res.get("compression"))), found)


def _expected(node: dict[str, Any], name: str, found: dict[str, bytes]) -> None:
    found[f"/data/{name}"] = node["data"]
    for i, child in enumerate(node["children"]):
        _expected(child, f"{name}-{i}", found)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_TREES)
def test_merged_config_trees_are_lossless(tmp_path: Path, tree: dict[str, Any]) -> None:
    files = Path(tempfile.mkdtemp(dir=tmp_path))
    top = json.loads(_write_tree(tree, files, "n").read_text())
    got: dict[str, bytes] = {}
    want: dict[str, bytes] = {}
    _collect(top, got)
    _expected(tree, "n", want)
    assert got == want
    # local merges are embedded byte-exact: the child .ign text is inside the data URL
    for res in top["ignition"].get("config", {}).get("merge", []):
        child_text = _decode(res["source"], res.get("compression"))
        assert any(child_text == p.read_bytes() for p in files.glob("*.ign"))
