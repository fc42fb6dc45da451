"""How many threads a process takes; all of the project's thread counts are decided here.

A thread count decides only speed: every computation of a run is cut into pieces that the config
fixes (lenet_fmnist.workers, lenet_fmnist.step), so a run computes the same bits with one thread or
with many. A training run decides its count once, at its start, from what else is running
(`training_threads`); eval, predict and export take the cores they may use (`command_threads`); a
launcher that starts several jobs at once gives each its share (`job_share`), through
OMP_NUM_THREADS.

Runs side by side that each take every core share the cores worse than with one thread each (a
team whose pieces wait for each other at every step waits for the slowest), so a run takes the
cores that nothing else keeps busy:

    threads = max(1, usable cores - busy elsewhere)

The usable cores are counted as schedulers count them (`usable_cores`: the CPU affinity, a
container's CPU quota and LOKY_MAX_CPU_COUNT, as joblib, and so the sweeper, counts them); busy
elsewhere is the larger of the user's other live lenet_fmnist training runs (the registry below)
and the cores that other programs keep busy, sampled from /proc/stat for a moment. Under a quota
/proc/stat counts the whole host, other tenants too, so only the registry counts there. A
`threads=` in the config and an OMP_NUM_THREADS in the environment (the user's, or a launcher's
share) come first, in that order.

The registry: a directory of the user's (`$XDG_RUNTIME_DIR/lenet_fmnist/runs`, else
`/tmp/lenet_fmnist-<uid>/runs`) with one file per training process, named after its pid and
locked (`flock`) by it for as long as it trains. The operating system drops the lock when the
process ends however it ends; a file whose lock can be taken is stale and is removed by whoever
finds it. A run registers as early as it can (cli.main, before Hydra and torch load) and decides
as late as it can (after its data is loaded), so that runs started a few seconds apart see each
other. This module must not import torch.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple, ParamSpec, TypeVar

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.3  # how long the load of the other programs is watched


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


def affinity_cores() -> set[int]:
    """The CPUs this process may be scheduled on (all of them where the platform cannot say)."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


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
    """The cores that neither the user's `other_runs` (their pids) nor other programs (`busy`
    cores of the ones this process may use, this process's own time left out) keep busy."""
    busy_cores = int(busy + 0.5)
    count = max(1, cores - max(len(other_runs), busy_cores))
    if busy_cores > len(other_runs):
        return Threads(count, f"other programs keep {busy:.1f} of {cores} cores busy")
    if other_runs:
        many = len(other_runs) > 1
        runs = f"{len(other_runs)} other lenet_fmnist run{'s are' if many else ' is'} training"
        return Threads(count, f"{runs} (pid{'s' if many else ''} {', '.join(map(str, other_runs))})")
    return Threads(count, "the cores are free")


def training_threads(config: int | None, environ: Mapping[str, str] = os.environ) -> Threads:
    """This run's thread count, decided now; watches the load for SAMPLE_SECONDS when it has to
    (not under a CPU quota, where /proc/stat counts other tenants' work too)."""
    cores = usable_cores()
    decided = fixed_threads(config, environ, cores)
    if decided is None:
        under_quota = cores < len(affinity_cores())
        decided = threads_for_load(cores, other_runs(), 0.0 if under_quota else busy_cores())
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


# ---- the load of other programs ----------------------------------------------------------------

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


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores of this process's affinity that other programs keep busy, watched for `seconds`;
    0 where /proc/stat cannot be read."""
    cpus = affinity_cores()
    stat = Path("/proc/stat")
    try:
        before, own, started = cpu_ticks(stat.read_text(), cpus), time.process_time(), time.monotonic()
        time.sleep(seconds)
        after = cpu_ticks(stat.read_text(), cpus)
    except (OSError, ValueError):
        return 0.0
    own_cores = (time.process_time() - own) / (time.monotonic() - started)
    return max(0.0, busy_between(before, after) - own_cores)


# ---- the registry of the user's training runs --------------------------------------------------


def registry(environ: Mapping[str, str] = os.environ) -> Path:
    """The directory of the user's live training runs."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "lenet_fmnist" if runtime else Path(f"/tmp/lenet_fmnist-{os.getuid()}")
    return base / "runs"


class _Entry(NamedTuple):
    pid: int  # the process that holds it (a forked child inherits the file, not the registration)
    path: Path
    fd: int


_entry: _Entry | None = None  # this process's file in the registry, while it is registered


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (a finder may have removed it as stale)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _new_entry(directory: Path) -> _Entry | None:
    """A fresh file in the registry, locked by this process; None when a finder of stale entries
    took it between its creation and the lock (it removes it: try another)."""
    path = directory / f"{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_file(path, fd):
        os.close(fd)
        return None
    os.write(fd, f"{' '.join(sys.argv)}\n".encode())  # for a person looking: which command
    return _Entry(os.getpid(), path, fd)


def register() -> None:
    """Enter this process in the registry until `unregister` or its end; nothing if it is already
    in. A registry that cannot be used (a read-only /tmp) only leaves the process out of it."""
    global _entry
    if is_registered():
        return
    directory = registry()
    try:
        for part in (directory.parent, directory):  # the user's own, closed to others
            part.mkdir(mode=0o700, parents=True, exist_ok=True)
            if part.stat().st_uid != os.getuid():
                raise PermissionError(f"{part} belongs to another user")
        for _ in range(100):  # a finder of stale entries took the file before its lock: a new one
            if entry := _new_entry(directory):
                break
        else:
            raise BlockingIOError("its entries kept being taken by other processes")
    except OSError as error:
        log.warning("This run is not in the registry of runs (%s): runs started beside it will not count it.", error)
        return
    _entry = entry


def is_registered() -> bool:
    return _entry is not None and _entry.pid == os.getpid()


@atexit.register
def unregister() -> None:
    """Leave the registry (nothing if not in it); also when the process exits normally."""
    global _entry
    if _entry is None or not is_registered():
        return
    _entry.path.unlink(missing_ok=True)
    os.close(_entry.fd)
    _entry = None


def other_runs() -> list[int]:
    """The pids of the user's other live training runs; stale entries found on the way are removed."""
    mine = _entry.path.name if _entry is not None and is_registered() else None
    pids = []
    with contextlib.suppress(OSError):  # no registry (yet), or one this process cannot read: no runs
        for path in sorted(registry().iterdir()):
            pid = path.name.partition("-")[0]
            if path.name == mine or not pid.isdigit():
                continue
            if _is_live(path):
                pids.append(int(pid))
    return pids


def _is_live(path: Path) -> bool:
    """Whether a process holds this registry file's lock; a file nobody holds is removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # removed meanwhile: that run has ended
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        if _same_file(path, fd):
            path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)


Params = ParamSpec("Params")
Result = TypeVar("Result")


def registered_while_running(function: Callable[Params, Result]) -> Callable[Params, Result]:
    """Run `function` registered: a process that did not register already (a joblib worker, a
    submitit job) registers for the call and leaves the registry after it, so that an idle worker
    between jobs does not count as a run."""

    @functools.wraps(function)
    def registered(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        if is_registered():
            return function(*args, **kwargs)
        register()
        try:
            return function(*args, **kwargs)
        finally:
            unregister()

    return registered
