"""The figures the report summarises for each run: accuracies, losses, speed and convergence.

`run_metrics` reads them off what a run recorded (metrics.json and its per-epoch history); every
table, effect and figure reads them through `Run.measures`, which computes them once per run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lenet_fmnist.report import stats

if TYPE_CHECKING:
    from lenet_fmnist.report.runs import Run

# Per-run figures the report summarises: (key, heading). Accuracies and losses are metrics.json's
# (train and val at the best-validation epoch, test of that epoch's weights; without validation,
# the last epoch).
METRICS = (
    ("train_acc", "train acc"),
    ("val_acc", "val acc"),
    ("test_acc", "test acc"),
    ("test_loss", "test loss"),
    ("seconds_per_epoch", "s / epoch"),
    ("best_epoch", "best epoch"),
    ("epochs_to_99", "epochs to 99% val"),
)
# The figures whose differences between levels the report tests.
EFFECT_METRICS = (("test_acc", "test acc"), ("val_acc", "val acc"))
# The figures only a run with validation has: n/a for one without (data.val_size=0), never averaged.
VALIDATION_METRICS = frozenset({"val_acc", "epochs_to_99"})


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def epochs_to_fraction(history: list[dict[str, Any]], fraction: float = 0.99) -> float:
    """First epoch whose validation accuracy reaches `fraction` of the last epoch's: how fast a
    run got close to where it ended (NaN without a finite final accuracy)."""
    final = _number(history[-1].get("val_acc")) if history else math.nan
    if not math.isfinite(final):
        return math.nan
    for record in history:
        if _number(record.get("val_acc")) >= fraction * final:
            return float(record.get("epoch", history.index(record) + 1))
    return math.nan


def run_metrics(run: Run) -> dict[str, float]:
    """The METRICS of one run, NaN where it has none."""
    metrics, history = run.metrics, run.history
    seconds = [_number(record.get("seconds")) for record in history]
    per_epoch = stats.mean(seconds) if seconds else math.nan
    return {
        "train_acc": _number(metrics.get("train_acc")),
        "val_acc": _number(metrics.get("val_acc")),
        "test_acc": _number(metrics.get("test_acc")),
        "test_loss": _number(metrics.get("test_loss")),
        "seconds_per_epoch": per_epoch,
        "best_epoch": _number(metrics.get("best_epoch")),
        "epochs_to_99": epochs_to_fraction(history),
    }
