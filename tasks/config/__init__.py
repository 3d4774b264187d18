"""The cluster config: each setting declared once, read with YAML lines, validated at load.

model.py       the frozen dataclasses; each field declares its setting (key, type, default, bounds, help)
settings.py    declarations -> reading: allowed keys, required and empty keys, defaults, sections
kinds.py       how each shape of value is read: text, number, address, list, mapping with fixed keys
checks.py      the per-value validators and normalizers declarations name (sshkeys.py: key parsing)
rules.py       what relates settings (by hand): inheritance, derived values, paths, cross-field checks
places.py      where the pipeline may write: build_dir/<name>/ and cache_dir, never a system folder
reader.py      typed reading that collects Problems with YAML path, line and "did you mean"
yamlsource.py  YAML with lines, and the remembered parse (only of a valid config)
yamlguard.py   what the YAML may hold: size, aliases, depth and tags bounded before anything is copied
load.py        parse_config and load_config (a regular UTF-8 file of at most 256 KiB, nothing else)

A new setting: one field in model.py, e.g. `timeout_s: int = setting(30, minimum=1, help="...")`
(a validator: a function in checks.py named in `check=`), plus its line in config.yaml and its key
in the README's configuration table (tests/test_config_settings.py fails until both are there).
"""

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
