"""What the command line does around each job, without Hydra: the directory held while a job
works, how each ending is told, and the exit status of a call (the same through the real Hydra app:
test_cli.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from lenet_fmnist.launch.hydra_app import Jobs, hydra_argv, modes
from lenet_fmnist.run.errors import Diverged, Interrupted, MachineFault, Pruned, UserError
from lenet_fmnist.run.files import LOCK_FILE
from lenet_fmnist.run.locking import _held


def raising(error: BaseException):
    def task(cfg: object, run_dir: Path) -> object:
        assert run_dir.resolve() in _held, "the job's directory is held while its task runs"
        raise error

    return task


def test_a_jobs_directory_is_held_while_it_works_and_let_go_after(tmp_path: Path) -> None:
    jobs = Jobs("train", [], lambda cfg, run_dir: 0.9)
    assert jobs.run(None, tmp_path / "run", None) == 0.9  # the task's value: a search's objective
    assert (tmp_path / "run" / LOCK_FILE).exists() and (tmp_path / "run").resolve() not in _held
    assert jobs.exit_code == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [(UserError("bad"), 1), (MachineFault("disk"), 1), (Diverged("nan"), 1), (Pruned("pruner"), 0)],
)
def test_a_single_runs_ending_sets_the_exit_status(tmp_path: Path, error: Exception, code: int) -> None:
    jobs = Jobs("eval", ["checkpoint=x.pt"], raising(error))
    assert jobs.run(None, tmp_path / "run", None) is None
    assert jobs.exit_code == code and (tmp_path / "run").resolve() not in _held


def test_an_interrupt_stops_the_whole_sweep_with_130(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = Jobs("train", ["-m", "seed=0,1"], raising(Interrupted("signal")))
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as stopped:
        jobs.run(None, tmp_path / "sweep" / "0_seed=0", tmp_path / "sweep")
    assert stopped.value.code == 130
    assert "Resume with: python -m lenet_fmnist train -m hydra.sweep.dir=" in caplog.text


def test_a_training_sweeps_jobs_are_judged_by_their_metrics_not_here(tmp_path: Path) -> None:
    """Whichever process ran a job, its metrics.json says how it ended (sweep_failures)."""
    jobs = Jobs("train", ["-m"], raising(UserError("bad")))
    jobs.run(None, tmp_path / "sweep" / "0_a", tmp_path / "sweep")
    assert jobs.exit_code == 0
    evals = Jobs("eval", ["-m"], raising(UserError("bad")))
    evals.run(None, tmp_path / "sweep" / "1_b", tmp_path / "sweep")
    assert evals.exit_code == 1


def test_a_trials_failure_is_the_sweepers_to_judge(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trial = SimpleNamespace(number=7)
    jobs = Jobs("train", ["-m"], raising(ZeroDivisionError("bug")))
    with caplog.at_level(logging.ERROR), pytest.raises(ZeroDivisionError):
        jobs.run(None, tmp_path / "sweep" / "7", tmp_path / "sweep", trial)
    assert "Trial 7 failed: ZeroDivisionError: bug" in caplog.text
    assert jobs.exit_code == 0


@pytest.mark.parametrize(
    ("args", "asked"),
    [([], []), (["-m", "seed=0,1"], ["--multirun"]), (["-m", "--cfg", "job"], ["--cfg", "--multirun"]),
     (["--multirun", "-m"], ["--multirun"]), (["-c", "hydra", "-i"], ["--cfg", "--info"])],
)  # fmt: skip
def test_the_modes_a_command_line_asks_for(args: list[str], asked: list[str]) -> None:
    assert modes(args) == asked


def test_hydra_reads_the_commands_argv_and_the_real_one_comes_back() -> None:
    import sys

    before = list(sys.argv)
    with hydra_argv("eval", ["checkpoint=x.pt"]):
        assert sys.argv == ["lenet-fmnist eval", "checkpoint=x.pt"]
    assert sys.argv == before
