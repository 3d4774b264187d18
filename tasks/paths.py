"""Every path the pipeline reads or writes, in one place (sources vs build outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.config import PROJECT_ROOT


class Src:
    """Sources under version control."""

    ROOT = PROJECT_ROOT
    BUTANE = PROJECT_ROOT / "butane"
    SCRIPTS = PROJECT_ROOT / "scripts"
    TASKS = PROJECT_ROOT / "tasks"


@dataclass(frozen=True)
class Build:
    """Outputs of one cluster: everything under build/<name>/ (0700)."""

    root: Path

    @property
    def state_db(self) -> Path:
        return self.root / "doit-state.json"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def butane(self) -> Path:
        return self.root / "butane"

    @property
    def ign(self) -> Path:
        return self.root / "ign"

    @property
    def admin_conf(self) -> Path:
        return self.root / "admin.conf"

    @property
    def stamps(self) -> Path:
        return self.root / "stamps"

    def butane_file(self, name: str) -> Path:
        return self.butane / f"{name}.yaml"

    def ign_file(self, name: str) -> Path:
        return self.ign / f"{name}.ign"
