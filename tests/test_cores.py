"""A training run's thread count: the decision with its inputs faked, the CPU's name from
/proc/cpuinfo's strings, the load from /proc/stat's, the cores under a CPU quota, and the registry
of the user's runs for real, in processes of its own (the runs through the command line are in
test_shared_machine.py)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lenet_fmnist.host import cpu, load, threads
from lenet_fmnist.host.load import busy_between, busy_cores, cpu_ticks
from lenet_fmnist.host.registry import is_registered, other_runs, register, registered_while_running, unregister
from lenet_fmnist.host.threads import Threads, fixed_threads, threads_for_load, training_threads, usable_cores

# ---------------------------------------------------------------------------------------------
# The CPU's name


def test_cpuinfo_gives_the_first_processors_model() -> None:
    text = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: something else\n\n"
    )
    assert cpu.parse_cpuinfo(text) == "AMD EPYC 9654 96-Core Processor"


def test_the_cpu_is_named_with_its_family_and_model() -> None:
    """A VM's "AMD EPYC" names a Zen 2 and a Zen 5 alike: the numbers tell them apart."""
    text = "vendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n"
    assert cpu.parse_cpuinfo(text) == "AMD EPYC (family 26, model 2)"


# ---------------------------------------------------------------------------------------------
# The thread count


@pytest.mark.parametrize(
    ("config", "environ", "usable", "expected"),
    [
        (3, {"OMP_NUM_THREADS": "1"}, 2, (3, "threads=3 in the config")),
        (1, {}, 2, (1, "threads=1 in the config")),
        (None, {"OMP_NUM_THREADS": "1"}, 2, (1, "OMP_NUM_THREADS=1")),
        (None, {"OMP_NUM_THREADS": "8"}, 2, (2, "OMP_NUM_THREADS=8, capped at the 2 cores")),
    ],
)
def test_config_then_omp_num_threads_decide(
    config: int | None, environ: dict[str, str], usable: int, expected: tuple[int, str]
) -> None:
    decided = fixed_threads(config, environ, usable)
    assert decided is not None
    assert decided.count == expected[0] and decided.reason.startswith(expected[1]), decided


@pytest.mark.parametrize("omp", [None, "", "0", "2,1", "two"])
def test_without_them_the_load_decides(omp: str | None) -> None:
    environ = {} if omp is None else {"OMP_NUM_THREADS": omp}
    assert fixed_threads(None, environ, 2) is None


@pytest.mark.parametrize(
    ("usable", "runs", "busy", "expected"),
    [
        (2, [], 0.0, Threads(2, "the cores are free")),
        (2, [], 0.4, Threads(2, "the cores are free")),
        (2, [1234], 0.0, Threads(1, "1 other lenet_fmnist run is training (pid 1234)")),
        (2, [1234], 1.2, Threads(1, "1 other lenet_fmnist run is training (pid 1234)")),  # the same core
        (2, [], 1.0, Threads(1, "other programs keep 1.0 of 2 cores busy")),
        (2, [11, 12], 0.0, Threads(1, "2 other lenet_fmnist runs are training (pids 11, 12)")),  # never below one
        (2, [], 1.6, Threads(1, "other programs keep 1.6 of 2 cores busy")),
        (8, [5], 2.7, Threads(5, "1 other lenet_fmnist run is training (pid 5); 2.7 of 8 cores are busy")),
        (8, [5, 6, 7], 2.7, Threads(5, "3 other lenet_fmnist runs are training (pids 5, 6, 7)")),
    ],
)
def test_the_load_leaves_the_free_cores(usable: int, runs: list[int], busy: float, expected: Threads) -> None:
    assert threads_for_load(usable, runs, busy) == expected


def test_the_decision_watches_the_load_only_when_nothing_else_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_watching() -> float:
        raise AssertionError("the load was sampled although the thread count was fixed")

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "affinity_cores", lambda: {0, 1})
    monkeypatch.setattr(threads, "other_runs", lambda: [4321])
    monkeypatch.setattr(threads, "busy_cores", no_watching)
    assert training_threads(None, {"OMP_NUM_THREADS": "2"}) == (2, "OMP_NUM_THREADS=2")
    assert training_threads(2, {}).count == 2

    monkeypatch.setattr(threads, "busy_cores", lambda: 0.2)
    decided = training_threads(None, {})
    assert decided == (1, "1 other lenet_fmnist run is training (pid 4321)")
    assert str(decided) == "1 thread: 1 other lenet_fmnist run is training (pid 4321)"


def test_under_a_cpu_quota_the_host_wide_load_is_not_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quota of 2 cores on a 16-core host: /proc/stat counts other tenants' work, so only our runs count."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "affinity_cores", lambda: set(range(16)))
    monkeypatch.setattr(threads, "other_runs", lambda: [])
    monkeypatch.setattr(threads, "busy_cores", lambda: 14.0)  # the host is busy
    assert training_threads(None, {}) == (2, "the cores are free")


COUNT_CORES = "from lenet_fmnist.host.threads import usable_cores; print(usable_cores())"


def test_the_usable_cores_follow_a_cap_as_joblib_reads_it() -> None:
    """LOKY_MAX_CPU_COUNT stands in for a quota wherever no cgroup can be made (joblib reads both)."""
    env = {**os.environ, "LOKY_MAX_CPU_COUNT": "1"}
    counted = subprocess.run([sys.executable, "-c", COUNT_CORES], env=env, capture_output=True, text=True, check=True)
    assert counted.stdout.split() == ["1"]


# ---------------------------------------------------------------------------------------------
# The load of other programs, from /proc/stat

STAT_BEFORE = """cpu  300 0 100 900 0 0 0 0 0 0
cpu0 100 0 50 300 0 0 0 0 0 0
cpu1 100 0 25 300 0 0 0 0 0 0
cpu2 100 0 25 300 0 0 0 0 0 0
intr 12345 0 0
"""
# cpu0: 60 of 100 ticks busy (steal counts), cpu1: idle but for iowait, cpu2: outside the affinity.
STAT_AFTER = """cpu  0 0 0 0 0 0 0 0 0 0
cpu0 140 5 55 340 0 0 0 10 0 0
cpu1 100 0 25 370 30 0 0 0 0 0
cpu2 200 0 25 300 0 0 0 0 0 0
"""


def test_busy_cores_from_proc_stat() -> None:
    before, after = cpu_ticks(STAT_BEFORE, {0, 1}), cpu_ticks(STAT_AFTER, {0, 1})
    assert set(before) == {0, 1}
    assert busy_between(before, after) == pytest.approx(0.6)


def test_busy_cores_here_is_a_share_of_the_usable_cores() -> None:
    assert 0.0 <= busy_cores(0.05) <= usable_cores()


# ---------------------------------------------------------------------------------------------
# The registry of the user's runs, in real processes

REGISTERED = """
import json, sys
from lenet_fmnist.host import cpu  # neither may import torch
from lenet_fmnist.host.registry import other_runs, register
register()
print(json.dumps({"torch": "torch" in sys.modules}), flush=True)
for line in sys.stdin:
    print(json.dumps(other_runs()), flush=True)
"""


def _start_registered(env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", REGISTERED], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert json.loads(process.stdout.readline()) == {"torch": False}  # registered, torch never imported
    return process


def _others_seen_by(process: subprocess.Popen[str]) -> list[int]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("look\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of its own, for this process and the ones it starts."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_two_registered_processes_see_each_other_and_a_killed_ones_entry_goes(runtime_dir: Path) -> None:
    first, second = _start_registered(dict(os.environ)), _start_registered(dict(os.environ))
    try:
        assert _others_seen_by(first) == [second.pid]
        assert _others_seen_by(second) == [first.pid]
        assert sorted(other_runs()) == sorted([first.pid, second.pid])  # this process is not in

        second.send_signal(signal.SIGKILL)
        second.wait(timeout=30)
        registry = runtime_dir / "lenet_fmnist" / "runs"
        assert len(list(registry.iterdir())) == 2  # the killed process's file stays, its lock gone
        assert _others_seen_by(first) == []
        assert [path.name.split("-")[0] for path in registry.iterdir()] == [str(first.pid)]  # stale: removed
    finally:
        for process in (first, second):
            process.kill()
            process.wait(timeout=30)
    assert other_runs() == []


def test_a_process_registered_for_a_training_call_leaves_after_it(runtime_dir: Path) -> None:
    seen: list[bool] = []

    @registered_while_running
    def training() -> None:
        seen.append(is_registered())

    assert not is_registered()
    training()
    assert seen == [True] and not is_registered()
    assert list((runtime_dir / "lenet_fmnist" / "runs").iterdir()) == []


def test_a_process_registered_before_stays_registered(runtime_dir: Path) -> None:
    register()
    try:
        registered_while_running(lambda: None)()
        assert is_registered()
        assert len(list((runtime_dir / "lenet_fmnist" / "runs").iterdir())) == 1
    finally:
        unregister()


def test_a_registry_that_another_user_owns_is_not_used(runtime_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    planted = runtime_dir / "lenet_fmnist"
    planted.mkdir()
    os.chown(planted, 65534, 65534)  # nobody's
    with caplog.at_level(logging.WARNING, logger="lenet_fmnist.host.registry"):
        register()
    assert not is_registered()
    assert f"{planted} belongs to another user" in caplog.text
    assert not (planted / "runs").exists()


def test_a_watch_begun_earlier_costs_no_more_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run begins watching the load before it loads its data: when the data took longer than
    the sampling time, reading the load waits no more."""
    watch = load.LoadWatch()
    slept: list[float] = []
    monkeypatch.setattr(load.time, "sleep", slept.append)
    monkeypatch.setattr(load.time, "monotonic", lambda: watch.started + 5.0)  # 5 s of loading since
    assert 0.0 <= watch.busy_cores(at_least=0.3) <= len(load.affinity_cores())
    assert slept == [0.0]
