"""Hydra callback that checks the output directory before Hydra creates it or writes into it.

Hydra makes the run directory and writes `.hydra/*.yaml` into it before the task starts, so the
task itself comes too late for these checks: an unwritable directory would end in Hydra's
traceback, and a run directory given again would have its `.hydra/` record overwritten before
the task refuses it. Named in `hydra.callbacks` of conf/train.yaml, eval.yaml, predict.yaml and
export.yaml. The rules are lenet_fmnist.run's; this module only calls them at Hydra's moments.
This module must not import torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lenet_fmnist.run.admission import claim_run, claim_sweep
from lenet_fmnist.run.errors import UserError, paragraph
from lenet_fmnist.run.metrics_file import sweep_failures
from lenet_fmnist.run.paths import user_path

log = logging.getLogger(__name__)


def _refuse(message: str) -> None:
    """Stop before Hydra touches anything: one logged paragraph, exit status 1, no traceback
    (Hydra reports an ordinary exception with a stack trace, but lets SystemExit through)."""
    log.error("%s", paragraph(message))
    raise SystemExit(1)


def _output_dir(config: DictConfig, key: str) -> Path:
    HydraConfig.instance().set_config(config)  # for ${hydra:...} in the directory's name; run_job sets it again
    return user_path(str(OmegaConf.select(config, key)), key)


class OutputDirCheck(Callback):
    """Refuses, before any work: `resume=true` where there is nothing to resume; an output
    directory that cannot be written; one that another process works in (it holds the lock);
    and a new run in a directory that already holds one (never overwritten)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            resumable = "resume" in config  # train's config has the key; eval, predict and export's do not
            claim_run(_output_dir(config, "hydra.run.dir"), bool(config.get("resume", False)), resumable)
        except UserError as error:
            _refuse(str(error))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            claim_sweep(_output_dir(config, "hydra.sweep.dir"), bool(config.get("resume", False)))
        except UserError as error:
            _refuse(str(error))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Exit non-zero when any job of a training sweep did not complete (sweep_failures)."""
        directory = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser()
        failures = sweep_failures(directory, str(OmegaConf.select(config, "hydra.job.name")))
        if failures:
            _refuse(failures)
