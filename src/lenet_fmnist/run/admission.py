"""May a run start, or resume, in a directory, and what a resume keeps: the one place that decides.
No torch, no Hydra: what it needs of a checkpoint comes as a loading function.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_fmnist.host.cpu import processor
from lenet_fmnist.run.config_keys import RESULT_NEUTRAL_KEYS, config_changes
from lenet_fmnist.run.endings import Status
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, SWEEP_CONFIG, holds_run
from lenet_fmnist.run.locking import lock
from lenet_fmnist.run.metrics_file import read_metrics

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ResumeFacts:
    """What computed a run so far (`processor`), which a resume compares with its own (`moved`).
    metrics.json records it as `Circumstances` after every saved epoch, and `admit` reads it back
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
class Admission:
    """Where a training run starts, as `admit` decided: from the beginning (`saved` None), or from
    last.pt's state `saved`, with what computed it so far (`facts`); `completed` is the
    metrics.json of a run that already completed (nothing to train)."""

    saved: dict[str, Any] | None = None
    facts: ResumeFacts = ResumeFacts()
    completed: dict[str, Any] | None = None


def admit(
    run_dir: Path,
    config: dict[str, Any],
    device: str,
    *,
    load: Callable[[Path], dict[str, Any]],
    start_if_unsaved: bool = False,
) -> Admission:
    """Whether a training run with the plain `config` (its `resume` key says whether it resumes) may
    start in `run_dir` on `device` (e.g. cpu, cuda:0), or resume there, and from what. Refuses a new
    run where one is, resume=true where nothing was saved, a resume with another configuration
    (RESULT_NEUTRAL_KEYS aside) or on the other kind of device. A run stopped before its first
    epoch was saved (metrics.json but no last.pt) starts again; so does, with `start_if_unsaved`, a
    sweep's job that never started. `load` reads last.pt (training.checkpoint.load)."""
    if not config["resume"]:
        if holds_run(run_dir):
            raise UserError(_already_holds_run(run_dir))
        return Admission()
    if not (run_dir / LAST_CHECKPOINT).exists():
        if start_if_unsaved or (run_dir / METRICS_FILE).exists():
            log.info("%s holds no saved epoch; the run starts from the beginning.", run_dir)
            return Admission()
        raise UserError(_nothing_to_resume(run_dir))
    if not (run_dir / BEST_CHECKPOINT).exists():  # written with every epoch's last.pt, and tested at the end
        raise UserError(
            f"resume=true, but {run_dir / BEST_CHECKPOINT} is missing: the run's best epoch could not be tested. "
            "Restore the file, or train the run afresh in another directory."
        )
    saved = load(run_dir / LAST_CHECKPOINT)
    _check_same_config(saved["config"], config)
    _check_device_kind(saved["rng"]["cuda"] is not None, device, run_dir / LAST_CHECKPOINT)
    metrics = read_metrics(run_dir) or {}
    completed = metrics if metrics.get("status") == Status.completed else None
    if completed is not None:
        log.info("%s is already completed; nothing to resume.", run_dir)
    return Admission(saved, ResumeFacts.recorded_in(metrics), completed)


def _check_same_config(saved: dict[str, Any], config: dict[str, Any]) -> None:
    if changed := config_changes(saved, config, allowed=RESULT_NEUTRAL_KEYS):
        raise UserError(
            f"resume=true, but the configuration differs from the saved run's: {'; '.join(changed)}. "
            "Resume with the same overrides."
        )


def _check_device_kind(saved_on_gpu: bool, device: str, last: Path) -> None:
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
