"""report.md: the tables with the words a reader needs to trust them (what each column means, how
each experiment was compared), then the runs to look at and the figures.
"""

from __future__ import annotations

from pathlib import Path

from lenet_fmnist.report.analysis import Report
from lenet_fmnist.report.configurations import duplicates
from lenet_fmnist.report.effects import ExperimentAnalysis
from lenet_fmnist.report.tables import NOT_VALIDATED, configurations_table, effects_table, markdown_table

_CONFIGURATIONS_TEXT = (
    "One row per configuration (everything but the seed), seeds pooled: mean ± standard deviation over its "
    "completed runs, n of them. Train and val are at the epoch of best validation accuracy, whose weights "
    "are tested (without validation, data.val_size=0, the last epoch; its validation figures read n/a). "
    "*s / epoch*: wall time per epoch (training and validation). *epochs to 99% val*: the first "
    "epoch whose validation accuracy reached 99% of the last epoch's. *runs*: every run found, completed or not."
)

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


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _overview(report: Report) -> list[str]:
    """The title, what was found where, and the configurations table."""
    counts: dict[str, int] = {}
    for run in report.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    where = ", ".join(f"`{directory}`" for directory in report.directories)
    found = ", ".join(f"{count} {status}" for status, count in counts.items())
    return [
        "# Report",
        "",
        f"Runs under {where}: {len(report.runs)} runs in {len(report.configurations)} configurations ({found}).",
        "",
        "## Configurations",
        "",
        _CONFIGURATIONS_TEXT,
        "",
        configurations_table(report),
    ]


def _experiment(experiment: ExperimentAnalysis) -> list[str]:
    """An experiment's section: how it was compared and its effects table, or why it was not."""
    if not experiment.comparisons and not experiment.note:
        return []
    parts = ["", f"## Experiment `{experiment.name}` ({experiment.design})", ""]
    if experiment.note:
        return [*parts, f"Not analysed: {experiment.note}"]
    return [*parts, _DESIGN_TEXT[experiment.design], _MULTIPLICITY_TEXT, "", effects_table(experiment.comparisons)]


def _unfinished_notes(report: Report) -> list[str]:
    parts = ["", "## Runs not completed", ""]
    if not report.unfinished:
        return [*parts, "None: every run completed."]
    rows = [[_relative(run.path, report.directories[0]), run.status, run.detail] for run in report.unfinished]
    return [
        *parts,
        "Counted in the *runs* column above, left out of the means.",
        "",
        markdown_table(["run", "status", "detail"], rows),
    ]


def _validation_notes(report: Report) -> list[str]:
    """The section on runs without validation (data.val_size=0), when there are any."""
    runs_without = report.not_validated
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
    """The report's sections on runs to look at: not completed, without validation, with warnings,
    repeated."""
    parts = [*_unfinished_notes(report), *_validation_notes(report)]
    if warned := report.warned:
        parts += ["", "## Runs with warnings", "", "Counted in the means above; marked in the *runs* column.", ""]
        rows = [[_relative(run.path, report.directories[0]), " ".join(run.warnings)] for run in warned]
        parts.append(markdown_table(["run", "warnings"], rows))
    if repeated := duplicates(report.configurations):
        parts += ["", "## Repeated runs", "", "Counted as separate runs in the means above:", ""]
        parts += [f"- {note}" for note in repeated]
    return parts


def markdown(report: Report, figures: list[tuple[str, str]]) -> str:
    """report.md's text; `figures` are the (title, file name)s drawn beside it."""
    parts = _overview(report)
    for experiment in report.experiments:
        parts += _experiment(experiment)
    parts += _notes(report)
    if figures:
        parts += ["", "## Figures", ""]
        for title, name in figures:
            parts += [f"![{title}]({name})", ""]
    return "\n".join(parts).rstrip() + "\n"
