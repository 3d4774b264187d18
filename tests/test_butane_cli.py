"""scripts/butane and the API on hand-written inputs: errors name path and line, never a
traceback; features the vectors do not cover (trees, mount-unit merging, local keys)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from support.butane_vectors import VECTORS, run_cli
from tasks.butane import (
    ButaneTranslateError,
    Report,
    dump_ignition,
    local_references,
    translate_text,
)
from tasks.errors import TranslateError

HEAD = "variant: flatcar\nversion: 1.1.0\n"


def translate(body: str, files: Path | None = None, strict: bool = True) -> dict[str, object]:
    config, _ = translate_text(HEAD + body, files, strict=strict)
    return config


def failure(body: str, files: Path | None = None) -> str:
    with pytest.raises(ButaneTranslateError) as caught:
        translate_text(HEAD + body, files, source_name="t.bu")
    return str(caught.value)


BAD_INPUTS = {
    "unknown-key": (
        "storage:\n  filez: []\n",
        "warning at $.storage.filez, line 4 col 3: unused key filez",
    ),
    "not-a-list": (
        "storage:\n  files: nope\n",
        "error at $.storage.files, line 4 col 10: cannot unmarshal",
    ),
    "bad-int": (
        "storage:\n  files:\n    - path: /a\n      mode: rw\n",
        "$.storage.files.0.mode, line 6 col 13",
    ),
    "bad-bool": (
        "systemd:\n  units:\n    - name: a.service\n      enabled: maybe\n",
        "$.systemd.units.0.enabled, line 6 col 16",
    ),
    "relative-path": (
        "storage:\n  files:\n    - path: etc/x\n",
        "error at $.storage.files.0.path, line 5 col 13: path not absolute",
    ),
    "bad-unit-ext": (
        "systemd:\n  units:\n    - name: thing\n",
        "$.systemd.units.0.name, line 5 col 13: invalid systemd unit extension",
    ),
    "bad-dropin-ext": (
        "systemd:\n  units:\n    - name: a.service\n      dropins:\n        - name: x.txt\n",
        "$.systemd.units.0.dropins.0.name, line 7 col 17: invalid systemd drop-in extension",
    ),
    "yaml-syntax": ("storage: [\n", "error at $, line"),
    "alias": (
        "storage:\n  files: &f []\n  directories: *f\n",
        "context tree does not match content tree",
    ),
    "merge-key": ("x: &a {}\nstorage:\n  <<: *a\n", "unused key <<"),
    "https-proxy": (
        "ignition:\n  proxy:\n    https_proxy: http://p:3128\n",
        "insecure plaintext HTTP proxy",
    ),
    "special-dir-bits": (
        "storage:\n  directories:\n    - path: /d\n      mode: 01777\n",
        "setuid/setgid/sticky",
    ),
    "inline-config-version": (
        'ignition:\n  config:\n    merge:\n      - inline: \'{"ignition":{"version":"3.3.0"}}\'\n',
        "warning at $.ignition.config.merge.0.inline, line 6 col 17",
    ),
    "duplicate-unit": (
        "systemd:\n  units:\n    - name: a.service\n    - name: a.service\n",
        "error at $.systemd.units.1, line 6 col 7: duplicate entry defined",
    ),
    "mount-unit-no-path": (
        "storage:\n  filesystems:\n    - device: /dev/vdb\n      format: ext4\n"
        "      with_mount_unit: true\n",
        "$.storage.filesystems.0.path",
    ),
    "bad-hash": (
        "storage:\n  files:\n    - path: /a\n      contents:\n"
        "        source: https://x/y\n        verification:\n"
        "          hash: md5-abc\n",
        "unrecognized hash function",
    ),
    "not-a-mapping": ("- a\n", "error at $"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_cli_names_path_and_line(case: str, tmp_path: Path) -> None:
    body, expected = BAD_INPUTS[case]
    text = (HEAD if case != "not-a-mapping" else "") + body
    (tmp_path / "in.bu").write_text(text)
    proc = run_cli("--strict", "in.bu", cwd=tmp_path)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert "Traceback" not in stderr
    assert expected in stderr, stderr
    assert " line " in stderr


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_api_raises_translate_error(case: str) -> None:
    body, expected = BAD_INPUTS[case]
    text = (HEAD if case != "not-a-mapping" else "") + body
    with pytest.raises(TranslateError) as caught:
        translate_text(text, None, source_name="in.bu")
    assert "in.bu: " in str(caught.value)
    assert expected in str(caught.value)


def test_warnings_without_strict_exit_zero(tmp_path: Path) -> None:
    (tmp_path / "in.bu").write_text(HEAD + "storage:\n  filez: []\n")
    proc = run_cli("in.bu", cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"ignition": {"version": "3.4.0"}}
    assert b"unused key filez" in proc.stderr
    _, report = translate_text(HEAD + "storage:\n  filez: []\n", None, strict=False)
    assert isinstance(report, Report) and len(report.warnings) == 1


def test_cli_stdin_stdout_output_file_and_help(tmp_path: Path) -> None:
    proc = run_cli("--pretty", cwd=tmp_path, stdin=HEAD.encode())
    assert (
        proc.returncode == 0
        and proc.stdout == b'{\n  "ignition": {\n    "version": "3.4.0"\n  }\n}\n'
    )
    out = tmp_path / "sub" / "out.ign"
    proc = run_cli("-o", str(out), "-", cwd=tmp_path, stdin=HEAD.encode())
    assert proc.returncode == 0 and proc.stdout == b""
    assert out.read_bytes() == b'{"ignition":{"version":"3.4.0"}}\n'
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert run_cli("--help", cwd=tmp_path).returncode == 0
    version = run_cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and b"v0.25.1" in version.stdout and b"native" in version.stdout
    missing = run_cli("nope.bu", cwd=tmp_path)
    assert (
        missing.returncode == 1
        and b"nope.bu" in missing.stderr
        and b"Traceback" not in missing.stderr
    )
    usage = run_cli("--bogus", cwd=tmp_path)
    assert usage.returncode == 1 and b"Traceback" not in usage.stderr


def test_cli_runs_from_any_cwd_with_system_python(tmp_path: Path) -> None:
    import shutil
    import subprocess

    script = Path(__file__).resolve().parent.parent / "scripts" / "butane"
    assert os.access(script, os.X_OK)
    python = shutil.which("python3", path="/usr/bin:/bin")
    if (
        python is None
        or subprocess.run([python, "-c", "import yaml"], capture_output=True).returncode
    ):
        python = None
    argv = [python, str(script)] if python else [str(script)]
    proc = subprocess.run(argv, input=HEAD.encode(), cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_trees_walk_order_modes_links_and_overrides(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "t/x").mkdir(parents=True)
    (files / "t/x/inner").write_text("in")
    (files / "t/x-y").write_text("sibling")
    (files / "t/b.sh").write_text("#!/bin/sh\n")
    (files / "t/b.sh").chmod(0o755)
    (files / "t/a-link").symlink_to("b.sh")
    config = translate(
        "storage:\n  files:\n    - path: /srv/x-y\n      mode: 0600\n"
        "  trees:\n    - local: t\n      path: /srv\n",
        files,
    )
    storage = config["storage"]
    assert isinstance(storage, dict)
    paths = [f["path"] for f in storage["files"]]
    assert paths == ["/srv/x-y", "/srv/b.sh", "/srv/x/inner"]
    modes = {f["path"]: f["mode"] for f in storage["files"]}
    assert modes == {"/srv/x-y": 0o600, "/srv/b.sh": 0o755, "/srv/x/inner": 0o644}
    assert storage["links"] == [{"path": "/srv/a-link", "target": "b.sh"}]
    # an explicit entry with contents at a tree path is an error
    message = failure(
        "storage:\n  files:\n    - path: /x-y\n      contents:\n"
        "        inline: a\n  trees:\n    - local: t\n",
        files,
    )
    assert "$.storage.trees.0, line" in message and "existing contents" in message
    assert "traverses outside" in failure("storage:\n  trees:\n    - local: ../..\n", files)


def test_mount_units_merge_with_user_units() -> None:
    config = translate(
        "storage:\n  filesystems:\n    - device: /dev/vdb\n      format: xfs\n"
        "      path: /var/data\n"
        "      with_mount_unit: true\nsystemd:\n  units:\n    - name: a.service\n      mask: true\n"
        "    - name: var-data.mount\n      dropins:\n        - name: x.conf\n"
        "          contents: ''\n"
    )
    units = config["systemd"]["units"]  # type: ignore[index]
    assert [u["name"] for u in units] == ["var-data.mount", "a.service"]
    assert units[0]["enabled"] is True and units[0]["dropins"] == [
        {"contents": "", "name": "x.conf"}
    ]
    assert units[0]["contents"].endswith("RequiredBy=local-fs.target")


def test_version_gated_fields_are_unused_keys_in_1_0() -> None:
    text = (
        "variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n"
        "    - name: a.service\n      contents_local: a\n"
    )
    with pytest.raises(
        ButaneTranslateError,
        match=r"\$\.systemd\.units\.0\.contents_local, line 6 col 7: unused key",
    ):
        translate_text(text, None)


def test_special_values_and_yes_booleans() -> None:
    config = translate(
        "storage:\n  files:\n    - path: /a\n      overwrite: yes\n"
        "      contents:\n        inline: 3.50\n"
        "    - path: /b\n      contents:\n        inline: null\n"
    )
    files = config["storage"]["files"]  # type: ignore[index]
    assert files[0]["overwrite"] is True and files[0]["contents"]["source"] == "data:,3.50"
    assert files[1] == {"path": "/b"}


def test_go_html_escaping_and_pretty_format() -> None:
    config = {
        "ignition": {"version": "3.4.0"},
        "systemd": {"units": [{"contents": "a<b>&\u2028", "name": "x.service"}]},
    }
    assert b"a\\u003cb\\u003e\\u0026\\u2028" in dump_ignition(config, pretty=False)
    assert dump_ignition(config, pretty=True).startswith(b'{\n  "ignition": {\n    "version"')


def test_local_references_lists_every_local_read() -> None:
    text = (VECTORS / "16-units-contents-local-v1_1" / "input.bu").read_text()
    assert local_references(text) == [
        "units/backup.service",
        "units/backup.timer",
        "dropins/kubelet-10-args.conf",
    ]
    text = HEAD + (
        "ignition:\n  config:\n    merge: [{local: m.ign}]\n    replace: {local: r.ign}\n"
        "  security: {tls: {certificate_authorities: [{local: ca.pem}]}}\n"
        "storage:\n  files:\n    - path: /a\n      contents: {local: a}\n"
        "      append: [{local: b}, {inline: c}]\n"
        "  luks: [{name: x, key_file: {local: key}}]\n  trees: [{local: tree}]\n"
        "passwd:\n  users: [{name: core, ssh_authorized_keys_local: [k1, k2]}]\n"
    )
    assert local_references(text) == [
        "m.ign",
        "r.ign",
        "ca.pem",
        "a",
        "b",
        "key",
        "tree",
        "k1",
        "k2",
    ]
    assert local_references("{{ not yaml") == []


def test_import_is_light() -> None:
    import subprocess
    import sys

    heavy = "('yaml', 'jsonschema', 'tasks.butane.translate')"
    code = f"import sys, tasks.butane; print(sorted(m for m in {heavy} if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout.strip() == "[]"
