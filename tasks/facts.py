"""Fixed facts of the software the nodes run (kubeadm, kube-apiserver, CRI-O), each stated once."""

from __future__ import annotations

import re

# kube-apiserver's own port on every control plane (kubeadm's default); the VIP uses another.
APISERVER_PORT = 6443
CRI_SOCKET = "unix:///var/run/crio/crio.sock"
# What kubernetes.key_algorithm may name, for the CAs and admin.conf.
KEY_ALGORITHMS = ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256")
# A kubeadm bootstrap token: 6-character id, dot, 16-character secret.
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
TOKEN_TEXT = "a kubeadm token like abcdef.0123456789abcdef"
# kubeadm's --discovery-token-ca-cert-hash.
CA_HASH = re.compile(r"sha256:[0-9a-f]{64}")

# What else listens on a control plane's host network (kubeadm's static pods, the kubelet, Cilium,
# which replaces kube-proxy here): the load balancer's port (network.apiserver_port) must differ.
# Kubernetes' "Ports and Protocols" and Cilium's firewall requirements list them.
NODE_PORTS = {
    2379: "etcd's client port", 2380: "etcd's peer port", 2381: "etcd's metrics port (kubeadm's default)",
    4240: "cilium-health's port", 4244: "Hubble's port", 9234: "cilium-operator's health port",
    9879: "cilium-agent's health port", 9890: "cilium-agent's gops port", 9891: "cilium-operator's gops port",
    10248: "the kubelet's health port", 10249: "kube-proxy's metrics port", 10250: "the kubelet's API port",
    10256: "kube-proxy's health port", 10257: "kube-controller-manager's port", 10259: "kube-scheduler's port",
}
# Service NodePorts: kube-proxy (here Cilium) answers them on every node's address before any
# process listening there sees the traffic.
NODEPORT_RANGE = range(30000, 32768)
# Below this, only a privileged process may listen; haproxy's image runs as user haproxy since 2.4.
UNPRIVILEGED_PORTS = 1024
