"""kubeadm has no offline validator here: check each node's complete kubeadm config (rendered
text + the appended secret fragment, as Ignition writes it) against a schema of exactly the
fields we emit, with unknown fields rejected, for both API versions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from support.configs import project_cluster
from support.layers import inline_of
from tasks.plan.kubeadm import api_version, init_token_fragment, join_discovery_fragment
from tasks.plan.layers import outputs
from tasks.plan.templates import render_layers

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "ab" * 32
KUBELET_API = "kubelet.config.k8s.io/v1beta1"


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties),
            "additionalProperties": False}


STR = {"type": "string", "minLength": 1}
ENDPOINT = {"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+:\d+$"}
ADVERTISE = obj({"advertiseAddress": {"type": "string", "format": "ipv4"}, "bindPort": {"const": 6443}})


def schemas(api: str) -> dict[str, dict[str, Any]]:
    if api.endswith("v1beta4"):
        extra: dict[str, Any] = {"type": "array", "items": obj({"name": STR, "value": STR})}
    else:
        extra = {"type": "object", "additionalProperties": STR}
    registration = obj({"name": STR, "criSocket": {"const": "unix:///var/run/crio/crio.sock"},
                        "kubeletExtraArgs": extra})
    head = {"apiVersion": {"const": api}}
    return {
        "ClusterConfiguration": obj({
            **head, "kind": {"const": "ClusterConfiguration"}, "clusterName": STR,
            "kubernetesVersion": {"type": "string", "pattern": r"^v\d+\.\d+\.\d+$"},
            "controlPlaneEndpoint": ENDPOINT,
            "networking": obj({"podSubnet": STR, "serviceSubnet": STR}),
            "apiServer": obj({"certSANs": {"type": "array", "items": STR, "minItems": 2}}),
        }),
        "InitConfiguration": obj({
            **head, "kind": {"const": "InitConfiguration"}, "nodeRegistration": registration,
            "localAPIEndpoint": ADVERTISE,
            "skipPhases": {"const": ["addon/kube-proxy"]},
            "bootstrapTokens": {"type": "array", "minItems": 1, "maxItems": 1, "items": obj({
                "groups": {"const": ["system:bootstrappers:kubeadm:default-node-token"]},
                "ttl": {"type": "string", "pattern": r"^(0|(\d+h)?(\d+m)?(\d+s)?)$"},
                "usages": {"const": ["signing", "authentication"]},
                "token": {"type": "string", "pattern": r"^[a-z0-9]{6}\.[a-z0-9]{16}$"},
            })},
        }),
        "JoinConfiguration": obj({
            **head, "kind": {"const": "JoinConfiguration"}, "nodeRegistration": registration,
            "controlPlane": obj({"localAPIEndpoint": ADVERTISE}),
            "discovery": obj({"bootstrapToken": obj({
                "apiServerEndpoint": ENDPOINT,
                "token": {"type": "string", "pattern": r"^[a-z0-9]{6}\.[a-z0-9]{16}$"},
                "caCertHashes": {"type": "array", "minItems": 1, "maxItems": 1,
                                 "items": {"type": "string", "pattern": r"^sha256:[0-9a-f]{64}$"}},
            })}),
        }, required=["apiVersion", "kind", "nodeRegistration", "discovery"]),
        # The kubelets' own config API (kubelet.config.k8s.io), whatever kubeadm's is.
        "KubeletConfiguration": obj({
            "apiVersion": {"const": KUBELET_API}, "kind": {"const": "KubeletConfiguration"},
            "rotateCertificates": {"const": True},
        }),
    }


def validate(doc: dict[str, Any]) -> None:
    schema = schemas(doc.get("apiVersion", ""))[doc.get("kind", "")]
    jsonschema.validate(doc, schema, format_checker=jsonschema.FormatChecker())


def node_documents(text: str, init: bool) -> list[dict[str, Any]]:
    """A kubeadm config as the node will have it: rendered contents + the appended fragment."""
    body = inline_of(text, f"/etc/kubernetes/kubeadm/{'init' if init else 'join'}.yaml")
    fragment = init_token_fragment(TOKEN) if init else join_discovery_fragment(TOKEN, CA_HASH)
    assert f"local: secrets/kubeadm-{'init-token' if init else 'join-discovery'}.yaml" in text
    return list(yaml.safe_load_all(body + fragment))


def test_api_version_follows_the_kubernetes_version() -> None:
    assert api_version("v1.30.9") == "kubeadm.k8s.io/v1beta3"
    assert api_version("v1.31.0") == "kubeadm.k8s.io/v1beta4"
    assert api_version("v1.32.2") == "kubeadm.k8s.io/v1beta4"


@pytest.mark.parametrize("version", ["v1.30.5", "v1.31.3"])
@pytest.mark.parametrize(("control_planes", "workers"), [(1, 0), (3, 2), (5, 20)])
def test_every_node_kubeadm_config_matches_the_schema(
    tmp_path: Path, version: str, control_planes: int, workers: int
) -> None:
    # CRI-O serves its own Kubernetes minor only: the two versions move together.
    c = project_cluster(tmp_path, control_planes, workers,
                        **{"kubernetes.version": version, "kubernetes.crio_version": version})
    texts = render_layers(c)
    api = api_version(version)
    for node in c.nodes:
        # Every node can join; the first control plane can also init (it decides at boot).
        configs = [True, False] if node is c.init_node else [False]
        registrations = []
        for init in configs:
            docs = node_documents(texts[node.name], init)
            for doc in docs:
                validate(doc)
            assert all(d["apiVersion"] == (KUBELET_API if d["kind"] == "KubeletConfiguration" else api)
                       for d in docs)
            kinds = [d["kind"] for d in docs]
            if init:
                # InitConfiguration last: the token fragment continues it.
                assert kinds == ["ClusterConfiguration", "KubeletConfiguration", "InitConfiguration"]
                cluster, kubelet, first = docs
                # Each kubelet renews its own client certificate (issue 16).
                assert kubelet["rotateCertificates"] is True
                assert cluster["controlPlaneEndpoint"] == f"{c.network.vip}:{c.network.apiserver_port}"
                assert cluster["networking"] == {"podSubnet": str(c.kubernetes.pod_subnet),
                                                 "serviceSubnet": str(c.kubernetes.service_subnet)}
                sans = cluster["apiServer"]["certSANs"]
                assert set(sans) == {str(c.network.vip), *(str(n.ip) for n in c.control_planes),
                                     *(n.name for n in c.control_planes)}
                assert first["bootstrapTokens"][0] == {
                    "groups": ["system:bootstrappers:kubeadm:default-node-token"], "ttl": "720h",
                    "usages": ["signing", "authentication"], "token": TOKEN}
                registrations.append(first["nodeRegistration"])
            else:
                assert kinds == ["JoinConfiguration"]
                (join,) = docs
                assert ("controlPlane" in join) == node.is_control_plane
                assert join["discovery"]["bootstrapToken"] == {
                    "apiServerEndpoint": c.endpoint, "token": TOKEN, "caCertHashes": [CA_HASH]}
                registrations.append(join["nodeRegistration"])
        for registration in registrations:
            args = registration["kubeletExtraArgs"]
            named = args if isinstance(args, dict) else {a["name"]: a["value"] for a in args}
            assert (registration["name"], named["node-ip"]) == (node.name, str(node.ip))
        if not node.is_control_plane:
            assert "/etc/kubernetes/kubeadm/init.yaml" not in texts[node.name]


def test_schema_rejects_unknown_and_misplaced_fields(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 1, 1)
    texts = render_layers(c)
    (join,) = node_documents(texts["node2-worker"], False)
    validate(join)
    unknown = copy.deepcopy(join)
    unknown["discovery"]["bootstrapToken"]["unsafeSkipCAVerification"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate(unknown)
    v1beta3_style = copy.deepcopy(join)
    v1beta3_style["nodeRegistration"]["kubeletExtraArgs"] = {"node-ip": "192.168.122.32"}
    with pytest.raises(jsonschema.ValidationError):
        validate(v1beta3_style)


def test_token_ttl_from_config(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 1, 0, **{"kubernetes.token_ttl": "0"})
    out = next(o for o in outputs(c) if o.name == "node1-cp")
    docs = node_documents(render_layers(c)["node1-cp"], True)
    init_inputs = next(f["inputs"] for f in out.context["kubeadm_files"] if f["inputs"]["init"])
    assert docs[-1]["bootstrapTokens"][0]["ttl"] == "0" == init_inputs["token_ttl"]
