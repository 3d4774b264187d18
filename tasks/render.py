"""`doit render`: the cluster's Butane layers from butane/*.yaml.j2, one subtask per output file.

Every template sees only its own context (StrictUndefined), and that context is also the
subtask's `config_changed` fingerprint, so a subtask reruns exactly when a value it reads
changes. Secrets never reach the Butane text: templates name them with `local:` paths under
build/<name>/ (pki/..., secrets/...) and the translator embeds them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.config import Cluster, Node, fingerprint
from tasks.context import build, cluster, guarded
from tasks.paths import Build, Src

BUTANE_VERSION = "1.1.0"
# Pinned on purpose: a moving tag (or podman auto-update) would change the control plane
# under a running cluster. Bump deliberately.
CILIUM_CLI_URL = "https://github.com/cilium/cilium-cli/releases/download/{version}/cilium-linux-amd64.tar.gz"

BASE, HA, CP, INIT, JOIN_CP, JOIN = (
    "00_base-k8s", "10_base-ha", "20_base-ha-cp", "30_base-ha-init", "31_base-ha-join-cp", "32_base-ha-join",
)
LAYERS = (BASE, HA, CP, INIT, JOIN_CP, JOIN)
NODE_TEMPLATE = "node"
EXTRA_PREFIX = "extra_"  # '_' cannot occur in a node name (a DNS label): no clash

# The `kubeadm reset` before a retried init/join empties /etc/kubernetes/pki, where Ignition
# puts the CAs: the unit keeps a private copy here before its first attempt.
KEEP_PKI = "/var/lib/flatcar-ha/pki"
KUBEADM_CONFIG = "/etc/kubernetes/kubeadm/kubeadm.yaml"

# Private fragments appended to node files by Ignition (written by `doit secrets`).
INIT_TOKEN_FRAGMENT = "secrets/kubeadm-init-token.yaml"
JOIN_FRAGMENT = "secrets/kubeadm-join-discovery.yaml"
KEEPALIVED_FRAGMENT = "secrets/keepalived-auth.conf"
SECRET_FRAGMENTS = (INIT_TOKEN_FRAGMENT, JOIN_FRAGMENT, KEEPALIVED_FRAGMENT)
SECRET_SOURCES = ("bootstrap-token", "ca-hash", "keepalived-auth")


@dataclass(frozen=True)
class Output:
    """One rendered Butane file: its name (build/<c>/butane/<name>.yaml), template and context."""

    name: str
    template: str
    context: dict[str, Any]
    doc: str
    # Files (relative to build/<c>/) the rendered text reads with `local:`.
    refs: tuple[str, ...] = field(default=())

    @property
    def template_path(self) -> Path:
        return Src.BUTANE / f"{self.template}.yaml.j2"


def ign_ref(name: str) -> str:
    return f"ign/{name}.ign"


def role_layer(c: Cluster, node: Node) -> str:
    if node is c.init_node:
        return INIT
    return JOIN_CP if node.is_control_plane else JOIN


def extra_layers(c: Cluster) -> dict[Path, str]:
    """Every user layer (any role), in config order, with its unique build name."""
    names: dict[Path, str] = {}
    roles = ("all", "control-plane", "worker")
    for path in (p for role in roles for p in c.butane.layers_for(role)):
        if path in names:
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.name.removesuffix(".yaml").removesuffix(".bu"))
        name = f"{EXTRA_PREFIX}{stem}"
        if name in names.values():
            name += "-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
        names[path] = name
    return names


def _download(c: Cluster, key: str, url: str) -> dict[str, str | None]:
    digest = c.kubernetes.checksum(key)
    return {"url": url, "hash": f"sha256-{digest}" if digest else None}


def _base(c: Cluster) -> Output:
    k = c.kubernetes
    base = k.sysext_base_url
    ctx = {
        "butane_version": BUTANE_VERSION,
        "kubernetes_version": k.version,
        "kubernetes_minor": k.minor,
        "crio_version": k.crio_version,
        # sysext-bakery's layout on extensions.flatcar.org: images flat, the per-minor
        # kubernetes sysupdate config in its folder, crio.conf and noop.conf at the top.
        "kubernetes": _download(c, "kubernetes", f"{base}/kubernetes-{k.version}-x86-64.raw"),
        "crio": _download(c, "crio", f"{base}/crio-{k.crio_version}-x86-64.raw"),
        "kubernetes_sysupdate": _download(
            c, "kubernetes_sysupdate", f"{base}/kubernetes/kubernetes-{k.minor}.conf"),
        "crio_sysupdate": _download(c, "crio_sysupdate", f"{base}/crio.conf"),
        "noop_sysupdate": _download(c, "noop_sysupdate", f"{base}/noop.conf"),
        "official_sysexts": list(k.official_sysexts),
        "ssh_authorized_keys": list(c.ssh_authorized_keys),
    }
    return Output(BASE, BASE, ctx, "Render the base layer: sysexts, updates, SSH keys")


def _merging(name: str, parent: str, doc: str, **values: Any) -> Output:
    ctx = {"butane_version": BUTANE_VERSION, "merge": [ign_ref(parent)], **values}
    return Output(name, name, ctx, doc, (ign_ref(parent),))


def _control_plane_layer(c: Cluster) -> Output:
    from tasks.pki_layout import node_files

    pki = [
        {"local": f"pki/{f.name}", "path": f.node_path, "mode": f"0{f.mode:o}"}
        for f in node_files(control_plane=True)
        if f.node_path.startswith("/etc/kubernetes/pki/")
    ]
    sysexts = list(c.kubernetes.official_sysexts)
    out = _merging(
        CP, HA, "Render the control-plane layer: CA files, keepalived and haproxy (Quadlet)",
        pki=pki,
        apiserver_port=c.network.apiserver_port,
        control_planes=[{"name": n.name, "ip": str(n.ip)} for n in c.control_planes],
        keepalived_image=c.load_balancer.keepalived_image,
        haproxy_image=c.load_balancer.haproxy_image,
        # Quadlet needs Flatcar's podman sysext: add it on control planes if config omits it.
        enabled_sysexts=None if "podman" in sysexts else [*sysexts, "podman"],
    )
    return Output(out.name, out.template, out.context, out.doc, out.refs + tuple(p["local"] for p in pki))


def _init_layer(c: Cluster) -> Output:
    k = c.kubernetes
    return _merging(
        INIT, CP, "Render the init layer: kubeadm init, then Cilium once",
        cilium_cli=_download(c, "cilium_cli", CILIUM_CLI_URL.format(version=k.cilium_cli_version)),
        cilium_version=k.cilium_version,
        vip=str(c.network.vip),
        apiserver_port=c.network.apiserver_port,
        kubeadm_config=KUBEADM_CONFIG,
        keep_pki=KEEP_PKI,
    )


def _keepalived(c: Cluster, node: Node) -> dict[str, Any]:
    cps = c.control_planes
    index = cps.index(node)
    return {
        "state": "MASTER" if index == 0 else "BACKUP",
        # Descending priorities; a failing check subtracts more than the whole spread, so
        # any healthy node outranks every unhealthy one.
        "priority": 200 - index,
        "weight": -len(cps),
        "virtual_router_id": virtual_router_id(c.name),
        "interface": c.network.interface,
        "src_ip": str(node.ip),
        "peers": [str(n.ip) for n in cps if n is not node],
        "vip": str(c.network.vip),
        "prefix": c.network.prefix,
    }


def virtual_router_id(cluster_name: str) -> int:
    """VRRP router id 1..255 from the cluster name, so clusters sharing an L2 rarely collide."""
    return int.from_bytes(hashlib.sha256(cluster_name.encode()).digest()[:4], "big") % 255 + 1


def _kubeadm_inputs(c: Cluster, node: Node) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "init": node is c.init_node,
        "control_plane": node.is_control_plane,
        "kubernetes_version": c.kubernetes.version,
        "endpoint": c.endpoint,
        "node_name": node.name,
        "node_ip": str(node.ip),
    }
    if node is c.init_node:
        cps = c.control_planes
        inputs.update(
            cluster_name=c.name,
            pod_subnet=str(c.kubernetes.pod_subnet),
            service_subnet=str(c.kubernetes.service_subnet),
            token_ttl=c.kubernetes.token_ttl,
            cert_sans=[str(c.network.vip), *(str(n.ip) for n in cps), *(n.name for n in cps)],
        )
    return inputs


def _wait_for(c: Cluster, node: Node) -> str | None:
    """What a node waits for before it joins: its predecessor's API server, or the VIP."""
    if node is c.init_node:
        return None
    if node.is_control_plane:
        cps = c.control_planes
        return f"{cps[cps.index(node) - 1].ip}:6443"
    return c.endpoint


def _node(c: Cluster, node: Node, extras: list[str]) -> Output:
    merge = [ign_ref(role_layer(c, node)), *(ign_ref(e) for e in extras)]
    fragment = INIT_TOKEN_FRAGMENT if node is c.init_node else JOIN_FRAGMENT
    net = c.network
    ctx = {
        "butane_version": BUTANE_VERSION,
        "merge": merge,
        "name": node.name,
        "ip": str(node.ip),
        "mac": node.mac,
        "prefix": net.prefix,
        "gateway": str(net.gateway),
        "dns": [str(d) for d in net.dns],
        "interface": net.interface,
        "kubeadm": _kubeadm_inputs(c, node),
        "kubeadm_config": KUBEADM_CONFIG,
        "kubeadm_fragment": fragment,
        "wait_for": _wait_for(c, node),
        "keepalived": _keepalived(c, node) if node.is_control_plane else None,
        "keepalived_fragment": KEEPALIVED_FRAGMENT if node.is_control_plane else None,
    }
    refs = [*merge, fragment] + ([KEEPALIVED_FRAGMENT] if node.is_control_plane else [])
    doc = f"Render {node.name}'s Butane ({node.role}{', init' if node is c.init_node else ''})"
    return Output(node.name, NODE_TEMPLATE, ctx, doc, tuple(refs))


def outputs(c: Cluster) -> list[Output]:
    """Every Butane file of the cluster with its context: cheap, no template is read."""
    extras = extra_layers(c)
    result = [
        _base(c),
        _merging(HA, BASE, "Render the HA base layer: container policy, kubeadm helpers"),
        _control_plane_layer(c),
        _init_layer(c),
        _merging(JOIN_CP, CP, "Render the join-control-plane layer: sequential kubeadm join",
                 kubeadm_config=KUBEADM_CONFIG, keep_pki=KEEP_PKI),
        _merging(JOIN, HA, "Render the worker layer: kubeadm join", kubeadm_config=KUBEADM_CONFIG),
    ]
    for node in c.nodes:
        mine = [extras[p] for p in c.butane.layers_for(node.role)]
        result.append(_node(c, node, list(dict.fromkeys(mine))))
    return result


@functools.cache
def _environment(bytecode_dir: Path | None = None) -> Any:
    """One Environment per process, so each template is compiled once for all outputs.

    With bytecode_dir, compiled templates are also kept across runs (keyed by the template's
    checksum and jinja's version, so an edited template or an upgrade recompiles).
    """
    import jinja2

    from tasks.kubeadm import render_config

    cache = None
    if bytecode_dir is not None:
        bytecode_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cache = jinja2.FileSystemBytecodeCache(str(bytecode_dir))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Src.BUTANE)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=cache,
    )
    env.filters["kubeadm_config"] = render_config
    return env


def render_output(out: Output, env: Any = None) -> str:
    template = (env or _environment()).get_template(out.template_path.name)
    return str(template.render(out.context))


def render_layers(c: Cluster) -> dict[str, str]:
    """name -> Butane text for every layer and node of the cluster (pure; nothing written)."""
    env = _environment()
    return {out.name: render_output(out, env) for out in outputs(c)}


def check_references(out: Output, text: str) -> None:
    """The rendered `local:` references must be exactly the declared ones (translate's file_dep)."""
    from tasks.butane import local_references
    from tasks.errors import TranslateError

    found = set(local_references(text))
    if found != set(out.refs):
        raise TranslateError(
            f"{out.template_path}: its local: references {sorted(found)} differ from the declared "
            f"{sorted(out.refs)}",
            "keep every local: path of a template in its context (tasks/render.py)",
        )


@guarded
def write_output(name: str) -> None:
    from tasks.fsutil import PUBLIC_FILE, ensure_private_dir, write_if_changed

    paths, c = build(), cluster()
    out = next(o for o in outputs(c) if o.name == name)
    text = render_output(out, _environment(c.flatcar.cache_dir / "jinja"))
    check_references(out, text)
    ensure_private_dir(paths.butane)
    # No secret is ever rendered, so the Butane text itself is public (its folder is not).
    write_if_changed(paths.butane_file(name), text, PUBLIC_FILE)


@guarded
def copy_extra(source: Path, name: str) -> None:
    from tasks.fsutil import PUBLIC_FILE, ensure_private_dir, write_if_changed

    paths = build()
    ensure_private_dir(paths.butane)
    write_if_changed(paths.butane_file(name), source.read_bytes(), PUBLIC_FILE)


def task_render() -> Iterator[dict[str, Any]]:
    """Render the Butane layers and one Butane file per node from config.yaml."""
    from doit.tools import config_changed

    c, paths = cluster(), build()
    own = [str(Src.BUTANE / "_units.j2"), str(Src.TASKS / "render.py"), str(Src.TASKS / "kubeadm.py")]
    for out in outputs(c):
        yield {
            "name": out.name,
            "doc": out.doc,
            "actions": [(write_output, [out.name])],
            "file_dep": [str(out.template_path), *own],
            "targets": [str(paths.butane_file(out.name))],
            "uptodate": [config_changed(fingerprint(out.template, out.context))],
            "clean": True,
        }
    for source, name in extra_layers(c).items():
        yield {
            "name": name,
            "doc": f"Copy the user layer {source}",
            "actions": [(copy_extra, [source, name])],
            "file_dep": [str(source)],
            "targets": [str(paths.butane_file(name))],
            "clean": True,
        }


def fragment_texts(paths: Build) -> dict[str, str]:
    """The private fragments Ignition appends to kubeadm and keepalived configs."""
    from tasks.errors import PkiError
    from tasks.kubeadm import CA_HASH, TOKEN, init_token_fragment, join_discovery_fragment
    from tasks.pki_layout import read_secret

    token = read_secret(paths.pki, "bootstrap-token")
    ca_hash = read_secret(paths.pki, "ca-hash")
    auth = read_secret(paths.pki, "keepalived-auth")
    hint = "regenerate it: doit rotate_pki (then re-create the nodes)"
    if not TOKEN.fullmatch(token):
        raise PkiError(f"{paths.pki / 'bootstrap-token'} is not a kubeadm token like abcdef.0123456789abcdef",
                       hint)
    if not CA_HASH.fullmatch(ca_hash):
        raise PkiError(f"{paths.pki / 'ca-hash'} is not sha256:<64 hex digits>", hint)
    # keepalived reads '!' and '#' as comments and compares at most 8 characters.
    if not re.fullmatch(r"[A-Za-z0-9]{1,8}", auth):
        raise PkiError(f"{paths.pki / 'keepalived-auth'} must be 1 to 8 letters or digits", hint)
    return {
        INIT_TOKEN_FRAGMENT: init_token_fragment(token),
        JOIN_FRAGMENT: join_discovery_fragment(token, ca_hash),
        # Closes the authentication block and vrrp_instance opened by the node template.
        KEEPALIVED_FRAGMENT: f"        auth_pass {auth}\n    }}\n}}\n",
    }


@guarded
def write_fragments() -> None:
    from tasks.fsutil import PRIVATE_FILE, ensure_private_dir, write_if_changed

    paths = build()
    ensure_private_dir(paths.root / "secrets")
    for name, text in fragment_texts(paths).items():
        write_if_changed(paths.root / name, text, PRIVATE_FILE)


def task_secrets() -> dict[str, Any]:
    """Derive the private fragments (join token, CA hash, keepalived secret) from the PKI."""
    paths = build()
    return {
        "actions": [write_fragments],
        "file_dep": [str(paths.pki / name) for name in SECRET_SOURCES]
        + [str(Src.TASKS / "render.py"), str(Src.TASKS / "kubeadm.py")],
        "targets": [str(paths.root / name) for name in SECRET_FRAGMENTS],
        "clean": True,
    }
