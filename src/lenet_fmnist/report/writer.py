"""The `report` command: the study's table, effects and figures from the runs under some directories.

`python -m lenet_fmnist report DIR [DIR ...]` writes report.md, report.csv and PNG figures into
the first DIR and prints the table. Reading runs, the analysis, the statistics and the figures live in
the other modules of the package; this module puts them into words, tables and files.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lenet_fmnist.report import configurations, effects, labels, runs, search_summary, stats
from lenet_fmnist.report.configurations import Configuration
from lenet_fmnist.report.effects import Comparison, ExperimentAnalysis, Level
from lenet_fmnist.report.measures import EFFECT_METRICS, METRICS, VALIDATION_METRICS
from lenet_fmnist.report.runs import COMPLETED, Run
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import SEARCH_FILE
from lenet_fmnist.run.storage import write_text

log = logging.getLogger(__name__)

# Decimals per metric: accuracies and losses to 4 places, times and epochs to 1.
_DECIMALS = {"seconds_per_epoch": 1, "best_epoch": 1, "epochs_to_99": 1}
# What a validation figure reads for runs that had no validation (data.val_size=0).
NOT_VALIDATED = "n/a"


@dataclass
class Report:
    directories: list[Path]
    runs: list[Run]
    groups: list[str]  # config-group columns (activation, pool, ...)
    configurations: list[Configuration]
    experiments: list[ExperimentAnalysis]


def build(directories: list[Path], options: Path) -> Report:
    """The report of the runs under `directories`; `options` is the config directory whose group
    files (options/<group>/<option>.yaml) name what each run chose (labels.label)."""
    found = runs.load_all(directories)
    groups = configurations.group_keys(found)
    configs = configurations.configurations(found)
    labels.label(configs, groups, options)
    names = list(dict.fromkeys(config.experiment for config in configs))
    experiments = [
        effects.adjust_for_multiplicity(
            effects.analyse(name, [config for config in configs if config.experiment == name], groups)
        )
        for name in names
    ]
    return Report(directories, found, groups, configs, experiments)


# ---- formatting ----------------------------------------------------------------------------


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


def _table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def _columns(report: Report) -> list[str]:
    """Label columns: experiment, the groups, and `settings` only when some configuration has any."""
    show_settings = any(config.labels.get("settings") for config in report.configurations)
    return ["experiment", *report.groups, *(["settings"] if show_settings else [])]


def _config_label(config: Configuration, groups: list[str]) -> str:
    parts = [f"{group}={config.labels[group]}" for group in groups]
    if config.labels.get("settings"):
        parts.append(config.labels["settings"])
    return f"{config.experiment}: " + ", ".join(parts)


def configurations_table(report: Report) -> str:
    columns = _columns(report)
    header = [*columns, "n", "runs", *(heading for _, heading in METRICS)]
    rows = []
    for config in report.configurations:
        labels = [config.experiment, *(config.labels.get(column, "") for column in columns[1:])]
        figures = [_figure(config, metric) for metric, _ in METRICS]
        rows.append([*labels, str(len(config.completed)), config.status_text(), *figures])
    return _table(header, rows)


def _effects_table(comparisons: list[Comparison]) -> str:
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
                effect = level.effects.get(metric)
                if metric in VALIDATION_METRICS and not (level.validated and base.validated):
                    row += [_figure(level, metric), *[NOT_VALIDATED if effect else "—"] * 3]
                    continue
                row += [_format(level.values(metric), 4), _format_interval(effect)]
                row += [_format_p(effect.p if effect else math.nan), _format_p(level.holm.get(metric, math.nan), True)]
            rows.append(row)
    return _table(header, rows)


_DESIGN_TEXT = {
    "one factor": "Each level against the base level (the sweep's first): difference of means with a 95% "
    "Welch t interval over seeds.",
    "one factor at a time": "Every configuration differs from the base in one factor. Per factor, each level "
    "against the base: difference of means with a 95% Welch t interval over seeds.",
    "factorial": "Main effects: per factor, each level against the base level, as the mean difference over every "
    "combination of the other factors and seed (paired), with a 95% paired t interval. The mean and n of a "
    "level pool all its configurations.",
}


_MULTIPLICITY_TEXT = (
    "*p*: two-sided p-value of no difference, for that comparison alone. *Holm p*: the same adjusted by Holm's "
    "method over every comparison in this table (per metric), so that the chance of any false effect among them "
    "stays under 5%; * marks an adjusted p below 0.05."
)


def _unfinished(report: Report) -> list[Run]:
    return [run for run in report.runs if run.status != COMPLETED]


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _warned(report: Report) -> list[Run]:
    return [run for run in report.runs if run.warnings]


def _not_validated(report: Report) -> list[Run]:
    return [run for config in report.configurations if not config.validated for run in config.runs]


def _validation_notes(report: Report) -> list[str]:
    """The section on runs without validation (data.val_size=0), when there are any."""
    runs_without = _not_validated(report)
    if not runs_without:
        return []
    parts = ["", "## Runs without validation", ""]
    parts.append(
        f"{len(runs_without)} run(s) trained with data.val_size=0, on all the training images: they had no validation. "
        f"Their validation figures read {NOT_VALIDATED} and are left out of every validation mean and effect; "
        "their best epoch is the last, and their test figures are those of the last epoch's weights."
    )
    parts += ["", *(f"- {_relative(run.path, report.directories[0])}" for run in runs_without)]
    return parts


def _notes(report: Report) -> list[str]:
    """The report's sections on runs to look at: not completed, with warnings, repeated."""
    unfinished = _unfinished(report)
    parts = ["", "## Runs not completed", ""]
    if unfinished:
        parts.append("Counted in the *runs* column above, left out of the means.")
        parts.append("")
        rows = [[_relative(run.path, report.directories[0]), run.status, run.detail] for run in unfinished]
        parts.append(_table(["run", "status", "detail"], rows))
    else:
        parts.append("None: every run completed.")
    parts += _validation_notes(report)
    if warned := _warned(report):
        parts += ["", "## Runs with warnings", "", "Counted in the means above; marked in the *runs* column.", ""]
        rows = [[_relative(run.path, report.directories[0]), " ".join(run.warnings)] for run in warned]
        parts.append(_table(["run", "warnings"], rows))
    duplicates = configurations.duplicates(report.configurations)
    if duplicates:
        parts += ["", "## Repeated runs", "", "Counted as separate runs in the means above:", ""]
        parts += [f"- {note}" for note in duplicates]
    return parts


def markdown(report: Report, figures: list[tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for run in report.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    where = ", ".join(f"`{directory}`" for directory in report.directories)
    parts = [
        "# Report",
        "",
        f"Runs under {where}: {len(report.runs)} runs in {len(report.configurations)} configurations "
        f"({', '.join(f'{count} {status}' for status, count in counts.items())}).",
        "",
        "## Configurations",
        "",
        "One row per configuration (everything but the seed), seeds pooled: mean ± standard deviation over its "
        "completed runs, n of them. Train and val are at the epoch of best validation accuracy, whose weights "
        "are tested (without validation, data.val_size=0, the last epoch; its validation figures read n/a). "
        "*s / epoch*: wall time per epoch (training and validation). *epochs to 99% val*: the first "
        "epoch whose validation accuracy reached 99% of the last epoch's. *runs*: every run found, completed or not.",
        "",
        configurations_table(report),
    ]
    for experiment in report.experiments:
        if not experiment.comparisons and not experiment.note:
            continue
        parts += ["", f"## Experiment `{experiment.name}` ({experiment.design})", ""]
        if experiment.note:
            parts += [f"Not analysed: {experiment.note}"]
            continue
        parts += [_DESIGN_TEXT[experiment.design], _MULTIPLICITY_TEXT, "", _effects_table(experiment.comparisons)]
    parts += _notes(report)
    if figures:
        parts += ["", "## Figures", ""]
        for title, name in figures:
            parts += [f"![{title}]({name})", ""]
    return "\n".join(parts).rstrip() + "\n"


def csv_text(report: Report) -> str:
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


# ---- figures -------------------------------------------------------------------------------


def _file_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(dict.fromkeys(parts))) + ".png"


def draw_figures(report: Report, directory: Path) -> list[tuple[str, str]]:
    """Per compared factor, validation curves of its levels; then train vs validation curves of
    the best and the worst configuration by mean test accuracy. Returns (title, file name)s."""
    from lenet_fmnist.report import figures  # matplotlib: only now that figures are drawn

    drawn = []
    for experiment in report.experiments:
        for comparison in experiment.comparisons:
            # One comparison per experiment (experiment=activation): the experiment names the file.
            parts = (
                ("curves", experiment.name)
                if len(experiment.comparisons) == 1
                else ("curves", experiment.name, comparison.factor)
            )
            name = _file_name(*parts)
            title = f"{experiment.name}: validation curves by {comparison.factor} (mean ± std over seeds)"
            levels = [(level.label, level.completed) for level in comparison.levels]
            figures.level_curves(directory / name, title, levels)
            drawn.append((title, name))
    ranked = [config for config in report.configurations if config.values("test_acc")]
    ranked.sort(key=lambda config: stats.mean(config.values("test_acc")), reverse=True)
    if ranked:
        panels = [(ranked[0], "best")] + ([(ranked[-1], "worst")] if len(ranked) > 1 else [])
        titled = [
            (
                f"{rank}: {_config_label(config, report.groups)}, test acc {stats.mean(config.values('test_acc')):.4f}",
                config.completed,
            )
            for config, rank in panels
        ]
        figures.train_vs_val(directory / "best_worst.png", titled)
        drawn.append(("Train vs validation: best and worst configuration by mean test accuracy", "best_worst.png"))
    return drawn


# ---- command -------------------------------------------------------------------------------


def write(report: Report) -> tuple[Path, Path, list[str]]:
    directory = report.directories[0]
    drawn = draw_figures(report, directory)
    markdown_path, csv_path = directory / "report.md", directory / "report.csv"
    try:
        write_text(markdown_path, markdown(report, drawn))
        write_text(csv_path, csv_text(report))
    except OSError as error:
        raise UserError(f"Cannot write the report into {directory} ({error.strerror or error}).") from None
    return markdown_path, csv_path, [name for _, name in drawn]


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="lenet-fmnist report",
        description="Summarise the training runs under DIRs: per configuration (seeds pooled) mean ± std of "
        "accuracy, loss, speed and convergence; per experiment each level's effect against the base with a 95% "
        "confidence interval; validation curves. Writes report.md, report.csv and PNGs into the first DIR and "
        "prints the table.",
    )
    arguments.add_argument("directories", nargs="+", type=Path, metavar="DIR", help="directories holding runs")
    return arguments


def main(argv: list[str], config_dir: Path) -> int:
    options = parser().parse_args(argv)
    report = build(options.directories, config_dir)
    markdown_path, csv_path, pngs = write(report)
    sys.stdout.write(configurations_table(report) + "\n\n")
    for experiment in report.experiments:
        if experiment.comparisons:  # the raw intervals with their Holm-adjusted p-values
            sys.stdout.write(f"Effects in {experiment.name}:\n{_effects_table(experiment.comparisons)}\n\n")
    unfinished = _unfinished(report)
    if unfinished:
        pruned = sum(run.status == runs.PRUNED for run in unfinished)
        why = f" ({pruned} pruned by a search)" if pruned else ""
        sys.stdout.write(f"{len(unfinished)} run(s) did not complete{why}; see {markdown_path}.\n")
    if warned := len(_warned(report)):
        sys.stdout.write(f"{warned} run(s) carry warnings (e.g. not learning); see {markdown_path}.\n")
    if without := len(_not_validated(report)):
        sys.stdout.write(
            f"{without} run(s) had no validation (data.val_size=0): their validation figures read {NOT_VALIDATED}; "
            f"see {markdown_path}.\n"
        )
    sys.stdout.write(f"Wrote {markdown_path}, {csv_path} and {len(pngs)} figure(s).\n")
    for directory in options.directories:
        if (directory / SEARCH_FILE).is_file():
            sys.stdout.write(f"Wrote {search_summary.write(directory)} and search.csv (a hyperparameter search).\n")
    return 0
