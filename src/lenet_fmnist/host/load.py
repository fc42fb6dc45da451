"""The cores that other programs keep busy, sampled from /proc/stat for a moment. No torch."""

from __future__ import annotations

import os
import time
from pathlib import Path

SAMPLE_SECONDS = 0.3  # how long the load of the other programs is watched


def affinity_cores() -> set[int]:
    """The CPUs this process may be scheduled on (all of them where the platform cannot say)."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


CpuTicks = dict[int, tuple[int, int]]  # CPU number -> (busy ticks, all ticks) since boot


def cpu_ticks(stat: str, cpus: set[int]) -> CpuTicks:
    """Busy and total ticks of `cpus` from /proc/stat's text. Idle and iowait are idle; steal (time
    the hypervisor gave to others) is busy; guest time is already inside user and nice."""
    ticks: CpuTicks = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        values = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
        ticks[int(name[3:])] = (sum(values) - values[3] - values[4], sum(values))
    return ticks


def busy_between(before: CpuTicks, after: CpuTicks) -> float:
    """Cores kept busy between two samples: the busy fraction of each CPU, summed."""
    busy = 0.0
    for cpu, (busy_then, all_then) in before.items():
        busy_now, all_now = after.get(cpu, (busy_then, all_then))
        if all_now > all_then:
            busy += (busy_now - busy_then) / (all_now - all_then)
    return busy


class LoadWatch:
    """Watches the cores of this process's affinity that other programs keep busy, from its making
    to `busy_cores`: a run starts it before loading its data, so the watching costs it no time."""

    def __init__(self) -> None:
        self.cpus, self.stat = affinity_cores(), Path("/proc/stat")
        self.started, self.own = time.monotonic(), time.process_time()
        try:
            self.before: CpuTicks | None = cpu_ticks(self.stat.read_text(), self.cpus)
        except (OSError, ValueError):
            self.before = None  # no /proc/stat: nothing to watch

    def busy_cores(self, at_least: float = SAMPLE_SECONDS) -> float:
        """The cores other programs kept busy since the watch began, once it has watched for
        `at_least` seconds (this process's own time left out); 0 where /proc/stat cannot be read."""
        time.sleep(max(0.0, self.started + at_least - time.monotonic()))
        try:
            after = cpu_ticks(self.stat.read_text(), self.cpus)
        except (OSError, ValueError):
            return 0.0
        if self.before is None:
            return 0.0
        own_cores = (time.process_time() - self.own) / (time.monotonic() - self.started)
        return max(0.0, busy_between(self.before, after) - own_cores)


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores of this process's affinity that other programs keep busy, watched for `seconds` from now."""
    return LoadWatch().busy_cores(seconds)
