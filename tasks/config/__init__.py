"""The cluster config: model (frozen dataclasses), reading with YAML lines, validation."""

from tasks.config.load import load_config, parse_config
from tasks.config.model import (
    CONTROL_PLANE,
    DNS_LABEL,
    WORKER,
    Butane,
    Cluster,
    Flatcar,
    Kubernetes,
    LoadBalancer,
    Network,
    Node,
    VmSpec,
    fingerprint,
    stable_mac,
)

__all__ = [
    "CONTROL_PLANE", "DNS_LABEL", "WORKER", "Butane", "Cluster", "Flatcar", "Kubernetes",
    "LoadBalancer", "Network", "Node", "VmSpec", "fingerprint", "load_config", "parse_config", "stable_mac",
]
