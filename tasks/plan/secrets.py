"""The private fragments Ignition appends to the kubeadm and keepalived configs (never rendered)."""

from __future__ import annotations

import re

from tasks.paths import Build
from tasks.plan.layers import INIT_TOKEN_FRAGMENT, JOIN_FRAGMENT, KEEPALIVED_FRAGMENT


def fragment_texts(paths: Build) -> dict[str, str]:
    """The private fragments Ignition appends to kubeadm and keepalived configs."""
    from tasks.errors import PkiError
    from tasks.facts import CA_HASH, TOKEN, TOKEN_TEXT
    from tasks.pki.layout import read_secret
    from tasks.plan.kubeadm import init_token_fragment, join_discovery_fragment

    token = read_secret(paths.pki, "bootstrap-token")
    ca_hash = read_secret(paths.pki, "ca-hash")
    auth = read_secret(paths.pki, "keepalived-auth")
    hint = "regenerate it: doit rotate_pki (then re-create the nodes)"
    if not TOKEN.fullmatch(token):
        raise PkiError(f"{paths.pki / 'bootstrap-token'} is not {TOKEN_TEXT}",
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
