"""Faults users meet on a real machine, through the command line in subprocesses: two runs on one
directory, a lock left by a killed run, a full disk, a directory that becomes unwritable mid-run,
the load and the cores a run may use, which decide its speed but never a bit, and the CPU and kernels it
computed with."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (
    CLI,
    assert_ok,
    assert_same_run,
    epochs_done,
    next_steps,
    output,
    plain_args,
    read_metrics,
    resume_hints,
    run_each,
    sigterm_in_epoch_2,
    tiny_args,
    wait_for,
)
from lenet_fmnist.host.cpu import this_cpu
from lenet_fmnist.host.threads import usable_cores
from lenet_fmnist.run.files import LAST_CHECKPOINT, LOCK_FILE
from lenet_fmnist.training import checkpoint

# ---------------------------------------------------------------------------------------------
# One run per directory


def test_two_runs_started_together_on_one_directory_one_trains(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = tiny_args(tiny_data, run_dir, "epochs=2")
    processes = [cli.start(*args, log=tmp_path / f"{name}.log") for name in ("a", "b")]
    codes = [process.wait(timeout=180) for process in processes]
    logs = [(tmp_path / f"{name}.log").read_text() for name in ("a", "b")]

    assert sorted(codes) == [0, 1], logs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert f"is in use by process {processes[winner].pid} on " in logs[loser], logs[loser]
    assert "Traceback" not in logs[loser] and "hydra.run.dir=DIR" in logs[loser]
    assert read_metrics(run_dir)["status"] == "completed"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # one run's files, not two


def test_a_run_in_use_refuses_a_resume_and_a_killed_runs_lock_does_not_block_it(
    cli: CLI, plain_data: Path, tmp_path: Path
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    process = cli.start(*plain_args(plain_data, run_dir, "epochs=40"), log=log)
    try:
        wait_for(lambda: epochs_done(run_dir) >= 1, process, log)
        meanwhile = cli.run(*plain_args(plain_data, run_dir, "epochs=40", "resume=true"))
        assert meanwhile.returncode == 1 and f"is in use by process {process.pid}" in output(meanwhile)
        assert "Traceback" not in output(meanwhile)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (run_dir / LOCK_FILE).exists()  # the file stays; its lock went with the process
    resumed = cli.run(*plain_args(plain_data, run_dir, "epochs=40", "resume=true"), timeout=300)
    assert_ok(resumed)
    assert read_metrics(run_dir)["status"] == "completed"


# ---------------------------------------------------------------------------------------------
# The disk: full, or unwritable in the middle of a run


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A mount point for a tmpfs the test mounts (as root) and that is unmounted afterwards."""
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def mount(point: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


def test_a_full_disk_stops_the_run_with_one_paragraph_and_keeps_last_pt(
    cli: CLI, tiny_data: Path, tiny_run: Path, tmpfs: Path
) -> None:
    """Room for everything a run writes up to its first epoch's checkpoints, and half a
    checkpoint more: the second epoch's checkpoint cannot be written."""
    first_epoch = sum(path.stat().st_size for path in tiny_run.rglob("*") if path.is_file())
    half_checkpoint = (tiny_run / LAST_CHECKPOINT).stat().st_size // 2
    mount(tmpfs, f"size={first_epoch + half_checkpoint}")
    run_dir = tmpfs / "run"

    result = cli.run(*tiny_args(tiny_data, run_dir, "epochs=3"))

    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text and "RuntimeError" not in text, text
    assert "no space left on the device" in text and "free on its file system" in text, text
    assert f"{run_dir / LAST_CHECKPOINT} holds epoch 1, intact" in text, text
    assert "Resume with: " in text
    assert checkpoint.load(run_dir / LAST_CHECKPOINT)["epoch"] == 1
    assert read_metrics(run_dir)["status"] == "failed"


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Mount points, by name, for the tmpfs file systems a test mounts (`mount`), unmounted afterwards."""
    points: dict[str, Path] = {}
    yield points
    for point in points.values():
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def inodes_used(point: Path) -> int:
    stats = os.statvfs(point)
    return stats.f_files - stats.f_ffree


def full_disk_commands(
    tiny_data: Path, tiny_run: Path, tmp_path: Path, disks: dict[str, Path]
) -> dict[str, tuple[list[str], int]]:
    """Each command with, on its own tmpfs, room for the files it makes before its result and no
    more (in inodes: a file that cannot be created fails with ENOSPC, a full disk's error, while
    the files already open, such as the log, still take what is written to them)."""
    run_files = 1 + len(list(tiny_run.rglob("*")))  # a one-epoch run: the directory and everything in it
    hydra_files = 1 + sum(  # the directory, .hydra/ and its files, the log and the lock
        1 for p in tiny_run.rglob("*") if ".hydra" in p.relative_to(tiny_run).parts or p.suffix == ".log" or p.name == LOCK_FILE
    )  # fmt: skip
    up_to_checkpoints = run_files - 3  # best.pt, last.pt and metrics.json come after
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):  # a light square on black, of two sizes
        pixels = np.zeros((28, 28), dtype=np.uint8)
        pixels[6 : 16 + 4 * index, 8:20] = 200
        Image.fromarray(pixels).save(images / f"{index}.png")
    best, common = tiny_run / "checkpoints" / "best.pt", [f"data.root={tiny_data}", "device=cpu", "threads=1"]
    train = [*tiny_args(tiny_data, disks["train"] / "run")]
    sweep = [a for a in train if not a.startswith("hydra.run.dir=")]
    commands = {
        # Epoch 1 saved, epoch 2's first checkpoint refused; a sweep (in the mount point, with its
        # multirun.yaml and lock) whose second job's first checkpoint is refused.
        "train": ([*train, "epochs=2"], run_files),
        "sweep": ([sweep[0], "-m", *sweep[1:], "seed=0,1", f"hydra.sweep.dir={disks['sweep']}"], 2 + run_files + up_to_checkpoints),
        "eval": (["eval", f"checkpoint={best}", *common, f"hydra.run.dir={disks['eval'] / 'run'}"], hydra_files),
        # predictions.png fits, predictions.csv does not.
        "predict": (["predict", f"checkpoint={best}", f"images={images}", "device=cpu", "threads=1", f"hydra.run.dir={disks['predict'] / 'run'}"], hydra_files + 1),
        # The directory and model.pt fit, the sidecar does not.
        "export": (["export", f"checkpoint={best}", "format=torchscript", *common[:1], "threads=1", f"out={disks['export'] / 'model'}"], 2),
        "report": (["report", str(disks["report"] / "runs")], 0),
    }  # fmt: skip
    if importlib.util.find_spec("optuna"):  # the `search` extra; its study's journal on the roomy disk
        search = ["hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=1", "activation=relu,tanh", f"hydra.sweeper.storage={tmp_path / 'journal'}"]  # fmt: skip
        # search.json, multirun.yaml and the lock beside the trial's directory (the mount point).
        commands["search"] = ([sweep[0], "-m", *sweep[1:], *search, f"hydra.sweep.dir={disks['search']}"], 3 + up_to_checkpoints)  # fmt: skip
    return commands


def test_on_a_full_disk_each_command_names_its_next_step_and_it_works(
    cli: CLI, tiny_data: Path, tiny_run: Path, tmp_path: Path, disks: dict[str, Path]
) -> None:
    """train, a sweep, a search, eval, predict, export and report, each on a full disk: exit 1, one
    paragraph naming the full device, no traceback, and the command that goes on: `Resume with:`
    the run, sweep or search (resume=true), or `Run it again with:` the same command. Once there is
    room again, each of those run verbatim succeeds. (Run in one process each way: see run_each.)"""
    for name in ("train", "sweep", "search", "eval", "predict", "export", "report"):
        disks[name] = tmp_path / "disks" / name
        disks[name].mkdir(parents=True)
        mount(disks[name], "nr_inodes=1000")
    shutil.copytree(tiny_run, disks["report"] / "runs" / "run")
    commands = full_disk_commands(tiny_data, tiny_run, tmp_path, disks)
    for name, (_, room) in commands.items():
        subprocess.run(
            ["mount", "-o", f"remount,nr_inodes={inodes_used(disks[name]) + room}", str(disks[name])], check=True
        )

    failed = dict(zip(commands, run_each(cli, [args for args, _ in commands.values()]), strict=True))
    steps = {}
    for name, (code, text) in failed.items():
        assert code == 1 and "Traceback" not in text, f"{name}: {text}"
        assert "no space left on the device (no file can be created on its file system" in text, f"{name}: {text}"
        (steps[name],) = set(next_steps(text)) or {f"{name}: no next step in {text}"}
        kind, again = (
            ("Resume with: ", "train") if name in ("train", "sweep", "search") else ("Run it again with: ", name)
        )
        assert steps[name].startswith(f"{kind}python -m lenet_fmnist {again} "), steps[name]
        assert ("-m" in steps[name].split()[6:]) == (name in ("sweep", "search")), steps[name]
    assert not (disks["export"] / "model" / "model.pt").exists(), "a model without its sidecar was left behind"

    for point in disks.values():
        subprocess.run(["mount", "-o", "remount,nr_inodes=100000", str(point)], check=True)
    hints = [shlex.split(step.split(": ", 1)[1])[3:] for step in steps.values()]
    for name, (code, text) in zip(steps, run_each(cli, hints), strict=True):
        assert code == 0 and "Traceback" not in text, f"{name} ({steps[name]}): {text}"
    assert read_metrics(disks["train"] / "run")["epochs_completed"] == 2
    assert [read_metrics(job)["status"] for job in sorted(disks["sweep"].glob("*_*"))] == ["completed"] * 2
    assert {"eval.json", "predictions.csv"} <= {p.name for p in disks["eval"].rglob("*")} | {
        p.name for p in disks["predict"].rglob("*")
    }
    assert (disks["export"] / "model" / "model.pt.json").is_file() and (
        disks["report"] / "runs" / "report.md"
    ).is_file()
    if "search" in steps:
        assert "| 1 | complete |" in (disks["search"] / "search.md").read_text()


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Directories the test makes immutable (`chattr +i`: nothing can be created or renamed in
    them, not even by root), made mutable again afterwards so they can be removed."""
    made: list[Path] = []
    yield made
    for directory in made:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)


def test_a_directory_made_unwritable_mid_run_stops_it_and_resume_works_after(
    cli: CLI, plain_data: Path, tmp_path: Path, immutable: list[Path]
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    process = cli.start(*plain_args(plain_data, run_dir, "epochs=30"), log=log)
    try:
        wait_for(lambda: epochs_done(run_dir) >= 1, process, log)
        for directory in (run_dir / "checkpoints", run_dir):
            made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
            if made.returncode:
                pytest.skip(f"cannot make a directory immutable here: {made.stderr.strip()}")
            immutable.append(directory)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert code == 1, text
    assert "Traceback" not in text and "operation not permitted" in text, text
    saved = checkpoint.load(run_dir / LAST_CHECKPOINT)["epoch"]
    assert f"holds epoch {saved}, intact" in text

    for directory in immutable:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    (hint,) = resume_hints(text)
    assert_ok(cli.run_hint(hint, timeout=300))
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert [record["epoch"] for record in metrics["history"]] == list(range(1, 31))


# ---------------------------------------------------------------------------------------------
# Threads and the load: they decide a run's speed, never its bits

LOAD_ARGS = ("activation=relu", "pool=max", "augmentation=standard", "epochs=2")


def _load_args(data: Path, run_dir: Path) -> list[str]:
    """A run whose thread count the load decides (no `threads=`, no OMP_NUM_THREADS)."""
    return [arg for arg in plain_args(data, run_dir, *LOAD_ARGS) if arg not in {"threads=1", "epochs=3"}]


def _wait_for_line(log: Path, text: str, timeout: float = 120.0) -> None:
    """Until a process's log holds `text`."""
    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no {text!r} in {log} after {timeout:.0f} s"
        time.sleep(0.1)


@pytest.fixture
def free_env(cli: CLI) -> CLI:
    """The command line without the OMP_NUM_THREADS of the tests' environment: the load decides."""
    return CLI({key: value for key, value in cli.env.items() if key != "OMP_NUM_THREADS"}, cli.cwd)


@pytest.mark.serial  # "alone" must be alone: the other tests keep the cores busy
def test_the_same_command_computes_the_same_bits_alone_beside_a_busy_program_and_beside_a_run(
    free_env: CLI, plain_data: Path, tmp_path: Path
) -> None:
    """relu, max pool, augmentation, 2 epochs: alone it takes the free cores; beside a spinning
    program, and started while another of our runs trains, it takes what is left. Every figure,
    weight and curve is the same."""
    alone = tmp_path / "alone"
    assert_ok(free_env.run(*_load_args(plain_data, alone)))

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # busy in /proc/stat before the run looks
        assert_ok(free_env.run(*_load_args(plain_data, tmp_path / "busy")))
    finally:
        spinner.kill()
        spinner.wait()

    # The run beside which the last one starts trains long enough to be training when that one
    # decides (2 epochs of this data take half a second), and is compared with nothing.
    first_args = [arg if arg != "epochs=2" else "epochs=40" for arg in _load_args(plain_data, tmp_path / "first")]
    first = free_env.start(*first_args, log=tmp_path / "first.log")
    try:
        _wait_for_line(tmp_path / "first.log", "Training starts")
        assert_ok(free_env.run(*_load_args(plain_data, tmp_path / "beside")))
    finally:
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()

    cores_here = usable_cores()
    for name, reason in (("busy", "other programs keep"), ("beside", "other lenet_fmnist run")):
        metrics = read_metrics(tmp_path / name)
        assert reason in metrics["threads_reason"], metrics["threads_reason"]
        assert metrics["threads"] == max(1, cores_here - 1)
        assert_same_run(tmp_path / name, alone)


def test_one_thread_and_two_threads_compute_the_same_bits(cli: CLI, plain_data: Path, tmp_path: Path) -> None:
    """With dropout, label smoothing and the weight average on, so every part of a step is covered."""
    extra = ("activation=relu", "pool=max", "augmentation=standard", "dropout=standard", "ema.decay=0.99",
             "label_smoothing=0.1", "epochs=2")  # fmt: skip
    for threads in (1, 2):
        args = [arg for arg in plain_args(plain_data, tmp_path / f"t{threads}", *extra) if arg != "threads=1"]
        assert_ok(cli.run(*args, f"threads={threads}"))
    assert (read_metrics(tmp_path / "t1")["threads"], read_metrics(tmp_path / "t2")["threads"]) == (1, 2)
    assert_same_run(tmp_path / "t2", tmp_path / "t1")


def test_a_resume_with_another_thread_count_ends_as_the_uninterrupted_run(
    cli: CLI, plain_data: Path, reference_run: Path, tmp_path: Path
) -> None:
    """Started with 1 thread, stopped in epoch 2, resumed where OMP_NUM_THREADS=2 gives it 2: its
    numbers are those of the uninterrupted run all the same (a requeued SLURM job on a larger node)."""
    run_dir = tmp_path / "run"
    without_threads = [arg for arg in plain_args(plain_data, run_dir) if arg != "threads=1"]
    hint = sigterm_in_epoch_2(CLI({**cli.env, "OMP_NUM_THREADS": "1"}, cli.cwd), without_threads, run_dir)
    resumed = CLI({**cli.env, "OMP_NUM_THREADS": "2"}, cli.cwd).run_hint(hint, timeout=300)
    assert_ok(resumed)
    metrics = read_metrics(run_dir)
    assert (metrics["status"], metrics["threads"]) == ("completed", min(2, usable_cores()))
    assert_same_run(run_dir, reference_run)


def test_the_thread_count_follows_a_cap_on_the_cores(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """LOKY_MAX_CPU_COUNT (joblib's cap, read where a CPU quota is): one core, one thread."""
    env = {key: value for key, value in cli.env.items() if key != "OMP_NUM_THREADS"}
    args = [arg for arg in tiny_args(tiny_data, tmp_path / "run") if arg != "threads=1"]
    assert_ok(CLI({**env, "LOKY_MAX_CPU_COUNT": "1"}, cli.cwd).run(*args))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["threads"] == 1 and "of 1 cores" not in metrics["threads_reason"]


@pytest.fixture
def cpu_quota_of_one_core() -> Iterator[Path]:
    """A cgroup (v1 cpu controller, or v2) whose CPU quota is one core; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("making a cgroup and a namespace for it needs root and unshare")
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    group = (v1 if (v1 / "cpu.cfs_quota_us").exists() else v2) / f"lenet-test-{os.getpid()}"
    try:
        group.mkdir()
        if (group / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text("100000")
        else:
            (group / "cpu.max").write_text("100000 100000")
    except OSError as error:
        with contextlib.suppress(OSError):
            group.rmdir()
        pytest.skip(f"cannot make a cgroup with a CPU quota here: {error}")
    yield group
    group.rmdir()


def test_the_thread_count_follows_a_containers_cpu_quota(
    cli: CLI, tiny_data: Path, tmp_path: Path, cpu_quota_of_one_core: Path
) -> None:
    """The run inside the cgroup sees it as a container does (its own cgroup namespace, the cgroup
    file system mounted afresh): a quota of one core gives one thread, whatever the affinity says."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core only: a quota of one changes nothing")
    hierarchy = "cgroup -o cpu" if cpu_quota_of_one_core.parent.name == "cpu" else "cgroup2"
    point = cpu_quota_of_one_core.parent
    env = {key: value for key, value in cli.env.items() if key != "OMP_NUM_THREADS"}
    args = [arg for arg in tiny_args(tiny_data, tmp_path / "run") if arg != "threads=1"]
    inside = (
        f"mount -t tmpfs none /sys/fs/cgroup && mkdir -p {point} && mount -t {hierarchy} none {point} && "
        f"exec {shlex.join(cli.command(args))}"
    )
    script = (
        f"echo $$ > {cpu_quota_of_one_core}/cgroup.procs && exec unshare --cgroup --mount sh -c {shlex.quote(inside)}"
    )
    result = subprocess.run(["sh", "-c", script], env=env, cwd=cli.cwd, capture_output=True, text=True, timeout=300)
    if result.returncode and "unshare" in result.stderr and "Operation not permitted" in result.stderr:
        pytest.skip(f"cannot enter a cgroup namespace here: {result.stderr.strip()}")
    assert_ok(result)
    assert read_metrics(tmp_path / "run")["threads"] == 1


# ---------------------------------------------------------------------------------------------
# Where a run computed: the CPU and its kernels


def test_a_run_records_the_cpu_and_kernels_it_computed_with(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """torch's and oneDNN's own variables select an AVX2 machine's kernels on a newer CPU (how
    docs/results.md reads a verdict with another rounding); metrics.json says so, beside the CPU."""
    assert_ok(cli.run(*tiny_args(tiny_data, tmp_path / "own")))
    metrics = read_metrics(tmp_path / "own")
    assert (metrics["cpu"], metrics["cpu_kernels"], metrics["gpu"]) == (
        this_cpu(),
        torch.backends.cpu.get_cpu_capability(),
        None,
    )
    if torch.backends.cpu.get_cpu_capability() not in {"AVX2", "AVX512"}:
        pytest.skip("needs an x86 CPU with AVX2")
    env = {**cli.env, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert_ok(CLI(env, cli.cwd).run(*tiny_args(tiny_data, tmp_path / "run")))
    metrics = read_metrics(tmp_path / "run")
    assert (metrics["cpu"], metrics["cpu_kernels"]) == (this_cpu(), "AVX2, ONEDNN_MAX_CPU_ISA=AVX2")


def test_a_run_resumed_with_other_kernels_says_its_bits_change(cli: CLI, plain_data: Path, tmp_path: Path) -> None:
    """Begun with an AVX2 machine's kernels, resumed with this machine's own: the log and the run's
    warnings say so (a requeued job may land on another kind of node the same way)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("needs an AVX-512 CPU, whose kernels differ from the AVX2 ones")
    run_dir = tmp_path / "run"
    capped = CLI({**cli.env, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, cli.cwd)
    hint = sigterm_in_epoch_2(capped, plain_args(plain_data, run_dir), run_dir)
    resumed = cli.run_hint(hint, timeout=300)
    assert_ok(resumed)
    cpu = this_cpu()
    expected = f"Resumed after epoch 1 on {cpu} with AVX512 kernels; it ran on {cpu} with AVX2, ONEDNN_MAX_CPU_ISA=AVX2 kernels"
    assert expected in output(resumed)
    assert any(expected in text for text in read_metrics(run_dir)["warnings"])
