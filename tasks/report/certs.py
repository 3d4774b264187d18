"""`doit certs`' table and `doit status`' one line about credentials (tasks/pki/expiry.py reads them)."""

from __future__ import annotations

import datetime

from tasks.pki.expiry import WARN_BEFORE, Credential, soonest
from tasks.report.table import format_table


def _left(row: Credential, now: datetime.datetime) -> str:
    days = row.days_left(now)
    if days is None:
        return f"age {row.age_days} days" if row.age_days is not None else "-"
    return f"{days:.0f} days" if abs(days) >= 2 else f"{days * 24:.0f} hours"


def format_certs(rows: list[Credential], now: datetime.datetime) -> str:
    table = [["CREDENTIAL", "WHERE", "EXPIRES (UTC)", "LEFT", "SIGNED BY", "STATE"]]
    for r in rows:
        expires = r.not_after.strftime("%Y-%m-%d %H:%M") if r.not_after else "-"
        table.append([r.name, r.where, expires, _left(r, now), r.signed_by or "-", r.state(now)])
    lines = [format_table(table)]
    attention = [r for r in rows if r.needs_attention(now)]
    if attention:
        lines += ["", f"{len(attention)} credential(s) need attention (warning window: "
                      f"{WARN_BEFORE.days} days):"]
        lines += [f"  {r.name}: {r.state(now)}{renew_hint(r)}" for r in attention]
    return "\n".join(lines)


def renew_hint(row: Credential) -> str:
    """What renews each kind of credential (the host renews only what it issued itself)."""
    if row.problem.startswith("unreachable"):
        return ""
    if row.name.startswith("admin.conf"):
        return " -> doit certs renew=1 (re-issued from the cluster CA; the CA is not touched)"
    if row.name.startswith("CA "):
        return " -> a new CA means a new cluster: doit rotate_pki, then re-create every node"
    return " -> on that node: kubeadm certs renew all, then restart its control-plane static pods"


def soonest_line(rows: list[Credential], now: datetime.datetime) -> str:
    """One line: which credential ends first and when (status shows it)."""
    first = soonest(rows)
    if first is None:
        return "certificates: none readable (doit pki)"
    assert first.not_after is not None
    state = first.state(now)
    flag = "" if state == "ok" else f"  ({state})"
    return (f"certificates: soonest expiry {first.name} in {_left(first, now)} "
            f"({first.not_after:%Y-%m-%d}){flag}; all of them: doit certs")
