"""search.md, search.csv, optimization_results.yaml and figures for a search's sweep directory.

Written by the sweeper when a search ends, and by `python -m optuna_pruning_sweeper.summary DIR`
(an app's own command may call `write(DIR)` too). Trials are sorted by objective; the best trial's overrides
make a ready command (or, with several objectives, the Pareto set is listed); failed trials are
listed with their task's message. optimization_results.yaml is what upstream's Optuna sweeper
writes. The figures are Optuna's own (its matplotlib back end, no plotly), drawn when matplotlib
is installed (the `figures` extra).
"""

from __future__ import annotations

import csv
import io
import shlex
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.files import write_atomic, write_text
from optuna_pruning_sweeper.names import (
    COMMAND_ATTR,
    ERROR_ATTR,
    HYDRA_CONFIG,
    OVERRIDES_ATTR,
    RESULTS_FILE,
    RETRY_OF_ATTR,
    RUN_DIR_ATTR,
    SEARCH_FILE,
    SPACE_ATTR,
    SPACE_STRUCTURED,
    SUMMARY_FILE,
    TABLE_FILE,
    key_of,
)
from optuna_pruning_sweeper.space import decoded
from optuna_pruning_sweeper.storage import read_location

HISTORY_PNG, IMPORTANCE_PNG, PARETO_PNG = "search_history.png", "search_importance.png", "search_pareto.png"
_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    values: list[float] | None  # the objectives; a pruned trial's last reported value
    steps: int | None  # the last step the trial reported (e.g. the epoch a training task reached)
    seconds: float | None  # the job's wall time: Hydra wrote its config, then its last file
    run_dir: str
    overrides: list[str]
    sampled: list[str]  # the overrides of its sampled values
    error: str  # why it failed


def _wall_seconds(run_dir: Path) -> float | None:
    """From the job's start to its last write, read off its files: Optuna's own stamps would count
    the wait of a trial pruned early for the rest of its batch."""
    try:
        started = (run_dir / HYDRA_CONFIG).stat().st_mtime
        return max(path.stat().st_mtime for path in run_dir.rglob("*") if path.is_file()) - started
    except (OSError, ValueError):
        return None


def _error(trial: FrozenTrial, retried_as: dict[int, int]) -> str:
    """Why the trial failed: its task's message, or, for a trial a dead search left running (it
    has none), which trial asked its values again."""
    error = str(trial.user_attrs.get(ERROR_ATTR, ""))
    if not error and trial.number in retried_as:
        error = (
            f"left running by a search that stopped before it ended; asked again as trial {retried_as[trial.number]}"
        )
    return error


def _numbered_dir(trial: FrozenTrial, sweep_dir: Path) -> str:
    """The run directory of a trial the sweeper kept none for: Hydra's default, its number (the
    sweeper launches each trial as the job of that number), where that directory exists."""
    return str(trial.number) if (sweep_dir / str(trial.number)).is_dir() else ""


def _row(trial: FrozenTrial, sweep_dir: Path, retried_as: dict[int, int]) -> TrialRow:
    values = trial.values
    if trial.state is TrialState.PRUNED and trial.intermediate_values:
        values = [trial.intermediate_values[max(trial.intermediate_values)]]
    run_dir = str(trial.user_attrs.get(RUN_DIR_ATTR, _numbered_dir(trial, sweep_dir)))
    overrides = [str(o) for o in trial.user_attrs.get(OVERRIDES_ATTR, [])]
    sampled = {key_of(key) for key in trial.params}
    return TrialRow(
        number=trial.number,
        state=_STATE.get(trial.state, trial.state.name.lower()),
        values=list(values) if values else None,
        steps=max(trial.intermediate_values) if trial.intermediate_values else None,
        seconds=_wall_seconds(sweep_dir / run_dir) if run_dir else None,
        run_dir=run_dir,
        overrides=overrides,
        sampled=[o for o in overrides if key_of(o) in sampled],
        error=_error(trial, retried_as),
    )


def rows(study: optuna.Study, sweep_dir: Path) -> list[TrialRow]:
    """Complete trials first, best first (single objective), then pruned, then the others."""
    sign = -1.0 if study.directions[0] is StudyDirection.MAXIMIZE else 1.0
    single = len(study.directions) == 1

    def key(row: TrialRow) -> tuple[int, float, int]:
        rank = {"complete": 0, "pruned": 1}.get(row.state, 2)
        value = sign * row.values[0] if single and row.values else float("inf")
        return rank, value, row.number

    trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs[RETRY_OF_ATTR]: t.number for t in trials if RETRY_OF_ATTR in t.user_attrs}
    return sorted((_row(trial, sweep_dir, retried_as) for trial in trials), key=key)


def labels(study: optuna.Study) -> list[str]:
    names = study.metric_names
    return (
        list(names)
        if names
        else ["value"]
        if len(study.directions) == 1
        else [f"value {i}" for i in range(len(study.directions))]
    )


def ready_command(study: optuna.Study, row: TrialRow) -> str:
    """The trial as one run (Hydra's own keys and resume left out)."""
    command = str(study.user_attrs.get(COMMAND_ATTR, "python my_app.py"))
    kept = [o for o in row.overrides if not o.startswith("hydra.") and key_of(o) != "resume"]
    return " ".join([command, *map(shlex.quote, kept)])


# ---- figures ---------------------------------------------------------------------------------


def _plots(study: optuna.Study) -> list[tuple[str, str, Callable[[optuna.Study], Any]]]:
    vis = optuna.visualization.matplotlib
    if len(study.directions) == 1:
        return [
            (HISTORY_PNG, "optimisation history", vis.plot_optimization_history),
            (IMPORTANCE_PNG, "parameter importance", vis.plot_param_importances),
        ]
    return [(PARETO_PNG, "Pareto front", vis.plot_pareto_front)] if len(study.directions) <= 3 else []


def _figures(study: optuna.Study, directory: Path) -> tuple[list[str], list[str]]:
    """Draw the figures; return the files drawn and, for those that could not be, why."""
    drawn: list[str] = []
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return drawn, ["No figures: they need two complete trials."]
    try:
        import matplotlib

        matplotlib.use("Agg")  # figures are files, never windows
        import matplotlib.pyplot as plt
    except ImportError:
        return drawn, ["No figures: matplotlib is not installed (pip install 'hydra-optuna-pruning-sweeper[figures]')."]
    notes = []
    for name, what, plot in _plots(study):
        try:
            # Optuna calls its matplotlib plots experimental, and warns when few trials make equal
            # importances: neither is news to the reader of the figure.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                axes = plot(study)
        except (ValueError, RuntimeError) as error:  # e.g. fewer than two complete trials
            notes.append(f"No {what} figure: {error}")
            continue
        figure = axes.figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        try:
            write_atomic(directory / name, lambda handle, fig=figure: fig.savefig(handle, format="png", dpi=110))
        finally:
            plt.close(figure)
        drawn.append(name)
    return drawn, notes


# ---- the texts -------------------------------------------------------------------------------


def _format(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _headline(study: optuna.Study, table: list[TrialRow]) -> list[str]:
    counts = {state: sum(row.state == state for row in table) for state in ("complete", "pruned", "failed")}
    finished = counts["complete"] + counts["pruned"]
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else 0.0
    goals = [f"{label} ({d.name.lower()}d)" for label, d in zip(labels(study), study.directions, strict=True)]
    return [
        f"# Search {study.study_name}",
        "",
        f"{len(table)} trials: {counts['complete']} complete, {counts['pruned']} pruned"
        f" ({counts['pruned'] / max(1, finished):.0%} of those finished), {counts['failed']} failed;"
        f" {wall:.1f} minutes from the first trial's start to the last one's end.",
        f"The objective: what each trial's task returned, {', '.join(goals)}.",
        "",
    ]


def _best(study: optuna.Study, table: list[TrialRow]) -> list[str]:
    if len(study.directions) > 1:
        pareto = {trial.number for trial in study.best_trials}
        return [f"Pareto set ({len(pareto)} trials, none better in every objective): trials "
                f"{', '.join(str(n) for n in sorted(pareto))}.", ""] if pareto else []  # fmt: skip
    best = next((row for row in table if row.state == "complete"), None)
    if best is None or best.values is None:
        return []
    return [
        f"Best: trial {best.number}, {labels(study)[0]} {best.values[0]:.6g}, in `{best.run_dir}`. As one run:",
        "",
        "```bash",
        ready_command(study, best),
        "```",
        "",
    ]


def markdown(study: optuna.Study, table: list[TrialRow], figures: list[str], notes: list[str]) -> str:
    names = labels(study)
    lines = _headline(study, table) + _best(study, table)
    lines += [
        f"| trial | state | {' | '.join(names)} | steps | wall s | parameters |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for row in table:
        values = row.values or [None] * len(names)
        shown = " | ".join(_format(value, ".6g") for value in values)
        sampled = ", ".join(row.sampled).replace("|", "/")
        lines.append(
            f"| {row.number} | {row.state} | {shown} | {_format(row.steps, 'd')} | {_format(row.seconds, '.0f')} | {sampled} |"
        )
    failed = [row for row in table if row.state == "failed"]
    if failed:
        lines += ["", "Failed trials:", ""] + [f"- trial {row.number}: {row.error or 'no message'}" for row in failed]
    lines.append("")
    lines += [f"![{name}]({name})" for name in figures] + notes
    return "\n".join(lines) + "\n"


def csv_text(study: optuna.Study, table: list[TrialRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state", *labels(study), "steps", "wall_seconds", "run_dir", "overrides", "error"])
    for row in table:
        values = row.values or [None] * len(study.directions)
        writer.writerow(
            [row.number, row.state, *values, row.steps, row.seconds, row.run_dir, " ".join(row.overrides), row.error]
        )
    return buffer.getvalue()


def results(study: optuna.Study) -> dict[str, Any] | None:
    """What optimization_results.yaml holds, as upstream's sweeper writes it: the best trial's
    params and value, or the Pareto set; None before any trial completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    structured = study.user_attrs.get(SPACE_ATTR, {}).get(SPACE_STRUCTURED, [])
    if len(study.directions) == 1:
        best = study.best_trial
        return {"name": "optuna", "best_params": decoded(best.params, structured), "best_value": best.value}
    solutions = [{"params": decoded(t.params, structured), "values": t.values} for t in study.best_trials]
    return {"name": "optuna", "solutions": solutions}


def results_yaml(study: optuna.Study) -> str | None:
    """optimization_results.yaml's text; None before any trial completed."""
    found = results(study)
    return None if found is None else OmegaConf.to_yaml(OmegaConf.create(found))


def result_lines(found: dict[str, Any]) -> list[str]:
    """The lines upstream's sweeper logs when a search ends, in its words, which people and scripts
    read: the best parameters and value, or the Pareto set's size and each solution."""
    if "best_params" in found:
        return [f"Best parameters: {found['best_params']}", f"Best value: {found['best_value']}"]
    solutions = found["solutions"]
    return [f"Number of Pareto solutions: {len(solutions)}"] + [
        f"    Values: {solution['values']}, Params: {solution['params']}" for solution in solutions
    ]


def write_results(sweep_dir: Path, study: optuna.Study) -> None:
    """optimization_results.yaml alone (hydra.sweeper.summary=false), once a trial completed."""
    if (results := results_yaml(study)) is not None:
        write_text(sweep_dir / RESULTS_FILE, results)


def write(sweep_dir: Path, study: optuna.Study | None = None) -> Path:
    """search.md, search.csv, optimization_results.yaml and the figures in `sweep_dir`, of `study`
    or else of the one its search.json names; returns search.md's path."""
    if study is None:
        location = read_location(sweep_dir)
        if location is None:
            raise SweeperError(f"{sweep_dir} holds no {SEARCH_FILE}: it is not a search directory.")
        study = location.load(sweep_dir)
    table = rows(study, sweep_dir)
    figures, notes = _figures(study, sweep_dir)
    path = sweep_dir / SUMMARY_FILE
    write_text(path, markdown(study, table, figures, notes))
    write_text(sweep_dir / TABLE_FILE, csv_text(study, table))
    write_results(sweep_dir, study)
    return path


def main(argv: list[str]) -> int:
    """`python -m optuna_pruning_sweeper.summary DIR [DIR ...]`: write the summary of each search."""
    if not argv:
        sys.stderr.write("usage: python -m optuna_pruning_sweeper.summary SWEEP_DIR [SWEEP_DIR ...]\n")
        return 2
    for directory in argv:
        try:
            sys.stdout.write(f"Wrote {write(Path(directory))}\n")
        except SweeperError as error:
            sys.stderr.write(f"{error}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
