"""The one table of endings (lenet_fmnist.run.endings): every family of exceptions has its row, the rows
agree with each other where they must, and the run directory and the report read them (the exit
statuses through the real command line: test_cli.py's test_each_family_of_exceptions...)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from lenet_fmnist.report import runs
from lenet_fmnist.run import errors
from lenet_fmnist.run.endings import ENDINGS, REPORT_NAMES, UNFINISHED, Status, TrialEnd, ending_of
from lenet_fmnist.run.errors import Diverged, Interrupted, MachineFault, Pruned, UserError
from lenet_fmnist.run.files import METRICS_FILE
from lenet_fmnist.run.metrics_file import ENDED_AS_ASKED


def test_every_family_of_errors_has_a_row_of_its_own() -> None:
    """A new exception in errors.py must say how it ends; else it would end as any other error."""
    defined = {kind for kind in vars(errors).values() if isinstance(kind, type) and kind.__module__ == errors.__name__}
    families = defined - {errors.Reported, errors.RunOutcome}  # the groups, which nothing raises as such
    assert {UserError, Diverged} <= families <= ENDINGS.keys()


def test_an_exception_takes_the_row_of_its_nearest_family() -> None:
    class QuotaExceeded(MachineFault):
        pass

    assert ending_of(QuotaExceeded("over")) is ENDINGS[MachineFault]
    assert ending_of(ValueError("bug")) is ENDINGS[BaseException]
    assert ending_of(KeyboardInterrupt()) is ENDINGS[KeyboardInterrupt]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UserError("bad value"), Status.failed),
        (MachineFault("disk full"), Status.failed),
        (Diverged("nan"), Status.diverged),
        (Interrupted("signal"), Status.interrupted),
        (Pruned("pruner"), Status.pruned),
        (KeyboardInterrupt(), Status.interrupted),  # a signal outside the epoch loop
        (SystemExit(-1), Status.interrupted),  # submitit's exit after it requeued a signalled job
        (ZeroDivisionError("bug"), Status.failed),
    ],
)
def test_the_status_a_run_ends_with(error: BaseException, status: Status) -> None:
    assert ending_of(error).status == status


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (Status.completed, "completed"),
        (Status.diverged, "diverged"),
        (Status.failed, "failed"),
        (Status.pruned, "pruned"),
        (Status.running, UNFINISHED),  # still training, or killed while it was: no final test
        (Status.interrupted, UNFINISHED),  # resume=true continues it
        ("exploded", "failed"),  # a status this version does not know
    ],
)
def test_the_report_names_each_status(tmp_path: Path, status: str, name: str) -> None:
    (tmp_path / METRICS_FILE).write_text(json.dumps({"status": status, "history": []}))
    assert runs.load(tmp_path).status == name


def test_each_status_has_one_name_in_the_report() -> None:
    assert REPORT_NAMES.keys() == set(Status)
    for status in Status:
        assert {ending.report for ending in ENDINGS.values() if ending.status == status} <= {REPORT_NAMES[status]}


def test_what_a_search_makes_of_each_family() -> None:
    """Only the pruner's stop prunes a trial; the machine's fault and a signal stop the search, which
    asks the trial again on resume; every other ending fails the trial and the search goes on."""
    trials = {kind: ending.trial for kind, ending in ENDINGS.items()}
    assert [kind for kind, trial in trials.items() if trial == TrialEnd.pruned] == [Pruned]
    stopping = {MachineFault, Interrupted, KeyboardInterrupt, SystemExit}
    assert {kind for kind, trial in trials.items() if trial == TrialEnd.stop_search} == stopping


def test_the_rows_agree_with_each_other() -> None:
    """Exit status 0 exactly for the endings a sweep counts as done as asked, logged below a warning;
    a stopped sweep exits non-zero; the endings that can go on say how."""
    for kind, ending in ENDINGS.items():
        if ending.exit_code is None:  # SystemExit's own code
            continue
        assert (ending.exit_code == 0) == (ending.status in ENDED_AS_ASKED), kind
        assert (ending.exit_code == 0) == (ending.level < logging.WARNING), kind
        assert not (ending.stops_sweep and ending.exit_code == 0), kind
    assert ENDINGS[MachineFault].next_step and ENDINGS[Interrupted].next_step


def test_the_table_imports_neither_torch_nor_hydra() -> None:
    """The command line, the report and the run directory read it before either loads."""
    code = "import sys, lenet_fmnist.run.endings\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'hydra'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
