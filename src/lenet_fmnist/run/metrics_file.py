"""metrics.json: its schema, its one writer and its one reader; how a run's ending is recorded in
it, and whether a sweep's jobs all ended as asked. No torch, no Hydra."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from lenet_fmnist.host.cpu import processor
from lenet_fmnist.run.endings import Status
from lenet_fmnist.run.errors import MachineFault, Reported
from lenet_fmnist.run.files import HYDRA_CONFIG, LAST_CHECKPOINT, METRICS_FILE, SEARCH_FILE
from lenet_fmnist.run.storage import StorageError, describe, environment_cause, write_json

log = logging.getLogger(__name__)

# A job of a sweep that ended so did what was asked of it: a pruned trial is the search's decision.
ENDED_AS_ASKED = (Status.completed, Status.pruned)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a training run, as metrics.json's `history` and the checkpoints keep it (as
    `as_json`'s dict: plain values, which a checkpoint read with weights_only=True may hold)."""

    epoch: int
    train_loss: float  # the epoch's running mean, with its augmentation, dropout and smoothing
    train_acc: float
    val_loss: float | None  # None in a run without validation (data.val_size=0): no key in JSON
    val_acc: float | None
    seconds: float  # the epoch's wall time, validation included
    train_seconds: float  # its training part
    train_images: int
    lr: float  # the learning rate at the epoch's end

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.train_seconds

    def as_json(self) -> dict[str, Any]:
        """The record as metrics.json holds it: a run without validation has no val_* keys."""
        values = {**asdict(self), "images_per_second": self.images_per_second}
        return {key: value for key, value in values.items() if value is not None or not key.startswith("val_")}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> EpochRecord:
        """The record `as_json` wrote (a checkpoint's history, read back on resume)."""
        names = {"epoch", "train_loss", "train_acc", "seconds", "train_seconds", "train_images", "lr"}
        return cls(
            **{key: values[key] for key in names}, val_loss=values.get("val_loss"), val_acc=values.get("val_acc")
        )


class Progress(Protocol):
    """What a training run has done so far (training.state.TrainingState)."""

    history: list[EpochRecord]  # one record per epoch
    best_epoch: int  # 0 before the first epoch
    warnings: list[str]
    validated_on: str  # what the run validated on, in words (lenet_fmnist.run.validation.describe)


@dataclass(frozen=True)
class Circumstances:
    """Where and how a run ran: metrics.json's fields beside its figures, in this order. A resume
    reads `cpu`, `cpu_kernels` and `gpu` back by these names (ResumeFacts.recorded_in)."""

    device: str  # e.g. cpu, cuda:0
    threads: int  # how many shards were computed at once: speed only
    threads_reason: str  # why that many (Threads)
    cpu: str  # /proc/cpuinfo's model name (cpu.this_cpu)
    cpu_kernels: str  # torch's CPU kernels (runtime.cpu_kernels), e.g. AVX512
    gpu: dict[str, Any] | None  # a GPU run's GPU: name, capability, cuda, cudnn (runtime.gpu_facts)
    parameters: int  # the model's

    @property
    def processor(self) -> str:
        """What computes the run's numbers, in words (`processor`)."""
        return processor(self.cpu, self.cpu_kernels, self.gpu) or self.cpu


def metrics_json(status: Status, progress: Progress, test: dict[str, float], ran: Circumstances) -> dict[str, Any]:
    """metrics.json: the status, the best-validation epoch's train/val figures (val ones null for a
    run without validation: data.val_size=0), its test figures (`test`, empty until tested), where
    and how the run ran (`ran`), the warnings, what it validated on and the history."""
    history = [record.as_json() for record in progress.history]
    best = next((record for record in history if record["epoch"] == progress.best_epoch), {})
    train_seconds = sum(record["train_seconds"] for record in history)
    images = sum(record["train_images"] for record in history)
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
        "history": history,
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
