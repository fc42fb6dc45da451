"""The report's tables: configurations and effects as markdown (report.md and the terminal), and
the configurations as CSV (report.csv), with the numbers formatted alike in each.
"""

from __future__ import annotations

import csv
import io
import math

from lenet_fmnist.report import stats
from lenet_fmnist.report.analysis import Report
from lenet_fmnist.report.configurations import Configuration
from lenet_fmnist.report.effects import Comparison, Level
from lenet_fmnist.report.measures import EFFECT_METRICS, METRICS, VALIDATION_METRICS

# Decimals per metric: accuracies and losses to 4 places, times and epochs to 1.
_DECIMALS = {"seconds_per_epoch": 1, "best_epoch": 1, "epochs_to_99": 1}
# What a validation figure reads for runs that had no validation (data.val_size=0).
NOT_VALIDATED = "n/a"


def _format(values: list[float], decimals: int) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{decimals}f}"
    return f"{stats.mean(values):.{decimals}f} ± {stats.std(values):.{decimals}f}"


def _figure(holder: Configuration | Level, metric: str) -> str:
    """A configuration's or a level's metric as mean ± std; n/a for a validation figure of runs
    without validation."""
    if metric in VALIDATION_METRICS and not holder.validated:
        return NOT_VALIDATED
    return _format(holder.values(metric), _DECIMALS.get(metric, 4))


def _format_interval(interval: stats.Interval | None) -> str:
    if interval is None or math.isnan(interval.estimate):
        return "—"
    if not interval.defined:
        return f"{interval.estimate:+.4f} (no CI: fewer than 2 runs)"
    return f"{interval.estimate:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"


def _format_p(p: float, mark: bool = False) -> str:
    """A p-value to 3 decimals; with `mark`, a star where it is below 0.05."""
    if math.isnan(p):
        return "—"
    return f"{p:.3f}" + (" *" if mark and p < 0.05 else "")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def _columns(report: Report) -> list[str]:
    """Label columns: experiment, the groups, and `settings` only when some configuration has any."""
    show_settings = any(config.labels.get("settings") for config in report.configurations)
    return ["experiment", *report.groups, *(["settings"] if show_settings else [])]


def configurations_table(report: Report) -> str:
    columns = _columns(report)
    header = [*columns, "n", "runs", *(heading for _, heading in METRICS)]
    rows = []
    for config in report.configurations:
        labels = [config.experiment, *(config.labels.get(column, "") for column in columns[1:])]
        figures = [_figure(config, metric) for metric, _ in METRICS]
        rows.append([*labels, str(len(config.completed)), config.status_text(), *figures])
    return markdown_table(header, rows)


def _effect_cells(level: Level, base: Level, metric: str) -> list[str]:
    """A level's figure, effect against the base, p and Holm p for one metric; n/a for a validation
    figure where either side had no validation."""
    effect = level.effects.get(metric)
    if metric in VALIDATION_METRICS and not (level.validated and base.validated):
        return [_figure(level, metric), *[NOT_VALIDATED if effect else "—"] * 3]
    p, holm = effect.p if effect else math.nan, level.holm.get(metric, math.nan)
    return [_format(level.values(metric), 4), _format_interval(effect), _format_p(p), _format_p(holm, True)]


def effects_table(comparisons: list[Comparison]) -> str:
    header = ["factor", "level", "n", "runs"]
    for _, heading in EFFECT_METRICS:
        header += [heading, f"Δ {heading} vs base [95% CI]", "p", "Holm p"]
    rows = []
    for comparison in comparisons:
        base = comparison.levels[0]
        for index, level in enumerate(comparison.levels):
            row = [comparison.factor, level.label + (" (base)" if index == 0 else ""), str(len(level.completed))]
            row.append(", ".join(config.status_text() for config in level.configurations))
            for metric, _ in EFFECT_METRICS:
                row += _effect_cells(level, base, metric)
            rows.append(row)
    return markdown_table(header, rows)


def csv_text(report: Report) -> str:
    """report.csv: one row per configuration, each metric's mean and std as plain numbers."""
    columns = _columns(report)
    header = [*columns, "n", "runs", "statuses"]
    for metric, _ in METRICS:
        header += [f"{metric}_mean", f"{metric}_std"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for config in report.configurations:
        row: list[object] = [config.experiment, *(config.labels.get(column, "") for column in columns[1:])]
        row += [len(config.completed), len(config.runs), config.status_text()]
        for metric, _ in METRICS:
            values = config.values(metric)
            row += [stats.mean(values) if values else "", stats.std(values) if len(values) > 1 else ""]
        writer.writerow(row)
    return buffer.getvalue()
