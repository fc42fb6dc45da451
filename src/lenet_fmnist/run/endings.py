"""How a run ends, for each family of exceptions that can end it: the one table (ENDINGS).

Each family (lenet_fmnist.run.errors' three, Python's KeyboardInterrupt and SystemExit, and any other
error) says once: the status metrics.json records, the command's exit status, how its message is
logged, whether the command that goes on follows the message, whether the rest of a sweep stops,
what a hyperparameter search makes of the trial, and what the report calls the run. The command
line (cli), the run directory (run.metrics_file), the search's translation for its sweeper and
the report (report.runs) look it up here; none of them decides these things itself.
This module imports neither torch nor Hydra.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from lenet_fmnist.run.errors import Diverged, Interrupted, MachineFault, Pruned, UserError


class Status(StrEnum):
    """metrics.json's `status`: where a run stands or how it ended. A StrEnum, so it is written to
    JSON and compared with what JSON gives back as the plain string."""

    running = "running"  # training; also what a killed run's last metrics.json says
    completed = "completed"  # every epoch trained and the best weights tested
    interrupted = "interrupted"  # stopped by a signal after saving; resume=true continues it
    diverged = "diverged"  # the loss became NaN or infinite
    failed = "failed"  # any other error
    pruned = "pruned"  # stopped early by a hyperparameter search's pruner; checkpoints kept, not tested


class TrialEnd(StrEnum):
    """What a trial's ending tells the search's sweeper (optuna_pruning_sweeper)."""

    pruned = "pruned"  # the trial is pruned (optuna.TrialPruned)
    stop_search = "stop_search"  # the search stops; resume=true asks the trial again (StopSearch)
    failed = "failed"  # the trial failed; the search goes on (any other exception)


UNFINISHED = "unfinished"  # the report's name for a run without a final test that can still go on


@dataclass(frozen=True)
class Ending:
    """How a run, its command, its sweep and its search end when a job raised one family of exceptions."""

    status: Status  # what metrics.json records
    exit_code: int | None  # the command's exit status; None: the exception's own (SystemExit's code)
    level: int  # how the command logs its message
    next_step: bool  # the message ends with the command that goes on (next_step)
    stops_sweep: bool  # the sweep's remaining jobs do not run
    trial: TrialEnd  # what it makes of a search's trial
    report: str  # what the report calls the run
    message: str | None = None  # in place of the exception's own


_OUTSIDE_TRAINING = "Interrupted before training started or after it ended; no training was lost."
_ERROR, _WARNING, _INFO = logging.ERROR, logging.WARNING, logging.INFO
_failed, _pruned, _stop = TrialEnd.failed, TrialEnd.pruned, TrialEnd.stop_search

# The one table of endings: an exception takes the row of the nearest class in its MRO.
# fmt: off
ENDINGS: dict[type[BaseException], Ending] = {
    # family:          Ending(status,             exit, log level, ...)
    # the user's mistake: fix it, then run again
    UserError:         Ending(Status.failed,      1,    _ERROR,   next_step=False, stops_sweep=False, trial=_failed, report=Status.failed),
    # the machine's: go on once it lets the run; a search stops and asks the trial again on resume
    MachineFault:      Ending(Status.failed,      1,    _ERROR,   next_step=True,  stops_sweep=False, trial=_stop,   report=Status.failed),
    # its message says what to change
    Diverged:          Ending(Status.diverged,    1,    _ERROR,   next_step=False, stops_sweep=False, trial=_failed, report=Status.diverged),
    # SIGINT or SIGTERM while training: the last epoch is saved; resume=true continues the run or sweep
    Interrupted:       Ending(Status.interrupted, 130,  _WARNING, next_step=True,  stops_sweep=True,  trial=_stop,   report=UNFINISHED),
    # the search's decision, not a failure
    Pruned:            Ending(Status.pruned,      0,    _INFO,    next_step=False, stops_sweep=False, trial=_pruned, report=Status.pruned),
    # Ctrl-C outside the epoch loop: no training was lost
    KeyboardInterrupt: Ending(Status.interrupted, 130,  _WARNING, next_step=False, stops_sweep=True,  trial=_stop,   report=UNFINISHED, message=_OUTSIDE_TRAINING),
    # how submitit stops a signalled job after it saved and requeued it (resumed later)
    SystemExit:        Ending(Status.interrupted, None, _WARNING, next_step=False, stops_sweep=True,  trial=_stop,   report=UNFINISHED),
    # any other error: Python's traceback and exit status 1
    BaseException:     Ending(Status.failed,      1,    _ERROR,   next_step=False, stops_sweep=False, trial=_failed, report=Status.failed),
}
# fmt: on

# The report's name for each status: the endings', and for the two statuses no exception gives, a
# completed run's own and UNFINISHED for one still running (or killed while it was).
REPORT_NAMES: dict[str, str] = {
    Status.completed: Status.completed,
    Status.running: UNFINISHED,
    **{ending.status: ending.report for ending in ENDINGS.values()},
}


def ending_of(error: BaseException) -> Ending:
    """The row of `error`'s family."""
    return next(ENDINGS[kind] for kind in type(error).__mro__ if kind in ENDINGS)
