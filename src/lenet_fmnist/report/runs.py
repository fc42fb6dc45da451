"""Find the training runs under some directories and read what each one recorded.

A run is a directory holding `.hydra/config.yaml` (what was asked for) and/or `metrics.json`
(what happened, written after every epoch and at the end): is_run_directory, and
load_metrics reads it. Every run found comes back, whatever its state, so the report can
show failures instead of silently leaving them out.
This module must not import torch: reading a report should not wait for it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lenet_fmnist.report import measures
from lenet_fmnist.run.endings import REPORT_NAMES, UNFINISHED, Status
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import HYDRA_CONFIG, HYDRA_RUNTIME, METRICS_FILE, SWEEP_CONFIG, is_run_directory
from lenet_fmnist.run.metrics_file import load_metrics
from lenet_fmnist.run.paths import exists, is_dir

log = logging.getLogger(__name__)

# The report's names of a run's state that it tells apart (all of them: endings.REPORT_NAMES).
COMPLETED, FAILED, PRUNED = Status.completed, Status.failed, Status.pruned


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict[str, Any] | None  # .hydra/config.yaml as plain data; None when absent or unreadable
    choices: dict[str, str]  # Hydra's config-group choices (activation: relu, experiment: study, ...)
    job_num: int | None  # position in its sweep; the sweep's first job holds the base levels
    experiment: str  # the experiment (or sweep, or "single runs") the run belongs to
    status: str  # its name in endings.REPORT_NAMES: COMPLETED, FAILED, PRUNED, UNFINISHED or "diverged"
    detail: str  # why it is not completed, for the report ("" when completed)
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json ({} when absent)

    @property
    def seed(self) -> Any:
        return (self.config or {}).get("seed")

    @property
    def history(self) -> list[dict[str, Any]]:
        """metrics.json's per-epoch records (a record that is no JSON object, as a hand edit may leave, is not one)."""
        history = self.metrics.get("history")
        return [record for record in history if isinstance(record, dict)] if isinstance(history, list) else []

    @property
    def warnings(self) -> list[str]:
        """What the run warned about (e.g. that it was not learning); metrics.json's `warnings`."""
        warnings = self.metrics.get("warnings")
        return [str(warning) for warning in warnings] if isinstance(warnings, list) else []

    @cached_property
    def measures(self) -> dict[str, float]:
        """Its figures for the report (measures.METRICS), computed once: every configuration, level,
        pairing and table that holds the run reads them from here."""
        return measures.run_metrics(self)


def find(directories: list[Path]) -> list[Path]:
    """Every run directory under `directories`, in a stable order. Raises UserError for a
    directory that does not exist and when there is no run at all."""
    for directory in directories:
        if not is_dir(directory):
            what = "is not a directory" if exists(directory) else "does not exist"
            raise UserError(
                f"{directory} {what}. Give the report one or more directories that hold training runs, "
                "such as a sweep directory (outputs/sweeps/...) or outputs/ itself."
            )
    found: list[Path] = []
    for directory in directories:
        for root, subdirs, _ in os.walk(directory):
            here = Path(root)
            if is_run_directory(here):
                found.append(here)
                subdirs.clear()  # a run's own subdirectories (checkpoints/) hold no runs
            else:
                subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
    unique = sorted(set(found), key=lambda path: (str(path.parent), _job_order(path), path.name))
    if not unique:
        raise UserError(
            f"No training runs found under {', '.join(map(str, directories))}: no directory there holds "
            f"{HYDRA_CONFIG} or {METRICS_FILE}. Point the report at the directory given to (or printed by) "
            "`python -m lenet_fmnist train`, e.g. outputs/sweeps/study/<date>."
        )
    return unique


def _job_order(path: Path) -> tuple[float, str]:
    """Sweep jobs are named `<num>_<overrides>`: sort 2 before 10."""
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (math.inf, path.name)


def _read_yaml(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path))  # interpolations are kept as text
    except Exception as error:  # unreadable, or not YAML: OSError or any of the parser's errors
        log.warning("Cannot read %s (%s); the run is reported without it.", path, error)
        return None


def _experiment(path: Path, choices: dict[str, str]) -> str:
    """The experiment's name; else the sweep directory's (a sweep without one); else "single runs"."""
    if choices.get("experiment"):
        return str(choices["experiment"])
    if (path.parent / SWEEP_CONFIG).is_file():
        return path.parent.name
    return "single runs"


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty one: a file edited by hand may hold anything."""
    return value if isinstance(value, dict) else {}


def load(path: Path) -> Run:
    config = _read_yaml(path / HYDRA_CONFIG) if (path / HYDRA_CONFIG).exists() else None
    hydra_file = path / HYDRA_RUNTIME
    hydra = _mapping(_mapping(_read_yaml(hydra_file)).get("hydra")) if hydra_file.exists() else {}
    choices = {str(key): str(value) for key, value in _mapping(_mapping(hydra.get("runtime")).get("choices")).items()}
    job_num = _mapping(hydra.get("job")).get("num")
    metrics, problem = load_metrics(path)
    if metrics is None:
        status, detail = UNFINISHED, problem
    else:
        raw = str(metrics.get("status", "unknown"))
        status = REPORT_NAMES.get(raw, FAILED)
        history = metrics.get("history")
        epochs = metrics.get("epochs_completed", len(history) if isinstance(history, list) else 0)
        detail = "" if status == COMPLETED else f"status {raw!r} after {epochs} epoch(s)"
    return Run(
        path=path,
        config=config if isinstance(config, dict) else None,
        choices=choices,
        job_num=job_num if isinstance(job_num, int) else None,
        experiment=_experiment(path, choices),
        status=status,
        detail=detail,
        metrics=metrics or {},
    )


def is_training_run(run: Run) -> bool:
    """Evaluation runs (`python -m lenet_fmnist eval`) also have a .hydra/config.yaml; skip them."""
    return run.config is None or "optimizer" in run.config


def load_all(directories: list[Path]) -> list[Run]:
    runs = [run for run in map(load, find(directories)) if is_training_run(run)]
    if not runs:
        raise UserError(
            f"No training runs found under {', '.join(map(str, directories))} (only evaluation runs). "
            "Point the report at a directory written by `python -m lenet_fmnist train`."
        )
    return runs
