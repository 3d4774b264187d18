"""Every path the pipeline reads or writes, in one place (sources vs build outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Src:
    """Sources under version control."""

    ROOT = PROJECT_ROOT
    BUTANE = PROJECT_ROOT / "butane"
    SCRIPTS = PROJECT_ROOT / "scripts"
    TASKS = PROJECT_ROOT / "tasks"
    TRANSLATOR = TASKS / "butane"
    # Code whose change must re-render every Butane file: the templates' shared parts and the
    # modules that build their contexts and kubeadm documents.
    RENDER_CODE = (
        BUTANE / "_macros.j2", BUTANE / "_units.j2", BUTANE / "_control_plane.j2", BUTANE / "_day2.j2",
        TASKS / "plan" / "layers.py", TASKS / "plan" / "templates.py", TASKS / "plan" / "kubeadm.py",
        TASKS / "plan" / "day2.py",
    )
    # Code whose change must rewrite the private fragments.
    SECRETS_CODE = (TASKS / "plan" / "secrets.py", TASKS / "plan" / "kubeadm.py")


@dataclass(frozen=True)
class Build:
    """Outputs of one cluster: everything under build/<name>/ (0700)."""

    root: Path

    @property
    def state_db(self) -> Path:
        return self.root / "doit-state.json"

    # Bookkeeping of the folder itself (tasks/buildroot.py, tasks/written.py).
    @property
    def marker(self) -> Path:
        """Written when flatcar-ha makes (or adopts) the folder: only such a folder is ever changed."""
        return self.root / ".flatcar-ha"

    @property
    def run_lock(self) -> Path:
        return self.root / ".run.lock"

    @property
    def state_lock(self) -> Path:
        return self.root / ".state.lock"

    @property
    def digest_key(self) -> Path:
        return self.root / "digest.key"

    @property
    def written(self) -> Path:
        return self.root / "written.json"

    @property
    def rotation_journal(self) -> Path:
        return self.root / ".pki-rotation.json"

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
    def image_manifest(self) -> Path:
        """What `doit image` verified, for the steps after it (tasks/flatcar/image.py)."""
        return self.root / "flatcar-image.json"

    @property
    def bundle(self) -> Path:
        """`doit bundle`'s archive for air-gapped sites (tasks/artifacts/bundle.py)."""
        return self.root / "bundle.tar"

    def butane_file(self, name: str) -> Path:
        return self.butane / f"{name}.yaml"

    def ign_file(self, name: str) -> Path:
        return self.ign / f"{name}.ign"
