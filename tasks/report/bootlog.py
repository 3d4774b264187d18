"""What a node's boot log says: its last meaningful line, and whether the boot failed.

Recognised (sources: Ignition 2.x log levels as printed on the console, Flatcar's bootengine
units, systemd's status lines, dracut's and systemd's emergency shells):

- Ignition failed: `ignition[N]: CRITICAL : ...`, `Ignition failed: ...`, `failed to acquire
  config`, systemd's `[FAILED] Failed to start ignition-files.service - Ignition (files).` and
  `Dependency failed for ... Ignition ...`, and the old CoreOS text `Ignition has failed`;
- an emergency shell: dracut's `Entering emergency mode`, `Press Enter for maintenance`,
  `Generating "/run/initramfs/rdsosreport.txt"`, systemd's `You are in emergency mode`,
  `Welcome to emergency mode`, `Reached target emergency.target`;
- a boot that stalls: the VM runs, the current boot never showed a login prompt and the console
  has been silent for STALL_S. Flatcar can hang silently after an Ignition failure until a key
  is pressed (flatcar/Flatcar#2001), so silence before the login prompt is itself a signal.

Only the current boot counts (lines after the last firmware or kernel banner): a failure that a
re-created node no longer has is not reported again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IGNITION_FAILED, EMERGENCY, STALLED = "IGNITION FAILED", "EMERGENCY SHELL", "STALLED?"

IGNITION_FAILURE = re.compile(
    r"ignition\[\d+\]: CRITICAL|CRITICAL\s*: |Ignition failed|failed to acquire config|Ignition has failed"
    r"|Failed to start (ignition-\S+|Ignition)|Dependency failed for .*Ignition",
    re.IGNORECASE,
)
EMERGENCY_SHELL = re.compile(
    r"Entering emergency mode|You are in emergency mode|Welcome to emergency mode"
    r"|Reached target (emergency\.target|Emergency Mode)",
    re.IGNORECASE,
)
# What comes with an emergency shell too: shown only when none of the above was printed.
EMERGENCY_HINT = re.compile(
    r"Press Enter for (system )?maintenance|Give root password for maintenance"
    r"|Generating \"/run/initramfs/rdsosreport\.txt\"",
    re.IGNORECASE,
)
# A new boot: the firmware's banner, GRUB's, or the kernel's.
BOOT_START = re.compile(r"SeaBIOS \(version|Booting `|Linux version \d|BdsDxe: loading")
LOGIN_PROMPT = re.compile(r"\blogin:\s*$")
# How long a console may stay silent before the login prompt (first boots download sysexts
# quietly for a minute or two; Ignition's retries print every few seconds).
STALL_S = 600


@dataclass(frozen=True)
class BootSummary:
    verdict: str  # "" when nothing is wrong, else IGNITION_FAILED / EMERGENCY / STALLED
    line: str  # the line behind the verdict, or the last meaningful line
    logged_in: bool = False  # the current boot showed a login prompt

    @property
    def flagged(self) -> bool:
        return bool(self.verdict)


def current_boot(lines: list[str]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if BOOT_START.search(line)]
    return lines[starts[-1]:] if starts else lines


def summarize(lines: list[str], running: bool = False, silent_s: float = 0.0) -> BootSummary:
    """The verdict on the current boot from its console lines (control characters removed)."""
    boot = [line.strip() for line in current_boot(lines) if line.strip()]
    last = boot[-1] if boot else ""
    failed = next((line for line in boot if IGNITION_FAILURE.search(line)), None)
    if failed is not None:
        return BootSummary(IGNITION_FAILED, failed)
    emergency = next((line for line in boot if EMERGENCY_SHELL.search(line)), None)
    emergency = emergency or next((line for line in boot if EMERGENCY_HINT.search(line)), None)
    if emergency is not None:
        return BootSummary(EMERGENCY, emergency)
    logged_in = any(LOGIN_PROMPT.search(line) for line in boot)
    if running and not logged_in and silent_s >= STALL_S:
        minutes = int(silent_s // 60)
        return BootSummary(STALLED, f"no console output for {minutes} min and no login prompt yet"
                           + (f"; last: {last}" if last else ""))
    return BootSummary("", last, logged_in)
