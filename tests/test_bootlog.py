"""The boot log verdicts on console text as Flatcar, Ignition, dracut and systemd print it."""

from __future__ import annotations

import pytest

from tasks.libvirt.console import clean_text
from tasks.report.bootlog import EMERGENCY, IGNITION_FAILED, STALL_S, STALLED, summarize

BOOT = [
    "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
    "Booting `Flatcar default'",
    "[    0.000000] Linux version 6.6.60-flatcar (build@pony-truck.infra.kinvolk.io)",
    "[  OK  ] Reached target initrd-root-device.target - Initrd Root Device.",
]

# Lines seen on Flatcar consoles and in Ignition's own output (see tasks/report/bootlog.py).
IGNITION_FAILURES = [
    "[    7.123456] ignition[512]: CRITICAL : Ignition failed: failed to create files: failed to create files",
    "ignition[498]: CRITICAL : failed to acquire config: unable to fetch resource (no more attempts)",
    "[FAILED] Failed to start ignition-files.service - Ignition (files).",
    "[DEPEND] Dependency failed for ignition-complete.target - Ignition Complete.",
    "Ignition has failed. Please ensure your config is valid.",
    "CRITICAL : files: createFilesystemsFiles: createFiles: op(1): Error fetching file \"/sysroot/etc/x\"",
]
EMERGENCIES = [
    "Entering emergency mode. Exit the shell to continue.",
    "You are in emergency mode. After logging in, type \"journalctl -xb\" to view",
    "[  OK  ] Reached target emergency.target - Emergency Mode.",
    "Press Enter for maintenance",
    "Generating \"/run/initramfs/rdsosreport.txt\"",
    "Welcome to emergency mode!",
]


@pytest.mark.parametrize("line", IGNITION_FAILURES)
def test_ignition_failures_are_flagged(line: str) -> None:
    summary = summarize([*BOOT, line, "[  OK  ] Reached target emergency.target - Emergency Mode."])
    assert (summary.verdict, summary.line) == (IGNITION_FAILED, line.strip())


@pytest.mark.parametrize("line", EMERGENCIES)
def test_emergency_shells_are_flagged(line: str) -> None:
    assert summarize([*BOOT, line, ""]) == summarize([*BOOT, line])
    assert (summarize([*BOOT, line]).verdict, summarize([*BOOT, line]).line) == (EMERGENCY, line)


def test_a_good_boot_shows_its_last_line_and_is_not_flagged() -> None:
    good = [*BOOT, "ignition[502]: Ignition finished successfully",
            "This is node1-cp (Linux x86_64 6.6.60-flatcar) 12:00:01", "node1-cp login: "]
    summary = summarize(good, running=True, silent_s=10 * STALL_S)
    assert not summary.flagged and summary.logged_in and summary.line == "node1-cp login:"
    # A failure of an earlier boot does not count once the node booted again.
    assert not summarize([*BOOT, IGNITION_FAILURES[0], *good]).flagged
    # GET errors are retries of a remote fetch, not a failure yet.
    assert not summarize([*BOOT, 'ignition[400]: GET error: Get "http://10.0.0.1/x.ign": connection refused']).flagged


def test_a_silent_boot_without_login_prompt_is_stalled() -> None:
    hung = [*BOOT, "[   12.1] EXT4-fs (vda9): unmounting filesystem 9f3b."]  # flatcar/Flatcar#2001
    assert summarize(hung, running=True, silent_s=STALL_S - 1).verdict == ""
    stalled = summarize(hung, running=True, silent_s=STALL_S + 90)
    assert stalled.verdict == STALLED and "no console output for 11 min" in stalled.line
    assert stalled.line.endswith("unmounting filesystem 9f3b.")
    assert summarize(hung, running=False, silent_s=10 * STALL_S).verdict == ""  # a stopped VM is not stalling
    assert summarize([], running=True, silent_s=STALL_S).verdict == STALLED


def test_console_text_loses_colours_and_carriage_returns() -> None:
    raw = b"\x1b[0;32m  OK  \x1b[0m] Reached target\r\n\x1b[?25lprompt\x07\r\nlast"
    assert clean_text(raw).split("\n") == ["  OK  ] Reached target", "prompt", "last"]


def test_the_plainest_emergency_line_is_shown() -> None:
    dracut = ['Generating "/run/initramfs/rdsosreport.txt"', "", "Entering emergency mode. Exit the shell to continue.",
              "Press Enter for maintenance"]
    assert summarize([*BOOT, *dracut]).line == "Entering emergency mode. Exit the shell to continue."
