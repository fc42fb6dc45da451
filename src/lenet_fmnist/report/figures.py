"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

Curves are means over seeds with a band of one standard deviation, epoch by epoch; an epoch
counts the runs that reached it, so an unfinished run shortens nothing but its own curve. Runs
without validation (data.val_size=0) have no validation curve, and their labels say so.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are files, never windows
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from lenet_fmnist.report import stats
from lenet_fmnist.report.runs import Run
from lenet_fmnist.run.storage import write_atomic

DPI = 110  # small files, still sharp in a results page


def _series(runs: list[Run], key: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs, mean and std of history[key] across runs, skipping non-finite values."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for record in run.history:
            value = record.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                by_epoch.setdefault(int(record["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    means = [stats.mean(by_epoch[epoch]) for epoch in epochs]
    spreads = [stats.std(by_epoch[epoch]) if len(by_epoch[epoch]) > 1 else 0.0 for epoch in epochs]
    return epochs, means, spreads


def _plot(axes: Any, runs: list[Run], key: str, label: str, **style: Any) -> None:
    epochs, means, spreads = _series(runs, key)
    if not epochs:
        return
    (line,) = axes.plot(epochs, means, label=label, **style)
    low = [m - s for m, s in zip(means, spreads, strict=True)]
    high = [m + s for m, s in zip(means, spreads, strict=True)]
    axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def _style(axes: Any, ylabel: str) -> None:
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)


def _save(figure: Any, path: Path) -> Path:
    try:
        write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=DPI))
    finally:
        plt.close(figure)
    return path


def _validated(runs: list[Run]) -> bool:
    return bool(_series(runs, "val_acc")[0])


def level_curves(path: Path, title: str, levels: list[tuple[str, list[Run]]]) -> Path:
    """Validation accuracy and loss per epoch, one curve per level (mean over seeds, ± std)."""
    figure, (accuracy, loss) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for label, runs in levels:
        count = len(runs)
        text = f"{label} (n={count})" if count else f"{label} (no completed run)"
        if count and not _validated(runs):
            text = f"{label} (n={count}, no validation: data.val_size=0)"
        _plot(accuracy, runs, "val_acc", text)
        _plot(loss, runs, "val_loss", text)
        if not (count and _validated(runs)):  # keep the level in the legend: never silently absent
            accuracy.plot([], [], label=text)
    _style(accuracy, "validation accuracy")
    _style(loss, "validation loss")
    accuracy.legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def train_vs_val(path: Path, panels: list[tuple[str, list[Run]]]) -> Path:
    """Train and validation accuracy and loss of some configurations (the best and the worst),
    one row each: the gap between the curves shows over- or under-fitting."""
    figure = plt.figure(figsize=(10, 3.8 * len(panels)), layout="constrained")
    rows = figure.subfigures(len(panels), 1, squeeze=False)[:, 0]
    for (title, runs), row in zip(panels, rows, strict=True):
        without = "" if _validated(runs) or not runs else ", no validation: data.val_size=0"
        row.suptitle("\n".join(textwrap.wrap(f"{title} (n={len(runs)}{without})", 110)), fontsize=9)
        accuracy, loss = row.subplots(1, 2)
        for split, style in (("train", "-"), ("val", "--")):
            _plot(accuracy, runs, f"{split}_acc", split, linestyle=style)
            _plot(loss, runs, f"{split}_loss", split, linestyle=style)
        _style(accuracy, "accuracy")
        _style(loss, "loss")
        accuracy.legend(fontsize=8)
    return _save(figure, path)
