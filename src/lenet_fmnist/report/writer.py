"""The `report` command: the study's table, effects and figures from the runs under some directories.

`python -m lenet_fmnist report DIR [DIR ...]` writes report.md, report.csv and PNG figures into
the first DIR, prints the tables and what to look at, and writes a search directory's own summary
(search_summary.py). The rest of the package reads and analyses the runs (analysis.py) and puts
them into tables (tables.py) and words (document.py); this module chooses the figures, writes the
files and speaks to the terminal.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lenet_fmnist.report import runs, search_summary, stats
from lenet_fmnist.report.analysis import Report, build
from lenet_fmnist.report.configurations import Configuration
from lenet_fmnist.report.document import markdown
from lenet_fmnist.report.tables import NOT_VALIDATED, configurations_table, csv_text, effects_table
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import SEARCH_FILE
from lenet_fmnist.run.storage import write_text

# ---- figures -------------------------------------------------------------------------------


def _file_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(dict.fromkeys(parts))) + ".png"


def _config_label(config: Configuration, groups: list[str]) -> str:
    parts = [f"{group}={config.labels[group]}" for group in groups]
    if config.labels.get("settings"):
        parts.append(config.labels["settings"])
    return f"{config.experiment}: " + ", ".join(parts)


def _level_figures(report: Report, directory: Path) -> list[tuple[str, str]]:
    """Per compared factor, the validation curves of its levels."""
    from lenet_fmnist.report import figures  # matplotlib: only now that figures are drawn

    drawn = []
    for experiment in report.experiments:
        for comparison in experiment.comparisons:
            # One comparison per experiment (experiment=activation): the experiment names the file.
            alone = len(experiment.comparisons) == 1
            name = _file_name("curves", experiment.name, *([] if alone else [comparison.factor]))
            title = f"{experiment.name}: validation curves by {comparison.factor} (mean ± std over seeds)"
            figures.level_curves(
                directory / name, title, [(level.label, level.completed) for level in comparison.levels]
            )
            drawn.append((title, name))
    return drawn


def _best_worst_figure(report: Report, directory: Path) -> list[tuple[str, str]]:
    """Train vs validation curves of the best and the worst configuration by mean test accuracy:
    the gap between the curves shows over- or under-fitting where it matters most."""
    from lenet_fmnist.report import figures  # matplotlib: only now that figures are drawn

    ranked = [config for config in report.configurations if config.values("test_acc")]
    if not ranked:
        return []
    ranked.sort(key=lambda config: stats.mean(config.values("test_acc")), reverse=True)
    panels = [(ranked[0], "best")] + ([(ranked[-1], "worst")] if len(ranked) > 1 else [])
    titled = [
        (
            f"{rank}: {_config_label(config, report.groups)}, test acc {stats.mean(config.values('test_acc')):.4f}",
            config.completed,
        )
        for config, rank in panels
    ]
    figures.train_vs_val(directory / "best_worst.png", titled)
    return [("Train vs validation: best and worst configuration by mean test accuracy", "best_worst.png")]


def draw_figures(report: Report, directory: Path) -> list[tuple[str, str]]:
    """The report's figures in `directory`: (title, file name)s."""
    return _level_figures(report, directory) + _best_worst_figure(report, directory)


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


def _print_runs_to_look_at(report: Report, markdown_path: Path) -> None:
    """One line per kind of run report.md lists for a closer look, with its count."""
    if unfinished := report.unfinished:
        pruned = sum(run.status == runs.PRUNED for run in unfinished)
        why = f" ({pruned} pruned by a search)" if pruned else ""
        sys.stdout.write(f"{len(unfinished)} run(s) did not complete{why}; see {markdown_path}.\n")
    if warned := len(report.warned):
        sys.stdout.write(f"{warned} run(s) carry warnings (e.g. not learning); see {markdown_path}.\n")
    if without := len(report.not_validated):
        sys.stdout.write(
            f"{without} run(s) had no validation (data.val_size=0): their validation figures read {NOT_VALIDATED}; "
            f"see {markdown_path}.\n"
        )


def main(argv: list[str], config_dir: Path) -> int:
    options = parser().parse_args(argv)
    report = build(options.directories, config_dir)
    markdown_path, csv_path, pngs = write(report)
    sys.stdout.write(configurations_table(report) + "\n\n")
    for experiment in report.experiments:
        if experiment.comparisons:  # the raw intervals with their Holm-adjusted p-values
            sys.stdout.write(f"Effects in {experiment.name}:\n{effects_table(experiment.comparisons)}\n\n")
    _print_runs_to_look_at(report, markdown_path)
    sys.stdout.write(f"Wrote {markdown_path}, {csv_path} and {len(pngs)} figure(s).\n")
    for directory in options.directories:
        if (directory / SEARCH_FILE).is_file():
            sys.stdout.write(f"Wrote {search_summary.write(directory)} and search.csv (a hyperparameter search).\n")
    return 0
