"""How many threads a process takes; all of the project's thread counts are decided here.

A thread count decides only speed: every computation of a run is cut into pieces that the config
fixes (lenet_fmnist.workers, lenet_fmnist.training.step), so a run computes the same bits with one
thread or with many. A training run decides its count once, at its start, from what else is
running (`training_threads`); eval, predict and export take the cores they may use
(`command_threads`); a launcher that starts several jobs at once gives each its share
(`job_share`), through OMP_NUM_THREADS.

Runs side by side that each take every core share the cores worse than with one thread each (a
team whose pieces wait for each other at every step waits for the slowest), so a run takes the
cores that nothing else keeps busy:

    threads = max(1, usable cores - busy elsewhere)

The usable cores are counted as schedulers count them (`usable_cores`: the CPU affinity, a
container's CPU quota and LOKY_MAX_CPU_COUNT, as joblib, and so the sweeper, counts them); busy
elsewhere is the larger of the user's other live lenet_fmnist training runs (host.registry) and
the cores that other programs keep busy (host.load). Under a quota /proc/stat counts the whole
host, other tenants too, so only the registry counts there. A `threads=` in the config and an
OMP_NUM_THREADS in the environment (the user's, or a launcher's share) come first, in that order.
A run decides as late as it can (after its data is loaded), so that runs started a few seconds
apart see each other. No torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import NamedTuple

from lenet_fmnist.host.load import LoadWatch, affinity_cores, busy_cores
from lenet_fmnist.host.registry import other_runs

log = logging.getLogger(__name__)


class Threads(NamedTuple):
    """The thread count of a training run, and why (metrics.json's `threads` and `threads_reason`)."""

    count: int
    reason: str

    def __str__(self) -> str:
        return f"{self.count} thread{'' if self.count == 1 else 's'}: {self.reason}"


def usable_cores() -> int:
    """The cores this process may use, as joblib counts them: the fewest of its CPU affinity (which
    job schedulers and launchers narrow), a container's CPU quota (cgroup v2 cpu.max, v1
    cfs_quota_us, rounded up) and LOKY_MAX_CPU_COUNT."""
    from joblib import cpu_count  # joblib's import takes ~0.2 s: only when a count is needed

    return cpu_count()


def omp_num_threads(environ: Mapping[str, str]) -> int | None:
    """OMP_NUM_THREADS as a positive count; None when unset or not a single positive number."""
    value = environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


# ---- a training run's thread count ------------------------------------------------------------


def fixed_threads(config: int | None, environ: Mapping[str, str], cores: int) -> Threads | None:
    """The thread count that something other than the load decides, in order of precedence:
    `threads=` in the config, OMP_NUM_THREADS (never more than the cores). None when neither says."""
    if config is not None:
        return Threads(config, f"threads={config} in the config")
    share = omp_num_threads(environ)
    if share is None:
        return None
    if share > cores:
        return Threads(cores, f"OMP_NUM_THREADS={share}, capped at the {cores} cores this process may use")
    return Threads(share, f"OMP_NUM_THREADS={share}")


def threads_for_load(cores: int, other_runs: list[int], busy: float) -> Threads:
    """The cores that neither the user's `other_runs` (their pids) nor other programs keep busy
    (`busy`: the cores of the ones this process may use that all other processes, those runs
    included, keep busy; this process's own time left out)."""
    busy_cores = int(busy + 0.5)
    count = max(1, cores - max(len(other_runs), busy_cores))
    share = f"{busy:.1f} of {cores} cores"
    if not other_runs:
        return Threads(count, f"other programs keep {share} busy" if busy_cores else "the cores are free")
    many = len(other_runs) > 1
    runs = f"{len(other_runs)} other lenet_fmnist run{'s are' if many else ' is'} training"
    runs += f" (pid{'s' if many else ''} {', '.join(map(str, other_runs))})"
    return Threads(count, f"{runs}; {share} are busy" if busy_cores > len(other_runs) else runs)


def training_threads(
    config: int | None, environ: Mapping[str, str] = os.environ, watch: LoadWatch | None = None
) -> Threads:
    """This run's thread count, decided now; when it has to, it reads the load that `watch` (begun
    earlier, as the run loaded its data) saw, or watches for SAMPLE_SECONDS from now (not under a
    CPU quota, where /proc/stat counts other tenants' work too)."""
    cores = usable_cores()
    decided = fixed_threads(config, environ, cores)
    if decided is None:
        under_quota = cores < len(affinity_cores())
        busy = 0.0 if under_quota else watch.busy_cores() if watch is not None else busy_cores()
        decided = threads_for_load(cores, other_runs(), busy)
    log.info("%s", decided)
    return decided


# A run on a GPU: the GPU computes, one CPU thread feeds it.
ONE_GPU_THREAD = Threads(1, "the GPU computes; one CPU thread feeds it")


# ---- the other commands, and the jobs a launcher starts at once ---------------------------------


def command_threads(config: int | None, environ: Mapping[str, str] = os.environ) -> Threads:
    """The thread count of eval, predict and export: `threads=` or OMP_NUM_THREADS as for a training
    run (`fixed_threads`), else every usable core: they are short, so the load is not watched."""
    cores = usable_cores()
    return fixed_threads(config, environ, cores) or Threads(cores, f"the {cores} cores this process may use")


# More threads than cores in all makes a run's shards wait for each other at every step, behind
# other work. So OMP_NUM_THREADS never raises a count above the cores, and a launcher that starts
# several jobs at once gives each its share of them.


def job_share(cores: int, concurrent_jobs: int, cpus_per_task: int | None) -> int:
    """Threads for one job of a launcher: the CPUs it asked for, else an equal share of this
    machine's `cores` among the jobs running at once, never below one."""
    if cpus_per_task:
        return cpus_per_task
    return max(1, cores // max(1, concurrent_jobs))
