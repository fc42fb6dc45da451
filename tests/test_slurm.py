"""The SLURM path against a real scheduler: `hydra/launcher=slurm` sweeps submitted with
sbatch, requeued by `scontrol requeue`, signalled before their time limit and pre-empted.

Marked `slurm`, and skipped with the reason when no cluster answers `sinfo`: start one on this
machine with `scripts/slurm-local.sh start` (docs/sweeps.md, "Rehearsing a SLURM cluster on one
machine"). The jobs run `python -m lenet_fmnist` from this interpreter on synthetic data, with
the environment of the sweep that submitted them (sbatch passes it on). Each test waits on what
the scheduler and the jobs record (sacct, metrics.json, submitit's logs), never for a fixed time,
and prints what the scheduler did with its jobs (ids, the state of each attempt, restarts).
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import CLI, assert_ok, epochs_done, output, read_metrics, resume_hints, wait_for, write_dataset
from lenet_fmnist.run.files import LOCK_FILE

pytestmark = pytest.mark.slurm

START = "start one on this machine with scripts/slurm-local.sh start"
# What every job here asks for: one core (so two jobs run at once on two), a little memory, and no
# GPU: the preset's cpus_per_task=4, mem_gb=16 and one GPU fit no small machine.
RESOURCES = ("hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.gpus_per_node=null")
VAL = 256  # validation images of paced_data
EPOCH_SECONDS = 2.0  # an epoch of paced_data: a signal sent when epoch 1 is saved lands in epoch 2
EPOCHS = 3  # of the jobs interrupted in epoch 2
# Training time of the job that reaches its time limit: the 60 s before its signal with a margin
# (at 65 s, a CI run once finished the job before the signal came).
JOB_SECONDS = 90
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skip, saying why, unless a SLURM cluster answers and Hydra's submitit plugin is installed."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the `cluster` extra")
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip(f"no SLURM cluster: sinfo is not installed; {START}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"no SLURM cluster answers: sinfo timed out after 30 s; {START}")
    if answer.returncode != 0:
        reason = (answer.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"no SLURM cluster answers: sinfo failed ({reason}); {START}")


@pytest.fixture(scope="module")
def slurm_cli(cluster: None, cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """The command line without thread settings of its own: the launcher must set each job's."""
    env = {key: value for key, value in cli_env.items() if not key.endswith("_NUM_THREADS")}
    return CLI(env, tmp_path_factory.mktemp("slurm_cwd"))


def one_thread_speed() -> float:
    """Images per second of LeNet-5 training steps (batch 64, SGD) on one thread of this machine."""
    import torch  # here, not at the top: without a cluster the tests skip without importing it

    from lenet_fmnist.model import LeNet5

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = LeNet5().to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        images = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (64,))

        def step() -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()

        def speed(seconds: float) -> float:
            steps, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                step()
                steps += 1
            return steps * 64 / elapsed

        speed(0.2)  # warm-up
        # The fastest of three: a slow window (a neighbour's burst) would make every epoch too short.
        return max(speed(0.4) for _ in range(3))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paced_data(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data whose epoch lasts about EPOCH_SECONDS on one thread here: machines of this
    kind differ ~2x in speed, and the tests need a job of a known length in seconds."""
    train = max(64, round(one_thread_speed() * EPOCH_SECONDS / 64) * 64)
    return write_dataset(tmp_path_factory.mktemp("paced_data"), train=train + VAL, test=VAL, gz=False, seed=3)


def sweep_args(data: Path, sweep_dir: Path, *overrides: str, val_size: int = VAL) -> list[str]:
    return [
        "train", "-m", "hydra/launcher=slurm", *RESOURCES, f"hydra.sweep.dir={sweep_dir}", f"data.root={data}",
        f"data.val_size={val_size}", "device=cpu", *overrides,
    ]  # fmt: skip


def job_dir(sweep_dir: Path, number: int) -> Path:
    (found,) = sweep_dir.glob(f"{number}_*")
    return found


def job_ids(sweep_dir: Path) -> list[str]:
    """SLURM ids of the jobs submitted for the sweep ("7", or "7_0", "7_1" for an array), read from
    submitit's folders, one per job, in order of submission."""
    names = [path.parent.name for path in (sweep_dir / ".submitit").glob("*/*_submitted.pkl")]
    return sorted(names, key=lambda name: tuple(int(part) for part in name.split("_")))


def cancel_jobs(sweep_dir: Path) -> None:
    """Cancel what is left of the sweep's jobs (scancel ignores those that ended)."""
    ids = job_ids(sweep_dir) if (sweep_dir / ".submitit").is_dir() else []
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


@pytest.fixture(autouse=True)
def no_jobs_left(tmp_path: Path) -> Iterator[None]:
    """A test that fails half-way leaves none of its jobs to hold the node's cores after it."""
    yield
    for sweep_dir in tmp_path.iterdir():
        cancel_jobs(sweep_dir)


def submitit_log(sweep_dir: Path, job_id: str) -> str:
    """submitit's stdout and stderr of the job, every attempt (it appends)."""
    folder = sweep_dir / ".submitit" / job_id
    return "".join(path.read_text() for path in sorted(folder.glob(f"{job_id}_0_log.*")))


def scheduler(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def attempts(job_id: str) -> list[tuple[str, str]]:
    """(state, start time) of each attempt of the job, oldest first, as SLURM's accounting has them."""
    rows = scheduler("sacct", "-n", "-P", "-X", "-D", "-j", job_id, "-o", "State,Start").splitlines()
    return [(state.split()[0], start) for state, start in (row.split("|") for row in rows if row)]


def restarts(job_id: str) -> int:
    """How many times SLURM restarted the job (`scontrol show job`, while the controller knows it)."""
    found = re.search(r"\bRestarts=(\d+)", scheduler("scontrol", "-o", "show", "job", job_id))
    assert found, job_id
    return int(found.group(1))


def ended(ids: Iterable[str], timeout: float = 120) -> dict[str, list[str]]:
    """The state of every attempt of each job, once accounting has recorded the last one's end (it
    lags the job by moments, and the jobs may outlive the sweep that submitted them)."""
    deadline = time.monotonic() + timeout
    while True:
        states = {job_id: [state for state, _ in attempts(job_id)] for job_id in ids}
        if all(record and record[-1] in ENDED for record in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"the jobs did not end within {timeout} s: {states}\n{scheduler('squeue')}")
        time.sleep(0.2)


def report(name: str, states: dict[str, list[str]]) -> None:
    """What the scheduler did, for the record (pytest -rP shows it)."""
    for job_id, record in states.items():
        print(f"{name}: job {job_id}: attempts {' -> '.join(record)}, restarts {restarts(job_id)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float) -> tuple[int, str]:
    """Wait for the sweep to end (kill it after `timeout`); its exit status and what it printed."""
    try:
        process.wait(timeout=timeout)
    finally:
        stop(process)
    return process.returncode, log.read_text()


def print_job_logs(sweep_dir: Path) -> None:
    for train_log in sorted(sweep_dir.glob("*/train.log")):
        print(f"{train_log}:\n{train_log.read_text()}")


def assert_every_epoch_once(job: Path, epochs: int) -> None:
    metrics = read_metrics(job)
    assert metrics["status"] == "completed", metrics["status"]
    assert [record["epoch"] for record in metrics["history"]] == list(range(1, epochs + 1))


def test_a_sweep_runs_as_a_job_array_with_threads_from_cpus_per_task(
    slurm_cli: CLI, tiny_data: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"

    result = slurm_cli.run(*sweep_args(tiny_data, sweep_dir, "epochs=1", "seed=0,1", val_size=64), timeout=240)

    assert_ok(result)
    ids = job_ids(sweep_dir)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"], "the two jobs are the two tasks of one job array"
    states = ended(ids)
    report("array", states)
    assert states == {job_id: ["COMPLETED"] for job_id in ids}
    cpus = scheduler("sacct", "-n", "-P", "-X", "-j", array, "-o", "AllocCPUS").split()
    assert cpus == ["1", "1"], "each task was allocated its cpus_per_task"
    for number, job_id in enumerate(ids):
        metrics = read_metrics(job_dir(sweep_dir, number))
        assert metrics["status"] == "completed"
        assert metrics["threads"] == 1, "torch threads = cpus_per_task, not the machine's cores"
        assert "Job completed successfully" in submitit_log(sweep_dir, job_id)


class Interrupted(NamedTuple):
    code: int
    output: str
    sweep_dir: Path
    ids: list[str]


@pytest.fixture(scope="module")
def interrupted(slurm_cli: CLI, paced_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    """One sweep of two 3-epoch jobs, run at once, each interrupted by the scheduler as soon as it
    has saved epoch 1, so in epoch 2: job 0 by `scontrol requeue` (SLURM's own requeue, as after a
    node failure: SIGTERM, then the original submission runs again), job 1 by `scancel
    --signal=USR2` under a 60-minute limit (a pre-emption, for submitit). With max_num_timeout=0,
    job 1 is requeued only if the pre-emption does not count as a timeout."""
    sweep_dir = tmp_path_factory.mktemp("interrupted") / "sweep"
    args = sweep_args(
        paced_data, sweep_dir, f"epochs={EPOCHS}", "seed=0,1", "hydra.launcher.timeout_min=60",
        "hydra.launcher.max_num_timeout=0",
    )  # fmt: skip
    commands = {0: ["scontrol", "requeue"], 1: ["scancel", "--signal=USR2"]}
    log = sweep_dir.parent / "sweep.log"
    process = slurm_cli.start(*args, log=log)

    def saved(number: int) -> bool:
        return any(epochs_done(job) >= 1 for job in sweep_dir.glob(f"{number}_*"))

    try:
        while commands:
            wait_for(lambda: any(saved(number) for number in commands), process, log, timeout=120)
            for number in [number for number in commands if saved(number)]:
                subprocess.run([*commands.pop(number), job_ids(sweep_dir)[number]], check=True, timeout=60)
        code, text = finish(process, log, timeout=240)
    except BaseException:
        cancel_jobs(sweep_dir)  # the jobs of a failed setup must not hold the node's cores
        raise
    finally:
        stop(process)
    return Interrupted(code, text, sweep_dir, job_ids(sweep_dir))


def test_scontrol_requeue_restarts_the_job_which_resumes(interrupted: Interrupted) -> None:
    assert interrupted.code == 0, interrupted.output
    job_id = interrupted.ids[0]
    states = ended([job_id])
    report("scontrol requeue", states)
    assert states[job_id] == ["REQUEUED", "COMPLETED"]
    assert restarts(job_id) == 1
    assert "SLURM_RESTART_COUNT=1" in submitit_log(interrupted.sweep_dir, job_id)
    job = job_dir(interrupted.sweep_dir, 0)
    assert_every_epoch_once(job, EPOCHS)
    log = (job / "train.log").read_text()
    assert "Interrupted in epoch 2" in log and "Resuming" in log and "after epoch 1" in log, log
    # What the job prints to resume it is the sweep's own command, not the job's (submitit's).
    (hint,) = resume_hints(log)
    assert f"-m hydra.sweep.dir={interrupted.sweep_dir} " in hint and "seed=0,1" in hint, hint
    assert "hydra/launcher=slurm" in hint and ".submitit" not in hint, hint


def test_a_job_reaching_its_time_limit_is_signalled_requeued_and_completes(
    slurm_cli: CLI, paced_data: Path, tmp_path: Path
) -> None:
    """SIGUSR2 `signal_delay_s` before the 2-minute limit (SLURM checks limits every 30 s, so up to
    30 s sooner: after 30-60 s): submitit requeues the job, counting one timeout, and it resumes.
    The job trains for about JOB_SECONDS, so the signal always comes mid-run. Its second attempt
    gets a longer limit once the first is requeued: otherwise it could be signalled again after
    30 s, and the test would last a minute longer or not, by the phase of the scheduler's tick."""
    sweep_dir, limit_min, delay_s = tmp_path / "sweep", 2, 60
    epochs = math.ceil(JOB_SECONDS / EPOCH_SECONDS)
    args = sweep_args(
        paced_data, sweep_dir, f"epochs={epochs}", "seed=0", f"hydra.launcher.timeout_min={limit_min}",
        f"hydra.launcher.signal_delay_s={delay_s}", "hydra.launcher.max_num_timeout=20",
    )  # fmt: skip
    log = tmp_path / "sweep.log"
    process = slurm_cli.start(*args, log=log)

    def requeued() -> bool:
        return any("Requeued job" in submitit_log(sweep_dir, job_id) for job_id in job_ids(sweep_dir))

    try:
        try:
            wait_for(requeued, process, log, timeout=150)
        except pytest.fail.Exception:
            print_job_logs(sweep_dir)  # how long the job's epochs took, against EPOCH_SECONDS
            raise
        (job_id,) = job_ids(sweep_dir)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True, timeout=60)
        code, text = finish(process, log, timeout=240)
    finally:
        stop(process)

    assert code == 0, text
    states = ended([job_id])
    report("time limit", states)
    assert states[job_id] == ["REQUEUED", "COMPLETED"]
    submitit = submitit_log(sweep_dir, job_id)
    assert "this job is timed-out" in submitit and "(19 remaining timeouts)" in submitit, submitit
    # The signal came at least signal_delay_s before the first attempt's limit.
    signalled = re.search(r"\((\S+ \S+)\) - Caught signal SIGUSR2", submitit)
    assert signalled, submitit
    started = datetime.fromisoformat(attempts(job_id)[0][1])
    ran = (datetime.strptime(signalled.group(1), "%Y-%m-%d %H:%M:%S,%f") - started).total_seconds()
    print(f"time limit: SIGUSR2 after {ran:.1f} s of a {limit_min * 60} s limit, signal_delay_s={delay_s}")
    assert ran <= limit_min * 60 - delay_s + 1, ran  # sacct's start time is in whole seconds
    job = job_dir(sweep_dir, 0)
    assert_every_epoch_once(job, epochs)
    train_log = (job / "train.log").read_text()
    assert "requeued with resume=true" in train_log and "Resuming" in train_log, train_log
    assert "resume=true" in (job / ".hydra" / "overrides.yaml").read_text()


def test_a_preempted_job_is_requeued_without_counting_a_timeout(interrupted: Interrupted) -> None:
    assert interrupted.code == 0, interrupted.output
    job_id = interrupted.ids[1]
    states = ended([job_id])
    report("pre-emption", states)
    assert states[job_id] == ["REQUEUED", "COMPLETED"]
    submitit = submitit_log(interrupted.sweep_dir, job_id)
    assert "this job is preempted" in submitit and "(0 remaining timeouts)" in submitit, submitit
    job = job_dir(interrupted.sweep_dir, 1)
    assert_every_epoch_once(job, EPOCHS)
    log = (job / "train.log").read_text()
    assert "requeued with resume=true" in log and "Resuming" in log and "after epoch 1" in log, log
    assert "resume=true" in (job / ".hydra" / "overrides.yaml").read_text()


def test_a_refused_job_fails_the_sweep_but_not_the_other_job(slurm_cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"

    result = slurm_cli.run(
        *sweep_args(tiny_data, sweep_dir, "epochs=1", "seed=0", "optimizer.lr=0.01,-1", val_size=64), timeout=240
    )

    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text, text
    refused = job_dir(sweep_dir, 1)
    assert "1 job(s) of the sweep" in text and refused.name in text, text
    assert read_metrics(job_dir(sweep_dir, 0))["status"] == "completed"
    assert not (refused / "metrics.json").exists()
    assert "optimizer.lr=-1.0 is not allowed" in (refused / "train.log").read_text()
    report("refused override", ended(job_ids(sweep_dir)))


def test_jobs_outlive_a_killed_sweep_which_resume_completes(slurm_cli: CLI, paced_data: Path, tmp_path: Path) -> None:
    """The sweep submits its jobs two at a time (max_batch_size=2) and is killed while the first
    two train: they still finish; resume=true then runs only the job never submitted."""
    sweep_dir, epochs = tmp_path / "sweep", 1
    args = sweep_args(paced_data, sweep_dir, f"epochs={epochs}", "seed=0,1,2", "hydra.sweeper.max_batch_size=2")
    log = tmp_path / "sweep.log"
    process = slurm_cli.start(*args, log=log)

    def training(job: Path) -> bool:
        try:
            return "Training starts" in (job / "train.log").read_text()
        except FileNotFoundError:
            return False

    def both_training() -> bool:
        return sum(training(job) for job in sweep_dir.glob("[01]_*")) == 2

    wait_for(both_training, process, log, timeout=120)
    process.send_signal(signal.SIGKILL)
    finish(process, log, timeout=30)
    first = job_ids(sweep_dir)
    states = ended(first)
    report("killed sweep", states)
    assert states == {job_id: ["COMPLETED"] for job_id in first} and len(first) == 2
    assert not list(sweep_dir.glob("2_*")), "the third job was never submitted"
    done = {
        path: path.read_bytes()
        for number in (0, 1)
        for path in job_dir(sweep_dir, number).rglob("*")
        # The results: not Hydra's record, the log or the lock file (which names the last holder)
        if path.is_file() and ".hydra" not in path.parts and path.suffix != ".log" and path.name != LOCK_FILE
    }
    assert_every_epoch_once(job_dir(sweep_dir, 0), epochs)
    assert_every_epoch_once(job_dir(sweep_dir, 1), epochs)

    result = slurm_cli.run(*args, "resume=true", timeout=240)

    assert_ok(result)
    report("resumed sweep", ended([job_id for job_id in job_ids(sweep_dir) if job_id not in first]))
    assert {path: path.read_bytes() for path in done} == done, "the finished jobs were left alone"
    for number in (0, 1):
        assert "already completed" in (job_dir(sweep_dir, number) / "train.log").read_text()
    assert_every_epoch_once(job_dir(sweep_dir, 2), epochs)
    assert "Resuming" not in (job_dir(sweep_dir, 2) / "train.log").read_text()
