"""Remembering a valid config's parse (a speed-up for the next runs) reads the config the way
loading it does: a regular file, bounded, never a FIFO or a device (tasks/config/load.py)."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from support.configs import write_config
from tasks.config import load as load_module
from tasks.config.yamlsource import cache_entry


def test_a_parse_is_remembered_from_a_regular_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(load_module, "YAML_CACHE", cache)
    config = write_config(tmp_path)
    text = config.read_text()
    load_module.load_config(config)  # parsed in this process, nothing remembered yet
    assert not cache_entry(cache, text).exists()

    # The same text behind a FIFO: a reader of it would block until a writer comes, and get
    # whatever the writer sends. This writer sends the valid text as soon as anyone reads.
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no reader yet
                time.sleep(0.01)
                continue
            os.write(fd, text.encode())
            os.close(fd)
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        load_module.remember_config(fifo)
    finally:
        done.set()
        thread.join()
    assert not cache_entry(cache, text).exists(), "the FIFO was read"

    load_module.remember_config(config)
    assert cache_entry(cache, text).exists()
