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
