"""Sweeps on Hydra's launchers: joblib for local parallel sweeps, submitit for SLURM and
its local rehearsal, each job with its share of the cores and, on a requeue, resuming its run.

The pure logic is tested everywhere. The real sweeps run `python -m lenet_fmnist train -m` in a
subprocess on tiny synthetic data and need the `cluster` extra (pip install -e '.[cluster]'); they
are skipped without it, so the base install's suite still passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import CLI, assert_ok, output
from lenet_fmnist import device as runtime
from lenet_fmnist.host import threads
from lenet_fmnist.host.threads import command_threads, job_share
from lenet_fmnist.launch import launchers
from lenet_fmnist.run.config_keys import with_resume

EXTRA = "needs the `cluster` extra: pip install -e '.[cluster]'"


# ---------------------------------------------------------------------------------------------
# Pure logic: requeue overrides, thread shares, GPU choice


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=1"], ["seed=1", "resume=true"]),
        (["resume=false", "seed=1"], ["seed=1", "resume=true"]),
        (["seed=1", "+resume=true", "++resume=false", "~resume"], ["seed=1", "resume=true"]),
        (["resume_from=x"], ["resume_from=x", "resume=true"]),  # another key that merely starts alike
    ],
)
def test_with_resume_sets_resume_once(overrides: list[str], expected: list[str]) -> None:
    assert with_resume(overrides) == expected


@pytest.mark.parametrize(
    ("environ", "restarted"),
    [
        ({}, False),
        ({"SLURM_RESTART_COUNT": "0"}, False),
        ({"SLURM_RESTART_COUNT": "2"}, True),
        ({"SLURM_RESTART_COUNT": ""}, False),
    ],
)
def test_restarted_by_slurm_reads_the_restart_count(environ: dict[str, str], restarted: bool) -> None:
    assert launchers.restarted_by_slurm(environ) is restarted


@pytest.mark.parametrize(
    ("cores", "jobs", "cpus_per_task", "share"),
    [(2, 2, None, 1), (2, 5, None, 1), (16, 4, None, 4), (16, 3, None, 5), (16, 4, 2, 2), (8, 1, None, 8)],
)
def test_job_share_splits_the_cores(cores: int, jobs: int, cpus_per_task: int | None, share: int) -> None:
    assert job_share(cores, jobs, cpus_per_task) == share


@pytest.mark.parametrize(
    ("device", "job_num", "gpus", "chosen"),
    [
        ("auto", 0, 4, "cuda:0"),
        ("auto", 5, 4, "cuda:1"),
        ("auto", 3, 2, "cuda:1"),
        ("auto", 3, 1, "auto"),  # one GPU (a SLURM job's own): auto already picks it
        ("auto", 3, 0, "auto"),  # no GPU: auto means the CPU
        ("auto", None, 4, "auto"),  # a single run, not a sweep
        ("cpu", 3, 4, "cpu"),  # an explicit device always wins
        ("cuda:2", 3, 4, "cuda:2"),
    ],
)
def test_sweep_jobs_spread_over_gpus(device: str, job_num: int | None, gpus: int, chosen: str) -> None:
    assert runtime.spread_over_gpus(device, job_num, gpus) == chosen


def test_the_other_commands_honour_affinity_and_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert command_threads(None).count == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what the joblib launcher sets with 2 jobs on 4 cores
    assert command_threads(None).count == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never more threads than cores
    assert command_threads(None).count == 4


def test_explicit_threads_win_over_the_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads(3) == 3
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The launchers in this process: presets and the requeue


@pytest.fixture
def submitit_plugin() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=EXTRA)


def _launcher(overrides: list[str]) -> Any:
    """The launcher that `train -m OVERRIDES` would use, composed and instantiated by Hydra itself
    (which accepts launcher classes only from the hydra_plugins package)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext

    from lenet_fmnist import config
    from lenet_fmnist.cli import config_dir

    config.register()
    setup_globals()  # the ${now:...} resolver of the default sweep directory
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)  # type: ignore[arg-type]
        return Plugins.instance().instantiate_launcher(hydra_context=context, task_function=lambda _: None, config=cfg)


def test_requeue_resumes_the_job(submitit_plugin: None, tmp_path: Path) -> None:
    """What submitit's SIGUSR2 handler calls: the job is resubmitted with resume=true."""
    launcher = _launcher(["hydra/launcher=local", f"hydra.sweep.dir={tmp_path}"])

    delayed = launcher.checkpoint(["seed=1"], "hydra.sweep.dir", 3, "job", {})

    assert delayed.function is launcher
    assert delayed.args == (["seed=1", "resume=true"], "hydra.sweep.dir", 3, "job", {})


def test_a_job_restarted_by_slurm_resumes_with_its_share_of_threads(
    submitit_plugin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLURM's own requeue (no SIGUSR2, e.g. a node failure) reruns the original submission."""
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # so that monkeypatch also removes what the launcher sets
    monkeypatch.delenv("OMP_NUM_THREADS")
    launcher = _launcher(["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=3", f"hydra.sweep.dir={tmp_path}"])
    # Hydra's plugin scan may import the plugin modules again: patch the class this launcher uses.
    base = next(cls for cls in type(launcher).__mro__ if cls.__name__ == "BaseSubmititLauncher")
    ran: list[list[str]] = []
    monkeypatch.setattr(base, "__call__", lambda self, overrides, *_: ran.append(overrides))

    launcher(["seed=1"], "hydra.sweep.dir", 0, "job", {})

    assert ran == [["seed=1", "resume=true"]]
    assert os.environ["OMP_NUM_THREADS"] == "3"  # cpus_per_task, for clusters that do not pin CPUs


def test_slurm_preset_asks_for_one_gpu_and_the_requeue_signal(
    submitit_plugin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbatch script that `hydra/launcher=slurm` would submit, written without a cluster."""
    import submitit

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")  # submitit refuses to build a SLURM executor without srun
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    scripts: list[str] = []

    def capture(executor: Any, function: Any, *args: Any) -> list[Any]:
        scripts.append(executor._executor._make_submission_file_text("COMMAND", "uid"))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher = _launcher(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=30",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    assert type(launcher).__module__ == "hydra_plugins.lenet_fmnist_launchers"

    launcher.launch([["seed=0"], ["seed=1"]], 0)

    flags = set(scripts[0].splitlines())
    assert {
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@120",
    } <= flags


# ---------------------------------------------------------------------------------------------
# Real sweeps in a subprocess


def _sweep_args(data: Path, sweep_dir: Path, launcher: str, *extra: str) -> list[str]:
    return [
        "train", "-m", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}",
        f"data.root={data}", "data.val_size=32", "epochs=1", "device=cpu", "seed=0,1", *extra,
    ]  # fmt: skip


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))


def _metrics(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "metrics.json").read_text())


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_sweep(env: dict[str, str], cwd: Path, args: list[str]) -> None:
    assert_ok(CLI(env, cwd).run(*args, timeout=240))


def test_joblib_sweep_gives_each_job_its_share_of_the_cores(
    tiny_data: Path, sweep_env: dict[str, str], tmp_path: Path
) -> None:
    joblib = pytest.importorskip("joblib", reason=EXTRA)
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=EXTRA)
    sweep_dir = tmp_path / "sweep"

    _run_sweep(sweep_env, tmp_path, _sweep_args(tiny_data, sweep_dir, "joblib", "hydra.launcher.n_jobs=2"))

    # joblib's workers get OMP_NUM_THREADS = cpu_count // n_jobs; the trainer never exceeds its cores.
    share = max(1, min(_cores(), joblib.cpu_count() // 2))
    jobs = _job_dirs(sweep_dir)
    assert [job.name.split("_", 1)[0] for job in jobs] == ["0", "1"]
    for job in jobs:
        metrics = _metrics(job)
        assert metrics["status"] == "completed", metrics
        assert metrics["threads"] == share


def test_a_joblib_sweep_whose_jobs_fail_exits_non_zero(sweep_env: dict[str, str], tmp_path: Path) -> None:
    """The jobs run in worker processes, so the sweep's exit status comes from their records."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=EXTRA)
    sweep_dir = tmp_path / "sweep"
    args = _sweep_args(tmp_path / "no-such-dir", sweep_dir, "joblib", "hydra.launcher.n_jobs=2")

    result = CLI(sweep_env, tmp_path).run(*args, timeout=240)

    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert "2 job(s) of the sweep" in text and "0_data.val_size=32,epochs=1,seed=0" in text


def test_submitit_local_sweep_runs_each_job(
    submitit_plugin: None, tiny_data: Path, sweep_env: dict[str, str], tmp_path: Path
) -> None:
    """Hydra's own preset, unchanged: every job in its own process through submitit."""
    sweep_dir = tmp_path / "sweep"

    _run_sweep(sweep_env, tmp_path, _sweep_args(tiny_data, sweep_dir, "submitit_local"))

    jobs = _job_dirs(sweep_dir)
    assert len(jobs) == 2
    assert all(_metrics(job)["status"] == "completed" for job in jobs)


def _job_processes(sweep_dir: Path) -> list[int]:
    """Processes running a submitit job of this sweep (its command line names the sweep's folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it ended meanwhile
            continue
        if b"submitit.core._submit" in command and any(str(sweep_dir).encode() in word for word in command):
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the job processes through /proc")
def test_preempted_jobs_are_requeued_and_resume(
    submitit_plugin: None, tiny_data: Path, sweep_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGUSR2 is what SLURM sends before a time limit (and at pre-emption, where configured):
    each job is requeued with resume=true and finishes from its last saved epoch."""
    sweep_dir, epochs = tmp_path / "sweep", 100
    command = CLI(sweep_env, tmp_path).command(_sweep_args(tiny_data, sweep_dir, "local", f"epochs={epochs}"))
    sweep = subprocess.Popen(
        command, cwd=tmp_path, env=sweep_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(sweep_dir.glob("*/checkpoints/last.pt"))) < 2:  # both jobs are training
            assert sweep.poll() is None and time.monotonic() < deadline, "the jobs never saved an epoch"
            time.sleep(0.02)
        pids = _job_processes(sweep_dir)
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)
        out, _ = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out

    for job in _job_dirs(sweep_dir):
        metrics = _metrics(job)
        assert metrics["status"] == "completed", metrics
        assert [record["epoch"] for record in metrics["history"]] == list(range(1, epochs + 1))
        assert metrics["threads"] == max(1, _cores() // 2)  # two jobs started at once share the cores
        log = (job / "train.log").read_text()
        assert "requeued with resume=true" in log
        assert "Resuming" in log
