"""flatcar-ha tasks. Run `doit list` to see them; `doit config=other.yaml TASK` for another cluster."""

from tasks.context import prepare_state_dir
from tasks.show import task_show

DOIT_CONFIG = {
    "default_tasks": ["show"],
    "backend": "json",
    "dep_file": prepare_state_dir(),
    # Fixed here on purpose: changing the checker on an existing state file breaks doit.
    "check_file_uptodate": "md5",
    "verbosity": 1,
    "action_string_formatting": "new",
}

__all__ = ["DOIT_CONFIG", "task_show"]
