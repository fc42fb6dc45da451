"""The files of a run directory: their names, and which of them make a directory hold a run.
Every other part reads the names from here. No torch, no Hydra."""

from __future__ import annotations

from pathlib import Path

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
# A sweep directory holding this file holds a hyperparameter search (hydra/sweeper=optuna): the
# sweeper (optuna_pruning_sweeper.names.SEARCH_FILE, an optional package; a test ties the two) writes it.
SEARCH_FILE = "search.json"
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
