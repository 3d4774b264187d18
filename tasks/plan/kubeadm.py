"""kubeadm configuration files for each node, as data, plus the secret fragments appended to them.

The rendered file never holds a secret: Ignition appends the bootstrap token (and, for joins,
the CA hash) from a private fragment made by `secret_fragments`, so the Butane text stays
public. Each document therefore ends with the mapping those fragments continue.
"""

from __future__ import annotations

from typing import Any

from tasks.facts import APISERVER_PORT, CRI_SOCKET

TOKEN_GROUPS = ["system:bootstrappers:kubeadm:default-node-token"]
TOKEN_USAGES = ["signing", "authentication"]


def api_version(kubernetes_version: str) -> str:
    """kubeadm's config API for a Kubernetes release: v1beta4 from v1.31 on (v1beta3 is deprecated there)."""
    major, minor = (int(x) for x in kubernetes_version.lstrip("v").split(".")[:2])
    return "kubeadm.k8s.io/v1beta4" if (major, minor) >= (1, 31) else "kubeadm.k8s.io/v1beta3"


def _node_registration(api: str, name: str, ip: str) -> dict[str, Any]:
    # v1beta4 turned every extraArgs map into a list of name/value pairs.
    extra: Any = (
        [{"name": "node-ip", "value": ip}] if api.endswith("v1beta4") else {"node-ip": ip}
    )
    return {"name": name, "criSocket": CRI_SOCKET, "kubeletExtraArgs": extra}


def init_documents(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """ClusterConfiguration, KubeletConfiguration and InitConfiguration for the init node (token appended
    later, to the last)."""
    api = api_version(inputs["kubernetes_version"])
    cluster = {
        "apiVersion": api,
        "kind": "ClusterConfiguration",
        "clusterName": inputs["cluster_name"],
        "kubernetesVersion": inputs["kubernetes_version"],
        "controlPlaneEndpoint": inputs["endpoint"],
        "networking": {"podSubnet": inputs["pod_subnet"], "serviceSubnet": inputs["service_subnet"]},
        "apiServer": {"certSANs": list(inputs["cert_sans"])},
    }
    # The kubelets' configuration (kubeadm keeps it in the kubelet-config ConfigMap for every node
    # that joins). Client certificate rotation: each kubelet renews its own credential before it
    # expires (kubeadm's default, stated so that it stays on). Serving certificates stay
    # self-signed (serverTLSBootstrap off): signed ones need their CSRs approved, and an approver
    # that signs whatever a node asks for would let any node credential claim any name or address.
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "rotateCertificates": True,
    }
    init = {
        "apiVersion": api,
        "kind": "InitConfiguration",
        "nodeRegistration": _node_registration(api, inputs["node_name"], inputs["node_ip"]),
        "localAPIEndpoint": {"advertiseAddress": inputs["node_ip"], "bindPort": APISERVER_PORT},
        # Cilium replaces kube-proxy (kubeProxyReplacement=true).
        "skipPhases": ["addon/kube-proxy"],
        # Last on purpose: the appended fragment adds `token:` to this list item.
        "bootstrapTokens": [{"groups": TOKEN_GROUPS, "ttl": inputs["token_ttl"], "usages": TOKEN_USAGES}],
    }
    return [cluster, kubelet, init]


def join_documents(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """JoinConfiguration for a joining control plane or worker (token and CA hash appended later)."""
    api = api_version(inputs["kubernetes_version"])
    join: dict[str, Any] = {
        "apiVersion": api,
        "kind": "JoinConfiguration",
        "nodeRegistration": _node_registration(api, inputs["node_name"], inputs["node_ip"]),
    }
    if inputs["control_plane"]:
        join["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": inputs["node_ip"], "bindPort": APISERVER_PORT},
        }
    # Last on purpose: the appended fragment adds token and caCertHashes to bootstrapToken.
    join["discovery"] = {"bootstrapToken": {"apiServerEndpoint": inputs["endpoint"]}}
    return [join]


def documents(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    return init_documents(inputs) if inputs["init"] else join_documents(inputs)


def render_config(inputs: dict[str, Any]) -> str:
    """The public part of a node's kubeadm config file (YAML, multi-document)."""
    import yaml

    return "---\n".join(
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=False) for doc in documents(inputs)
    )


def init_token_fragment(token: str) -> str:
    """Completes InitConfiguration.bootstrapTokens[0] (see init_documents)."""
    return f"  token: {token}\n"


def join_discovery_fragment(token: str, ca_hash: str) -> str:
    """Completes JoinConfiguration.discovery.bootstrapToken (see join_documents)."""
    return f"    token: {token}\n    caCertHashes:\n    - {ca_hash}\n"
