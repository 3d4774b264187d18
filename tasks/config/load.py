"""config.yaml -> Cluster: read, validated once, every problem reported with its path and line."""

from __future__ import annotations

import codecs
from pathlib import Path

from tasks.config.model import Cluster
from tasks.config.reader import Reader
from tasks.config.rules import read_cluster
from tasks.config.yamlguard import MAX_BYTES
from tasks.config.yamlsource import load_located, parsed_here, remember
from tasks.errors import ConfigError, Problem
from tasks.fsutil import FileTooLarge, NotARegularFile, read_regular
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
    text = read_config_text(path)
    # Parsed YAML is remembered under the default cache folder (the config's own cache_dir is
    # not known before parsing).
    return parse_config(text, path.resolve(), YAML_CACHE, remember_valid=remember_valid)


# Byte order marks of encodings other than UTF-8 (longest first: UTF-32 LE starts like UTF-16 LE).
_OTHER_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
               (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def read_config_text(path: Path) -> str:
    """The config file's text: a regular file of at most MAX_BYTES (fsutil.read_regular: nothing
    else is even opened), UTF-8 (a leading BOM is dropped)."""
    def refuse(message: str, hint: str = "pass a config file: doit config=path/to/config.yaml ...") -> ConfigError:
        return ConfigError(str(path), [Problem("<file>", None, message)], hint)

    try:
        data = read_regular(path, MAX_BYTES)
    except NotARegularFile as exc:
        raise refuse(f"is {exc.what}, not a config file") from None
    except FileTooLarge:
        raise refuse(f"is larger than {MAX_BYTES // 1024} KiB; a config is a few KB: is this the right file?") from None
    except FileNotFoundError:
        raise refuse("file not found", "pass an existing file: doit config=path/to/config.yaml ...") from None
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror}") from None
    for bom, encoding in _OTHER_BOMS:
        if data.startswith(bom):
            raise refuse(f"is {encoding} text", "save it as UTF-8 (every editor can)")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        what = "binary data" if b"\0" in data else "not UTF-8 text"
        raise ConfigError(str(path), [Problem("<file>", line, f"is {what}: byte {data[exc.start]:#04x} cannot be "
                                              "read as UTF-8")], "save it as UTF-8 text") from None


def remember_config(path: Path) -> None:
    """Keep the parse of path for the next runs, once a config loaded valid in this process (the
    tasks' loading writes nothing; a run that executes an action calls this). No second parse:
    what this process parsed is reused, and a parse read from the cache is already kept.
    Read like any config (read_config_text: a regular file, bounded), so a path that became a FIFO
    or a device since it was loaded never blocks or floods the run."""
    try:
        text = read_config_text(path)
    except (ConfigError, OSError):
        return  # a parse not remembered only costs the next run some speed
    located = parsed_here(text)
    if located is not None:
        remember(YAML_CACHE, text, located)
