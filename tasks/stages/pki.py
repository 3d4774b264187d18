"""`doit pki` / `doit rotate_pki`: the cluster PKI, made once and never silently replaced.

kubeadm uses CA files it finds in /etc/kubernetes/pki, so pre-shared CAs let every control plane
join without `--upload-certs` or a certificate key. The PKI itself lives in tasks/pki/.
"""

from __future__ import annotations

from typing import Any

from tasks.config import fingerprint
from tasks.pki import PKI_FILES, pki_settings
from tasks.stages.base import Context, action, config_path, context, targets_intact
from tasks.stages.creators import inputs_changed
from tasks.stages.replay import replayable


def rotate_hint() -> str:
    """The exact command that rotates the PKI of the config in use."""
    return f"doit config={config_path()} rotate_pki"


@action
def make_pki(ctx: Context) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from tasks.pki import server_url
    from tasks.pki.crypto import generate_key
    from tasks.pki.kubeconfig import RENEW_BEFORE, admin_not_after, ensure_admin_conf
    from tasks.pki.layout import DERIVED_FILES
    from tasks.pki.rotation import record_pki
    from tasks.pki.store import check_record, ensure_pki
    from tasks.written import CHANGED

    c, paths = ctx.cluster, ctx.paths
    # Never a new CA for a set that was deleted, nor use of one that was edited or replaced.
    check_record(paths.pki, ctx.written.status, rotate_hint())
    for name in DERIVED_FILES:  # rewritten from the primary files below
        if ctx.written.status(paths.pki / name) == CHANGED:
            print(f"WARNING: {paths.pki / name} was changed since flatcar-ha wrote it: rewritten")
    if ctx.written.status(paths.admin_conf) == CHANGED:
        print(f"WARNING: {paths.admin_conf} was changed since flatcar-ha wrote it: issued again")
        paths.admin_conf.unlink()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A first run also needs admin.conf's client key: make it while the CAs are made.
        admin_key = pool.submit(generate_key, c.kubernetes.key_algorithm) if not paths.admin_conf.exists() else None
        wrote = ensure_pki(paths.pki, **pki_settings(c), rotate_command=rotate_hint())
        if ensure_admin_conf(
            paths.pki, paths.admin_conf, cluster_name=c.name, server=server_url(c),
            new_key=admin_key.result if admin_key else None,
        ):
            wrote.append(str(paths.admin_conf))
    record_pki(paths, ctx.written)
    # Names only: the files hold secrets.
    if wrote:
        print(f"PKI {paths.pki} ({c.kubernetes.key_algorithm}): wrote {', '.join(wrote)}")
    else:
        print(f"PKI {paths.pki} ({c.kubernetes.key_algorithm}): up to date, nothing written")
    # Saved by doit for admin_cert_current, so an up-to-date run needs no X.509 parsing.
    return {"admin_renew_after": (admin_not_after(paths.admin_conf) - RENEW_BEFORE).isoformat()}


@action
def rotate_pki(ctx: Context) -> None:
    from tasks.pki import server_url
    from tasks.pki.kubeconfig import write_admin_conf
    from tasks.pki.rotation import finish_rotation, record_pki
    from tasks.pki.store import rotate_pki as rotate

    c, paths = ctx.cluster, ctx.paths
    # Journaled: a kill from here on is undone or finished by the next run (tasks/pki/rotation.py).
    archived = rotate(paths.pki, **pki_settings(c), extra=[paths.admin_conf], journal=paths.rotation_journal)
    write_admin_conf(paths.pki, paths.admin_conf, cluster_name=c.name, server=server_url(c))
    record_pki(paths, ctx.written)
    ctx.written.flush()
    finish_rotation(paths.rotation_journal)
    print(f"new PKI in {paths.pki}" + (f"; the old set is in {archived}" if archived else ""))
    print("Every node must be re-created: its Ignition embeds the old CAs and token (doit rm_ha ha).")


def _renewal_due(values: dict[str, Any]) -> float:
    import datetime

    return datetime.datetime.fromisoformat(values["admin_renew_after"]).timestamp()


@replayable(deadline=_renewal_due)
def admin_cert_current(task: Any, values: dict[str, Any]) -> bool:
    """doit up-to-date check: the admin client certificate is not yet due for renewal. Cheap on
    purpose (no X.509 parsing on a no-op run); that the files are the ones the pipeline wrote is
    targets_intact's part, and the action re-checks the certificate chain whenever it runs."""
    import datetime

    try:
        renew_after = datetime.datetime.fromisoformat(values["admin_renew_after"])
    except (KeyError, TypeError, ValueError):
        return False
    return datetime.datetime.now(datetime.UTC) < renew_after


def task_pki() -> dict[str, Any]:
    """Generate the cluster PKI once: CAs, SA key, token, CA hash, admin.conf."""
    ctx = context()
    c, paths = ctx.cluster, ctx.paths
    return {
        "actions": [make_pki],
        "targets": [str(paths.pki / name) for name in PKI_FILES] + [str(paths.admin_conf)],
        # Any change here makes the action check the set; it then refuses (key algorithm,
        # validity) or rewrites only admin.conf (VIP, port): it never regenerates a CA.
        "uptodate": [
            inputs_changed(fingerprint(pki_settings(c), str(c.network.vip), c.network.apiserver_port)),
            admin_cert_current,
            targets_intact,
        ],
        "verbosity": 2,
    }


def task_rotate_pki() -> dict[str, Any]:
    """Replace the cluster PKI on purpose: archive the old set, make a new one, then re-create nodes."""
    return {
        "actions": [rotate_pki],
        "uptodate": [False],
        "verbosity": 2,
    }
