"""Per-value helpers that declarations name: validators (`check=`) and normalizers (`normalize=`).

A validator takes a value that already parsed (right type, in range, matching the pattern) and
returns a problem message, or None when the value is fine; the reader adds the YAML path and
line. A normalizer turns what YAML gave into the canonical text before it is checked; it passes
other types through unchanged, so the type check still reports them (`lower` excepted).
To add a validator: write a function here, name it in the setting's `check=(...)`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from tasks.config.kinds import Check
from tasks.config.reader import describe
from tasks.config.sshkeys import public_key_problem
from tasks.facts import APISERVER_PORT, NODE_PORTS, NODEPORT_RANGE, UNPRIVILEGED_PORTS


def absolute_path(value: str) -> str | None:
    return None if value.startswith("/") else f"{describe(value)} must be an absolute path on the hypervisor"


# Folders whose children are the system's or libvirt's own: the pool folder image_dir/<name> must
# never be one of them (image_dir /var/lib/libvirt with name qemu is libvirt's state folder).
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
    "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/cache",
    "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/tmp", "/var/lib/libvirt",
})
# Trees that hold no disks, ever (kernel interfaces, the OS itself, runtime state).
SYSTEM_TREES = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/", "/boot/", "/run/", "/bin/", "/sbin/", "/lib/",
                "/lib64/", "/var/run/", "/var/lib/libvirt/qemu/", "/var/log/")
# virt-install takes paths inside comma-separated options (log.file=..., entry0.file=...).
PATH_TEXT = re.compile(r"(/[A-Za-z0-9._+-]+)+")


def safe_image_dir(value: str) -> str | None:
    """image_dir/<name> becomes a folder the pipeline creates and, at rm_ha, deletes."""
    if value in SYSTEM_DIRS or (value + "/").startswith(SYSTEM_TREES):
        return (f"{describe(value)} is a system folder: each cluster's disks go to <image_dir>/<name>, "
                "which must be a folder of its own (the default is /var/lib/libvirt/images/flatcar)")
    if any(part in (".", "..") for part in value.split("/")):
        return f"{describe(value)} must not contain . or .. components"
    if not PATH_TEXT.fullmatch(value):
        return (f"{describe(value)} must be an absolute path of letters, digits and . _ + - "
                "(no spaces or commas: virt-install reads it inside its options)")
    return None


def openssh_public_key(key: str) -> str | None:
    return public_key_problem(key)


def not_apiserver_port(port: int) -> str | None:
    if port == APISERVER_PORT:
        return (f"{APISERVER_PORT} is the kube-apiserver's own port on every control plane; the load balancer "
                "needs another one (the article uses 6444)")
    return None


def at_most(limit: int, why: str) -> Check:
    """A validator for an upper bound, saying why it is there."""
    def check(value: int) -> str | None:
        return f"{value} is too large: give at most {limit} ({why})" if value > limit else None

    check.__name__ = f"at_most_{limit}"
    return check


def local_file(value: str) -> str | None:
    """A key or file named by path: when it exists it must be a regular file (never a FIFO or device)."""
    path = value.removeprefix("file://")
    if path.startswith("/") and os.path.exists(path) and not os.path.isfile(path):
        return f"{describe(value)} is not a regular file: name the key file itself"
    return None


def free_port(port: int) -> str | None:
    """The load balancer listens on every control plane's host network: not where another does."""
    if port in NODE_PORTS:
        return f"{port} is {NODE_PORTS[port]} on every control plane; choose a free port such as 6444"
    if port in NODEPORT_RANGE:
        return (f"{port} is in the Service NodePort range ({NODEPORT_RANGE.start}-{NODEPORT_RANGE.stop - 1}), "
                "which Cilium answers on every node first; choose a port such as 6444")
    if port < UNPRIVILEGED_PORTS:
        return (f"{port} is a privileged port: haproxy's image runs unprivileged (user haproxy) on the host "
                f"network and cannot listen below {UNPRIVILEGED_PORTS}; choose a port such as 6444")
    return None


# Ranges no host address comes from (RFC 6890), and what to call them.
SPECIAL_RANGES = tuple((ipaddress.IPv4Network(net), what) for net, what in (
    ("0.0.0.0/8", '"this network" (0.0.0.0/8), never a host'),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4, with the broadcast 255.255.255.255)"),
))


def _special(ip: ipaddress.IPv4Address | ipaddress.IPv4Network, allowed: tuple[str, ...] = ()) -> str | None:
    """What makes an address unusable for a host (or a subnet, when it overlaps such a range)."""
    for net, what in SPECIAL_RANGES:
        inside = ip.overlaps(net) if isinstance(ip, ipaddress.IPv4Network) else ip in net
        if inside and str(net) not in allowed:
            return what
    return None


def host_address(ip: ipaddress.IPv4Address) -> str | None:
    """A node's, the VIP's or the gateway's address: ordinary unicast."""
    what = _special(ip)
    return f"{ip} is {what}: give an ordinary unicast address (like 192.168.122.31)" if what else None


def name_server(ip: ipaddress.IPv4Address) -> str | None:
    """A resolver may be link-local (a cloud's); not loopback: the node's own resolver forwards to it."""
    what = _special(ip, allowed=("169.254.0.0/16",))
    return f"{ip} is {what}: give the address of a DNS server" if what else None


def pod_subnet(net: ipaddress.IPv4Network) -> str | None:
    """kubeadm splits the pod subnet into one /24 per node, at most 2**16 of them."""
    what = _special(net)
    if what:
        return f"{net} overlaps {what}: give a private range such as 10.244.0.0/16"
    if not 8 <= net.prefixlen <= 24:
        return (f"{net}: kubeadm gives each node a /24 of the pod subnet, so its prefix must be between /8 "
                "and /24 (such as 10.244.0.0/16)")
    return None


def service_subnet(net: ipaddress.IPv4Network) -> str | None:
    """kube-apiserver refuses a service range of more than 2**20 addresses."""
    what = _special(net)
    if what:
        return f"{net} overlaps {what}: give a private range such as 10.96.0.0/12"
    if net.prefixlen < 12 or net.prefixlen > 28:
        return (f"{net}: kube-apiserver takes a service subnet between /12 (the largest it allows) and /28 "
                "(such as 10.96.0.0/12)")
    return None


def unicast_mac(mac: str) -> str | None:
    """A VM's MAC: one host's (unicast), locally administered, so it can never be a real NIC's."""
    first = int(mac[:2], 16)
    if first & 1:
        return f"{mac} is a multicast MAC: give a unicast one, such as 52:54:00:12:34:56 (QEMU's range)"
    if not first & 2:
        return (f"{mac} is a globally administered MAC (a vendor's, possibly a real card's): give a locally "
                "administered one, such as 52:54:00:12:34:56 (QEMU's range)")
    return None


# Go's time.Duration is int64 nanoseconds: kubeadm refuses more.
GO_MAX_DURATION_S = (2**63 - 1) // 10**9
MIN_TOKEN_TTL_S = 3600


def duration_seconds(text: str) -> int:
    """'1h30m' -> 5400 (text already matched the GO_DURATION pattern)."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text))


def token_lifetime(ttl: str) -> str | None:
    seconds = duration_seconds(ttl)
    if ttl != "0" and seconds == 0:
        return f"{ttl!r} is zero: write 0 if the token should never expire, or a lifetime such as 720h"
    if 0 < seconds < MIN_TOKEN_TTL_S:
        return (f"{ttl!r} is shorter than an hour: the token would expire before the nodes booted after "
                "the first one have joined; give at least 1h (720h is the default)")
    if seconds > GO_MAX_DURATION_S:
        return f"{ttl!r} is longer than kubeadm can read (about 2562047h); write 0 for a token that never expires"
    return None


def not_kube_apiserver_port(port: int) -> str | None:
    if port == APISERVER_PORT:
        return (f"{APISERVER_PORT} is the kube-apiserver's own port on every control plane; haproxy's monitor "
                "needs a port of its own (the default is 6445)")
    return None


def free_monitor_port(port: int) -> str | None:
    """haproxy's monitor listens on the node's loopback, where the kubelet, etcd's metrics and the
    controllers listen too: the same ports are taken."""
    problem = free_port(port)
    return problem.replace("such as 6444", "such as 6445") if problem else None
    return None


def lower(value: Any) -> Any:
    """Hex digits in either case (a MAC, a sha256); whatever YAML made of them is taken as text."""
    return str(value).lower()


def fingerprint_text(value: Any) -> Any:
    """A key fingerprint as gpg prints it (groups, lower case) -> 40 upper-case digits."""
    return value.replace(" ", "").upper() if isinstance(value, str) else value


def strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def no_trailing_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


class _UnquotedNumber(str):
    """A version YAML read as a number whose text it cannot give back (1.30 -> 1.3)."""


def kubernetes_version(value: Any) -> Any:
    """1.36, "1.36", v1.36, "1.36.2" -> v1.36 / v1.36.2 (the bakery's and kubeadm's spelling).

    YAML reads an unquoted 1.36 as a number: taken as written when its text is unambiguous
    (two digits after the point), refused by quoted_version otherwise (1.30 arrives as 1.3)."""
    if isinstance(value, float):
        text = repr(value)
        digits = text.partition(".")[2]
        return f"v{text}" if len(digits) == 2 else _UnquotedNumber(f"v{text}")
    if isinstance(value, str):
        text = value.strip()
        return f"v{text}" if text[:1].isdigit() else text
    return value


def quoted_version(value: str) -> str | None:
    if isinstance(value, _UnquotedNumber):
        return (f"YAML reads this unquoted version as the number {value[1:]} (1.30 and 1.3 look the same to it): "
                f"quote it, e.g. \"{value[1:]}0\" or \"{value[1:]}\"")
    return None


def version_placeholder(url: str) -> str | None:
    return None if "{version}" in url else "must contain {version}, where the release (e.g. v0.20.0) goes"


def time_zone(name: str) -> str | None:
    """A zone Kured's Go runtime knows too: the IANA database (checked here when the host has it)."""
    if name in ("UTC", "Local"):
        return None
    import zoneinfo

    # The whole database is read to list it: once.
    zones = zoneinfo.available_timezones()
    if zones and name not in zones:
        return f"{describe(name)} is not a time zone of the IANA database (e.g. UTC, Europe/Berlin)"
    return None


def folder_text(value: Any) -> Any:
    """/a/b/ -> /a/b (but / stays /, for safe_image_dir to refuse by name)."""
    return (value.rstrip("/") or "/") if isinstance(value, str) else value
