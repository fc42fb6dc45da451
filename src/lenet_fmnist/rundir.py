"""The run directory, owned here: which files make one, whether a run may start or resume in it
and what a resume keeps (its facts), the lock that keeps one process in it, the run's status (an
ending's, endings.ENDINGS), metrics.json (its schema, its one writer and its one reader), whether a
sweep's jobs all ended as asked, and the command that goes on after a stop, for each command.

The Hydra callback, the command line, the trainer, the search and the report call these; none of
them decides these things itself. This module must not import torch (the report, the callback and
`--help` do not wait for it) nor Hydra: what it needs of a checkpoint comes as a loading function.
While a run trains, lenet_fmnist.recorder writes its files by these rules (it imports torch).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from lenet_fmnist.endings import Status, ending_of
from lenet_fmnist.errors import MachineFault, Reported, UserError
from lenet_fmnist.overrides import RESUME, sets_key
from lenet_fmnist.storage import StorageError, describe, environment_cause, write_json
from lenet_fmnist.vocabulary import RESUMABLE_CHANGES, SEARCH_FILE, config_changes

log = logging.getLogger(__name__)


# A job of a sweep that ended so did what was asked of it: a pruned trial is the search's decision.
ENDED_AS_ASKED = (Status.completed, Status.pruned)


def status_after(error: BaseException) -> Status:
    """How a run that raised `error` ended (endings.ENDINGS)."""
    return ending_of(error).status


# ---- the files of a run directory ------------------------------------------------------------

METRICS_FILE = "metrics.json"  # training: written after every epoch and at the end
LAST_CHECKPOINT = "checkpoints/last.pt"  # training: the last completed epoch, what resume reads
BEST_CHECKPOINT = "checkpoints/best.pt"  # training: the best-validation epoch, what is tested
EVAL_FILE = "eval.json"  # evaluation: the result of `eval`
PREDICTIONS_FILE = "predictions.csv"  # prediction: the result of `predict`, written last
PREDICTIONS_FIGURE = "predictions.png"  # prediction: the model's inputs, as `predict` prepared them
SKIPPED_FILE = "skipped.csv"  # prediction: the images that could not be used, and why
ONNX_MODEL, TORCHSCRIPT_MODEL = "model.onnx", "model.pt"  # export: the model, format=onnx or torchscript
SIDECAR_SUFFIX = ".json"  # export: the model's description, beside it (model.onnx.json)
# Any of these makes a directory hold a run's results: a new run is never started over them.
RESULT_FILES = (METRICS_FILE, LAST_CHECKPOINT, EVAL_FILE, PREDICTIONS_FILE, ONNX_MODEL, TORCHSCRIPT_MODEL)
HYDRA_CONFIG = ".hydra/config.yaml"  # what Hydra composed for a job, written before it starts
HYDRA_RUNTIME = ".hydra/hydra.yaml"  # Hydra's own config of a job: its config-group choices, its number
SWEEP_CONFIG = "multirun.yaml"  # what Hydra composed for a sweep: the directory holds one
LOCK_FILE = ".lock"  # held by the process working in the directory (`lock`); says which one


def holds_run(directory: Path) -> bool:
    """Whether `directory` holds a run's results (which nothing may overwrite)."""
    return any((directory / name).exists() for name in RESULT_FILES)


def is_run_directory(directory: Path) -> bool:
    """Whether the report counts `directory` as a run: results, or at least the config of a job
    that Hydra started (a job refused before training still shows in the report, as unfinished)."""
    return (directory / HYDRA_CONFIG).is_file() or (directory / METRICS_FILE).is_file()


# ---- one process per directory ---------------------------------------------------------------
# `flock` on a small file in the directory, so the operating system drops the lock when the process
# ends in any way (a SIGKILL leaves no stale lock; the file stays, saying who held it last). Two
# commands started at the same moment on one directory cannot both get it, which the "already
# holds a run" check alone could not promise.

# Directories this process holds, and the open lock file of each: a process may ask again for a
# directory it already holds (the Hydra callback locks a run's directory, then the run itself).
_held: dict[Path, int] = {}
HOLDER_WAIT = 1.0  # seconds a refused process waits for the holder's name (see _holder)


def lock(directory: Path, key: str = "hydra.run.dir") -> None:
    """Hold `directory` (made if missing) until `unlock` or the end of this process, or raise
    UserError naming the process that holds it. `key` is the setting that chose the directory."""
    where = directory.resolve()
    if where in _held:
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(
            f"{directory} is in use by {holder}: a run, evaluation or sweep is working in it, and one "
            "directory holds one run at a time. Wait for it to end (or stop it; resume=true continues a "
            f"stopped run afterwards), or choose another directory with {key}=DIR."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
    _held[where] = fd


def _holder(fd: int) -> str:
    """Who holds the lock file `fd`, as its holder wrote it. The holder writes just after it takes
    the lock, so a process that lost a race by microseconds may find the file still empty: it
    reads again for up to HOLDER_WAIT seconds before calling the holder "another process"."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > deadline:
            return holder or "another process"
        time.sleep(0.01)


def unlock(directory: Path) -> None:
    """Let go of `directory` (closing the file releases the lock); nothing if not held."""
    fd = _held.pop(directory.resolve(), None)
    if fd is not None:
        os.close(fd)


# ---- may a run start, or resume, here ----------------------------------------------------------


def _already_holds_run(directory: Path, resumable: bool = True) -> str:
    """The refusal of a directory that holds a run; `resumable`: the command has `resume` (train)."""
    if resumable:
        advice = "Pass resume=true to continue it, or choose another directory with hydra.run.dir=DIR."
    else:  # eval, predict and export: nothing to continue
        advice = "Choose another directory with hydra.run.dir=DIR, or leave it out: each run gets a new one."
    return f"{directory} already holds a run; it is left untouched. {advice}"


def _nothing_to_resume(directory: Path) -> str:
    return (
        f"resume=true, but there is nothing to resume: {directory} holds no run (no {METRICS_FILE} "
        f"or {LAST_CHECKPOINT}). Point hydra.run.dir at the directory of the run to continue (for a "
        "sweep: -m hydra.sweep.dir=DIR), or drop resume=true."
    )


def _check_writable(directory: Path, key: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        default = ", or run from a directory where outputs/ can be created" if key.startswith("hydra.") else ""
        raise UserError(
            f"The output directory {directory} cannot be written ({error.strerror or error}). "
            f"Choose a writable directory with {key}=DIR{default}."
        ) from None


def claim_run(directory: Path, resume: bool, resumable: bool = True) -> None:
    """Before Hydra writes into a run's directory: refuse resume=true with nothing to resume, a
    directory that cannot be written or that another process holds, and a new run where one is;
    then hold the directory (`lock`) for this process. `resumable`: the command can resume (train)."""
    if resume and not holds_run(directory):
        raise UserError(_nothing_to_resume(directory))
    _check_writable(directory, "hydra.run.dir")
    lock(directory, "hydra.run.dir")  # before the check below: of two runs started at once, one passes
    if holds_run(directory) and not resume:
        raise UserError(_already_holds_run(directory, resumable))


def claim_output(directory: Path, key: str) -> None:
    """For a directory the user named with `key` for a command's files (export's out=DIR): refuse one
    that cannot be written or that another process holds; then hold it (`lock`) for this process."""
    _check_writable(directory, key)
    lock(directory, key)


def claim_sweep(directory: Path, resume: bool) -> None:
    """`claim_run` for a sweep's directory, held by the process that submits the sweep until it ends."""
    if resume and not (directory / SWEEP_CONFIG).exists():
        raise UserError(
            f"resume=true, but there is nothing to resume: {directory} holds no sweep (no {SWEEP_CONFIG}). "
            "Point hydra.sweep.dir at the sweep to finish, or drop resume=true."
        )
    _check_writable(directory, "hydra.sweep.dir")
    lock(directory, "hydra.sweep.dir")
    if (directory / SWEEP_CONFIG).exists() and not resume:
        raise UserError(
            f"{directory} already holds a sweep; it is left untouched. Pass resume=true to finish it "
            "(completed jobs are skipped, the others resumed), or choose another hydra.sweep.dir=DIR."
        )


def processor(cpu: Any, cpu_kernels: Any, gpu: Any) -> str | None:
    """What computed a run's numbers, in words, from metrics.json's `cpu`, `cpu_kernels` and
    `gpu`: the GPU (its model, compute capability, CUDA and cuDNN) for a run on one, else the CPU
    and torch's kernels for it; None when they were not recorded."""
    if isinstance(gpu, dict):
        return (
            f"{gpu.get('name')} (compute capability {gpu.get('capability')}, CUDA {gpu.get('cuda')}, "
            f"cuDNN {gpu.get('cudnn')})"
        )
    if isinstance(cpu, str) and isinstance(cpu_kernels, str):
        return f"{cpu} with {cpu_kernels} kernels"
    return None


@dataclass(frozen=True)
class ResumeFacts:
    """What computed a run so far (`processor`), which a resume compares with its own (`moved`).
    metrics.json records it as `Circumstances` after every saved epoch, and `accept` reads it back
    from there. None: not recorded (a run killed between writing last.pt and its first metrics.json)."""

    processor: str | None = None

    @classmethod
    def recorded_in(cls, metrics: dict[str, Any]) -> ResumeFacts:
        return cls(processor(metrics.get("cpu"), metrics.get("cpu_kernels"), metrics.get("gpu")))

    def moved(self, now: str, epoch: int) -> str | None:
        """The warning of a run resumed after `epoch` on another processor than it recorded (None:
        the same, or not recorded). Each CPU, kernel set and GPU rounds differently, so its bits
        change; a GPU run compares GPUs only, since the host's CPU computes none of its numbers."""
        if self.processor is None or self.processor == now:
            return None
        return (
            f"Resumed after epoch {epoch} on {now}; it ran on {self.processor} so far. Each processor and "
            f"kernel set rounds differently, so from epoch {epoch + 1} on its bits differ from those of a "
            "run that never stopped (its figures are as valid)."
        )


@dataclass(frozen=True)
class Accepted:
    """What `accept` allowed in a run directory: a new run (`resumes` False), or continuing the
    one whose last.pt is there, with its `facts`; `completed` is the metrics.json of a run that
    already completed (nothing to train once its config is checked)."""

    resumes: bool = False
    facts: ResumeFacts = ResumeFacts()
    completed: dict[str, Any] | None = None


def accept(run_dir: Path, *, resume: bool, start_if_unsaved: bool = False) -> Accepted:
    """Whether a training run may start in `run_dir`, or resume there, and the resume's facts.
    Refuses a new run where one is, and resume=true where nothing was saved. Resuming a run
    stopped before its first epoch was saved (it left metrics.json but no last.pt) starts it again;
    so does resuming, with `start_if_unsaved`, a sweep's job that never started. Torch-free: the
    saved configuration is compared later, once last.pt is read (`start`)."""
    if not resume:
        if holds_run(run_dir):
            raise UserError(_already_holds_run(run_dir))
        return Accepted()
    if not (run_dir / LAST_CHECKPOINT).exists():
        if start_if_unsaved or (run_dir / METRICS_FILE).exists():
            log.info("%s holds no saved epoch; the run starts from the beginning.", run_dir)
            return Accepted()
        raise UserError(_nothing_to_resume(run_dir))
    metrics = read_metrics(run_dir) or {}
    completed = metrics if metrics.get("status") == Status.completed else None
    return Accepted(resumes=True, facts=ResumeFacts.recorded_in(metrics), completed=completed)


@dataclass(frozen=True)
class Start:
    """Where a training run starts: `saved` is last.pt's state when it resumes (None: from the
    beginning); `done` is metrics.json of a run that already completed (nothing to do)."""

    saved: dict[str, Any] | None = None
    done: dict[str, Any] | None = None


def start(
    run_dir: Path,
    accepted: Accepted,
    config: dict[str, Any],
    *,
    load: Callable[[Path], dict],
    with_later_keys: Callable[[dict[str, Any]], dict[str, Any]],
) -> Start:
    """Where the run that `accept` allowed in `run_dir`, with the plain `config`, starts: a resume
    reads last.pt (`load`) and is refused with another configuration (RESUMABLE_CHANGES aside).
    `with_later_keys` (config.with_later_keys) completes a saved config with the keys added since,
    at the defaults it ran with, so a run saved before them resumes."""
    if not accepted.resumes:
        return Start()
    saved = load(run_dir / LAST_CHECKPOINT)
    changed = config_changes(with_later_keys(saved["config"]), config, allowed=RESUMABLE_CHANGES)
    if changed:
        raise UserError(
            f"resume=true, but the configuration differs from the saved run's: {'; '.join(changed)}. Resume with the same overrides."
        )
    if accepted.completed is not None:
        log.info("%s is already completed; nothing to resume.", run_dir)
    return Start(saved, accepted.completed)


def check_device_kind(saved_on_gpu: bool, device: str, last: Path) -> None:
    """A run continues on the kind of device it began on (`device`: this run's, e.g. cpu or cuda:0):
    a CUDA generator's state cannot be restored into a CPU one or the other way round, and the two
    draw different numbers."""
    if saved_on_gpu == device.startswith("cuda"):
        return
    if saved_on_gpu:
        raise UserError(
            f"resume=true, but {last} was saved by a run on a CUDA GPU and this run would continue on "
            f"{device}. A run continues on the kind of device it began on (CPU and CUDA draw different "
            "random numbers): resume it with device=cuda on a machine with a GPU."
        )
    raise UserError(
        f"resume=true, but {last} was saved by a run on the CPU and this run would continue on {device}. "
        "A run continues on the kind of device it began on (CPU and CUDA draw different random numbers): "
        "resume it with device=cpu."
    )


# ---- metrics.json ----------------------------------------------------------------------------


class Progress(Protocol):
    """What a training run has done so far (train.TrainingState)."""

    history: list[dict[str, Any]]  # one record per epoch
    best_epoch: int  # 0 before the first epoch
    warnings: list[str]
    validated_on: str  # what the run validated on, in words (lenet_fmnist.validation.describe)


@dataclass(frozen=True)
class Circumstances:
    """Where and how a run ran: metrics.json's fields beside its figures, in this order. A resume
    reads `cpu`, `cpu_kernels` and `gpu` back by these names (ResumeFacts.recorded_in)."""

    device: str  # e.g. cpu, cuda:0
    threads: int  # how many shards were computed at once: speed only
    threads_reason: str  # why that many (cores.Threads)
    cpu: str  # /proc/cpuinfo's model name (cpu.this_cpu)
    cpu_kernels: str  # torch's CPU kernels (runtime.cpu_kernels), e.g. AVX512
    gpu: dict[str, Any] | None  # a GPU run's GPU: name, capability, cuda, cudnn (runtime.gpu_facts)
    parameters: int  # the model's

    @property
    def processor(self) -> str:
        """What computes the run's numbers, in words (`processor`)."""
        return processor(self.cpu, self.cpu_kernels, self.gpu) or self.cpu


def metrics(status: Status, progress: Progress, test: dict[str, float], ran: Circumstances) -> dict[str, Any]:
    """metrics.json: the status, the best-validation epoch's train/val figures (val ones null for a
    run without validation: data.val_size=0), its test figures (`test`, empty until tested), where
    and how the run ran (`ran`), the warnings, what it validated on and the history."""
    best = next((record for record in progress.history if record["epoch"] == progress.best_epoch), {})
    train_seconds = sum(record["train_seconds"] for record in progress.history)
    images = sum(record["train_images"] for record in progress.history)
    return {
        "status": status,
        "train_acc": best.get("train_acc"),
        "val_acc": best.get("val_acc"),
        "test_acc": test.get("test_acc"),
        "train_loss": best.get("train_loss"),
        "val_loss": best.get("val_loss"),
        "test_loss": test.get("test_loss"),
        "best_epoch": progress.best_epoch or None,
        "epochs_completed": len(progress.history),
        "train_seconds": train_seconds,
        "images_per_second": images / train_seconds if train_seconds else None,
        **asdict(ran),
        "warnings": progress.warnings,
        "validation": progress.validated_on,
        "history": progress.history,
    }


def write_metrics(run_dir: Path, values: dict[str, Any]) -> None:
    """Replace metrics.json atomically (NaN, as a diverged loss gives, is written as NaN)."""
    write_json(run_dir / METRICS_FILE, values)


def load_metrics(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The run's metrics.json and "", or None and why there is none to use (missing, unreadable,
    no JSON object). Python's json reads the NaN of a diverged loss."""
    path = directory / METRICS_FILE
    if not path.is_file():
        return None, f"no {METRICS_FILE} (never started, or stopped before its first epoch ended)"
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable {METRICS_FILE} ({error})"
    if not isinstance(values, dict):
        return None, f"{METRICS_FILE} holds no JSON object"
    return values, ""


def read_metrics(directory: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when there is none to use."""
    return load_metrics(directory)[0]


def status_of(directory: Path) -> str | None:
    """The status metrics.json records, or None without one."""
    return (read_metrics(directory) or {}).get("status")


def finish(run_dir: Path, values: dict[str, Any], close: Callable[[], None], failing: bool = False) -> dict[str, Any]:
    """Write the final metrics.json, then `close` what the run kept open. When the run is failing
    already, an error here (a full disk may refuse even this) is logged, not raised over the one
    that says why."""
    for step in (lambda: write_metrics(run_dir, values), close):
        try:
            step()
        except Exception as error:
            if not failing:
                raise
            log.warning("While stopping: %s", error)
    return values


def machine_fault(error: BaseException, run_dir: Path, load: Callable[[Path], dict]) -> MachineFault | None:
    """For a run the machine stopped (full disk, unwritable directory): the paragraph that says
    what happened and what of the run is kept (`load` reads last.pt). None for any other error."""
    cause = environment_cause(error)
    if cause is None:
        return None
    what = str(error) if isinstance(error, StorageError) else describe(Path(cause.filename or run_dir), cause)
    last = run_dir / LAST_CHECKPOINT
    try:
        kept = f"{last} holds epoch {load(last)['epoch']}, intact"
    except Reported:
        kept = "no epoch was saved yet"
    return MachineFault(
        f"{what} The run stopped with status {Status.failed}; {kept}. Free some space or make {run_dir} "
        "writable again, then resume it."
    )


def sweep_failures(sweep_dir: Path, command: str) -> str | None:
    """Why a training sweep failed: the jobs that did not end as asked (their metrics.json files are
    the one record of how each ended, whichever process ran them; a job refused before training has
    none); None when none did. A search judges its own trials (hydra/sweeper=optuna), and the jobs
    of the other commands write no metrics.json: the command line counts their failures."""
    if command != "train" or (sweep_dir / SEARCH_FILE).exists():
        return None
    jobs = sorted(config.parent.parent for config in sweep_dir.glob(f"*/{HYDRA_CONFIG}"))
    unfinished = [job.name for job in jobs if status_of(job) not in ENDED_AS_ASKED]
    if not unfinished:
        return None
    return f"{len(unfinished)} job(s) of the sweep in {sweep_dir} did not complete: {', '.join(unfinished)}."


# ---- what to do next -------------------------------------------------------------------------

RESUME_WITH = "Resume with: "  # a training run, a sweep or a search continues where it stopped
RUN_AGAIN_WITH = "Run it again with: "  # the other commands start again: they keep nothing half-done
_MULTIRUN_FLAGS = ("-m", "--multirun")


def next_step(command: str, args: Sequence[str], run_dir: Path | None = None, sweep_dir: Path | None = None) -> str:
    """The command line that goes on after `command ARGS` stopped in `run_dir` (a job of the sweep
    or search in `sweep_dir`, if any), ready to paste into a shell.

    A training run resumes in its directory, and a sweep or a search in the sweep's (completed jobs
    are skipped, finished trials kept). eval, predict, export and report write their results only
    at the end and atomically, so the same command again is what goes on; a sweep of them starts in
    a new sweep directory, since these commands have no resume=true."""
    if command == "train":
        where = ["-m", f"hydra.sweep.dir={sweep_dir}"] if sweep_dir else [f"hydra.run.dir={run_dir}"]
        placed = ("resume", "hydra.run.dir", "hydra.sweep.dir")
        kept = [arg for arg in args if arg not in _MULTIRUN_FLAGS and not any(sets_key(arg, k) for k in placed)]
        return RESUME_WITH + shlex.join(["python", "-m", "lenet_fmnist", "train", *where, *kept, RESUME])
    if sweep_dir is not None:
        args = [arg for arg in args if not sets_key(arg, "hydra.sweep.dir")]
    return RUN_AGAIN_WITH + shlex.join(["python", "-m", "lenet_fmnist", command, *args])
