"""search.md, search.csv and two figures for a hyperparameter search's sweep directory.

Written by the sweeper when a search ends and by `python -m lenet_fmnist report DIR` on a search
directory. Trials are sorted by objective (best-epoch validation accuracy); the best trial's
overrides make a ready command; the optimisation history and the parameter importances are
Optuna's own (its matplotlib back end, no plotly). Imports optuna (the `search` extra); no torch.
"""

from __future__ import annotations

import csv
import io
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lenet_fmnist.errors import UserError
from lenet_fmnist.report.figures import plt  # matplotlib with the Agg backend
from lenet_fmnist.rundir import HYDRA_CONFIG, METRICS_FILE, read_metrics
from lenet_fmnist.search import read_location
from lenet_fmnist.storage import write_atomic, write_text
from lenet_fmnist.vocabulary import SEARCH_FILE

HISTORY_PNG, IMPORTANCE_PNG = "search_history.png", "search_importance.png"
_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    value: float | None  # the objective; a pruned trial's last reported validation accuracy
    epochs: int | None  # epochs its run trained
    seconds: float | None  # the run's wall time: Hydra wrote its config, then its last metrics.json
    run_dir: str
    overrides: list[str]

    @property
    def sort_key(self) -> tuple[int, float]:
        rank = {"complete": 0, "pruned": 1}.get(self.state, 2)
        return rank, -(self.value if self.value is not None else -1.0)


def _epochs(run_dir: Path) -> int | None:
    epochs = (read_metrics(run_dir) or {}).get("epochs_completed")
    return epochs if isinstance(epochs, int) else None


def _wall_seconds(run_dir: Path) -> float | None:
    """From the job's start to its end, read off its files: Optuna's own stamps would count the
    wait of a trial pruned early for the rest of its batch."""
    try:
        return (run_dir / METRICS_FILE).stat().st_mtime - (run_dir / HYDRA_CONFIG).stat().st_mtime
    except OSError:
        return None


def _row(trial: FrozenTrial, sweep_dir: Path) -> TrialRow:
    value = trial.value
    if trial.state is TrialState.PRUNED and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    run_dir = str(trial.user_attrs.get("run_dir", ""))
    return TrialRow(
        number=trial.number,
        state=_STATE.get(trial.state, trial.state.name.lower()),
        value=value,
        epochs=_epochs(sweep_dir / run_dir) if run_dir else None,
        seconds=_wall_seconds(sweep_dir / run_dir) if run_dir else None,
        run_dir=run_dir,
        overrides=list(trial.user_attrs.get("overrides", [])),
    )


def rows(study: optuna.Study, sweep_dir: Path) -> list[TrialRow]:
    return sorted((_row(trial, sweep_dir) for trial in study.get_trials(deepcopy=False)), key=lambda r: r.sort_key)


def ready_command(row: TrialRow) -> str:
    """The best trial as one training run (Hydra's own keys and resume left out)."""
    kept = [o for o in row.overrides if not o.startswith("hydra.") and o.split("=", 1)[0] != "resume"]
    return " ".join(["python -m lenet_fmnist train", *map(shlex.quote, kept)])


def _figures(study: optuna.Study, directory: Path) -> tuple[list[str], list[str]]:
    """Draw both figures; return the files drawn and, for those that could not be, why."""
    drawn, notes = [], []
    plots = (
        (HISTORY_PNG, "optimisation history", optuna.visualization.matplotlib.plot_optimization_history),
        (IMPORTANCE_PNG, "parameter importance", optuna.visualization.matplotlib.plot_param_importances),
    )
    for name, what, plot in plots:
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


def _format(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(study: optuna.Study, table: list[TrialRow], figures: list[str], notes: list[str]) -> str:
    counts = {state: sum(row.state == state for row in table) for state in ("complete", "pruned", "failed")}
    finished = counts["complete"] + counts["pruned"]
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else 0.0
    lines = [
        f"# Search {study.study_name}",
        "",
        f"{len(table)} trials: {counts['complete']} complete, {counts['pruned']} pruned"
        f" ({counts['pruned'] / max(1, finished):.0%} of those finished), {counts['failed']} failed;"
        f" {wall:.1f} minutes from the first trial's start to the last one's end.",
        "The objective is each trial's best-epoch **validation** accuracy (maximised); test accuracy never fed it.",
        "",
    ]
    best = next((row for row in table if row.state == "complete"), None)
    if best is not None:
        lines += [
            f"Best: trial {best.number}, validation accuracy {best.value:.4f}, in `{best.run_dir}`. As one run:",
            "",
            "```bash",
            ready_command(best),
            "```",
            "",
        ]
    lines += [
        "| trial | state | val acc | epochs | wall s | parameters |",
        "|---|---|---|---|---|---|",
    ]
    params = set(study.user_attrs.get("space", {}).get("params", {}))
    for row in table:
        sampled = ", ".join(o for o in row.overrides if o.split("=", 1)[0] in params)
        lines.append(
            f"| {row.number} | {row.state} | {_format(row.value, '.4f')} | {_format(row.epochs, 'd')}"
            f" | {_format(row.seconds, '.0f')} | {sampled.replace('|', '/')} |"
        )
    lines.append("")
    lines += [f"![{name}]({name})" for name in figures] + notes
    return "\n".join(lines) + "\n"


def csv_text(table: list[TrialRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state", "val_acc", "epochs", "wall_seconds", "run_dir", "overrides"])
    for row in table:
        writer.writerow(
            [row.number, row.state, row.value, row.epochs, row.seconds, row.run_dir, " ".join(row.overrides)]
        )
    return buffer.getvalue()


def write(sweep_dir: Path) -> Path:
    """search.md, search.csv and the figures in `sweep_dir`; returns search.md's path."""
    location = read_location(sweep_dir)
    if location is None:
        raise UserError(f"{sweep_dir} holds no {SEARCH_FILE}: it is not a search directory.")
    study = location.load(sweep_dir)
    table = rows(study, sweep_dir)
    figures, notes = _figures(study, sweep_dir)
    path = sweep_dir / "search.md"
    try:
        write_text(path, markdown(study, table, figures, notes))
        write_text(sweep_dir / "search.csv", csv_text(table))
    except OSError as error:
        raise UserError(f"Cannot write the search's summary into {sweep_dir} ({error.strerror or error}).") from None
    return path
