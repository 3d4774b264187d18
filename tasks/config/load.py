"""config.yaml -> Cluster: read, validated once, every problem reported with its path and line."""

from __future__ import annotations

from pathlib import Path

from tasks.config.model import Cluster
from tasks.config.reader import Reader
from tasks.config.rules import read_cluster
from tasks.config.yamlsource import load_located, remember
from tasks.errors import ConfigError, Problem
from tasks.paths import PROJECT_ROOT


def parse_config(text: str, source: Path, yaml_cache: Path | None = None, *, remember_valid: bool = True
                 ) -> Cluster:
    """Validate config text; raise ConfigError listing every problem.

    With yaml_cache, the YAML parse is taken from there when remembered, and (remember_valid) a
    config that passed validation is remembered there for the next run.
    """
    located, problems = load_located(text, yaml_cache)
    r = Reader(located)
    r.problems.extend(problems)
    if problems and located.data is None:
        raise ConfigError(str(source), r.problems, "fix the YAML syntax at the line shown")
    if located.data is None:
        raise ConfigError(str(source), [Problem("<top>", None, "the file is empty")],
                          "start from the config.yaml at the top of the repository")
    if not isinstance(located.data, dict):
        raise ConfigError(
            str(source),
            [Problem("<top>", 1, f"must be a mapping of settings, got {type(located.data).__name__}")],
            "start from the config.yaml at the top of the repository",
        )
    cluster = read_cluster(r, located.data, source)
    if r.problems:
        raise ConfigError(str(source), r.problems, "edit the file and run `doit show` to check it")
    if yaml_cache is not None and remember_valid:
        remember(yaml_cache, text, located)
    return cluster


YAML_CACHE = PROJECT_ROOT / "cache" / "config"


def load_config(path: Path, *, remember_valid: bool = False) -> Cluster:
    """Read and validate a config file; ConfigError (never a traceback) on any problem.

    A remembered parse is used when there is one; remember_valid also writes one (loading the
    tasks must write nothing, so only a run that executes an action asks for it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem("<file>", None, "file not found")],
                          "pass an existing file: doit config=path/to/config.yaml ...") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem("<file>", None, f"cannot be read: {exc}")]) from None
    # Parsed YAML is remembered under the default cache folder (the config's own cache_dir is
    # not known before parsing).
    return parse_config(text, path.resolve(), YAML_CACHE, remember_valid=remember_valid)
