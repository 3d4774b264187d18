"""Values the config accepts and refuses beyond the table in test_config.py: real keys of every
type, places the build may not take, MACs derived twice, and YAML a person writes (BOM, CRLF,
aliases, dates)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.configs import PROJECT_CONFIG, SSH_KEY, config_data, dump_config
from tasks.config import load_config, parse_config, stable_mac
from tasks.config.sshkeys import public_key_problem
from tasks.errors import ConfigError
from tasks.paths import PROJECT_ROOT


def public_keys() -> dict[str, str]:
    """One OpenSSH public line of every type the nodes accept, made with cryptography."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    made: dict[str, Any] = {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa-2048": rsa.generate_private_key(65537, 2048),
        **{f"ecdsa-{c.name}": ec.generate_private_key(c) for c in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1())},
    }
    return {name: key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH).decode() + " me@host"
            for name, key in made.items()}


def test_every_key_type_sshd_takes_is_accepted(tmp_path: Path) -> None:
    keys = [*public_keys().values(), SSH_KEY, SSH_KEY.rsplit(" ", 1)[0]]  # with and without a comment
    text = dump_config(config_data(tmp_path, ssh_authorized_keys=keys))
    assert parse_config(text, tmp_path / "c.yaml").ssh_authorized_keys == tuple(keys)


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def test_a_small_rsa_key_and_a_wrong_curve_are_refused() -> None:
    small = _ssh_string(b"ssh-rsa") + _ssh_string(b"\x01\x00\x01") + _ssh_string(b"\x00" + b"\xff" * 96)
    problem = public_key_problem("ssh-rsa " + base64.b64encode(small).decode())
    assert problem is not None and "768-bit RSA key" in problem
    curve = _ssh_string(b"ecdsa-sha2-nistp256") + _ssh_string(b"nistp384") + _ssh_string(b"\x04" + b"\x01" * 64)
    problem = public_key_problem("ecdsa-sha2-nistp256 " + base64.b64encode(curve).decode())
    assert problem is not None and "another curve" in problem
    extra = base64.b64decode(SSH_KEY.split()[1]) + b"\x00"
    problem = public_key_problem("ssh-ed25519 " + base64.b64encode(extra).decode())
    assert problem is not None and "damaged" in problem


def _problems(text: str, source: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return [str(p) for p in info.value.problems]


def test_two_derived_macs_that_collide_are_caught(tmp_path: Path) -> None:
    """24 bits of a hash: two node names share a derived MAC sooner or later (birthday bound)."""
    seen: dict[str, str] = {}
    name = ""
    for i in range(100_000):
        name = f"w{i}"
        if stable_mac("t1", name) in seen:
            break
        seen[stable_mac("t1", name)] = name
    first = seen[stable_mac("t1", name)]
    nodes = [{"name": "cp1", "role": "control-plane", "ip": "192.168.122.31"},
             {"name": first, "role": "worker", "ip": "192.168.122.41"},
             {"name": name, "role": "worker", "ip": "192.168.122.42"}]
    problems = _problems(dump_config(config_data(tmp_path, nodes=nodes)), tmp_path / "c.yaml")
    assert len(problems) == 1 and problems[0].startswith("nodes[2].name (line"), problems
    assert "it is also nodes[1]'s; give one of them its own mac" in problems[0]


@pytest.mark.parametrize("holds", ["repository", "config"])
def test_a_build_folder_holding_the_repository_or_the_config_is_refused(tmp_path: Path, holds: str) -> None:
    links = tmp_path / "links"
    links.mkdir()
    (links / "b").symlink_to(PROJECT_ROOT if holds == "repository" else tmp_path)
    text = dump_config(config_data(tmp_path, build_dir=str(links), name="b"))
    (problem,) = _problems(text, tmp_path / "c.yaml")
    what = "the repository" if holds == "repository" else "the config file"
    assert problem.startswith("build_dir (line") and f"which holds {what}" in problem, problem


def test_a_folder_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    text = dump_config(config_data(tmp_path, build_dir=str(tmp_path / "f" / "b"),
                                   flatcar={"cache_dir": str(tmp_path / "f" / "c")}))
    problems = _problems(text, tmp_path / "c.yaml")
    assert [p.split(" (line")[0] for p in problems] == ["build_dir", "flatcar.cache_dir"]
    assert all(f"lies below {tmp_path / 'f'}, which is a file" in p for p in problems), problems


def test_what_a_person_writes_is_read(tmp_path: Path) -> None:
    """A BOM and CRLF line ends (Windows editors), aliases of whole values, dates as text, and
    the values just inside every new bound."""
    text = PROJECT_CONFIG.read_text()
    text = text.replace("ip: 192.168.122.31", "ip: 192.168.122.31\n    vm: &big {memory_mib: 8192}", 1)
    text = text.replace("ip: 192.168.122.35", "ip: 192.168.122.35\n    vm: *big", 1)
    text = text.replace("token_ttl: 720h", "token_ttl: 1h").replace("memory_mib: 4096", "memory_mib: 1048576")
    text = text.replace("apiserver_port: 6444", "apiserver_port: 1024").replace("dns: [192.168.122.1]",
                                                                                 "dns: [169.254.169.253]")
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    cluster = load_config(config)
    assert cluster.nodes[4].vm == cluster.nodes[0].vm != cluster.vm and cluster.nodes[4].vm.memory_mib == 8192
    assert cluster.vm.memory_mib == 1048576
    assert (cluster.kubernetes.token_ttl, cluster.network.apiserver_port) == ("1h", 1024)
    data = yaml.safe_load(text)
    data["flatcar"]["version"] = "2024-13-45"  # a YAML 1.1 timestamp, and an impossible one: read as text
    dated = yaml.safe_dump(data).replace("'2024-13-45'", "2024-13-45")
    line = dated.splitlines().index("  version: 2024-13-45") + 1
    assert _problems(dated, config) == [f"flatcar.version (line {line}): '2024-13-45' is not valid: expected "
                                        "'current' or a release such as 4081.2.0"]
