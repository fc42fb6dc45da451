"""Hydra callback that checks the output directory before Hydra creates it or writes into it.

Hydra makes the run directory and writes `.hydra/*.yaml` into it before the task starts, so the
task itself comes too late for these checks: an unwritable directory would end in Hydra's
traceback, and a run directory given again would have its `.hydra/` record overwritten before
the task refuses it. Named in `hydra.callbacks` of conf/train.yaml, eval.yaml, predict.yaml and
export.yaml. This module must not import torch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lenet_fmnist import locking
from lenet_fmnist.errors import UserError
from lenet_fmnist.vocabulary import (
    SEARCH_FILE,
    Status,
    already_holds_run,
    holds_run,
    nothing_to_resume,
    read_metrics,
)

log = logging.getLogger(__name__)


def _refuse(message: str) -> None:
    """Stop before Hydra touches anything: one logged paragraph, exit status 1, no traceback
    (Hydra reports an ordinary exception with a stack trace, but lets SystemExit through)."""
    log.error("%s", message)
    raise SystemExit(1)


def _output_dir(config: DictConfig, key: str) -> Path:
    HydraConfig.instance().set_config(config)  # for ${hydra:...} in the directory's name; run_job sets it again
    return Path(str(OmegaConf.select(config, key))).expanduser()


def _lock(directory: Path, key: str) -> None:
    try:
        locking.lock(directory, key)
    except UserError as error:
        _refuse(str(error))


def _check_writable(directory: Path, key: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        _refuse(
            f"The output directory {directory} cannot be written ({error.strerror or error}). "
            f"Choose a writable directory with {key}=DIR, or run from a directory where outputs/ can be created."
        )


class OutputDirCheck(Callback):
    """Refuses, before any work: `resume=true` where there is nothing to resume; an output
    directory that cannot be written; one that another process works in (it holds the lock,
    locking.py); and a new run in a directory that already holds one (never overwritten)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        directory = _output_dir(config, "hydra.run.dir")
        resume = bool(config.get("resume", False))
        if resume and not holds_run(directory):
            _refuse(nothing_to_resume(directory))
        _check_writable(directory, "hydra.run.dir")
        _lock(directory, "hydra.run.dir")  # before the check below: of two runs started at once, one passes
        if holds_run(directory) and not resume:
            _refuse(already_holds_run(directory))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        directory = _output_dir(config, "hydra.sweep.dir")
        resume = bool(config.get("resume", False))
        if resume and not (directory / "multirun.yaml").exists():
            _refuse(
                f"resume=true, but there is nothing to resume: {directory} holds no sweep (no "
                "multirun.yaml). Point hydra.sweep.dir at the sweep to finish, or drop resume=true."
            )
        _check_writable(directory, "hydra.sweep.dir")
        _lock(directory, "hydra.sweep.dir")  # held by the process that submits the sweep, until it ends
        if (directory / "multirun.yaml").exists() and not resume:
            _refuse(
                f"{directory} already holds a sweep; it is left untouched. Pass resume=true to finish it "
                "(completed jobs are skipped, the others resumed), or choose another hydra.sweep.dir=DIR."
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Exit non-zero when any job of the sweep did not complete. Jobs may have run in other
        processes (joblib, submitit), so their metrics.json files are the one record of how each
        ended; a job refused before training (a bad value) has none."""
        if OmegaConf.select(config, "hydra.job.name") != "train":
            return  # eval, predict, export: their jobs write no metrics.json; the command counts failures
        directory = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser()
        if (directory / SEARCH_FILE).exists():
            return  # a search judges its own trials: the sweeper (lenet_fmnist.search) already did
        # A job a search's pruner stopped ended as asked: never a failure, wherever it is found.
        unfinished = [
            job.parent.name
            for job in sorted(directory.glob("*/.hydra"))
            if _status(job.parent) not in (Status.completed, Status.pruned)
        ]
        if unfinished:
            _refuse(f"{len(unfinished)} job(s) of the sweep in {directory} did not complete: {', '.join(unfinished)}.")


def _status(run_dir: Path) -> str | None:
    return (read_metrics(run_dir) or {}).get("status")
