"""The run vocabulary, written once: how a run can end, which files make a directory hold a run,
and which config keys never change a run's results.

Training, the Hydra callback, the launchers and the report all read these facts from here. This
module must not import torch (the report and `--help` do not wait for it) nor Hydra.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    """metrics.json's `status`: where a run stands or how it ended. A StrEnum, so it is written to
    JSON and compared with what JSON gives back as the plain string."""

    running = "running"  # training; also what a killed run's last metrics.json says
    completed = "completed"  # every epoch trained and the best weights tested
    interrupted = "interrupted"  # stopped by a signal after saving; resume=true continues it
    diverged = "diverged"  # the loss became NaN or infinite
    failed = "failed"  # any other error
    pruned = "pruned"  # stopped early by a hyperparameter search's pruner; checkpoints kept, not tested


# ---- the files of a run directory ------------------------------------------------------------

METRICS_FILE = "metrics.json"  # training: written after every epoch and at the end
LAST_CHECKPOINT = "checkpoints/last.pt"  # training: the last completed epoch, what resume reads
BEST_CHECKPOINT = "checkpoints/best.pt"  # training: the best-validation epoch, what is tested
EVAL_FILE = "eval.json"  # evaluation: the result of `eval`
PREDICTIONS_FILE = "predictions.csv"  # prediction: the result of `predict`
# Any of these makes a directory hold a run's results: a new run is never started over them.
RESULT_FILES = (METRICS_FILE, LAST_CHECKPOINT, EVAL_FILE, PREDICTIONS_FILE)
HYDRA_CONFIG = ".hydra/config.yaml"  # what Hydra composed for a job, written before it starts
LOCK_FILE = ".lock"  # held by the process working in the directory (locking.py); says which one
# A sweep directory holding this file holds a hyperparameter search (hydra/sweeper=optuna): where
# its Optuna study is stored; lenet_fmnist.search reads and writes it.
SEARCH_FILE = "search.json"
# The sweeper names each trial's number in `hydra.job.env_set` under this key: part of the job's
# Hydra config (so it reaches the job through every launcher) but not of its own config, so the
# run directory's name and the run's results are those of the same run outside a search.
SEARCH_TRIAL = "LENET_FMNIST_SEARCH_TRIAL"


def holds_run(directory: Path) -> bool:
    """Whether `directory` holds a run's results (which nothing may overwrite)."""
    return any((directory / name).exists() for name in RESULT_FILES)


def read_metrics(directory: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is missing, unreadable or holds no JSON object
    (train.py writes NaN for a diverged loss; Python's json reads it)."""
    try:
        metrics = json.loads((directory / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def is_run_directory(directory: Path) -> bool:
    """Whether the report counts `directory` as a run: results, or at least the config of a job
    that Hydra started (a job refused before training still shows in the report, as unfinished)."""
    return (directory / HYDRA_CONFIG).is_file() or (directory / METRICS_FILE).is_file()


def already_holds_run(directory: Path) -> str:
    """The refusal of a new run in a directory that holds one."""
    return (
        f"{directory} already holds a run; it is left untouched. Pass resume=true to continue "
        "it, or choose another directory with hydra.run.dir=DIR."
    )


def nothing_to_resume(directory: Path) -> str:
    """The refusal of resume=true where no run was saved."""
    return (
        f"resume=true, but there is nothing to resume: {directory} holds no run (no {METRICS_FILE} "
        f"or {LAST_CHECKPOINT}). Point hydra.run.dir at the directory of the run to continue (for a "
        "sweep: -m hydra.sweep.dir=DIR), or drop resume=true."
    )


# ---- config keys that never change results ---------------------------------------------------

# Where and how fast a run goes, never what it computes. Sweep sub-directory names leave them out
# (conf/train.yaml's exclude_keys, checked by a test), so a sweep run again with resume=true finds
# its jobs; the report pools runs that differ only in them.
RESULT_NEUTRAL_KEYS = ("resume", "device", "threads", "eval_batch_size", "data.root")
# A resumed run may change any of them; the device only within its kind (train._check_device_kind:
# CPU and CUDA draw different random numbers), e.g. device=auto to device=cpu on the same CPU.
# A resumed run keeps its thread count unless `threads=` says otherwise (cores.fixed_threads):
# threads split float sums differently, so another count changes the bits from there on.
RESUMABLE_CHANGES = RESULT_NEUTRAL_KEYS


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys ({"data": {"root": x}} -> {"data.root": x})."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def config_changes(saved: dict[str, Any], current: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """The differences between two configs, as `key: old -> new`, leaving out the `allowed` keys."""
    old, new = flatten(saved), flatten(current)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if key not in allowed and old.get(key) != new.get(key)
    ]
